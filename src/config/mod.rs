//! hub.yaml: the operator's desired state.
//!
//! `file` is the syntax (serde + schemars, which also generates `schemas/hub.schema.json`);
//! `load` checks it and produces a [`Desired`], the only form the rest of hub ever sees;
//! `locate` finds line and column for a problem's path; `nesting` bounds how deep the YAML nests
//! before it is parsed.

mod convert;
mod desired;
mod file;
mod load;
mod locate;
mod nesting;
mod problem;
pub mod reference;
mod templates;
mod validate;
mod yaml;

// `is_slug` stays inside: outside `config` a model name is checked only by parsing it into a
// `ModelName`, once, where it comes in.
pub use convert::default_log_path;
pub use desired::{
    DEFAULT_IDLE_UNLOAD_AFTER, Desired, Engine, GatewaySettings, Group, Health, HttpCall,
    MemoryProbe, ModelName, ModelSpec, RunSpec, Settings, parse_duration,
};
pub use file::{DEFAULT_HOST, DEFAULT_PORT, DesiredState, HttpMethod, HubFile, LogLevel};
pub use load::{MAX_FILE_BYTES, load, parse, read};
pub use problem::{Problem, Rejection, display_path};
pub use validate::schema;

#[cfg(test)]
mod tests;

/// A rejection for one problem found outside [`parse`], against the running state (a fixed port
/// that a live worker holds): located at `pointer` (`/models/2/port`) in `text` like every other.
pub fn rejection_at(text: &str, file: &str, pointer: &str, message: String) -> Rejection {
    let mut problems = vec![Problem::at(pointer, message)];
    locate::fill_lines(text, &mut problems);
    Rejection {
        file: file.to_string(),
        problems,
    }
}

/// The index of model `name` in `text`'s `models` list, for a pointer to it.
pub fn model_index(text: &str, name: &str) -> Option<usize> {
    let value: serde_yaml::Value = serde_yaml::from_str(text).ok()?;
    value
        .get("models")?
        .as_sequence()?
        .iter()
        .position(|m| m.get("name").and_then(|n| n.as_str()) == Some(name))
}
