//! Detection precision end to end: what the launch heuristics suspect (what a process
//! runs, not what it names), wrappers looked through, and what of it reaches the SIEM.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use mcpwatch_e2e::{argv, eventually, fixture, run_client, test_env, token, venv_bin, Agent};
use serde_json::Value;

fn rules() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../rules.yaml")
        .display()
        .to_string()
}

/// An agent with a SIEM-like sink beside the harness's `jsonl` of every event: OCSF
/// alerts and inventory only, as a syslog/HEC/Elastic sink gets them.
fn agent_with_siem(extra: &[&str]) -> (Agent, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let siem = dir.path().join("siem.jsonl");
    let out = format!("jsonl:{}?format=ocsf&events=alerts", siem.display());
    let mut args = vec!["--rules".to_string(), rules(), "--output".into(), out];
    args.extend(extra.iter().map(|a| a.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    (Agent::start_in(dir, &args), siem)
}

fn siem_records(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad SIEM line ({e}): {l}")))
        .collect()
}

fn joined(v: &Value) -> String {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// A tree of files and directories named like MCP packages, as on a developer's
/// machine, for ordinary tools to read, copy, search, pack and edit.
fn workspace(root: &Path) {
    let w = |p: &str, s: &str| {
        let p = root.join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, s).unwrap();
    };
    w(
        "mcp-server-time/pyproject.toml",
        "[project]\nname = \"mcp-server-time\"\n",
    );
    w("mcp-server-time/src/mcp_server_time/__init__.py", "");
    w("fastmcp.py", "print('fastmcp')\n");
    w("mcp-server.py", "import mcp\n");
    w(
        "pkg/package.json",
        r#"{"name":"@modelcontextprotocol/server-github","version":"1.0.0"}"#,
    );
    w(
        "node_modules/@modelcontextprotocol/server-sequential-thinking/dist/index.js",
        "console.log('x')\n",
    );
    w("client.mjs", "process.exit(0)\n");
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .arg("-C")
            .arg(root.join("repo"))
            .args(args)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {out:?}");
    };
    w("repo/mcp-server-x/README.md", "x\n");
    git(&["init", "-q"]);
    git(&["add", "."]);
    git(&["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"]);
}

/// Ordinary commands that name MCP packages in their arguments (the issue's examples
/// and more). `D` is the workspace.
fn ordinary_commands(d: &str) -> Vec<Vec<String>> {
    let py = venv_bin("python").display().to_string();
    let seq = format!("{d}/node_modules/@modelcontextprotocol/server-sequential-thinking/dist/index.js");
    let lines = vec![
        format!("cp -r {d}/mcp-server-time {d}/copy-of-mcp-server-time"),
        format!("cat {d}/mcp-server.py"),
        format!("less -F {d}/mcp-server.py"),
        format!("grep -r @modelcontextprotocol/server- {d}"),
        format!("find {d} -name mcp-server-*"),
        format!("tar -czf {d}/mcp-server-time.tgz -C {d} mcp-server-time"),
        format!("git -C {d}/repo log -- mcp-server-x/"),
        format!("{py} -m pip install --no-index --find-links {d} mcp-server-fetch"),
        format!("{py} -m pip download --no-index --find-links {d} -d {d}/dl mcp-server-git"),
        format!("npm view --offline @modelcontextprotocol/server-github"),
        format!("npm pack --dry-run {d}/pkg"),
        format!("{py} -m py_compile {d}/fastmcp.py"),
        format!("vim -es -u NONE -c q {d}/mcp-server.py"),
        format!("sed -n 1p {d}/fastmcp.py"),
        format!("head -c 10 {d}/mcp-server.py"),
        format!("wc -l {d}/fastmcp.py"),
        format!("sha256sum {d}/mcp-server.py"),
        format!("ls -l {d}/mcp-server-time"),
        format!("stat {d}/fastmcp.py"),
        format!("file {d}/fastmcp.py"),
        format!("diff {d}/mcp-server.py {d}/fastmcp.py"),
        format!("zip -q {d}/mcp-server-time.zip {d}/mcp-server.py"),
        format!("xz -k {d}/mcp-server.py"),
        format!("strings {d}/mcp-server.py"),
        format!("jq .name {d}/pkg/package.json"),
        format!("timeout 40 node {d}/client.mjs node {seq}"),
        format!("node -e 0 {seq}"),
        format!("{py} {d}/fastmcp.py"),
        format!("env FOO=1 cat {d}/mcp-server.py"),
        format!("sh -c 'grep -c mcp {d}/mcp-server.py'"),
    ];
    lines
        .into_iter()
        .map(|l| {
            // Only the sh -c line has a quoted argument.
            match l.split_once(" '") {
                Some((head, quoted)) => {
                    let mut v: Vec<String> = head.split(' ').map(String::from).collect();
                    v.push(quoted.trim_end_matches('\'').to_string());
                    v
                }
                None => l.split(' ').map(String::from).collect(),
            }
        })
        .collect()
}

#[test]
fn ordinary_commands_that_name_mcp_packages_are_not_servers() {
    let (mut agent, siem) = agent_with_siem(&["--suspect-grace-secs", "2"]);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join(token("ws"));
    workspace(&d);
    let d = d.display().to_string();
    let commands = ordinary_commands(&d);
    assert!(commands.len() >= 20, "{}", commands.len());
    for c in &commands {
        // Their exit status does not matter (pip and npm have no registry here).
        let _ = Command::new(&c[0])
            .args(&c[1..])
            .current_dir(&d)
            .env("npm_config_cache", format!("{d}/npm-cache"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap_or_else(|e| panic!("{c:?}: {e}"));
    }
    // A control in the same run: a real server started without a client is a suspect
    // (so detection is on), and one that lives past the grace period reaches the SIEM.
    let server = venv_bin("mcp-server-time");
    let mut control = Command::new(&server)
        .arg("--local-timezone=UTC")
        .env("MCPWATCH_CONTROL", &d)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let control_pid = control.id();
    // The agent saw every command: each exec is in its event stream.
    let mut missing: Vec<&Vec<String>> = commands.iter().collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !missing.is_empty() && Instant::now() < deadline {
        agent.poll_events();
        let execs: Vec<Vec<String>> = agent
            .events
            .iter()
            .filter(|e| e["type"] == "process_exec")
            .map(argv)
            .collect();
        missing.retain(|c| !execs.contains(c));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(missing.is_empty(), "execs the agent did not report: {missing:?}");
    let suspect = agent.wait_server(Duration::from_secs(10), |s| s["pid"] == control_pid);
    assert_eq!(suspect["state"], "suspected", "{suspect:#}");
    eventually(Duration::from_secs(15), "the control suspect in the SIEM", || {
        siem_records(&siem).iter().any(|r| {
            r["unmapped"]["inventory"]["pid"] == control_pid
                && r["unmapped"]["inventory"]["event"] == "appeared"
        })
    });
    control.kill().unwrap();
    control.wait().unwrap();

    // Nothing that named a package became an entry, a SIEM record or an alert.
    let inventory = agent.mcp_servers();
    assert!(!inventory.is_empty(), "the control must be in the inventory");
    for s in &inventory {
        assert!(
            s["argv"].is_array() && s["pid"].is_u64(),
            "an entry without argv or pid: {s:#}"
        );
    }
    let phantom: Vec<Value> = inventory
        .into_iter()
        .filter(|s| s["pid"] != control_pid && joined(&s["argv"]).contains(&d))
        .collect();
    assert!(phantom.is_empty(), "phantom servers: {phantom:#?}");
    let records = siem_records(&siem);
    assert!(
        !records.is_empty(),
        "the SIEM sink wrote nothing (the control must be there)"
    );
    let leaked: Vec<&Value> = records
        .iter()
        .filter(|r| r["unmapped"]["inventory"]["pid"] != control_pid && r.to_string().contains(&d))
        .collect();
    assert!(
        leaked.is_empty(),
        "SIEM records for ordinary commands: {leaked:#?}"
    );
    agent.poll_events();
    let alerts: Vec<&Value> = agent
        .events
        .iter()
        .filter(|e| {
            e["type"] == "alert" && e["mcp_server"]["pid"] != control_pid && e.to_string().contains(&d)
        })
        .collect();
    assert!(alerts.is_empty(), "alerts for ordinary commands: {alerts:#?}");
    println!(
        "{} ordinary commands naming MCP packages: {} inventory entries, {} SIEM records, {} alerts",
        commands.len(),
        phantom.len(),
        leaked.len(),
        alerts.len()
    );
}

#[test]
fn a_suspect_that_ends_within_the_grace_period_stays_off_the_siem() {
    let (mut agent, siem) = agent_with_siem(&["--suspect-grace-secs", "30"]);
    let tok = token("brief");
    // A real server that exits at once (its stdin is empty): a suspect, locally.
    let mut brief = Command::new(venv_bin("mcp-server-time"))
        .env("MCPWATCH_TOKEN", &tok)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = brief.id();
    brief.wait().unwrap();
    let local = agent.wait_event(Duration::from_secs(10), |e| {
        e["type"] == "mcp_server" && e["action"] == "suspected" && e["server"]["pid"] == pid
    });
    assert_eq!(local["server"]["confidence"], "medium", "{local:#}");
    agent.wait_event(Duration::from_secs(10), |e| {
        e["type"] == "mcp_server" && e["action"] == "exited" && e["server"]["pid"] == pid
    });
    agent.wait_metric(
        Duration::from_secs(5),
        "mcpwatch_mcp_suspects_unannounced_total",
        |v| v >= 1.0,
    );
    // A confirmed server in the same run reaches the SIEM at once: the sink works.
    let (_, client) = run_client(
        Command::new(venv_bin("python"))
            .arg(fixture("mcp_client.py"))
            .args(["legacy", venv_bin("mcp-server-time").to_str().unwrap()]),
    );
    eventually(
        Duration::from_secs(10),
        "the confirmed server in the SIEM",
        || {
            siem_records(&siem).iter().any(|r| {
                r["unmapped"]["inventory"]["host_pid"] == client
                    && r["unmapped"]["inventory"]["event"] == "appeared"
            })
        },
    );
    let records = siem_records(&siem);
    // The records carry the server's pid (so the filter below can find the brief one).
    assert!(
        records
            .iter()
            .any(|r| r["unmapped"]["inventory"]["host_pid"] == client
                && r["unmapped"]["inventory"]["pid"].is_u64()),
        "no pid in the SIEM's inventory records: {records:#?}"
    );
    let about: Vec<Value> = records
        .into_iter()
        .filter(|r| r["unmapped"]["inventory"]["pid"] == pid)
        .collect();
    assert!(about.is_empty(), "a brief suspect reached the SIEM: {about:#?}");
}

/// `(wrapper name, argv before the server's)`: wrappers that fork their command
/// (timeout, setsid as a group leader, a shell running two commands) and wrappers that
/// exec it in their own pid (env, nice, nohup, stdbuf, ionice, chrt, taskset, `exec`).
fn wrappers() -> Vec<(&'static str, Vec<&'static str>)> {
    vec![
        ("timeout", vec!["timeout", "60"]),
        ("nice", vec!["nice", "-n", "5"]),
        ("env", vec!["env", "MCPW_WRAPPED=1"]),
        ("setsid", vec!["setsid"]),
        ("nohup", vec!["nohup"]),
        ("stdbuf", vec!["stdbuf", "-oL"]),
        ("ionice", vec!["ionice", "-c", "3"]),
        ("chrt", vec!["chrt", "-o", "0"]),
        ("taskset", vec!["taskset", "-c", "0"]),
    ]
}

fn chain_names(s: &Value) -> Vec<String> {
    s["launch_chain"]
        .as_array()
        .unwrap_or_else(|| panic!("no launch_chain: {s:#}"))
        .iter()
        .map(|a| {
            let a0 = a["argv"][0].as_str().unwrap_or_default();
            a0.rsplit('/').next().unwrap_or(a0).to_string()
        })
        .collect()
}

#[test]
fn a_server_behind_each_wrapper_is_one_entry_with_the_wrapper_in_its_launch_chain() {
    let agent = Agent::start_with(&["--rules", rules().as_str()]);
    let server = venv_bin("mcp-server-time").display().to_string();
    let mut cases: Vec<(String, Vec<String>)> = wrappers()
        .into_iter()
        .map(|(name, pre)| {
            let mut v: Vec<String> = pre.iter().map(|s| s.to_string()).collect();
            v.push(server.clone());
            (name.to_string(), v)
        })
        .collect();
    cases.push((
        "sh".into(),
        vec!["sh".into(), "-c".into(), format!("exec {server}")],
    ));
    cases.push((
        "bash".into(),
        vec!["bash".into(), "-c".into(), format!("MCPW=1 {server}; true")],
    ));
    cases.push((
        "timeout".into(),
        vec![
            "timeout".into(),
            "60".into(),
            "env".into(),
            "A=1".into(),
            "nice".into(),
            server.clone(),
        ],
    ));
    let mut tried = 0;
    for (wrapper, cmd) in &cases {
        let mut c = Command::new(venv_bin("python"));
        c.arg(fixture("mcp_client.py")).arg("legacy").args(cmd);
        let (out, client) = run_client(&mut c);
        assert!(out.contains("get_current_time"), "{wrapper}: {out}");
        let s = agent.wait_server(Duration::from_secs(5), |s| {
            s["host"]["pid"] == client && s["confidence"] == "high"
        });
        assert_eq!(s["name"], "mcp-time", "{wrapper}: {s:#}");
        let names = chain_names(&s);
        assert!(
            names.iter().any(|n| n == wrapper),
            "{wrapper} not in the launch chain {names:?}"
        );
        // Exactly one entry for this launch: nothing else whose chain reaches the client.
        let entries: Vec<Value> = agent
            .mcp_servers()
            .into_iter()
            .filter(|x| {
                x["launch_chain"]
                    .as_array()
                    .is_some_and(|c| c.iter().any(|a| a["pid"] == client))
            })
            .collect();
        assert_eq!(entries.len(), 1, "{wrapper}: {entries:#?}");
        tried += 1;
    }
    assert_eq!(tried, cases.len());
    println!("{tried} wrapped launches: one confirmed entry each, wrapper in the launch chain");
}

#[test]
fn an_npx_launch_is_one_entry_while_suspected() {
    // npx (suspected for the package it fetches) starts node (suspected for the script
    // it runs): the launcher is dismissed at once, before any handshake.
    let agent = Agent::start_with(&["--rules", rules().as_str()]);
    let npm = test_env().join("npm");
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new("npx")
        .args([
            "--no-install",
            "mcp-server-filesystem",
            dir.path().to_str().unwrap(),
        ])
        .current_dir(&npm)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let npx = child.id();
    let start = Instant::now();
    let node = agent.wait_server(Duration::from_secs(20), |s| {
        s["pid"] != npx
            && s["launch_chain"]
                .as_array()
                .is_some_and(|c| c.iter().any(|a| a["pid"] == npx))
    });
    assert_eq!(node["state"], "suspected", "{node:#}");
    eventually(Duration::from_secs(5), "npx dismissed", || {
        agent.mcp_servers().iter().all(|s| s["pid"] != npx)
    });
    let _ = child.kill();
    let _ = child.wait();
    println!("npx dismissed {:?} after exec", start.elapsed());
}
