//! Last stage: formats and sinks.
//!
//! Events arrive in order; a process event waits (boundedly) for its executable's
//! hash, alerts pass the per rule+identity throttle. Each event is rendered once into
//! every format a sink needs (`render.rs`: `ocsf`, `ecs`, the agent's own JSON), then:
//! - in-line sinks (`jsonl`) write it at once, in order;
//! - for remote sinks it is appended to the on-disk spool, fsync'd, and each sink's
//!   delivery loop sends it from there at least once (`delivery.rs`).
//!
//! By default remote sinks get alerts and the MCP inventory (changes and periodic
//! snapshots, `inventory.rs`); `events=all` opts a sink into telemetry.
//! `jsonl` gets every event, as it always has. The sinks are opened from their specs
//! in `sink_setup.rs`.

mod audit;
mod budget;
mod delivery;
mod delivery_config;
mod ecs;
mod file_activity;
#[cfg(test)]
mod fixtures;
mod host;
mod inventory;
mod ocsf;
pub mod recent_audit;
mod record;
mod render;
mod sink;
mod sink_setup;
mod sinks;
mod spec;
mod spec_display;
mod spool;
mod spool_writer;
mod throttle;
mod tls;

use std::{path::Path, sync::Arc, time::Duration};

use anyhow::Result;
use futures::{stream::FuturesOrdered, StreamExt};
use tokio::sync::mpsc;

#[cfg(test)]
pub(crate) use self::fixtures::{fixture_findings, fixture_process_activity, fixture_server};
use self::{
    delivery::{Running, Worker},
    record::Class,
    render::{ClassWants, Renderer},
    sink::Sink as _,
    sink_setup::{open_sinks, InlineSink, Sinks},
    spool_writer::SpoolWriter,
    throttle::Throttle,
};
pub use self::{delivery_config::DeliveryConfig, host::HostInfo, spec::SinkSpec};
use crate::{
    events::{Emitted, Event},
    mcp::inventory::Announce,
    metrics::Metrics,
};

/// Events resolving their hashes at once; beyond this the stage stops taking input,
/// which backs up into the pipeline's bounded channels.
const MAX_IN_FLIGHT: usize = 1024;
/// On shutdown, how long the delivery loops may go on sending what is spooled.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

pub struct OutputStage {
    inline: Vec<InlineSink>,
    /// Present when there is a remote sink.
    spool: Option<SpoolWriter>,
    workers: Vec<Worker>,
    wants: ClassWants,
    /// Inventory events as their own class (SIEM sinks get them by default); when
    /// off they are plain telemetry.
    inventory_events: bool,
    throttle: Throttle,
    renderer: Renderer,
    metrics: Arc<Metrics>,
    /// How long an event may wait for its executable's hash before going out without it.
    hash_wait: Duration,
    /// The last audit records, for `mcpwatch audit` (whatever the sinks select).
    recent_audit: recent_audit::RecentAudit,
}

impl OutputStage {
    pub async fn open(
        specs: &[SinkSpec],
        delivery: &DeliveryConfig,
        state_dir: &Path,
        host: Arc<HostInfo>,
        metrics: Arc<Metrics>,
        hash_wait: Duration,
    ) -> Result<Self> {
        // One process-wide provider, so every rustls user (reqwest included) agrees.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let Sinks {
            inline,
            spool,
            workers,
            wants,
        } = open_sinks(specs, delivery, state_dir, &metrics, &host).await?;
        Ok(Self {
            inline,
            spool: spool.map(|s| SpoolWriter::new(s, metrics.clone())),
            workers,
            wants,
            inventory_events: true,
            throttle: Throttle::new(Duration::from_secs(delivery.alert_throttle_secs)),
            renderer: Renderer::new(host),
            metrics,
            hash_wait,
            recent_audit: recent_audit::RecentAudit::default(),
        })
    }

    /// Whether inventory events go to SIEM sinks by default (`inventory_events`).
    /// The recent audit records this stage keeps, for the API.
    pub fn recent_audit(&self) -> recent_audit::RecentAudit {
        self.recent_audit.clone()
    }

    pub fn with_inventory_events(mut self, on: bool) -> Self {
        self.inventory_events = on;
        self
    }

    /// Runs until the input closes (the state stage finished), then flushes, lets the
    /// delivery loops send what they can for a moment, and stops them.
    pub async fn run(mut self, mut rx: mpsc::Receiver<Emitted>) {
        let delivery = Running::start(std::mem::take(&mut self.workers));
        let mut inflight = FuturesOrdered::new();
        let mut input_open = true;
        while input_open || !inflight.is_empty() {
            tokio::select! {
                biased;
                Some(ev) = inflight.next(), if !inflight.is_empty() => {
                    self.handle(ev).await;
                    self.settle(inflight.is_empty() && rx.is_empty()).await;
                }
                msg = rx.recv(), if input_open && inflight.len() < MAX_IN_FLIGHT => match msg {
                    // Nothing to wait for and nothing queued ahead of it (order is kept):
                    // handled at once, without a future per event.
                    Some(em) if em.hash.is_none() && inflight.is_empty() => {
                        self.handle(em.event).await;
                        self.settle(rx.is_empty()).await;
                    }
                    Some(em) => inflight.push_back(resolve(em, self.hash_wait)),
                    None => input_open = false,
                },
            }
        }
        self.settle(true).await;
        delivery
            .stop(self.spool.as_ref().map(SpoolWriter::spool), DRAIN_GRACE)
            .await;
    }

    /// After an event: spool a full batch, and when nothing more is waiting, spool the
    /// rest and flush the in-line sinks.
    async fn settle(&mut self, idle: bool) {
        if let Some(spool) = &mut self.spool {
            if idle || spool.is_full() {
                spool.commit();
            }
        }
        if idle {
            self.flush().await;
        }
    }

    async fn handle(&mut self, ev: Event) {
        if let Event::McpRequest(r) = &ev {
            self.recent_audit.push(r);
        }
        let (class, wants) = match &ev {
            Event::Alert(_) => (Class::Alert, self.wants.alert),
            // A suspect that has neither spoken MCP nor lived past its grace period
            // (and the end of one) stays off the SIEM: telemetry, for local outputs.
            Event::McpServer(e) if self.inventory_events && e.announce != Announce::Local => {
                (Class::Inventory, self.wants.inventory)
            }
            Event::McpRequest(_) => (Class::Audit, self.wants.audit),
            _ => (Class::Telemetry, self.wants.telemetry),
        };
        let count = match &ev {
            Event::Alert(a) => match self.throttle.admit(a, &self.metrics) {
                Some(count) => count,
                None => return,
            },
            _ => 1,
        };
        if !wants.any() {
            return;
        }
        let record = match self.renderer.render(&ev, class, wants, count) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "event not serializable");
                self.metrics.spool_dropped("not_serializable", 1);
                return;
            }
        };
        for (sink, events, written) in &mut self.inline {
            if !class.selected_by(*events) {
                continue;
            }
            match sink.send(std::slice::from_ref(&record)).await {
                Ok(()) => {
                    written.inc();
                }
                Err(e) => {
                    self.metrics.sink_failed(sink.label());
                    tracing::warn!(sink = sink.label(), error = %e.reason, "sink write failed");
                }
            }
        }
        let mapped = record.ocsf.is_some() || record.ecs.is_some();
        if let Some(spool) = self.spool.as_mut().filter(|_| wants.spool && mapped) {
            spool.push(&record);
        }
    }

    async fn flush(&mut self) {
        for (sink, _, _) in &mut self.inline {
            if let Err(e) = sink.flush().await {
                self.metrics.sink_failed(sink.label());
                tracing::warn!(sink = sink.label(), error = %e.reason, "sink flush failed");
            }
        }
    }
}

async fn resolve(em: Emitted, wait: Duration) -> Event {
    let mut ev = em.event;
    if let (Some(h), Event::Process(p)) = (em.hash, &mut ev) {
        p.process.sha256 = h.wait(wait).await;
    }
    ev
}
