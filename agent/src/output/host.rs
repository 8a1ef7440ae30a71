//! The reporting host, as every finding names it (`device` in OCSF, `host` in ECS).

use std::sync::Arc;

#[derive(Clone, Debug)]
pub struct HostInfo {
    pub hostname: String,
    /// The host's machine id when readable: stable across restarts and renames,
    /// unique per host; the hostname otherwise.
    pub id: String,
}

/// Where the machine id is read from, first found wins. In a `hostPID` pod,
/// `/proc/1/root` is the node's root, whose id does not change with the pod (the
/// image's own `/etc/machine-id`, if any, would be the same on every node); on a
/// host it is `/etc/machine-id` itself.
const MACHINE_ID_PATHS: [&str; 2] = ["/proc/1/root/etc/machine-id", "/etc/machine-id"];

impl HostInfo {
    pub fn detect() -> Arc<Self> {
        // In Kubernetes the pod's hostname is the pod's name; the downward API's
        // NODE_NAME (set by the DaemonSet) names the host.
        let hostname = std::env::var("NODE_NAME")
            .ok()
            .filter(|n| !n.is_empty())
            .or_else(|| nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()))
            .unwrap_or_else(|| "localhost".into());
        let id = MACHINE_ID_PATHS
            .iter()
            .find_map(|p| {
                std::fs::read_to_string(p)
                    .ok()
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
            })
            .unwrap_or_else(|| hostname.clone());
        Arc::new(Self { hostname, id })
    }
}
