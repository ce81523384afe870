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
mod problem;
pub mod reference;
mod templates;
mod yaml;

pub use desired::{
    Desired, Engine, Group, Health, HttpCall, ModelName, ModelSpec, RunSpec, Settings, is_slug,
    parse_duration,
};
pub use file::{DesiredState, HttpMethod, HubFile, LogLevel};
pub use load::{
    DEFAULT_HOST, DEFAULT_PORT, MAX_FILE_BYTES, default_log_path, load, parse, read, schema,
};
pub use problem::{Problem, Rejection, display_path, rejection_at};

#[cfg(test)]
mod tests;

/// The index of model `name` in `text`'s `models` list, for a pointer to it.
pub fn model_index(text: &str, name: &str) -> Option<usize> {
    let value: serde_yaml::Value = serde_yaml::from_str(text).ok()?;
    value
        .get("models")?
        .as_sequence()?
        .iter()
        .position(|m| m.get("name").and_then(|n| n.as_str()) == Some(name))
}
