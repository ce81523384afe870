//! Publishing a pass: the status snapshot readers see, and the state file the next daemon adopts
//! from.

use std::sync::Arc;

use axum::body::Bytes;

use super::{Applied, Reconciler, Snapshot};
use crate::observed::Time;
use crate::plan::Plan;
use crate::rfc3339;
use crate::status::{self, ConfigStatus, RejectedEdit};

pub(super) fn config_status(applied: &Applied, rejected: Option<RejectedEdit>) -> ConfigStatus {
    ConfigStatus {
        path: applied.path.clone(),
        sha256: applied.sha256.clone(),
        applied_at: rfc3339(applied.at),
        source: applied.source.to_string(),
        rejected,
    }
}

impl Reconciler {
    pub(super) fn publish(&mut self, plan: &Plan, now: Time) {
        // First, so a failure to record shows in this very status.
        self.record_workers();
        let status = status::build(status::Inputs {
            now,
            desired: &self.desired,
            observed: &self.observed,
            plan,
            generation: self.generation,
            observed_generation: self.observed_generation,
            config: config_status(&self.applied, self.rejected.clone()),
            report: self.report.clone(),
            warnings: self.warnings.clone(),
        });
        let json = Bytes::from(serde_json::to_vec(&status).expect("status is plain data"));
        self.publish.send_replace(Arc::new(Snapshot {
            status,
            json,
            desired: self.desired.clone(),
            observed: Arc::new(self.observed.clone()),
            applied_text: self.applied.text.clone(),
            generation: self.generation,
        }));
    }

    /// Writes the state file when the set of workers (or what is known of them) changed.
    pub(super) fn record_workers(&mut self) {
        let Some(path) = &self.options.state_path else {
            return;
        };
        let records = crate::recover::records(&self.observed, &self.executor.hub_exe);
        if self.recorded.as_ref() == Some(&records) {
            return;
        }
        let state = crate::statefile::StateFile {
            version: crate::statefile::VERSION,
            owner: self.options.owner.clone(),
            workers: records.0.clone(),
            overrides: records.1.clone(),
            footprints: records.2.clone(),
        };
        // A failure shows in the status until a write succeeds (a full disk, say). The marks on
        // the workers still let the next daemon find them; only adoption (instead of a restart)
        // is at stake.
        const PREFIX: &str = "cannot write the state file";
        let failed = |w: &String| w.starts_with(PREFIX);
        match crate::statefile::write(path, &state) {
            Ok(()) => {
                self.recorded = Some(records);
                self.warnings.retain(|w| !failed(w));
            }
            Err(e) => {
                let warning = format!(
                    "{PREFIX} {}: {e}; a daemon restart would restart the workers instead of adopting them",
                    path.display()
                );
                if !self.warnings.contains(&warning) {
                    tracing::warn!("{warning}");
                    self.warnings.retain(|w| !failed(w));
                    self.warnings.push(warning);
                }
            }
        }
    }
}
