//! The current task and the clock, once for every sensor.

use aya_ebpf::helpers::{bpf_get_current_pid_tgid, generated::bpf_ktime_get_boot_ns};

/// Boot-time nanoseconds (`CLOCK_BOOTTIME`): compares with /proc start times and
/// survives suspend.
#[inline(always)]
pub fn now() -> u64 {
    unsafe { bpf_ktime_get_boot_ns() }
}

/// Thread id of the current task (the kernel's `pid`).
#[inline(always)]
pub fn tid() -> u32 {
    bpf_get_current_pid_tgid() as u32
}

/// Process id of the current task (the kernel's `tgid`).
#[inline(always)]
pub fn pid() -> u32 {
    (bpf_get_current_pid_tgid() >> 32) as u32
}
