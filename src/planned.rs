//! A plan as its clients see it: the per-model entries and the config text diff of a
//! `wire::PlanReply`, made here once for `POST /hub/plan`, `POST /hub/apply` and the offline
//! `hub diff --against`, so the three cannot word a plan differently.

use crate::plan::{self, OverrideChange};
use crate::wire::{PlanReply, PlannedModel};

/// The plan's entry for each model, in the plan's order.
pub fn models(plan: &plan::Plan) -> Vec<PlannedModel> {
    plan.models
        .iter()
        .map(|m| PlannedModel {
            name: m.name.to_string(),
            line: m.to_string(),
            actions: m.actions.iter().map(|a| a.verb().to_string()).collect(),
            result: m.outcome(),
            clears_override: m.override_ == OverrideChange::Cleared,
            bytes: m.bytes(),
            evicts: m.evicts().iter().map(ToString::to_string).collect(),
        })
        .collect()
}

/// The reply for `plan` against the desired state of `generation`, with `diff` from
/// [`text_diff`]: changed when the text, any model or any override would change.
pub fn reply(generation: u64, plan: &plan::Plan, diff: String) -> PlanReply {
    let models = models(plan);
    let changed = !diff.is_empty()
        || models
            .iter()
            .any(|m| !m.actions.is_empty() || m.clears_override);
    PlanReply {
        generation,
        diff,
        changed,
        models,
    }
}

/// A unified diff of two config texts, empty when they are equal.
pub fn text_diff(old: &str, new: &str, old_name: &str, new_name: &str) -> String {
    if old == new {
        return String::new();
    }
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(old_name, new_name)
        .to_string()
}
