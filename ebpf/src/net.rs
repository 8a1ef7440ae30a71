//! Network sensor: connects (attempt and outcome), accepts, binds, listeners, TCP
//! connection lifecycle with byte counts, datagram flows per destination, raw/ICMP
//! socket creation, and DNS messages to or from port 53.
//!
//! Hooks, and why each:
//! - `syscalls:sys_{enter,exit}_{connect,accept,accept4,bind,socket}` and
//!   `sys_enter_listen`: the caller's fd and the address it passed, in its own context.
//! - `sock:inet_sock_set_state`: TCP state changes. The SYN_SENT and LISTEN transitions
//!   run inside the caller's `connect()`/`listen()`, which ties the socket (`sk`) to the
//!   caller's fd; the others (handshake done, close) run in softirq and are matched by
//!   `sk` alone. This is what reports non-blocking connects that complete later.
//! - `tcp:tcp_receive_reset`: a reset while connecting means "refused".
//! - `tcp:tcp_destroy_sock`: the end of a connection, after its owner closed it, when
//!   its byte counts are final.
//! - `sock:sock_send_length` / `sock:sock_recv_length`: fire once per `sendmsg`/
//!   `recvmsg` on a socket (whatever syscall reached it: send, write, sendfile…) with
//!   the socket and the byte count. They cost nothing on file I/O, unlike read/write
//!   syscall hooks, and give exact payload bytes per connection.
//! - `sys_enter_{sendto,sendmsg,sendmmsg}`: where a datagram goes, and its payload
//!   (DNS queries); `sys_enter_{recvfrom,recvmsg}` on known DNS sockets: where a DNS
//!   answer will be written.
//!
//! Everything goes to `NET_EVENTS`, apart from process events, so that a network flood
//! cannot crowd out exec/exit records.

use core::{
    intrinsics::{atomic_xadd, AtomicOrdering},
    ptr::addr_of_mut,
};

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_probe_read_user,
        generated::{bpf_ktime_get_boot_ns, bpf_probe_read_user as probe_read_user_raw},
    },
    macros::{map, tracepoint},
    maps::{LruHashMap, PerCpuArray, RingBuf},
    programs::TracePointContext,
};
use mcpwatch_common::{
    net::{
        tcp_event, AcceptRecord, BindRecord, ConnectRecord, DnsRecord, NetAddr, SocketRecord, TcpRecord,
        UdpFlowRecord, AF_INET, AF_INET6, AF_PACKET, CONN_INBOUND, CONN_OUTBOUND, CONN_RESET,
        DNS_PAYLOAD_MAX, DNS_RESPONSE, DNS_TCP, DNS_TRUNCATED, EINPROGRESS, FLOW_CONNECTED, FLOW_NEW,
        IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, SOCK_DGRAM, SOCK_RAW,
    },
    EventKind,
};

use crate::maps::{count_drop, header};

/// Network records. The agent resizes it at load time (`--net-ringbuf-size`).
#[map(name = "NET_EVENTS")]
pub static NET_EVENTS: RingBuf = RingBuf::with_byte_size(4 << 20, 0);

/// See `mcpwatch_common::globals`. Written by the agent before load.
#[unsafe(no_mangle)]
static NET_WAKEUP_BYTES: u64 = 256 * 1024;
#[unsafe(no_mangle)]
static NET_REPORT_NS: u64 = 30_000_000_000;

const BPF_ANY: u64 = 0;
const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;
const BPF_RB_AVAIL_DATA: u64 = 0;

const TCP_ESTABLISHED: i32 = 1;
const TCP_SYN_SENT: i32 = 2;
const TCP_SYN_RECV: i32 = 3;
const TCP_CLOSE: i32 = 7;
const TCP_LISTEN: i32 = 10;

const MSG_PEEK: i32 = 2;
const DNS_PORT: u16 = 53;

/// A send-syscall stash older than this is not trusted (the syscall failed before it
/// reached the socket, and a later send of the same thread must not inherit it).
const STASH_MAX_AGE_NS: u64 = 50_000_000;

#[inline(always)]
fn submit_flags() -> u64 {
    let threshold = unsafe { core::ptr::read_volatile(&NET_WAKEUP_BYTES) };
    if NET_EVENTS.query(BPF_RB_AVAIL_DATA) >= threshold {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    }
}

#[inline(always)]
fn report_interval() -> u64 {
    unsafe { core::ptr::read_volatile(&NET_REPORT_NS) }
}

#[inline(always)]
fn now() -> u64 {
    unsafe { bpf_ktime_get_boot_ns() }
}

#[inline(always)]
fn tid() -> u32 {
    bpf_get_current_pid_tgid() as u32
}

#[inline(always)]
fn pid() -> u32 {
    (bpf_get_current_pid_tgid() >> 32) as u32
}

/// Key of a socket by its owner: pid in the high half, fd in the low half.
#[inline(always)]
fn fd_key(fd: i32) -> u64 {
    ((pid() as u64) << 32) | (fd as u32 as u64)
}

#[inline(always)]
fn is_inet(family: u16) -> bool {
    family == AF_INET || family == AF_INET6
}

// ---- user sockaddr ---------------------------------------------------------------

#[repr(C)]
#[derive(Clone, Copy)]
struct SockaddrIn {
    family: u16,
    port: u16,
    addr: [u8; 4],
}

#[repr(C)]
#[derive(Clone, Copy)]
struct SockaddrIn6 {
    family: u16,
    port: u16,
    flowinfo: u32,
    addr: [u8; 16],
}

/// Reads an IPv4/IPv6 `struct sockaddr` from user memory. Other families come back
/// with only `family` set; an unreadable one as family 0.
#[inline(always)]
fn read_sockaddr(ptr: u64) -> NetAddr {
    let mut out = NetAddr::default();
    if ptr == 0 {
        return out;
    }
    let Ok(family) = (unsafe { bpf_probe_read_user(ptr as *const u16) }) else {
        return out;
    };
    if family == AF_INET {
        if let Ok(s) = unsafe { bpf_probe_read_user(ptr as *const SockaddrIn) } {
            out.family = AF_INET;
            out.port = u16::from_be(s.port);
            out.addr[0] = s.addr[0];
            out.addr[1] = s.addr[1];
            out.addr[2] = s.addr[2];
            out.addr[3] = s.addr[3];
        }
    } else if family == AF_INET6 {
        if let Ok(s) = unsafe { bpf_probe_read_user(ptr as *const SockaddrIn6) } {
            out.family = AF_INET6;
            out.port = u16::from_be(s.port);
            out.addr = s.addr;
        }
    } else {
        out.family = family;
    }
    out
}

/// Addresses of an `inet_sock_set_state` / `tcp_*` tracepoint record, whose layout
/// is `sport, dport, family, …, saddr[4], daddr[4], saddr_v6[16], daddr_v6[16]`.
struct TupleOffsets {
    sport: usize,
    dport: usize,
    family: usize,
    saddr: usize,
    daddr: usize,
    saddr6: usize,
    daddr6: usize,
}

/// `sock:inet_sock_set_state` (from its `format` file).
const SET_STATE: TupleOffsets = TupleOffsets {
    sport: 24,
    dport: 26,
    family: 28,
    saddr: 32,
    daddr: 36,
    saddr6: 40,
    daddr6: 56,
};

#[inline(always)]
fn read_tuple(ctx: &TracePointContext, o: &TupleOffsets) -> (NetAddr, NetAddr) {
    let mut local = NetAddr::default();
    let mut remote = NetAddr::default();
    let family = unsafe { ctx.read_at::<u16>(o.family) }.unwrap_or(0);
    local.family = family;
    remote.family = family;
    local.port = unsafe { ctx.read_at::<u16>(o.sport) }.unwrap_or(0);
    remote.port = unsafe { ctx.read_at::<u16>(o.dport) }.unwrap_or(0);
    if family == AF_INET {
        let s = unsafe { ctx.read_at::<[u8; 4]>(o.saddr) }.unwrap_or([0; 4]);
        let d = unsafe { ctx.read_at::<[u8; 4]>(o.daddr) }.unwrap_or([0; 4]);
        local.addr[..4].copy_from_slice(&s);
        remote.addr[..4].copy_from_slice(&d);
    } else {
        local.addr = unsafe { ctx.read_at::<[u8; 16]>(o.saddr6) }.unwrap_or([0; 16]);
        remote.addr = unsafe { ctx.read_at::<[u8; 16]>(o.daddr6) }.unwrap_or([0; 16]);
    }
    (local, remote)
}

// ---- socket() --------------------------------------------------------------------

#[repr(C)]
#[derive(Clone, Copy)]
struct PendingSocket {
    family: u32,
    sock_type: u32,
    protocol: u32,
}

#[map]
static PENDING_SOCKET: LruHashMap<u32, PendingSocket> = LruHashMap::with_max_entries(1024, 0);

/// Protocol of the datagram and raw sockets this process created, by (pid, fd): a
/// connect on them changes no TCP state, so this is how its protocol is known.
#[map]
static DGRAM_PROTO: LruHashMap<u64, u16> = LruHashMap::with_max_entries(16384, 0);

#[inline(always)]
fn noteworthy_socket(s: &PendingSocket) -> bool {
    let p = s.protocol as u16;
    let inet = s.family == AF_INET as u32 || s.family == AF_INET6 as u32;
    // Netlink's SOCK_RAW (glibc's getaddrinfo opens one) is not a raw IP socket.
    s.family == AF_PACKET as u32
        || (inet && s.sock_type == SOCK_RAW)
        || (inet && s.sock_type == SOCK_DGRAM && (p == IPPROTO_ICMP || p == IPPROTO_ICMPV6))
}

#[tracepoint]
pub fn sys_enter_socket(ctx: TracePointContext) -> u32 {
    if crate::maps::floor() {
        return 0;
    }
    let family = unsafe { ctx.read_at::<u64>(16) }.unwrap_or(0) as u32;
    // SOCK_NONBLOCK and SOCK_CLOEXEC live in the high bits of `type`.
    let sock_type = unsafe { ctx.read_at::<u64>(24) }.unwrap_or(0) as u32 & 0xf;
    let protocol = unsafe { ctx.read_at::<u64>(32) }.unwrap_or(0) as u32;
    let inet = family == AF_INET as u32 || family == AF_INET6 as u32;
    let datagram = inet && (sock_type == SOCK_DGRAM || sock_type == SOCK_RAW);
    let s = PendingSocket {
        family,
        sock_type,
        protocol,
    };
    if datagram || noteworthy_socket(&s) {
        let _ = PENDING_SOCKET.insert(tid(), s, BPF_ANY);
    }
    0
}

#[tracepoint]
pub fn sys_exit_socket(ctx: TracePointContext) -> u32 {
    if crate::maps::floor() {
        return 0;
    }
    let t = tid();
    let Some(s) = (unsafe { PENDING_SOCKET.get(t) }).copied() else {
        return 0;
    };
    let _ = PENDING_SOCKET.remove(t);
    let ret = unsafe { ctx.read_at::<i64>(16) }.unwrap_or(-1) as i32;
    if ret >= 0 && s.family != AF_PACKET as u32 {
        let proto = if s.sock_type == SOCK_DGRAM && s.protocol == 0 {
            IPPROTO_UDP
        } else {
            s.protocol as u16
        };
        let _ = DGRAM_PROTO.insert(fd_key(ret), proto, BPF_ANY);
    }
    if noteworthy_socket(&s) {
        let Some(mut entry) = NET_EVENTS.reserve::<SocketRecord>(0) else {
            count_drop(EventKind::Socket);
            return 0;
        };
        entry.write(SocketRecord {
            header: header(EventKind::Socket),
            family: s.family,
            sock_type: s.sock_type,
            protocol: s.protocol,
            ret,
        });
        entry.submit(submit_flags());
    }
    0
}

// ---- connect() -------------------------------------------------------------------

#[repr(C)]
#[derive(Clone, Copy)]
struct PendingConnect {
    sk: u64,
    fd: i32,
    protocol: u16,
    _pad: u16,
    remote: NetAddr,
}

#[map]
static PENDING_CONNECT: LruHashMap<u32, PendingConnect> = LruHashMap::with_max_entries(4096, 0);

/// Peer of connected datagram sockets and of sockets that talk to port 53, by
/// (pid, fd): where a `send()` without address goes, and which receives are DNS.
#[map]
static SOCK_PEER: LruHashMap<u64, NetAddr> = LruHashMap::with_max_entries(16384, 0);

/// Per tracked TCP socket (`sk`): owner and byte counts.
#[repr(C)]
#[derive(Clone, Copy)]
struct Conn {
    start_ns: u64,
    last_report_ns: u64,
    bytes_sent: u64,
    bytes_received: u64,
    owner_pid: u32,
    fd: i32,
    flags: u32,
    /// Talks to port 53: its payloads are DNS.
    dns: u32,
}

/// Tracked TCP connections. LRU, so a close that was never seen cannot leak an entry.
#[map]
static CONNS: LruHashMap<u64, Conn> = LruHashMap::with_max_entries(65536, 0);

#[tracepoint]
pub fn sys_enter_connect(ctx: TracePointContext) -> u32 {
    if crate::maps::floor() {
        return 0;
    }
    let fd = unsafe { ctx.read_at::<u64>(16) }.unwrap_or(0) as i32;
    let uaddr = unsafe { ctx.read_at::<u64>(24) }.unwrap_or(0);
    let remote = read_sockaddr(uaddr);
    if !is_inet(remote.family) {
        return 0;
    }
    let p = PendingConnect {
        sk: 0,
        fd,
        protocol: 0,
        _pad: 0,
        remote,
    };
    let _ = PENDING_CONNECT.insert(tid(), p, BPF_ANY);
    0
}

#[tracepoint]
pub fn sys_exit_connect(ctx: TracePointContext) -> u32 {
    if crate::maps::floor() {
        return 0;
    }
    let t = tid();
    let Some(p) = (unsafe { PENDING_CONNECT.get(t) }).copied() else {
        return 0;
    };
    let _ = PENDING_CONNECT.remove(t);
    let ret = unsafe { ctx.read_at::<i64>(16) }.unwrap_or(0) as i32;
    let key = fd_key(p.fd);
    let protocol = if p.sk != 0 {
        IPPROTO_TCP
    } else {
        unsafe { DGRAM_PROTO.get(key) }.copied().unwrap_or(0)
    };
    let connected = ret == 0 || ret == -EINPROGRESS;
    if connected && (p.sk == 0 || p.remote.port == DNS_PORT) {
        let _ = SOCK_PEER.insert(key, p.remote, BPF_ANY);
    }
    let Some(mut entry) = NET_EVENTS.reserve::<ConnectRecord>(0) else {
        count_drop(EventKind::Connect);
        return 0;
    };
    entry.write(ConnectRecord {
        header: header(EventKind::Connect),
        sk: p.sk,
        fd: p.fd,
        ret,
        protocol,
        _pad: [0; 3],
        remote: p.remote,
    });
    entry.submit(submit_flags());
    0
}

// ---- bind(), listen(), accept() --------------------------------------------------

#[repr(C)]
#[derive(Clone, Copy)]
struct PendingBind {
    fd: i32,
    _pad: u32,
    local: NetAddr,
}

#[map]
static PENDING_BIND: LruHashMap<u32, PendingBind> = LruHashMap::with_max_entries(1024, 0);

#[tracepoint]
pub fn sys_enter_bind(ctx: TracePointContext) -> u32 {
    if crate::maps::floor() {
        return 0;
    }
    let fd = unsafe { ctx.read_at::<u64>(16) }.unwrap_or(0) as i32;
    let local = read_sockaddr(unsafe { ctx.read_at::<u64>(24) }.unwrap_or(0));
    if is_inet(local.family) {
        let _ = PENDING_BIND.insert(tid(), PendingBind { fd, _pad: 0, local }, BPF_ANY);
    }
    0
}

#[tracepoint]
pub fn sys_exit_bind(ctx: TracePointContext) -> u32 {
    if crate::maps::floor() {
        return 0;
    }
    let t = tid();
    let Some(b) = (unsafe { PENDING_BIND.get(t) }).copied() else {
        return 0;
    };
    let _ = PENDING_BIND.remove(t);
    let ret = unsafe { ctx.read_at::<i64>(16) }.unwrap_or(0) as i32;
    let Some(mut entry) = NET_EVENTS.reserve::<BindRecord>(0) else {
        count_drop(EventKind::Bind);
        return 0;
    };
    let protocol = unsafe { DGRAM_PROTO.get(fd_key(b.fd)) }.copied().unwrap_or(0);
    entry.write(BindRecord {
        header: header(EventKind::Bind),
        fd: b.fd,
        ret,
        protocol: u32::from(protocol),
        _pad: 0,
        local: b.local,
    });
    entry.submit(submit_flags());
    0
}

/// fd passed to `listen()`, by thread, until the LISTEN state change in that call.
#[map]
static PENDING_LISTEN: LruHashMap<u32, i32> = LruHashMap::with_max_entries(1024, 0);

/// Listening sockets (`sk`) → owner, so their close is reported.
#[repr(C)]
#[derive(Clone, Copy)]
struct Listener {
    owner_pid: u32,
    fd: i32,
}

#[map]
static LISTENERS: LruHashMap<u64, Listener> = LruHashMap::with_max_entries(8192, 0);

/// IPv4/IPv6 listening fds by (pid, fd): accepts on them are reported even when the
/// caller asks for no peer address.
#[map]
static LISTEN_FDS: LruHashMap<u64, u8> = LruHashMap::with_max_entries(8192, 0);

#[tracepoint]
pub fn sys_enter_listen(ctx: TracePointContext) -> u32 {
    if crate::maps::floor() {
        return 0;
    }
    let fd = unsafe { ctx.read_at::<u64>(16) }.unwrap_or(0) as i32;
    let _ = PENDING_LISTEN.insert(tid(), fd, BPF_ANY);
    0
}

#[repr(C)]
#[derive(Clone, Copy)]
struct PendingAccept {
    fd: i32,
    _pad: u32,
    upeer: u64,
}

#[map]
static PENDING_ACCEPT: LruHashMap<u32, PendingAccept> = LruHashMap::with_max_entries(4096, 0);

#[inline(always)]
fn accept_enter(ctx: &TracePointContext) {
    let fd = unsafe { ctx.read_at::<u64>(16) }.unwrap_or(0) as i32;
    let upeer = unsafe { ctx.read_at::<u64>(24) }.unwrap_or(0);
    let _ = PENDING_ACCEPT.insert(tid(), PendingAccept { fd, _pad: 0, upeer }, BPF_ANY);
}

#[inline(always)]
fn accept_exit(ctx: &TracePointContext) {
    let t = tid();
    let Some(a) = (unsafe { PENDING_ACCEPT.get(t) }).copied() else {
        return;
    };
    let _ = PENDING_ACCEPT.remove(t);
    let ret = unsafe { ctx.read_at::<i64>(16) }.unwrap_or(-1) as i32;
    // Failed accepts are mostly EAGAIN of event loops: not worth a record.
    if ret < 0 {
        return;
    }
    let peer = read_sockaddr(a.upeer);
    let known_listener = unsafe { LISTEN_FDS.get(fd_key(a.fd)) }.is_some();
    if !is_inet(peer.family) && !(peer.family == 0 && known_listener) {
        return;
    }
    let Some(mut entry) = NET_EVENTS.reserve::<AcceptRecord>(0) else {
        count_drop(EventKind::Accept);
        return;
    };
    entry.write(AcceptRecord {
        header: header(EventKind::Accept),
        listen_fd: a.fd,
        ret,
        peer,
    });
    entry.submit(submit_flags());
}

#[tracepoint]
pub fn sys_enter_accept(ctx: TracePointContext) -> u32 {
    if crate::maps::floor() {
        return 0;
    }
    accept_enter(&ctx);
    0
}

#[tracepoint]
pub fn sys_enter_accept4(ctx: TracePointContext) -> u32 {
    if crate::maps::floor() {
        return 0;
    }
    accept_enter(&ctx);
    0
}

#[tracepoint]
pub fn sys_exit_accept(ctx: TracePointContext) -> u32 {
    if crate::maps::floor() {
        return 0;
    }
    accept_exit(&ctx);
    0
}

#[tracepoint]
pub fn sys_exit_accept4(ctx: TracePointContext) -> u32 {
    if crate::maps::floor() {
        return 0;
    }
    accept_exit(&ctx);
    0
}

// ---- TCP state -------------------------------------------------------------------

#[inline(always)]
fn emit_tcp(
    event: u32,
    sk: u64,
    c: &Conn,
    flags: u32,
    tuple: Option<(NetAddr, NetAddr)>,
    states: (i32, i32),
) {
    let Some(mut entry) = NET_EVENTS.reserve::<TcpRecord>(0) else {
        count_drop(EventKind::Tcp);
        return;
    };
    let (local, remote) = tuple.unwrap_or_default();
    entry.write(TcpRecord {
        header: header(EventKind::Tcp),
        sk,
        event,
        flags: c.flags | flags,
        owner_pid: c.owner_pid,
        fd: c.fd,
        oldstate: states.0 as u32,
        newstate: states.1 as u32,
        local,
        remote,
        bytes_sent: c.bytes_sent,
        bytes_received: c.bytes_received,
        start_ns: c.start_ns,
    });
    entry.submit(submit_flags());
}

#[tracepoint]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    if crate::maps::floor() {
        return 0;
    }
    let protocol = unsafe { ctx.read_at::<u16>(30) }.unwrap_or(0);
    if protocol != IPPROTO_TCP {
        return 0;
    }
    let sk = unsafe { ctx.read_at::<u64>(8) }.unwrap_or(0);
    let old = unsafe { ctx.read_at::<i32>(16) }.unwrap_or(0);
    let new = unsafe { ctx.read_at::<i32>(20) }.unwrap_or(0);
    let states = (old, new);

    if old == TCP_CLOSE && new == TCP_SYN_SENT {
        // Inside connect(): tie the socket to the caller's fd.
        let Some(p) = PENDING_CONNECT.get_ptr_mut(tid()) else {
            return 0;
        };
        let (fd, dns) = unsafe {
            (*p).sk = sk;
            (*p).protocol = IPPROTO_TCP;
            ((*p).fd, (*p).remote.port == DNS_PORT)
        };
        let t = now();
        let c = Conn {
            start_ns: t,
            last_report_ns: t,
            bytes_sent: 0,
            bytes_received: 0,
            owner_pid: pid(),
            fd,
            flags: CONN_OUTBOUND,
            dns: dns as u32,
        };
        let _ = CONNS.insert(sk, c, BPF_ANY);
        return 0;
    }
    if new == TCP_LISTEN {
        // Inside listen().
        let t = tid();
        let fd = unsafe { PENDING_LISTEN.get(t) }.copied().unwrap_or(-1);
        let _ = PENDING_LISTEN.remove(t);
        let l = Listener { owner_pid: pid(), fd };
        let _ = LISTENERS.insert(sk, l, BPF_ANY);
        if fd >= 0 {
            let _ = LISTEN_FDS.insert(fd_key(fd), 1u8, BPF_ANY);
        }
        let c = listener_conn(&l);
        emit_tcp(
            tcp_event::LISTEN,
            sk,
            &c,
            0,
            Some(read_tuple(&ctx, &SET_STATE)),
            states,
        );
        return 0;
    }
    if old == TCP_LISTEN && new == TCP_CLOSE {
        if let Some(l) = unsafe { LISTENERS.get(sk) }.copied() {
            let _ = LISTENERS.remove(sk);
            let c = listener_conn(&l);
            emit_tcp(
                tcp_event::LISTEN_CLOSE,
                sk,
                &c,
                0,
                Some(read_tuple(&ctx, &SET_STATE)),
                states,
            );
        }
        return 0;
    }
    if old == TCP_SYN_RECV && new == TCP_ESTABLISHED {
        // Inbound handshake done (softirq): the owner is whoever accepts it.
        let t = now();
        let c = Conn {
            start_ns: t,
            last_report_ns: t,
            bytes_sent: 0,
            bytes_received: 0,
            owner_pid: 0,
            fd: -1,
            flags: CONN_INBOUND,
            dns: 0,
        };
        let _ = CONNS.insert(sk, c, BPF_ANY);
        emit_tcp(
            tcp_event::ESTABLISHED_IN,
            sk,
            &c,
            0,
            Some(read_tuple(&ctx, &SET_STATE)),
            states,
        );
        return 0;
    }
    let Some(c) = (unsafe { CONNS.get(sk) }).copied() else {
        return 0;
    };
    if old == TCP_SYN_SENT && new == TCP_ESTABLISHED {
        emit_tcp(
            tcp_event::ESTABLISHED_OUT,
            sk,
            &c,
            0,
            Some(read_tuple(&ctx, &SET_STATE)),
            states,
        );
    } else if old == TCP_SYN_SENT && new == TCP_CLOSE {
        let _ = CONNS.remove(sk);
        emit_tcp(
            tcp_event::FAILED,
            sk,
            &c,
            0,
            Some(read_tuple(&ctx, &SET_STATE)),
            states,
        );
    }
    // An established connection reaching CLOSE is reported when the socket is
    // destroyed (`tcp_destroy_sock`): until its owner closes the fd it may still read
    // data that arrived with the peer's FIN, and those bytes belong in the count.
    0
}

/// `tcp:tcp_destroy_sock` (from its `format` file).
const DESTROY: TupleOffsets = TupleOffsets {
    sport: 16,
    dport: 18,
    family: 20,
    saddr: 22,
    daddr: 26,
    saddr6: 30,
    daddr6: 46,
};

#[tracepoint]
pub fn tcp_destroy_sock(ctx: TracePointContext) -> u32 {
    if crate::maps::floor() {
        return 0;
    }
    // The last moment of a full TCP socket: after its owner closed it (or died), so
    // the byte counts are final.
    let sk = unsafe { ctx.read_at::<u64>(8) }.unwrap_or(0);
    let Some(c) = (unsafe { CONNS.get(sk) }).copied() else {
        return 0;
    };
    let _ = CONNS.remove(sk);
    let tuple = Some(read_tuple(&ctx, &DESTROY));
    emit_tcp(tcp_event::CLOSE, sk, &c, 0, tuple, (0, TCP_CLOSE));
    0
}

#[inline(always)]
fn listener_conn(l: &Listener) -> Conn {
    Conn {
        start_ns: 0,
        last_report_ns: 0,
        bytes_sent: 0,
        bytes_received: 0,
        owner_pid: l.owner_pid,
        fd: l.fd,
        flags: 0,
        dns: 0,
    }
}

#[tracepoint]
pub fn tcp_receive_reset(ctx: TracePointContext) -> u32 {
    if crate::maps::floor() {
        return 0;
    }
    // Only a reset before the handshake completes matters here: it is the refusal.
    let sk = unsafe { ctx.read_at::<u64>(8) }.unwrap_or(0);
    if let Some(c) = CONNS.get_ptr_mut(sk) {
        unsafe { (*c).flags |= CONN_RESET };
    }
    0
}

// ---- byte counts -----------------------------------------------------------------

/// Arguments of the send syscall in progress on this CPU, for `sock_send_length`,
/// which runs inside it. Per-CPU (no hash update per send); `tid` and `ts` say whether
/// it belongs to the current call.
#[repr(C)]
#[derive(Clone, Copy)]
struct SendStash {
    ts: u64,
    tid: u32,
    fd: i32,
    kind: u32,
    /// Messages of a `sendmmsg` already seen.
    index: u32,
    /// sendto: buffer and sockaddr; sendmsg: msghdr; sendmmsg: mmsghdr array.
    ptr: u64,
    addr: u64,
}

const SEND_TO: u32 = 1;
const SEND_MSG: u32 = 2;
const SEND_MMSG: u32 = 3;

#[map]
static SEND_STASH: PerCpuArray<SendStash> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
fn stash_send(ctx: &TracePointContext, kind: u32) {
    let Some(s) = SEND_STASH.get_ptr_mut(0) else {
        return;
    };
    let fd = unsafe { ctx.read_at::<u64>(16) }.unwrap_or(0) as i32;
    let ptr = unsafe { ctx.read_at::<u64>(24) }.unwrap_or(0);
    let addr = if kind == SEND_TO {
        unsafe { ctx.read_at::<u64>(48) }.unwrap_or(0)
    } else {
        0
    };
    unsafe {
        *s = SendStash {
            ts: now(),
            tid: tid(),
            fd,
            kind,
            index: 0,
            ptr,
            addr,
        };
    }
}

#[tracepoint]
pub fn sys_enter_sendto(ctx: TracePointContext) -> u32 {
    if crate::maps::floor() {
        return 0;
    }
    stash_send(&ctx, SEND_TO);
    0
}

#[tracepoint]
pub fn sys_enter_sendmsg(ctx: TracePointContext) -> u32 {
    if crate::maps::floor() {
        return 0;
    }
    stash_send(&ctx, SEND_MSG);
    0
}

#[tracepoint]
pub fn sys_enter_sendmmsg(ctx: TracePointContext) -> u32 {
    if crate::maps::floor() {
        return 0;
    }
    stash_send(&ctx, SEND_MMSG);
    0
}

/// `struct user_msghdr`: name, namelen, iov, iovlen, control, controllen, flags.
#[repr(C)]
#[derive(Clone, Copy)]
struct UserMsghdr {
    name: u64,
    namelen: u32,
    _pad: u32,
    iov: u64,
    iovlen: u64,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Iovec {
    base: u64,
    len: u64,
}

/// `sizeof(struct mmsghdr)`: a 56-byte msghdr and a 4-byte length, padded.
const MMSGHDR_SIZE: u64 = 64;

/// The current send's destination sockaddr pointer and first payload buffer.
#[inline(always)]
fn send_buffers(s: &SendStash) -> (u64, u64) {
    if s.kind == SEND_TO {
        return (s.addr, s.ptr);
    }
    let msg = if s.kind == SEND_MMSG {
        s.ptr + (s.index as u64 & 0xff) * MMSGHDR_SIZE
    } else {
        s.ptr
    };
    msghdr_buffers(msg)
}

#[inline(always)]
fn msghdr_buffers(msg: u64) -> (u64, u64) {
    let Ok(m) = (unsafe { bpf_probe_read_user(msg as *const UserMsghdr) }) else {
        return (0, 0);
    };
    let base = if m.iov != 0 && m.iovlen > 0 {
        unsafe { bpf_probe_read_user(m.iov as *const Iovec) }
            .map(|v| v.base)
            .unwrap_or(0)
    } else {
        0
    };
    let name = if m.namelen > 0 { m.name } else { 0 };
    (name, base)
}

/// The send stash, if it belongs to the call in progress on this thread.
#[inline(always)]
fn current_send() -> Option<*mut SendStash> {
    let s = SEND_STASH.get_ptr_mut(0)?;
    let ok = unsafe { (*s).tid == tid() && now().saturating_sub((*s).ts) < STASH_MAX_AGE_NS };
    ok.then_some(s)
}

/// Marks the stash used: `sendmmsg` moves on to its next message.
#[inline(always)]
fn consume_send(s: *mut SendStash) {
    unsafe {
        if (*s).kind == SEND_MMSG {
            (*s).index += 1;
        } else {
            (*s).tid = 0;
        }
    }
}

#[inline(always)]
fn add(counter: *mut u64, n: u64) {
    // Several CPUs may count the same connection at once. The BPF target has no
    // compare-and-swap, so core's atomics lack fetch_add; this intrinsic with its
    // result unused compiles to the plain atomic add every BPF kernel supports.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(counter, n) };
}

/// Counts bytes of a tracked TCP connection and reports a long one periodically.
#[inline(always)]
fn count_tcp(sk: u64, c: *mut Conn, sent: bool, n: u64, fd: i32) {
    unsafe {
        if sent {
            add(addr_of_mut!((*c).bytes_sent), n);
        } else {
            add(addr_of_mut!((*c).bytes_received), n);
        }
        if (*c).owner_pid == 0 {
            // Accepted connection: the first process to use it owns it.
            (*c).owner_pid = pid();
            (*c).fd = fd;
        }
        let t = now();
        if t.saturating_sub((*c).last_report_ns) >= report_interval() {
            (*c).last_report_ns = t;
            let snapshot = *c;
            emit_tcp(tcp_event::PROGRESS, sk, &snapshot, 0, None, (0, 0));
        }
    }
}

#[tracepoint]
pub fn sock_send_length(ctx: TracePointContext) -> u32 {
    if crate::maps::floor() {
        return 0;
    }
    // Fields: void *sk @8, u16 family @16, u16 protocol @18, int ret @20, int flags @24.
    let family = unsafe { ctx.read_at::<u16>(16) }.unwrap_or(0);
    if !is_inet(family) {
        return 0;
    }
    let ret = unsafe { ctx.read_at::<i32>(20) }.unwrap_or(0);
    let stash = current_send();
    if ret <= 0 {
        if let Some(s) = stash {
            consume_send(s);
        }
        return 0;
    }
    let sk = unsafe { ctx.read_at::<u64>(8) }.unwrap_or(0);
    let protocol = unsafe { ctx.read_at::<u16>(18) }.unwrap_or(0);
    let n = ret as u64;
    let fd = stash.map(|s| unsafe { (*s).fd }).unwrap_or(-1);

    if protocol == IPPROTO_TCP {
        if let Some(c) = CONNS.get_ptr_mut(sk) {
            count_tcp(sk, c, true, n, fd);
            if unsafe { (*c).dns } != 0 {
                if let Some(s) = stash {
                    let (_, buf) = send_buffers(unsafe { &*s });
                    let server = unsafe { SOCK_PEER.get(fd_key(fd)) }.copied().unwrap_or_default();
                    emit_dns(buf, n, fd, DNS_TCP, &server);
                }
            }
        }
        if let Some(s) = stash {
            consume_send(s);
        }
        return 0;
    }

    // A datagram: find where it went.
    let mut flags = 0;
    let mut remote = NetAddr::default();
    let mut buf = 0;
    if let Some(s) = stash {
        let (addr, b) = send_buffers(unsafe { &*s });
        buf = b;
        remote = read_sockaddr(addr);
        consume_send(s);
    }
    if !is_inet(remote.family) && fd >= 0 {
        if let Some(peer) = unsafe { SOCK_PEER.get(fd_key(fd)) } {
            remote = *peer;
            flags |= FLOW_CONNECTED;
        }
    }
    count_flow(sk, fd, protocol, flags, &remote, n);
    if remote.port == DNS_PORT && protocol == IPPROTO_UDP && buf != 0 {
        emit_dns(buf, n, fd, 0, &remote);
        if flags & FLOW_CONNECTED == 0 && fd >= 0 {
            // Unconnected DNS socket (sendto): remember it so the answer is read too.
            let _ = SOCK_PEER.insert(fd_key(fd), remote, BPF_ANY);
        }
    }
    0
}

/// What one socket sent to one destination.
#[repr(C)]
#[derive(Clone, Copy)]
struct FlowKey {
    sk: u64,
    remote: NetAddr,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Flow {
    last_report_ns: u64,
    packets: u64,
    bytes: u64,
}

#[map]
static FLOWS: LruHashMap<FlowKey, Flow> = LruHashMap::with_max_entries(16384, 0);

#[inline(always)]
fn count_flow(sk: u64, fd: i32, protocol: u16, flags: u32, remote: &NetAddr, n: u64) {
    let key = FlowKey { sk, remote: *remote };
    let t = now();
    let (flow, new) = match FLOWS.get_ptr_mut(&key) {
        Some(f) => unsafe {
            add(addr_of_mut!((*f).packets), 1);
            add(addr_of_mut!((*f).bytes), n);
            if t.saturating_sub((*f).last_report_ns) < report_interval() {
                return;
            }
            (*f).last_report_ns = t;
            (*f, false)
        },
        None => {
            let f = Flow {
                last_report_ns: t,
                packets: 1,
                bytes: n,
            };
            let _ = FLOWS.insert(&key, f, BPF_ANY);
            (f, true)
        }
    };
    let Some(mut entry) = NET_EVENTS.reserve::<UdpFlowRecord>(0) else {
        count_drop(EventKind::UdpFlow);
        return;
    };
    entry.write(UdpFlowRecord {
        header: header(EventKind::UdpFlow),
        sk,
        fd,
        flags: flags | if new { FLOW_NEW } else { 0 },
        protocol,
        _pad: [0; 3],
        remote: *remote,
        packets: flow.packets,
        bytes: flow.bytes,
    });
    entry.submit(submit_flags());
}

// ---- receives: TCP bytes and DNS answers -----------------------------------------

/// A receive in progress on a DNS socket: where the answer will be written.
#[repr(C)]
#[derive(Clone, Copy)]
struct DnsRecv {
    fd: i32,
    /// 1: `ptr` is the buffer (recvfrom); 2: `ptr` is a msghdr (recvmsg).
    kind: u32,
    ptr: u64,
}

#[map]
static DNS_RECV: LruHashMap<u32, DnsRecv> = LruHashMap::with_max_entries(1024, 0);

#[inline(always)]
fn recv_enter(ctx: &TracePointContext, kind: u32) {
    let fd = unsafe { ctx.read_at::<u64>(16) }.unwrap_or(0) as i32;
    let is_dns = unsafe { SOCK_PEER.get(fd_key(fd)) }.is_some_and(|p| p.port == DNS_PORT);
    if is_dns {
        let ptr = unsafe { ctx.read_at::<u64>(24) }.unwrap_or(0);
        let _ = DNS_RECV.insert(tid(), DnsRecv { fd, kind, ptr }, BPF_ANY);
    }
}

#[tracepoint]
pub fn sys_enter_recvfrom(ctx: TracePointContext) -> u32 {
    if crate::maps::floor() {
        return 0;
    }
    recv_enter(&ctx, 1);
    0
}

#[tracepoint]
pub fn sys_enter_recvmsg(ctx: TracePointContext) -> u32 {
    if crate::maps::floor() {
        return 0;
    }
    recv_enter(&ctx, 2);
    0
}

#[tracepoint]
pub fn sock_recv_length(ctx: TracePointContext) -> u32 {
    if crate::maps::floor() {
        return 0;
    }
    let family = unsafe { ctx.read_at::<u16>(16) }.unwrap_or(0);
    if !is_inet(family) {
        return 0;
    }
    let ret = unsafe { ctx.read_at::<i32>(20) }.unwrap_or(0);
    let flags = unsafe { ctx.read_at::<i32>(24) }.unwrap_or(0);
    let protocol = unsafe { ctx.read_at::<u16>(18) }.unwrap_or(0);
    let sk = unsafe { ctx.read_at::<u64>(8) }.unwrap_or(0);
    let t = tid();
    let dns = unsafe { DNS_RECV.get(t) }.copied();
    if dns.is_some() {
        let _ = DNS_RECV.remove(t);
    }
    if ret <= 0 {
        return 0;
    }
    let n = ret as u64;
    let fd = dns.map(|d| d.fd).unwrap_or(-1);
    if protocol == IPPROTO_TCP && flags & MSG_PEEK == 0 {
        if let Some(c) = CONNS.get_ptr_mut(sk) {
            count_tcp(sk, c, false, n, fd);
        }
    }
    if let Some(d) = dns {
        let buf = if d.kind == 1 {
            d.ptr
        } else {
            msghdr_buffers(d.ptr).1
        };
        let server = unsafe { SOCK_PEER.get(fd_key(d.fd)) }
            .copied()
            .unwrap_or_default();
        let tcp = if protocol == IPPROTO_TCP { DNS_TCP } else { 0 };
        emit_dns(buf, n, d.fd, DNS_RESPONSE | tcp, &server);
    }
    0
}

// ---- DNS payloads ----------------------------------------------------------------

#[inline(always)]
fn emit_dns(buf: u64, len: u64, fd: i32, flags: u32, server: &NetAddr) {
    if buf == 0 {
        return;
    }
    let Some(mut entry) = NET_EVENTS.reserve::<DnsRecord>(0) else {
        count_drop(EventKind::Dns);
        return;
    };
    let rec = entry.as_mut_ptr();
    let captured = if len > DNS_PAYLOAD_MAX as u64 {
        DNS_PAYLOAD_MAX as u64
    } else {
        len
    };
    unsafe {
        (*rec).header = header(EventKind::Dns);
        (*rec).fd = fd;
        (*rec).len = len as u32;
        (*rec).server = *server;
        let dst = addr_of_mut!((*rec).payload) as *mut u8;
        let r = probe_read_user_raw(dst.cast(), captured as u32, buf as *const _);
        (*rec).captured = if r == 0 { captured as u32 } else { 0 };
        (*rec).flags = flags | if len > captured { DNS_TRUNCATED } else { 0 };
    }
    entry.submit(submit_flags());
}
