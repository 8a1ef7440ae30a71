//! Process sensor and process table, end to end: the real agent, real eBPF, real
//! processes spawned by the test.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use mcpwatch_e2e::{argv, eventually, is_exec_with, sha256_file, token, Agent};
use serde_json::Value;

/// A process that lives until killed and carries `tok` in its argv (`$0` of the shell).
fn long_running(tok: &str) -> std::process::Child {
    Command::new("/bin/sh")
        .args(["-c", "read x", tok])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap()
}

fn lineage_pids(ev: &Value) -> Vec<u64> {
    ev["lineage"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["pid"].as_u64().unwrap())
        .collect()
}

#[test]
fn exec_event_carries_argv_lineage_uid_exe_and_hash_within_two_seconds() {
    let mut agent = Agent::start();
    let tok = token("echo");
    let started = Instant::now();
    let out = Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("exec /bin/echo {tok}"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let ev = agent.wait_event(Duration::from_secs(2), |v| {
        v["type"] == "process_exec" && argv(v) == ["/bin/echo".to_string(), tok.clone()]
    });
    let p = &ev["process"];
    let echo = std::fs::canonicalize("/bin/echo").unwrap();
    assert_eq!(p["exe"], echo.to_str().unwrap());
    assert_eq!(p["filename"], "/bin/echo");
    assert_eq!(p["sha256"], sha256_file(&echo), "sha256 of {}", echo.display());
    assert_eq!(p["uid"], 0);
    assert_eq!(p["user"], "root");
    assert_eq!(p["comm"], "echo");
    assert_eq!(p["ppid"], std::process::id());
    // sh exec'd echo in place: the parent is this test, then its own ancestors.
    let lineage = lineage_pids(&ev);
    assert_eq!(lineage[0], u64::from(std::process::id()), "lineage {lineage:?}");
    assert_eq!(lineage.last(), Some(&1), "lineage reaches init: {lineage:?}");
    // The shell's own exec came first, with its argv.
    assert!(
        agent.count(|v| v["type"] == "process_exec"
            && argv(v)
                == [
                    "/bin/sh".to_string(),
                    "-c".into(),
                    format!("exec /bin/echo {tok}")
                ])
            == 1
    );
    eprintln!("exec event delivered {:?} after spawn", started.elapsed());
}

#[test]
fn three_deep_process_tree_has_exact_lineage() {
    let mut agent = Agent::start();
    let tok = token("tree");
    // `; true` keeps each shell from exec'ing its last command, so the tree really is
    // three shells deep.
    let script = format!("/bin/sh -c '/bin/sh -c \"/bin/echo {tok}; true\"; true'; true");
    let status = Command::new("/bin/sh")
        .arg("-c")
        .arg(&script)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let ev = agent.wait_event(Duration::from_secs(2), |v| {
        is_exec_with(v, &tok) && argv(v)[0] == "/bin/echo"
    });
    let lineage = ev["lineage"].as_array().unwrap();
    let shells: Vec<Vec<String>> = lineage[..3]
        .iter()
        .map(|a| {
            a["argv"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap().to_string())
                .collect()
        })
        .collect();
    assert_eq!(shells[0], ["/bin/sh", "-c", &format!("/bin/echo {tok}; true")]);
    assert_eq!(
        shells[1],
        [
            "/bin/sh",
            "-c",
            &format!("/bin/sh -c \"/bin/echo {tok}; true\"; true")
        ]
    );
    assert_eq!(shells[2], ["/bin/sh", "-c", &script]);
    assert_eq!(lineage[3]["pid"], std::process::id());
    // Each shell's pid is its child's ppid.
    assert_eq!(ev["process"]["ppid"], lineage[0]["pid"]);
    for a in &lineage[..3] {
        assert_eq!(
            a["exe"],
            std::fs::canonicalize("/bin/sh").unwrap().to_str().unwrap()
        );
    }
}

#[test]
fn process_started_before_the_agent_is_in_the_table() {
    let tok = token("early");
    let mut early = long_running(&tok);
    std::thread::sleep(Duration::from_millis(100));
    let agent = Agent::start();
    let pid = early.id();
    let procs = agent.get_json(&format!("/v1/processes?pid={pid}"));
    let p = &procs.as_array().unwrap()[0];
    assert_eq!(p["pid"], pid);
    assert_eq!(p["origin"], "procfs");
    assert_eq!(p["argv"], serde_json::json!(["/bin/sh", "-c", "read x", tok]));
    assert_eq!(
        p["exe"],
        std::fs::canonicalize("/bin/sh").unwrap().to_str().unwrap()
    );
    assert_eq!(p["ppid"], std::process::id());
    assert_eq!(p["uid"], 0);
    assert!(p["cwd"].as_str().is_some_and(|c| !c.is_empty()));
    assert!(p["start_time"].as_str().is_some());
    eventually(Duration::from_secs(5), "seeded executable hashed", || {
        let p = &agent.get_json(&format!("/v1/processes?pid={pid}"))[0];
        p["sha256"] == sha256_file(&std::fs::canonicalize("/bin/sh").unwrap())
    });
    early.kill().unwrap();
    early.wait().unwrap();
}

#[test]
fn exit_status_and_fatal_signals_are_reported() {
    let mut agent = Agent::start();
    let tok = token("exit");
    let st = Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("exit 7; {tok}"))
        .status()
        .unwrap();
    assert_eq!(st.code(), Some(7));
    let exec = agent.wait_event(Duration::from_secs(2), |v| is_exec_with(v, &tok));
    let pid = exec["process"]["pid"].clone();
    let exit = agent.wait_event(Duration::from_secs(2), |v| {
        v["type"] == "process_exit" && v["process"]["pid"] == pid
    });
    assert_eq!(exit["process"]["exit_code"], 7);

    let mut victim = long_running(&tok);
    let vpid = victim.id();
    agent.wait_event(Duration::from_secs(2), |v| {
        v["type"] == "process_exec" && v["process"]["pid"] == vpid
    });
    victim.kill().unwrap();
    victim.wait().unwrap();
    let exit = agent.wait_event(Duration::from_secs(2), |v| {
        v["type"] == "process_exit" && v["process"]["pid"] == vpid
    });
    assert_eq!(exit["process"]["exit_signal"], 9);
    assert!(exit["process"]["exit_time"].is_string());
}

/// Makes the next fork get `pid` by setting the kernel's last-pid cursor just below it.
fn spawn_with_pid(pid: u32, tok: &str) -> Option<std::process::Child> {
    for _ in 0..200 {
        std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string()).unwrap();
        let child = long_running(tok);
        if child.id() == pid {
            return Some(child);
        }
        let mut child = child;
        child.kill().ok();
        child.wait().ok();
    }
    None
}

#[test]
fn pid_reuse_never_merges_two_processes() {
    let mut agent = Agent::start();
    let first_tok = token("first");
    let second_tok = token("second");
    let mut first = long_running(&first_tok);
    let pid = first.id();
    agent.wait_event(Duration::from_secs(2), |v| is_exec_with(v, &first_tok));
    first.kill().unwrap();
    first.wait().unwrap();
    agent.wait_event(Duration::from_secs(2), |v| {
        v["type"] == "process_exit" && v["process"]["pid"] == pid
    });

    let mut second =
        spawn_with_pid(pid, &second_tok).expect("could not get the same pid again within 200 tries");
    agent.wait_event(Duration::from_secs(2), |v| is_exec_with(v, &second_tok));
    let entries = agent.get_json(&format!("/v1/processes?pid={pid}"));
    let entries = entries.as_array().unwrap();
    assert_eq!(entries.len(), 2, "{entries:#?}");
    assert_ne!(entries[0]["entity_id"], entries[1]["entity_id"]);
    assert_eq!(entries[0]["argv"][3], first_tok.as_str());
    assert!(entries[0]["exit_time"].is_string());
    assert_eq!(entries[1]["argv"][3], second_tok.as_str());
    assert!(entries[1]["exit_time"].is_null());
    second.kill().unwrap();
    second.wait().unwrap();
}

/// Spawns `n` execs of /bin/true carrying `tok`, from two threads.
fn exec_flood(n: usize, tok: &str) {
    exec_flood_with(n, tok, "");
}

/// The flood with a further argument `pad` (the kernel sends only the argv bytes in
/// use, so a long argument makes each record big).
fn exec_flood_with(n: usize, tok: &str, pad: &str) {
    std::thread::scope(|s| {
        for part in [n / 2, n - n / 2] {
            s.spawn(move || {
                for _ in 0..part {
                    let mut cmd = Command::new("/bin/true");
                    cmd.arg(tok);
                    if !pad.is_empty() {
                        cmd.arg(pad);
                    }
                    let st = cmd.status().unwrap();
                    assert!(st.success());
                }
            });
        }
    });
}

fn kernel_exec_drops(agent: &Agent) -> f64 {
    agent.metric("mcpwatch_kernel_drops_total{kind=\"exec\"}")
}

/// Waits until the count of matching exec events stops growing (the ring is drained).
fn settled_count(agent: &mut Agent, tok: &str, expected: usize) -> usize {
    let mut last = usize::MAX;
    let mut stable_since = Instant::now();
    let start = Instant::now();
    loop {
        agent.poll_events();
        let n = agent.count(|v| is_exec_with(v, tok));
        if n != last {
            last = n;
            stable_since = Instant::now();
        }
        if n == expected
            || stable_since.elapsed() > Duration::from_secs(3)
            || start.elapsed() > Duration::from_secs(120)
        {
            // Kernel drop counters are read once a second.
            std::thread::sleep(Duration::from_millis(1500));
            return n;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn exec_flood_every_exec_is_delivered_or_counted_as_dropped() {
    const EXECS: usize = 20_000;
    let mut agent = Agent::start();
    let tok = token("flood");
    let drops_before = kernel_exec_drops(&agent);
    exec_flood(EXECS, &tok);
    let received = settled_count(&mut agent, &tok, EXECS);
    let drops = (kernel_exec_drops(&agent) - drops_before) as usize;
    eprintln!("flood: {EXECS} execs, {received} received, {drops} counted as dropped");
    assert_accounted(&agent, EXECS, received, drops);
}

/// Every exec is delivered or counted as dropped. Drop counters are per kind and
/// host-wide, so other processes' execs during the flood can only add to them: the
/// sum may exceed the flood by at most the foreign execs seen in the same window
/// (on a quiet CI machine, none).
fn assert_accounted(agent: &Agent, execs: usize, received: usize, drops: usize) {
    assert!(received <= execs);
    assert!(
        received + drops >= execs,
        "{received} received + {drops} dropped < {execs} execs: events were lost silently"
    );
    let foreign =
        agent.count(|v| v["type"] == "process_exec" && !argv(v).iter().any(|a| a.starts_with("mcpw-")));
    assert!(
        received + drops <= execs + foreign,
        "{received} received + {drops} dropped exceeds {execs} execs and the {foreign} foreign execs seen"
    );
}

#[test]
fn a_full_ring_buffer_is_counted_not_silent() {
    const EXECS: usize = 3_000;
    // With a 3.5 KB argument, 16 KiB holds four exec records: a burst must overflow
    // it, and every loss must be counted.
    let mut agent = Agent::start_with(&["--ringbuf-size", "16384", "--poll-interval-ms", "200"]);
    let tok = token("tiny");
    let drops_before = kernel_exec_drops(&agent);
    exec_flood_with(EXECS, &tok, &"x".repeat(3500));
    let received = settled_count(&mut agent, &tok, EXECS);
    let drops = (kernel_exec_drops(&agent) - drops_before) as usize;
    eprintln!("tiny ring: {EXECS} execs, {received} received, {drops} counted as dropped");
    assert!(
        drops > 0,
        "a 16 KiB ring buffer drained every 200 ms cannot hold {EXECS} execs"
    );
    assert_accounted(&agent, EXECS, received, drops);
}

#[test]
fn sigterm_flushes_events_already_captured() {
    let mut agent = Agent::start();
    let tok = token("flush");
    Command::new("/bin/true").arg(&tok).status().unwrap();
    // No waiting for the event: stop at once; the agent must drain and flush it.
    let status = agent.stop();
    assert!(status.success(), "agent exit status {status}\n{}", agent.log());
    assert_eq!(
        agent.count(|v| is_exec_with(v, &tok)),
        1,
        "event lost at shutdown"
    );
}

#[test]
fn health_readiness_and_metrics_endpoints() {
    let agent = Agent::start();
    assert_eq!(agent.get("/healthz").unwrap(), (200, "ok\n".to_string()));
    assert_eq!(agent.get("/readyz").unwrap().0, 200);
    Command::new("/bin/true").status().unwrap();
    eventually(Duration::from_secs(3), "exec counted", || {
        agent
            .metrics()
            .get("mcpwatch_events_total{kind=\"exec\"}")
            .is_some_and(|n| *n >= 1.0)
    });
    let (code, body) = agent.get("/metrics").unwrap();
    assert_eq!(code, 200);
    for family in [
        "mcpwatch_events_total{kind=\"exec\"}",
        "mcpwatch_events_total{kind=\"fork\"}",
        "mcpwatch_events_total{kind=\"exit\"}",
        "mcpwatch_kernel_drops_total{kind=\"exec\"}",
        "mcpwatch_process_table_entries{state=\"live\"}",
        "mcpwatch_process_table_memory_bytes",
        "mcpwatch_ringbuf_consumer_lag_seconds_count",
        "process_resident_memory_bytes",
    ] {
        assert!(body.contains(family), "{family} missing from /metrics:\n{body}");
    }
    assert!(body.contains("# TYPE mcpwatch_decode_errors counter"), "{body}");
    assert!(body.trim_end().ends_with("# EOF"));
}

#[test]
fn bad_configuration_is_a_clear_error_with_exit_78() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.yaml");
    std::fs::write(&cfg, "listen: [not, an, address]\n").unwrap();
    let out = Command::new(mcpwatch_e2e::agent_binary())
        .arg("run")
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("config.yaml") && err.contains("listen"), "{err}");

    let out = Command::new(mcpwatch_e2e::agent_binary())
        .args(["run", "--output", "carrier-pigeon:x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "clap usage error");
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown sink"));
}
