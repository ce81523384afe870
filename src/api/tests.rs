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
    ];
    assert_eq!(paths, expected.into_iter().collect());
    // Every write names the bearer scheme; no read does.
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let secured = operation["security"].is_array();
            assert_eq!(secured, method == "post", "{method} {path}");
        }
    }
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
    assert!(super::same(b"secret", b"secret"));
    assert!(!super::same(b"secret", b"secreT"));
    assert!(!super::same(b"secret", b"secret2"));
    assert!(!super::same(b"", b"x"));
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
            report: None,
        });
    }
    let mut stream = Box::pin(futures_util::stream::unfold(receiver, next));
    assert!(matches!(stream.next().await, Some(Item::Lagged(76))));
    match stream.next().await {
        Some(Item::Event(event)) => assert_eq!(event.message, "event 76"),
        _ => panic!("the stream ended after lagging"),
    }
}
