//! File sensor events with their process and an absolute path: `file_access`.
//!
//! A relative path is resolved against the directory it was relative to, read from
//! `/proc/PID/cwd` or `/proc/PID/fd/DIRFD` while the process lives (the table's
//! working directory, from exec, is the fallback). When neither is known the path
//! stays as the process passed it and `path_resolved` says so: a rule then matches
//! it as relative, and an analyst sees why.

use std::{path::Path, sync::Arc};

use serde::Serialize;

use super::{net_view::ProcessRef, process_table::ProcessTable};
use crate::{
    clock,
    sensor::{AccessMode, FileEvent, FileOp},
};

/// `file_access`: one operation by a process in an MCP server's tree.
#[derive(Clone, Debug, Serialize)]
pub struct FileAccessEvent {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub time: String,
    /// Boot-time nanoseconds (chains are timed on it; not serialized).
    #[serde(skip)]
    pub ts_ns: u64,
    pub op: FileOp,
    /// Absolute when `path_resolved`.
    pub path: Arc<str>,
    pub path_resolved: bool,
    /// A rename's target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<Arc<str>>,
    /// Opens: what the file was opened for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access: Option<AccessMode>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub created: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    /// `chmod`: the new mode; opens that create: the mode asked for (octal).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// `ok` or the errno name (`ENOENT`).
    pub result: Arc<str>,
    /// The fd an open returned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fd: Option<i32>,
    /// The path was longer than the kernel copies (512 bytes) and is cut.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub path_truncated: bool,
    pub process: Option<ProcessRef>,
    /// The process's pid (also when it has left the table).
    #[serde(skip)]
    pub pid: u32,
    /// Pid of the process whose tree this is (the suspected or confirmed server).
    pub tree_root: u32,
}

impl FileAccessEvent {
    /// The paths the operation touched: the path and a rename's target.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        std::iter::once(&*self.path).chain(self.target.as_deref())
    }

    pub fn succeeded(&self) -> bool {
        &*self.result == "ok"
    }

    /// `read`, `write`, `read_write`, `path` for opens; the operation otherwise.
    pub fn mode_label(&self) -> &'static str {
        match self.access {
            Some(AccessMode::Read) => "read",
            Some(AccessMode::Write) => "write",
            Some(AccessMode::ReadWrite) => "read_write",
            Some(AccessMode::Path) => "path",
            None => self.op.name(),
        }
    }
}

fn errno_name(ret: i64) -> Arc<str> {
    if ret >= 0 {
        return Arc::from("ok");
    }
    let e = i32::try_from(-ret).unwrap_or(i32::MAX);
    let name = format!("{:?}", nix::errno::Errno::from_raw(e));
    Arc::from(if name == "UnknownErrno" {
        format!("errno {e}")
    } else {
        name
    })
}

/// Joins `path` to the directory it is relative to, and normalises `.` and `..`
/// lexically (the kernel resolved symlinks; this is what the process asked for).
fn resolve(
    path: &str,
    dirfd: Option<i32>,
    pid: u32,
    fallback_cwd: Option<&str>,
    read_proc: bool,
) -> Option<String> {
    if path.starts_with('/') {
        return Some(normalise(path));
    }
    let base = if read_proc {
        let link = match dirfd {
            None => format!("/proc/{pid}/cwd"),
            Some(fd) => format!("/proc/{pid}/fd/{fd}"),
        };
        std::fs::read_link(link)
            .ok()
            .and_then(|p| p.to_str().map(str::to_string))
    } else {
        None
    };
    let base = base.or_else(|| {
        dirfd
            .is_none()
            .then(|| fallback_cwd.map(str::to_string))
            .flatten()
    })?;
    if !base.starts_with('/') {
        return None;
    }
    Some(normalise(&Path::new(&base).join(path).to_string_lossy()))
}

fn normalise(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

/// The event for one file record. `read_proc`: the pid is live on this host.
pub fn file_access(table: &ProcessTable, e: FileEvent, read_proc: bool) -> FileAccessEvent {
    let process = table.latest_key(e.pid).and_then(|k| table.get(&k));
    let cwd = process.and_then(|p| p.cwd.as_deref());
    let resolved = resolve(&e.path, e.dirfd, e.pid, cwd, read_proc);
    let target = e
        .target
        .as_deref()
        .map(|t| resolve(t, e.target_dirfd, e.pid, cwd, read_proc).unwrap_or_else(|| t.to_string()));
    let access = e.access();
    let mode = match e.op {
        FileOp::Chmod => Some(format!("{:04o}", e.mode & 0o7777)),
        FileOp::Open if e.creates() => Some(format!("{:04o}", e.mode & 0o7777)),
        _ => None,
    };
    FileAccessEvent {
        kind: "file_access",
        time: clock::rfc3339(clock::boot_to_wall(e.ts_ns)),
        ts_ns: e.ts_ns,
        op: e.op,
        path_resolved: resolved.is_some(),
        path: Arc::from(resolved.unwrap_or_else(|| e.path.clone())),
        target: target.map(Arc::from),
        access,
        created: e.creates(),
        truncated: e.truncates(),
        mode,
        result: errno_name(e.ret),
        fd: (e.op == FileOp::Open && e.ret >= 0).then_some(e.ret as i32),
        path_truncated: e.truncated,
        process: process.map(ProcessRef::of),
        pid: e.pid,
        tree_root: e.tree_root,
    }
}

#[cfg(test)]
pub mod fixtures {
    use std::sync::Arc;

    use super::*;

    /// A file event of `op` with `result`, from a Node server's tree.
    pub fn event(op: FileOp, result: &str) -> FileAccessEvent {
        FileAccessEvent {
            kind: "file_access",
            time: "2026-12-07T10:00:00.123Z".into(),
            ts_ns: 1,
            op,
            path: Arc::from("/home/dev/.aws/credentials"),
            path_resolved: true,
            target: (op == FileOp::Rename).then(|| Arc::from("/tmp/x")),
            access: (op == FileOp::Open).then_some(AccessMode::Read),
            created: false,
            truncated: false,
            mode: (op == FileOp::Chmod).then(|| "0644".to_string()),
            result: Arc::from(result),
            fd: (op == FileOp::Open && result == "ok").then_some(5),
            path_truncated: false,
            process: Some(ProcessRef {
                pid: 42,
                entity_id: "42:1000".into(),
                exe: Some(Arc::from("/usr/bin/node")),
                comm: "node".into(),
                argv: Arc::from(vec!["node".to_string(), "server.js".to_string()]),
            }),
            pid: 42,
            tree_root: 42,
        }
    }

    pub fn read() -> FileAccessEvent {
        event(FileOp::Open, "ok")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_are_joined_and_normalised() {
        assert_eq!(normalise("/a/./b/../c//d"), "/a/c/d");
        assert_eq!(normalise("/.."), "/");
        assert_eq!(
            resolve("../.ssh/id_rsa", None, 1, Some("/root/work"), false).as_deref(),
            Some("/root/.ssh/id_rsa")
        );
        // No directory known: unresolved, never guessed.
        assert_eq!(resolve("x", Some(5), 1, Some("/root"), false), None);
        assert_eq!(
            resolve("/etc/shadow", Some(5), 1, None, false).as_deref(),
            Some("/etc/shadow")
        );
    }

    #[test]
    fn a_live_process_resolves_against_its_own_cwd() {
        let me = std::process::id();
        let cwd = std::env::current_dir().unwrap();
        let got = resolve("some/file", None, me, Some("/nowhere"), true).unwrap();
        assert_eq!(got, normalise(&cwd.join("some/file").to_string_lossy()));
    }

    #[test]
    fn results_are_errno_names() {
        assert_eq!(&*errno_name(3), "ok");
        assert_eq!(&*errno_name(-2), "ENOENT");
        assert_eq!(&*errno_name(-13), "EACCES");
    }
}
