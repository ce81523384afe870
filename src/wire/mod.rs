//! The vocabulary the daemon and its clients share: every request and reply of the HTTP API,
//! the status document, and the words they are made of. Plain data, free of axum, tokio and the
//! loop, so the CLI, the API and the loop all import it and nothing here imports them (its one
//! import of hub's own is `config`, for `Problem`, which imports none of them).
//!
//! One file per group of endpoints, as in `api`: `config.rs` plan, apply, reload and shutdown;
//! `models.rs` one model and the imperative calls; `status.rs` the `GET /hub/status` document;
//! `events.rs` the event stream; `logs.rs` worker logs; `probes.rs` `/health` and `/ready`;
//! `error.rs` the one error envelope; `openai.rs` the gateway's own answers.

mod config;
mod error;
mod events;
mod logs;
mod models;
mod openai;
mod probes;
mod status;

pub use config::{
    Accepted, AppliedModel, ApplyQuery, ApplyResponse, PlanQuery, PlanReply, PlannedModel,
    ShutdownQuery, ShutdownReply,
};
pub use error::{Envelope, ErrorBody, ErrorKind, ProblemSchema};
pub use events::{EventsQuery, HubEvent, LAGGED_EVENT};
pub use logs::{DEFAULT_TAIL, LOG_OFFSET_HEADER, LogsQuery, MAX_TAIL};
pub use models::{ModelCommandReply, ModelDetail};
pub use openai::{ModelEntry, ModelList, OpenAiError, OpenAiErrorBody};
pub use probes::{Health, Ready};
pub use status::{
    ConfigStatus, Counts, FailedAction, GroupStatus, MemoryPhase, MemoryStatus, ModelStatus,
    OverrideStatus, RejectedEdit, Report, Status, Summary, WorkerPhase, WorkerStatus,
};

/// The header that marks a write as coming from a program, not a form or a page's simple request.
pub const CLIENT_HEADER: &str = "x-hub-client";

use serde::{Deserialize, Serialize};

/// An operator's command on one model (`POST /hub/models/{name}/{verb}`, `hub stop-model`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verb {
    Start,
    Stop,
    Load,
    Unload,
}

impl Verb {
    /// Accepts `start` and the seed's `start-model` spellings.
    pub fn parse(text: &str) -> Option<Verb> {
        match text.strip_suffix("-model").unwrap_or(text) {
            "start" => Some(Verb::Start),
            "stop" => Some(Verb::Stop),
            "load" => Some(Verb::Load),
            "unload" => Some(Verb::Unload),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Start => "start",
            Verb::Stop => "stop",
            Verb::Load => "load",
            Verb::Unload => "unload",
        }
    }
}

/// What a reconcile did to one model, as `hub apply` prints it. The order is the ranking: where
/// several apply, the first (the most telling) is the one shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Failed,
    Restarted,
    Started,
    Stopped,
    Loaded,
    Unloaded,
    Unchanged,
}

impl Outcome {
    /// The most telling of `outcomes`; `Unchanged` when there are none.
    pub fn most_telling(outcomes: impl IntoIterator<Item = Outcome>) -> Outcome {
        outcomes.into_iter().min().unwrap_or(Outcome::Unchanged)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Failed => "failed",
            Outcome::Restarted => "restarted",
            Outcome::Started => "started",
            Outcome::Stopped => "stopped",
            Outcome::Loaded => "loaded",
            Outcome::Unloaded => "unloaded",
            Outcome::Unchanged => "unchanged",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_telling_outcome_wins() {
        use Outcome::*;
        assert_eq!(Outcome::most_telling([]), Unchanged);
        assert_eq!(Outcome::most_telling([Loaded, Started]), Started);
        assert_eq!(Outcome::most_telling([Unloaded, Restarted, Failed]), Failed);
        assert_eq!(Outcome::most_telling([Stopped, Loaded]), Stopped);
    }

    #[test]
    fn closed_sets_are_their_json_words_and_an_unknown_error_kind_reads_as_error() {
        fn word(value: impl Serialize) -> String {
            serde_json::to_value(value)
                .unwrap()
                .as_str()
                .unwrap()
                .to_string()
        }
        assert_eq!(
            word(ErrorKind::UnsupportedMediaType),
            "unsupported_media_type"
        );
        assert_eq!(word(ErrorKind::InvalidConfig), "invalid_config");
        let unknown: ErrorKind = serde_json::from_value("teapot".into()).unwrap();
        assert_eq!(unknown, ErrorKind::Error);
        for phase in WorkerPhase::ALL {
            assert_eq!(word(phase), phase.as_str());
        }
        for state in MemoryPhase::ALL {
            assert_eq!(word(state), state.as_str());
        }
        assert_eq!(word(Outcome::Restarted), "restarted");
    }

    #[test]
    fn verbs_parse_both_spellings() {
        assert_eq!(Verb::parse("stop-model"), Some(Verb::Stop));
        assert_eq!(Verb::parse("load"), Some(Verb::Load));
        assert_eq!(Verb::parse("reload"), None);
    }
}
