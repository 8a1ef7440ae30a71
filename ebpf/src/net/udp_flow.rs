//! Datagram flows: packets and bytes per (socket, destination), reported when
//! new and then periodically.

use core::ptr::addr_of_mut;

use aya_ebpf::{macros::map, maps::LruHashMap};
use mcpwatch_common::{
    net::{NetAddr, UdpFlowRecord, FLOW_NEW},
    EventKind,
};

use super::{add, report_interval, submit_flags, BPF_ANY, NET_EVENTS};
use crate::{
    maps::{count_drop, header},
    task::now,
};

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
pub(super) fn count_flow(sk: u64, fd: i32, protocol: u16, flags: u32, remote: &NetAddr, n: u64) {
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
