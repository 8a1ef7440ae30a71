//! `mcp-server-attestation-failed`: a server that an entry with a pinned hash claims
//! by identity (name or package) but whose executable or package hash differs. Such a
//! server is this finding, not a shadow server.

use super::{display_name, Finding, ServerSubject};
use crate::rules::model::Sanctioned;

/// The entry that claims the server and pins another hash (only if the server's hash
/// is known: an unhashed server cannot fail attestation).
pub fn failed_claim<'r>(s: &ServerSubject<'r>) -> Option<&'r Sanctioned> {
    let server = s.server();
    if s.tracked.sanctioned.is_some() {
        return None;
    }
    let known_hash = server.sha256.is_some() || server.package.as_ref().is_some_and(|p| p.sha256.is_some());
    if !known_hash {
        return None;
    }
    s.rules
        .sanctioned
        .iter()
        .find(|e| e.sha256.is_some() && e.claims(server) && !e.hash_matches(server))
}

pub fn detect(s: &ServerSubject) -> Option<Finding> {
    let entry = failed_claim(s)?;
    let server = s.server();
    let mut f = Finding::new(
        format!("MCP server {} failed attestation", display_name(server)),
        format!(
            "matches sanctioned entry {} by identity but its hash differs: pinned {}, executable {}, package {}",
            entry.label,
            entry.sha256.as_deref().unwrap_or("-"),
            server.sha256.as_deref().unwrap_or("unknown"),
            server
                .package
                .as_ref()
                .and_then(|p| p.sha256.as_deref())
                .unwrap_or("unknown"),
        ),
    );
    f.entry = Some(entry.label.clone());
    Some(f)
}
