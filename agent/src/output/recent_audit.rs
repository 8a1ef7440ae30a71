//! The host's recent audit records, kept in memory for operators (`mcpwatch audit`,
//! `/v1/audit`): the last [`CAPACITY`] `mcp_request` records, numbered so that a
//! follower asks for what came after the last one it saw and learns how many it
//! missed. Records are the agent's own JSON, argument values as the audit policy
//! left them (masked or absent): nothing here is rawer than the events file.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
};

use serde::Serialize;
use serde_json::Value;

use crate::mcp::audit::McpRequestEvent;

/// Records kept (about 1 KiB each: ~10 MiB at most).
pub const CAPACITY: usize = 10_000;

/// What a query selects; `None` matches everything.
#[derive(Debug, Default, Clone)]
pub struct AuditFilter {
    /// The server's name, inventory id or stable uid.
    pub server: Option<String>,
    /// The tool, resource or prompt (`target`).
    pub tool: Option<String>,
    pub method: Option<String>,
    pub outcome: Option<String>,
}

impl AuditFilter {
    fn matches(&self, r: &Value) -> bool {
        let is = |v: &Value, want: &str| v.as_str() == Some(want);
        self.server.as_deref().is_none_or(|s| {
            let srv = &r["server"];
            is(&srv["name"], s) || is(&srv["id"], s) || is(&srv["server_uid"], s)
        }) && self.tool.as_deref().is_none_or(|t| is(&r["target"], t))
            && self.method.as_deref().is_none_or(|m| is(&r["method"], m))
            && self.outcome.as_deref().is_none_or(|o| is(&r["outcome"], o))
    }
}

/// One answer to a query: the records after the cursor that match, oldest first.
#[derive(Debug, Serialize)]
pub struct AuditPage {
    /// Pass as `after` to get what comes next.
    pub next: u64,
    /// Records after the cursor that had already left the window (not matched).
    pub missed: u64,
    pub records: Vec<Value>,
}

#[derive(Default)]
struct Window {
    /// (sequence number from 1, record)
    records: VecDeque<(u64, Value)>,
    last: u64,
}

#[derive(Clone, Default)]
pub struct RecentAudit(Arc<Mutex<Window>>);

impl RecentAudit {
    pub fn push(&self, ev: &McpRequestEvent) {
        let Ok(v) = serde_json::to_value(ev) else {
            return;
        };
        let mut w = self.0.lock().expect("recent audit lock");
        w.last += 1;
        let seq = w.last;
        if w.records.len() >= CAPACITY {
            w.records.pop_front();
        }
        w.records.push_back((seq, v));
    }

    /// Matching records numbered above `after`, at most `limit` (the oldest first).
    pub fn page(&self, after: u64, filter: &AuditFilter, limit: usize) -> AuditPage {
        let w = self.0.lock().expect("recent audit lock");
        let first = w.records.front().map_or(w.last + 1, |(s, _)| *s);
        // A cursor from an earlier run of the agent (numbers restart at 1) is past
        // the end: start over.
        let after = if after > w.last { 0 } else { after };
        let missed = first.saturating_sub(after + 1);
        let mut next = after.max(first.saturating_sub(1));
        let mut records = Vec::new();
        for (seq, r) in w.records.iter().filter(|(s, _)| *s > after) {
            if records.len() >= limit {
                break;
            }
            next = *seq;
            if filter.matches(r) {
                records.push(r.clone());
            }
        }
        AuditPage {
            next,
            missed,
            records,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mcp::audit::{fixtures, CallOutcome};

    fn event(tool: &str, outcome: CallOutcome) -> McpRequestEvent {
        let mut e = fixtures::event(outcome);
        e.request.target = Some(tool.into());
        e
    }

    #[test]
    fn a_follower_gets_each_record_once_filtered_and_learns_what_it_missed() {
        let log = RecentAudit::default();
        log.push(&event("read_file", CallOutcome::Ok));
        log.push(&event("write_file", CallOutcome::ToolError));
        let all = log.page(0, &AuditFilter::default(), 100);
        assert_eq!((all.next, all.missed, all.records.len()), (2, 0, 2));
        assert_eq!(all.records[0]["target"], "read_file");
        let errors = AuditFilter {
            outcome: Some("tool_error".into()),
            ..Default::default()
        };
        let p = log.page(0, &errors, 100);
        assert_eq!(p.records.len(), 1);
        assert_eq!(p.records[0]["target"], "write_file");
        // Nothing new: the cursor stays.
        let p = log.page(2, &AuditFilter::default(), 100);
        assert_eq!((p.next, p.records.len()), (2, 0));
        log.push(&event("read_file", CallOutcome::Ok));
        let p = log.page(2, &AuditFilter::default(), 100);
        assert_eq!((p.next, p.records.len()), (3, 1));
        // A limit pages through.
        let p = log.page(0, &AuditFilter::default(), 2);
        assert_eq!((p.next, p.records.len()), (2, 2));
    }

    #[test]
    fn the_window_is_bounded_and_a_slow_follower_is_told_how_many_it_missed() {
        let log = RecentAudit::default();
        for _ in 0..CAPACITY + 5 {
            log.push(&event("t", CallOutcome::Ok));
        }
        let p = log.page(0, &AuditFilter::default(), usize::MAX);
        assert_eq!(p.records.len(), CAPACITY);
        assert_eq!(p.missed, 5);
        assert_eq!(p.next, (CAPACITY + 5) as u64);
        // A cursor from a previous run of the agent starts over.
        let p = log.page(u64::MAX, &AuditFilter::default(), 1);
        assert_eq!(p.records.len(), 1);
    }
}
