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
    for count in [100, 1_000, 10_000] {
        bench(count);
    }
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

fn bench(count: usize) {
    let header = "log_path: logs\n";
    let yaml = |changed: fn(usize) -> bool| {
        hub_yaml(
            header,
            &Models {
                count,
                state,
                changed,
                groups: true,
            },
        )
    };
    let parse = |text: &str| {
        hub::config::parse(text, "hub.yaml", Path::new("/tmp"))
            .unwrap_or_else(|e| panic!("the generated hub.yaml is invalid: {e}"))
    };
    let before = parse(&yaml(|_| false));
    let after = parse(&yaml(|i| i % 100 == 1));
    let observed = plan::converged(&before);
    let now = time::OffsetDateTime::now_utc();

    // The plan is what we expect: exactly 1% restarts, everything else untouched.
    let result = plan::plan(&after, &observed, now);
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
    drop(std::hint::black_box(plan::plan(&after, &observed, now)));
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - allocations_before;
    let bytes = ALLOCATED_BYTES.load(Ordering::Relaxed) - bytes_before;

    for _ in 0..3 {
        drop(std::hint::black_box(plan::plan(&after, &observed, now)));
    }
    let mut samples = Vec::new();
    let started = Instant::now();
    while (started.elapsed() < BUDGET || samples.len() < 30) && samples.len() < 100_000 {
        let t = Instant::now();
        let planned = plan::plan(
            std::hint::black_box(&after),
            std::hint::black_box(&observed),
            now,
        );
        drop(std::hint::black_box(planned));
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
