//! `shadow-mcp-server`: a server no sanctioned entry matches. Confirmed servers always
//! qualify; suspects only from the rule's `suspected_min_confidence`.

use super::{attestation, display_name, server_identity, Finding, ServerSubject};
use crate::{mcp::inventory::ServerState, rules::model::Rule};

pub fn detect(rule: &Rule, s: &ServerSubject) -> Option<Finding> {
    let server = s.server();
    if s.tracked.sanctioned.is_some() || attestation::failed_claim(s).is_some() {
        return None;
    }
    let eligible = match server.state {
        ServerState::Confirmed => true,
        ServerState::Suspected => rule
            .suspected_min_confidence
            .is_some_and(|m| server.confidence >= m),
        ServerState::Exited => false,
    };
    eligible.then(|| {
        Finding::new(
            format!("Shadow MCP server {}", display_name(server)),
            format!(
                "{} MCP server {} (pid {}, {}) matches no sanctioned entry in the rule file",
                super::super::context::state_name(server.state),
                display_name(server),
                server.pid,
                server_identity(server)
            ),
        )
    })
}
