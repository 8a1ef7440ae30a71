//! Container and pod attribution from real cgroups: the test creates cgroups named as
//! docker, containerd (CRI), cri-o and podman name them, with the systemd and the
//! cgroupfs drivers, on cgroup v2 and on v1 hierarchies, moves its own processes into
//! them, and checks that events and `/v1/processes` carry the container id, runtime
//! and pod UID. Every cgroup lives under a parent named after this test run and is
//! removed afterwards (also on panic).

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use mcpwatch_e2e::{argv, eventually, field, token, Agent};
use serde_json::Value;
use sha2::Digest as _;

/// Where cgroup v2 is mounted: `/sys/fs/cgroup` or, on hybrid hosts, `/sys/fs/cgroup/unified`.
fn cgroup2_root() -> PathBuf {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    mounts
        .lines()
        .find_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            if right.split_whitespace().next()? != "cgroup2" {
                return None;
            }
            left.split_whitespace().nth(4).map(PathBuf::from)
        })
        .expect("no cgroup v2 mount: container attribution tests need one")
}

/// A v1 hierarchy that holds no resource limits the test could disturb.
fn cgroup1_root(name: &str) -> PathBuf {
    let root = PathBuf::from("/sys/fs/cgroup").join(name);
    assert!(
        root.join("cgroup.procs").exists() && !root.join("cgroup.subtree_control").exists(),
        "cgroup v1 hierarchy {} is not mounted: the v1 attribution cases need it",
        root.display()
    );
    root
}

/// Every cgroup directory the test made, removed deepest first; processes still in
/// them are moved back to the hierarchy's root first.
struct Cgroups {
    made: Vec<(PathBuf, PathBuf)>,
}

impl Cgroups {
    fn create(&mut self, hierarchy: &Path, rel: &str) -> PathBuf {
        let mut dir = hierarchy.to_path_buf();
        for seg in rel.trim_start_matches('/').split('/') {
            dir.push(seg);
            if !dir.exists() {
                std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
                self.made.push((hierarchy.to_path_buf(), dir.clone()));
            }
        }
        dir
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        for (hierarchy, dir) in self.made.iter().rev() {
            if let Ok(pids) = std::fs::read_to_string(dir.join("cgroup.procs")) {
                for pid in pids.lines() {
                    let _ = std::fs::write(hierarchy.join("cgroup.procs"), pid);
                }
            }
            if let Err(e) = std::fs::remove_dir(dir) {
                eprintln!("could not remove cgroup {}: {e}", dir.display());
            }
        }
    }
}

struct Case {
    name: &'static str,
    /// `v2`, or the name of a v1 hierarchy.
    hierarchy: &'static str,
    /// Path under the test's parent; `{id}`, `{pod}` (dashed) and `{pod_}` (underscored) are filled in.
    path: &'static str,
    runtime: &'static str,
    has_pod: bool,
}

const CASES: &[Case] = &[
    Case {
        name: "docker, systemd driver, v2",
        hierarchy: "v2",
        path: "system.slice/docker-{id}.scope",
        runtime: "docker",
        has_pod: false,
    },
    Case {
        name: "containerd CRI, systemd driver, v2",
        hierarchy: "v2",
        path: "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{pod_}.slice/cri-containerd-{id}.scope",
        runtime: "containerd",
        has_pod: true,
    },
    Case {
        name: "cri-o, systemd driver, v2",
        hierarchy: "v2",
        path: "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{pod_}.slice/crio-{id}.scope",
        runtime: "cri-o",
        has_pod: true,
    },
    Case {
        name: "podman, systemd driver, v2",
        hierarchy: "v2",
        path: "machine.slice/libpod-{id}.scope/container",
        runtime: "podman",
        has_pod: false,
    },
    Case {
        name: "containerd, cgroupfs driver, v2",
        hierarchy: "v2",
        path: "kubepods/besteffort/pod{pod}/{id}",
        runtime: "containerd",
        has_pod: true,
    },
    Case {
        name: "docker, cgroupfs driver, v1",
        hierarchy: "pids",
        path: "docker/{id}",
        runtime: "docker",
        has_pod: false,
    },
    Case {
        name: "containerd, cgroupfs driver, v1",
        hierarchy: "systemd",
        path: "kubepods/burstable/pod{pod}/{id}",
        runtime: "containerd",
        has_pod: true,
    },
    Case {
        name: "podman, cgroupfs driver, v1",
        hierarchy: "pids",
        path: "libpod_parent/{id}",
        runtime: "podman",
        has_pod: false,
    },
];

/// A 64-hex container id and a pod UID unique to this run and case.
fn ids(tok: &str) -> (String, String) {
    let id = hex::encode(sha2::Sha256::digest(tok.as_bytes()));
    let u = &id[..32];
    let pod = format!(
        "{}-{}-{}-{}-{}",
        &u[..8],
        &u[8..12],
        &u[12..16],
        &u[16..20],
        &u[20..32]
    );
    (id, pod)
}

/// A shell that moves itself into `procs` (a `cgroup.procs` file), then becomes a
/// long-lived process with `tok` in its argv.
fn spawn_in_cgroup(procs: &Path, tok: &str) -> Child {
    let script = format!("echo $$ > {} && exec /bin/sh -c 'read x' {tok}", procs.display());
    Command::new("/bin/sh")
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap()
}

fn end(mut child: Child) {
    drop(child.stdin.take());
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn events_and_inventory_name_the_container_runtime_and_pod() {
    let mut agent = Agent::start();
    let v2 = cgroup2_root();
    let run_tok = token("cg");
    let mut cgroups = Cgroups { made: Vec::new() };
    let mut children = Vec::new();
    let mut failures = Vec::new();
    for (n, case) in CASES.iter().enumerate() {
        let tok = format!("{run_tok}-{n}");
        let (id, pod) = ids(&tok);
        let hierarchy = if case.hierarchy == "v2" {
            v2.clone()
        } else {
            cgroup1_root(case.hierarchy)
        };
        let rel = format!("{run_tok}.slice/{}", case.path)
            .replace("{id}", &id)
            .replace("{pod_}", &pod.replace('-', "_"))
            .replace("{pod}", &pod);
        let dir = cgroups.create(&hierarchy, &rel);
        let child = spawn_in_cgroup(&dir.join("cgroup.procs"), &tok);
        let pid = child.id();
        children.push(child);

        let ev = agent.wait_event(Duration::from_secs(5), |v| {
            v["type"] == "process_exec" && argv(v).iter().any(|a| a == &tok)
        });
        let container = &ev["process"]["container"];
        let want_pod = if case.has_pod {
            Value::from(pod.clone())
        } else {
            Value::Null
        };
        if container["id"] != id.as_str()
            || container["runtime"] != case.runtime
            || container.get("pod_uid").cloned().unwrap_or(Value::Null) != want_pod
        {
            failures.push(format!(
                "{}: event container {container} (cgroup {}), want id {id} runtime {} pod {want_pod}",
                case.name, ev["process"]["cgroup"], case.runtime
            ));
            continue;
        }
        eprintln!("{}: container {container}", case.name);
        if case.hierarchy == "v2" {
            // The kernel's cgroup id was resolved to the path the test made.
            assert_eq!(ev["process"]["cgroup"], format!("/{rel}"), "{}", case.name);
        }
        // The inventory says the same about the live process.
        let procs = agent.get_json(&format!("/v1/processes?pid={pid}&live=true"));
        let text = procs.to_string();
        if !text.contains(&id) || !text.contains(case.runtime) {
            failures.push(format!(
                "{}: /v1/processes?pid={pid} lacks the container: {text}",
                case.name
            ));
        }
    }
    // A process left in the host's cgroups is attributed to no container.
    let host_tok = format!("{run_tok}-host");
    let mut host = Command::new("/bin/sh")
        .args(["-c", "read x", &host_tok])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let ev = agent.wait_event(Duration::from_secs(5), |v| {
        v["type"] == "process_exec" && argv(v).iter().any(|a| a == &host_tok)
    });
    assert!(
        field(&ev, "process.container").is_null(),
        "host process in a container: {ev}"
    );
    let _ = host.stdin.take().map(|mut s| s.write_all(b"\n"));
    let _ = host.wait();

    for child in children {
        end(child);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    drop(cgroups);
    eventually(Duration::from_secs(2), "test cgroups removed", || {
        !v2.join(format!("{run_tok}.slice")).exists()
    });
}
