//! Kernel timestamps are CLOCK_BOOTTIME nanoseconds; output wants wall-clock time.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

/// Set by `mcpwatch replay` (0: the live clocks): the recording's boot-to-wall offset,
/// and its "now", the newest replayed timestamp. Process-wide, as a replay is the
/// whole process.
static REPLAY_OFFSET_NS: AtomicU64 = AtomicU64::new(0);
static REPLAY_NOW_NS: AtomicU64 = AtomicU64::new(0);

fn now(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer, valid clock id.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Boot-time "now"; during a replay, the newest replayed event's timestamp.
pub fn boottime_ns() -> u64 {
    match REPLAY_NOW_NS.load(Ordering::Relaxed) {
        0 => now(libc::CLOCK_BOOTTIME),
        replayed => replayed,
    }
}

/// CLOCK_REALTIME − CLOCK_BOOTTIME now (recorded in a recording's header).
pub fn boot_wall_offset_ns() -> u64 {
    now(libc::CLOCK_REALTIME).saturating_sub(now(libc::CLOCK_BOOTTIME))
}

/// Converts boot-time nanoseconds to wall-clock time (as of the current offset: a
/// later clock step shifts old timestamps, which is what every agent does).
pub fn boot_to_wall(boot_ns: u64) -> SystemTime {
    let offset = match REPLAY_OFFSET_NS.load(Ordering::Relaxed) {
        0 => boot_wall_offset_ns(),
        recorded => recorded,
    };
    UNIX_EPOCH + Duration::from_nanos(boot_ns.saturating_add(offset))
}

/// From now on, times are the recording's: boot-time stamps convert with its offset.
pub fn replay_with_offset(recorded_offset_ns: u64) {
    REPLAY_OFFSET_NS.store(recorded_offset_ns, Ordering::Relaxed);
}

/// A replayed event at `ts_ns` moves the replay's "now" forward (never back).
pub fn replay_advance(ts_ns: u64) {
    REPLAY_NOW_NS.fetch_max(ts_ns, Ordering::Relaxed);
}

/// RFC 3339 with nanoseconds, UTC.
pub fn rfc3339(t: SystemTime) -> String {
    time::OffsetDateTime::from(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Clock ticks per second for /proc start times.
pub fn ticks_per_second() -> u64 {
    // SAFETY: sysconf is always safe to call.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}
