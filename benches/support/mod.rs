//! What the benchmark programs share: generated hub.yaml files, statistics, and the rows of the
//! results table that `bench/run` prints.
//!
//! Each program appends its rows to the file named by `HUB_BENCH_ROWS` (tab-separated: part,
//! figure, value, target, result) and prints them too, so `cargo bench` alone shows them.

#![allow(dead_code)] // Each bench program uses a different part of this module.

use std::fmt::Write as _;
use std::io::Write as _;
use std::time::Duration;

/// Whether the program was started by `cargo bench` (which passes `--bench`). Under `cargo test
/// --all-targets` it is started without it, and then does nothing, so tests stay fast.
pub fn benchmarking() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// Which models a generated hub.yaml has, and in what state.
pub struct Models {
    pub count: usize,
    /// `state` of model `i`.
    pub state: fn(usize) -> &'static str,
    /// Models with a changed `model_path` (`models/<name>-v2.txt`), as in an edit.
    pub changed: fn(usize) -> bool,
    /// Put models in groups of ten (`max_loaded: 3`).
    pub groups: bool,
    /// And give each group a memory budget (`memory: 30GiB`) and each model an estimate
    /// (`memory: 4GiB`), so the planner counts bytes too.
    pub budgets: bool,
}

/// The name of model `i`: `m0000`, `m0001`, ...
pub fn model_name(i: usize) -> String {
    format!("m{i:04}")
}

/// A hub.yaml with `models.count` built-in models. `header` comes first (log_path and ports).
pub fn hub_yaml(header: &str, models: &Models) -> String {
    let mut yaml = String::with_capacity(models.count * 96 + 256);
    yaml.push_str(header);
    yaml.push_str("models:\n");
    for i in 0..models.count {
        let name = model_name(i);
        let path = if (models.changed)(i) {
            format!("models/{name}-v2.txt")
        } else {
            format!("models/{name}.txt")
        };
        let _ = write!(
            yaml,
            "  - {{name: {name}, model_path: {path}, model_type: lm, state: {}",
            (models.state)(i)
        );
        if models.groups {
            let _ = write!(yaml, ", group: g{:03}", i / 10);
        }
        if models.budgets {
            yaml.push_str(", memory: 4GiB");
        }
        yaml.push_str("}\n");
    }
    if models.groups {
        yaml.push_str("groups:\n");
        for g in 0..models.count.div_ceil(10) {
            let budget = if models.budgets {
                ", memory: 30GiB"
            } else {
                ""
            };
            let _ = writeln!(yaml, "  - {{name: g{g:03}, max_loaded: 3{budget}}}");
        }
    }
    yaml
}

/// Sorted samples with the percentiles the table shows.
pub struct Samples(Vec<f64>);

impl Samples {
    pub fn new(mut values: Vec<f64>) -> Samples {
        values.sort_by(f64::total_cmp);
        Samples(values)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Nearest-rank percentile, `p` in 0..=100.
    pub fn percentile(&self, p: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * self.0.len() as f64).ceil() as usize;
        self.0[rank.clamp(1, self.0.len()) - 1]
    }

    pub fn median(&self) -> f64 {
        self.percentile(50.0)
    }

    pub fn p95(&self) -> f64 {
        self.percentile(95.0)
    }

    pub fn min(&self) -> f64 {
        self.0.first().copied().unwrap_or(f64::NAN)
    }

    pub fn max(&self) -> f64 {
        self.0.last().copied().unwrap_or(f64::NAN)
    }
}

/// Milliseconds in a form that keeps three significant figures for small values.
pub fn ms(value: f64) -> String {
    if value.is_nan() {
        "n/a".to_string()
    } else if value < 1.0 {
        format!("{value:.3} ms")
    } else if value < 100.0 {
        format!("{value:.1} ms")
    } else {
        format!("{value:.0} ms")
    }
}

pub fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// Whether a figure met its target, as the table's last column says it.
pub fn verdict(met: bool) -> &'static str {
    if met { "pass" } else { "MISS" }
}

/// One row of the results table. `result` is `pass`, `MISS`, or `-` for a figure without target.
pub fn row(part: &str, figure: &str, value: &str, target: &str, result: &str) {
    let line = format!("{part}\t{figure}\t{value}\t{target}\t{result}");
    println!("ROW {}", line.replace('\t', " | "));
    if let Ok(path) = std::env::var("HUB_BENCH_ROWS")
        && let Ok(mut file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
    {
        let _ = writeln!(file, "{line}");
    }
}

/// Rows measured now but shown later, so the table reads in order.
#[derive(Default)]
pub struct Rows(Vec<[String; 5]>);

impl Rows {
    pub fn add(&mut self, part: &str, figure: &str, value: &str, target: &str, result: &str) {
        self.0
            .push([part, figure, value, target, result].map(str::to_string));
    }

    pub fn emit(self) {
        for [part, figure, value, target, result] in self.0 {
            row(&part, &figure, &value, &target, &result);
        }
    }
}
