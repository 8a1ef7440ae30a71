//! `bind()`, `listen()` and `accept()`/`accept4()`.

use aya_ebpf::{macros::map, maps::LruHashMap, programs::TracePointContext};
use mcpwatch_common::{
    net::{AcceptRecord, BindRecord, NetAddr},
    EventKind,
};

use super::{fd_key, is_inet, read_sockaddr, submit_flags, BPF_ANY, DGRAM_PROTO, NET_EVENTS};
use crate::{
    maps::{count_drop, header},
    syscall::{enter_args, exit_ret, Accept, Listen, SockaddrCall},
    task::tid,
};

#[repr(C)]
#[derive(Clone, Copy)]
struct PendingBind {
    fd: i32,
    _pad: u32,
    local: NetAddr,
}

#[map]
static PENDING_BIND: LruHashMap<u32, PendingBind> = LruHashMap::with_max_entries(1024, 0);

tracepoint! {
    fn sys_enter_bind(ctx) {
        let args: SockaddrCall = enter_args(&ctx);
        let fd = args.fd as i32;
        let local = read_sockaddr(args.addr);
        if is_inet(local.family) {
            let _ = PENDING_BIND.insert(tid(), PendingBind { fd, _pad: 0, local }, BPF_ANY);
        }
        0
    }
}

tracepoint! {
    fn sys_exit_bind(ctx) {
        let t = tid();
        let Some(b) = (unsafe { PENDING_BIND.get(t) }).copied() else {
            return 0;
        };
        let _ = PENDING_BIND.remove(t);
        let ret = exit_ret(&ctx, 0) as i32;
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
}

/// fd passed to `listen()`, by thread, until the LISTEN state change in that call.
#[map]
pub(super) static PENDING_LISTEN: LruHashMap<u32, i32> = LruHashMap::with_max_entries(1024, 0);

/// Listening sockets (`sk`) → owner, so their close is reported.
#[repr(C)]
#[derive(Clone, Copy)]
pub(super) struct Listener {
    pub(super) owner_pid: u32,
    pub(super) fd: i32,
}

#[map]
pub(super) static LISTENERS: LruHashMap<u64, Listener> = LruHashMap::with_max_entries(8192, 0);

/// IPv4/IPv6 listening fds by (pid, fd): accepts on them are reported even when the
/// caller asks for no peer address.
#[map]
pub(super) static LISTEN_FDS: LruHashMap<u64, u8> = LruHashMap::with_max_entries(8192, 0);

tracepoint! {
    fn sys_enter_listen(ctx) {
        let fd = enter_args::<Listen>(&ctx).fd as i32;
        let _ = PENDING_LISTEN.insert(tid(), fd, BPF_ANY);
        0
    }
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
    let args: Accept = enter_args(ctx);
    let fd = args.fd as i32;
    let upeer = args.upeer_sockaddr;
    let _ = PENDING_ACCEPT.insert(tid(), PendingAccept { fd, _pad: 0, upeer }, BPF_ANY);
}

#[inline(always)]
fn accept_exit(ctx: &TracePointContext) {
    let t = tid();
    let Some(a) = (unsafe { PENDING_ACCEPT.get(t) }).copied() else {
        return;
    };
    let _ = PENDING_ACCEPT.remove(t);
    let ret = exit_ret(ctx, -1) as i32;
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

tracepoint! {
    fn sys_enter_accept(ctx) {
        accept_enter(&ctx);
        0
    }
}

tracepoint! {
    fn sys_enter_accept4(ctx) {
        accept_enter(&ctx);
        0
    }
}

tracepoint! {
    fn sys_exit_accept(ctx) {
        accept_exit(&ctx);
        0
    }
}

tracepoint! {
    fn sys_exit_accept4(ctx) {
        accept_exit(&ctx);
        0
    }
}
