//! A rendered event on its way to the sinks: the unit the spool stores and the sinks
//! send. Rendering happens once, before the spool, so a replay after a restart sends
//! byte-for-byte what would have been sent before it.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    Alert,
    Telemetry,
    /// MCP inventory changes and snapshots: with alerts, what SIEM sinks get by default.
    Inventory,
    /// One record per MCP request and its answer (`events=audit`).
    Audit,
}

impl Class {
    pub fn name(self) -> &'static str {
        match self {
            Class::Alert => "alert",
            Class::Telemetry => "telemetry",
            Class::Inventory => "inventory",
            Class::Audit => "audit",
        }
    }

    /// Whether a sink taking `events` takes this class.
    pub fn selected_by(self, events: super::spec::Selection) -> bool {
        match self {
            Class::Alert | Class::Inventory => events.alerts,
            Class::Audit => events.audit,
            Class::Telemetry => events.telemetry,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Record {
    pub class: Class,
    /// Event time, Unix ms.
    pub time_ms: u64,
    /// When the agent accepted it (Unix ms): the start of delivery latency and of the
    /// oldest-unsent age.
    pub accepted_ms: u64,
    /// OCSF severity id.
    pub severity: u8,
    /// Rule id for alerts (syslog MSGID), the OCSF class name otherwise
    /// (`process_activity`, `application_lifecycle`, `software_info`).
    pub kind: String,
    /// `finding_info.uid` for alerts, `metadata.uid` for telemetry: receivers dedup on it.
    pub uid: String,
    /// Idempotency key of this emission (`metadata.uid`), unique per record.
    pub event_uid: String,
    /// Present on every spooled record; in-line sinks get only what they write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ocsf: Option<Box<RawValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ecs: Option<Box<RawValue>>,
    /// The agent's own JSON; only for in-line (jsonl) sinks, never spooled.
    #[serde(skip)]
    pub native: Option<Box<RawValue>>,
}

impl Record {
    /// The body in a sink's format (the stage renders every format a sink needs;
    /// the fallbacks only matter for a record spooled before a format was added).
    pub fn body(&self, format: super::spec::Format) -> &str {
        self.body_slot(format).map_or("{}", |(_, b)| b.get())
    }

    /// Which rendering `body(format)` is, and the rendering.
    fn body_slot(&self, format: super::spec::Format) -> Option<(super::spec::Format, &RawValue)> {
        use super::spec::Format;
        let wanted = match format {
            Format::Ocsf => &self.ocsf,
            Format::Ecs => &self.ecs,
            Format::Native => &self.native,
        };
        wanted
            .as_deref()
            .map(|b| (format, b))
            .or(self.ocsf.as_deref().map(|b| (Format::Ocsf, b)))
            .or(self.native.as_deref().map(|b| (Format::Native, b)))
    }

    /// The format `body(format)` is really in (a fallback rendering may serve).
    pub fn body_format(&self, format: super::spec::Format) -> super::spec::Format {
        self.body_slot(format).map_or(format, |(f, _)| f)
    }

    /// Replaces the rendering `body(format)` returns.
    pub fn set_body(&mut self, format: super::spec::Format, body: Box<RawValue>) {
        use super::spec::Format;
        match self.body_format(format) {
            Format::Ocsf => self.ocsf = Some(body),
            Format::Ecs => self.ecs = Some(body),
            Format::Native => self.native = Some(body),
        }
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
