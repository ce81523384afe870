//! Footprints measured from real built-in workers: their resident memory grows with the file they
//! load and falls back when they unload it, a worker under a shell is counted in the shell's
//! tree, and an engine's own report wins over both when it answers.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use hub::measure::{Footprint, Meter, Source, Target};

use crate::support::{free_port, hub_bin, wait_until};

const MIB: u64 = 1024 * 1024;

/// A process group this test started, killed (every process in it) and reaped when dropped,
/// whether the test passed or not.
struct Group(Child);

impl Drop for Group {
    fn drop(&mut self) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = self.0.wait();
    }
}

/// A built-in worker serving `model` on a free port, started by `wrap` (the worker's own
/// command line, to run as is or under a shell) in a new process group; returns the group and
/// the worker's URL once it answers `/health`.
async fn start(model: &Path, wrap: impl FnOnce(Vec<String>) -> Command) -> (Group, String) {
    let port = free_port();
    let argv = [
        hub_bin(),
        "worker",
        "--name",
        "m",
        "--model-path",
        model.to_str().unwrap(),
        "--host",
        "127.0.0.1",
        "--port",
        &port.to_string(),
    ];
    let mut command = wrap(argv.iter().map(|a| a.to_string()).collect());
    let child = command
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let group = Group(child);
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    wait_until("the worker to answer /health", || async {
        let response = http.get(format!("{url}/health")).send().await.ok()?;
        response.status().is_success().then_some(())
    })
    .await;
    (group, url)
}

fn direct(argv: Vec<String>) -> Command {
    let mut command = Command::new(&argv[0]);
    command.args(&argv[1..]);
    command
}

/// `size` bytes that no page deduplication or compression could shrink, in `dir/name`.
fn model_file(dir: &Path, name: &str, size: u64) -> PathBuf {
    let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ size;
    let mut bytes = Vec::with_capacity(size as usize);
    while (bytes.len() as u64) < size {
        // xorshift64: cheap and random enough.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.extend_from_slice(&state.to_le_bytes());
    }
    bytes.truncate(size as usize);
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

async fn post(url: &str, path: &str) {
    let response = reqwest::Client::new()
        .post(format!("{url}{path}"))
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "{path}: {}",
        response.status()
    );
}

fn meter() -> Meter {
    Meter::new(reqwest::Client::new())
}

async fn measure(meter: &Meter, pid: u32) -> Footprint {
    let target = Target { pid, engine: None };
    meter.measure(&target).await.expect("a live worker")
}

/// Loads a worker of `size` bytes and measures it empty, loaded and unloaded.
async fn footprints(dir: &Path, size: u64) -> [Footprint; 3] {
    let model = model_file(dir, &format!("{}mib.bin", size / MIB), size);
    let (group, url) = start(&model, direct).await;
    let meter = meter();
    let pid = group.0.id();
    let empty = measure(&meter, pid).await;
    post(&url, "/load").await;
    let loaded = measure(&meter, pid).await;
    post(&url, "/unload").await;
    // Dropping the buffer unmaps it at once; waiting only absorbs a slow machine.
    let unloaded = wait_until("the unloaded weights to leave memory", || async {
        let now = measure(&meter, pid).await;
        (now.bytes < empty.bytes + 8 * MIB).then_some(now)
    })
    .await;
    [empty, loaded, unloaded]
}

/// The built-in worker uses no GPU, so even where NVML is present it falls through to RSS.
#[tokio::test]
async fn a_workers_rss_is_its_model_file_and_falls_back_after_unload() {
    let dir = tempfile::tempdir().unwrap();
    println!("meter: {}", meter().describe());
    let mut grown = Vec::new();
    for size in [64 * MIB, 192 * MIB] {
        let [empty, loaded, unloaded] = footprints(dir.path(), size).await;
        for footprint in [empty, loaded, unloaded] {
            assert_eq!(footprint.source, Source::Rss);
        }
        let ratio = loaded.bytes as f64 / size as f64;
        let growth = (loaded.bytes - empty.bytes) as f64 / size as f64;
        println!(
            "file {} MiB: empty {:.1} MiB, loaded {:.1} MiB (ratio {ratio:.3}, growth over empty \
             {growth:.3}), unloaded {:.1} MiB",
            size / MIB,
            empty.bytes as f64 / MIB as f64,
            loaded.bytes as f64 / MIB as f64,
            unloaded.bytes as f64 / MIB as f64,
        );
        // The empty worker's own ~20 MiB (a debug build's code, its threads' stacks) is the
        // same whatever it loads, so the file is compared with what the load added.
        assert!((0.8..=1.2).contains(&growth), "growth/file = {growth}");
        assert!(
            loaded.bytes >= size,
            "loaded {loaded:?} under the file's {size}"
        );
        assert!(
            unloaded.bytes < empty.bytes + 8 * MIB,
            "{unloaded:?} vs {empty:?}"
        );
        grown.push(loaded.bytes - empty.bytes);
    }
    let three = grown[1] as f64 / grown[0] as f64;
    println!("growth of 192 MiB over growth of 64 MiB: {three:.3}");
    assert!((2.7..=3.3).contains(&three), "192 MiB / 64 MiB = {three}");
}

#[tokio::test]
async fn a_worker_under_a_shell_is_counted_in_the_shells_tree() {
    let dir = tempfile::tempdir().unwrap();
    let model = model_file(dir.path(), "m.bin", 64 * MIB);
    // `exec` would make the worker the shell; `& wait` keeps the shell as its parent.
    let (group, url) = start(&model, |argv| {
        let mut command = Command::new("sh");
        command.args(["-c", r#""$@" & wait"#, "sh"]).args(argv);
        command
    })
    .await;
    post(&url, "/load").await;
    let shell = measure(&meter(), group.0.id()).await;
    println!("shell tree with a 64 MiB worker: {} bytes", shell.bytes);
    assert_eq!(shell.source, Source::Rss);
    assert!(shell.bytes > 64 * MIB, "{shell:?}");
    // The shell alone holds none of it: the worker's memory came from its child.
    let alone = hub::measure::rss_bytes(&[group.0.id()]).unwrap();
    assert!(alone < 16 * MIB, "the shell alone: {alone}");
    let tree = hub::measure::process_tree(group.0.id()).unwrap();
    assert_eq!(tree.len(), 2, "{tree:?}");
}

#[tokio::test]
async fn an_engine_report_wins_and_a_bad_pointer_falls_through_to_rss() {
    let dir = tempfile::tempdir().unwrap();
    let size = 8 * MIB + 3;
    let model = model_file(dir.path(), "m.bin", size);
    let (group, url) = start(&model, direct).await;
    post(&url, "/load").await;
    let meter = meter();
    let pid = group.0.id();
    let report = |pointer: &str| Target {
        pid,
        engine: Some((format!("{url}/stats"), pointer.to_string())),
    };
    let engine = meter.measure(&report("/weights_bytes")).await.unwrap();
    assert_eq!(
        engine,
        Footprint {
            bytes: size,
            source: Source::Engine
        }
    );
    for pointer in ["/no_such_field", "/loaded", "weights_bytes"] {
        let fallen = meter.measure(&report(pointer)).await.unwrap();
        assert_eq!(fallen.source, Source::Rss, "{pointer}");
        assert!(fallen.bytes > size, "{pointer}: {fallen:?}");
    }
    // An engine that does not answer at all.
    let gone = Target {
        pid,
        engine: Some((
            format!("http://127.0.0.1:{}/stats", free_port()),
            "/weights_bytes".to_string(),
        )),
    };
    assert_eq!(meter.measure(&gone).await.unwrap().source, Source::Rss);
}

#[tokio::test]
async fn a_worker_that_is_gone_measures_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let model = model_file(dir.path(), "m.bin", 1024);
    let (group, _url) = start(&model, direct).await;
    let pid = group.0.id();
    drop(group);
    let target = Target { pid, engine: None };
    assert_eq!(meter().measure(&target).await, None);
}
