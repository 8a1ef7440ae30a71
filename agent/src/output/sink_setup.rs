//! The sinks of the `--output` specs, opened: in-line sinks ready to write, and for
//! remote sinks the shared on-disk spool with one delivery loop each. Also which
//! renderings each class of event needs, so that nothing is rendered for no sink.

use std::{collections::HashSet, path::Path, sync::Arc, time::Duration};

use anyhow::{Context as _, Result};
use prometheus_client::metrics::counter::Counter;

use super::{
    delivery::{RetryPolicy, Worker},
    delivery_config::DeliveryConfig,
    host::HostInfo,
    record::Class,
    render::ClassWants,
    sink::Sink,
    sinks::{HttpSink, JsonlSink, SyslogSink},
    spec::{Format, RemoteSpec, Selection, SinkSpec},
    spool::{Spool, SpoolOptions},
};
use crate::metrics::Metrics;

/// An in-line sink with what it takes and its delivered-events counter (looked up
/// once: the per-event path must not build a label per write).
pub type InlineSink = (JsonlSink, Selection, Counter);

pub struct Sinks {
    pub inline: Vec<InlineSink>,
    /// Present when there is a remote sink.
    pub spool: Option<Spool>,
    pub workers: Vec<Worker>,
    pub wants: ClassWants,
}

/// Opens every sink of `specs` and registers its metrics; remote sinks resume from the
/// spool in `state_dir` where they left off.
pub async fn open_sinks(
    specs: &[SinkSpec],
    delivery: &DeliveryConfig,
    state_dir: &Path,
    metrics: &Arc<Metrics>,
    host: &Arc<HostInfo>,
) -> Result<Sinks> {
    let mut inline = Vec::new();
    let mut remote: Vec<(String, Box<dyn Sink>, &RemoteSpec)> = Vec::new();
    let mut all_wants = ClassWants::default();
    let mut labels = HashSet::new();
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
            (Class::Alert, &mut all_wants.alert),
            (Class::Telemetry, &mut all_wants.telemetry),
            (Class::Inventory, &mut all_wants.inventory),
            (Class::Audit, &mut all_wants.audit),
        ] {
            if !class.selected_by(spec.events()) {
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
    let (spool, workers) = match remote.is_empty() {
        true => (None, Vec::new()),
        false => {
            let (spool, workers) = open_delivery(remote, delivery, state_dir, metrics)?;
            (Some(spool), workers)
        }
    };
    Ok(Sinks {
        inline,
        spool,
        workers,
        wants: all_wants,
    })
}

/// The spool the remote sinks share, and a delivery loop per sink reading from it.
fn open_delivery(
    remote: Vec<(String, Box<dyn Sink>, &RemoteSpec)>,
    delivery: &DeliveryConfig,
    state_dir: &Path,
    metrics: &Arc<Metrics>,
) -> Result<(Spool, Vec<Worker>)> {
    let dir = state_dir.join("spool");
    let ids: Vec<String> = remote.iter().map(|(id, _, _)| id.clone()).collect();
    let spool = Spool::open(
        &dir,
        SpoolOptions {
            max_bytes: delivery.spool_max_bytes.max(1 << 20),
            segment_bytes: (delivery.spool_max_bytes / 16).clamp(64 << 10, 8 << 20),
            policy: delivery.spool_full_policy,
        },
        &ids,
    )
    .with_context(|| format!("opening the delivery spool in {}", dir.display()))?;
    metrics.set_spool_bytes(spool.total_bytes());
    let mut workers = Vec::new();
    for (id, sink, r) in remote {
        let (backlog, _) = spool.backlog(&id);
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
            spool: spool.clone(),
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
    Ok((spool, workers))
}
