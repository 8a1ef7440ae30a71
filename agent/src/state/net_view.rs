//! Network and DNS events as later stages (rules) and sinks see them. Fields are typed
//! and stable: addresses are `IpAddr`, results are errno names.

use std::{net::IpAddr, net::SocketAddr, sync::Arc};

use serde::Serialize;

use super::{dns::DnsAnswer, dns::DomainSource, netaddr::AddressClass, process_table::Process};

/// The process behind a network event, compactly.
#[derive(Clone, Debug, Serialize)]
pub struct ProcessRef {
    pub pid: u32,
    pub entity_id: String,
    pub exe: Option<Arc<str>>,
    pub comm: String,
    pub argv: Arc<[String]>,
}

impl ProcessRef {
    pub fn of(p: &Process) -> Self {
        Self {
            pid: p.key.pid,
            entity_id: p.key.to_string(),
            exe: p.exe.clone(),
            comm: p.comm.clone(),
            argv: p.argv.clone(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    pub ip: IpAddr,
    pub port: u16,
}

impl From<SocketAddr> for Endpoint {
    fn from(a: SocketAddr) -> Self {
        // Dual-stack sockets report v4 peers as ::ffff:a.b.c.d: show the v4 address.
        Self {
            ip: a.ip().to_canonical(),
            port: a.port(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    Tcp,
    Udp,
    Icmp,
    Icmpv6,
    Raw,
    /// `AF_PACKET`: link-layer sniffing or injection.
    Packet,
    Unknown,
}

impl Protocol {
    pub fn from_ip_proto(p: u16) -> Self {
        use mcpwatch_common::net::*;
        match p {
            IPPROTO_TCP => Self::Tcp,
            IPPROTO_UDP => Self::Udp,
            IPPROTO_ICMP => Self::Icmp,
            IPPROTO_ICMPV6 => Self::Icmpv6,
            0 => Self::Unknown,
            _ => Self::Raw,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Outbound,
    Inbound,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NetAction {
    /// `socket()` of a raw, ICMP or packet socket.
    Socket,
    /// An outbound connect: its attempt (non-blocking, `in_progress`) or its outcome.
    Connect,
    Accept,
    Bind,
    Listen,
    /// A listener stopped listening.
    Unlisten,
    /// A connection closed, with final byte counts.
    Close,
    /// Periodic byte counts of a long connection or datagram flow.
    Progress,
    /// First datagram of a socket to a destination.
    Send,
}

/// A connection, listener, socket or datagram-flow event.
#[derive(Clone, Debug, Serialize)]
pub struct NetworkEvent {
    /// `network_<action>`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub time: String,
    pub action: NetAction,
    pub protocol: Protocol,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direction: Option<Direction>,
    /// `ok`, `in_progress`, or the errno name (`ECONNREFUSED`); `failed` when the
    /// kernel gave no reason.
    pub result: Arc<str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errno: Option<i32>,
    /// Set on connects: the call was non-blocking and completed (or failed) later.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nonblocking: Option<bool>,
    pub local: Option<Endpoint>,
    pub remote: Option<Endpoint>,
    /// Class of the remote address (of the local one for listen/bind).
    pub address_class: Option<AddressClass>,
    /// The name the process resolved the remote address from.
    pub domain: Option<Arc<str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain_source: Option<DomainSource>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_sent: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_received: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packets_sent: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fd: Option<i32>,
    /// Same value on every event of one connection (connect/accept … close).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub socket_type: Option<&'static str>,
    /// The owning process; `null` when the kernel never saw one (an inbound connection
    /// closed before anyone accepted it).
    pub process: Option<ProcessRef>,
}

impl NetworkEvent {
    /// An event with only the mandatory parts; callers fill in the rest.
    pub fn new(action: NetAction, protocol: Protocol, time: String) -> Self {
        Self {
            kind: match action {
                NetAction::Socket => "network_socket",
                NetAction::Connect => "network_connect",
                NetAction::Accept => "network_accept",
                NetAction::Bind => "network_bind",
                NetAction::Listen | NetAction::Unlisten => "network_listen",
                NetAction::Close => "network_close",
                NetAction::Progress => "network_progress",
                NetAction::Send => "network_send",
            },
            time,
            action,
            protocol,
            direction: None,
            result: Arc::from("ok"),
            errno: None,
            nonblocking: None,
            local: None,
            remote: None,
            address_class: None,
            domain: None,
            domain_source: None,
            bytes_sent: None,
            bytes_received: None,
            packets_sent: None,
            duration_ms: None,
            fd: None,
            connection_id: None,
            socket_type: None,
            process: None,
        }
    }
}

/// A DNS query or response seen on the wire, with the process that sent or read it.
#[derive(Clone, Debug, Serialize)]
pub struct DnsEvent {
    /// `dns_query` or `dns_response`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub time: String,
    pub id: u16,
    pub transport: Protocol,
    pub server: Option<Endpoint>,
    pub question: Option<String>,
    pub qtype: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rcode: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub answers: Vec<DnsAnswer>,
    /// The message was longer than the kernel copies; answers may be missing.
    pub truncated: bool,
    pub process: Option<ProcessRef>,
}
