//! Process sensor records (`mcpwatch_common::process`) → typed events.

use mcpwatch_common::{
    process::{
        CgroupMoveRecord, ExecRecord, ExitRecord, ForkRecord, ARGS_MAX, EXEC_ARGS_FAULT, EXEC_ARGS_MISSING,
        EXEC_ARGS_TRUNCATED, EXEC_FIXED_LEN, EXIT_CODE_UNKNOWN, FILENAME_MAX,
    },
    EventKind,
};

use serde::{Deserialize, Serialize};

use super::record::{c_str, read_prefix, read_record, DecodeError};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecEvent {
    pub ts_ns: u64,
    pub pid: u32,
    pub tid: u32,
    pub old_tid: u32,
    pub uid: u32,
    pub gid: u32,
    pub cgroup_id: u64,
    pub comm: String,
    pub filename: String,
    pub argv: Vec<String>,
    /// argv was cut by the kernel bounds (see `mcpwatch_common::process`).
    pub argv_truncated: bool,
    /// argv is missing or incomplete: the exec began before the sensor, or user memory faulted.
    pub argv_incomplete: bool,
    pub envc: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForkEvent {
    pub ts_ns: u64,
    pub parent_pid: u32,
    pub child_pid: u32,
    pub uid: u32,
    pub gid: u32,
    pub cgroup_id: u64,
    pub comm: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitEvent {
    pub ts_ns: u64,
    pub pid: u32,
    /// `wait(2)`-style status, `None` when the kernel saw neither exit call nor signal.
    pub status: Option<i32>,
    pub comm: String,
}

/// A task moved to another cgroup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupMoveEvent {
    pub ts_ns: u64,
    /// The moved task's id (its process id when it is the thread group leader).
    pub pid: u32,
}

/// A process sensor event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProcessRecord {
    Exec(ExecEvent),
    Fork(ForkEvent),
    Exit(ExitEvent),
    CgroupMove(CgroupMoveEvent),
}

/// NUL-separated arguments → vector. A final argument without NUL was cut.
fn split_args(bytes: &[u8], argc: u32) -> Vec<String> {
    bytes
        .split(|&b| b == 0)
        .take(argc as usize)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// Decodes a record whose header says it is one of the process kinds.
pub fn decode_process(kind: EventKind, bytes: &[u8]) -> Result<ProcessRecord, DecodeError> {
    match kind {
        EventKind::Exec => {
            let r: ExecRecord = read_prefix(bytes, kind, EXEC_FIXED_LEN)?;
            let args_len = (r.argv.args_len as usize).min(ARGS_MAX);
            let filename_len = (r.filename_len as usize).min(FILENAME_MAX);
            let flags = r.argv.flags;
            Ok(ProcessRecord::Exec(ExecEvent {
                ts_ns: r.header.ts_ns,
                pid: r.header.pid,
                tid: r.header.tid,
                old_tid: r.old_tid,
                uid: r.uid,
                gid: r.gid,
                cgroup_id: r.cgroup_id,
                comm: c_str(&r.comm),
                filename: c_str(&r.filename[..filename_len]),
                argv: split_args(&r.argv.args[..args_len], r.argv.argc),
                argv_truncated: flags & EXEC_ARGS_TRUNCATED != 0,
                argv_incomplete: flags & (EXEC_ARGS_FAULT | EXEC_ARGS_MISSING) != 0,
                envc: r.argv.envc,
            }))
        }
        EventKind::Fork => {
            let r: ForkRecord = read_record(bytes, kind)?;
            Ok(ProcessRecord::Fork(ForkEvent {
                ts_ns: r.header.ts_ns,
                parent_pid: r.header.pid,
                child_pid: r.child_pid,
                uid: r.uid,
                gid: r.gid,
                cgroup_id: r.cgroup_id,
                comm: c_str(&r.comm),
            }))
        }
        EventKind::Exit => {
            let r: ExitRecord = read_record(bytes, kind)?;
            Ok(ProcessRecord::Exit(ExitEvent {
                ts_ns: r.header.ts_ns,
                pid: r.header.pid,
                status: (r.status != EXIT_CODE_UNKNOWN).then_some(r.status),
                comm: c_str(&r.comm),
            }))
        }
        EventKind::CgroupMove => {
            let r: CgroupMoveRecord = read_record(bytes, kind)?;
            Ok(ProcessRecord::CgroupMove(CgroupMoveEvent {
                ts_ns: r.header.ts_ns,
                pid: r.moved_pid,
            }))
        }
        other => Err(DecodeError::UnknownKind(other as u32)),
    }
}
