//! hub: a declarative reconciler for a machine that serves AI models.
//!
//! Read in this order: `config` turns hub.yaml into a validated `Desired`; `observed` is what hub
//! sees of each model; `plan` is the pure function from both to actions; `reconcile` is the one
//! loop that owns the observed state, runs the plan through `supervisor` (processes) and `engine`
//! (HTTP to workers), and publishes `status` snapshots; `watch` feeds it file changes; `api` and
//! `cli` are the edges, and `wire` is every request and reply they exchange (`planned` words a
//! plan for them); `daemon::run` puts the loop, the watcher and the API together on a listener
//! its caller bound. `worker` is the built-in model server that hub runs as a real process.

pub mod api;
pub mod bytes;
pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod engine;
pub mod events;
pub mod gateway;
pub mod measure;
pub mod observed;
pub mod plan;
pub mod planned;
pub mod reconcile;
pub mod recover;
pub mod retry;
pub mod statefile;
pub mod status;
pub mod supervisor;
pub mod watch;
pub mod wire;
pub mod worker;

/// RFC 3339 in UTC with microsecond precision and a fixed width
/// (`2026-11-23T10:00:00.123456Z`), the form every time in the API takes.
///
/// Microseconds, because the split of a save (detect, validate, plan, spawn) is read from these
/// times and its parts last a few milliseconds: whole milliseconds made every interval read up
/// to 1 ms short or long. Six digits always, so times line up in columns and sort as text.
pub fn rfc3339(at: time::OffsetDateTime) -> String {
    const FORMAT: &[time::format_description::BorrowedFormatItem<'static>] = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
    );
    let at = at.to_offset(time::UtcOffset::UTC);
    at.format(FORMAT).unwrap_or_else(|_| at.to_string())
}

/// Lowercase hex SHA-256, as `config.sha256` shows it.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use time::format_description::well_known::Rfc3339;
    use time::macros::datetime;

    #[test]
    fn times_carry_microseconds_in_a_fixed_width_and_read_back() {
        let at = datetime!(2026-11-23 10:00:00.123_456_789 +01:00);
        assert_eq!(super::rfc3339(at), "2026-11-23T09:00:00.123456Z");
        let whole = datetime!(2026-11-23 10:00:00 UTC);
        assert_eq!(super::rfc3339(whole), "2026-11-23T10:00:00.000000Z");
        let back = time::OffsetDateTime::parse(&super::rfc3339(at), &Rfc3339).unwrap();
        assert_eq!(back, datetime!(2026-11-23 09:00:00.123_456 UTC));
    }

    /// `config.sha256`, and the spec hashes the state file keeps (a new daemon adopts a worker
    /// only if its hash still matches), must not change with the hashing crate: FIPS 180-2's
    /// test vectors.
    #[test]
    fn sha256_is_lowercase_hex_of_the_standard_digest() {
        assert_eq!(
            super::sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            super::sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
