//! Changes of the desired state: the watched file read (applied or rejected), `POST /hub/apply`,
//! and what a new desired state supersedes (retry waits, jobs in flight).

use std::sync::Arc;

use super::{ApplyReply, CommandError, ConfigUpdate, Reconciler, Trigger, note};
use crate::config::{Desired, DesiredState, Rejection};
use crate::events::EventKind;
use crate::observed::{Observed, Time};
use crate::plan::{self};
use crate::status::RejectedEdit;
use crate::{rfc3339, sha256_hex};

/// A rejected edit shows at most this many problems in the status.
pub(super) const MAX_SHOWN_PROBLEMS: usize = 100;

/// The warning shown while hub.yaml's host, port or log_path differ from the running daemon's.
pub(super) const SETTINGS_WARNING: &str =
    "host, port or log_path changed: they take effect when hub serve restarts";

/// A fixed port in `desired` that another model's live worker holds on an auto-assigned port and
/// keeps (its entry gives it no fixed port, and it stays wanted): such a config can never start
/// the model, so it is refused like an invalid one, at `text`'s line for the port.
pub fn check_live_ports(
    desired: &Desired,
    observed: &Observed,
    text: &str,
    file: &str,
) -> Result<(), Rejection> {
    for spec in desired.models.values() {
        let Some(port) = spec.run.port else { continue };
        let holder = observed.models.iter().find(|(name, obs)| {
            **name != spec.name
                && obs.worker.pid.is_some()
                && obs.worker.port == Some(port)
                && desired.models.get(*name).is_some_and(|other| {
                    other.run.port.is_none()
                        && (other.state != DesiredState::Stopped
                            || obs.override_.as_ref().is_some_and(|o| {
                                o.spec == *other && o.state != DesiredState::Stopped
                            }))
                })
        });
        if let Some((holder, _)) = holder {
            let holder = holder.as_str();
            let index = crate::config::model_index(text, spec.name.as_str()).unwrap_or(0);
            return Err(crate::config::rejection_at(
                text,
                file,
                &format!("/models/{index}/port"),
                format!(
                    "port {port} is held by model {holder:?}'s running worker (auto-assigned); pick another port, or give {holder:?} a fixed port"
                ),
            ));
        }
    }
    Ok(())
}

/// The applied config's identity.
pub(super) struct Applied {
    pub(super) path: String,
    pub(super) sha256: String,
    pub(super) text: Arc<str>,
    pub(super) at: Time,
    pub(super) source: &'static str,
}

impl Reconciler {
    /// The watched file, read. Returns whether anything changed.
    pub(super) fn on_config(&mut self, mut update: ConfigUpdate, now: Time) -> bool {
        if let Ok(desired) = &update.result
            && let Err(rejection) = check_live_ports(
                desired,
                &self.observed,
                &update.text,
                &update.path.display().to_string(),
            )
        {
            update.result = Err(rejection);
        }
        match update.result {
            Ok(desired) => {
                let was_rejected = self.rejected.take().is_some();
                if update.sha256 == self.applied.sha256 {
                    // The file says what is in force (an apply of the same bytes included).
                    let was_api = std::mem::replace(&mut self.applied.source, "file") != "file";
                    if was_rejected {
                        // No new config to apply, but watchers (the dashboard's banner) learn
                        // that the rejected edit is gone.
                        let message = format!(
                            "{} is valid again: it says what is in force ({})",
                            update.path.display(),
                            &update.sha256[..12]
                        );
                        note(&self.journal, now, None, EventKind::Config, message);
                    }
                    return was_rejected || was_api;
                }
                tracing::info!(path = %update.path.display(), sha256 = %update.sha256, "applying changed config");
                self.journal.count(|m| m.config_applied += 1);
                let message = format!(
                    "applied {} ({})",
                    update.path.display(),
                    &update.sha256[..12]
                );
                note(&self.journal, now, None, EventKind::Config, message);
                self.applied = Applied {
                    path: update.path.display().to_string(),
                    sha256: update.sha256,
                    text: update.text.into(),
                    at: now,
                    source: "file",
                };
                self.trigger = Trigger::Config;
                self.set_desired(desired, false);
                true
            }
            Err(rejection) => {
                if self
                    .rejected
                    .as_ref()
                    .is_some_and(|r| r.sha256 == update.sha256)
                {
                    return false;
                }
                // The log and the status show the first problems; `hub validate` lists them all.
                let total = rejection.problems.len();
                let mut shown = rejection;
                if total > MAX_SHOWN_PROBLEMS {
                    shown.problems.truncate(MAX_SHOWN_PROBLEMS);
                    shown
                        .problems
                        .push(crate::config::Problem::whole_file(format!(
                            "and {} more problems: `hub validate` lists them all",
                            total - MAX_SHOWN_PROBLEMS
                        )));
                }
                tracing::error!(
                    "rejected an edit of {} ({total} problems); the last good config stays in force:\n{shown}",
                    update.path.display(),
                );
                self.journal.count(|m| m.config_rejected += 1);
                let message = format!("rejected an edit: {total} problems");
                note(&self.journal, now, None, EventKind::Config, message);
                let errors = shown.problems;
                self.rejected = Some(RejectedEdit {
                    at: rfc3339(now),
                    sha256: update.sha256,
                    errors,
                });
                true
            }
        }
    }

    pub(super) fn on_apply(
        &mut self,
        (desired, text, file): (Desired, String, String),
        expect_generation: Option<u64>,
        reset_overrides: bool,
        now: Time,
    ) -> Result<ApplyReply, CommandError> {
        if let Some(expected) = expect_generation
            && expected != self.generation
        {
            return Err(CommandError::Conflict(format!(
                "the desired state is at generation {}, not {expected}: it changed since your diff; run `hub diff` again",
                self.generation
            )));
        }
        check_live_ports(&desired, &self.observed, &text, &file).map_err(CommandError::Invalid)?;
        let plan = plan::preview(&desired, &self.observed, reset_overrides, now);
        let sha256 = sha256_hex(text.as_bytes());
        if sha256 != self.applied.sha256 || reset_overrides {
            self.applied = Applied {
                path: self.applied.path.clone(),
                sha256,
                text: text.into(),
                at: now,
                source: "api",
            };
            self.trigger = Trigger::Api;
            self.set_desired(desired, reset_overrides);
        }
        Ok(ApplyReply {
            generation: self.generation,
            plan,
        })
    }

    pub(super) fn set_desired(&mut self, desired: Desired, reset_overrides: bool) {
        // Shown while the desired host, port or log_path differ from what the daemon runs with.
        let (host, port, log_path) = &self.serving;
        let differs = desired.settings.host != *host
            || desired.settings.port != *port
            || desired.settings.log_path != *log_path;
        self.warnings.retain(|w| w != SETTINGS_WARNING);
        if differs {
            tracing::warn!("{SETTINGS_WARNING}");
            self.warnings.push(SETTINGS_WARNING.to_string());
        }
        self.generation += 1;
        // Unchanged entries keep the running config's `Arc`s: the planner then sees them unchanged
        // by a pointer check, and workers started from them still match.
        let desired = desired.sharing_with(&self.desired);
        let old = std::mem::replace(&mut self.desired, Arc::new(desired));
        // A changed entry supersedes its model's wait for a retry; other models keep theirs.
        for (name, obs) in &mut self.observed.models {
            if old.models.get(name) != self.desired.models.get(name) {
                obs.next_retry_at = None;
                self.backoffs.remove(name);
            }
            if reset_overrides {
                obs.override_ = None;
            }
        }
        // A job in flight is moot once its model is no longer wanted or would run from another
        // RunSpec; a change of `state` alone lets it finish (the next pass loads or unloads).
        for (name, in_flight) in &self.in_flight {
            let Some(working) = &in_flight.spec else {
                continue;
            };
            let wanted = self.desired.models.get(name).filter(|spec| {
                let target = match self
                    .observed
                    .models
                    .get(name)
                    .and_then(|o| o.override_.as_ref())
                {
                    Some(o) if o.spec == **spec => o.state,
                    _ => spec.state,
                };
                target != DesiredState::Stopped
            });
            if wanted.is_none_or(|wanted| wanted.run != working.run) {
                let _ = in_flight.cancel.send(true);
            }
        }
        self.open_episode(true);
    }
}
