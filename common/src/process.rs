//! Process lifecycle records: exec, fork, exit.

use crate::EventHeader;

/// Longest argv the kernel copies, in bytes (NUL-separated arguments).
pub const ARGS_MAX: usize = 4096;
/// Most arguments the kernel copies; further ones set [`EXEC_ARGS_TRUNCATED`].
pub const ARGC_MAX: u32 = 32;
/// Longest executable file name copied from `sched_process_exec`.
pub const FILENAME_MAX: usize = 256;
/// Environment entries are only counted (a tiny environment hints at an SDK-spawned
/// MCP server); counting stops here.
pub const ENVC_MAX: u32 = 128;
pub const TASK_COMM_LEN: usize = 16;

/// argv was cut: more than [`ARGC_MAX`] arguments or more than [`ARGS_MAX`] bytes.
pub const EXEC_ARGS_TRUNCATED: u32 = 1 << 0;
/// The file name was longer than [`FILENAME_MAX`].
pub const EXEC_FILENAME_TRUNCATED: u32 = 1 << 1;
/// The environment had [`ENVC_MAX`] entries or more.
pub const EXEC_ENV_TRUNCATED: u32 = 1 << 2;
/// argv could not be read from user memory (fault); `args` holds what was read.
pub const EXEC_ARGS_FAULT: u32 = 1 << 3;
/// No argv was captured at syscall entry (e.g. exec started before the agent).
pub const EXEC_ARGS_MISSING: u32 = 1 << 4;

/// argv captured at `execve`/`execveat` entry, held until the exec succeeds.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ExecArgs {
    /// Arguments captured.
    pub argc: u32,
    /// Bytes of `args` in use (each argument NUL-terminated).
    pub args_len: u32,
    /// `EXEC_*` flags.
    pub flags: u32,
    /// Environment entries, counted up to [`ENVC_MAX`].
    pub envc: u32,
    pub args: [u8; ARGS_MAX],
}

/// A successful exec (`sched_process_exec`), with the argv captured at syscall entry.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ExecRecord {
    pub header: EventHeader,
    pub uid: u32,
    pub gid: u32,
    pub cgroup_id: u64,
    /// Thread id before the exec (differs from `header.pid` when a non-leader thread execs).
    pub old_tid: u32,
    pub filename_len: u32,
    pub comm: [u8; TASK_COMM_LEN],
    pub filename: [u8; FILENAME_MAX],
    pub argv: ExecArgs,
}

/// Bytes of an [`ExecRecord`] before the argv bytes: the kernel sends this much plus
/// `argv.args_len`, not the whole (mostly empty) record.
pub const EXEC_FIXED_LEN: usize =
    core::mem::offset_of!(ExecRecord, argv) + core::mem::offset_of!(ExecArgs, args);

/// A new process (not a thread): `sched_process_fork` without `CLONE_THREAD`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ForkRecord {
    /// `pid`/`tid` are the parent's.
    pub header: EventHeader,
    pub child_pid: u32,
    pub uid: u32,
    pub gid: u32,
    pub _pad: u32,
    pub cgroup_id: u64,
    pub comm: [u8; TASK_COMM_LEN],
}

/// Exit status unknown (no exit syscall nor fatal signal was seen).
pub const EXIT_CODE_UNKNOWN: i32 = -1;

/// The last thread of a process exited (`sched_process_exit` with `group_dead`).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ExitRecord {
    pub header: EventHeader,
    /// `wait(2)`-style status: `code << 8` for a normal exit, the signal number for a
    /// fatal signal, or [`EXIT_CODE_UNKNOWN`].
    pub status: i32,
    pub _pad: u32,
    pub comm: [u8; TASK_COMM_LEN],
}

/// A task was moved into another cgroup (`cgroup:cgroup_attach_task`): the agent
/// re-reads its membership then, instead of at every exec. Rare (container starts,
/// `systemd-run`, `cgexec`), one record per task and hierarchy.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct CgroupMoveRecord {
    /// `pid`/`tid` are the mover's (the process writing `cgroup.procs`).
    pub header: EventHeader,
    /// The moved task (thread id; the leader's equals its process id).
    pub moved_pid: u32,
    /// Hierarchy id of the destination (v1 controller or the v2 root).
    pub dst_root: i32,
    pub dst_id: u64,
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: `#[repr(C)]` records of integers and byte arrays; any bit pattern is valid.
    unsafe impl aya::Pod for super::ExecArgs {}
    unsafe impl aya::Pod for super::ExecRecord {}
    unsafe impl aya::Pod for super::ForkRecord {}
    unsafe impl aya::Pod for super::ExitRecord {}
    unsafe impl aya::Pod for super::CgroupMoveRecord {}
}
