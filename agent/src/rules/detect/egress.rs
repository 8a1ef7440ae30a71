//! `mcp-unsanctioned-egress`: a process in an MCP server's tree reaching a destination
//! its egress policy (the sanctioned entry's own, else the file's default) does not
//! allow or denies.

use super::{display_name, ConnectionSubject, Finding};
use crate::rules::netlist::Verdict;

/// Why the connection's egress policy does not allow it, if it does not.
pub fn outside_policy(c: &ConnectionSubject) -> Option<String> {
    match c
        .policy()
        .judge(Some(c.remote.ip), Some(c.remote.port), c.domain())
    {
        Verdict::Denied(w) => Some(w.to_string()),
        Verdict::NotAllowed => Some("not in the allowed destinations".into()),
        Verdict::Allowed(_) => None,
    }
}

pub fn detect(c: &ConnectionSubject) -> Option<Finding> {
    let tree = c.tree?;
    let why = outside_policy(c)?;
    let entry = c.entry();
    let policy = entry
        .filter(|e| e.egress.is_some())
        .map_or("egress (default)".to_string(), |e| format!("{}.egress", e.label));
    let dest = c.destination();
    let mut f = Finding::new(
        format!("MCP server {} egress to {dest}", display_name(&tree.server)),
        format!(
            "process {} (pid {}) in the tree of {} MCP server {} reached {dest} ({}): {why}; policy: {policy}",
            c.comm,
            c.pid,
            if entry.is_some() { "sanctioned" } else { "unsanctioned" },
            display_name(&tree.server),
            c.net.result,
        ),
    );
    f.entry = entry.map(|e| e.label.clone());
    Some(f)
}
