//! `mcp-sensitive-file-access`: a process in an MCP server's tree opens, unlinks,
//! renames or changes the mode of a path from `sensitive_files`, unless the server's
//! sanctioned entry allows the path (`files.allow`).

use super::{display_name, server_identity, Finding, TrackedServer};
use crate::{rules::model::CompiledRules, state::files::FileAccessEvent};

/// A file operation by a process in `tree`.
pub struct FileSubject<'a> {
    pub file: &'a FileAccessEvent,
    pub pid: u32,
    pub comm: &'a str,
    pub tree: &'a TrackedServer,
    pub rules: &'a CompiledRules,
}

/// A sensitive path the operation touched.
pub struct SensitiveHit<'a> {
    pub path: &'a str,
    /// The `sensitive_files` pattern it matched, as written.
    pub pattern: &'a str,
}

impl FileSubject<'_> {
    /// The first of its paths that is sensitive and not allowed to its server.
    pub fn sensitive(&self) -> Option<SensitiveHit<'_>> {
        let allow = self.tree.entry(self.rules).and_then(|e| e.files_allow.as_ref());
        self.file.paths().find_map(|path| {
            let pattern = self.rules.sensitive_files.matching(path)?;
            if allow.is_some_and(|a| a.matching(path).is_some()) {
                return None;
            }
            Some(SensitiveHit { path, pattern })
        })
    }
}

/// What the operation did, for the alert's title.
fn verb(f: &FileAccessEvent) -> String {
    match f.op {
        crate::sensor::FileOp::Open => format!("opened for {}", f.mode_label().replace('_', "-")),
        crate::sensor::FileOp::Unlink => "deleted".into(),
        crate::sensor::FileOp::Rename => "renamed".into(),
        crate::sensor::FileOp::Chmod => "changed the mode of".into(),
    }
}

/// The identity of the finding: one per server identity and path.
pub fn identity(tree: &TrackedServer, path: &str) -> String {
    format!("{}->file:{path}", server_identity(&tree.server))
}

pub fn detect(s: &FileSubject, hit: &SensitiveHit) -> Finding {
    let entry = s.tree.entry(s.rules);
    let name = display_name(&s.tree.server);
    let mut f = Finding::new(
        format!("MCP server {name} {} {}", verb(s.file), hit.path),
        format!(
            "process {} (pid {}) in the tree of {} MCP server {name} {} {} ({}); it matches sensitive_files pattern {:?}{}",
            s.comm,
            s.pid,
            if entry.is_some() { "sanctioned" } else { "unsanctioned" },
            verb(s.file),
            hit.path,
            s.file.result,
            hit.pattern,
            match entry {
                Some(e) => format!(" and is not in {}.files.allow", e.label),
                None => String::new(),
            },
        ),
    );
    f.identity = Some(identity(s.tree, hit.path));
    f.entry = entry.map(|e| e.label.clone());
    f
}
