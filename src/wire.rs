//! The vocabulary the daemon and its clients share: what a request asks and what a reply says.
//! Plain data, free of axum, tokio and the loop, so the CLI, the API and the loop all import it
//! and nothing here imports them.

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
    fn verbs_parse_both_spellings() {
        assert_eq!(Verb::parse("stop-model"), Some(Verb::Stop));
        assert_eq!(Verb::parse("load"), Some(Verb::Load));
        assert_eq!(Verb::parse("reload"), None);
    }
}
