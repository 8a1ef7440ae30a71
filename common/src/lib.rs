//! Records shared by the kernel programs (`mcpwatch-ebpf`) and the agent.
//!
//! Every record that crosses the ring buffer starts with an [`EventHeader`] whose
//! `kind` is one of the stable numeric ids in [`EventKind`]. Layouts are `#[repr(C)]`
//! and only ever grow at the end, so a newer agent can still decode an older record.
//! Userspace turns these into rich Rust types at the sensor boundary and never passes
//! raw records further down the pipeline.
#![no_std]

pub mod net;
pub mod payload;
pub mod process;

/// Stable ids of the record kinds. They index the per-kind drop counters too.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Exec = 1,
    Fork = 2,
    Exit = 3,
    /// Payload sensor (MCP detection), in its own ring buffer.
    Payload = 11,
    /// Network sensor (`net` module), in its own ring buffer.
    Socket = 4,
    Connect = 5,
    Accept = 6,
    Bind = 7,
    Tcp = 8,
    UdpFlow = 9,
    Dns = 10,
    /// A task moved to another cgroup (`cgroup_attach_task`), in the process ring.
    CgroupMove = 12,
}

impl EventKind {
    pub const fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::Exec),
            2 => Some(Self::Fork),
            3 => Some(Self::Exit),
            4 => Some(Self::Socket),
            5 => Some(Self::Connect),
            6 => Some(Self::Accept),
            7 => Some(Self::Bind),
            8 => Some(Self::Tcp),
            9 => Some(Self::UdpFlow),
            10 => Some(Self::Dns),
            11 => Some(Self::Payload),
            12 => Some(Self::CgroupMove),
            _ => None,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Self::Exec => "exec",
            Self::Fork => "fork",
            Self::Exit => "exit",
            Self::Payload => "payload",
            Self::CgroupMove => "cgroup_move",
            Self::Socket => "socket",
            Self::Connect => "connect",
            Self::Accept => "accept",
            Self::Bind => "bind",
            Self::Tcp => "tcp",
            Self::UdpFlow => "udp_flow",
            Self::Dns => "dns",
        }
    }

    /// Every kind, for exporting counters by kind.
    pub const ALL: [EventKind; 11] = [
        Self::Exec,
        Self::Fork,
        Self::Exit,
        Self::Socket,
        Self::Connect,
        Self::Accept,
        Self::Bind,
        Self::Tcp,
        Self::UdpFlow,
        Self::Dns,
        Self::Payload,
    ];
}

/// Size of the per-kind counter arrays (drop counters). Kind ids must stay below it.
pub const MAX_EVENT_KINDS: u32 = 16;

/// Common prefix of every ring-buffer record.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EventHeader {
    /// An [`EventKind`] id.
    pub kind: u32,
    /// Thread id (kernel `pid`) of the task that produced the record.
    pub tid: u32,
    /// Process id (kernel `tgid`).
    pub pid: u32,
    pub _pad: u32,
    /// `bpf_ktime_get_boot_ns()`: CLOCK_BOOTTIME nanoseconds.
    pub ts_ns: u64,
}

/// Kernel→userspace tunables written into the eBPF object's globals before load.
pub mod globals {
    /// Once the ring buffer holds more than this many unread bytes, producers force a
    /// wake-up of the reader; below it they submit with `BPF_RB_NO_WAKEUP` and the agent
    /// polls on a timer. Per-event wake-ups cost microseconds per event on this kernel.
    pub const WAKEUP_BYTES: &str = "WAKEUP_BYTES";
    /// Non-zero: every program returns at once (the bench's floor configuration).
    pub const FLOOR: &str = "FLOOR";
    /// `payload::FileWalk`: kernel struct offsets from BTF.
    pub const FILE_WALK: &str = "FILE_WALK";
    /// Capture budget granted at exec: records, probes, and seconds.
    pub const EXEC_BUDGET_RECORDS: &str = "EXEC_BUDGET_RECORDS";
    pub const EXEC_BUDGET_PROBES: &str = "EXEC_BUDGET_PROBES";
    pub const EXEC_BUDGET_SECS: &str = "EXEC_BUDGET_SECS";
    /// Same threshold for the network ring buffer.
    pub const NET_WAKEUP_BYTES: &str = "NET_WAKEUP_BYTES";
    /// Nanoseconds between byte reports of a long TCP connection or UDP flow.
    pub const NET_REPORT_NS: &str = "NET_REPORT_NS";
}

/// Map names, shared so that a rename breaks the build rather than the load.
pub mod maps {
    pub const PROC_EVENTS: &str = "PROC_EVENTS";
    pub const DROPS: &str = "DROPS";
    pub const PAYLOAD_EVENTS: &str = "PAYLOAD_EVENTS";
    pub const CAPTURE_BUDGET: &str = "CAPTURE_BUDGET";
    pub const NET_EVENTS: &str = "NET_EVENTS";
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain `#[repr(C)]` integer/array records without padding-sensitive invariants.
    unsafe impl aya::Pod for crate::EventHeader {}
}
