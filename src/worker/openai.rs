//! The built-in worker's OpenAI-compatible endpoints: chat and text completions, embeddings,
//! the Responses API and audio transcriptions, each in the shape the official clients parse.
//! Streams are paced by `--token-delay` and count as served until they end or the client goes.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Json;
use axum::extract::{Multipart, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::text::{self, EMBEDDING_DIMENSIONS, MAX_EMBEDDING_DIMENSIONS, fnv1a, token_count};
use super::{Serving, Worker, error};

#[derive(Debug, Deserialize)]
pub(super) struct ChatRequest {
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
pub(super) struct CompletionRequest {
    #[serde(default)]
    prompt: Value,
    max_tokens: Option<usize>,
    #[serde(default)]
    stream: bool,
}

#[derive(Debug, Deserialize)]
pub(super) struct EmbeddingRequest {
    #[serde(default)]
    input: Value,
    encoding_format: Option<String>,
    dimensions: Option<usize>,
}

#[derive(Debug, Deserialize)]
pub(super) struct ResponsesRequest {
    #[serde(default)]
    input: Value,
    instructions: Option<String>,
    max_output_tokens: Option<usize>,
    #[serde(default)]
    stream: bool,
}

/// How many words an answer has when the request does not say.
const DEFAULT_TOKENS: usize = 16;

pub(super) async fn chat_completions(
    State(worker): State<Arc<Worker>>,
    Json(request): Json<ChatRequest>,
) -> Response {
    let (weights, serving) = match worker.begin().await {
        Ok(begun) => begun,
        Err(response) => return response,
    };
    let prompt: String = request
        .messages
        .iter()
        .map(|m| value_text(&m.content))
        .collect::<Vec<_>>()
        .join("\n");
    let words = text::generate(
        &weights,
        &prompt,
        request.max_tokens.unwrap_or(DEFAULT_TOKENS),
    );
    let id = format!("chatcmpl-{:016x}", fnv1a(prompt.as_bytes()));
    let name = worker.args.name.clone();
    let created = unix_seconds();
    if request.stream {
        let chunk = |delta: Value, finish: Value| {
            let data = json!({"id": id, "object": "chat.completion.chunk", "created": created,
                   "model": name, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
            SseEvent::default().data(data.to_string())
        };
        let mut events: Vec<SseEvent> = deltas(&words)
            .enumerate()
            .map(|(i, text)| {
                let delta = if i == 0 {
                    json!({"role": "assistant", "content": text})
                } else {
                    json!({"content": text})
                };
                chunk(delta, Value::Null)
            })
            .collect();
        events.push(chunk(json!({}), json!("length")));
        events.push(SseEvent::default().data("[DONE]"));
        return paced(events, worker.args.token_delay, serving);
    }
    let content = words.join(" ");
    Json(json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": name,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content},
            "finish_reason": "length",
        }],
        "usage": usage(&prompt, words.len()),
    }))
    .into_response()
}

pub(super) async fn completions(
    State(worker): State<Arc<Worker>>,
    Json(request): Json<CompletionRequest>,
) -> Response {
    let (weights, serving) = match worker.begin().await {
        Ok(begun) => begun,
        Err(response) => return response,
    };
    let prompt = value_text(&request.prompt);
    let words = text::generate(
        &weights,
        &prompt,
        request.max_tokens.unwrap_or(DEFAULT_TOKENS),
    );
    let id = format!("cmpl-{:016x}", fnv1a(prompt.as_bytes()));
    let name = worker.args.name.clone();
    let created = unix_seconds();
    if request.stream {
        let chunk = |text: &str, finish: Value| {
            let data = json!({"id": id, "object": "text_completion", "created": created,
                   "model": name, "choices": [{"index": 0, "text": text, "finish_reason": finish}]});
            SseEvent::default().data(data.to_string())
        };
        let mut events: Vec<SseEvent> = deltas(&words).map(|t| chunk(&t, Value::Null)).collect();
        events.push(chunk("", json!("length")));
        events.push(SseEvent::default().data("[DONE]"));
        return paced(events, worker.args.token_delay, serving);
    }
    Json(json!({
        "id": id,
        "object": "text_completion",
        "created": created,
        "model": name,
        "choices": [{"index": 0, "text": words.join(" "), "finish_reason": "length"}],
        "usage": usage(&prompt, words.len()),
    }))
    .into_response()
}

pub(super) async fn embeddings(
    State(worker): State<Arc<Worker>>,
    Json(request): Json<EmbeddingRequest>,
) -> Response {
    let (weights, _serving) = match worker.begin().await {
        Ok(begun) => begun,
        Err(response) => return response,
    };
    let inputs = embedding_inputs(&request.input);
    if inputs.is_empty() {
        return invalid("`input` must be a string or a non-empty array".to_string());
    }
    let dimensions = request.dimensions.unwrap_or(EMBEDDING_DIMENSIONS);
    if !(1..=MAX_EMBEDDING_DIMENSIONS).contains(&dimensions) {
        return invalid(format!(
            "`dimensions` must be between 1 and {MAX_EMBEDDING_DIMENSIONS}"
        ));
    }
    let base64 = match request.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return invalid(format!(
                "`encoding_format` {other:?} is not one of \"float\", \"base64\""
            ));
        }
    };
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, input)| {
            let vector = text::embedding(&weights, input, dimensions);
            let embedding = if base64 {
                json!(text::base64_f32(&vector))
            } else {
                json!(vector)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    let tokens: usize = inputs.iter().map(|input| token_count(input)).sum();
    Json(json!({
        "object": "list",
        "data": data,
        "model": worker.args.name,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }))
    .into_response()
}

pub(super) async fn responses(
    State(worker): State<Arc<Worker>>,
    Json(request): Json<ResponsesRequest>,
) -> Response {
    let (weights, serving) = match worker.begin().await {
        Ok(begun) => begun,
        Err(response) => return response,
    };
    let input = responses_input(&request.input);
    let prompt = match &request.instructions {
        Some(instructions) => format!("{instructions}\n{input}"),
        None => input,
    };
    let max_tokens = request.max_output_tokens.unwrap_or(DEFAULT_TOKENS);
    let words = text::generate(&weights, &prompt, max_tokens);
    let answer = Answer {
        id: format!("resp_{:016x}", fnv1a(prompt.as_bytes())),
        message_id: format!("msg_{:016x}", fnv1a(prompt.as_bytes()).rotate_left(32)),
        model: worker.args.name.clone(),
        created: unix_seconds(),
        instructions: request.instructions.clone(),
        max_output_tokens: request.max_output_tokens,
    };
    let text = words.join(" ");
    let input_tokens = token_count(&prompt);
    if !request.stream {
        return Json(answer.response(Some(&text), input_tokens, words.len())).into_response();
    }
    // The events the OpenAI API sends for one message, in its order: the client's stream
    // helper (`responses.stream`) needs the item and part announced before their deltas.
    let mut events = vec![
        json!({"type": "response.created", "response": answer.response(None, 0, 0)}),
        json!({"type": "response.in_progress", "response": answer.response(None, 0, 0)}),
        json!({"type": "response.output_item.added", "output_index": 0,
               "item": answer.message("in_progress", "")}),
        json!({"type": "response.content_part.added", "item_id": answer.message_id,
               "output_index": 0, "content_index": 0, "part": output_text("")}),
    ];
    events.extend(deltas(&words).map(|delta| {
        json!({"type": "response.output_text.delta", "item_id": answer.message_id,
               "output_index": 0, "content_index": 0, "delta": delta, "logprobs": []})
    }));
    events.extend([
        json!({"type": "response.output_text.done", "item_id": answer.message_id,
               "output_index": 0, "content_index": 0, "text": text, "logprobs": []}),
        json!({"type": "response.content_part.done", "item_id": answer.message_id,
               "output_index": 0, "content_index": 0, "part": output_text(&text)}),
        json!({"type": "response.output_item.done", "output_index": 0,
               "item": answer.message("completed", &text)}),
        json!({"type": "response.completed",
               "response": answer.response(Some(&text), input_tokens, words.len())}),
    ]);
    let events = events
        .into_iter()
        .enumerate()
        .map(|(sequence, mut data)| {
            data["sequence_number"] = json!(sequence);
            let name = data["type"].as_str().unwrap_or_default().to_string();
            SseEvent::default().event(name).data(data.to_string())
        })
        .collect();
    paced(events, worker.args.token_delay, serving)
}

/// The largest audio file a transcription takes (OpenAI's own limit).
pub(super) const MAX_AUDIO_BYTES: usize = 25 * 1024 * 1024;

pub(super) async fn audio_transcriptions(
    State(worker): State<Arc<Worker>>,
    mut form: Multipart,
) -> Response {
    let (weights, _serving) = match worker.begin().await {
        Ok(begun) => begun,
        Err(response) => return response,
    };
    let mut audio = None;
    let mut format = "json".to_string();
    loop {
        let field = match form.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(e) => return error(e.status(), "invalid_request_error", e.body_text()),
        };
        let name = field.name().unwrap_or_default().to_string();
        let read = match name.as_str() {
            "file" => field.bytes().await.map(|bytes| audio = Some(bytes)),
            "response_format" => field.text().await.map(|text| format = text),
            // `model`, `language`, `prompt`, `temperature`: the answer does not depend on them.
            _ => Ok(()),
        };
        if let Err(e) = read {
            return error(e.status(), "invalid_request_error", e.body_text());
        }
    }
    let Some(audio) = audio else {
        return invalid("the form has no `file` field".to_string());
    };
    let text = text::transcript(&weights, &audio);
    match format.as_str() {
        "json" => Json(json!({"text": text})).into_response(),
        "text" => (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{text}\n"),
        )
            .into_response(),
        "verbose_json" => Json(json!({
            "task": "transcribe",
            "language": "english",
            "duration": 0.0,
            "text": text,
            "segments": [],
        }))
        .into_response(),
        other => invalid(format!(
            "`response_format` {other:?} is not one of \"json\", \"text\", \"verbose_json\""
        )),
    }
}

/// What one Responses API answer says about itself, in every event that carries it.
struct Answer {
    id: String,
    message_id: String,
    model: String,
    created: u64,
    instructions: Option<String>,
    max_output_tokens: Option<usize>,
}

impl Answer {
    /// The `response` object: in progress (no text yet) or completed with `text`.
    fn response(&self, text: Option<&str>, input_tokens: usize, output_tokens: usize) -> Value {
        let (status, output, usage) = match text {
            Some(text) => (
                "completed",
                json!([self.message("completed", text)]),
                json!({
                    "input_tokens": input_tokens,
                    "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                    "output_tokens": output_tokens,
                    "output_tokens_details": {"reasoning_tokens": 0},
                    "total_tokens": input_tokens + output_tokens,
                }),
            ),
            None => ("in_progress", json!([]), Value::Null),
        };
        json!({
            "id": self.id,
            "object": "response",
            "created_at": self.created,
            "status": status,
            "error": null,
            "incomplete_details": null,
            "instructions": self.instructions,
            "max_output_tokens": self.max_output_tokens,
            "model": self.model,
            "output": output,
            "parallel_tool_calls": false,
            "temperature": 1.0,
            "tool_choice": "none",
            "tools": [],
            "top_p": 1.0,
            "metadata": {},
            "usage": usage,
        })
    }

    /// The one output item: the assistant's message.
    fn message(&self, status: &str, text: &str) -> Value {
        let content = if status == "completed" {
            json!([output_text(text)])
        } else {
            json!([])
        };
        json!({"type": "message", "id": self.message_id, "status": status,
               "role": "assistant", "content": content})
    }
}

fn output_text(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": []})
}

/// A stream's pieces of text: the words, each but the first after its space, so that the
/// pieces joined are the non-streaming answer.
fn deltas(words: &[String]) -> impl Iterator<Item = String> + '_ {
    words.iter().enumerate().map(|(i, word)| {
        if i == 0 {
            word.clone()
        } else {
            format!(" {word}")
        }
    })
}

/// An SSE answer that sends `events` `delay` apart and counts as served (holds `serving`) until
/// the last one is sent or the client goes away: hyper drops the body, and the guard with it,
/// when the connection closes.
fn paced(events: Vec<SseEvent>, delay: Option<Duration>, serving: Serving) -> Response {
    let stream = futures_util::stream::unfold(
        (events.into_iter(), serving, true),
        move |(mut events, serving, first)| async move {
            let event = events.next()?;
            if let Some(delay) = delay.filter(|_| !first) {
                tokio::time::sleep(delay).await;
            }
            Some((Ok::<_, Infallible>(event), (events, serving, false)))
        },
    );
    Sse::new(stream).into_response()
}

fn usage(prompt: &str, completion_tokens: usize) -> Value {
    let prompt_tokens = token_count(prompt);
    json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    })
}

fn invalid(message: String) -> Response {
    error(StatusCode::BAD_REQUEST, "invalid_request_error", message)
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

/// The text of a message's `content`: a string, or the `text` of its parts.
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

/// The texts to embed: a string, an array of strings, or token arrays (embedded by their JSON
/// text, since this model has no tokenizer).
fn embedding_inputs(input: &Value) -> Vec<String> {
    match input {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) if items.iter().all(Value::is_number) && !items.is_empty() => {
            vec![input.to_string()]
        }
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// The prompt of a Responses API `input`: a string, or message items whose `content` is a
/// string or parts with `text`.
fn responses_input(input: &Value) -> String {
    match input {
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => s.clone(),
                item => value_text(item.get("content").unwrap_or(&Value::Null)),
            })
            .collect::<Vec<_>>()
            .join("\n"),
        other => value_text(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_are_read_in_every_shape_the_api_allows() {
        assert_eq!(embedding_inputs(&json!("one")), ["one"]);
        assert_eq!(embedding_inputs(&json!(["a", "b"])), ["a", "b"]);
        assert_eq!(embedding_inputs(&json!([1, 2])), ["[1,2]"]);
        assert_eq!(embedding_inputs(&json!([[1], [2]])), ["[1]", "[2]"]);
        assert!(embedding_inputs(&json!(null)).is_empty());
        assert!(embedding_inputs(&json!([])).is_empty());

        assert_eq!(responses_input(&json!("hi")), "hi");
        let items = json!([
            {"role": "system", "content": "be brief"},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]},
        ]);
        assert_eq!(responses_input(&items), "be brief\nhi");
    }

    #[test]
    fn stream_pieces_join_to_the_whole_answer() {
        let words = vec!["a".to_string(), "b".to_string(), "c".to_string()];
        assert_eq!(deltas(&words).collect::<String>(), words.join(" "));
    }

    #[test]
    fn a_completed_response_has_the_shape_the_client_reads() {
        let answer = Answer {
            id: "resp_1".into(),
            message_id: "msg_1".into(),
            model: "alpha".into(),
            created: 7,
            instructions: None,
            max_output_tokens: None,
        };
        let response = answer.response(Some("hello there"), 3, 2);
        assert_eq!(response["object"], "response");
        assert_eq!(response["status"], "completed");
        let message = &response["output"][0];
        assert_eq!(message["type"], "message");
        assert_eq!(message["role"], "assistant");
        assert_eq!(message["content"][0]["type"], "output_text");
        assert_eq!(message["content"][0]["text"], "hello there");
        assert_eq!(response["usage"]["total_tokens"], 5);
        assert_eq!(answer.response(None, 0, 0)["output"], json!([]));
    }
}
