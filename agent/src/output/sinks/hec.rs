//! Splunk HTTP Event Collector: `POST /services/collector/event` with concatenated
//! JSON envelopes and `Authorization: Splunk <token>`. HEC answers 200 with
//! `{"code":0}` on success; 503 (busy) and 429 are retried, 400 (bad data) rejected.

use serde_json::json;

use super::http::{classify, Protocol, Request};
use crate::output::{host::HostInfo, record::Record, sink::SendError, spec::Format};

pub struct Hec {
    pub index: Option<String>,
}

fn sourcetype(r: &Record, format: Format) -> &'static str {
    match (format, r.class) {
        (Format::Ecs, _) => "mcpwatch:ecs",
        (_, crate::output::record::Class::Alert) => "ocsf:detection_finding",
        (_, crate::output::record::Class::Telemetry) => "ocsf:process_activity",
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
