//! Kernel timestamps are CLOCK_BOOTTIME nanoseconds; output wants wall-clock time.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn now(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer, valid clock id.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

pub fn boottime_ns() -> u64 {
    now(libc::CLOCK_BOOTTIME)
}

/// Converts boot-time nanoseconds to wall-clock time (as of the current offset: a
/// later clock step shifts old timestamps, which is what every agent does).
pub fn boot_to_wall(boot_ns: u64) -> SystemTime {
    let wall = now(libc::CLOCK_REALTIME);
    let boot = boottime_ns();
    let offset = wall.saturating_sub(boot);
    UNIX_EPOCH + Duration::from_nanos(boot_ns.saturating_add(offset))
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
