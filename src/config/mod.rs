//! hub.yaml: the operator's desired state.
//!
//! `file` is the syntax (serde + schemars, which also generates `schemas/hub.schema.json`);
//! `load` checks it and produces a [`Desired`], the only form the rest of hub ever sees;
//! `locate` finds line and column for a problem's path; `nesting` bounds how deep the YAML nests
//! before it is parsed.

mod desired;
mod file;
mod load;
mod locate;
mod nesting;
pub mod reference;
mod templates;
mod yaml;

pub use desired::{
    Desired, Engine, Group, Health, HttpCall, ModelName, ModelSpec, RunSpec, Settings, is_slug,
    parse_duration,
};
pub use file::{DesiredState, HttpMethod, HubFile, LogLevel};
pub use load::{
    DEFAULT_HOST, DEFAULT_PORT, MAX_FILE_BYTES, Problem, Rejection, default_log_path, display_path,
    load, parse, read, schema,
};

#[cfg(test)]
mod tests;
