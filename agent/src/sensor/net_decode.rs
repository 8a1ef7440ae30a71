//! Network records (`mcpwatch_common::net`) → typed events. Addresses become
//! [`SocketAddr`]s here; kernel errno values become positive numbers.

use std::net::SocketAddr;

use mcpwatch_common::{
    net::{
        tcp_event, AcceptRecord, BindRecord, ConnectRecord, DnsRecord, NetAddr, SocketRecord, TcpRecord,
        UdpFlowRecord, CONN_INBOUND, CONN_RESET, DNS_PAYLOAD_MAX, DNS_RESPONSE, DNS_TCP, DNS_TRUNCATED,
        FLOW_CONNECTED, FLOW_NEW,
    },
    EventKind,
};

use serde::{Deserialize, Serialize};

use super::record::{read_record, DecodeError};

/// An IPv4/IPv6 socket address, or `None` for another (or unknown) family.
pub fn socket_addr(a: &NetAddr) -> Option<SocketAddr> {
    super::record::socket_addr(a.family, &a.addr, a.port)
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SocketCreated {
    pub ts_ns: u64,
    pub pid: u32,
    pub family: u32,
    pub sock_type: u32,
    pub protocol: u32,
    /// fd, or the errno of a refused `socket()`.
    pub result: Result<i32, i32>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectCall {
    pub ts_ns: u64,
    pub pid: u32,
    pub tid: u32,
    /// Kernel socket of a TCP connect (a table key only).
    pub sk: Option<u64>,
    pub fd: i32,
    /// 0 when the kernel could not tell.
    pub protocol: u16,
    pub remote: Option<SocketAddr>,
    /// 0 or a positive errno (`EINPROGRESS` for a pending non-blocking connect).
    pub errno: i32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcceptCall {
    pub ts_ns: u64,
    pub pid: u32,
    pub listen_fd: i32,
    pub fd: i32,
    pub peer: Option<SocketAddr>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindCall {
    pub ts_ns: u64,
    pub pid: u32,
    pub fd: i32,
    pub protocol: u16,
    pub local: Option<SocketAddr>,
    pub errno: i32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TcpChange {
    Listen,
    ListenClose,
    EstablishedOut,
    EstablishedIn,
    Failed,
    Close,
    Progress,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TcpUpdate {
    pub ts_ns: u64,
    pub sk: u64,
    pub change: TcpChange,
    pub inbound: bool,
    /// A reset arrived while connecting.
    pub reset: bool,
    /// 0 when not known yet.
    pub owner_pid: u32,
    pub fd: i32,
    pub local: Option<SocketAddr>,
    pub remote: Option<SocketAddr>,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub start_ns: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UdpFlowUpdate {
    pub ts_ns: u64,
    pub pid: u32,
    pub sk: u64,
    pub fd: i32,
    pub protocol: u16,
    pub new: bool,
    pub connected: bool,
    pub remote: Option<SocketAddr>,
    /// Totals since the flow's first datagram.
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsMessage {
    pub ts_ns: u64,
    pub pid: u32,
    pub fd: i32,
    pub response: bool,
    pub tcp: bool,
    pub truncated: bool,
    pub server: Option<SocketAddr>,
    /// The captured bytes (for TCP, without the 2-byte length prefix).
    #[serde(with = "super::recording::bytes")]
    pub payload: Vec<u8>,
}

/// In a recording, `"net"` names the variant (the sensor event's `"kind"` is `"net"`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "net", rename_all = "snake_case")]
pub enum NetEvent {
    Socket(SocketCreated),
    Connect(ConnectCall),
    Accept(AcceptCall),
    Bind(BindCall),
    Tcp(TcpUpdate),
    UdpFlow(UdpFlowUpdate),
    Dns(DnsMessage),
}

impl NetEvent {
    pub fn kind(&self) -> EventKind {
        match self {
            Self::Socket(_) => EventKind::Socket,
            Self::Connect(_) => EventKind::Connect,
            Self::Accept(_) => EventKind::Accept,
            Self::Bind(_) => EventKind::Bind,
            Self::Tcp(_) => EventKind::Tcp,
            Self::UdpFlow(_) => EventKind::UdpFlow,
            Self::Dns(_) => EventKind::Dns,
        }
    }

    pub fn ts_ns(&self) -> u64 {
        match self {
            Self::Socket(e) => e.ts_ns,
            Self::Connect(e) => e.ts_ns,
            Self::Accept(e) => e.ts_ns,
            Self::Bind(e) => e.ts_ns,
            Self::Tcp(e) => e.ts_ns,
            Self::UdpFlow(e) => e.ts_ns,
            Self::Dns(e) => e.ts_ns,
        }
    }
}

fn errno_of(ret: i32) -> i32 {
    if ret < 0 {
        ret.saturating_neg()
    } else {
        0
    }
}

/// Decodes a record whose header says it is one of the network kinds.
pub fn decode_net(kind: EventKind, bytes: &[u8]) -> Result<NetEvent, DecodeError> {
    Ok(match kind {
        EventKind::Socket => {
            let r: SocketRecord = read_record(bytes, kind)?;
            NetEvent::Socket(SocketCreated {
                ts_ns: r.header.ts_ns,
                pid: r.header.pid,
                family: r.family,
                sock_type: r.sock_type,
                protocol: r.protocol,
                result: if r.ret >= 0 {
                    Ok(r.ret)
                } else {
                    Err(errno_of(r.ret))
                },
            })
        }
        EventKind::Connect => {
            let r: ConnectRecord = read_record(bytes, kind)?;
            NetEvent::Connect(ConnectCall {
                ts_ns: r.header.ts_ns,
                pid: r.header.pid,
                tid: r.header.tid,
                sk: (r.sk != 0).then_some(r.sk),
                fd: r.fd,
                protocol: r.protocol,
                remote: socket_addr(&r.remote),
                errno: errno_of(r.ret),
            })
        }
        EventKind::Accept => {
            let r: AcceptRecord = read_record(bytes, kind)?;
            NetEvent::Accept(AcceptCall {
                ts_ns: r.header.ts_ns,
                pid: r.header.pid,
                listen_fd: r.listen_fd,
                fd: r.ret,
                peer: socket_addr(&r.peer),
            })
        }
        EventKind::Bind => {
            let r: BindRecord = read_record(bytes, kind)?;
            NetEvent::Bind(BindCall {
                ts_ns: r.header.ts_ns,
                pid: r.header.pid,
                fd: r.fd,
                protocol: r.protocol as u16,
                local: socket_addr(&r.local),
                errno: errno_of(r.ret),
            })
        }
        EventKind::Tcp => {
            let r: TcpRecord = read_record(bytes, kind)?;
            let change = match r.event {
                tcp_event::LISTEN => TcpChange::Listen,
                tcp_event::LISTEN_CLOSE => TcpChange::ListenClose,
                tcp_event::ESTABLISHED_OUT => TcpChange::EstablishedOut,
                tcp_event::ESTABLISHED_IN => TcpChange::EstablishedIn,
                tcp_event::FAILED => TcpChange::Failed,
                tcp_event::CLOSE => TcpChange::Close,
                tcp_event::PROGRESS => TcpChange::Progress,
                other => return Err(DecodeError::BadField("tcp event", other)),
            };
            NetEvent::Tcp(TcpUpdate {
                ts_ns: r.header.ts_ns,
                sk: r.sk,
                change,
                inbound: r.flags & CONN_INBOUND != 0,
                reset: r.flags & CONN_RESET != 0,
                owner_pid: r.owner_pid,
                fd: r.fd,
                local: socket_addr(&r.local),
                remote: socket_addr(&r.remote),
                bytes_sent: r.bytes_sent,
                bytes_received: r.bytes_received,
                start_ns: r.start_ns,
            })
        }
        EventKind::UdpFlow => {
            let r: UdpFlowRecord = read_record(bytes, kind)?;
            NetEvent::UdpFlow(UdpFlowUpdate {
                ts_ns: r.header.ts_ns,
                pid: r.header.pid,
                sk: r.sk,
                fd: r.fd,
                protocol: r.protocol,
                new: r.flags & FLOW_NEW != 0,
                connected: r.flags & FLOW_CONNECTED != 0,
                remote: socket_addr(&r.remote),
                packets: r.packets,
                bytes: r.bytes,
            })
        }
        EventKind::Dns => {
            let r: DnsRecord = read_record(bytes, kind)?;
            let captured = (r.captured as usize).min(DNS_PAYLOAD_MAX);
            let tcp = r.flags & DNS_TCP != 0;
            let mut payload = &r.payload[..captured];
            if tcp {
                payload = payload.get(2..).unwrap_or_default();
            }
            NetEvent::Dns(DnsMessage {
                ts_ns: r.header.ts_ns,
                pid: r.header.pid,
                fd: r.fd,
                response: r.flags & DNS_RESPONSE != 0,
                tcp,
                truncated: r.flags & DNS_TRUNCATED != 0,
                server: socket_addr(&r.server),
                payload: payload.to_vec(),
            })
        }
        other => return Err(DecodeError::UnknownKind(other as u32)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcpwatch_common::{
        net::{AF_INET, AF_INET6},
        EventHeader,
    };
    use std::mem::size_of;
    use std::net::Ipv6Addr;

    fn as_bytes<T>(v: &T) -> Vec<u8> {
        // SAFETY: reading the bytes of a plain-data struct.
        unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
    }

    fn header(kind: EventKind) -> EventHeader {
        EventHeader {
            kind: kind as u32,
            tid: 11,
            pid: 10,
            _pad: 0,
            ts_ns: 5,
        }
    }

    #[test]
    fn addresses_decode_for_both_families() {
        let mut a = NetAddr {
            family: AF_INET,
            port: 443,
            ..Default::default()
        };
        a.addr[..4].copy_from_slice(&[10, 0, 0, 1]);
        assert_eq!(socket_addr(&a), Some("10.0.0.1:443".parse().unwrap()));
        let b = NetAddr {
            family: AF_INET6,
            port: 53,
            _pad: 0,
            addr: "fd00::1".parse::<Ipv6Addr>().unwrap().octets(),
        };
        assert_eq!(socket_addr(&b), Some("[fd00::1]:53".parse().unwrap()));
        assert_eq!(socket_addr(&NetAddr::default()), None);
    }

    #[test]
    fn connect_errno_is_positive() {
        let r = ConnectRecord {
            header: header(EventKind::Connect),
            sk: 0,
            fd: 3,
            ret: -111,
            protocol: 0,
            _pad: [0; 3],
            remote: NetAddr::default(),
        };
        let NetEvent::Connect(c) = decode_net(EventKind::Connect, &as_bytes(&r)).unwrap() else {
            panic!()
        };
        assert_eq!((c.errno, c.sk, c.remote), (111, None, None));
    }

    #[test]
    fn dns_lengths_are_clamped_and_tcp_prefix_dropped() {
        let mut r = DnsRecord {
            header: header(EventKind::Dns),
            fd: 1,
            flags: DNS_TCP | DNS_RESPONSE,
            len: 9999,
            captured: u32::MAX,
            server: NetAddr::default(),
            payload: [7; DNS_PAYLOAD_MAX],
        };
        let NetEvent::Dns(d) = decode_net(EventKind::Dns, &as_bytes(&r)).unwrap() else {
            panic!()
        };
        assert_eq!(d.payload.len(), DNS_PAYLOAD_MAX - 2);
        assert!(d.response && d.tcp);
        r.captured = 1;
        let NetEvent::Dns(d) = decode_net(EventKind::Dns, &as_bytes(&r)).unwrap() else {
            panic!()
        };
        assert!(d.payload.is_empty());
    }

    #[test]
    fn unknown_tcp_event_and_short_records_are_errors() {
        let mut r = TcpRecord {
            header: header(EventKind::Tcp),
            sk: 1,
            event: 99,
            flags: 0,
            owner_pid: 0,
            fd: -1,
            oldstate: 0,
            newstate: 0,
            local: NetAddr::default(),
            remote: NetAddr::default(),
            bytes_sent: 0,
            bytes_received: 0,
            start_ns: 0,
        };
        assert!(decode_net(EventKind::Tcp, &as_bytes(&r)).is_err());
        r.event = tcp_event::CLOSE;
        let bytes = as_bytes(&r);
        assert!(decode_net(EventKind::Tcp, &bytes).is_ok());
        assert!(matches!(
            decode_net(EventKind::Tcp, &bytes[..40]),
            Err(DecodeError::Short { .. })
        ));
    }
}
