//! Destinations each sanctioned server identity has been seen to reach, kept in the
//! state directory so `mcp-server-new-destination` survives restarts.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
};

/// Bounds: a server that reaches more than this many destinations is not one a
/// baseline describes; past the bound new destinations are no longer recorded.
const MAX_PER_IDENTITY: usize = 4096;
const MAX_IDENTITIES: usize = 1024;

pub struct Baseline {
    path: Option<PathBuf>,
    seen: BTreeMap<String, BTreeSet<String>>,
}

impl Baseline {
    pub const FILE: &'static str = "destination-baseline.json";

    /// Loads the baseline; an unreadable or corrupt file starts a fresh one (logged):
    /// a baseline is a convenience, not a reason to refuse to run.
    pub fn open(dir: Option<PathBuf>) -> Self {
        let path = dir.map(|d| d.join(Self::FILE));
        let seen = super::state_file::load(path.as_deref(), "destination baseline");
        Self { path, seen }
    }

    /// Records a destination; true if it is new for this identity.
    pub fn record(&mut self, identity: &str, destination: &str) -> bool {
        if !self.seen.contains_key(identity) && self.seen.len() >= MAX_IDENTITIES {
            return false;
        }
        let set = self.seen.entry(identity.to_string()).or_default();
        if set.contains(destination) || set.len() >= MAX_PER_IDENTITY {
            return false;
        }
        set.insert(destination.to_string());
        self.save();
        true
    }

    /// Written whole through a temporary file and a rename: a crash leaves the old or
    /// the new baseline, never half of one.
    fn save(&self) {
        super::state_file::save(self.path.as_deref(), &self.seen, "destination baseline");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = Baseline::open(Some(dir.path().to_path_buf()));
        assert!(b.record("pypi:x", "10.0.0.1:80"));
        assert!(!b.record("pypi:x", "10.0.0.1:80"));
        let mut b = Baseline::open(Some(dir.path().to_path_buf()));
        assert!(!b.record("pypi:x", "10.0.0.1:80"));
        assert!(b.record("pypi:y", "10.0.0.1:80"));
        std::fs::write(dir.path().join(Baseline::FILE), b"garbage").unwrap();
        let mut b = Baseline::open(Some(dir.path().to_path_buf()));
        assert!(b.record("pypi:x", "10.0.0.1:80"));
    }
}
