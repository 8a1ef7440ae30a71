//! TCP connection lifecycle: `sock:inet_sock_set_state`, `tcp:tcp_destroy_sock`,
//! `tcp:tcp_receive_reset`.

use aya_ebpf::programs::TracePointContext;
use mcpwatch_common::{
    net::{tcp_event, NetAddr, TcpRecord, AF_INET, CONN_INBOUND, CONN_OUTBOUND, CONN_RESET, IPPROTO_TCP},
    EventKind,
};

use super::{
    connect::PENDING_CONNECT,
    fd_key,
    listen_accept::{Listener, LISTENERS, LISTEN_FDS, PENDING_LISTEN},
    submit_flags, Conn, BPF_ANY, CONNS, DNS_PORT, NET_EVENTS,
};
use crate::{
    maps::{count_drop, header},
    task::{now, pid, tid},
};

const TCP_ESTABLISHED: i32 = 1;
const TCP_SYN_SENT: i32 = 2;
const TCP_SYN_RECV: i32 = 3;
const TCP_CLOSE: i32 = 7;
const TCP_LISTEN: i32 = 10;

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

#[inline(always)]
pub(super) fn emit_tcp(
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

tracepoint! {
    fn inet_sock_set_state(ctx) {
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

tracepoint! {
    fn tcp_destroy_sock(ctx) {
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

tracepoint! {
    fn tcp_receive_reset(ctx) {
        // Only a reset before the handshake completes matters here: it is the refusal.
        let sk = unsafe { ctx.read_at::<u64>(8) }.unwrap_or(0);
        if let Some(c) = CONNS.get_ptr_mut(sk) {
            unsafe { (*c).flags |= CONN_RESET };
        }
        0
    }
}
