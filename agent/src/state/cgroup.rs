//! cgroup id → cgroup path, and container attribution from the path.
//!
//! The kernel reports `bpf_get_current_cgroup_id()`, which on cgroup v2 is the inode
//! number of the cgroup's directory. Paths come from `/proc/PID/cgroup` while the
//! process lives, else from a scan of the cgroup v2 mount.

use std::{
    collections::HashMap,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ContainerInfo {
    pub id: String,
    pub runtime: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    /// Name, namespace and labels of the pod, when the Kubernetes API knows it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<std::sync::Arc<crate::k8s::PodMeta>>,
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Strips a systemd unit suffix (`.scope`, `.slice`).
fn unit_stem(seg: &str) -> &str {
    seg.strip_suffix(".scope")
        .or_else(|| seg.strip_suffix(".slice"))
        .unwrap_or(seg)
}

fn pod_uid(path: &str) -> Option<String> {
    for seg in path.split('/') {
        let stem = unit_stem(seg);
        // cgroupfs driver: `pod<uid>`; systemd driver: `kubepods-besteffort-pod<uid_with_underscores>`.
        if let Some(i) = stem.rfind("pod") {
            let uid = &stem[i + 3..];
            let dashed = uid.replace('_', "-");
            if dashed.len() == 36 && dashed.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
                return Some(dashed);
            }
        }
    }
    None
}

/// Recognises docker, containerd (CRI), cri-o and podman naming, for both the systemd
/// and cgroupfs drivers and cgroup v1 or v2 paths.
pub fn container_from_path(path: &str) -> Option<ContainerInfo> {
    let mut found = None;
    let mut prev = "";
    for seg in path.split('/') {
        let stem = unit_stem(seg);
        let hit = [
            ("docker-", "docker"),
            ("cri-containerd-", "containerd"),
            ("crio-", "cri-o"),
            ("libpod-", "podman"),
        ]
        .iter()
        .find_map(|(prefix, rt)| {
            stem.strip_prefix(prefix)
                .filter(|id| is_container_id(id))
                .map(|id| (id, *rt))
        })
        .or_else(|| {
            // cgroupfs driver: the bare id under a runtime-named parent.
            if is_container_id(stem) {
                let rt = match prev {
                    "docker" => "docker",
                    "libpod_parent" => "podman",
                    _ if path.contains("kubepods") => "containerd",
                    _ => return None,
                };
                Some((stem, rt))
            } else {
                None
            }
        });
        if let Some((id, runtime)) = hit {
            // The innermost match wins (nested containers).
            found = Some(ContainerInfo {
                id: id.to_string(),
                runtime,
                pod_uid: None,
                pod: None,
            });
        }
        prev = seg;
    }
    found.map(|mut c| {
        c.pod_uid = pod_uid(path);
        c
    })
}

/// Where the cgroup v2 hierarchy is mounted (`/sys/fs/cgroup`, or
/// `/sys/fs/cgroup/unified` on hybrid hosts).
pub fn cgroup2_mount() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mounts.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let fstype = right.split_whitespace().next()?;
        if fstype != "cgroup2" {
            return None;
        }
        left.split_whitespace().nth(4).map(PathBuf::from)
    })
}

/// True when cgroup v1 hierarchies are mounted (v1-only or hybrid hosts), where the
/// container may be named only by a v1 controller's path.
pub fn v1_mounted() -> bool {
    std::fs::read_to_string("/proc/self/mountinfo").is_ok_and(|m| {
        m.lines().any(|line| {
            line.split_once(" - ")
                .and_then(|(_, right)| right.split_whitespace().next())
                == Some("cgroup")
        })
    })
}

/// The cgroup v2 path of a live process, from `/proc/PID/cgroup` (`0::/path`).
pub fn v2_path_of_pid(pid: u32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::").map(str::to_string))
}

/// Any cgroup path of a live process, preferring v2, for container attribution on
/// cgroup v1 hosts too.
pub fn paths_of_pid(pid: u32) -> Vec<String> {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .map(|t| {
            t.lines()
                .filter_map(|l| l.splitn(3, ':').nth(2).map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

pub struct CgroupResolver {
    mount: Option<PathBuf>,
    by_id: HashMap<u64, Option<Arc<str>>>,
    last_scan: Option<Instant>,
}

/// A full scan of the hierarchy is at most this frequent; ids not found in between
/// stay unresolved rather than costing a walk per event.
const RESCAN_EVERY: Duration = Duration::from_secs(2);
const MAX_CACHED: usize = 65_536;
const MAX_SCAN_DEPTH: usize = 16;

impl CgroupResolver {
    pub fn new() -> Self {
        Self {
            mount: cgroup2_mount(),
            by_id: HashMap::new(),
            last_scan: None,
        }
    }

    /// The path of cgroup `id`, using `pid`'s /proc entry first when it is still alive.
    pub fn resolve(&mut self, id: u64, pid: Option<u32>) -> Option<Arc<str>> {
        if let Some(p) = self.by_id.get(&id) {
            return p.clone();
        }
        if let Some(path) = pid.and_then(v2_path_of_pid) {
            if self.id_of(&path) == Some(id) {
                return self.remember(id, Some(Arc::from(path)));
            }
        }
        if self.last_scan.is_none_or(|t| t.elapsed() >= RESCAN_EVERY) {
            self.scan();
            if let Some(p) = self.by_id.get(&id) {
                return p.clone();
            }
        }
        None
    }

    fn remember(&mut self, id: u64, path: Option<Arc<str>>) -> Option<Arc<str>> {
        if self.by_id.len() >= MAX_CACHED {
            self.by_id.clear();
        }
        self.by_id.insert(id, path.clone());
        path
    }

    fn id_of(&self, rel: &str) -> Option<u64> {
        let mount = self.mount.as_ref()?;
        std::fs::metadata(mount.join(rel.trim_start_matches('/')))
            .ok()
            .map(|m| m.ino())
    }

    fn scan(&mut self) {
        self.last_scan = Some(Instant::now());
        let Some(mount) = self.mount.clone() else {
            return;
        };
        let mut stack = vec![(mount.clone(), 0usize)];
        while let Some((dir, depth)) = stack.pop() {
            if let Ok(meta) = std::fs::metadata(&dir) {
                let rel = relative(&mount, &dir);
                self.remember(meta.ino(), Some(Arc::from(rel)));
            }
            if depth >= MAX_SCAN_DEPTH {
                continue;
            }
            if let Ok(entries) = std::fs::read_dir(&dir) {
                for e in entries.flatten() {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        stack.push((e.path(), depth + 1));
                    }
                }
            }
        }
    }
}

fn relative(mount: &Path, dir: &Path) -> String {
    let rel = dir.strip_prefix(mount).unwrap_or(dir);
    format!("/{}", rel.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4f1c8a0d7e2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5";

    #[test]
    fn recognises_runtime_naming() {
        let cases = [
            (format!("/system.slice/docker-{ID}.scope"), "docker", None),
            (format!("/docker/{ID}"), "docker", None),
            (
                format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0b6f3a2e_1c2d_4e5f_8a9b_0c1d2e3f4a5b.slice/cri-containerd-{ID}.scope"),
                "containerd",
                Some("0b6f3a2e-1c2d-4e5f-8a9b-0c1d2e3f4a5b"),
            ),
            (
                format!("/kubepods/besteffort/pod0b6f3a2e-1c2d-4e5f-8a9b-0c1d2e3f4a5b/{ID}"),
                "containerd",
                Some("0b6f3a2e-1c2d-4e5f-8a9b-0c1d2e3f4a5b"),
            ),
            (
                format!("/kubepods.slice/kubepods-pod0b6f3a2e_1c2d_4e5f_8a9b_0c1d2e3f4a5b.slice/crio-{ID}.scope"),
                "cri-o",
                Some("0b6f3a2e-1c2d-4e5f-8a9b-0c1d2e3f4a5b"),
            ),
            (format!("/machine.slice/libpod-{ID}.scope/container"), "podman", None),
            (format!("/libpod_parent/{ID}"), "podman", None),
        ];
        for (path, runtime, pod) in cases {
            let c = container_from_path(&path).unwrap_or_else(|| panic!("no container in {path}"));
            assert_eq!(c.id, ID, "{path}");
            assert_eq!(c.runtime, runtime, "{path}");
            assert_eq!(c.pod_uid.as_deref(), pod, "{path}");
        }
    }

    #[test]
    fn host_paths_are_not_containers() {
        for p in [
            "/",
            "/user.slice/user-1000.slice/session-2.scope",
            "/system.slice/ssh.service",
            "/docker-short.scope",
            "",
        ] {
            assert_eq!(container_from_path(p), None, "{p}");
        }
    }
}
