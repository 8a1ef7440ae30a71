//! Serializable snapshots of table entries, handed to later stages and sinks (which
//! must not hold the table lock).

use std::sync::Arc;

use serde::Serialize;

use super::{
    cgroup::ContainerInfo,
    process_table::{Origin, Process},
};
use crate::clock;

#[derive(Clone, Debug, Serialize)]
pub struct ProcessView {
    pub pid: u32,
    pub ppid: u32,
    /// Stable identity of this process on this host: `pid:start_ns`.
    pub entity_id: String,
    pub start_time: String,
    pub comm: String,
    pub exe: Option<Arc<str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filename: Option<Arc<str>>,
    /// Hex SHA-256 of `exe`; `null` until hashed, or if it could not be read.
    pub sha256: Option<Arc<str>>,
    pub argv: Arc<[String]>,
    pub argv_truncated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub envc: Option<u32>,
    pub cwd: Option<Arc<str>>,
    pub uid: u32,
    pub gid: u32,
    pub user: Option<Arc<str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup_id: Option<u64>,
    pub cgroup: Option<Arc<str>>,
    pub container: Option<Arc<ContainerInfo>>,
    /// When the current image was exec'd (absent for seeded processes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exec_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_signal: Option<i32>,
    pub origin: Origin,
}

impl ProcessView {
    pub fn of(p: &Process, sha256: Option<Arc<str>>) -> Self {
        let (exit_code, exit_signal) = match p.exit_status {
            Some(s) if s & 0x7f == 0 => (Some((s >> 8) & 0xff), None),
            Some(s) => (None, Some(s & 0x7f)),
            None => (None, None),
        };
        Self {
            pid: p.key.pid,
            ppid: p.ppid,
            entity_id: p.key.to_string(),
            start_time: clock::rfc3339(clock::boot_to_wall(p.key.start_ns)),
            comm: p.comm.clone(),
            exe: p.exe.clone(),
            filename: p.filename.clone().filter(|f| Some(f) != p.exe.as_ref()),
            sha256,
            argv: p.argv.clone(),
            argv_truncated: p.argv_truncated,
            envc: p.envc,
            cwd: p.cwd.clone(),
            uid: p.uid,
            gid: p.gid,
            user: p.user.clone(),
            cgroup_id: p.cgroup_id,
            cgroup: p.cgroup.clone(),
            container: p.container.clone(),
            exec_time: p.exec_ns.map(|t| clock::rfc3339(clock::boot_to_wall(t))),
            exit_time: p.exit_ns.map(|t| clock::rfc3339(clock::boot_to_wall(t))),
            exit_code,
            exit_signal,
            origin: p.origin,
        }
    }
}

/// An ancestor in a lineage: enough to read a launch chain at a glance.
#[derive(Clone, Debug, Serialize)]
pub struct AncestorView {
    pub pid: u32,
    pub entity_id: String,
    pub comm: String,
    pub exe: Option<Arc<str>>,
    pub argv: Arc<[String]>,
}

impl AncestorView {
    pub fn of(p: &Process) -> Self {
        Self {
            pid: p.key.pid,
            entity_id: p.key.to_string(),
            comm: p.comm.clone(),
            exe: p.exe.clone(),
            argv: p.argv.clone(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessAction {
    Exec,
    Fork,
    Exit,
}

/// A process lifecycle event, enriched from the table.
#[derive(Clone, Debug, Serialize)]
pub struct ProcessEvent {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub time: String,
    pub action: ProcessAction,
    pub process: ProcessView,
    /// Parent first, up to init (exec events; empty on fork and exit).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub lineage: Vec<AncestorView>,
}
