//! hub: a declarative reconciler for a machine that serves AI models.
//!
//! Read in this order: `config` turns hub.yaml into a validated `Desired`; `observed` is what hub
//! sees of each model; `plan` is the pure function from both to actions; `reconcile` is the one
//! loop that owns the observed state, runs the plan through `supervisor` (processes) and `engine`
//! (HTTP to workers), and publishes `status` snapshots; `watch` feeds it file changes; `api` and
//! `cli` are the edges. `worker` is the built-in model server that hub runs as a real process.

pub mod api;
pub mod cli;
pub mod config;
pub mod engine;
pub mod events;
pub mod observed;
pub mod plan;
pub mod reconcile;
pub mod recover;
pub mod retry;
pub mod statefile;
pub mod status;
pub mod supervisor;
pub mod watch;
pub mod worker;

/// RFC 3339 in UTC with millisecond precision, the form every time in the API takes.
pub fn rfc3339(at: time::OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    let at = at
        .replace_nanosecond(at.nanosecond() / 1_000_000 * 1_000_000)
        .unwrap_or(at);
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| at.to_string())
}

/// Lowercase hex SHA-256, as `config.sha256` shows it.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}
