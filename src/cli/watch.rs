//! `hub watch`: the daemon's event stream (`GET /hub/events`), one line per event, live. When the
//! connection drops (a daemon restart, a network blip) it reconnects with a short backoff and
//! says so on stderr; stdout carries only events.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use futures_util::StreamExt;

use super::FileArg;
use super::client::Client;
use super::render;
use crate::wire::{EventsQuery, HubEvent};

#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    /// Only these models' events (default: every event, reconcile reports included).
    models: Vec<String>,
    #[command(flatten)]
    file: FileArg,
    /// Output format: one readable line, or one JSON object, per event.
    #[arg(short = 'o', long, value_enum, default_value_t = Format::Text)]
    output: Format,
    /// Exit after this many events (for scripts: `hub watch --count 1` waits for the next one).
    #[arg(long, value_name = "N")]
    count: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// The first wait before reconnecting; it doubles up to [`MAX_BACKOFF`] while the daemon is away.
const MIN_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// The server sends a keep-alive every 15 s; this much silence means the connection is dead.
const IDLE: Duration = Duration::from_secs(45);

pub async fn run(args: WatchArgs, url: Option<String>) -> anyhow::Result<ExitCode> {
    let client = Client::new(url, &args.file.file);
    let mut out = std::io::stdout();
    follow(&client, &args.models, args.output, args.count, &mut out).await?;
    Ok(ExitCode::SUCCESS)
}

/// Prints events until `count` have been printed (forever without one), reconnecting after
/// every drop.
pub async fn follow(
    client: &Client,
    models: &[String],
    format: Format,
    count: Option<u64>,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let mut printed = 0u64;
    let mut backoff = MIN_BACKOFF;
    let mut connected_before = false;
    loop {
        // One model is filtered by the daemon; several, here.
        let query = EventsQuery {
            model: match models {
                [one] => Some(one.clone()),
                _ => None,
            },
        };
        match client.stream("/hub/events", &query, IDLE).await {
            Ok(response) => {
                backoff = MIN_BACKOFF;
                eprintln!(
                    "{} hub at {}",
                    if connected_before {
                        "reconnected to"
                    } else {
                        "watching"
                    },
                    client.base()
                );
                connected_before = true;
                let mut parser = SseParser::default();
                let mut body = response.bytes_stream();
                let ended = loop {
                    let chunk = match body.next().await {
                        Some(Ok(chunk)) => chunk,
                        Some(Err(e)) => break format!("connection lost: {e}"),
                        None => break "the daemon closed the stream".to_string(),
                    };
                    for message in parser.push(&chunk) {
                        let Some(line) = format_message(&message, models, format) else {
                            continue;
                        };
                        writeln!(out, "{line}")?;
                        out.flush()?;
                        printed += 1;
                        if count.is_some_and(|n| printed >= n) {
                            return Ok(());
                        }
                    }
                };
                eprintln!("{ended}; reconnecting");
            }
            // An unknown model (404) or a refused request stays so: say it once and stop.
            Err(error) if super::client::is_refused(&error) => return Err(error),
            Err(error) => eprintln!("{error:#}; retrying in {backoff:?}"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// The line for one SSE message, or `None` when it is filtered out or not an event.
fn format_message(message: &SseMessage, models: &[String], format: Format) -> Option<String> {
    if message.event == crate::wire::LAGGED_EVENT {
        return Some(format!(
            "-- fell behind: the daemon skipped events ({})",
            message.data
        ));
    }
    let event: HubEvent = serde_json::from_str(&message.data).ok()?;
    if !models.is_empty()
        && !event
            .model
            .as_ref()
            .is_some_and(|m| models.iter().any(|n| n == m))
    {
        return None;
    }
    Some(match format {
        Format::Text => render::event_line(&event),
        Format::Json => message.data.clone(),
    })
}

/// One Server-Sent Event: its name and its (joined) data lines.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseMessage {
    pub event: String,
    pub data: String,
}

/// Splits a byte stream into SSE messages (the subset of the format axum sends: `event:`,
/// `data:`, comments, blank-line terminated).
#[derive(Debug, Default)]
pub struct SseParser {
    buffer: Vec<u8>,
    current: SseMessage,
    has_data: bool,
}

impl SseParser {
    pub fn push(&mut self, bytes: &[u8]) -> Vec<SseMessage> {
        self.buffer.extend_from_slice(bytes);
        let mut messages = Vec::new();
        while let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.buffer.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if self.has_data {
                    messages.push(std::mem::take(&mut self.current));
                }
                self.current = SseMessage::default();
                self.has_data = false;
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "event" => self.current.event = value.to_string(),
                "data" => {
                    if self.has_data {
                        self.current.data.push('\n');
                    }
                    self.current.data.push_str(value);
                    self.has_data = true;
                }
                _ => {}
            }
        }
        messages
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::response::sse::{Event, Sse};

    use super::*;

    #[test]
    fn the_parser_splits_messages_across_chunks_and_skips_comments() {
        let mut parser = SseParser::default();
        assert!(parser.push(b": keep-alive\n\nevent: pha").is_empty());
        let messages = parser.push(b"se\ndata: {\"a\":1}\r\n\nevent: x\ndata: 1\ndata: 2\n\n");
        assert_eq!(
            messages,
            [
                SseMessage {
                    event: "phase".into(),
                    data: "{\"a\":1}".into()
                },
                SseMessage {
                    event: "x".into(),
                    data: "1\n2".into()
                },
            ]
        );
    }

    /// A server whose every connection sends one event and then closes: `follow` must print
    /// the events of several connections, reconnecting in between.
    #[tokio::test]
    async fn watch_reconnects_after_the_stream_ends() {
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = connections.clone();
        let app = axum::Router::new().route(
            "/hub/events",
            axum::routing::get(move || {
                let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                async move {
                    let event = HubEvent {
                        time: "2026-11-23T10:00:00.000Z".into(),
                        kind: "phase".into(),
                        model: Some("alpha".into()),
                        message: format!("connection {n}"),
                        reason: None,
                        report: None,
                        bytes: None,
                        bytes_source: None,
                    };
                    let data = serde_json::to_string(&event).unwrap();
                    let stream = futures_util::stream::iter([Ok::<_, std::convert::Infallible>(
                        Event::default().event("phase").data(data),
                    )]);
                    Sse::new(stream)
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let client = Client::new(Some(url), std::path::Path::new("/nonexistent/hub.yaml"));
        let mut out = Vec::new();
        follow(&client, &[], Format::Text, Some(3), &mut out)
            .await
            .unwrap();
        server.abort();
        let out = String::from_utf8(out).unwrap();
        assert_eq!(
            out,
            "10:00:00.000Z  phase      alpha         connection 1\n\
             10:00:00.000Z  phase      alpha         connection 2\n\
             10:00:00.000Z  phase      alpha         connection 3\n"
        );
        assert_eq!(connections.load(Ordering::SeqCst), 3);
    }
}
