//! The loop's view of the outside world: worker processes and HTTP calls to them.
//!
//! [`RealWorkers`] is the supervisor and the engine's HTTP client. The trait exists so the loop's
//! timing (timeouts, backoff, idle unload, supersession) can be tested with tokio's paused clock,
//! where real processes cannot take part; everything else is tested against real workers.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::config::ModelName;
use crate::engine::{self, Probe, Request};
use crate::measure::{Footprint, Meter, Target};
use crate::supervisor::{ExitInfo, SpawnRequest, Spawned, Supervisor};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

pub trait Workers: Send + Sync + 'static {
    /// Starts a worker; see [`Supervisor::spawn`].
    fn spawn(&self, request: SpawnRequest<'_>) -> anyhow::Result<Spawned>;
    /// Resolves when the model's worker exits; at once if it has none.
    fn wait_exit(&self, name: &ModelName) -> BoxFuture<'static, Option<ExitInfo>>;
    /// Stops the model's worker; see [`Supervisor::stop`].
    fn stop(
        &self,
        name: &ModelName,
        stop_timeout: Duration,
        stop_command: Option<Vec<String>>,
    ) -> BoxFuture<'static, Option<ExitInfo>>;
    /// Every model with a live worker.
    fn live(&self) -> Vec<ModelName>;
    /// One readiness probe.
    fn probe(&self, url: std::sync::Arc<str>) -> BoxFuture<'static, Probe>;
    /// A load or unload request.
    fn call(&self, request: Request) -> BoxFuture<'static, anyhow::Result<()>>;
    /// The memory a worker's processes hold now; see [`crate::measure::Meter`].
    fn measure(&self, target: Target) -> BoxFuture<'static, Option<Footprint>>;
}

/// Real processes and real HTTP.
pub struct RealWorkers {
    pub supervisor: Supervisor,
    pub client: reqwest::Client,
    pub meter: std::sync::Arc<Meter>,
}

impl Workers for RealWorkers {
    fn spawn(&self, request: SpawnRequest<'_>) -> anyhow::Result<Spawned> {
        self.supervisor.spawn(request)
    }

    fn wait_exit(&self, name: &ModelName) -> BoxFuture<'static, Option<ExitInfo>> {
        let supervisor = self.supervisor.clone();
        let name = name.clone();
        Box::pin(async move { supervisor.wait_exit(&name).await })
    }

    fn stop(
        &self,
        name: &ModelName,
        stop_timeout: Duration,
        stop_command: Option<Vec<String>>,
    ) -> BoxFuture<'static, Option<ExitInfo>> {
        let supervisor = self.supervisor.clone();
        let name = name.clone();
        Box::pin(async move { supervisor.stop(&name, stop_timeout, stop_command).await })
    }

    fn live(&self) -> Vec<ModelName> {
        self.supervisor.names()
    }

    fn probe(&self, url: std::sync::Arc<str>) -> BoxFuture<'static, Probe> {
        let client = self.client.clone();
        Box::pin(async move { engine::probe(&client, &url).await })
    }

    fn call(&self, request: Request) -> BoxFuture<'static, anyhow::Result<()>> {
        let client = self.client.clone();
        Box::pin(async move { engine::send(&client, &request).await })
    }

    fn measure(&self, target: Target) -> BoxFuture<'static, Option<Footprint>> {
        let meter = self.meter.clone();
        Box::pin(async move { meter.measure(&target).await })
    }
}
