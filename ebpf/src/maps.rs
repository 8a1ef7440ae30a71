//! Maps shared by every sensor: the ring buffer, drop counters and tunables.

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    macros::map,
    maps::{PerCpuArray, RingBuf},
};
use mcpwatch_common::{EventHeader, EventKind, MAX_EVENT_KINDS};

use crate::task;

/// The common record header for the current task. Timestamps are boot time, so they
/// compare with /proc start times and survive suspend.
#[inline(always)]
pub fn header(kind: EventKind) -> EventHeader {
    EventHeader {
        kind: kind as u32,
        tid: task::tid(),
        pid: task::pid(),
        _pad: 0,
        ts_ns: task::now(),
    }
}

/// Process lifecycle records. The agent resizes it at load time (`--ringbuf-size`).
#[map(name = "PROC_EVENTS")]
pub static PROC_EVENTS: RingBuf = RingBuf::with_byte_size(4 << 20, 0);

/// Records that could not be reserved, by [`EventKind`]. Per-CPU so that counting a
/// drop never contends; the agent sums the CPUs.
#[map(name = "DROPS")]
pub static DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(MAX_EVENT_KINDS, 0);

/// See `mcpwatch_common::globals::WAKEUP_BYTES`. Written by the agent before load.
#[unsafe(no_mangle)]
static WAKEUP_BYTES: u64 = 256 * 1024;

/// A global the loader patches into the object before load. Volatile, so that the
/// compiler does not fold its initializer.
#[inline(always)]
pub fn global<T: Copy>(v: &T) -> T {
    unsafe { core::ptr::read_volatile(v) }
}

/// Flags for `submit` to the process and payload rings (threshold `WAKEUP_BYTES`).
#[inline(always)]
pub fn submit_flags(rb: &RingBuf) -> u64 {
    submit_flags_over(rb, global(&WAKEUP_BYTES))
}

/// Flags for `submit`: wake the reader only once more than `threshold` bytes are
/// waiting, so a burst is drained in batches and a quiet host costs no wake-ups.
#[inline(always)]
pub fn submit_flags_over(rb: &RingBuf, threshold: u64) -> u64 {
    if rb.query(BPF_RB_AVAIL_DATA as u64) >= threshold {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

/// Bench-only "floor" mode (`MCPWATCH_SENSOR_FLOOR=1`): every program returns at
/// once, so the bench can measure the cost of the hooks themselves.
#[unsafe(no_mangle)]
static FLOOR: u32 = 0;

#[inline(always)]
pub fn floor() -> bool {
    global(&FLOOR) != 0
}

#[inline(always)]
pub fn count_drop(kind: EventKind) {
    if let Some(c) = DROPS.get_ptr_mut(kind as u32) {
        unsafe { *c += 1 };
    }
}
