//! Forwarding one admitted request to its worker and its answer back, unbuffered.
//!
//! The request body was read whole (it names the model, and it is bounded); the answer streams
//! frame by frame as the worker sends it, so a token reaches the client the moment the worker
//! writes it. The answer's body holds the request's [`Ticket`]: the model counts as busy until
//! the last byte is sent or the client goes away, and a client that goes away drops the body,
//! which closes the connection to the worker and so cancels its work. A worker that dies in the
//! middle of a stream of server-sent events ends the stream with an error event, never a hang.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, header};
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::Ticket;

/// A request to forward: what the client sent, for a path on the worker.
pub struct Forward {
    pub method: Method,
    /// The worker's path and query (`/v1/chat/completions`, `/props?x=1`).
    pub path_and_query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Why the worker gave no answer.
#[derive(Debug)]
pub enum ProxyError {
    /// No response headers within the upstream timeout.
    Timeout(Duration),
    /// The connection failed or broke before the answer began.
    Unreachable(String),
}

/// The HTTP client to workers: HTTP/1.1 with kept-alive connections per worker port.
#[derive(Clone)]
pub struct Proxy {
    client: Client<HttpConnector, Body>,
}

impl Default for Proxy {
    fn default() -> Self {
        Proxy::new()
    }
}

impl Proxy {
    pub fn new() -> Proxy {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(256)
            .build(connector);
        Proxy { client }
    }

    /// Sends `forward` to the worker on `port` and returns its answer with a body that streams,
    /// holds `ticket` until it ends, and records the request's latency from `arrived`.
    pub async fn send(
        &self,
        port: u16,
        forward: Forward,
        ticket: Ticket,
        arrived: Instant,
        timeout: Duration,
    ) -> Result<Response<Body>, ProxyError> {
        let uri = format!("http://127.0.0.1:{port}{}", forward.path_and_query);
        let mut request = Request::builder()
            .method(forward.method)
            .uri(uri)
            .body(Body::from(forward.body))
            .map_err(|e| ProxyError::Unreachable(e.to_string()))?;
        let headers = request.headers_mut();
        for (name, value) in &forward.headers {
            if !hop_by_hop(name, &forward.headers) && !is_hubs_own(name) {
                headers.append(name.clone(), value.clone());
            }
        }
        let answer = tokio::time::timeout(timeout, self.client.request(request))
            .await
            .map_err(|_| ProxyError::Timeout(timeout))?
            .map_err(|e| ProxyError::Unreachable(error_chain(&e)))?;
        let (mut parts, body) = answer.into_parts();
        let sse = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        let upstream = std::mem::take(&mut parts.headers);
        for (name, value) in &upstream {
            if !hop_by_hop(name, &upstream) {
                parts.headers.append(name.clone(), value.clone());
            }
        }
        if sse {
            // Tell buffering proxies in front of hub (nginx) to pass events on at once.
            parts
                .headers
                .insert("x-accel-buffering", HeaderValue::from_static("no"));
        }
        let body = Streamed {
            inner: body,
            ticket: Some(ticket),
            arrived,
            sse,
            failed: false,
        };
        Ok(Response::from_parts(parts, Body::new(body)))
    }
}

/// The worker's answer on its way to the client, holding the request's ticket.
struct Streamed {
    inner: Incoming,
    ticket: Option<Ticket>,
    arrived: Instant,
    sse: bool,
    /// The worker broke off a stream and the error event has been sent.
    failed: bool,
}

impl Streamed {
    fn finish(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            ticket.lane().stats.finished(self.arrived.elapsed());
        }
    }
}

/// hyper stops polling a body whose length it knows once the last byte is out, so the end of a
/// request (its latency, its ticket) is also taken when the body is dropped; a client that left
/// drops it too.
impl Drop for Streamed {
    fn drop(&mut self) {
        self.finish();
    }
}

impl HttpBody for Streamed {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if self.failed {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(None) => {
                self.finish();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(error))) if self.sse => {
                self.finish();
                self.failed = true;
                let event = serde_json::json!({"error": {
                    "message": format!("the model's worker broke off the stream: {}", error_chain(&error)),
                    "type": "upstream_error",
                    "code": "upstream_disconnected",
                }});
                let text = format!("event: error\ndata: {event}\n\n");
                Poll::Ready(Some(Ok(Frame::data(Bytes::from(text)))))
            }
            Poll::Ready(Some(Err(error))) => {
                self.finish();
                Poll::Ready(Some(Err(error)))
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Headers that belong to one connection, not to the message (RFC 9110 section 7.6.1): never
/// forwarded, in either direction. Includes those the message's `Connection` header names.
pub fn hop_by_hop(name: &HeaderName, headers: &HeaderMap) -> bool {
    const FIXED: [&str; 9] = [
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ];
    if FIXED.contains(&name.as_str()) {
        return true;
    }
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case(name.as_str()))
}

/// Headers meant for hub, not the worker: the client's key to hub, and the Host it addressed.
fn is_hubs_own(name: &HeaderName) -> bool {
    name == header::AUTHORIZATION || name == header::HOST
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_not_forwarded() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, X-Trace"),
        );
        headers.insert("x-trace", HeaderValue::from_static("1"));
        headers.insert("x-request-id", HeaderValue::from_static("2"));
        let forwarded =
            |name: &str| !hop_by_hop(&HeaderName::from_bytes(name.as_bytes()).unwrap(), &headers);
        assert!(!forwarded("connection"));
        assert!(!forwarded("transfer-encoding"));
        assert!(!forwarded("keep-alive"));
        assert!(!forwarded("x-trace"), "named by Connection");
        assert!(forwarded("x-request-id"));
        assert!(forwarded("content-type"));
    }
}
