//! `mcp-server-new-destination`: a sanctioned server's first connection to a
//! destination. The baseline belongs to the sanctioned entry, the identity the
//! organisation approved (stable across versions, names and how quickly the package
//! was identified); the engine keeps it and asks this detection twice: which baseline
//! key a connection has, and the finding when that key is new.

use super::{display_name, ConnectionSubject, Finding};

/// `(baseline identity, destination)` of a connection from a sanctioned server's tree.
pub fn baseline_key(c: &ConnectionSubject) -> Option<(String, String)> {
    let entry = c.entry()?;
    let dest = match c.domain() {
        Some(d) => format!("{d}:{}", c.remote.port),
        None => format!("{}:{}", c.remote.ip, c.remote.port),
    };
    Some((format!("sanctioned:{}", entry.label), dest))
}

/// The finding for a destination the baseline had not seen.
pub fn detect(c: &ConnectionSubject, ident: &str, dest: &str) -> Option<Finding> {
    let tree = c.tree?;
    let mut f = Finding::new(
        format!(
            "MCP server {} reached a new destination {dest}",
            display_name(&tree.server)
        ),
        format!(
            "first connection of {ident} to {dest} (process {}, pid {}): {}",
            c.comm, c.pid, c.net.result
        ),
    );
    f.identity = Some(format!("{ident}->{dest}"));
    Some(f)
}
