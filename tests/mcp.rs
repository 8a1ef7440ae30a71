//! MCP recognition end to end: real servers and clients from PyPI and npm, the real
//! agent with its eBPF payload sensor, the inventory API.

use std::{
    net::TcpStream,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use mcpwatch_e2e::{field, fixture, free_port, run_client, sha256_file, test_env, venv_bin, Agent};
use serde_json::Value;

/// Inventory entry of the confirmed server whose host is `client`.
fn hosted_by(agent: &Agent, client: u32) -> Value {
    agent.wait_server(Duration::from_secs(5), |s| {
        s["host"]["pid"] == client && s["confidence"] == "high"
    })
}

fn assert_pypi_time_server(s: &Value) {
    assert_eq!(s["name"], "mcp-time");
    assert_eq!(s["version"], "2026.10.19");
    assert_eq!(s["transport"], "stdio");
    assert_eq!(s["package"]["ecosystem"], "pypi");
    assert_eq!(s["package"]["name"], "mcp-server-time");
    assert_eq!(s["package"]["version"], "2026.10.19");
    assert_eq!(s["client"]["name"], "mcp");
    assert_eq!(s["sha256"].as_str().map(str::len), Some(64), "{s:#}");
}

fn py_client(args: &[&str]) -> Command {
    let mut c = Command::new(venv_bin("python"));
    c.arg(fixture("mcp_client.py")).args(args);
    c
}

#[test]
fn python_sdk_auto_mode_is_2026_07_28_discovery_over_pipes() {
    let agent = Agent::start_with(&["--rules", rules().as_str()]);
    let server = venv_bin("mcp-server-time");
    let (out, client) = run_client(&mut py_client(&["auto", server.to_str().unwrap()]));
    assert!(out.contains("get_current_time"), "{out}");
    let done = Instant::now();
    let s = hosted_by(&agent, client);
    // The server answered long before the client finished: it must be listed by now.
    assert!(
        done.elapsed() < Duration::from_secs(1),
        "inventory lagged {:?}",
        done.elapsed()
    );
    assert_pypi_time_server(&s);
    assert_eq!(s["protocol_version"], "2026-07-28");
    assert!(
        s["evidence"][0]
            .as_str()
            .unwrap()
            .starts_with("server/discover request read on pipe:["),
        "{s:#}"
    );
    assert_eq!(
        s["argv"][0]
            .as_str()
            .map(|a| a.ends_with("python") || a.ends_with("mcp-server-time")),
        Some(true)
    );
}

#[test]
fn python_sdk_legacy_mode_is_an_initialize_handshake() {
    let agent = Agent::start_with(&["--rules", rules().as_str()]);
    let server = venv_bin("mcp-server-time");
    let (_, client) = run_client(&mut py_client(&["legacy", server.to_str().unwrap()]));
    let s = hosted_by(&agent, client);
    assert_pypi_time_server(&s);
    assert_eq!(s["protocol_version"], "2025-11-25");
    assert!(s["evidence"][0]
        .as_str()
        .unwrap()
        .starts_with("initialize request read on pipe:["));
}

fn ts_client(args: &[&str]) -> Command {
    let env = test_env().join("npm");
    let mut c = Command::new("node");
    c.current_dir(&env).arg(env.join("ts_client.mjs")).args(args);
    c
}

fn assert_npm_filesystem_server(s: &Value) {
    assert_eq!(s["name"], "secure-filesystem-server");
    assert_eq!(s["version"], "0.2.0");
    assert_eq!(s["protocol_version"], "2025-11-25");
    assert_eq!(s["transport"], "stdio");
    assert_eq!(s["package"]["ecosystem"], "npm");
    assert_eq!(s["package"]["name"], "@modelcontextprotocol/server-filesystem");
    assert_eq!(s["package"]["version"], "2026.8.31");
    assert_eq!(s["client"]["name"], "mcpwatch-e2e-ts");
    assert_eq!(s["client"]["version"], "1.0.0");
}

/// The audit record of the listing a client asked `server_pid` for: answered, with
/// the tool set's digest, on `transport`, from the client's process when known.
fn audited_listing(agent: &mut Agent, server_pid: u64, transport: &str) -> Value {
    let r = agent.wait_event(Duration::from_secs(10), |e| {
        e["type"] == "mcp_request" && e["pid"] == server_pid && e["method"] == "tools/list"
    });
    for key in [
        "session",
        "jsonrpc_id",
        "request_bytes",
        "response_bytes",
        "latency_us",
        "tools_sha256",
    ] {
        assert!(!field(&r, key).is_null(), "{key} missing: {r:#}");
    }
    assert_eq!(r["outcome"], "ok", "{r:#}");
    assert_eq!(r["transport"], transport, "{r:#}");
    assert_eq!(r["direction"], "client_to_server", "{r:#}");
    assert!(r.get("truncated").is_none(), "{r:#}");
    r
}

/// The audit record of the handshake of `server_pid`, answered, on `transport`.
fn audited_handshake(agent: &mut Agent, server_pid: u64, transport: &str) -> Value {
    let r = agent.wait_event(Duration::from_secs(10), |e| {
        e["type"] == "mcp_request" && e["pid"] == server_pid && e["method"] == "initialize"
    });
    assert_eq!(r["outcome"], "ok", "{r:#}");
    assert_eq!(r["transport"], transport, "{r:#}");
    assert!(r["latency_us"].is_u64(), "{r:#}");
    r
}

#[test]
fn typescript_sdk_client_over_socketpairs() {
    let mut agent = Agent::start_with(&["--rules", rules().as_str()]);
    let dir = tempfile::tempdir().unwrap();
    let script = "node_modules/@modelcontextprotocol/server-filesystem/dist/index.js";
    let (_, client) = run_client(&mut ts_client(&["node", script, dir.path().to_str().unwrap()]));
    let s = hosted_by(&agent, client);
    assert_npm_filesystem_server(&s);
    // Node hosts give the child AF_UNIX socketpairs, not pipes.
    assert!(s["evidence"][0].as_str().unwrap().contains("socket:["), "{s:#}");
    // The session is audited over the socketpairs: the handshake and the listing.
    let listing = audited_listing(&mut agent, s["pid"].as_u64().unwrap(), "stdio");
    assert_eq!(listing["client"]["pid"], client, "{listing:#}");
    let handshake = agent.wait_event(Duration::from_secs(5), |e| {
        e["type"] == "mcp_request" && e["pid"] == s["pid"] && e["method"] == "initialize"
    });
    assert_eq!(handshake["outcome"], "ok", "{handshake:#}");
    assert_eq!(
        s["host"]["exe"],
        std::fs::canonicalize(which("node")).unwrap().to_str().unwrap()
    );
}

#[test]
fn launched_through_npx_from_a_local_package() {
    let agent = Agent::start_with(&["--rules", rules().as_str()]);
    let dir = tempfile::tempdir().unwrap();
    let (_, client) = run_client(&mut ts_client(&[
        "npx",
        "--no-install",
        "mcp-server-filesystem",
        dir.path().to_str().unwrap(),
    ]));
    let s = hosted_by(&agent, client);
    assert_npm_filesystem_server(&s);
    let chain: Vec<String> = s["launch_chain"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            a["argv"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_str().unwrap())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    assert!(
        chain.iter().any(|c| c.contains("npx")),
        "npx in the launch chain: {chain:#?}"
    );
    assert_eq!(
        s["launch_chain"].as_array().unwrap().last().unwrap()["pid"],
        client
    );
    // npx matched a launch pattern only because it launched the server.
    assert!(agent.mcp_servers().iter().all(|x| x["state"] != "suspected"
        || !chain[1..].iter().any(|c| {
            x["argv"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap())
                .collect::<Vec<_>>()
                .join(" ")
                == *c
        })));
}

#[test]
fn launched_through_sh_c() {
    let agent = Agent::start_with(&["--rules", rules().as_str()]);
    let server = venv_bin("mcp-server-time");
    // `; true` keeps sh from exec'ing the server: the chain really has a shell in it.
    let script = format!("{}; true", server.display());
    let (_, client) = run_client(&mut py_client(&["legacy", "/bin/sh", "-c", &script]));
    let s = hosted_by(&agent, client);
    assert_pypi_time_server(&s);
    let chain = s["launch_chain"].as_array().unwrap();
    assert_eq!(chain.len(), 3, "server, sh, client: {chain:#?}");
    assert_eq!(chain[1]["argv"], serde_json::json!(["/bin/sh", "-c", script]));
    assert_eq!(chain[2]["pid"], client);
}

/// An MCP server on HTTP (the Python SDK fixture or the TS everything server), killed
/// when dropped.
struct HttpServer(Child, u16);

impl HttpServer {
    /// The Python SDK fixture server in `transport`.
    fn start(transport: &str) -> Self {
        let port = free_port();
        let mut cmd = Command::new(venv_bin("python"));
        cmd.arg(fixture("mcp_http_server.py"))
            .args([transport, &port.to_string()]);
        Self::listening(&mut cmd, port, &format!("the Python SDK server ({transport})"))
    }

    /// The TypeScript SDK's everything server in `mode` (`streamableHttp`, `sse`), on a
    /// free port (it binds every interface).
    fn everything(mode: &str) -> Self {
        let port = free_port();
        let mut cmd = Command::new("node");
        cmd.current_dir(test_env().join("npm"))
            .arg(everything_script())
            .arg(mode)
            .env("PORT", port.to_string());
        Self::listening(&mut cmd, port, &format!("the everything server ({mode})"))
    }

    /// Starts `cmd` and waits until it listens on `port`.
    fn listening(cmd: &mut Command, port: u16, what: &str) -> Self {
        let child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "{what} did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self(child, port)
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn assert_http_fixture(s: &Value, server: &HttpServer, transport: &str) {
    assert_eq!(s["pid"], server.0.id());
    assert_eq!(s["name"], "mcpwatch-fixture-http");
    assert_eq!(s["version"], "1.2.3");
    assert_eq!(s["transport"], transport);
    assert_eq!(s["listen_address"], format!("127.0.0.1:{}", server.1));
    assert_eq!(s["state"], "confirmed");
    assert_eq!(s["package"]["ecosystem"], "script");
    assert_eq!(
        s["package"]["sha256"],
        sha256_file(&fixture("mcp_http_server.py"))
    );
}

#[test]
fn streamable_http_server_and_its_connecting_client() {
    let mut agent = Agent::start_with(&["--rules", rules().as_str()]);
    let server = HttpServer::start("streamable-http");
    let url = format!("http://127.0.0.1:{}/mcp", server.1);
    let (out, client) = run_client(&mut py_client(&["http", &url]));
    assert!(out.contains("add"), "{out}");
    let s = hosted_by(&agent, client);
    assert_http_fixture(&s, &server, "streamable-http");
    audited_listing(&mut agent, server.0.id() as u64, "streamable-http");
    assert_eq!(s["protocol_version"], "2026-07-28");
    assert_eq!(s["http_path"], "/mcp");
    // A freshly started client is captured too: both ends say who they are.
    assert_eq!(
        agent.metric("mcpwatch_mcp_http_client_lookups_total{source=\"capture\"}"),
        1.0
    );
}

/// A client that was running before the agent started (an IDE open for hours) has no
/// capture budget: only the server's side is captured, and the state stage's socket
/// table, not a `/proc` scan, names the process at the other end.
#[test]
fn an_http_client_older_than_the_agent_is_found_in_the_socket_table() {
    let dir = tempfile::tempdir().unwrap();
    let go = dir.path().join("url");
    let waiting = "import os, runpy, sys, time\n\
        while not os.path.exists(sys.argv[1]): time.sleep(0.05)\n\
        time.sleep(0.1)\n\
        url = open(sys.argv[1]).read().strip()\n\
        sys.argv = [sys.argv[2], 'http', url]\n\
        runpy.run_path(sys.argv[0], run_name='__main__')\n";
    let client = Command::new(venv_bin("python"))
        .args(["-c", waiting])
        .arg(&go)
        .arg(fixture("mcp_client.py"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let agent = Agent::start_with(&["--rules", rules().as_str()]);
    let server = HttpServer::start("streamable-http");
    std::fs::write(&go, format!("http://127.0.0.1:{}/mcp", server.1)).unwrap();
    let out = client.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("add"), "{stdout}");
    let pid: u32 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("client-pid ")?.trim().parse().ok())
        .unwrap_or_else(|| panic!("client printed no pid:\n{stdout}"));
    let s = hosted_by(&agent, pid);
    assert_http_fixture(&s, &server, "streamable-http");
    assert_eq!(
        agent.metric("mcpwatch_mcp_http_client_lookups_total{source=\"connections\"}"),
        1.0,
        "{:?}",
        agent.metrics()
    );
}

#[test]
fn legacy_http_sse_server() {
    let mut agent = Agent::start_with(&["--rules", rules().as_str()]);
    let server = HttpServer::start("sse");
    let url = format!("http://127.0.0.1:{}/sse", server.1);
    let (_, client) = run_client(&mut py_client(&["sse", &url]));
    let s = hosted_by(&agent, client);
    assert_http_fixture(&s, &server, "sse");
    // Legacy SSE: the request is POSTed, the answer comes on the GET's event stream;
    // both are one session, named by a digest of its id (a bearer secret).
    let listing = audited_listing(&mut agent, server.0.id() as u64, "sse");
    let session = listing["session"].as_str().unwrap();
    assert!(session.contains(":sse:"), "{listing:#}");
    let handshake = audited_handshake(&mut agent, server.0.id() as u64, "sse");
    assert_eq!(handshake["session"], session, "{handshake:#}");
    assert_eq!(s["protocol_version"], "2025-11-25");
}

/// The TypeScript SDK's reference server from npm (`@modelcontextprotocol/server-everything`).
fn everything_script() -> std::path::PathBuf {
    test_env().join("npm/node_modules/@modelcontextprotocol/server-everything/dist/index.js")
}

fn assert_npm_everything_server(s: &Value, transport: &str) {
    // A stdio server has exited by the time its client returns: confirmed, then exited.
    assert_eq!(s["confidence"], "high", "{s:#}");
    assert_ne!(s["state"], "suspected", "{s:#}");
    assert_eq!(s["name"], "mcp-servers/everything", "{s:#}");
    assert_eq!(s["title"], "Everything Reference Server");
    assert_eq!(s["version"], "2.0.0");
    assert_eq!(s["transport"], transport);
    assert_eq!(s["protocol_version"], "2025-11-25");
    assert_eq!(s["client"]["name"], "mcp");
    assert_eq!(s["package"]["ecosystem"], "npm");
    assert_eq!(s["package"]["name"], "@modelcontextprotocol/server-everything");
    assert_eq!(s["package"]["version"], "2026.8.31");
}

#[test]
fn typescript_sdk_everything_server_over_stdio() {
    let agent = Agent::start_with(&["--rules", rules().as_str()]);
    let script = everything_script();
    let (out, client) = run_client(&mut py_client(&[
        "auto",
        "node",
        script.to_str().unwrap(),
        "stdio",
    ]));
    assert!(out.contains("echo"), "{out}");
    let s = hosted_by(&agent, client);
    assert_npm_everything_server(&s, "stdio");
    assert!(
        s["evidence"][0]
            .as_str()
            .unwrap()
            .starts_with("initialize request read on pipe:["),
        "{s:#}"
    );
}

fn assert_ts_http_server(s: &Value, server: &HttpServer, transport: &str) {
    assert_eq!(s["pid"], server.0.id());
    assert_eq!(s["state"], "confirmed", "{s:#}");
    assert_npm_everything_server(s, transport);
    assert!(s["listen_address"].is_string(), "{s:#}");
    // Bound to `::`, the accepted socket has v4-mapped addresses: shown as IPv4.
    assert_eq!(s["listen_address"], format!("127.0.0.1:{}", server.1));
}

#[test]
fn typescript_sdk_streamable_http_server() {
    let mut agent = Agent::start_with(&["--rules", rules().as_str()]);
    let server = HttpServer::everything("streamableHttp");
    let url = format!("http://127.0.0.1:{}/mcp", server.1);
    let (out, client) = run_client(&mut py_client(&["http", &url]));
    assert!(out.contains("echo"), "{out}");
    let s = hosted_by(&agent, client);
    assert_ts_http_server(&s, &server, "streamable-http");
    // Node writes its answers vectored: a confirmed session's vectored writes are
    // still copied 4 KiB at a time, so only the (short) handshake is paired here.
    audited_handshake(&mut agent, server.0.id() as u64, "streamable-http");
    assert!(s["http_path"].is_string(), "{s:#}");
    assert_eq!(s["http_path"], "/mcp");
}

#[test]
fn typescript_sdk_legacy_http_sse_server() {
    let mut agent = Agent::start_with(&["--rules", rules().as_str()]);
    let server = HttpServer::everything("sse");
    let url = format!("http://127.0.0.1:{}/sse", server.1);
    let (out, client) = run_client(&mut py_client(&["sse", &url]));
    assert!(out.contains("echo"), "{out}");
    let s = hosted_by(&agent, client);
    assert_ts_http_server(&s, &server, "sse");
    // The POSTed handshake pairs with its answer on the event stream (see above for
    // the listing).
    let handshake = audited_handshake(&mut agent, server.0.id() as u64, "sse");
    assert!(
        handshake["session"].as_str().is_some_and(|x| x.contains(":sse:")),
        "{handshake:#}"
    );
    assert!(s["http_path"].is_string(), "{s:#}");
    assert!(
        s["http_path"]
            .as_str()
            .unwrap()
            .starts_with("/message?sessionId="),
        "{s:#}"
    );
}

/// Payload records the agent decoded so far.
fn payload_events(agent: &Agent) -> f64 {
    agent.metric("mcpwatch_events_total{kind=\"payload\"}")
}

#[test]
fn a_language_server_and_a_json_pipeline_are_not_mcp_servers() {
    let agent = Agent::start_with(&["--rules", rules().as_str()]);
    let before = payload_events(&agent);

    // A real LSP initialize exchange with python-lsp-server.
    let (out, _) = run_client(
        Command::new(venv_bin("python"))
            .arg(fixture("lsp_client.py"))
            .arg(venv_bin("pylsp")),
    );
    let lsp_pid: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("server-pid ")?.trim().parse().ok())
        .unwrap();
    assert!(out.contains("pylsp"), "{out}");

    // A pipeline stage that reads an MCP initialize request and answers it with JSON-RPC.
    let request = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"x","version":"1"}}}"#;
    let pipeline = format!(
        "printf '%s\\n' '{request}' | {} {} & echo client-pid $!; wait",
        venv_bin("python").display(),
        fixture("jsonrpc_pipeline.py").display()
    );
    let (out, pipe_pid) = run_client(Command::new("/bin/sh").arg("-c").arg(&pipeline));
    assert!(out.contains(r#""echo": "initialize""#), "{out}");

    // Positive control in the same run: the sensor really was capturing.
    let (_, client) = run_client(&mut py_client(&[
        "legacy",
        venv_bin("mcp-server-time").to_str().unwrap(),
    ]));
    hosted_by(&agent, client);
    assert!(payload_events(&agent) > before);

    std::thread::sleep(Duration::from_millis(500));
    let inventory = agent.mcp_servers();
    for s in &inventory {
        assert_ne!(
            *field(s, "pid"),
            lsp_pid,
            "the language server was taken for an MCP server: {s:#}"
        );
        assert_ne!(
            *field(s, "pid"),
            pipe_pid,
            "the JSON pipeline was taken for an MCP server: {s:#}"
        );
        assert!(*field(s, "name") != "pylsp", "{s:#}");
    }
}

fn rules() -> String {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../rules.yaml")
        .display()
        .to_string()
}

fn which(bin: &str) -> std::path::PathBuf {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {bin}"))
        .output()
        .unwrap();
    std::path::PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// Runs the Python SDK client (initialize, then tools/list) against
/// `noisy_server.py LINES server_args…` and returns the agent's `confirmed` event for
/// the server it hosted, after checking that the flood really happened.
fn noisy_session(agent: &mut Agent, lines: usize, server_args: &[&str]) -> Value {
    let python = venv_bin("python");
    let mut cmd = Command::new("timeout");
    cmd.args(["-k", "5", "60"])
        .arg(&python)
        .arg(fixture("mcp_client.py"))
        .arg("legacy")
        .arg(&python)
        .arg(fixture("noisy_server.py"))
        .arg(lines.to_string())
        .args(server_args);
    let started = Instant::now();
    let out = cmd.stderr(Stdio::piped()).output().expect("starting the client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "client failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stdout.contains("tools: ping"), "{stdout}");
    eprintln!(
        "noisy session {server_args:?}: client ran {:?}",
        started.elapsed()
    );
    // The flood really reached the client's stderr pipe, before and during serving.
    let logged = |what: &str| stderr.lines().filter(|l| l.contains(what)).count();
    assert_eq!(logged("\"starting up\""), lines, "{stderr:.2000}");
    assert!(logged("\"serving\"") > 0, "{stderr:.2000}");
    let client: u32 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("client-pid ")?.trim().parse().ok())
        .unwrap_or_else(|| panic!("client printed no pid:\n{stdout}"));

    let ev = agent.wait_event(Duration::from_secs(10), |e| {
        e["type"] == "mcp_server" && e["action"] == "confirmed" && e["server"]["host"]["pid"] == client
    });
    let s = field(&ev, "server").clone();
    assert_eq!(*field(&s, "state"), "confirmed", "{s:#}");
    assert_eq!(*field(&s, "confidence"), "high", "{s:#}");
    assert_eq!(*field(&s, "name"), "noisy-fixture", "{s:#}");
    assert_eq!(*field(&s, "version"), "3.1.4", "{s:#}");
    assert_eq!(*field(&s, "transport"), "stdio", "{s:#}");
    assert_eq!(*field(&s, "protocol_version"), "2025-11-25", "{s:#}");
    assert_eq!(*field(&s, "client.name"), "mcp", "{s:#}");
    assert!(
        field(&s, "evidence.0")
            .as_str()
            .is_some_and(|e| e.starts_with("initialize request read on pipe:[")),
        "{s:#}"
    );
    // And the inventory lists it (exited by now, or still confirmed).
    let pid = field(&s, "pid").clone();
    let listed = agent.wait_server(Duration::from_secs(5), |e| e["pid"] == pid);
    assert_eq!(*field(&listed, "name"), "noisy-fixture", "{listed:#}");
    assert!(
        ["confirmed", "exited"].contains(&field(&listed, "state").as_str().unwrap_or("")),
        "{listed:#}"
    );
    s
}

/// The script the server (or its parent, for `fork`) runs, in its launch chain entry.
fn runs_noisy_server(a: &Value) -> bool {
    field(a, "argv").as_array().is_some_and(|v| {
        v.iter()
            .any(|x| x.as_str().is_some_and(|x| x.ends_with("noisy_server.py")))
    })
}

/// Issue 12: a stdio server that logs thousands of JSON lines to stderr (a pipe, as
/// MCP clients set it up) and to a pipe of its own, before and while it serves, is
/// still confirmed: what it writes there cannot spend the budget its MCP channel needs.
#[test]
fn a_server_flooding_stderr_and_a_pipe_with_json_before_its_handshake_is_confirmed() {
    let mut agent = Agent::start_with(&["--rules", rules().as_str()]);
    let s = noisy_session(&mut agent, 2000, &[]);
    // Its parent is the client: the server is the exec'd process itself.
    assert_eq!(*field(&s, "launch_chain.1.pid"), *field(&s, "host.pid"), "{s:#}");
    assert!(runs_noisy_server(field(&s, "launch_chain.0")), "{s:#}");
}

/// The same server, forking first and serving from its child (which never execs):
/// the child carries on with its parent's capture budget.
#[test]
fn a_flooding_server_that_serves_from_a_forked_child_is_confirmed() {
    let mut agent = Agent::start_with(&["--rules", rules().as_str()]);
    let s = noisy_session(&mut agent, 2000, &["fork"]);
    let parent = field(&s, "launch_chain.1");
    assert_ne!(*field(parent, "pid"), *field(&s, "host.pid"), "{s:#}");
    assert!(runs_noisy_server(parent), "{s:#}");
    assert_eq!(*field(&s, "launch_chain.2.pid"), *field(&s, "host.pid"), "{s:#}");
}

/// The session audit: a real SDK client's tool calls on a real SDK server over stdio,
/// each one `mcp_request` record with the server, the client, the call and its
/// outcome, and no argument value.
#[test]
fn tool_calls_over_stdio_are_audited_without_their_argument_values() {
    let mut agent = Agent::start_with(&["--rules", rules().as_str()]);
    let name = mcpwatch_e2e::token("audit");
    let secret = format!("sk-live-{}", mcpwatch_e2e::token("secret"));
    let python = venv_bin("python");
    let call = |tool: &str, args: &str| {
        let mut cmd = Command::new(&python);
        cmd.arg(fixture("rules_client.py"))
            .args([tool, args, "stdio"])
            .arg(&python)
            .arg(fixture("rules_server.py"))
            .arg(&name);
        run_client(&mut cmd)
    };
    let (out, client) = call("sleep", r#"{"seconds": 0.25}"#);
    assert!(out.contains("result: slept"), "{out}");
    let ok = agent.wait_event(Duration::from_secs(10), |e| {
        e["type"] == "mcp_request" && e["server"]["name"] == *name && e["method"] == "tools/call"
    });
    for key in [
        "time",
        "server.id",
        "server.server_uid",
        "server.version",
        "server.protocol_version",
        "server.sanctioned",
        "server.user",
        "client.pid",
        "session",
        "transport",
        "direction",
        "jsonrpc_id",
        "target",
        "arguments.sha256",
        "arguments.keys",
        "outcome",
        "request_bytes",
        "response_bytes",
        "latency_us",
    ] {
        assert!(!field(&ok, key).is_null(), "{key} missing: {ok:#}");
    }
    assert_eq!(ok["target"], "sleep", "{ok:#}");
    assert_eq!(ok["outcome"], "ok", "{ok:#}");
    assert_eq!(ok["direction"], "client_to_server", "{ok:#}");
    assert_eq!(ok["transport"], "stdio", "{ok:#}");
    assert_eq!(ok["client"]["pid"], client, "{ok:#}");
    assert_eq!(ok["server"]["version"], "0.1.0", "{ok:#}");
    assert_eq!(ok["server"]["user"], "root", "{ok:#}");
    assert_eq!(ok["session"], format!("{}:stdio", ok["pid"]), "{ok:#}");
    assert_eq!(
        ok["arguments"]["keys"],
        serde_json::json!([{"name": "seconds", "type": "number"}]),
        "{ok:#}"
    );
    // The SHA-256 of the canonical arguments, whatever spacing the client used.
    let canonical = serde_json::to_string(&serde_json::json!({"seconds": 0.25})).unwrap();
    assert_eq!(
        ok["arguments"]["sha256"],
        sha256_hex(canonical.as_bytes()),
        "{ok:#}"
    );
    // The sleep is in the latency: from the request read to the answer written.
    let latency = ok["latency_us"].as_u64().unwrap();
    assert!((250_000..10_000_000).contains(&latency), "latency {latency} µs");
    assert!(ok["request_bytes"].as_u64().unwrap() > 40, "{ok:#}");

    // The SDK lists the tools after its first call: the server's tool surface, each
    // tool's digest and the set's, in the record and in the inventory.
    let listed = agent.wait_event(Duration::from_secs(10), |e| {
        e["type"] == "mcp_request" && e["server"]["name"] == *name && e["method"] == "tools/list"
    });
    assert_eq!(listed["outcome"], "ok", "{listed:#}");
    let digest = listed["tools_sha256"]
        .as_str()
        .unwrap_or_else(|| panic!("no tools_sha256: {listed:#}"));
    assert_eq!(digest.len(), 64, "{listed:#}");
    let updated = agent.wait_event(Duration::from_secs(10), |e| {
        e["type"] == "mcp_server" && e["action"] == "updated" && e["server"]["name"] == *name
    });
    assert_eq!(updated["server"]["tools"]["sha256"], digest, "{updated:#}");
    let names: Vec<&str> = updated["server"]["tools"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("no tool list: {updated:#}"))
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "big",
            "child_connect",
            "connect",
            "grow",
            "raw_socket",
            "sleep",
            "udp_socket"
        ]
    );
    let listed_again = agent.wait_server(Duration::from_secs(5), |s| {
        s["name"] == *name && s["tools"]["sha256"] == digest
    });
    assert_eq!(
        listed_again["tools"]["tools"][0]["sha256"].as_str().map(str::len),
        Some(64)
    );
    // The operator's view: `mcpwatch inventory --tools` prints the set and each tool.
    let out = Command::new(mcpwatch_e2e::agent_binary())
        .args(["inventory", "--tools", "--api"])
        .arg(format!("127.0.0.1:{}", agent.port))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(&format!("tools sha256:{digest}  (7 tools)")),
        "{text}"
    );
    let sleep_sha = listed_again["tools"]["tools"][5]["sha256"].as_str().unwrap();
    assert!(
        text.lines()
            .any(|l| l.trim_start().starts_with("sleep ") && l.ends_with(sleep_sha)),
        "{text}"
    );

    // A long answer (100 KiB of text, twice: as content and as structured content,
    // so ~200 KiB in one write, ~50 kernel records) is reassembled whole: in a
    // session, after a first call, as an agent makes them.
    let (out, _) = call("-", r#"[["sleep", {"seconds": 0}], ["big", {"kib": 100}]]"#);
    assert!(out.contains("xxxx"), "{}", &out[..out.len().min(200)]);
    let big = agent.wait_event(Duration::from_secs(10), |e| {
        e["type"] == "mcp_request" && e["server"]["name"] == *name && e["target"] == "big"
    });
    assert_eq!(big["outcome"], "ok", "{big:#}");
    let size = big["response_bytes"].as_u64().unwrap();
    assert!(size > 200 * 1024 && size < 210 * 1024, "response of {size} bytes");
    assert!(big.get("truncated").is_none(), "{big:#}");

    // Past 256 KiB (200 KiB twice: ~400 KiB in one write) the answer is recorded as
    // truncated, with its size, and the session goes on: the next call is paired.
    let (out, huge_client) = call(
        "-",
        r#"[["sleep", {"seconds": 0}], ["big", {"kib": 200}], ["sleep", {"seconds": 0}]]"#,
    );
    assert!(out.contains("result: slept"), "{}", &out[..out.len().min(200)]);
    let huge = agent.wait_event(Duration::from_secs(10), |e| {
        e["type"] == "mcp_request"
            && e["server"]["name"] == *name
            && e["target"] == "big"
            && e["client"]["pid"] == huge_client
    });
    assert_eq!(huge["truncated"], true, "{huge:#}");
    let size = huge["response_bytes"].as_u64().unwrap();
    assert!(size > 400 * 1024 && size < 420 * 1024, "response of {size} bytes");
    let after = agent.wait_event(Duration::from_secs(10), |e| {
        e["type"] == "mcp_request"
            && e["client"]["pid"] == huge_client
            && e["target"] == "sleep"
            && e["jsonrpc_id"].as_str() > huge["jsonrpc_id"].as_str()
    });
    assert_eq!(after["outcome"], "ok", "{after:#}");

    // A call to a tool the server lacks, with a secret in its arguments (read from a
    // file: a command line is another matter): a tool error on the record, and the
    // secret nowhere in what the agent wrote.
    let args_dir = tempfile::tempdir().unwrap();
    let args_file = args_dir.path().join("args.json");
    std::fs::write(&args_file, format!(r#"{{"token": "{secret}"}}"#)).unwrap();
    let (out, _) = call("exfiltrate", &format!("@{}", args_file.display()));
    assert!(out.contains("result:"), "{out}");
    let failed = agent.wait_event(Duration::from_secs(10), |e| {
        e["type"] == "mcp_request" && e["server"]["name"] == *name && e["target"] == "exfiltrate"
    });
    assert_eq!(failed["outcome"], "tool_error", "{failed:#}");
    assert_eq!(
        failed["arguments"]["keys"],
        serde_json::json!([{"name": "token", "type": "string", "length": secret.len()}]),
        "{failed:#}"
    );
    assert_eq!(
        agent.metric("mcpwatch_mcp_requests_total{method=\"tools/call\",outcome=\"ok\"}"),
        6.0
    );
    assert_eq!(
        agent.metric("mcpwatch_mcp_requests_total{method=\"tools/call\",outcome=\"tool_error\"}"),
        1.0
    );
    agent.stop();
    let written = std::fs::read_to_string(agent.dir.path().join("events.jsonl")).unwrap();
    assert!(written.contains(&*name), "the events file is the one written");
    assert!(!written.contains(&secret), "the secret reached the events");
    assert!(!agent.log().contains(&secret), "the secret reached the log");
}

/// A fast agent pipelines: `initialize`, then at once `notifications/initialized` and
/// `tools/list`. The fresh server writes its long listing (~25 KiB, the Python SDK in
/// one call) before the agent has confirmed it from the handshake's answer: the
/// handshake, the whole listing and the call after it are all in the audit.
#[test]
fn a_fresh_servers_handshake_and_the_long_listing_pipelined_behind_it_are_audited() {
    let mut agent = Agent::start_with(&["--rules", rules().as_str()]);
    let name = mcpwatch_e2e::token("pipelined");
    let pad = std::path::PathBuf::from(format!("/tmp/{name}.pad"));
    std::fs::write(&pad, "40").unwrap();
    let python = venv_bin("python");
    let result = std::panic::catch_unwind(|| {
        run_client(
            Command::new(&python)
                .arg(fixture("pipelined_client.py"))
                .arg(&python)
                .arg(fixture("rules_server.py"))
                .arg(&name),
        )
    });
    let _ = std::fs::remove_file(&pad);
    let (out, client) = result.unwrap_or_else(|e| std::panic::resume_unwind(e));
    assert!(out.contains("tools: 47"), "{out}");
    assert!(out.contains("result: slept"), "{out}");
    let mut record = |method: &'static str| {
        let name = name.clone();
        agent.wait_event(Duration::from_secs(10), move |e| {
            e["type"] == "mcp_request" && e["server"]["name"] == *name && e["method"] == method
        })
    };
    let handshake = record("initialize");
    assert_eq!(handshake["outcome"], "ok", "{handshake:#}");
    assert_eq!(handshake["client"]["pid"], client, "{handshake:#}");
    assert_eq!(handshake["jsonrpc_id"], "1", "{handshake:#}");
    let listing = record("tools/list");
    assert_eq!(listing["outcome"], "ok", "{listing:#}");
    assert!(listing.get("truncated").is_none(), "{listing:#}");
    let size = listing["response_bytes"].as_u64().unwrap();
    assert!(size > 20 * 1024, "a listing of {size} bytes");
    assert!(listing["tools_sha256"].is_string(), "{listing:#}");
    let call = record("tools/call");
    assert_eq!(call["target"], "sleep", "{call:#}");
    assert_eq!(call["outcome"], "ok", "{call:#}");
    let server = agent.wait_server(Duration::from_secs(5), |s| {
        s["name"] == *name && s["tools"]["tools"].as_array().is_some_and(|t| t.len() == 47)
    });
    assert_eq!(server["tools"]["sha256"], listing["tools_sha256"]);

    // The operator's view: `mcpwatch audit`, filtered, as JSON lines and as a table.
    let api = format!("127.0.0.1:{}", agent.port);
    let audit = |args: &[&str]| {
        let out = Command::new(mcpwatch_e2e::agent_binary())
            .args(["audit", "--api", &api])
            .args(args)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    };
    let lines: Vec<Value> = audit(&["--server", &name, "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let methods: Vec<&str> = lines.iter().map(|r| r["method"].as_str().unwrap()).collect();
    assert_eq!(methods, ["initialize", "tools/list", "tools/call"], "{lines:#?}");
    assert_eq!(lines[2]["uid"], call["uid"]);
    let table = audit(&["--server", &name, "--tool", "sleep"]);
    let rows: Vec<&str> = table.lines().collect();
    assert_eq!(rows.len(), 2, "{table}");
    assert!(rows[0].starts_with("TIME"), "{table}");
    assert!(
        rows[1].contains(&*name) && rows[1].contains("tools/call") && rows[1].contains(" ok "),
        "{table}"
    );
    assert_eq!(
        audit(&["--server", &name, "--outcome", "timeout"]),
        "(no audit records)\n"
    );

    // --follow prints the records in the window (the first client's call), then new
    // ones as they come (the second client's), filtered.
    let mut follower = Command::new(mcpwatch_e2e::agent_binary())
        .args([
            "audit",
            "--follow",
            "--json",
            "--method",
            "tools/call",
            "--api",
            &api,
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let again = run_client(
        Command::new(&python)
            .arg(fixture("pipelined_client.py"))
            .arg(&python)
            .arg(fixture("rules_server.py"))
            .arg(&name),
    );
    assert!(again.0.contains("result: slept"), "{}", again.0);
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = follower.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(10)) {
        seen.push(serde_json::from_str::<Value>(&line).unwrap());
        if seen.last().unwrap()["client"]["pid"] == again.1 || seen.len() > 3 {
            break;
        }
    }
    let _ = follower.kill();
    let _ = follower.wait();
    assert!(!seen.is_empty(), "--follow printed nothing");
    assert!(seen.iter().all(|r| r["method"] == "tools/call"), "{seen:#?}");
    assert_eq!(seen.last().unwrap()["client"]["pid"], again.1, "{seen:#?}");
    agent.stop();
}

/// A session of 10 000 back-to-back tool calls: every call is one record (an answer
/// the kernel could not hand over still leaves its request's record, as
/// `unanswered`), and what is missing is counted as a kernel drop.
#[test]
fn a_session_of_ten_thousand_calls_is_audited_call_for_call() {
    const CALLS: usize = 10_000;
    let mut agent = Agent::start_with(&["--rules", rules().as_str()]);
    let name = mcpwatch_e2e::token("storm");
    let python = venv_bin("python");
    let (out, client) = run_client(
        Command::new(&python)
            .arg(fixture("storm_client.py"))
            .arg(CALLS.to_string())
            .arg(&python)
            .arg(fixture("rules_server.py"))
            .arg(&name),
    );
    assert!(out.contains(&format!("calls: {CALLS}")), "{out}");
    // The server exits with the session: its open requests, if any, are recorded.
    agent.wait_event(Duration::from_secs(60), |e| {
        e["type"] == "mcp_server" && e["action"] == "exited" && e["server"]["name"] == *name
    });
    let calls: Vec<&Value> = agent
        .events
        .iter()
        .filter(|e| e["type"] == "mcp_request" && e["server"]["name"] == *name && e["method"] == "tools/call")
        .collect();
    let dropped = agent.metric("mcpwatch_kernel_drops_total{kind=\"payload\"}") as usize;
    assert!(
        calls.len() <= CALLS && calls.len() + dropped >= CALLS,
        "{} records, {dropped} payload records dropped, for {CALLS} calls",
        calls.len()
    );
    let ok = calls.iter().filter(|e| e["outcome"] == "ok").count();
    assert!(ok + dropped >= CALLS, "{ok} answered, {dropped} dropped");
    assert!(calls.iter().all(|e| e["client"]["pid"] == client));
    // Each JSON-RPC id once: no call recorded twice.
    let ids: std::collections::HashSet<&str> =
        calls.iter().filter_map(|e| e["jsonrpc_id"].as_str()).collect();
    assert_eq!(ids.len(), calls.len());
    eprintln!("{out}: {} records, {ok} ok, {dropped} payload drops", calls.len());
    agent.stop();
}

/// A session that began before the agent: no handshake to see. The server (its
/// script name matches a launch pattern, so the `/proc` seed suspects it and captures
/// its stdio) is confirmed by a tool call and its answer, and audited from there.
#[test]
fn a_server_running_before_the_agent_is_confirmed_by_its_tool_calls() {
    let name = mcpwatch_e2e::token("preexisting");
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("fixture-mcp-server");
    std::fs::copy(fixture("rules_server.py"), &script).unwrap();
    let python = venv_bin("python");
    let calls: Vec<String> = (0..24)
        .map(|_| r#"["sleep", {"seconds": 0}]"#.to_string())
        .collect();
    let mut client = Command::new(&python)
        .arg(fixture("rules_client.py"))
        .args(["-", &format!("[{}]", calls.join(",")), "stdio"])
        .arg(&python)
        .arg(&script)
        .arg(&name)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The session is under way (its first calls done) before the agent starts.
    std::thread::sleep(Duration::from_millis(1500));
    let mut agent = Agent::start_with(&["--rules", rules().as_str()]);
    let server = agent.wait_server(Duration::from_secs(15), |s| {
        s["state"] == "confirmed"
            && s["launch_chain"][0]["argv"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x == &Value::from(name.as_str())))
    });
    let evidence = server["evidence"].to_string();
    assert!(
        evidence.contains("tools/call request read on pipe:["),
        "{server:#}"
    );
    assert!(evidence.contains("result of MCP's shape"), "{server:#}");
    let pid = server["pid"].clone();
    let call = agent.wait_event(Duration::from_secs(10), |e| {
        e["type"] == "mcp_request" && e["pid"] == pid && e["method"] == "tools/call"
    });
    assert_eq!(call["target"], "sleep", "{call:#}");
    assert_eq!(call["outcome"], "ok", "{call:#}");
    assert!(call["latency_us"].is_u64(), "{call:#}");
    let start = Instant::now();
    let status = loop {
        if let Some(st) = client.try_wait().unwrap() {
            break st;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the client did not finish"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success());
    agent.stop();
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(data))
}
