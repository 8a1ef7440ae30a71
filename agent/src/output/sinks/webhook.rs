//! Generic JSON webhook: `POST` of the batch as NDJSON (one record per line), any
//! 2xx acknowledges it. `Authorization: Bearer` when a token is configured.

use super::http_protocol::{Protocol, Request};
use crate::output::{host::HostInfo, record::Record, spec::Format};

pub struct Webhook;

impl Protocol for Webhook {
    fn default_path(&self) -> &'static str {
        "/"
    }

    fn build(&self, batch: &[Record], format: Format, _host: &HostInfo) -> Request {
        let mut body = Vec::new();
        for r in batch {
            body.extend_from_slice(r.body(format).as_bytes());
            body.push(b'\n');
        }
        Request {
            path: self.default_path().into(),
            content_type: "application/x-ndjson",
            body,
            headers: vec![("X-Mcpwatch-Records", batch.len().to_string())],
        }
    }
}
