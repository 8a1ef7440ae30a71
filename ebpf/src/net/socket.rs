//! `socket()`: raw, packet and ICMP sockets are reported; datagram sockets'
//! protocols are remembered for their connects and binds.

use aya_ebpf::{macros::map, maps::LruHashMap};
use mcpwatch_common::{
    net::{
        SocketRecord, AF_INET, AF_INET6, AF_PACKET, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_UDP, SOCK_DGRAM,
        SOCK_RAW,
    },
    EventKind,
};

use super::{fd_key, submit_flags, BPF_ANY, DGRAM_PROTO, NET_EVENTS};
use crate::{
    maps::{count_drop, header},
    syscall::{enter_args, exit_ret, Socket},
    task::tid,
};

#[repr(C)]
#[derive(Clone, Copy)]
struct PendingSocket {
    family: u32,
    sock_type: u32,
    protocol: u32,
}

#[map]
static PENDING_SOCKET: LruHashMap<u32, PendingSocket> = LruHashMap::with_max_entries(1024, 0);

#[inline(always)]
fn noteworthy_socket(s: &PendingSocket) -> bool {
    let p = s.protocol as u16;
    let inet = s.family == AF_INET as u32 || s.family == AF_INET6 as u32;
    // Netlink's SOCK_RAW (glibc's getaddrinfo opens one) is not a raw IP socket.
    s.family == AF_PACKET as u32
        || (inet && s.sock_type == SOCK_RAW)
        || (inet && s.sock_type == SOCK_DGRAM && (p == IPPROTO_ICMP || p == IPPROTO_ICMPV6))
}

tracepoint! {
    fn sys_enter_socket(ctx) {
        let args: Socket = enter_args(&ctx);
        let family = args.family as u32;
        // SOCK_NONBLOCK and SOCK_CLOEXEC live in the high bits of `type`.
        let sock_type = args.sock_type as u32 & 0xf;
        let protocol = args.protocol as u32;
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
}

tracepoint! {
    fn sys_exit_socket(ctx) {
        let t = tid();
        let Some(s) = (unsafe { PENDING_SOCKET.get(t) }).copied() else {
            return 0;
        };
        let _ = PENDING_SOCKET.remove(t);
        let ret = exit_ret(&ctx, -1) as i32;
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
}
