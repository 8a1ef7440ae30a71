//! Last stage: formats and sinks.
//!
//! Events arrive in order; a process event waits (boundedly) for its executable's
//! hash, alerts pass the per rule+identity throttle. Each event is rendered once into
//! every format a sink needs (`ocsf`, `ecs`, the agent's own JSON), then:
//! - in-line sinks (`jsonl`) write it at once, in order;
//! - for remote sinks it is appended to the on-disk spool, fsync'd, and each sink's
//!   delivery loop sends it from there at least once (`delivery.rs`).
//!
//! By default remote sinks get alerts and the MCP inventory (changes and periodic
//! snapshots, `inventory.rs`); `events=all` opts a sink into telemetry.
//! `jsonl` gets every event, as it always has.

mod budget;
mod delivery;
mod ecs;
mod host;
mod inventory;
mod ocsf;
mod record;
mod sink;
mod sinks;
mod spec;
mod spool;
mod throttle;
mod tls;

use std::{path::Path, sync::Arc, time::Duration};

use anyhow::{Context as _, Result};
use futures::{stream::FuturesOrdered, StreamExt};
use serde::Deserialize;
use sha2::Digest as _;
use tokio::sync::{mpsc, watch};

use self::{
    delivery::{RetryPolicy, Worker},
    record::{now_ms, Class, Record},
    sink::Sink,
    sinks::{HttpSink, JsonlSink, SyslogSink},
    spec::Format,
    spool::{Spool, SpoolOptions},
    throttle::{Throttle, Verdict},
};
pub use self::{
    host::HostInfo,
    spec::{Selection, SinkSpec},
    spool::FullPolicy,
};
use crate::{
    events::{Emitted, Event},
    mcp::inventory::Announce,
    metrics::Metrics,
};

/// `delivery:` in the config file.
#[derive(Clone, Debug, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// Bound of the on-disk spool.
    pub spool_max_bytes: u64,
    /// What happens when it is full: `drop_oldest` or `drop_newest` (both counted in
    /// `mcpwatch_spool_dropped_total{reason="spool_full"}`).
    pub spool_full_policy: FullPolicy,
    /// One alert per rule + identity per this many seconds (0: no throttling).
    pub alert_throttle_secs: u64,
    /// Longest wait between two delivery attempts.
    pub retry_max_secs: u64,
    /// Largest JSON record a remote sink sends (0: no bound); larger ones are trimmed
    /// (`budget.rs`). A sink's `record_max_bytes=` option overrides it.
    pub record_max_bytes: usize,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            spool_max_bytes: 256 << 20,
            spool_full_policy: FullPolicy::DropOldest,
            alert_throttle_secs: 60,
            retry_max_secs: 60,
            record_max_bytes: budget::DEFAULT_RECORD_MAX_BYTES,
        }
    }
}

/// The same text `from_str` accepts (options only where they differ from a bare
/// path's defaults), for `print-config`. Remote sinks keep their original text: it
/// cannot hold credentials (`from_str` refuses them in URLs).
impl std::fmt::Display for SinkSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let j = match self {
            SinkSpec::Syslog(_, r) | SinkSpec::Http(_, r) => return f.write_str(&r.raw),
            SinkSpec::Jsonl(j) => j,
        };
        let base = match &j.path {
            None => "jsonl:-".to_string(),
            Some(p) => format!("jsonl:{}", p.display()),
        };
        let Ok(SinkSpec::Jsonl(bare)) = base.parse::<SinkSpec>() else {
            return f.write_str(&base);
        };
        let mut opts = Vec::new();
        if j.format != bare.format {
            opts.push(format!(
                "format={}",
                match j.format {
                    Format::Native => "native",
                    Format::Ocsf => "ocsf",
                    Format::Ecs => "ecs",
                }
            ));
        }
        if j.events != bare.events {
            opts.push(format!(
                "events={}",
                match j.events {
                    Selection::Alerts => "alerts",
                    Selection::All => "all",
                }
            ));
        }
        if j.max_bytes != bare.max_bytes {
            opts.push(format!("max_bytes={}", j.max_bytes));
        }
        if j.keep != bare.keep {
            opts.push(format!("keep={}", j.keep));
        }
        match opts.is_empty() {
            true => f.write_str(&base),
            false => write!(f, "{base}?{}", opts.join("&")),
        }
    }
}

/// Events resolving their hashes at once; beyond this the stage stops taking input,
/// which backs up into the pipeline's bounded channels.
const MAX_IN_FLIGHT: usize = 1024;
/// Records appended to the spool in one fsync at most.
const SPOOL_BATCH: usize = 512;
/// On shutdown, how long the delivery loops may go on sending what is spooled.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// Which renderings one class of event needs.
#[derive(Clone, Copy, Debug, Default)]
struct Wants {
    native: bool,
    ocsf: bool,
    ecs: bool,
    spool: bool,
}

impl Wants {
    fn any(self) -> bool {
        self.native || self.ocsf || self.ecs || self.spool
    }
}

fn selects(events: Selection, class: Class) -> bool {
    class.selected_by(events)
}

pub struct OutputStage {
    /// In-line sinks with what they take and their delivered-events counter (looked up
    /// once: the per-event path must not build a label per write).
    inline: Vec<(JsonlSink, Selection, prometheus_client::metrics::counter::Counter)>,
    spool: Option<Spool>,
    workers: Vec<Worker>,
    alert_wants: Wants,
    telemetry_wants: Wants,
    inventory_wants: Wants,
    /// Inventory events as their own class (SIEM sinks get them by default); when
    /// off they are plain telemetry.
    inventory_events: bool,
    pending: Vec<Vec<u8>>,
    throttle: Throttle,
    host: Arc<HostInfo>,
    metrics: Arc<Metrics>,
    /// How long an event may wait for its executable's hash before going out without it.
    hash_wait: Duration,
    seq: u64,
}

impl OutputStage {
    pub async fn open(
        specs: &[SinkSpec],
        delivery: &DeliveryConfig,
        state_dir: &Path,
        metrics: Arc<Metrics>,
        hash_wait: Duration,
    ) -> Result<Self> {
        // One process-wide provider, so every rustls user (reqwest included) agrees.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let host = HostInfo::detect();
        let mut inline = Vec::new();
        let mut remote: Vec<(String, Box<dyn Sink>, &spec::RemoteSpec)> = Vec::new();
        let (mut alert_wants, mut telemetry_wants, mut inventory_wants) =
            (Wants::default(), Wants::default(), Wants::default());
        let mut labels = std::collections::HashSet::new();
        for spec in specs {
            // Two sinks to one endpoint (different options) get distinct labels.
            let mut label = spec.label();
            let mut n = 1;
            while !labels.insert(label.clone()) {
                n += 1;
                label = format!("{}#{n}", spec.label());
            }
            metrics.sink_registered(&label);
            for (class, wants) in [
                (Class::Alert, &mut alert_wants),
                (Class::Telemetry, &mut telemetry_wants),
                (Class::Inventory, &mut inventory_wants),
            ] {
                if !selects(spec.events(), class) {
                    continue;
                }
                match (spec.is_spooled(), spec.format()) {
                    (true, f) => {
                        wants.spool = true;
                        wants.ocsf = true; // canonical: every spooled record has it
                        wants.ecs |= f == Format::Ecs;
                    }
                    (false, Format::Native) => wants.native = true,
                    (false, Format::Ocsf) => wants.ocsf = true,
                    (false, Format::Ecs) => wants.ecs = true,
                }
            }
            match spec {
                SinkSpec::Jsonl(j) => {
                    let sink = JsonlSink::open(j, label).await?;
                    let written = metrics.sink_written_counter(sink.label());
                    inline.push((sink, j.events, written));
                }
                SinkSpec::Syslog(t, r) => remote.push((
                    spec.id(),
                    Box::new(SyslogSink::new(t.clone(), r, label, host.clone())?),
                    r,
                )),
                SinkSpec::Http(k, r) => {
                    remote.push((spec.id(), Box::new(HttpSink::new(k, r, label, host.clone())?), r))
                }
            }
        }
        let mut spool = None;
        let mut workers = Vec::new();
        if !remote.is_empty() {
            let dir = state_dir.join("spool");
            let ids: Vec<String> = remote.iter().map(|(id, _, _)| id.clone()).collect();
            let s = Spool::open(
                &dir,
                SpoolOptions {
                    max_bytes: delivery.spool_max_bytes.max(1 << 20),
                    segment_bytes: (delivery.spool_max_bytes / 16).clamp(64 << 10, 8 << 20),
                    policy: delivery.spool_full_policy,
                },
                &ids,
            )
            .with_context(|| format!("opening the delivery spool in {}", dir.display()))?;
            metrics.set_spool_bytes(s.total_bytes());
            for (id, sink, r) in remote {
                let (backlog, _) = s.backlog(&id);
                if backlog > 0 {
                    tracing::info!(
                        sink = sink.label(),
                        backlog,
                        "spooled records from before the restart will be delivered"
                    );
                }
                workers.push(Worker {
                    id,
                    sink,
                    spool: s.clone(),
                    events: r.events,
                    format: r.format,
                    record_max_bytes: r.record_max_bytes.unwrap_or(delivery.record_max_bytes),
                    metrics: metrics.clone(),
                    retry: RetryPolicy {
                        max: Duration::from_secs(delivery.retry_max_secs.max(1)),
                        ..Default::default()
                    },
                });
            }
            spool = Some(s);
        }
        Ok(Self {
            inline,
            spool,
            workers,
            alert_wants,
            telemetry_wants,
            inventory_wants,
            inventory_events: true,
            pending: Vec::new(),
            throttle: Throttle::new(Duration::from_secs(delivery.alert_throttle_secs)),
            host,
            metrics,
            hash_wait,
            seq: 0,
        })
    }

    /// Whether inventory events go to SIEM sinks by default (`inventory_events`).
    pub fn with_inventory_events(mut self, on: bool) -> Self {
        self.inventory_events = on;
        self
    }

    /// Runs until the input closes (the state stage finished), then flushes, lets the
    /// delivery loops send what they can for a moment, and stops them.
    pub async fn run(mut self, mut rx: mpsc::Receiver<Emitted>) {
        let (stop_tx, stop_rx) = watch::channel(false);
        let workers: Vec<_> = std::mem::take(&mut self.workers)
            .into_iter()
            .map(|w| tokio::spawn(w.run(stop_rx.clone())))
            .collect();
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
        self.commit();
        self.flush().await;
        if let Some(spool) = &self.spool {
            let deadline = tokio::time::Instant::now() + DRAIN_GRACE;
            while tokio::time::Instant::now() < deadline && !workers.iter().all(|w| w.is_finished()) {
                let head = spool.head();
                if spool_caught_up(spool, head) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let _ = stop_tx.send(true);
        for w in workers {
            let _ = w.await;
        }
    }

    /// After an event: spool a full batch, and when nothing more is waiting, spool the
    /// rest and flush the in-line sinks.
    async fn settle(&mut self, idle: bool) {
        if self.pending.len() >= SPOOL_BATCH || idle {
            self.commit();
        }
        if idle {
            self.flush().await;
        }
    }

    async fn handle(&mut self, ev: Event) {
        let (class, wants) = match &ev {
            Event::Alert(_) => (Class::Alert, self.alert_wants),
            // A suspect that has neither spoken MCP nor lived past its grace period
            // (and the end of one) stays off the SIEM: telemetry, for local outputs.
            Event::McpServer(e) if self.inventory_events && e.announce != Announce::Local => {
                (Class::Inventory, self.inventory_wants)
            }
            _ => (Class::Telemetry, self.telemetry_wants),
        };
        let count = match &ev {
            Event::Alert(a) => {
                match self
                    .throttle
                    .check_with(&a.dedup_key(), tokio::time::Instant::now(), a.throttle)
                {
                    Verdict::Suppress => {
                        self.metrics.alert_suppressed(&a.rule_id);
                        return;
                    }
                    Verdict::Emit { count } => {
                        self.metrics.alert_raised(&a.rule_id, a.severity);
                        count
                    }
                }
            }
            _ => 1,
        };
        if !wants.any() {
            return;
        }
        let record = match self.render(&ev, class, wants, count) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "event not serializable");
                self.metrics.spool_dropped("not_serializable", 1);
                return;
            }
        };
        for (sink, events, written) in &mut self.inline {
            if !selects(*events, class) {
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
        if wants.spool && self.spool.is_some() && mapped {
            match serde_json::to_vec(&record) {
                Ok(bytes) => self.pending.push(bytes),
                Err(e) => {
                    tracing::error!(error = %e, "record not serializable");
                    self.metrics.spool_dropped("not_serializable", 1);
                }
            }
        }
    }

    fn render(&mut self, ev: &Event, class: Class, wants: Wants, count: u64) -> serde_json::Result<Record> {
        // Serialized straight into a RawValue: nothing re-parses what was just written.
        let raw = |v: &serde_json::Value| serde_json::value::to_raw_value(v);
        self.seq += 1;
        let accepted_ms = now_ms();
        let mut rec = match ev {
            Event::Alert(a) => {
                let uid = a.finding_uid(&self.host.id);
                let event_uid = digest(&[
                    &uid,
                    &a.unix_ms().to_string(),
                    &accepted_ms.to_string(),
                    &self.seq.to_string(),
                ]);
                Record {
                    class,
                    time_ms: a.unix_ms(),
                    accepted_ms,
                    severity: a.severity.id(),
                    kind: a.rule_id.clone(),
                    ocsf: wants
                        .ocsf
                        .then(|| raw(&ocsf::detection_finding(a, &self.host, &event_uid, count)))
                        .transpose()?,
                    ecs: wants
                        .ecs
                        .then(|| raw(&ecs::alert(a, &self.host, &event_uid, count)))
                        .transpose()?,
                    native: None,
                    uid,
                    event_uid,
                }
            }
            Event::Process(p) => {
                // Ids and times for SIEM records only: the agent's own JSON (the common,
                // high-volume case) needs neither, and a digest per exec is measurable.
                let for_siem = wants.ocsf || wants.ecs || wants.spool;
                let event_uid = if for_siem {
                    digest(&[&self.host.id, &p.process.entity_id, p.kind, &p.time])
                } else {
                    String::new()
                };
                Record {
                    class,
                    time_ms: if for_siem {
                        ocsf_time_ms(&p.time)
                    } else {
                        accepted_ms
                    },
                    accepted_ms,
                    severity: 1,
                    kind: "process_activity".into(),
                    ocsf: wants
                        .ocsf
                        .then(|| raw(&ocsf::process_activity(p, &self.host, &event_uid)))
                        .transpose()?,
                    ecs: wants
                        .ecs
                        .then(|| raw(&ecs::process_event(p, &self.host, &event_uid)))
                        .transpose()?,
                    native: None,
                    uid: event_uid.clone(),
                    event_uid,
                }
            }
            Event::McpServer(e) => {
                let change = inventory::Change::of(e);
                let time_ms = ocsf_time_ms(&e.time);
                let event_uid = digest(&[
                    &self.host.id,
                    &e.server.id,
                    change.name(),
                    &e.time,
                    &accepted_ms.to_string(),
                    &self.seq.to_string(),
                ]);
                Record {
                    class,
                    time_ms,
                    accepted_ms,
                    severity: 1,
                    kind: change.ocsf_class().into(),
                    ocsf: wants
                        .ocsf
                        .then(|| raw(&inventory::ocsf(e, &self.host, &event_uid, time_ms)))
                        .transpose()?,
                    ecs: wants
                        .ecs
                        .then(|| raw(&inventory::ecs(e, &self.host, &event_uid, &e.time)))
                        .transpose()?,
                    native: None,
                    // What the record is about (as an alert's finding uid): the server.
                    uid: e.server.server_uid.clone(),
                    event_uid,
                }
            }
            // Network and DNS events have no OCSF/ECS mapping yet: they reach in-line
            // (jsonl) sinks in the agent's own JSON only.
            // No SIEM mapping: these reach in-line sinks in the agent's own JSON only and
            // are never spooled, so no receiver dedups on an id (and a digest per
            // connection event is measurable in a connect storm).
            Event::Network(_) | Event::Dns(_) => Record {
                class,
                time_ms: accepted_ms,
                accepted_ms,
                severity: 1,
                kind: "telemetry".into(),
                ocsf: None,
                ecs: None,
                native: None,
                uid: String::new(),
                event_uid: String::new(),
            },
        };
        if wants.native {
            rec.native = Some(serde_json::value::to_raw_value(ev)?);
        }
        Ok(rec)
    }

    /// Appends what is pending to the spool (one write, one fsync).
    fn commit(&mut self) {
        let Some(spool) = &self.spool else { return };
        if self.pending.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.pending);
        match tokio::task::block_in_place(|| spool.append(&batch)) {
            Ok(r) => {
                if r.refused > 0 {
                    tracing::warn!(refused = r.refused, "spool full: new records refused");
                }
                self.metrics.spool_dropped("spool_full", r.refused + r.evicted);
            }
            Err(e) => {
                tracing::error!(error = %e, records = batch.len(), "spool write failed: records dropped");
                self.metrics.spool_dropped("write_error", batch.len() as u64);
            }
        }
        self.metrics.set_spool_bytes(spool.total_bytes());
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

fn spool_caught_up(spool: &Spool, head: u64) -> bool {
    spool.min_cursor() >= head
}

fn ocsf_time_ms(t: &str) -> u64 {
    time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
        .ok()
        .and_then(|d| u64::try_from(d.unix_timestamp_nanos() / 1_000_000).ok())
        .unwrap_or_else(now_ms)
}

/// A short hex digest of the parts: stable ids without leaking their content.
fn digest(parts: &[&str]) -> String {
    let mut h = sha2::Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0x1f]);
    }
    hex::encode(&h.finalize()[..16])
}

async fn resolve(em: Emitted, wait: Duration) -> Event {
    let mut ev = em.event;
    if let (Some(h), Event::Process(p)) = (em.hash, &mut ev) {
        p.process.sha256 = h.wait(wait).await;
    }
    ev
}

/// Test support for other modules: OCSF renderings of the alert fixture.
#[cfg(test)]
pub(crate) fn fixture_findings() -> Vec<serde_json::Value> {
    let host = HostInfo {
        hostname: "host-01".into(),
        id: "0123456789abcdef0123456789abcdef".into(),
    };
    let a = crate::alert::fixtures::alert();
    let mut bare = a.clone();
    bare.connection = None;
    bare.mcp_server = None;
    bare.lineage.clear();
    bare.tags.clear();
    vec![
        ocsf::detection_finding(&a, &host, "ev-1", 1),
        ocsf::detection_finding(&bare, &host, "ev-2", 7),
    ]
}

/// Test support: a confirmed, sanctioned server hosted by `claude`.
#[cfg(test)]
pub(crate) fn fixture_server() -> crate::mcp::inventory::McpServer {
    inventory::fixtures::server()
}

#[cfg(test)]
pub(crate) fn fixture_process_activity() -> serde_json::Value {
    use crate::state::view::{ProcessAction, ProcessEvent};
    let host = HostInfo {
        hostname: "host-01".into(),
        id: "0123456789abcdef0123456789abcdef".into(),
    };
    let a = crate::alert::fixtures::alert();
    let e = ProcessEvent {
        kind: "process_exec",
        time: "2026-11-22T00:51:29.105433428Z".into(),
        action: ProcessAction::Exec,
        process: a.process,
        lineage: a.lineage,
    };
    ocsf::process_activity(&e, &host, "ev-3")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_config_parses_with_defaults_and_refuses_unknown_keys() {
        let c: DeliveryConfig =
            serde_saphyr::from_str("spool_full_policy: drop_newest\nalert_throttle_secs: 0\n").unwrap();
        assert_eq!(c.spool_full_policy, FullPolicy::DropNewest);
        assert_eq!(c.alert_throttle_secs, 0);
        assert_eq!(c.spool_max_bytes, DeliveryConfig::default().spool_max_bytes);
        assert!(serde_saphyr::from_str::<DeliveryConfig>("spool_max_byte: 1\n").is_err());
        assert!(serde_saphyr::from_str::<DeliveryConfig>("spool_full_policy: block\n").is_err());
    }

    #[test]
    fn sink_specs_print_as_they_parse() {
        for text in [
            "jsonl:-",
            "jsonl:/var/log/mcpwatch/events.jsonl",
            "jsonl:/var/log/mcpwatch/alerts.jsonl?format=ocsf&events=alerts&max_bytes=1000&keep=3",
            "syslog+tls://siem.example:6514",
        ] {
            assert_eq!(text.parse::<SinkSpec>().unwrap().to_string(), text);
        }
    }
}
