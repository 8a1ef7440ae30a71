//! `mcp-server-privileged`: a confirmed server running as root or with effective
//! capabilities.

use super::{display_name, Finding, ServerSubject};
use crate::mcp::inventory::ServerState;

pub fn detect(s: &ServerSubject) -> Option<Finding> {
    let server = s.server();
    if server.state != ServerState::Confirmed {
        return None;
    }
    let why = if server.uid == 0 {
        "runs as root (uid 0)".to_string()
    } else {
        let caps = s.caps.filter(|c| *c != 0)?;
        format!("runs with capabilities CapEff={caps:016x}")
    };
    Some(Finding::new(
        format!("MCP server {} runs privileged", display_name(server)),
        format!("MCP server {} (pid {}) {why}", display_name(server), server.pid),
    ))
}
