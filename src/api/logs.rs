//! `GET /hub/models/{name}/logs`: the end of a worker's log file (`<log_path>/workers/<name>.log`), or
//! what was appended since an offset, for `hub logs NAME [-f]`.
//!
//! Reads are bounded: at most [`MAX_TAIL`] lines, and at most [`MAX_READ`] bytes per answer, read
//! from the end of the file, so a huge log never costs more than that.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::models::known_model;
use super::{ApiError, AppState, Envelope};
use crate::wire::{DEFAULT_TAIL, LOG_OFFSET_HEADER, LogsQuery, MAX_TAIL};

/// The most bytes one answer carries.
pub const MAX_READ: u64 = 4 * 1024 * 1024;

/// The worker's log: its last lines, or what was appended since an offset. The answer's
/// `x-log-offset` header is where to continue with `since`.
#[utoipa::path(
    get,
    path = "/hub/models/{name}/logs",
    tag = "read",
    params(("name" = String, Path, description = "The model's name"), LogsQuery),
    responses(
        (status = 200, description = "Log text", body = String, content_type = "text/plain",
            headers(("x-log-offset" = u64, description = "The file offset just past the text; pass it as `since` to follow"))),
        (status = 400, description = "`tail` is over 10000", body = Envelope),
        (status = 404, description = "No such model", body = Envelope),
        (status = 500, description = "The log file exists but cannot be read", body = Envelope),
    )
)]
pub(super) async fn logs(
    State(state): State<AppState>,
    UrlPath(name): UrlPath<String>,
    Query(query): Query<LogsQuery>,
) -> Result<Response, ApiError> {
    let (name, model) = known_model(&state, &name)?;
    let tail = query.tail.unwrap_or(DEFAULT_TAIL);
    if tail > MAX_TAIL {
        return Err(ApiError::bad_request(format!(
            "tail is at most {MAX_TAIL} lines, not {tail}; read older lines from the file itself"
        )));
    }
    let path = match &model.worker.log_file {
        Some(file) => PathBuf::from(file),
        // A `ModelName` is a slug: safe as a file name.
        None => {
            crate::supervisor::worker_log(&state.hub.snapshot().desired.settings.log_path, &name)
        }
    };
    let since = query.since;
    let read = tokio::task::spawn_blocking(move || match since {
        Some(offset) => read_since(&path, offset),
        None => read_tail(&path, tail),
    })
    .await
    .map_err(|e| ApiError::internal(format!("cannot read the log: {e}")))?;
    let (text, offset) = read.map_err(|e| {
        ApiError::internal(format!(
            "cannot read the log of model {:?}: {e}",
            name.as_str()
        ))
    })?;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                "text/plain; charset=utf-8".to_string(),
            ),
            (
                header::HeaderName::from_static(LOG_OFFSET_HEADER),
                offset.to_string(),
            ),
        ],
        text,
    )
        .into_response())
}

/// The last `lines` lines of the file and its length. A missing file is empty.
pub fn read_tail(path: &Path, lines: usize) -> std::io::Result<(Vec<u8>, u64)> {
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    if lines == 0 {
        return Ok((Vec::new(), len));
    }
    const STEP: u64 = 64 * 1024;
    let mut start = len;
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let step = STEP.min(start).min(MAX_READ - (len - start));
        if step == 0 {
            break;
        }
        start -= step;
        file.seek(SeekFrom::Start(start))?;
        let mut chunk = vec![0; step as usize];
        file.read_exact(&mut chunk)?;
        chunk.extend_from_slice(&buf);
        buf = chunk;
        // A final newline ends the last line; it does not start another.
        let body = buf.strip_suffix(b"\n").unwrap_or(&buf);
        if body.iter().filter(|b| **b == b'\n').count() >= lines {
            break;
        }
    }
    let body_len = buf.strip_suffix(b"\n").map_or(buf.len(), <[u8]>::len);
    let mut cut = None;
    let mut seen = 0;
    for (i, byte) in buf[..body_len].iter().enumerate().rev() {
        if *byte == b'\n' {
            seen += 1;
            if seen == lines {
                cut = Some(i + 1);
                break;
            }
        }
    }
    let from = match cut {
        Some(i) => i,
        // Fewer lines than asked: all of them, unless the read stopped mid-file at the byte
        // limit, where the first, partial line is dropped.
        None if start == 0 => 0,
        None => buf.iter().position(|b| *b == b'\n').map_or(0, |i| i + 1),
    };
    Ok((buf.split_off(from), len))
}

/// What was appended to the file since `offset` (at most [`MAX_READ`] bytes), and the offset
/// after it. An offset past the end means the file was rotated: read the new one from the start.
pub fn read_since(path: &Path, offset: u64) -> std::io::Result<(Vec<u8>, u64)> {
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    let offset = if offset > len { 0 } else { offset };
    let size = (len - offset).min(MAX_READ);
    file.seek(SeekFrom::Start(offset))?;
    let mut buf = vec![0; size as usize];
    file.read_exact(&mut buf)?;
    Ok((buf, offset + size))
}
