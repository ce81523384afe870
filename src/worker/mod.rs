//! The built-in worker (`hub worker`): a small, real OpenAI-compatible server whose "model" is the
//! file at `--model-path`, read into memory on `POST /load` and freed on `POST /unload`.
//! Answers are deterministic, drawn from the file's words (`text.rs`), so tests can check them;
//! the OpenAI endpoints are in `openai.rs`. This file is the process, its control endpoints
//! (`/health`, `/load`, `/unload`, `/stats`) and the request counting. It can be told to
//! misbehave (slow start, slow load, slow answers, crash, ignore SIGTERM, fail health) so the
//! daemon's handling of each is tested against a real process.

mod openai;
mod text;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::config::parse_duration;

/// `hub worker` arguments. Durations are written like hub.yaml's: `500ms`, `2s`.
#[derive(Debug, Clone, clap::Args)]
pub struct WorkerArgs {
    /// The model's name, reported by `/v1/models`.
    #[arg(long)]
    pub name: String,
    /// The file whose bytes are the model's weights.
    #[arg(long)]
    pub model_path: String,
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    #[arg(long)]
    pub port: u16,
    /// Wait this long before listening (a slow start).
    #[arg(long, value_parser = duration_arg)]
    pub start_delay: Option<Duration>,
    /// Wait this long inside every load (slow weights).
    #[arg(long, value_parser = duration_arg)]
    pub load_delay: Option<Duration>,
    /// Take this long over every inference request, before answering (a long generation, to
    /// test that busy models are not evicted).
    #[arg(long, value_parser = duration_arg)]
    pub request_delay: Option<Duration>,
    /// Wait this long between the events of a stream (chat, completions, responses), so a
    /// stream lasts a while and a client can leave in the middle of it.
    #[arg(long, value_parser = duration_arg)]
    pub token_delay: Option<Duration>,
    /// Exit with `--exit-code` this long after starting (a crash).
    #[arg(long, value_parser = duration_arg)]
    pub crash_after: Option<Duration>,
    /// The exit code of `--crash-after`.
    #[arg(long, default_value_t = 3)]
    pub exit_code: i32,
    /// Ignore SIGTERM, so only SIGKILL stops it.
    #[arg(long)]
    pub ignore_sigterm: bool,
    /// Answer `/health` with 503 forever.
    #[arg(long)]
    pub fail_health: bool,
    /// Fork a child process (`sleep`) into the worker's process group, as real servers do.
    #[arg(long)]
    pub fork_child: bool,
}

fn duration_arg(text: &str) -> Result<Duration, String> {
    parse_duration(text).ok_or_else(|| format!("invalid duration {text:?}: use 500ms, 2s, 1m"))
}

struct Worker {
    args: WorkerArgs,
    /// The loaded weights: the file's bytes, or nothing.
    weights: Mutex<Option<Arc<Vec<u8>>>>,
    /// Inference requests received while loaded.
    requests: AtomicU64,
    /// Inference requests being served now, streams until they end.
    in_flight: AtomicU64,
    /// Successful loads.
    loads: AtomicU64,
    started: std::time::Instant,
    /// Milliseconds since `started` at which the last inference request ended, 0 if none.
    last_activity_ms: AtomicU64,
}

pub async fn run(args: WorkerArgs) -> anyhow::Result<()> {
    if args.ignore_sigterm {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::spawn(async move {
            while term.recv().await.is_some() {
                eprintln!("worker: ignoring SIGTERM");
            }
        });
    }
    // The crash timer runs from process start, so a crash can come during a slow start.
    if let Some(after) = args.crash_after {
        let code = args.exit_code;
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            eprintln!("worker: crashing with exit code {code} as told");
            std::process::exit(code);
        });
    }
    if let Some(delay) = args.start_delay {
        eprintln!("worker: starting slowly ({delay:?})");
        tokio::time::sleep(delay).await;
    }
    let _child = if args.fork_child {
        Some(
            std::process::Command::new("sleep")
                .arg("3600")
                .spawn()
                .context("cannot fork the child process")?,
        )
    } else {
        None
    };
    let addr: SocketAddr = format!("{}:{}", args.host, args.port)
        .parse()
        .context("invalid --host/--port")?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    eprintln!("worker {}: listening on http://{addr}", args.name);
    let ignore_sigterm = args.ignore_sigterm;
    let app = router(Arc::new(Worker::new(args)));
    let shutdown = async move {
        if ignore_sigterm {
            std::future::pending::<()>().await;
        }
        if let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            term.recv().await;
        }
        eprintln!("worker: SIGTERM, exiting");
    };
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}

/// Every endpoint of the worker.
fn router(worker: Arc<Worker>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/load", post(load))
        .route("/unload", post(unload))
        .route("/stats", get(stats))
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/completions", post(openai::completions))
        .route("/v1/embeddings", post(openai::embeddings))
        .route("/v1/responses", post(openai::responses))
        .route(
            "/v1/audio/transcriptions",
            post(openai::audio_transcriptions)
                .layer(DefaultBodyLimit::max(openai::MAX_AUDIO_BYTES)),
        )
        .with_state(worker)
}

fn error(status: StatusCode, kind: &str, message: String) -> Response {
    let body = json!({"error": {"message": message, "type": kind, "code": status.as_u16()}});
    (status, Json(body)).into_response()
}

impl Worker {
    fn new(args: WorkerArgs) -> Self {
        Worker {
            args,
            weights: Mutex::new(None),
            requests: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            loads: AtomicU64::new(0),
            started: std::time::Instant::now(),
            last_activity_ms: AtomicU64::new(0),
        }
    }

    fn weights(&self) -> Option<Arc<Vec<u8>>> {
        self.weights.lock().expect("weights lock").clone()
    }

    fn not_loaded(&self) -> Response {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "model_not_loaded",
            format!("model {:?} is not loaded; load it first", self.args.name),
        )
    }

    /// Starts serving an inference request: the weights, and the guard that counts the request
    /// (a stream keeps it until it ends); or the answer for a model that is not loaded.
    async fn begin(self: &Arc<Self>) -> Result<(Arc<Vec<u8>>, Serving), Response> {
        let weights = self.weights().ok_or_else(|| self.not_loaded())?;
        let serving = self.serving();
        if let Some(delay) = self.args.request_delay {
            tokio::time::sleep(delay).await;
        }
        Ok((weights, serving))
    }

    /// Counts a request as served from now until the guard drops.
    fn serving(self: &Arc<Self>) -> Serving {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Serving(self.clone())
    }

    /// Milliseconds since the last request ended: 0 while serving, `None` before any request.
    fn idle_ms(&self) -> Option<u64> {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return Some(0);
        }
        let last = self.last_activity_ms.load(Ordering::Relaxed);
        (last > 0).then(|| (self.started.elapsed().as_millis() as u64).saturating_sub(last))
    }
}

/// A request being served; the activity hub reads from `/health`.
struct Serving(Arc<Worker>);

impl Drop for Serving {
    fn drop(&mut self) {
        let worker = &self.0;
        let ms = worker.started.elapsed().as_millis() as u64;
        worker.last_activity_ms.store(ms.max(1), Ordering::Relaxed);
        worker.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn health(State(worker): State<Arc<Worker>>) -> Response {
    if worker.args.fail_health {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unhealthy",
            "told to fail health checks".to_string(),
        );
    }
    // The activity protocol: hub reads `in_flight` and `idle_ms` to unload idle models and to
    // never evict one that is serving.
    Json(json!({
        "status": "ok",
        "loaded": worker.weights().is_some(),
        "in_flight": worker.in_flight.load(Ordering::Relaxed),
        "idle_ms": worker.idle_ms(),
    }))
    .into_response()
}

async fn load(State(worker): State<Arc<Worker>>) -> Response {
    if let Some(delay) = worker.args.load_delay {
        tokio::time::sleep(delay).await;
    }
    match read_weights(&worker.args.model_path).await {
        Ok(bytes) => {
            let size = bytes.len();
            *worker.weights.lock().expect("weights lock") = Some(Arc::new(bytes));
            worker.loads.fetch_add(1, Ordering::Relaxed);
            Json(json!({"status": "loaded", "bytes": size})).into_response()
        }
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "load_failed",
            format!("cannot read {}: {e}", worker.args.model_path),
        ),
    }
}

/// The most the built-in worker reads as weights: a bound, so a `model_path` that never ends
/// (`/dev/zero`, a pipe that keeps writing) fails the load instead of exhausting memory.
pub const MAX_WEIGHTS: u64 = 1 << 30;

/// Reads the model file: a regular file or a pipe, at most [`MAX_WEIGHTS`] bytes. The buffer is
/// sized to the file up front, so a load holds the file's bytes and no more (a growing `Vec`
/// doubles, and could hold up to twice them), and every byte of it is written by the read, so
/// its pages are resident: the worker's footprint is the file, as a real engine's is its
/// weights. A buffer this large is its own mapping (glibc maps allocations over its
/// `mmap` threshold, at most 32 MiB), so dropping it on `/unload` gives the memory back to the
/// system at once.
async fn read_weights(path: &str) -> std::io::Result<Vec<u8>> {
    use std::io::{Error, ErrorKind, Read};
    use std::os::unix::fs::FileTypeExt;
    let too_large = || {
        Error::new(
            ErrorKind::FileTooLarge,
            format!("larger than the built-in worker's limit of {MAX_WEIGHTS} bytes"),
        )
    };
    let metadata = tokio::fs::metadata(path).await?;
    let kind = metadata.file_type();
    if !(kind.is_file() || kind.is_fifo()) {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "not a regular file (a directory or a device cannot hold weights)",
        ));
    }
    // A pipe has no length; its buffer grows as it is read.
    let expected = if kind.is_file() { metadata.len() } else { 0 };
    if expected > MAX_WEIGHTS {
        return Err(too_large());
    }
    let path = path.to_string();
    // std's `read_to_end` fills an exactly sized buffer without growing it (it probes for the
    // end with a small read on the stack); tokio's would reserve more and double it.
    let bytes = tokio::task::spawn_blocking(move || {
        let mut bytes = Vec::with_capacity(expected as usize);
        std::fs::File::open(path)?
            .take(MAX_WEIGHTS + 1)
            .read_to_end(&mut bytes)?;
        Ok::<_, Error>(bytes)
    })
    .await
    .map_err(Error::other)??;
    if bytes.len() as u64 > MAX_WEIGHTS {
        return Err(too_large());
    }
    Ok(bytes)
}

async fn unload(State(worker): State<Arc<Worker>>) -> Json<Value> {
    *worker.weights.lock().expect("weights lock") = None;
    Json(json!({"status": "unloaded"}))
}

async fn stats(State(worker): State<Arc<Worker>>) -> Json<Value> {
    Json(json!({
        "requests": worker.requests.load(Ordering::Relaxed),
        "in_flight": worker.in_flight.load(Ordering::Relaxed),
        "loads": worker.loads.load(Ordering::Relaxed),
        "loaded": worker.weights().is_some(),
        "idle_ms": worker.idle_ms(),
        // The bytes of weights held: an engine's own memory report, for `engine.memory`.
        "weights_bytes": worker.weights().map_or(0, |weights| weights.len()),
    }))
}

async fn models(State(worker): State<Arc<Worker>>) -> Json<Value> {
    Json(json!({
        "object": "list",
        "data": [{
            "id": worker.args.name,
            "object": "model",
            "owned_by": "hub",
            "loaded": worker.weights().is_some(),
        }],
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use futures_util::StreamExt;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: WorkerArgs,
    }

    /// A worker serving on a free port of 127.0.0.1, its weights in `weights`, with `flags`;
    /// returns its base URL.
    async fn serve(weights: &tempfile::NamedTempFile, flags: &[&str]) -> String {
        let path = weights.path().to_str().unwrap();
        let argv = [
            "worker",
            "--name",
            "alpha",
            "--model-path",
            path,
            "--port",
            "0",
        ];
        let cli = Cli::parse_from(argv.iter().chain(flags));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = router(Arc::new(Worker::new(cli.args)));
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    }

    async fn stats(client: &reqwest::Client, url: &str) -> Value {
        let response = client.get(format!("{url}/stats")).send().await.unwrap();
        response.json().await.unwrap()
    }

    #[tokio::test]
    async fn every_inference_endpoint_needs_the_weights_loaded() {
        let weights = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(weights.path(), "alpha beta gamma").unwrap();
        let url = serve(&weights, &[]).await;
        let client = reqwest::Client::new();
        for path in ["chat/completions", "completions", "embeddings", "responses"] {
            let response = client
                .post(format!("{url}/v1/{path}"))
                .json(&json!({"input": "hi", "prompt": "hi", "messages": []}))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE, "{path}");
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["error"]["type"], "model_not_loaded", "{path}");
        }
        let form = "--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\nRIFF\r\n--b--\r\n";
        let response = client
            .post(format!("{url}/v1/audio/transcriptions"))
            .header("content-type", "multipart/form-data; boundary=b")
            .body(form)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);

        let loaded = client.post(format!("{url}/load")).send().await.unwrap();
        assert_eq!(loaded.status(), StatusCode::OK);
        let response = client
            .post(format!("{url}/v1/audio/transcriptions"))
            .header("content-type", "multipart/form-data; boundary=b")
            .body(form)
            .send()
            .await
            .unwrap();
        let body: Value = response.json().await.unwrap();
        assert!(!body["text"].as_str().unwrap().is_empty(), "{body}");
        let counters = stats(&client, &url).await;
        assert_eq!(
            (counters["loads"].as_u64(), counters["requests"].as_u64()),
            (Some(1), Some(1))
        );
        assert_eq!(counters["weights_bytes"], "alpha beta gamma".len());
        client.post(format!("{url}/unload")).send().await.unwrap();
        assert_eq!(stats(&client, &url).await["weights_bytes"], 0);
    }

    #[tokio::test]
    async fn a_stream_is_paced_and_in_flight_until_the_client_leaves() {
        let weights = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(weights.path(), "alpha beta gamma delta").unwrap();
        let url = serve(&weights, &["--token-delay", "100ms"]).await;
        let client = reqwest::Client::new();
        client.post(format!("{url}/load")).send().await.unwrap();
        let started = std::time::Instant::now();
        let response = client
            .post(format!("{url}/v1/chat/completions"))
            .json(&json!({"messages": [{"content": "hi"}], "max_tokens": 50, "stream": true}))
            .send()
            .await
            .unwrap();
        let mut body = response.bytes_stream();
        let first = body.next().await.unwrap().unwrap();
        assert!(String::from_utf8_lossy(&first).contains("chat.completion.chunk"));
        // 50 words 100 ms apart: a pre-built answer would be whole by now.
        assert!(started.elapsed() < Duration::from_secs(3));
        assert_eq!(stats(&client, &url).await["in_flight"], 1);
        drop(body);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while stats(&client, &url).await["in_flight"] != 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "still in flight after the client left"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(stats(&client, &url).await["requests"], 1);
    }

    #[tokio::test]
    async fn a_device_or_directory_is_no_model_file() {
        for path in ["/dev/zero", "/tmp"] {
            let error = read_weights(path).await.unwrap_err();
            assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput, "{path}");
        }
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), "weights").unwrap();
        assert_eq!(
            read_weights(file.path().to_str().unwrap()).await.unwrap(),
            b"weights"
        );
    }

    #[tokio::test]
    async fn the_weights_buffer_is_exactly_the_file() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let size = 3 * 1024 * 1024 + 17;
        std::fs::write(file.path(), vec![7u8; size]).unwrap();
        let bytes = read_weights(file.path().to_str().unwrap()).await.unwrap();
        assert_eq!((bytes.len(), bytes.capacity()), (size, size));
    }
}
