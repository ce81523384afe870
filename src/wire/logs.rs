//! A worker's log through the API (`GET /hub/models/{name}/logs`, `hub logs NAME [-f]`): the
//! query, its bounds, and the header that says where to continue.

use serde::{Deserialize, Serialize};

/// The most lines `tail` may ask for.
pub const MAX_TAIL: usize = 10_000;
/// Lines returned when neither `tail` nor `since` is given.
pub const DEFAULT_TAIL: usize = 100;
/// The response header with the file offset just past what was returned: the next `since`.
pub const LOG_OFFSET_HEADER: &str = "x-log-offset";

#[derive(Debug, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogsQuery {
    /// The last N lines (default 100, at most 10000).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tail: Option<usize>,
    /// Instead of a tail: everything appended since this byte offset (the `x-log-offset` of the
    /// previous answer). An offset past the end (the log was rotated) starts the new file over.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<u64>,
}
