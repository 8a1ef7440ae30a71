//! An event rendered once into every format its sinks need (OCSF, ECS, the agent's
//! own JSON), with the ids SIEM receivers dedup on.

use std::sync::Arc;

use sha2::Digest as _;

use super::{
    audit, ecs, file_activity,
    host::HostInfo,
    inventory, ocsf,
    record::{now_ms, Class, Record},
};
use crate::events::Event;

/// Which renderings one class of event needs.
#[derive(Clone, Copy, Debug, Default)]
pub struct Wants {
    pub native: bool,
    pub ocsf: bool,
    pub ecs: bool,
    pub spool: bool,
}

impl Wants {
    pub fn any(self) -> bool {
        self.native || self.ocsf || self.ecs || self.spool
    }
}

/// What each class of event needs, over all the sinks.
#[derive(Clone, Copy, Debug, Default)]
pub struct ClassWants {
    pub alert: Wants,
    pub telemetry: Wants,
    pub inventory: Wants,
    pub audit: Wants,
}

/// Renders events for one host; numbers them so that two alike events in the same
/// millisecond still get distinct event ids.
pub struct Renderer {
    host: Arc<HostInfo>,
    seq: u64,
}

impl Renderer {
    pub fn new(host: Arc<HostInfo>) -> Self {
        Self { host, seq: 0 }
    }

    pub fn render(
        &mut self,
        ev: &Event,
        class: Class,
        wants: Wants,
        count: u64,
    ) -> serde_json::Result<Record> {
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
            Event::McpRequest(e) => {
                let event_uid = digest(&[&self.host.id, &e.uid]);
                Record {
                    class,
                    time_ms: audit::time_ms(e),
                    accepted_ms,
                    severity: 1,
                    kind: audit::KIND.into(),
                    ocsf: wants
                        .ocsf
                        .then(|| raw(&audit::ocsf(e, &self.host, &event_uid)))
                        .transpose()?,
                    ecs: wants
                        .ecs
                        .then(|| raw(&audit::ecs(e, &self.host, &event_uid)))
                        .transpose()?,
                    native: None,
                    // The request on this host, which findings it raised reference.
                    uid: e.uid.clone(),
                    event_uid,
                }
            }
            Event::FileAccess(e) => {
                // Ids for SIEM records only, as for process events.
                let for_siem = wants.ocsf || wants.spool;
                let event_uid = if for_siem {
                    digest(&[
                        &self.host.id,
                        &e.time,
                        &e.tree_root.to_string(),
                        &e.path,
                        &self.seq.to_string(),
                    ])
                } else {
                    String::new()
                };
                Record {
                    class,
                    time_ms: if for_siem {
                        file_activity::time_ms(e)
                    } else {
                        accepted_ms
                    },
                    accepted_ms,
                    severity: 1,
                    kind: file_activity::KIND.into(),
                    ocsf: wants
                        .ocsf
                        .then(|| raw(&file_activity::ocsf(e, &self.host, &event_uid)))
                        .transpose()?,
                    ecs: None,
                    native: None,
                    uid: event_uid.clone(),
                    event_uid,
                }
            }
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
