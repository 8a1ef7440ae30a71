//! Bytes per socket: `sock:sock_send_length` / `sock:sock_recv_length`, with the
//! send and receive syscalls' arguments stashed at entry (where a datagram goes,
//! where a DNS answer will be written).

use core::ptr::addr_of_mut;

use aya_ebpf::{
    helpers::bpf_probe_read_user,
    macros::map,
    maps::{LruHashMap, PerCpuArray},
    programs::TracePointContext,
};
use mcpwatch_common::net::{
    tcp_event, NetAddr, DNS_RESPONSE, DNS_TCP, FLOW_CONNECTED, IPPROTO_TCP, IPPROTO_UDP,
};

use super::{
    add, dns::emit_dns, fd_key, is_inet, read_sockaddr, report_interval, tcp_state::emit_tcp,
    udp_flow::count_flow, Conn, BPF_ANY, CONNS, DNS_PORT, SOCK_PEER,
};
use crate::{
    syscall::{enter_args, FdAndBuffer, Sendto},
    task::{now, pid, tid},
};

const MSG_PEEK: i32 = 2;

/// A send-syscall stash older than this is not trusted (the syscall failed before it
/// reached the socket, and a later send of the same thread must not inherit it).
const STASH_MAX_AGE_NS: u64 = 50_000_000;

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
    // sendto(fd, buff, len, flags, addr, addr_len); sendmsg(fd, msg, flags);
    // sendmmsg(fd, mmsg, vlen, flags).
    let (fd, ptr, addr) = if kind == SEND_TO {
        let a: Sendto = enter_args(ctx);
        (a.fd as i32, a.buff, a.addr)
    } else {
        let a: FdAndBuffer = enter_args(ctx);
        (a.fd as i32, a.ptr, 0)
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

tracepoint! {
    fn sys_enter_sendto(ctx) {
        stash_send(&ctx, SEND_TO);
        0
    }
}

tracepoint! {
    fn sys_enter_sendmsg(ctx) {
        stash_send(&ctx, SEND_MSG);
        0
    }
}

tracepoint! {
    fn sys_enter_sendmmsg(ctx) {
        stash_send(&ctx, SEND_MMSG);
        0
    }
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

tracepoint! {
    fn sock_send_length(ctx) {
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
    // recvfrom(fd, ubuf, size, flags, addr, addr_len); recvmsg(fd, msg, flags).
    let args: FdAndBuffer = enter_args(ctx);
    let fd = args.fd as i32;
    let is_dns = unsafe { SOCK_PEER.get(fd_key(fd)) }.is_some_and(|p| p.port == DNS_PORT);
    if is_dns {
        let _ = DNS_RECV.insert(
            tid(),
            DnsRecv {
                fd,
                kind,
                ptr: args.ptr,
            },
            BPF_ANY,
        );
    }
}

tracepoint! {
    fn sys_enter_recvfrom(ctx) {
        recv_enter(&ctx, 1);
        0
    }
}

tracepoint! {
    fn sys_enter_recvmsg(ctx) {
        recv_enter(&ctx, 2);
        0
    }
}

tracepoint! {
    fn sock_recv_length(ctx) {
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
}
