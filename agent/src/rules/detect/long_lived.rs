//! `mcp-server-long-lived`: a confirmed server running longer than the rule's
//! `max_lifetime` (checked on the engine's timer).

use std::time::Duration;

use super::{display_name, Finding, TrackedServer};
use crate::{mcp::inventory::ServerState, rules::model::Rule};

pub fn detect(rule: &Rule, t: &TrackedServer, now_ns: u64) -> Option<Finding> {
    let max = rule.max_lifetime?;
    let age = Duration::from_nanos(now_ns.saturating_sub(t.start_ns));
    if t.server.state != ServerState::Confirmed || age <= max {
        return None;
    }
    Some(Finding::new(
        format!(
            "MCP server {} outlived its maximum lifetime",
            display_name(&t.server)
        ),
        format!(
            "running for {}s, longer than max_lifetime {}s",
            age.as_secs(),
            max.as_secs()
        ),
    ))
}
