//! Grafana Loki push API (JSON): `POST /loki/api/v1/push`, one stream per
//! (class, severity) with low-cardinality labels only; success is 204.

use std::collections::BTreeMap;

use serde_json::json;

use super::http_protocol::{Protocol, Request};
use crate::output::{host::HostInfo, record::Record, spec::Format};

pub struct Loki {
    pub tenant: Option<String>,
}

impl Protocol for Loki {
    fn default_path(&self) -> &'static str {
        "/loki/api/v1/push"
    }

    fn build(&self, batch: &[Record], format: Format, host: &HostInfo) -> Request {
        let mut streams: BTreeMap<(&str, u8), Vec<serde_json::Value>> = BTreeMap::new();
        for r in batch {
            streams
                .entry((r.class.name(), r.severity))
                .or_default()
                .push(json!([
                    (u128::from(r.time_ms) * 1_000_000).to_string(),
                    r.body(format)
                ]));
        }
        let streams: Vec<_> = streams
            .into_iter()
            .map(|((class, sev), values)| {
                json!({
                    "stream": {"job": "mcpwatch", "host": host.hostname, "class": class,
                               "severity_id": sev.to_string()},
                    "values": values,
                })
            })
            .collect();
        Request {
            path: self.default_path().into(),
            content_type: "application/json",
            body: json!({ "streams": streams }).to_string().into_bytes(),
            headers: self.tenant.iter().map(|t| ("X-Scope-OrgID", t.clone())).collect(),
        }
    }
}
