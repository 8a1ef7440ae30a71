//! Elasticsearch / OpenSearch `_bulk`: one `create` action per record with
//! `_id` = the record's event uid, so a resend is idempotent (a duplicate answers 409,
//! which counts as delivered). `_bulk` answers 200 even when items fail: every item's
//! status is read; from the first item that failed with 429/5xx the batch is resent,
//! an item refused for its content (other 4xx) is rejected and counted.

use serde_json::json;

use super::http_protocol::{classify, Protocol, Request};
use crate::output::{
    host::HostInfo,
    record::{Class, Record},
    sink::SendError,
    spec::Format,
};

pub struct Elastic {
    pub index: Option<String>,
}

impl Protocol for Elastic {
    fn default_path(&self) -> &'static str {
        "/_bulk"
    }

    fn token_scheme(&self) -> &'static str {
        "ApiKey"
    }

    fn build(&self, batch: &[Record], format: Format, _host: &HostInfo) -> Request {
        let mut body = Vec::new();
        for r in batch {
            let index = self.index.as_deref().unwrap_or(match r.class {
                Class::Alert => "mcpwatch-alerts",
                Class::Telemetry => "mcpwatch-events",
                Class::Inventory => "mcpwatch-inventory",
                Class::Audit => "mcpwatch-audit",
            });
            let action = json!({"create": {"_index": index, "_id": r.event_uid}});
            body.extend_from_slice(action.to_string().as_bytes());
            body.push(b'\n');
            body.extend_from_slice(r.body(format).as_bytes());
            body.push(b'\n');
        }
        Request {
            path: self.default_path().into(),
            content_type: "application/x-ndjson",
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
        let v: serde_json::Value = serde_json::from_slice(body)
            .map_err(|e| SendError::retry(format!("_bulk answer is not JSON: {e}")))?;
        if v.get("errors") == Some(&json!(false)) {
            return Ok(());
        }
        let items = v
            .get("items")
            .and_then(|i| i.as_array())
            .ok_or_else(|| SendError::retry("_bulk answer has no items"))?;
        if items.len() != n {
            return Err(SendError::retry(format!(
                "_bulk answered {} items for {n}",
                items.len()
            )));
        }
        for (i, item) in items.iter().enumerate() {
            let result = item.as_object().and_then(|o| o.values().next());
            let status = result
                .and_then(|r| r.get("status"))
                .and_then(|s| s.as_u64())
                .unwrap_or(0);
            if (200..300).contains(&status) || status == 409 {
                continue;
            }
            let reason = result
                .and_then(|r| r.get("error"))
                .map(|e| e.to_string())
                .unwrap_or_default();
            let mut e = SendError::retry(format!("_bulk item {i}: status {status} {reason}")).after(i);
            e.retry_after = retry_after;
            e.rejected = (400..500).contains(&status) && status != 429 && status != 408;
            return Err(e);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_item_status_finds_the_first_failure() {
        let e = Elastic { index: None };
        let ok = br#"{"errors":true,"items":[{"create":{"status":201}},{"create":{"status":409}},{"create":{"status":429}},{"create":{"status":201}}]}"#;
        let err = e.interpret(reqwest::StatusCode::OK, ok, 4, None).unwrap_err();
        assert_eq!((err.acked, err.rejected), (2, false));
        let bad = br#"{"errors":true,"items":[{"create":{"status":201}},{"create":{"status":400,"error":{"type":"mapper_parsing_exception"}}}]}"#;
        let err = e.interpret(reqwest::StatusCode::OK, bad, 2, None).unwrap_err();
        assert_eq!((err.acked, err.rejected), (1, true));
        let fine = br#"{"errors":false,"items":[{"create":{"status":201}}]}"#;
        assert!(e.interpret(reqwest::StatusCode::OK, fine, 1, None).is_ok());
        assert!(e
            .interpret(reqwest::StatusCode::OK, br#"{"errors":true,"items":[]}"#, 1, None)
            .is_err());
    }
}
