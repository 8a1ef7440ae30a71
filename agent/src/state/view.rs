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

pub use super::ancestor::AncestorView;

impl AncestorView {
    /// The entry as an ancestor, from its cache when the cache still matches it.
    pub fn of(p: &Process) -> Self {
        p.rendered_ancestor.get_or_build(
            |v| v.pid == p.key.pid && Arc::ptr_eq(&v.argv, &p.argv) && *v.comm == *p.comm && v.exe == p.exe,
            || {
                AncestorView::rendered(
                    p.key.pid,
                    Arc::from(p.key.to_string()),
                    Arc::from(p.comm.as_str()),
                    p.exe.clone(),
                    p.argv.clone(),
                )
            },
        )
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::process_table::{Origin, ProcKey};

    fn process(pid: u32, argv: &[&str]) -> Process {
        let mut p = Process::bare(ProcKey { pid, start_ns: 7 }, Origin::Kernel);
        p.comm = "sh".into();
        p.exe = Some(Arc::from("/usr/bin/dash"));
        p.argv = argv.iter().map(|a| a.to_string()).collect();
        p
    }

    fn json(v: &AncestorView) -> serde_json::Value {
        serde_json::to_value(v).unwrap()
    }

    #[test]
    fn cached_rendering_is_the_plain_rendering() {
        let p = process(10, &["/bin/sh", "-c", "echo \"quoted\" \\ done"]);
        let first = AncestorView::of(&p);
        let second = AncestorView::of(&p);
        assert!(second.is_rendered());
        let plain = AncestorView::new(
            first.pid,
            &first.entity_id,
            &first.comm,
            first.exe.as_deref(),
            &first.argv.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        assert_eq!(json(&first), json(&plain));
        assert_eq!(json(&second), json(&plain));
        assert_eq!(json(&plain)["argv"][2], "echo \"quoted\" \\ done");
    }

    #[test]
    fn a_forked_child_and_a_new_image_render_afresh() {
        let mut p = process(10, &["parent"]);
        let _ = AncestorView::of(&p);
        let mut child = p.clone();
        child.key.pid = 11;
        assert_eq!(json(&AncestorView::of(&child))["pid"], 11);
        // Same entry, new argv (as after an exec that kept the cache): not the stale JSON.
        p.argv = vec!["after-exec".to_string()].into();
        assert_eq!(json(&AncestorView::of(&p))["argv"][0], "after-exec");
    }

    #[test]
    fn a_changed_name_or_executable_is_not_served_from_the_cache() {
        let mut p = process(10, &["python3", "server.py"]);
        let _ = AncestorView::of(&p);
        // Same argv (the same allocation), a new name of the same length: the old
        // key (argv pointer + comm length) served the stale name here.
        p.comm = "py".into();
        assert_eq!(json(&AncestorView::of(&p))["comm"], "py");
        // The executable resolved after the first rendering.
        p.exe = Some(Arc::from("/usr/bin/python3.12"));
        assert_eq!(json(&AncestorView::of(&p))["exe"], "/usr/bin/python3.12");
    }
}
