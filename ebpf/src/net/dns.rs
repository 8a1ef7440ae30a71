//! DNS messages to or from port 53: the captured payload.

use core::ptr::addr_of_mut;

use aya_ebpf::helpers::generated::bpf_probe_read_user as probe_read_user_raw;
use mcpwatch_common::{
    net::{DnsRecord, NetAddr, DNS_PAYLOAD_MAX, DNS_TRUNCATED},
    EventKind,
};

use super::{submit_flags, NET_EVENTS};
use crate::maps::{count_drop, header};

#[inline(always)]
pub(super) fn emit_dns(buf: u64, len: u64, fd: i32, flags: u32, server: &NetAddr) {
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
