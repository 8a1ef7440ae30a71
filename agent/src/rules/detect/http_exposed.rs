//! `mcp-http-listener-exposed`: a confirmed HTTP (Streamable HTTP or SSE) server
//! accepting connections on a non-loopback address.

use std::net::SocketAddr;

use super::{display_name, Finding, ServerSubject};
use crate::mcp::{inventory::ServerState, recognizer::Transport};

pub fn detect(s: &ServerSubject) -> Option<Finding> {
    let server = s.server();
    let http = matches!(server.transport, Some(Transport::StreamableHttp | Transport::Sse));
    if server.state != ServerState::Confirmed || !http {
        return None;
    }
    // The inventory shows the address its client reached; the kernel's listen event
    // the one it is bound to (a wildcard bind reached over loopback is exposed).
    let addr = server
        .listen_address
        .as_deref()
        .and_then(|a| a.parse::<SocketAddr>().ok())
        .filter(|a| !a.ip().to_canonical().is_loopback())
        .or(s.exposed_listener)?;
    Some(Finding::new(
        format!("MCP HTTP server {} listens on {addr}", display_name(server)),
        format!(
            "MCP server {} accepts connections on non-loopback address {addr}",
            display_name(server)
        ),
    ))
}
