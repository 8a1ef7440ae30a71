//! `mcp-tool-definitions-changed`: a server's tools differ from those its identity
//! was first seen with (a rug pull: same server, same tool names, new descriptions or
//! schemas), or from the digest its sanctioned entry pins (`tools_sha256:`). The
//! engine keeps the baseline (`../tool_baseline.rs`); this file compares.

use super::{display_name, Finding, ServerSubject};
use crate::{mcp::tools::ToolSurface, rules::tool_baseline::ToolDigests};

/// Tools added, removed and changed (same name, another digest), by name.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ToolChange {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
}

impl ToolChange {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }

    fn describe(&self) -> String {
        let list = |what: &str, v: &[String]| (!v.is_empty()).then(|| format!("{what}: {}", v.join(", ")));
        [
            list("added", &self.added),
            list("removed", &self.removed),
            list("changed", &self.changed),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join("; ")
    }
}

pub fn digests(surface: &ToolSurface) -> ToolDigests {
    surface
        .tools
        .iter()
        .map(|t| (t.name.clone(), t.sha256.clone()))
        .collect()
}

pub fn diff(before: &ToolDigests, now: &ToolDigests) -> ToolChange {
    let mut c = ToolChange::default();
    for (name, sha) in now {
        match before.get(name) {
            None => c.added.push(name.clone()),
            Some(old) if old != sha => c.changed.push(name.clone()),
            Some(_) => {}
        }
    }
    c.removed = before.keys().filter(|n| !now.contains_key(*n)).cloned().collect();
    c
}

/// The finding for a server whose surface is `surface`, given what its identity's
/// baseline held before (`None`: first seen).
pub fn detect(s: &ServerSubject, surface: &ToolSurface, before: Option<&ToolDigests>) -> Option<Finding> {
    let server = s.server();
    let change = before.map(|b| diff(b, &digests(surface)));
    let pin = s
        .tracked
        .entry(s.rules)
        .and_then(|e| Some((e, e.tools_sha256.as_deref()?)))
        .filter(|(_, pin)| !pin.eq_ignore_ascii_case(&surface.sha256));
    let changed = change.as_ref().filter(|c| !c.is_empty());
    if pin.is_none() && changed.is_none() {
        return None;
    }
    let mut parts = Vec::new();
    if let Some((entry, pin)) = pin {
        parts.push(format!(
            "its tool set {} differs from {pin} pinned by sanctioned entry {}",
            surface.sha256, entry.label
        ));
    }
    if let Some(c) = changed {
        parts.push(format!("since its identity was last seen: {}", c.describe()));
    }
    let mut f = Finding::new(
        format!("MCP server {} changed its tool definitions", display_name(server)),
        parts.join("; "),
    );
    // One finding per server and tool set.
    f.identity = Some(format!("{}#tools:{}", server.server_uid, surface.sha256));
    Some(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(pairs: &[(&str, &str)]) -> ToolDigests {
        pairs
            .iter()
            .map(|(n, s)| (n.to_string(), s.to_string()))
            .collect()
    }

    #[test]
    fn diff_names_added_removed_and_changed_tools() {
        let before = d(&[("read", "1"), ("write", "2"), ("list", "3")]);
        let now = d(&[("read", "1"), ("write", "9"), ("delete", "4")]);
        let c = diff(&before, &now);
        assert_eq!(
            c,
            ToolChange {
                added: vec!["delete".into()],
                removed: vec!["list".into()],
                changed: vec!["write".into()],
            }
        );
        assert_eq!(c.describe(), "added: delete; removed: list; changed: write");
        assert!(diff(&now, &now).is_empty());
    }
}
