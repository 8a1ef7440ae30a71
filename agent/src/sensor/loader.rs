//! Loading the embedded eBPF object and attaching every program.

use anyhow::{Context as _, Result};
use aya::{
    maps::{Array, MapData, PerCpuArray, RingBuf},
    programs::{RawTracePoint, TracePoint},
    Ebpf, EbpfLoader,
};
use mcpwatch_common::{
    globals, maps,
    payload::{Budget, FileWalk},
    EventKind,
};

use super::btf::{file_walk, Btf};

/// Tracepoints used by the process sensor: (program, category, event).
/// Program names equal the tracepoint names so the table reads as documentation.
const PROCESS_TRACEPOINTS: &[(&str, &str)] = &[
    ("syscalls", "sys_enter_execve"),
    ("syscalls", "sys_enter_execveat"),
    ("syscalls", "sys_exit_execve"),
    ("syscalls", "sys_exit_execveat"),
    ("sched", "sched_process_exec"),
    ("syscalls", "sys_enter_clone"),
    ("syscalls", "sys_enter_clone3"),
    ("syscalls", "sys_exit_clone"),
    ("syscalls", "sys_exit_clone3"),
    ("sched", "sched_process_fork"),
    ("syscalls", "sys_enter_exit_group"),
    ("syscalls", "sys_enter_exit"),
    ("signal", "signal_deliver"),
    ("sched", "sched_process_exit"),
    ("cgroup", "cgroup_attach_task"),
];

/// Raw tracepoint of the payload sensor: one program on every syscall entry,
/// dispatching on the syscall number inside.
const PAYLOAD_RAW_TRACEPOINTS: &[(&str, &str)] = &[("payload_sys_enter", "sys_enter")];

/// Where the payload sensor completes reads: (program, category, event). Classic
/// exit tracepoints of the read family only, so no other syscall pays for them.
const PAYLOAD_EXIT_TRACEPOINTS: &[(&str, &str, &str)] = &[
    ("payload_exit_read", "syscalls", "sys_exit_read"),
    ("payload_exit_readv", "syscalls", "sys_exit_readv"),
    ("payload_exit_recvfrom", "syscalls", "sys_exit_recvfrom"),
    ("payload_exit_recvmsg", "syscalls", "sys_exit_recvmsg"),
];

/// Where the file sensor completes its syscalls: (program, category, event). Their
/// arguments are taken in the payload sensor's raw `sys_enter` hook; only these
/// syscalls pay for the exits.
const FILE_EXIT_TRACEPOINTS: &[(&str, &str, &str)] = &[
    ("file_exit_open", "syscalls", "sys_exit_open"),
    ("file_exit_creat", "syscalls", "sys_exit_creat"),
    ("file_exit_openat", "syscalls", "sys_exit_openat"),
    ("file_exit_openat2", "syscalls", "sys_exit_openat2"),
    ("file_exit_unlink", "syscalls", "sys_exit_unlink"),
    ("file_exit_unlinkat", "syscalls", "sys_exit_unlinkat"),
    ("file_exit_rename", "syscalls", "sys_exit_rename"),
    ("file_exit_renameat", "syscalls", "sys_exit_renameat"),
    ("file_exit_renameat2", "syscalls", "sys_exit_renameat2"),
    ("file_exit_chmod", "syscalls", "sys_exit_chmod"),
    ("file_exit_fchmodat", "syscalls", "sys_exit_fchmodat"),
    ("file_exit_fchmodat2", "syscalls", "sys_exit_fchmodat2"),
];

/// Tracepoints used by the network sensor (`ebpf/src/net.rs` says why each).
const NET_TRACEPOINTS: &[(&str, &str)] = &[
    ("syscalls", "sys_enter_socket"),
    ("syscalls", "sys_exit_socket"),
    ("syscalls", "sys_enter_connect"),
    ("syscalls", "sys_exit_connect"),
    ("syscalls", "sys_enter_bind"),
    ("syscalls", "sys_exit_bind"),
    ("syscalls", "sys_enter_listen"),
    ("syscalls", "sys_enter_accept"),
    ("syscalls", "sys_enter_accept4"),
    ("syscalls", "sys_exit_accept"),
    ("syscalls", "sys_exit_accept4"),
    ("syscalls", "sys_enter_sendto"),
    ("syscalls", "sys_enter_sendmsg"),
    ("syscalls", "sys_enter_sendmmsg"),
    ("syscalls", "sys_enter_recvfrom"),
    ("syscalls", "sys_enter_recvmsg"),
    ("sock", "inet_sock_set_state"),
    ("sock", "sock_send_length"),
    ("sock", "sock_recv_length"),
    ("tcp", "tcp_receive_reset"),
    ("tcp", "tcp_destroy_sock"),
];

#[derive(Clone, Debug)]
pub struct SensorOptions {
    /// Bytes of the process ring buffer (a power-of-two multiple of the page size).
    pub ringbuf_bytes: u32,
    /// Bytes of the payload ring buffer.
    pub payload_ringbuf_bytes: u32,
    /// Capture budget every exec grants: records, examined calls, seconds.
    pub exec_budget: (u32, u32, u64),
    /// Unread bytes past which the kernel wakes the reader early.
    pub wakeup_bytes: u64,
    /// Bytes of the network ring buffer (power of two, separate from the process one).
    pub net_ringbuf_bytes: u32,
    /// Bytes of the file sensor's ring buffer (power of two).
    pub file_ringbuf_bytes: u32,
    /// Nanoseconds between byte reports of long connections and UDP flows.
    pub net_report_ns: u64,
}

/// The loaded programs and the maps the agent reads. Dropping it detaches everything.
pub struct Sensors {
    // Owns the programs and their links: keep alive for as long as we monitor.
    _ebpf: Ebpf,
    pub proc_events: Option<RingBuf<MapData>>,
    pub payload_events: Option<RingBuf<MapData>>,
    pub net_events: Option<RingBuf<MapData>>,
    pub file_events: Option<RingBuf<MapData>>,
    pub drops: PerCpuArray<MapData, u64>,
    /// Capture budgets by pid, which the MCP stage grants and ends.
    pub budgets: Option<Array<MapData, Budget>>,
    /// MCP tree membership by pid, which the MCP stage sets for suspects and servers.
    pub trees: Option<Array<MapData, u32>>,
    pub attached: Vec<String>,
}

impl Sensors {
    pub fn load(opts: &SensorOptions) -> Result<Self> {
        raise_memlock_rlimit();
        let object = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/mcpwatch"));
        let walk = match Btf::from_sys_fs().and_then(|b| file_walk(&b)) {
            Ok(w) => w,
            Err(e) => {
                // Without the offsets the payload programs capture nothing: MCP servers
                // are then only suspected from their launch, never confirmed.
                tracing::warn!(error = %format!("{e:#}"), "payload capture disabled: kernel struct offsets unavailable");
                FileWalk::default()
            }
        };
        let pid_max = pid_max();
        let (records, probes, secs) = opts.exec_budget;
        // The bench's floor configuration: same hooks, programs that return at once.
        let floor = u32::from(std::env::var_os("MCPWATCH_SENSOR_FLOOR").is_some_and(|v| v == "1"));
        if floor == 1 {
            tracing::warn!("MCPWATCH_SENSOR_FLOOR=1: programs attached but inert (bench floor mode)");
        }
        let mut ebpf = EbpfLoader::new()
            .override_global(globals::FLOOR, &floor, true)
            .override_global(globals::FILE_WALK, &walk, true)
            .override_global(globals::EXEC_BUDGET_RECORDS, &records, true)
            .override_global(globals::EXEC_BUDGET_PROBES, &probes, true)
            .override_global(globals::EXEC_BUDGET_SECS, &secs, true)
            .map_max_entries(maps::PROC_EVENTS, opts.ringbuf_bytes)
            .map_max_entries(maps::PAYLOAD_EVENTS, opts.payload_ringbuf_bytes)
            .map_max_entries(maps::CAPTURE_BUDGET, pid_max)
            .map_max_entries("PENDING_READ", pid_max)
            .map_max_entries(maps::MCP_TREE, pid_max)
            .map_max_entries(maps::PENDING_FILE, pid_max)
            .map_max_entries(maps::FILE_EVENTS, opts.file_ringbuf_bytes)
            .override_global(globals::WAKEUP_BYTES, &opts.wakeup_bytes, true)
            .override_global(
                globals::NET_WAKEUP_BYTES,
                &u64::from(opts.net_ringbuf_bytes / 4),
                true,
            )
            .override_global(globals::NET_REPORT_NS, &opts.net_report_ns, true)
            .map_max_entries(maps::PROC_EVENTS, opts.ringbuf_bytes)
            .map_max_entries(maps::NET_EVENTS, opts.net_ringbuf_bytes)
            .load(object)
            .context("loading the eBPF object into the kernel")?;

        let mut attached = Vec::new();
        let same_name = PROCESS_TRACEPOINTS
            .iter()
            .chain(NET_TRACEPOINTS)
            .map(|(category, name)| (*name, *category, *name));
        for (prog_name, category, name) in same_name
            .chain(PAYLOAD_EXIT_TRACEPOINTS.iter().copied())
            .chain(FILE_EXIT_TRACEPOINTS.iter().copied())
        {
            let prog: &mut TracePoint = ebpf
                .program_mut(prog_name)
                .with_context(|| format!("program {prog_name} missing from the eBPF object"))?
                .try_into()
                .with_context(|| format!("program {prog_name} is not a tracepoint"))?;
            prog.load()
                .with_context(|| format!("verifier rejected {prog_name}"))?;
            prog.attach(category, name)
                .with_context(|| format!("attaching {name} to tracepoint {category}:{name}"))?;
            attached.push(format!("tracepoint/{category}/{name}"));
        }

        for (prog_name, hook) in PAYLOAD_RAW_TRACEPOINTS {
            let prog: &mut RawTracePoint = ebpf
                .program_mut(prog_name)
                .with_context(|| format!("program {prog_name} missing from the eBPF object"))?
                .try_into()
                .with_context(|| format!("program {prog_name} is not a raw tracepoint"))?;
            prog.load()
                .with_context(|| format!("verifier rejected {prog_name}"))?;
            prog.attach(hook)
                .with_context(|| format!("attaching {prog_name} to raw tracepoint {hook}"))?;
            attached.push(format!("raw_tracepoint/{hook}"));
        }

        let payload_events = RingBuf::try_from(
            ebpf.take_map(maps::PAYLOAD_EVENTS)
                .context("PAYLOAD_EVENTS map missing")?,
        )?;
        let budgets = Array::try_from(
            ebpf.take_map(maps::CAPTURE_BUDGET)
                .context("CAPTURE_BUDGET map missing")?,
        )?;
        let proc_events = RingBuf::try_from(
            ebpf.take_map(maps::PROC_EVENTS)
                .context("PROC_EVENTS map missing")?,
        )?;
        let net_events = RingBuf::try_from(
            ebpf.take_map(maps::NET_EVENTS)
                .context("NET_EVENTS map missing")?,
        )?;
        let file_events = RingBuf::try_from(
            ebpf.take_map(maps::FILE_EVENTS)
                .context("FILE_EVENTS map missing")?,
        )?;
        let trees = Array::try_from(ebpf.take_map(maps::MCP_TREE).context("MCP_TREE map missing")?)?;
        let drops = PerCpuArray::try_from(ebpf.take_map(maps::DROPS).context("DROPS map missing")?)?;
        Ok(Self {
            _ebpf: ebpf,
            proc_events: Some(proc_events),
            payload_events: Some(payload_events),
            net_events: Some(net_events),
            file_events: Some(file_events),
            drops,
            budgets: Some(budgets),
            trees: Some(trees),
            attached,
        })
    }

    /// Records the kernel could not reserve, by kind, summed over CPUs.
    pub fn kernel_drops(&self) -> Vec<(EventKind, u64)> {
        drops_by_kind(|index| {
            self.drops
                .get(&index, 0)
                .map(|per_cpu| per_cpu.iter().sum())
                .unwrap_or(0)
        })
    }
}

/// One total per kind, read from the drop counter at the kind's id (the index the
/// kernel's `count_drop` writes).
pub(super) fn drops_by_kind(read: impl Fn(u32) -> u64) -> Vec<(EventKind, u64)> {
    EventKind::ALL
        .iter()
        .map(|kind| (*kind, read(*kind as u32)))
        .collect()
}

/// Per-pid arrays must cover every possible pid.
fn pid_max() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(4_194_304)
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; newer ones use memcg. Raising
/// it is harmless where it is not needed and may be refused without CAP_SYS_RESOURCE.
fn raise_memlock_rlimit() {
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain syscall with a valid pointer.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) } != 0 {
        tracing::debug!("could not raise RLIMIT_MEMLOCK (fine on kernels with memcg accounting)");
    }
}
