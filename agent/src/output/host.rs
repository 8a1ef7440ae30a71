//! The reporting host, as every finding names it (`device` in OCSF, `host` in ECS).

use std::sync::Arc;

#[derive(Clone, Debug)]
pub struct HostInfo {
    pub hostname: String,
    /// `/etc/machine-id` when present: stable across restarts and renames, unique
    /// per host; the hostname otherwise.
    pub id: String,
}

impl HostInfo {
    pub fn detect() -> Arc<Self> {
        let hostname = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "localhost".into());
        let id = std::fs::read_to_string("/etc/machine-id")
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| hostname.clone());
        Arc::new(Self { hostname, id })
    }
}
