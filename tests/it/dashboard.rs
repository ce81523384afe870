//! The dashboard (`GET /hub`) in a real headless Chromium: `tests/dashboard/dashboard.test.mjs`
//! drives it with playwright-core against real daemons with built-in workers. Needs Chromium and
//! playwright-core, which `scripts/test-real` installs and names in `HUB_TEST_CHROMIUM` and
//! `HUB_TEST_NODE_MODULES`, so it is ignored by default.
//!
//! The script asks this test for what only the test can do to the daemon, one request per line
//! on its stdout (`hub-test: kill`, `hub-test: restart`), and waits for `ok` on its stdin.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::support::TempHub;

/// Two models in a group that holds one, where alpha is pinned (`state: loaded`): loading beta
/// is 429. Flow style keeps one model a line, so the script knows where a broken save's problems
/// are (line 7 is delta).
const HUB: &str = "log_path: {log_path}
model_starting_port: {starting_port}
models:
  - {name: alpha, model_path: models/alpha.txt, state: loaded, group: tier_one}
  - {name: beta, model_path: models/beta.txt, state: running, group: tier_one}
  - {name: gamma, model_path: models/gamma.txt, state: stopped}
  - {name: delta, model_path: models/delta.txt, state: running}
groups:
  - {name: tier_one, max_loaded: 1}
";

const TOKEN: &str = "dashboard-token-0123456789";

#[tokio::test]
#[ignore = "needs Chromium and playwright-core: scripts/test-real installs them"]
async fn the_dashboard_works_in_a_real_browser() {
    let need = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!(
                "{name} is not set: run scripts/test-real, which installs Chromium and \
                 playwright-core and names where they are"
            )
        })
    };
    let node_modules = need("HUB_TEST_NODE_MODULES");
    let chromium = need("HUB_TEST_CHROMIUM");
    let hub = TempHub::start(HUB).await;
    hub.converged().await;
    let guarded = TempHub::start_with_env(HUB, &[], &[("HUB_TOKEN", TOKEN)]).await;
    guarded.converged().await;
    let shots = std::env::var("HUB_TEST_SCREENSHOTS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| hub.dir.path().join("screenshots"));
    std::fs::create_dir_all(&shots).unwrap();

    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/dashboard/dashboard.test.mjs"
    );
    let mut node = tokio::process::Command::new("node")
        .arg(script)
        .env("NODE_PATH", &node_modules)
        .env("HUB_TEST_NODE_MODULES", &node_modules)
        .env("HUB_TEST_CHROMIUM", &chromium)
        .env("HUB_URL", &hub.url)
        .env("HUB_CONFIG", hub.config())
        .env("HUB_TOKEN_URL", &guarded.url)
        .env("HUB_TOKEN", TOKEN)
        .env("HUB_TEST_SCREENSHOTS", &shots)
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run node");
    let mut stdin = node.stdin.take().unwrap();
    let mut lines = BufReader::new(node.stdout.take().unwrap()).lines();
    // The daemon moves into the exchange (a restart replaces it) and out again, to be dropped
    // (and checked for leftovers) last.
    let run = async move {
        let mut hub = hub;
        while let Some(line) = lines.next_line().await.unwrap() {
            println!("{line}");
            let Some(request) = line.strip_prefix("hub-test: ") else {
                continue;
            };
            match request {
                "kill" => hub.kill_daemon(),
                // On the same port, so that the page finds the new daemon.
                "restart" => hub = hub.restart_on_same_port().await,
                other => panic!("the script asked for {other:?}"),
            }
            stdin.write_all(b"ok\n").await.unwrap();
        }
        (node.wait().await.unwrap(), hub)
    };
    let (exit, _hub) = tokio::time::timeout(Duration::from_secs(300), run)
        .await
        .expect("the browser tests ran for over 5 minutes");
    assert!(
        exit.success(),
        "the browser tests failed ({exit}); screenshots in {}",
        shots.display()
    );
}
