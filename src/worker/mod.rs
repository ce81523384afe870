//! The built-in worker (`hub worker`): a small, real OpenAI-compatible server whose "model" is the
//! file at `--model-path`, read into memory on `POST /load` and freed on `POST /unload`.
//! Completions are deterministic text drawn from the file's words, so tests can check them.
//! It can be told to misbehave (slow start, slow load, crash, ignore SIGTERM, fail health) so
//! the daemon's handling of each is tested against a real process.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
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
    /// Take this long over every completion (a long generation, to test that busy models are
    /// not evicted).
    #[arg(long, value_parser = duration_arg)]
    pub request_delay: Option<Duration>,
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
    requests: AtomicU64,
    /// Completion requests being served now.
    in_flight: AtomicU64,
    started: std::time::Instant,
    /// Milliseconds since `started` of the last completion request, 0 if none.
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
    let state = Arc::new(Worker {
        args,
        weights: Mutex::new(None),
        requests: AtomicU64::new(0),
        in_flight: AtomicU64::new(0),
        started: std::time::Instant::now(),
        last_activity_ms: AtomicU64::new(0),
    });
    let app = Router::new()
        .route("/health", get(health))
        .route("/load", post(load))
        .route("/unload", post(unload))
        .route("/stats", get(stats))
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .with_state(state);
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

fn error(status: StatusCode, kind: &str, message: String) -> Response {
    let body = json!({"error": {"message": message, "type": kind, "code": status.as_u16()}});
    (status, Json(body)).into_response()
}

impl Worker {
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

    /// Starts serving a completion: the weights, and the guard that counts the request; or the
    /// answer for a model that is not loaded.
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

/// Reads the model file: a regular file or a pipe, at most [`MAX_WEIGHTS`] bytes.
async fn read_weights(path: &str) -> std::io::Result<Vec<u8>> {
    use std::io::{Error, ErrorKind};
    use std::os::unix::fs::FileTypeExt;
    use tokio::io::AsyncReadExt;
    let kind = tokio::fs::metadata(path).await?.file_type();
    if !(kind.is_file() || kind.is_fifo()) {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "not a regular file (a directory or a device cannot hold weights)",
        ));
    }
    let mut bytes = Vec::new();
    tokio::fs::File::open(path)
        .await?
        .take(MAX_WEIGHTS + 1)
        .read_to_end(&mut bytes)
        .await?;
    if bytes.len() as u64 > MAX_WEIGHTS {
        return Err(Error::new(
            ErrorKind::FileTooLarge,
            format!("larger than the built-in worker's limit of {MAX_WEIGHTS} bytes"),
        ));
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
        "loaded": worker.weights().is_some(),
        "idle_ms": worker.idle_ms(),
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

#[derive(Debug, Deserialize)]
struct ChatRequest {
    #[serde(default)]
    messages: Vec<ChatMessage>,
    max_tokens: Option<usize>,
    #[serde(default)]
    stream: bool,
}

#[derive(Debug, Deserialize)]
struct ChatMessage {
    #[serde(default)]
    content: Value,
}

#[derive(Debug, Deserialize)]
struct CompletionRequest {
    #[serde(default)]
    prompt: Value,
    max_tokens: Option<usize>,
    #[serde(default)]
    stream: bool,
}

async fn chat_completions(
    State(worker): State<Arc<Worker>>,
    Json(request): Json<ChatRequest>,
) -> Response {
    let (weights, _serving) = match worker.begin().await {
        Ok(begun) => begun,
        Err(response) => return response,
    };
    let prompt: String = request
        .messages
        .iter()
        .map(|m| value_text(&m.content))
        .collect::<Vec<_>>()
        .join("\n");
    let words = generate(&weights, &prompt, request.max_tokens.unwrap_or(16));
    let id = format!("chatcmpl-{:016x}", fnv1a(prompt.as_bytes()));
    let name = worker.args.name.clone();
    if request.stream {
        let chunks = words.into_iter().enumerate().map(move |(i, word)| {
            let text = if i == 0 { word } else { format!(" {word}") };
            json!({"id": id, "object": "chat.completion.chunk", "model": name,
                   "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]})
        });
        return stream(chunks);
    }
    Json(json!({
        "id": id,
        "object": "chat.completion",
        "model": name,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": words.join(" ")},
            "finish_reason": "length",
        }],
        "usage": {"prompt_tokens": prompt.split_whitespace().count(), "completion_tokens": words.len()},
    }))
    .into_response()
}

async fn completions(
    State(worker): State<Arc<Worker>>,
    Json(request): Json<CompletionRequest>,
) -> Response {
    let (weights, _serving) = match worker.begin().await {
        Ok(begun) => begun,
        Err(response) => return response,
    };
    let prompt = value_text(&request.prompt);
    let words = generate(&weights, &prompt, request.max_tokens.unwrap_or(16));
    let id = format!("cmpl-{:016x}", fnv1a(prompt.as_bytes()));
    let name = worker.args.name.clone();
    if request.stream {
        let chunks = words.into_iter().enumerate().map(move |(i, word)| {
            let text = if i == 0 { word } else { format!(" {word}") };
            json!({"id": id, "object": "text_completion", "model": name,
                   "choices": [{"index": 0, "text": text, "finish_reason": null}]})
        });
        return stream(chunks);
    }
    Json(json!({
        "id": id,
        "object": "text_completion",
        "model": name,
        "choices": [{"index": 0, "text": words.join(" "), "finish_reason": "length"}],
    }))
    .into_response()
}

fn stream(chunks: impl Iterator<Item = Value> + Send + 'static) -> Response {
    let events = chunks
        .map(|chunk| SseEvent::default().data(chunk.to_string()))
        .chain(std::iter::once(SseEvent::default().data("[DONE]")))
        .map(Ok::<_, std::convert::Infallible>);
    Sse::new(futures_util::stream::iter(events)).into_response()
}

fn value_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str).or_else(|| p.as_str()))
            .collect::<Vec<_>>()
            .join(" "),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Deterministic words from the weights: the same prompt and file always give the same text.
/// Each word is found around a pseudo-random offset, so generation costs the same for a 1 KB
/// or a 1 GB file.
pub fn generate(weights: &[u8], prompt: &str, max_tokens: usize) -> Vec<String> {
    let count = max_tokens.clamp(1, 1024);
    let mut state = fnv1a(prompt.as_bytes()) | 1;
    let mut words = Vec::with_capacity(count);
    for _ in 0..count {
        // xorshift64*
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        let r = state.wrapping_mul(0x2545_F491_4F6C_DD1D);
        words.push(word_at(weights, (r % weights.len().max(1) as u64) as usize));
    }
    words
}

fn word_at(bytes: &[u8], offset: usize) -> String {
    let is_word = |b: &u8| b.is_ascii_alphanumeric() || *b == b'\'' || *b == b'-';
    if bytes.is_empty() {
        return "…".to_string();
    }
    // Move to the start of the next word (wrapping), then take it.
    let start = (0..bytes.len().min(4096))
        .map(|i| (offset + i) % bytes.len())
        .find(|&i| is_word(&bytes[i]) && (i == 0 || !is_word(&bytes[i - 1])));
    let Some(start) = start else {
        return "…".to_string();
    };
    let end = bytes[start..]
        .iter()
        .take(48)
        .position(|b| !is_word(b))
        .map_or(bytes.len().min(start + 48), |n| start + n);
    String::from_utf8_lossy(&bytes[start..end]).to_lowercase()
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_is_deterministic_and_uses_the_files_words() {
        let weights = b"the quick brown fox jumps over the lazy dog";
        let a = generate(weights, "hello", 8);
        let b = generate(weights, "hello", 8);
        assert_eq!(a, b);
        assert_eq!(a.len(), 8);
        let vocabulary: Vec<&str> = std::str::from_utf8(weights).unwrap().split(' ').collect();
        assert!(a.iter().all(|w| vocabulary.contains(&w.as_str())), "{a:?}");
        assert_ne!(generate(weights, "other prompt", 8), a);
    }

    #[test]
    fn empty_or_wordless_weights_do_not_panic() {
        assert_eq!(generate(b"", "x", 2), vec!["…", "…"]);
        assert_eq!(generate(b"   ...   ", "x", 1), vec!["…"]);
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
}
