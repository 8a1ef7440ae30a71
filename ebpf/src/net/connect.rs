//! `connect()`: the attempt, with the address the caller passed, and its result.

use aya_ebpf::{macros::map, maps::LruHashMap};
use mcpwatch_common::{
    net::{ConnectRecord, NetAddr, EINPROGRESS, IPPROTO_TCP},
    EventKind,
};

use super::{
    fd_key, is_inet, read_sockaddr, submit_flags, BPF_ANY, DGRAM_PROTO, DNS_PORT, NET_EVENTS, SOCK_PEER,
};
use crate::{
    maps::{count_drop, header},
    syscall::{enter_args, exit_ret, SockaddrCall},
    task::tid,
};

#[repr(C)]
#[derive(Clone, Copy)]
pub(super) struct PendingConnect {
    pub(super) sk: u64,
    pub(super) fd: i32,
    pub(super) protocol: u16,
    _pad: u16,
    pub(super) remote: NetAddr,
}

#[map]
pub(super) static PENDING_CONNECT: LruHashMap<u32, PendingConnect> = LruHashMap::with_max_entries(4096, 0);

tracepoint! {
    fn sys_enter_connect(ctx) {
        let args: SockaddrCall = enter_args(&ctx);
        let fd = args.fd as i32;
        let remote = read_sockaddr(args.addr);
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
}

tracepoint! {
    fn sys_exit_connect(ctx) {
        let t = tid();
        let Some(p) = (unsafe { PENDING_CONNECT.get(t) }).copied() else {
            return 0;
        };
        let _ = PENDING_CONNECT.remove(t);
        let ret = exit_ret(&ctx, 0) as i32;
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
}
