//! The tool set each MCP server identity (`server_uid`) was first seen with, kept in
//! the state directory so `mcp-tool-definitions-changed` survives restarts: tool name
//! → the tool's SHA-256 (`mcp/tools.rs`).

use std::{collections::BTreeMap, path::PathBuf};

/// Servers remembered; past the bound new identities are not recorded.
const MAX_IDENTITIES: usize = 4096;

pub type ToolDigests = BTreeMap<String, String>;

pub struct ToolBaseline {
    path: Option<PathBuf>,
    seen: BTreeMap<String, ToolDigests>,
}

impl ToolBaseline {
    pub const FILE: &'static str = "tool-baseline.json";

    /// Loads the baseline; an unreadable or corrupt file starts a fresh one (logged).
    pub fn open(dir: Option<PathBuf>) -> Self {
        let path = dir.map(|d| d.join(Self::FILE));
        let seen = super::state_file::load(path.as_deref(), "tool baseline");
        Self { path, seen }
    }

    #[cfg(test)]
    pub fn get(&self, identity: &str) -> Option<&ToolDigests> {
        self.seen.get(identity)
    }

    /// Records the identity's current tools; returns what was recorded before.
    pub fn replace(&mut self, identity: &str, tools: ToolDigests) -> Option<ToolDigests> {
        if !self.seen.contains_key(identity) && self.seen.len() >= MAX_IDENTITIES {
            return None;
        }
        if self.seen.get(identity) == Some(&tools) {
            return Some(tools);
        }
        let before = self.seen.insert(identity.to_string(), tools);
        self.save();
        before
    }

    /// Written whole through a temporary file and a rename.
    fn save(&self) {
        super::state_file::save(self.path.as_deref(), &self.seen, "tool baseline");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_reopen_and_returns_what_it_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let tools = |sha: &str| ToolDigests::from([("read".to_string(), sha.to_string())]);
        let mut b = ToolBaseline::open(Some(dir.path().to_path_buf()));
        assert_eq!(b.replace("uid-1", tools("a")), None);
        let mut b = ToolBaseline::open(Some(dir.path().to_path_buf()));
        assert_eq!(b.get("uid-1"), Some(&tools("a")));
        assert_eq!(b.replace("uid-1", tools("b")), Some(tools("a")));
        std::fs::write(dir.path().join(ToolBaseline::FILE), "{broken").unwrap();
        assert!(ToolBaseline::open(Some(dir.path().to_path_buf()))
            .get("uid-1")
            .is_none());
    }
}
