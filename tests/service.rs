//! The agent as a service: the systemd unit (verify, exposure, syscall filter), the
//! capabilities it grants (each shown to be needed by running without it), the
//! readiness protocol, the configuration layers and `doctor`.

use std::{
    collections::BTreeSet,
    os::unix::net::UnixDatagram,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::Duration,
};

use mcpwatch_e2e::{agent_binary, argv, field, require_root, run, text, token, Agent, Launch};
use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(
        std::env::var_os("MCPWATCH_REPO").expect("MCPWATCH_REPO is not set: run `cargo xtask test`"),
    )
}

fn unit_path() -> PathBuf {
    repo().join("packaging/systemd/mcpwatch.service")
}

/// A root directory for `systemd-analyze --root`: the unit in /etc/systemd/system,
/// the binaries it runs, and the distribution's units (for sysinit.target & co).
fn unit_root(unit_text: &str) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    for d in ["etc/systemd/system", "usr/bin", "bin", "lib/systemd"] {
        std::fs::create_dir_all(r.join(d)).unwrap();
    }
    std::fs::write(r.join("etc/systemd/system/mcpwatch.service"), unit_text).unwrap();
    std::fs::copy(agent_binary(), r.join("usr/bin/mcpwatch")).unwrap();
    std::fs::copy("/bin/kill", r.join("bin/kill")).unwrap();
    let status = Command::new("cp")
        .args(["-a", "/lib/systemd/system"])
        .arg(r.join("lib/systemd/"))
        .status()
        .unwrap();
    assert!(status.success());
    root
}

fn verify(unit_text: &str) -> Output {
    let root = unit_root(unit_text);
    run(Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(format!("--root={}", root.path().display()))
        .arg("mcpwatch.service"))
}

/// `systemd-analyze verify` exits 0 even on unknown keys and bad values: any output
/// at all is a failure.
#[test]
fn unit_verifies_without_a_single_warning() {
    let unit = std::fs::read_to_string(unit_path()).unwrap();
    let out = verify(&unit);
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "{}",
        text(&out)
    );
    // The same gate catches a typo, so it can fail.
    let broken = unit.replace("RestartSec=", "RestarSec=");
    let out = verify(&broken);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("RestarSec"),
        "a typo went unnoticed: {}",
        text(&out)
    );
}

/// Exposure on systemd's 0–10 scale (threshold on its 0–100 scale).
#[test]
fn unit_exposure_is_at_most_3_0() {
    let unit = std::fs::read_to_string(unit_path()).unwrap();
    let root = unit_root(&unit);
    let out = run(Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--threshold=30", "--no-pager"])
        .arg(format!("--root={}", root.path().display()))
        .arg("mcpwatch.service"));
    let all = text(&out);
    let level = all
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no exposure level: {all}"))
        .to_string();
    eprintln!("{level}");
    assert!(out.status.success(), "exposure above 3.0: {level}\n{all}");
}

fn unit_values(key: &str) -> Vec<String> {
    let unit = std::fs::read_to_string(unit_path()).unwrap();
    unit.lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .flat_map(|v| v.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .collect()
}

/// Syscall groups as systemd 252 defines them, expanded recursively.
fn syscall_group(name: &str, groups: &std::collections::HashMap<String, Vec<String>>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut todo = vec![name.to_string()];
    while let Some(n) = todo.pop() {
        match groups.get(&n) {
            Some(members) => todo.extend(members.iter().cloned()),
            None if !n.starts_with('@') => {
                out.insert(n);
            }
            None => panic!("unknown syscall group {n}"),
        }
    }
    out
}

fn syscall_groups() -> std::collections::HashMap<String, Vec<String>> {
    let out = run(Command::new("systemd-analyze").args(["syscall-filter", "--no-pager"]));
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut groups = std::collections::HashMap::new();
    let mut current: Option<String> = None;
    for line in listing.lines() {
        if let Some(name) = line.strip_prefix('@') {
            current = Some(format!("@{}", name.trim()));
            groups.insert(current.clone().unwrap(), Vec::new());
        } else if let Some(member) = line.split_whitespace().next() {
            if member.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            if let Some(g) = &current {
                groups.get_mut(g).unwrap().push(member.to_string());
            }
        }
    }
    groups
}

/// Every syscall the agent makes (start, API, events, stop, under strace) is allowed
/// by the unit's `SystemCallFilter`: a missing one would be EPERM under systemd.
#[test]
fn unit_syscall_filter_allows_every_syscall_the_agent_makes() {
    let groups = syscall_groups();
    let mut allowed = BTreeSet::new();
    let mut denied = BTreeSet::new();
    for v in unit_values("SystemCallFilter") {
        let (deny, name) = match v.strip_prefix('~') {
            Some(n) => (true, n.to_string()),
            None => (false, v.clone()),
        };
        let set = if name.starts_with('@') {
            syscall_group(&name, &groups)
        } else {
            BTreeSet::from([name])
        };
        if deny { &mut denied } else { &mut allowed }.extend(set);
    }
    assert!(allowed.contains("bpf") && allowed.contains("perf_event_open"));

    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("syscalls.txt");
    let trace_arg = trace.display().to_string();
    let mut agent = Agent::launch(&Launch {
        wrapper: &["strace", "-f", "-c", "-o", &trace_arg],
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let tok = token("strace");
    let _ = agent.get("/metrics");
    let _ = agent.get("/v1/processes?pid=1");
    assert!(Command::new("/bin/echo")
        .arg(&tok)
        .stdout(Stdio::null())
        .status()
        .unwrap()
        .success());
    agent.wait_event(Duration::from_secs(5), |v| argv(v).contains(&tok));
    // SIGTERM to the agent itself (strace's child), so strace writes its summary.
    let strace_pid = agent.pid();
    let children = std::fs::read_to_string(format!("/proc/{strace_pid}/task/{strace_pid}/children")).unwrap();
    let agent_pid: i32 = children.split_whitespace().next().unwrap().parse().unwrap();
    // SAFETY: signalling the agent this test started.
    unsafe { libc::kill(agent_pid, libc::SIGTERM) };
    let status = agent.wait_exit();
    assert!(status.success(), "{status}: {}", agent.log());

    let summary = std::fs::read_to_string(&trace).unwrap();
    let used: BTreeSet<String> = summary
        .lines()
        .skip(2)
        .filter(|l| !l.starts_with('-') && !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().last().map(str::to_string))
        .filter(|n| n != "total")
        .collect();
    assert!(used.contains("bpf"), "strace saw no bpf(): {summary}");
    let refused: Vec<_> = used
        .iter()
        .filter(|s| !allowed.contains(*s) || denied.contains(*s))
        .collect();
    assert!(
        refused.is_empty(),
        "the unit's SystemCallFilter would refuse {refused:?} (agent used {used:?})"
    );
}

/// A private directory owned by `nobody` holding a copy of /bin/true: hashing it
/// needs CAP_DAC_READ_SEARCH.
struct PrivateBinary {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

fn private_binary() -> PrivateBinary {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("private-true");
    std::fs::copy("/bin/true", &path).unwrap();
    for p in [dir.path(), path.as_path()] {
        std::os::unix::fs::chown(p, Some(65534), Some(65534)).unwrap();
    }
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    PrivateBinary { _dir: dir, path }
}

/// Starts the agent with only `caps` (names as in the unit: CAP_BPF …).
fn agent_with_caps(caps: &[String]) -> Result<Agent, String> {
    let set = std::iter::once("-all".to_string())
        .chain(
            caps.iter()
                .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase())),
        )
        .collect::<Vec<_>>()
        .join(",");
    Agent::launch(&Launch {
        wrapper: &["setpriv", "--bounding-set", &set, "--inh-caps", "-all", "--"],
        ..Default::default()
    })
}

/// Runs the private binary as `nobody` and returns its exec event.
fn exec_as_nobody(agent: &mut Agent, bin: &Path) -> Value {
    let tok = token("caps");
    let status = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(bin)
        .arg(&tok)
        .status()
        .unwrap();
    assert!(status.success());
    let bin = bin.display().to_string();
    agent.wait_event(Duration::from_secs(5), |v| {
        v["type"] == "process_exec" && argv(v) == [bin.clone(), tok.clone()]
    })
}

/// The unit's capability set is enough for full visibility (process and network
/// sensors), and each capability in it
/// is needed: without CAP_BPF or CAP_PERFMON the agent cannot start, without
/// CAP_DAC_READ_SEARCH it cannot hash private executables, without CAP_SYS_PTRACE it
/// cannot read other processes' working directories.
#[test]
fn unit_capabilities_are_enough_and_each_is_needed() {
    require_root();
    let caps = unit_values("CapabilityBoundingSet");
    assert_eq!(
        caps.iter().map(String::as_str).collect::<BTreeSet<_>>(),
        BTreeSet::from(["CAP_BPF", "CAP_PERFMON", "CAP_DAC_READ_SEARCH", "CAP_SYS_PTRACE"]),
        "the unit's capabilities changed: update this test with what the new one gives"
    );
    let private = private_binary();
    let without = |drop: &str| caps.iter().filter(|c| *c != drop).cloned().collect::<Vec<_>>();

    let mut agent =
        agent_with_caps(&caps).unwrap_or_else(|e| panic!("agent fails with the unit's caps: {e}"));
    let ev = exec_as_nobody(&mut agent, &private.path);
    let p = &ev["process"];
    assert_eq!(p["exe"], private.path.display().to_string(), "{ev}");
    assert!(p["sha256"].is_string(), "no hash with the unit's caps: {ev}");
    assert!(p["cwd"].is_string(), "no cwd with the unit's caps: {ev}");
    assert_eq!(p["user"], "nobody");
    // The network sensor works under the same set: a loopback connection is seen.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let _conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let me = u64::from(std::process::id());
    agent.wait_event(Duration::from_secs(5), |v| {
        v["type"] == "network_connect"
            && v["process"]["pid"].as_u64() == Some(me)
            && v["remote"]["port"].as_u64() == Some(u64::from(port))
    });
    drop(agent);

    for cap in ["CAP_BPF", "CAP_PERFMON"] {
        match agent_with_caps(&without(cap)) {
            Ok(_) => panic!("the agent started without {cap}: it is not needed"),
            Err(log) => assert!(log.contains("Operation not permitted"), "without {cap}: {log}"),
        }
    }

    let mut agent = agent_with_caps(&without("CAP_DAC_READ_SEARCH")).unwrap();
    let ev = exec_as_nobody(&mut agent, &private.path);
    assert!(
        field(&ev, "process.sha256").is_null(),
        "hashed a private file without CAP_DAC_READ_SEARCH: it is not needed: {ev}"
    );
    drop(agent);

    let mut agent = agent_with_caps(&without("CAP_SYS_PTRACE")).unwrap();
    let ev = exec_as_nobody(&mut agent, &private.path);
    assert!(
        field(&ev, "process.cwd").is_null(),
        "read a cwd without CAP_SYS_PTRACE: it is not needed: {ev}"
    );
}

/// `READY=1` reaches the service manager once the agent is ready, `STOPPING=1` when
/// it stops.
#[test]
fn readiness_and_stop_reach_the_service_manager() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let path_s = path.display().to_string();
    let mut agent = Agent::launch(&Launch {
        env: &[("NOTIFY_SOCKET", &path_s)],
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).expect("no READY=1 from the agent");
    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(msg.lines().any(|l| l == "READY=1"), "{msg}");
    assert!(msg.contains("STATUS=watching"), "{msg}");
    let (code, _) = agent.get("/readyz").unwrap();
    assert_eq!(code, 200, "READY=1 sent before /readyz");
    let status = agent.stop();
    assert!(status.success());
    let n = sock.recv(&mut buf).expect("no STOPPING=1 from the agent");
    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(msg.lines().any(|l| l == "STOPPING=1"), "{msg}");
}

fn mcpwatch(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(agent_binary());
    cmd.args(args).env_remove("NOTIFY_SOCKET");
    for (k, _) in std::env::vars() {
        if k.starts_with("MCPWATCH_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("MCPWATCH_CONFIG", "/dev/null").envs(env.iter().copied());
    run(&mut cmd)
}

#[test]
fn print_config_shows_each_value_and_its_layer() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.yaml");
    std::fs::write(
        &file,
        "listen: 127.0.0.1:9999\npoll_interval_ms: 50\nmax_processes: 5000\nlog_format: json\n",
    )
    .unwrap();
    let file_s = file.display().to_string();
    let out = mcpwatch(
        &["print-config", "--format", "json", "--max-processes", "7000"],
        &[
            ("MCPWATCH_CONFIG", &file_s),
            ("MCPWATCH_POLL_INTERVAL_MS", "20"),
            ("MCPWATCH_OUTPUTS", "jsonl:/tmp/a.jsonl,jsonl:-"),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let s = &v["settings"];
    assert_eq!(v["config_file"], file_s);
    assert_eq!(s["max_processes"]["value"], 7000);
    assert_eq!(s["max_processes"]["source"]["kind"], "flag");
    assert_eq!(s["poll_interval_ms"]["value"], 20);
    assert_eq!(
        s["poll_interval_ms"]["source"]["name"],
        "MCPWATCH_POLL_INTERVAL_MS"
    );
    assert_eq!(
        s["outputs"]["value"],
        serde_json::json!(["jsonl:/tmp/a.jsonl", "jsonl:-"])
    );
    assert_eq!(s["outputs"]["source"]["kind"], "env");
    assert_eq!(s["listen"]["value"], "127.0.0.1:9999");
    assert_eq!(s["listen"]["source"]["kind"], "file");
    assert_eq!(s["log_format"]["value"], "json");
    assert_eq!(s["state_dir"]["source"]["kind"], "default");

    // The text form is a config file: fed back, it gives the same values, all from it.
    let out = mcpwatch(
        &["print-config", "--max-processes", "7000"],
        &[("MCPWATCH_CONFIG", &file_s)],
    );
    assert!(out.status.success(), "{}", text(&out));
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(printed.contains("# flag --max-processes"), "{printed}");
    let again = dir.path().join("again.yaml");
    std::fs::write(&again, &printed).unwrap();
    let again_s = again.display().to_string();
    let out = mcpwatch(
        &["print-config", "--format", "json"],
        &[("MCPWATCH_CONFIG", &again_s)],
    );
    assert!(out.status.success(), "{}", text(&out));
    let v2: Value = serde_json::from_slice(&out.stdout).unwrap();
    for (key, setting) in v2["settings"].as_object().unwrap() {
        let want = if key == "max_processes" {
            Value::from(7000)
        } else {
            s[key]["value"].clone()
        };
        // `rules: null` reads back as unset, i.e. the default.
        if setting["value"].is_null() {
            continue;
        }
        assert_eq!(setting["source"]["kind"], "file", "{key}");
        if key != "poll_interval_ms" && key != "outputs" {
            assert_eq!(setting["value"], want, "{key}");
        }
    }

    // A bad file is a configuration error (EX_CONFIG) naming the key.
    std::fs::write(&file, "listen: 127.0.0.1:9999\nlisen: typo\n").unwrap();
    let out = mcpwatch(&["print-config"], &[("MCPWATCH_CONFIG", &file_s)]);
    assert_eq!(out.status.code(), Some(78), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("lisen"),
        "{}",
        text(&out)
    );
}

#[test]
fn doctor_passes_here_and_explains_what_fails_without_capabilities() {
    require_root();
    let out = mcpwatch(&["doctor", "--format", "json", "--listen", "127.0.0.1:0"], &[]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(v["can_run"], true);
    let checks = v["checks"].as_array().unwrap();
    let status = |name: &str| {
        checks
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no check {name}: {v}"))["status"]
            .clone()
    };
    for name in [
        "kernel",
        "tracefs",
        "capabilities",
        "ring buffer",
        "tracepoint programs",
        "sensors",
        "cgroups",
    ] {
        assert_eq!(status(name), "ok", "{name}: {v:#}");
    }

    // Without CAP_BPF and CAP_PERFMON: non-zero, and the reason in plain words.
    let out = run(Command::new("setpriv")
        .args([
            "--bounding-set",
            "-bpf,-perfmon,-sys_admin",
            "--inh-caps",
            "-all",
            "--",
        ])
        .arg(agent_binary())
        .args(["doctor", "--listen", "127.0.0.1:0"])
        .env("MCPWATCH_CONFIG", "/dev/null"));
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!out.status.success(), "doctor passed without CAP_BPF: {report}");
    assert!(report.contains("FAIL  capabilities"), "{report}");
    assert!(report.contains("CAP_BPF"), "{report}");
    assert!(report.contains("FAIL  sensors"), "{report}");
    assert!(report.contains("cannot run"), "{report}");
}
