//! Splunk HTTP Event Collector: `POST /services/collector/event` with concatenated
//! JSON envelopes and `Authorization: Splunk <token>`. HEC answers 200 with
//! `{"code":0}` on success; 503 (busy) and 429 are retried, 400 (bad data) rejected.

use serde_json::json;

use super::http_protocol::{classify, Protocol, Request};
use crate::output::{host::HostInfo, record::Record, sink::SendError, spec::Format};

pub struct Hec {
    pub index: Option<String>,
}

/// `ocsf:<class name>` (`ocsf:detection_finding`, `ocsf:process_activity`,
/// `ocsf:application_lifecycle`, `ocsf:software_info`), or `mcpwatch:ecs`.
fn sourcetype(r: &Record, format: Format) -> String {
    match (format, r.class) {
        (Format::Ecs, _) => "mcpwatch:ecs".into(),
        (_, crate::output::record::Class::Alert) => "ocsf:detection_finding".into(),
        (_, _) => format!("ocsf:{}", r.kind),
    }
}

impl Protocol for Hec {
    fn default_path(&self) -> &'static str {
        "/services/collector/event"
    }

    fn token_scheme(&self) -> &'static str {
        "Splunk"
    }

    fn build(&self, batch: &[Record], format: Format, host: &HostInfo) -> Request {
        let mut body = Vec::new();
        for r in batch {
            let event: &serde_json::value::RawValue =
                serde_json::from_str(r.body(format)).expect("records hold valid JSON");
            let mut env = json!({
                "time": format!("{}.{:03}", r.time_ms / 1000, r.time_ms % 1000).parse::<f64>().unwrap_or(0.0),
                "host": host.hostname,
                "source": "mcpwatch",
                "sourcetype": sourcetype(r, format),
                "event": event,
            });
            if let Some(index) = &self.index {
                env["index"] = json!(index);
            }
            body.extend_from_slice(env.to_string().as_bytes());
        }
        Request {
            path: self.default_path().into(),
            content_type: "application/json",
            body,
            headers: Vec::new(),
        }
    }

    fn interpret(
        &self,
        status: reqwest::StatusCode,
        body: &[u8],
        n: usize,
        retry_after: Option<std::time::Duration>,
    ) -> Result<(), SendError> {
        classify(status, n, retry_after)?;
        // A 200 must also carry code 0 (HEC's own success code).
        let v: serde_json::Value = serde_json::from_slice(body)
            .map_err(|e| SendError::retry(format!("HEC answer is not JSON: {e}")))?;
        match v.get("code").and_then(|c| c.as_i64()) {
            Some(0) => Ok(()),
            other => Err(SendError::retry(format!("HEC answered code {other:?}: {v}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::record::Class;

    #[test]
    fn sourcetype_names_the_ocsf_class() {
        let r = |class, kind: &str| Record {
            class,
            time_ms: 0,
            accepted_ms: 0,
            severity: 1,
            kind: kind.into(),
            uid: "u".into(),
            event_uid: "e".into(),
            ocsf: None,
            ecs: None,
            native: None,
        };
        assert_eq!(
            sourcetype(&r(Class::Alert, "MCP-001"), Format::Ocsf),
            "ocsf:detection_finding"
        );
        assert_eq!(
            sourcetype(&r(Class::Telemetry, "process_activity"), Format::Ocsf),
            "ocsf:process_activity"
        );
        assert_eq!(
            sourcetype(&r(Class::Inventory, "software_info"), Format::Ocsf),
            "ocsf:software_info"
        );
        assert_eq!(
            sourcetype(&r(Class::Inventory, "software_info"), Format::Ecs),
            "mcpwatch:ecs"
        );
        assert!(Class::Inventory.selected_by(crate::output::spec::Selection::ALERTS));
        assert!(!Class::Telemetry.selected_by(crate::output::spec::Selection::ALERTS));
    }
}
