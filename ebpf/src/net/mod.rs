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
//!
//! One file per hook family (as Kunai's `probes/`): `socket`, `connect`,
//! `listen_accept`, `tcp_state`, `send_recv`, `udp_flow`, `dns`. State two families
//! share (the socket tables, the connection table) lives here.

use core::intrinsics::{atomic_xadd, AtomicOrdering};

use aya_ebpf::{
    helpers::bpf_probe_read_user,
    macros::map,
    maps::{LruHashMap, RingBuf},
};
use mcpwatch_common::net::{NetAddr, AF_INET, AF_INET6};

use crate::{
    maps::{global, submit_flags_over},
    task::pid,
};

mod connect;
mod dns;
mod listen_accept;
mod send_recv;
mod socket;
mod tcp_state;
mod udp_flow;

/// Network records. The agent resizes it at load time (`--net-ringbuf-size`).
#[map(name = "NET_EVENTS")]
pub static NET_EVENTS: RingBuf = RingBuf::with_byte_size(4 << 20, 0);

/// See `mcpwatch_common::globals`. Written by the agent before load.
#[unsafe(no_mangle)]
static NET_WAKEUP_BYTES: u64 = 256 * 1024;
#[unsafe(no_mangle)]
static NET_REPORT_NS: u64 = 30_000_000_000;

const BPF_ANY: u64 = 0;

const DNS_PORT: u16 = 53;

#[inline(always)]
fn submit_flags() -> u64 {
    submit_flags_over(&NET_EVENTS, global(&NET_WAKEUP_BYTES))
}

#[inline(always)]
fn report_interval() -> u64 {
    global(&NET_REPORT_NS)
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

// ---- state the hook families share ---------------------------------------------

/// Protocol of the datagram and raw sockets this process created, by (pid, fd): a
/// connect on them changes no TCP state, so this is how its protocol is known.
#[map]
static DGRAM_PROTO: LruHashMap<u64, u16> = LruHashMap::with_max_entries(16384, 0);

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

#[inline(always)]
fn add(counter: *mut u64, n: u64) {
    // Several CPUs may count the same connection at once. The BPF target has no
    // compare-and-swap, so core's atomics lack fetch_add; this intrinsic with its
    // result unused compiles to the plain atomic add every BPF kernel supports.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(counter, n) };
}

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
