//! Serializable snapshots of table entries, handed to later stages and sinks (which
//! must not hold the table lock).

use std::sync::Arc;

use serde::Serialize;
use serde_json::value::RawValue;

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

/// An ancestor in a lineage: enough to read a launch chain at a glance. Cheap to
/// clone (shared strings), since every exec event carries one per ancestor.
#[derive(Clone, Debug)]
pub struct AncestorView {
    pub pid: u32,
    pub entity_id: Arc<str>,
    pub comm: Arc<str>,
    pub exe: Option<Arc<str>>,
    pub argv: Arc<[String]>,
    /// The same fields already rendered as JSON (see `RenderedAncestor`).
    rendered: Option<Arc<RawValue>>,
}

#[derive(Serialize)]
struct AncestorFields<'a> {
    pid: u32,
    entity_id: &'a str,
    comm: &'a str,
    exe: &'a Option<Arc<str>>,
    argv: &'a [String],
}

impl AncestorView {
    pub fn of(p: &Process) -> Self {
        p.rendered_ancestor.get_or_build(p, || {
            let mut v = Self {
                pid: p.key.pid,
                entity_id: Arc::from(p.key.to_string()),
                comm: Arc::from(p.comm.as_str()),
                exe: p.exe.clone(),
                argv: p.argv.clone(),
                rendered: None,
            };
            v.rendered = serde_json::value::to_raw_value(&v.fields()).ok().map(Arc::from);
            v
        })
    }

    /// An ancestor not taken from the table (alert fixtures, tests).
    #[cfg(test)]
    pub fn new(pid: u32, entity_id: &str, comm: &str, exe: Option<&str>, argv: &[&str]) -> Self {
        Self {
            pid,
            entity_id: entity_id.into(),
            comm: comm.into(),
            exe: exe.map(Arc::from),
            argv: argv.iter().map(|a| a.to_string()).collect(),
            rendered: None,
        }
    }

    fn fields(&self) -> AncestorFields<'_> {
        AncestorFields {
            pid: self.pid,
            entity_id: &self.entity_id,
            comm: &self.comm,
            exe: &self.exe,
            argv: &self.argv,
        }
    }
}

impl Serialize for AncestorView {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.rendered {
            Some(raw) => raw.serialize(s),
            None => self.fields().serialize(s),
        }
    }
}

/// An ancestor's view and JSON, built once per process instead of once per
/// descendant event.
///
/// Every exec event carries its lineage up to init, and an ancestor's command line can
/// be long (interpreters, JVMs, sandboxes passing JSON in argv): escaping the same
/// ancestors again for each of thousands of execs was half of the agent's CPU in an
/// exec storm (measured: 107 k → 50 k instructions per exec without it). The cache
/// is tied to the argv and comm it was built from, and a cloned entry (a fork's
/// child, which has its own pid) starts empty.
#[derive(Default)]
pub struct RenderedAncestor(std::sync::OnceLock<(usize, usize, AncestorView)>);

impl RenderedAncestor {
    fn get_or_build(&self, p: &Process, build: impl FnOnce() -> AncestorView) -> AncestorView {
        let stamp = (Arc::as_ptr(&p.argv) as *const String as usize, p.comm.len());
        if let Some((argv, comm, view)) = self.0.get() {
            if (*argv, *comm) == stamp {
                return view.clone();
            }
            // Changed since it was cached: build afresh, uncached (does not happen
            // for entries the state stage maintains; kept correct regardless).
            return build();
        }
        let view = build();
        let _ = self.0.set((stamp.0, stamp.1, view.clone()));
        view
    }
}

impl Clone for RenderedAncestor {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl std::fmt::Debug for RenderedAncestor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "rendered"
        } else {
            "not rendered"
        })
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
        assert!(second.rendered.is_some());
        let plain = AncestorView {
            rendered: None,
            ..first.clone()
        };
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
}
