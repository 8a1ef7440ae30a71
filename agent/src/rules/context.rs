//! The per-event view rule conditions read: the event, its process, the MCP server
//! whose tree it is in, and its connection or DNS message, answered by field name.

use std::net::IpAddr;

use super::{
    condition::{Fields, Value},
    detect::TrackedServer,
};
use crate::{
    mcp::{inventory::ServerState, recognizer::Transport},
    state::{
        net_view::{DnsEvent, NetworkEvent, Protocol},
        process_table::Process,
    },
};

/// The per-event view conditions read.
pub struct Ctx<'a> {
    pub kind: &'static str,
    pub process: Option<&'a Process>,
    pub server: Option<&'a TrackedServer>,
    pub net: Option<&'a NetworkEvent>,
    pub dns: Option<&'a DnsEvent>,
}

impl Fields for Ctx<'_> {
    fn get(&self, field: &str) -> Option<Value<'_>> {
        let s = |v: &str| Some(Value::Str(v.to_string().into()));
        let p = self.process;
        let m = self.server.map(|t| &t.server);
        let n = self.net;
        match field {
            "event.type" => s(self.kind),
            "process.pid" => p.map(|p| Value::Num(p.key.pid.into())),
            "process.uid" => p.map(|p| Value::Num(p.uid.into())),
            "process.user" => p?.user.as_deref().and_then(s),
            "process.exe" => p?.exe.as_deref().and_then(s),
            "process.comm" => p.and_then(|p| s(&p.comm)),
            "process.cmdline" => p.and_then(|p| s(&p.argv.join(" "))),
            "mcp.in_tree" => Some(Value::Bool(m.is_some())),
            "mcp.sanctioned" => Some(Value::Bool(self.server.is_some_and(|t| t.sanctioned.is_some()))),
            "mcp.name" => m?.name.as_deref().and_then(s),
            "mcp.version" => m?.version.as_deref().and_then(s),
            "mcp.package" => m?.package.as_ref()?.name.as_deref().and_then(s),
            "mcp.state" => m.and_then(|m| s(state_name(m.state))),
            "mcp.transport" => m?.transport.map(transport_name).and_then(s),
            "mcp.exe" => m?.exe.as_deref().and_then(s),
            "mcp.sha256" => m?.sha256.as_deref().and_then(s),
            "mcp.user" => m?.user.as_deref().and_then(s),
            "mcp.uid" => m.map(|m| Value::Num(m.uid.into())),
            "mcp.host" => m?.host.as_ref().and_then(|h| s(&h.name)),
            "mcp.container_image" => m?
                .container
                .as_ref()
                .and_then(|c| s(&format!("{}://{}", c.runtime, c.id))),
            "net.protocol" => n.and_then(|n| s(protocol_name(n.protocol))),
            "net.direction" => n?
                .direction
                .map(|d| format!("{d:?}").to_lowercase())
                .and_then(|d| s(&d)),
            "net.result" => n.and_then(|n| s(&n.result)),
            "net.remote_ip" => n?.remote.map(|e| Value::Ip(e.ip)),
            "net.remote_port" => n?.remote.map(|e| Value::Num(e.port.into())),
            "net.local_ip" => n?.local.map(|e| Value::Ip(e.ip)),
            "net.local_port" => n?.local.map(|e| Value::Num(e.port.into())),
            "net.domain" => n?.domain.as_deref().and_then(s),
            "dns.question" => self.dns?.question.as_deref().and_then(s),
            "dns.answer_ip" => {
                let ips: Vec<IpAddr> = self
                    .dns?
                    .answers
                    .iter()
                    .filter_map(|a| a.data.as_deref()?.parse().ok())
                    .collect();
                (!ips.is_empty()).then_some(Value::Ips(ips))
            }
            _ => None,
        }
    }
}

pub fn state_name(s: ServerState) -> &'static str {
    match s {
        ServerState::Suspected => "suspected",
        ServerState::Confirmed => "confirmed",
        ServerState::Exited => "exited",
    }
}

pub fn transport_name(t: Transport) -> &'static str {
    match t {
        Transport::Stdio => "stdio",
        Transport::StreamableHttp => "streamable_http",
        Transport::Sse => "sse",
    }
}

pub fn protocol_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
        Protocol::Icmp => "icmp",
        Protocol::Icmpv6 => "icmpv6",
        Protocol::Raw => "raw",
        Protocol::Packet => "packet",
        Protocol::Unknown => "unknown",
    }
}
