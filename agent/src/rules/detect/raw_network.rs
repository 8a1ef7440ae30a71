//! `mcp-raw-network`: a raw, ICMP or packet socket opened in an MCP server's tree
//! (scanning, spoofing or sniffing; no MCP tool needs one).

use super::{display_name, Finding, TrackedServer};
use crate::{
    rules::context::protocol_name,
    state::net_view::{NetworkEvent, Protocol},
};

pub fn detect(n: &NetworkEvent, pid: u32, tree: &TrackedServer) -> Option<Finding> {
    if !matches!(
        n.protocol,
        Protocol::Raw | Protocol::Icmp | Protocol::Icmpv6 | Protocol::Packet
    ) {
        return None;
    }
    let comm = n.process.as_ref().map_or("?", |p| p.comm.as_str());
    Some(Finding::new(
        format!(
            "{} socket in the tree of MCP server {}",
            protocol_name(n.protocol),
            display_name(&tree.server)
        ),
        format!(
            "process {comm} (pid {pid}) opened a {} socket ({})",
            protocol_name(n.protocol),
            n.socket_type.unwrap_or("?")
        ),
    ))
}
