//! Records shared by the kernel programs (`mcpwatch-ebpf`) and the agent.
//!
//! Every record that crosses the ring buffer starts with an [`EventHeader`] whose
//! `kind` is one of the stable numeric ids in [`EventKind`]. Layouts are `#[repr(C)]`
//! and only ever grow at the end, so a newer agent can still decode an older record.
//! Userspace turns these into rich Rust types at the sensor boundary and never passes
//! raw records further down the pipeline.
#![no_std]

pub mod file;
pub mod net;
pub mod payload;
pub mod process;

/// Declares [`EventKind`] and everything derived from it (id lookup, metric label,
/// the list of all kinds) from one table, so that a new kind cannot be decodable yet
/// missing from the drop counters the agent exports (issue 13, defect 3).
macro_rules! event_kinds {
    ($( $(#[$doc:meta])* $variant:ident = $id:literal => $label:literal, )+) => {
        /// Stable ids of the record kinds. They index the per-kind drop counters too.
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum EventKind {
            $( $(#[$doc])* $variant = $id, )+
        }

        /// Number of record kinds.
        pub const EVENT_KIND_COUNT: usize = [$( EventKind::$variant ),+].len();

        // Every id must index the drop counter arrays.
        const _: () = { $( assert!($id < MAX_EVENT_KINDS); )+ };

        impl EventKind {
            /// Every kind, in declaration order, for exporting counters by kind.
            pub const ALL: [EventKind; EVENT_KIND_COUNT] = [$( Self::$variant ),+];

            pub const fn from_u32(v: u32) -> Option<Self> {
                match v {
                    $( $id => Some(Self::$variant), )+
                    _ => None,
                }
            }

            /// Metric label and log name.
            pub const fn name(self) -> &'static str {
                match self {
                    $( Self::$variant => $label, )+
                }
            }
        }
    };
}

event_kinds! {
    Exec = 1 => "exec",
    Fork = 2 => "fork",
    Exit = 3 => "exit",
    /// A task moved to another cgroup (`cgroup_attach_task`), in the process ring.
    CgroupMove = 12 => "cgroup_move",
    /// Payload sensor (MCP detection), in its own ring buffer.
    Payload = 11 => "payload",
    /// Network sensor (`net` module), in its own ring buffer.
    Socket = 4 => "socket",
    Connect = 5 => "connect",
    Accept = 6 => "accept",
    Bind = 7 => "bind",
    Tcp = 8 => "tcp",
    UdpFlow = 9 => "udp_flow",
    Dns = 10 => "dns",
    /// File sensor (`file` module): opens and changes by processes in MCP trees, in
    /// its own ring buffer so that a storm of opens cannot crowd out execs.
    File = 13 => "file",
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
    pub const FILE_EVENTS: &str = "FILE_EVENTS";
    /// Membership of MCP server trees by pid: the tree's root pid, 0 for none.
    pub const MCP_TREE: &str = "MCP_TREE";
    /// File syscalls in flight by thread id.
    pub const PENDING_FILE: &str = "PENDING_FILE";
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain `#[repr(C)]` integer/array records without padding-sensitive invariants.
    unsafe impl aya::Pod for crate::EventHeader {}
}
