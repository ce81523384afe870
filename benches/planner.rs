//! Planner benchmark (SPEC section 10): `plan()` over 100, 1,000 and 10,000 models with 1% of
//! them changed, the median and p95 time of one call and the heap allocations it makes.
//!
//! The desired state comes from generated hub.yaml through `config::parse`, as the daemon gets
//! it; the observed state is that desired state converged (`plan::converged`), and the new
//! desired state changes `model_path` of every hundredth model, so 1% of them plan a restart.
//! Run with `cargo bench --bench planner` (or the whole harness with `bench/run`).

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hub::plan::{self, Action};
use support::{Models, Samples, hub_yaml, ms, row, verdict};

/// Counts every allocation (and reallocation) the program makes, so one call can be measured.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static ALLOCATED_BYTES: AtomicU64 = AtomicU64::new(0);

fn count(size: usize) {
    ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    ALLOCATED_BYTES.fetch_add(size as u64, Ordering::Relaxed);
}

// SAFETY: every call is passed straight to the system allocator with the same arguments.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The SPEC's target for 10,000 models.
const TARGET_MS: f64 = 2.0;
/// How long each size is timed for, after a warm-up.
const BUDGET: Duration = Duration::from_millis(1500);

fn main() {
    if !support::benchmarking() {
        return;
    }
    println!("planner: plan() with 1% of the models changed");
    let sizes: Vec<Case> = [100, 1_000, 10_000].into_iter().map(Case::new).collect();
    for case in &sizes {
        bench(case);
    }
    ratios(&sizes[1], &sizes[2]);
    budgets(&sizes[2]);
}

/// The cost of counting bytes: `plan()` at 10,000 models whose groups have memory budgets (and
/// the models estimates) over the same without, in alternating rounds.
const BUDGET_TARGET: f64 = 1.5;

fn budgets(counted: &Case) {
    let budgeted = Case::with(counted.count, true);
    let mut over = Vec::new();
    for round in 0..ROUNDS {
        let (with, without) = if round % 2 == 0 {
            let with = budgeted.time(Case::plan);
            (with, counted.time(Case::plan))
        } else {
            let without = counted.time(Case::plan);
            (budgeted.time(Case::plan), without)
        };
        over.push(with / without);
        println!(
            "  round {round}: {} with budgets, {} with max_loaded only",
            ms(with),
            ms(without)
        );
    }
    let over = Samples::new(over);
    let spread = format!(
        "{:.2}x ({:.2}-{:.2}, {} rounds)",
        over.median(),
        over.min(),
        over.max(),
        over.len()
    );
    println!("  plan() with memory budgets over without, 10,000: {spread}");
    row(
        "1 planner",
        "plan() at 10,000 with memory budgets over with max_loaded only: median (min-max)",
        &spread,
        &format!("< {BUDGET_TARGET}x"),
        verdict(over.median() < BUDGET_TARGET),
    );
}

/// Scaling targets (issue 20), as ratios measured in one run so a noisy machine cancels out.
const LINEAR_TARGET: f64 = 1.3;
const BASELINE_TARGET: f64 = 3.0;
/// Alternating rounds of the ratios, and how long each size is timed in a round.
const ROUNDS: usize = 7;
const ROUND_BUDGET: Duration = Duration::from_millis(200);

/// One generated hub.yaml before and after the edit, and the converged observed state.
struct Case {
    count: usize,
    after: hub::config::Desired,
    observed: hub::observed::Observed,
    now: time::OffsetDateTime,
}

impl Case {
    fn new(count: usize) -> Case {
        Case::with(count, false)
    }

    /// `count` models in groups of ten, with memory budgets and estimates if `budgets`.
    fn with(count: usize, budgets: bool) -> Case {
        let header = "log_path: logs\n";
        let yaml = |changed: fn(usize) -> bool| {
            hub_yaml(
                header,
                &Models {
                    count,
                    state,
                    changed,
                    groups: true,
                    budgets,
                },
            )
        };
        let parse = |text: &str, previous: Option<&hub::config::Desired>| {
            let parsed = hub::config::parse(text, "hub.yaml", Path::new("/tmp"))
                .unwrap_or_else(|e| panic!("the generated hub.yaml is invalid: {e}"));
            match previous {
                Some(previous) => parsed.sharing_with(previous),
                None => parsed,
            }
        };
        let before = parse(&yaml(|_| false), None);
        // As the daemon does: the new config shares what did not change with the running one.
        let after = parse(&yaml(|i| i % 100 == 1), Some(&before));
        let observed = plan::converged(&before);
        let now = time::OffsetDateTime::now_utc();
        Case {
            count,
            after,
            observed,
            now,
        }
    }

    fn plan(&self) -> plan::Plan {
        plan::plan(
            std::hint::black_box(&self.after),
            std::hint::black_box(&self.observed),
            self.now,
        )
    }

    /// The least a planner must do: walk desired and observed once, in name order, and compare
    /// each model's spec with the one its worker runs.
    fn baseline(&self) -> usize {
        let desired = std::hint::black_box(&self.after);
        let observed = std::hint::black_box(&self.observed);
        let mut running = observed.models.iter().peekable();
        let mut changed = 0;
        for (name, spec) in &desired.models {
            while running.peek().is_some_and(|(n, _)| *n < name) {
                running.next();
            }
            if let Some((n, obs)) = running.peek()
                && *n == name
            {
                if obs
                    .worker
                    .run
                    .as_ref()
                    .is_some_and(|run| *spec.run != **run)
                {
                    changed += 1;
                }
                running.next();
            }
        }
        changed
    }

    /// Milliseconds per call of `f`, the median of calls over `ROUND_BUDGET`.
    fn time<T>(&self, f: impl Fn(&Case) -> T) -> f64 {
        let mut samples = Vec::new();
        let started = Instant::now();
        while started.elapsed() < ROUND_BUDGET || samples.len() < 5 {
            let t = Instant::now();
            drop(std::hint::black_box(f(self)));
            samples.push(support::millis(t.elapsed()));
        }
        Samples::new(samples).median()
    }
}

/// Per-model time at 10,000 over per-model time at 1,000, and `plan()` over the baseline walk at
/// 10,000, each in alternating rounds; the median and spread (min–max) of the rounds.
fn ratios(small: &Case, large: &Case) {
    let (mut linear, mut baseline, mut walk_linear) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let (small_ms, large_ms, plan_ms, walk_ms);
        if round % 2 == 0 {
            small_ms = small.time(Case::plan);
            large_ms = large.time(Case::plan);
            walk_ms = large.time(Case::baseline);
            plan_ms = large.time(Case::plan);
        } else {
            walk_ms = large.time(Case::baseline);
            plan_ms = large.time(Case::plan);
            large_ms = plan_ms;
            small_ms = small.time(Case::plan);
        }
        // The walk alone at both sizes: how much of the growth is the memory the two maps
        // take (past the cache at 10,000), not the planner.
        let small_walk_ms = small.time(Case::baseline);
        let per_model = |ms: f64, case: &Case| ms / case.count as f64;
        walk_linear.push(per_model(walk_ms, large) / per_model(small_walk_ms, small));
        linear.push(per_model(large_ms, large) / per_model(small_ms, small));
        baseline.push(plan_ms / walk_ms);
        println!(
            "  round {round}: {} at {}, {} at {}, baseline walk {} at {}",
            ms(small_ms),
            small.count,
            ms(large_ms),
            large.count,
            ms(walk_ms),
            large.count
        );
    }
    let linear = Samples::new(linear);
    let baseline = Samples::new(baseline);
    let spread = |s: &Samples| {
        format!(
            "{:.2}x ({:.2}-{:.2}, {} rounds)",
            s.median(),
            s.min(),
            s.max(),
            s.len()
        )
    };
    println!("  time per model, 10,000 over 1,000: {}", spread(&linear));
    let walk_linear = Samples::new(walk_linear);
    println!(
        "  the walk alone, time per model, 10,000 over 1,000: {}",
        spread(&walk_linear)
    );
    println!(
        "  plan() over a walk that compares specs, 10,000: {}",
        spread(&baseline)
    );
    row(
        "1 planner",
        "time per model at 10,000 over at 1,000: median (min-max)",
        &spread(&linear),
        &format!("< {LINEAR_TARGET}x"),
        verdict(linear.median() < LINEAR_TARGET),
    );
    row(
        "1 planner",
        "plan() at 10,000 over one walk comparing specs: median (min-max)",
        &spread(&baseline),
        &format!("< {BASELINE_TARGET}x"),
        verdict(baseline.median() < BASELINE_TARGET),
    );
}

/// A quarter of the models pinned (`loaded`), half `running`, a quarter `stopped`, in groups of
/// ten: every branch of the planner runs, group caps included.
fn state(i: usize) -> &'static str {
    match i % 4 {
        0 => "loaded",
        3 => "stopped",
        _ => "running",
    }
}

fn bench(case: &Case) {
    let Case {
        count,
        ref after,
        ref observed,
        now,
    } = *case;

    // The plan is what we expect: exactly 1% restarts, everything else untouched.
    let result = plan::plan(after, observed, now);
    let restarts = result
        .models
        .iter()
        .filter(|m| matches!(m.actions.as_slice(), [Action::Restart { .. }, ..]))
        .count();
    let busy = result
        .models
        .iter()
        .filter(|m| !m.actions.is_empty())
        .count();
    assert_eq!(restarts, count / 100, "restarts planned");
    assert_eq!(busy, count / 100, "models with actions");
    drop(result);

    let allocations_before = ALLOCATIONS.load(Ordering::Relaxed);
    let bytes_before = ALLOCATED_BYTES.load(Ordering::Relaxed);
    drop(std::hint::black_box(plan::plan(after, observed, now)));
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - allocations_before;
    let bytes = ALLOCATED_BYTES.load(Ordering::Relaxed) - bytes_before;

    for _ in 0..3 {
        drop(std::hint::black_box(plan::plan(after, observed, now)));
    }
    let mut samples = Vec::new();
    let started = Instant::now();
    while (started.elapsed() < BUDGET || samples.len() < 30) && samples.len() < 100_000 {
        let t = Instant::now();
        drop(std::hint::black_box(case.plan()));
        samples.push(support::millis(t.elapsed()));
    }
    let samples = Samples::new(samples);
    let (median, p95) = (samples.median(), samples.p95());
    println!(
        "  {count:>6} models: median {}, p95 {}, {allocations} allocations ({} KiB) per call, {} calls",
        ms(median),
        ms(p95),
        bytes / 1024,
        samples.len()
    );
    let figure = format!("plan() at {count} models, 1% changed: median (p95)");
    let value = format!("{} ({})", ms(median), ms(p95));
    if count == 10_000 {
        row(
            "1 planner",
            &figure,
            &value,
            &format!("< {TARGET_MS} ms"),
            verdict(median < TARGET_MS),
        );
    } else {
        row("1 planner", &figure, &value, "-", "-");
    }
    row(
        "1 planner",
        &format!("plan() at {count} models: allocations per call"),
        &format!("{allocations} ({} KiB)", bytes / 1024),
        "-",
        "-",
    );
}
