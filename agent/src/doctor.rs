//! `mcpwatch doctor`: checks this host and says what will not work and why.
//!
//! Each check is independent and explains its consequence; the last one loads and
//! attaches the real sensors (then detaches them), which is the only proof that the
//! agent can run. Any failure makes the command exit non-zero.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
};

use aya::{
    maps::MapType,
    programs::ProgramType,
    sys::{is_map_supported, is_program_supported},
    util::KernelVersion,
};
use serde::Serialize;

use crate::{config::Config, sensor::Sensors, state::cgroup};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    /// The agent runs, but something it would report is missing.
    Warn,
    /// The agent cannot run.
    Fail,
}

#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// What will not work and why, and how to fix it (absent when all is well).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub impact: Option<String>,
}

impl Check {
    fn ok(name: &'static str, detail: impl Into<String>) -> Self {
        Self {
            name,
            status: Status::Ok,
            detail: detail.into(),
            impact: None,
        }
    }

    fn warn(name: &'static str, detail: impl Into<String>, impact: impl Into<String>) -> Self {
        Self {
            name,
            status: Status::Warn,
            detail: detail.into(),
            impact: Some(impact.into()),
        }
    }

    fn fail(name: &'static str, detail: impl Into<String>, impact: impl Into<String>) -> Self {
        Self {
            name,
            status: Status::Fail,
            detail: detail.into(),
            impact: Some(impact.into()),
        }
    }
}

/// A capability the agent uses: number, name, whether it cannot run without it, and
/// what is lost without it. Found by running the agent with each one removed (kernel
/// 6.18; tests/capabilities.rs repeats it); `packaging/` grants exactly these.
pub struct Capability {
    pub bit: u32,
    pub name: &'static str,
    pub required: bool,
    pub without: &'static str,
    /// Only kernels older than this need it.
    pub needed_before: Option<(u8, u8)>,
}

pub const CAPABILITIES: &[Capability] = &[
    Capability {
        bit: 39,
        name: "CAP_BPF",
        required: true,
        without: "BPF maps and programs cannot be created",
        needed_before: None,
    },
    Capability {
        bit: 38,
        name: "CAP_PERFMON",
        required: true,
        without: "tracing programs cannot be loaded or attached to tracepoints",
        needed_before: None,
    },
    Capability {
        bit: 19,
        name: "CAP_SYS_PTRACE",
        required: false,
        without: "/proc/PID/cwd and /proc/PID/exe of processes holding capabilities the agent \
                  lacks (or of other users) are unreadable: cwd is missing on every event and \
                  exe on processes found at start",
        needed_before: None,
    },
    Capability {
        bit: 2,
        name: "CAP_DAC_READ_SEARCH",
        required: false,
        without: "executables in directories other users keep private (a 0700 home) cannot \
                  be read: their SHA-256 is missing",
        needed_before: None,
    },
    Capability {
        bit: 24,
        name: "CAP_SYS_RESOURCE",
        required: false,
        without: "RLIMIT_MEMLOCK cannot be raised: kernels before 5.11 (no memcg accounting \
                  of BPF memory) refuse the ring buffer; not needed from 5.11 on, nor under \
                  systemd, whose unit sets LimitMEMLOCK=infinity",
        needed_before: Some((5, 11)),
    },
];

const CAP_SYS_ADMIN: u32 = 21;

pub fn run_checks(config: &Config) -> Vec<Check> {
    vec![
        kernel(),
        btf(),
        tracefs(),
        bpffs(),
        capabilities(),
        ring_buffer(),
        tracepoint_programs(),
        cgroups(),
        state_dir(&config.state_dir),
        rules(config.rules.as_deref()),
        listen(config),
        sensors(config),
    ]
}

pub fn cannot_run(checks: &[Check]) -> bool {
    checks.iter().any(|c| c.status == Status::Fail)
}

pub fn as_text(checks: &[Check]) -> String {
    let mut out = String::new();
    for c in checks {
        let status = match c.status {
            Status::Ok => "ok",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        };
        out.push_str(&format!("{status:<5} {:<20} {}\n", c.name, c.detail));
        if let Some(impact) = &c.impact {
            out.push_str(&format!("{:<26} -> {impact}\n", ""));
        }
    }
    let fails = checks.iter().filter(|c| c.status == Status::Fail).count();
    let warns = checks.iter().filter(|c| c.status == Status::Warn).count();
    out.push_str(&if fails > 0 {
        format!("verdict: mcpwatch cannot run on this host ({fails} failed, {warns} warnings)\n")
    } else if warns > 0 {
        format!("verdict: mcpwatch can run; {warns} warnings say what it will not see\n")
    } else {
        "verdict: mcpwatch can run with full visibility\n".to_string()
    });
    out
}

pub fn as_json(checks: &[Check]) -> String {
    serde_json::to_string_pretty(&serde_json::json!({
        "can_run": !cannot_run(checks),
        "checks": checks,
    }))
    .expect("checks serialize")
}

fn kernel() -> Check {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    match KernelVersion::current() {
        Ok(v) if v >= KernelVersion::new(5, 8, 0) => Check::ok("kernel", release),
        Ok(_) => Check::fail(
            "kernel",
            release,
            "kernel older than 5.8: no BPF ring buffer and no CAP_BPF; upgrade the kernel",
        ),
        Err(e) => Check::fail("kernel", release, format!("cannot parse the kernel version: {e}")),
    }
}

/// The payload sensor walks kernel structs at offsets read from the kernel's BTF.
fn btf() -> Check {
    use crate::sensor::btf::{file_walk, Btf};
    match Btf::from_sys_fs().and_then(|b| file_walk(&b)) {
        Ok(_) => Check::ok("btf", "/sys/kernel/btf/vmlinux: payload struct offsets found"),
        Err(e) => Check::warn(
            "btf",
            format!("{e:#}"),
            "payload capture is disabled: MCP servers are only suspected from how they were \
             launched, never confirmed from their traffic; use a kernel built with \
             CONFIG_DEBUG_INFO_BTF=y (in Kubernetes, mount the host's /sys/kernel/btf)",
        ),
    }
}

/// Mount points of a file system type, from /proc/self/mountinfo.
fn mounts_of(fstype: &str) -> Vec<PathBuf> {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            (right.split_whitespace().next()? == fstype)
                .then(|| left.split_whitespace().nth(4).map(PathBuf::from))
                .flatten()
        })
        .collect()
}

fn tracefs() -> Check {
    // aya looks in these two places, in this order.
    let candidates = [
        PathBuf::from("/sys/kernel/tracing"),
        PathBuf::from("/sys/kernel/debug/tracing"),
    ];
    let probe = "events/sched/sched_process_exec/id";
    match candidates.iter().find(|d| d.join(probe).exists()) {
        Some(dir) => Check::ok("tracefs", dir.display().to_string()),
        None if mounts_of("tracefs").is_empty() => Check::fail(
            "tracefs",
            "not mounted",
            "tracepoints cannot be attached: mount -t tracefs tracefs /sys/kernel/tracing \
             (in Kubernetes, mount the host's /sys/kernel/tracing)",
        ),
        None => Check::fail(
            "tracefs",
            format!(
                "mounted at {:?} but {probe} is not readable",
                mounts_of("tracefs")
            ),
            "tracepoints cannot be attached: mount tracefs at /sys/kernel/tracing and run \
             the agent as uid 0 (tracefs directories are root-only)",
        ),
    }
}

fn bpffs() -> Check {
    let mounts = mounts_of("bpf");
    if mounts.iter().any(|m| m == Path::new("/sys/fs/bpf")) {
        Check::ok("bpffs", "/sys/fs/bpf")
    } else {
        Check::warn(
            "bpffs",
            "not mounted at /sys/fs/bpf",
            "mcpwatch pins nothing today, so it runs; mount -t bpf bpf /sys/fs/bpf so that \
             bpftool and future pinned maps work",
        )
    }
}

/// Effective capability bits of this process, from /proc/self/status.
pub fn effective_capabilities() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?.trim();
    u64::from_str_radix(hex, 16).ok()
}

fn capabilities() -> Check {
    let Some(eff) = effective_capabilities() else {
        return Check::fail("capabilities", "cannot read /proc/self/status", "unknown");
    };
    let has = |bit: u32| eff & (1u64 << bit) != 0;
    let kernel = KernelVersion::current().ok();
    let relevant = |c: &&Capability| match (c.needed_before, kernel) {
        (Some((major, minor)), Some(k)) => k < KernelVersion::new(major, minor, 0),
        _ => true,
    };
    let missing: Vec<&Capability> = CAPABILITIES
        .iter()
        .filter(relevant)
        .filter(|c| !has(c.bit))
        .collect();
    let held = CAPABILITIES
        .iter()
        .filter(|c| has(c.bit))
        .map(|c| c.name)
        .collect::<Vec<_>>()
        .join(" ");
    let detail = format!("effective {eff:#x}: {held}");
    let required: Vec<&&Capability> = missing.iter().filter(|c| c.required).collect();
    // CAP_SYS_ADMIN stands in for CAP_BPF and CAP_PERFMON (and is the only way before 5.8).
    let admin_covers = |c: &Capability| has(CAP_SYS_ADMIN) && (c.bit == 38 || c.bit == 39);
    let required: Vec<_> = required.into_iter().filter(|c| !admin_covers(c)).collect();
    if !required.is_empty() {
        let why = required
            .iter()
            .map(|c| format!("{}: {}", c.name, c.without))
            .collect::<Vec<_>>()
            .join("; ");
        return Check::fail("capabilities", detail, format!("missing {why}"));
    }
    let optional: Vec<_> = missing.iter().filter(|c| !c.required).collect();
    if optional.is_empty() {
        Check::ok("capabilities", detail)
    } else {
        let why = optional
            .iter()
            .map(|c| format!("without {}, {}", c.name, c.without))
            .collect::<Vec<_>>()
            .join("; ");
        Check::warn("capabilities", detail, why)
    }
}

fn ring_buffer() -> Check {
    match is_map_supported(MapType::RingBuf) {
        Ok(true) => Check::ok("ring buffer", "BPF_MAP_TYPE_RINGBUF can be created"),
        Ok(false) => Check::fail(
            "ring buffer",
            "BPF_MAP_TYPE_RINGBUF not supported",
            "events cannot reach the agent: the kernel needs ring buffers (5.8+)",
        ),
        Err(e) => Check::fail(
            "ring buffer",
            format!("probe failed: {e}"),
            "the bpf() syscall is refused: run as root with CAP_BPF (a seccomp profile may \
             also block bpf(); Kubernetes needs seccompProfile Unconfined)",
        ),
    }
}

fn tracepoint_programs() -> Check {
    match is_program_supported(ProgramType::TracePoint) {
        Ok(true) => Check::ok("tracepoint programs", "BPF_PROG_TYPE_TRACEPOINT loads"),
        Ok(false) => Check::fail(
            "tracepoint programs",
            "BPF_PROG_TYPE_TRACEPOINT refused",
            "no sensor can be loaded: needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN)",
        ),
        Err(e) => Check::fail(
            "tracepoint programs",
            format!("probe failed: {e}"),
            "no sensor can be loaded: needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN)",
        ),
    }
}

fn cgroups() -> Check {
    let v1: Vec<PathBuf> = mounts_of("cgroup");
    match cgroup::cgroup2_mount() {
        Some(m) if v1.is_empty() => Check::ok("cgroups", format!("v2 at {}", m.display())),
        Some(m) => Check::ok(
            "cgroups",
            format!("hybrid: v2 at {}, {} v1 hierarchies", m.display(), v1.len()),
        ),
        None => Check::warn(
            "cgroups",
            format!("no cgroup v2 mount ({} v1 hierarchies)", v1.len()),
            "cgroup ids in events are not resolved to paths; containers are still \
             attributed from /proc/PID/cgroup while processes live",
        ),
    }
}

fn state_dir(dir: &Path) -> Check {
    // Do not create anything: report whether the agent could.
    let existing = dir.ancestors().find(|a| a.exists()).unwrap_or(Path::new("/"));
    let writable = nix::unistd::access(existing, nix::unistd::AccessFlags::W_OK).is_ok();
    match (dir.exists(), writable) {
        (_, true) => Check::ok("state dir", dir.display().to_string()),
        (true, false) => Check::fail(
            "state dir",
            format!("{} is not writable", dir.display()),
            "the agent refuses to start: set state_dir / --state-dir to a writable directory",
        ),
        (false, false) => Check::fail(
            "state dir",
            format!(
                "{} cannot be created ({} is not writable)",
                dir.display(),
                existing.display()
            ),
            "the agent refuses to start: set state_dir / --state-dir to a writable directory",
        ),
    }
}

fn rules(path: Option<&Path>) -> Check {
    let Some(path) = path else {
        return Check::warn(
            "rules",
            "no rule file configured",
            "every MCP server is reported, none is judged: set rules / --rules",
        );
    };
    match std::fs::read_to_string(path) {
        Ok(text) => match serde_saphyr::from_str::<serde_json::Value>(&text) {
            Ok(_) => Check::ok("rules", path.display().to_string()),
            Err(e) => Check::fail(
                "rules",
                format!("{} is not valid YAML", path.display()),
                format!("the agent refuses to start: {e}"),
            ),
        },
        Err(e) => Check::fail(
            "rules",
            format!("{} unreadable", path.display()),
            format!("the agent refuses to start: {e}"),
        ),
    }
}

fn listen(config: &Config) -> Check {
    match TcpListener::bind(config.listen) {
        Ok(_) => Check::ok("listen", config.listen.to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Check::warn(
            "listen",
            format!("{} in use", config.listen),
            "another process (an agent already running?) holds the port: a second agent \
             here would exit; choose another --listen",
        ),
        Err(e) => Check::fail(
            "listen",
            format!("{}: {e}", config.listen),
            "the HTTP listener (/healthz, /readyz, /metrics) cannot start: fix --listen",
        ),
    }
}

fn sensors(config: &Config) -> Check {
    let opts = crate::run::sensor_options(config);
    match Sensors::load(&opts) {
        Ok(s) => Check::ok(
            "sensors",
            format!("{} programs loaded, attached and detached", s.attached.len()),
        ),
        Err(e) => Check::fail(
            "sensors",
            format!("{e:#}"),
            "the agent cannot monitor this host: fix the failures above",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bpf_and_perfmon_are_required() {
        let required: Vec<_> = CAPABILITIES
            .iter()
            .filter(|c| c.required)
            .map(|c| c.name)
            .collect();
        assert_eq!(required, ["CAP_BPF", "CAP_PERFMON"]);
    }

    #[test]
    fn verdict_follows_the_worst_status() {
        let ok = Check::ok("a", "x");
        let warn = Check::warn("b", "y", "z");
        let fail = Check::fail("c", "y", "z");
        assert!(!cannot_run(&[ok.clone(), warn.clone()]));
        assert!(cannot_run(&[ok.clone(), fail.clone()]));
        let text = as_text(&[ok, warn, fail]);
        assert!(text.contains("FAIL  c"), "{text}");
        assert!(text.contains("-> z"), "{text}");
        assert!(text.contains("cannot run"), "{text}");
    }

    #[test]
    fn capability_table_has_the_kernel_numbers() {
        let by_name = |n: &str| CAPABILITIES.iter().find(|c| c.name == n).unwrap().bit;
        // include/uapi/linux/capability.h
        assert_eq!(by_name("CAP_BPF"), 39);
        assert_eq!(by_name("CAP_PERFMON"), 38);
        assert_eq!(by_name("CAP_SYS_PTRACE"), 19);
        assert_eq!(by_name("CAP_DAC_READ_SEARCH"), 2);
        assert_eq!(by_name("CAP_SYS_RESOURCE"), 24);
    }
}
