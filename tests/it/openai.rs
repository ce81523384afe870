//! The official OpenAI Python client against a real daemon's gateway: `tests/openai/test_client.py`
//! drives `/v1` of a `hub serve` whose models are built-in workers (one loaded, one running, one
//! stopped), with an inference key set. Needs the client, which `scripts/test-real` installs and
//! names in `HUB_TEST_PYTHON`, so it is ignored by default.

use std::time::Duration;

use crate::support::TempHub;

const HUB: &str = "
log_path: {log_path}
model_starting_port: {starting_port}
models:
  - {name: alpha, model_path: models/alpha.txt, state: loaded}
  - {name: beta, model_path: models/beta.txt, state: running}
  - {name: gamma, model_path: models/gamma.txt, state: stopped}
";

const API_KEY: &str = "test-key";

#[tokio::test]
#[ignore = "needs the OpenAI Python client: scripts/test-real installs it"]
async fn the_official_python_client_speaks_to_the_gateway() {
    let python = std::env::var("HUB_TEST_PYTHON").unwrap_or_else(|_| {
        panic!(
            "HUB_TEST_PYTHON is not set: run scripts/test-real, which installs the OpenAI Python \
             client in a venv and names its python there"
        )
    });
    let hub = TempHub::start_with_env(HUB, &[], &[("HUB_API_KEYS", API_KEY)]).await;
    hub.converged().await;
    let audio = hub.dir.path().join("speech.wav");
    let mut bytes = b"RIFF\x24\x00\x00\x00WAVEfmt ".to_vec();
    bytes.extend((0..256u32).map(|i| (i * 7 % 251) as u8));
    std::fs::write(&audio, bytes).unwrap();

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/openai/test_client.py");
    let run = tokio::process::Command::new(&python)
        .args([script, "-v"])
        .env("HUB_URL", &hub.url)
        .env("HUB_API_KEY", API_KEY)
        .env("HUB_MODELS", "alpha,beta,gamma")
        .env("HUB_AUDIO_FILE", &audio)
        // The daemon is on loopback: never through a proxy the environment names.
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(300), run)
        .await
        .expect("the Python client's tests ran for over 5 minutes")
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    // unittest reports on stderr.
    println!("{}", String::from_utf8_lossy(&output.stdout));
    println!("{}", String::from_utf8_lossy(&output.stderr));
    assert!(
        output.status.success(),
        "the OpenAI client's tests failed ({}); the daemon said:\n{}",
        output.status,
        hub.stderr()
    );
}
