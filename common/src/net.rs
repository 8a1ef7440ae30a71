//! Network records: sockets, connections, UDP flows and DNS payloads.
//!
//! Connections are identified by the kernel's socket address (`sk`), which the agent
//! uses only as a table key and never prints. Records produced in softirq context
//! (TCP state changes) carry the owning process in `owner_pid`: their header's pid
//! is whatever task the interrupt happened to hit.

use crate::EventHeader;

pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;
pub const AF_PACKET: u16 = 17;

pub const IPPROTO_ICMP: u16 = 1;
pub const IPPROTO_TCP: u16 = 6;
pub const IPPROTO_UDP: u16 = 17;
pub const IPPROTO_ICMPV6: u16 = 58;
pub const IPPROTO_RAW: u16 = 255;

pub const SOCK_STREAM: u32 = 1;
pub const SOCK_DGRAM: u32 = 2;
pub const SOCK_RAW: u32 = 3;

/// `-EINPROGRESS`: a non-blocking connect that completes later.
pub const EINPROGRESS: i32 = 115;

/// DNS payload bytes copied per message. Covers classic 512-byte UDP answers and most
/// EDNS answers; longer ones are flagged [`DNS_TRUNCATED`].
pub const DNS_PAYLOAD_MAX: usize = 1024;

/// An IPv4 or IPv6 socket address as the kernel saw it. `port` is in host byte order;
/// IPv4 addresses use the first four bytes of `addr`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetAddr {
    /// `AF_INET`, `AF_INET6`, or 0 when unknown.
    pub family: u16,
    pub port: u16,
    pub _pad: u32,
    pub addr: [u8; 16],
}

/// `socket()` of a raw, ICMP ("ping") or packet socket: rare on a normal host, and the
/// sign of a process that suddenly pings or sniffs.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SocketRecord {
    pub header: EventHeader,
    pub family: u32,
    /// Socket type without `SOCK_NONBLOCK`/`SOCK_CLOEXEC`.
    pub sock_type: u32,
    pub protocol: u32,
    /// The new fd, or `-errno`.
    pub ret: i32,
}

/// Outcome of a `connect()` syscall on an IPv4/IPv6 socket.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ConnectRecord {
    pub header: EventHeader,
    /// Socket, when the connect moved a TCP socket to SYN_SENT (0 otherwise).
    pub sk: u64,
    pub fd: i32,
    /// 0 on success, `-errno` on failure (`-EINPROGRESS` for a pending non-blocking connect).
    pub ret: i32,
    /// `IPPROTO_*` if known (TCP when `sk` is set; from `socket()` for datagram sockets), else 0.
    pub protocol: u16,
    pub _pad: [u16; 3],
    pub remote: NetAddr,
}

/// `accept()`/`accept4()` returned a connection on an IPv4/IPv6 listener.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct AcceptRecord {
    pub header: EventHeader,
    pub listen_fd: i32,
    /// New fd, or `-errno`.
    pub ret: i32,
    /// The peer as written to the caller's buffer; family 0 when the caller passed none.
    pub peer: NetAddr,
}

/// `bind()` of an IPv4/IPv6 socket.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct BindRecord {
    pub header: EventHeader,
    pub fd: i32,
    pub ret: i32,
    /// `IPPROTO_*` of datagram sockets created while the agent ran, else 0.
    pub protocol: u32,
    pub _pad: u32,
    pub local: NetAddr,
}

/// What a [`TcpRecord`] reports.
pub mod tcp_event {
    /// A socket began listening (`listen()`, in the caller's context).
    pub const LISTEN: u32 = 1;
    /// A listening socket was closed.
    pub const LISTEN_CLOSE: u32 = 2;
    /// An outbound connection completed its handshake.
    pub const ESTABLISHED_OUT: u32 = 3;
    /// An inbound connection completed its handshake (not yet accepted).
    pub const ESTABLISHED_IN: u32 = 4;
    /// An outbound connection failed before it was established.
    pub const FAILED: u32 = 5;
    /// A connection ended (socket destroyed after its owner closed it); byte counts are final.
    pub const CLOSE: u32 = 6;
    /// Periodic byte counts of a long connection.
    pub const PROGRESS: u32 = 7;
}

/// Direction flags in [`TcpRecord::flags`].
pub const CONN_OUTBOUND: u32 = 1 << 0;
pub const CONN_INBOUND: u32 = 1 << 1;
/// A reset was received: while connecting, the connection was refused; later, the
/// peer reset it.
pub const CONN_RESET: u32 = 1 << 2;

/// A TCP state change or byte report of a tracked connection or listener.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct TcpRecord {
    pub header: EventHeader,
    pub sk: u64,
    /// A [`tcp_event`] value.
    pub event: u32,
    /// `CONN_*` flags.
    pub flags: u32,
    /// Process that owns the socket: the connecting, listening or first reading/writing
    /// process; 0 when not known yet (an inbound connection nobody touched).
    pub owner_pid: u32,
    /// fd in the owner, or -1.
    pub fd: i32,
    pub oldstate: u32,
    pub newstate: u32,
    pub local: NetAddr,
    pub remote: NetAddr,
    /// Payload bytes through `sendmsg`/`recvmsg` of this socket since it was tracked.
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// When tracking began (boot-time ns): the connect, or the inbound handshake.
    pub start_ns: u64,
}

/// [`UdpFlowRecord::flags`]: first datagram of this socket to this destination.
pub const FLOW_NEW: u32 = 1 << 0;
/// The destination came from `connect()`, not from the send call.
pub const FLOW_CONNECTED: u32 = 1 << 1;

/// Datagrams (UDP, ICMP, raw) one socket sent to one destination. Emitted on the first
/// datagram and then at most once per report interval while traffic continues, with
/// the counts since the previous record.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct UdpFlowRecord {
    pub header: EventHeader,
    pub sk: u64,
    pub fd: i32,
    pub flags: u32,
    pub protocol: u16,
    pub _pad: [u16; 3],
    pub remote: NetAddr,
    pub packets: u64,
    pub bytes: u64,
}

/// [`DnsRecord::flags`].
pub const DNS_RESPONSE: u32 = 1 << 0;
/// The message was longer than [`DNS_PAYLOAD_MAX`]: only its start was copied.
pub const DNS_TRUNCATED: u32 = 1 << 1;
/// Carried over TCP (the payload starts with the 2-byte length prefix).
pub const DNS_TCP: u32 = 1 << 2;

/// A DNS message sent to or received from port 53, copied from the caller's buffer.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct DnsRecord {
    pub header: EventHeader,
    pub fd: i32,
    pub flags: u32,
    /// Length of the whole message.
    pub len: u32,
    /// Bytes of `payload` in use.
    pub captured: u32,
    /// The DNS server.
    pub server: NetAddr,
    pub payload: [u8; DNS_PAYLOAD_MAX],
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: `#[repr(C)]` records of integers and byte arrays; any bit pattern is valid.
    unsafe impl aya::Pod for super::NetAddr {}
    unsafe impl aya::Pod for super::SocketRecord {}
    unsafe impl aya::Pod for super::ConnectRecord {}
    unsafe impl aya::Pod for super::AcceptRecord {}
    unsafe impl aya::Pod for super::BindRecord {}
    unsafe impl aya::Pod for super::TcpRecord {}
    unsafe impl aya::Pod for super::UdpFlowRecord {}
    unsafe impl aya::Pod for super::DnsRecord {}
}
