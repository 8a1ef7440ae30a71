//! `mcp-metadata-access`: a process in an MCP server's tree reaching a cloud metadata
//! endpoint (the `cloud_metadata` network list): the classic credential theft.

use super::{display_name, ConnectionSubject, Finding};

pub fn detect(c: &ConnectionSubject) -> Option<Finding> {
    let tree = c.tree?;
    let meta = c.rules.list("cloud_metadata")?;
    if !(meta.contains_ip(c.remote.ip) || c.domain().is_some_and(|d| meta.contains_domain(d))) {
        return None;
    }
    let mut f = Finding::new(
        format!(
            "Cloud metadata access from the tree of MCP server {}",
            display_name(&tree.server)
        ),
        format!(
            "process {} (pid {}) connected to metadata endpoint {}: {}",
            c.comm,
            c.pid,
            c.destination(),
            c.net.result
        ),
    );
    f.entry = c.entry().map(|e| e.label.clone());
    Some(f)
}
