//! Unit tests of the API's pure parts: the committed OpenAPI document is fresh and complete, log
//! tails are bounded and exact, metrics are well-formed Prometheus text.

use std::collections::BTreeSet;

use super::logs::{read_since, read_tail};

#[test]
fn the_committed_openapi_document_is_what_the_code_generates() {
    let generated = super::openapi_json();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(path, &generated).expect("write docs/openapi.json");
    }
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/openapi.json is stale: run `UPDATE_GOLDEN=1 cargo test --lib openapi` and commit it"
    );
}

#[test]
fn the_openapi_document_covers_every_route_and_error() {
    let doc: serde_json::Value = serde_json::from_str(&super::openapi_json()).unwrap();
    let paths: BTreeSet<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let expected = [
        "/health",
        "/hub",
        "/hub/apply",
        "/hub/events",
        "/hub/models/{name}",
        "/hub/models/{name}/logs",
        "/hub/models/{name}/{verb}",
        "/hub/plan",
        "/hub/reload",
        "/hub/shutdown",
        "/hub/status",
        "/metrics",
        "/openapi.json",
        "/ready",
        "/upstream/{model}/{*path}",
        "/v1/audio/transcriptions",
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
        "/v1/models",
        "/v1/responses",
    ];
    assert_eq!(paths, expected.into_iter().collect());
    let gateway = |path: &str| path.starts_with("/v1/") || path.starts_with("/upstream/");
    // Every write and every gateway call names the bearer scheme; no other read does.
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let secured = operation["security"].is_array();
            assert_eq!(
                secured,
                method == "post" || gateway(path),
                "{method} {path}"
            );
        }
    }
    // What the guard answers is on every operation it can answer it for.
    for (path, item) in doc["paths"].as_object().unwrap() {
        if gateway(path) {
            for (method, operation) in item.as_object().unwrap() {
                for code in ["401", "403", "413"] {
                    assert_eq!(
                        operation["responses"][code]["content"]["application/json"]["schema"]["$ref"],
                        "#/components/schemas/OpenAiError",
                        "{method} {path} {code}"
                    );
                }
            }
            continue;
        }
        for (method, operation) in item.as_object().unwrap() {
            let responses = &operation["responses"];
            let codes: &[&str] = if method == "post" {
                &["401", "403", "415"]
            } else {
                &["403"]
            };
            for code in codes {
                assert_eq!(
                    responses[code]["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/Envelope",
                    "{method} {path} {code}"
                );
            }
        }
    }
    assert!(doc["paths"]["/hub/events"]["get"]["responses"]["404"].is_object());
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    for schema in ["Status", "ModelDetail", "PlanReply", "Envelope", "Problem"] {
        assert!(
            doc["components"]["schemas"][schema].is_object(),
            "{schema} missing"
        );
    }
}

fn log_with(lines: usize) -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().unwrap();
    let text: String = (1..=lines).map(|i| format!("line {i}\n")).collect();
    std::fs::write(file.path(), text).unwrap();
    file
}

#[test]
fn a_tail_is_the_last_lines_and_the_offset_is_the_end() {
    let file = log_with(5);
    let (text, offset) = read_tail(file.path(), 2).unwrap();
    assert_eq!(String::from_utf8(text).unwrap(), "line 4\nline 5\n");
    assert_eq!(offset, std::fs::metadata(file.path()).unwrap().len());
    let (text, _) = read_tail(file.path(), 10).unwrap();
    assert_eq!(text.iter().filter(|b| **b == b'\n').count(), 5);
    let (text, _) = read_tail(file.path(), 0).unwrap();
    assert!(text.is_empty());
}

#[test]
fn a_tail_of_a_large_log_reads_across_chunks_and_keeps_a_partial_last_line() {
    let file = log_with(50_000);
    std::fs::write(
        file.path(),
        std::fs::read_to_string(file.path()).unwrap() + "partial",
    )
    .unwrap();
    let (text, _) = read_tail(file.path(), 10_000).unwrap();
    let text = String::from_utf8(text).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 10_000);
    assert_eq!(lines[0], "line 40002");
    assert_eq!(lines[9_999], "partial");
}

#[test]
fn since_reads_what_was_appended_and_restarts_a_rotated_file() {
    let file = log_with(2);
    let (_, offset) = read_tail(file.path(), 1).unwrap();
    std::fs::write(
        file.path(),
        std::fs::read_to_string(file.path()).unwrap() + "line 3\n",
    )
    .unwrap();
    let (text, next) = read_since(file.path(), offset).unwrap();
    assert_eq!(text, b"line 3\n");
    let (text, again) = read_since(file.path(), next).unwrap();
    assert!(text.is_empty());
    assert_eq!(again, next);
    // Rotated: the new file is shorter than the offset.
    std::fs::write(file.path(), "fresh\n").unwrap();
    let (text, _) = read_since(file.path(), next).unwrap();
    assert_eq!(text, b"fresh\n");
}

#[test]
fn a_missing_log_is_empty() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.log");
    assert_eq!(read_tail(&missing, 5).unwrap(), (Vec::new(), 0));
    assert_eq!(read_since(&missing, 5).unwrap(), (Vec::new(), 0));
}

#[test]
fn tokens_compare_equal_only_when_identical() {
    use super::access::same;
    assert!(same(b"secret", b"secret"));
    assert!(!same(b"secret", b"secreT"));
    assert!(!same(b"secret", b"secret2"));
    assert!(!same(b"", b"x"));
}

/// The status the guard answers a request with (200: it passes to the handler).
fn guarded(access: &super::Access, method: &str, headers: &[(&str, &str)]) -> u16 {
    let mut map = axum::http::HeaderMap::new();
    for (name, value) in headers {
        map.append(
            axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    let method = axum::http::Method::from_bytes(method.as_bytes()).unwrap();
    match access.check(&method, "/hub/apply", &map) {
        Ok(()) => 200,
        Err(refused) => axum::response::IntoResponse::into_response(refused)
            .status()
            .as_u16(),
    }
}

#[test]
fn on_loopback_the_guard_takes_requests_addressed_to_loopback_or_an_allowed_name() {
    let access = super::Access::new(None, "127.0.0.1", &["Hub.Example.com".to_string()]).unwrap();
    let cases = [
        ("127.0.0.1:8000", 200),
        ("localhost:8000", 200),
        ("LOCALHOST", 200),
        ("[::1]:8000", 200),
        ("127.0.0.2:9", 200),
        // Another port: an SSH tunnel or `kubectl port-forward`.
        ("localhost:9000", 200),
        ("hub.example.com", 200),
        ("hub.example.com:443", 200),
        // DNS rebinding: the page's own name, now resolving to 127.0.0.1.
        ("evil.example:8000", 403),
        ("localhost.evil.example", 403),
        ("localhost@evil.example", 403),
        ("10.0.0.5:8000", 403),
        ("", 403),
    ];
    for (host, expected) in cases {
        assert_eq!(
            guarded(&access, "GET", &[("host", host)]),
            expected,
            "Host {host:?}"
        );
    }
    // A client that sends no Host (HTTP/1.0 by hand) is no browser.
    assert_eq!(guarded(&access, "GET", &[]), 200);
    // Two Hosts: each must pass.
    let two = [("host", "localhost:8000"), ("host", "evil.example")];
    assert_eq!(guarded(&access, "GET", &two), 403);
}

#[test]
fn on_a_public_bind_the_host_is_not_checked_but_writes_still_are() {
    let token = "0123456789abcdef0123";
    let access = super::Access::new(Some(token.to_string()), "0.0.0.0", &[]).unwrap();
    let bearer = format!("Bearer {token}");
    assert_eq!(
        guarded(&access, "GET", &[("host", "gpu-box.lan:8000")]),
        200
    );
    let write = |extra: &[(&'static str, &'static str)]| {
        let mut headers = vec![("host", "gpu-box.lan:8000"), ("x-hub-client", "test")];
        headers.extend_from_slice(extra);
        headers
    };
    assert_eq!(guarded(&access, "POST", &write(&[])), 401);
    let mut with_token: Vec<(&str, &str)> = write(&[]);
    with_token.push(("authorization", &bearer));
    assert_eq!(guarded(&access, "POST", &with_token), 200);
    with_token.push(("origin", "http://evil.example"));
    assert_eq!(guarded(&access, "POST", &with_token), 403);
}

#[test]
fn a_write_needs_its_own_origin_and_a_marker_no_form_can_send() {
    let access = super::Access::new(None, "localhost", &["hub.example.com".to_string()]).unwrap();
    let host = ("host", "127.0.0.1:8000");
    let yaml = ("content-type", "application/yaml");
    let cases: &[(&[(&str, &str)], u16)] = &[
        (&[host, yaml], 200),
        (
            &[host, ("content-type", "application/json; charset=utf-8")],
            200,
        ),
        (&[host, ("content-type", "Application/YAML")], 200),
        (&[host, ("x-hub-client", "cli")], 200),
        (&[host, ("x-hub-client", "")], 200),
        // What a form or a page's fetch without preflight can send.
        (&[host], 415),
        (&[host, ("content-type", "text/plain")], 415),
        (&[host, ("content-type", "text/plain; charset=utf-8")], 415),
        (
            &[host, ("content-type", "application/x-www-form-urlencoded")],
            415,
        ),
        (
            &[host, ("content-type", "multipart/form-data; boundary=x")],
            415,
        ),
        (
            &[host, ("content-type", "application/json, text/plain")],
            415,
        ),
        (&[host, yaml, ("content-type", "text/plain")], 415),
        // The page is hub's own: the origin the request is addressed to, or an allowed name.
        (&[host, yaml, ("origin", "http://127.0.0.1:8000")], 200),
        (&[host, yaml, ("origin", "https://hub.example.com")], 200),
        // Any other page.
        (&[host, yaml, ("origin", "http://evil.example")], 403),
        (&[host, yaml, ("origin", "http://localhost:8000")], 403),
        (&[host, yaml, ("origin", "http://127.0.0.1:8001")], 403),
        (&[host, yaml, ("origin", "https://127.0.0.1:8000")], 403),
        (&[host, yaml, ("origin", "null")], 403),
        (&[host, yaml, ("origin", "http://127.0.0.1:8000/x")], 403),
        (
            &[
                host,
                yaml,
                ("origin", "http://127.0.0.1:8000"),
                ("origin", "http://evil.example"),
            ],
            403,
        ),
        (
            &[
                ("host", "evil.example:8000"),
                yaml,
                ("origin", "http://evil.example:8000"),
            ],
            403,
        ),
    ];
    for (headers, expected) in cases {
        assert_eq!(guarded(&access, "POST", headers), *expected, "{headers:?}");
    }
    // Reads and preflights are not writes: no marker, and any Origin.
    let page = [host, ("origin", "http://evil.example")];
    assert_eq!(guarded(&access, "GET", &page), 200);
    assert_eq!(guarded(&access, "OPTIONS", &page), 200);
}

#[test]
fn a_token_must_be_long_and_plain() {
    use super::access::check_token;
    assert!(check_token("0123456789abcdef").is_ok());
    for weak in ["a", " ", "s3cret-token", "0123456789abcde"] {
        let error = check_token(weak).unwrap_err().to_string();
        assert!(
            error.contains("brute force") || error.contains("printable"),
            "{weak:?}: {error}"
        );
    }
    for mangled in [
        " 0123456789abcdef",
        "0123456789abcdef\n",
        "0123456789 abcdef",
        "0123456789abcdéf",
    ] {
        let error = check_token(mangled).unwrap_err().to_string();
        assert!(error.contains("printable ASCII"), "{mangled:?}: {error}");
    }
    let error = super::Access::new(Some("a".into()), "127.0.0.1", &[]).unwrap_err();
    assert!(error.to_string().contains("brute force"), "{error}");
    let token = "0123456789abcdef-secret";
    let access = super::Access::new(Some(token.into()), "127.0.0.1", &[]).unwrap();
    assert!(!format!("{access:?}").contains(token), "{access:?}");
}

#[test]
fn a_public_bind_needs_a_token_and_an_allowed_host_is_a_plain_name() {
    let error = super::Access::new(None, "0.0.0.0", &[]).unwrap_err();
    assert!(error.to_string().contains("without a token"), "{error}");
    for bad in ["https://hub.example.com", "hub.example.com:8443", "a@b", ""] {
        assert!(
            super::Access::new(None, "127.0.0.1", &[bad.to_string()]).is_err(),
            "{bad:?}"
        );
    }
}

#[tokio::test]
async fn a_lagging_event_subscriber_is_told_what_it_missed_and_goes_on() {
    use futures_util::StreamExt;

    use super::events::{Item, next};
    use crate::events::{HubEvent, Journal};

    let journal = Journal::default();
    let receiver = journal.subscribe();
    for i in 0..1100 {
        journal.record(HubEvent {
            time: "2026-11-23T10:00:00Z".to_string(),
            kind: "phase".to_string(),
            model: Some("alpha".to_string()),
            message: format!("event {i}"),
            reason: None,
            report: None,
            bytes: None,
            bytes_source: None,
        });
    }
    let mut stream = Box::pin(futures_util::stream::unfold(receiver, next));
    assert!(matches!(stream.next().await, Some(Item::Lagged(76))));
    match stream.next().await {
        Some(Item::Event(event)) => assert_eq!(event.message, "event 76"),
        _ => panic!("the stream ended after lagging"),
    }
}
