//! Test harness: starts the real `mcpwatch` binary (built by `cargo xtask test`, path
//! in `MCPWATCH_BIN`) on a free loopback port with a JSON Lines output file, and reads
//! back its events, metrics and API.
//!
//! These tests need root and a kernel with BPF; when either is missing they fail with
//! the reason. They never skip.

use std::{
    collections::HashMap,
    io::{BufRead, BufReader, Seek, SeekFrom},
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

pub mod netns;

pub fn agent_binary() -> PathBuf {
    let bin = std::env::var_os("MCPWATCH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            panic!("MCPWATCH_BIN is not set: run the end-to-end tests with `cargo xtask test`")
        });
    assert!(
        bin.exists(),
        "MCPWATCH_BIN={} does not exist: run `cargo xtask test`",
        bin.display()
    );
    bin
}

pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "end-to-end tests load eBPF and must run as root"
    );
}

/// A unique token for argv, so a test finds its own processes among the host's.
pub fn token(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("mcpw-{tag}-{}-{nanos}", std::process::id())
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// How to start an agent beyond the harness's own flags.
#[derive(Default)]
pub struct Launch<'a> {
    /// Extra arguments for `mcpwatch run`.
    pub args: &'a [&'a str],
    /// Extra environment variables.
    pub env: &'a [(&'a str, &'a str)],
    /// A command the agent runs under, e.g. `["setpriv", "--bounding-set", …, "--"]`.
    pub wrapper: &'a [&'a str],
}

pub struct Agent {
    child: Option<Child>,
    pub port: u16,
    pub dir: tempfile::TempDir,
    events_path: PathBuf,
    /// Read position in the events file and the events read so far.
    read_pos: u64,
    pub events: Vec<Value>,
}

impl Agent {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts the agent and waits until `/readyz` says it is attached and seeded.
    pub fn start_with(extra: &[&str]) -> Self {
        Self::start_in(tempfile::tempdir().unwrap(), extra)
    }

    /// Starts the agent with `dir` as its state directory (e.g. the one a killed
    /// agent left, to see what it does with it after a restart).
    pub fn start_in(dir: tempfile::TempDir, extra: &[&str]) -> Self {
        Self::launch_in(
            dir,
            &Launch {
                args: extra,
                ..Default::default()
            },
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts the agent as `launch` says and waits until it is ready; an agent that
    /// exits during start-up is an `Err` with its log (for tests that expect it).
    pub fn launch(launch: &Launch) -> Result<Self, String> {
        Self::launch_in(tempfile::tempdir().unwrap(), launch)
    }

    /// [`Agent::launch`] with `dir` as the state directory.
    pub fn launch_in(dir: tempfile::TempDir, launch: &Launch) -> Result<Self, String> {
        require_root();
        let events_path = dir.path().join("events.jsonl");
        let port = free_port();
        let stderr = std::fs::File::create(dir.path().join("agent.log")).unwrap();
        let bin = agent_binary();
        let mut cmd = match launch.wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        // A config file installed on this machine (/etc/mcpwatch/config.yaml) must not
        // leak into tests: an empty file means defaults, and flags below win anyway.
        cmd.env("MCPWATCH_CONFIG", "/dev/null");
        cmd.envs(launch.env.iter().copied());
        let child = cmd
            .arg("run")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--output")
            .arg(format!("jsonl:{}", events_path.display()))
            .arg("--state-dir")
            .arg(dir.path())
            .args(launch.args)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("starting mcpwatch");
        let mut agent = Agent {
            child: Some(child),
            port,
            dir,
            events_path,
            read_pos: 0,
            events: Vec::new(),
        };
        agent.wait_ready(Duration::from_secs(30))?;
        Ok(agent)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                return Err(format!(
                    "agent exited during start-up ({status}):\n{}",
                    self.log()
                ));
            }
            if self.get("/readyz").is_ok_and(|(code, _)| code == 200) {
                return Ok(());
            }
            assert!(
                start.elapsed() < timeout,
                "agent not ready after {timeout:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// GET on the agent's listener: (status, body).
    pub fn get(&self, path: &str) -> Result<(u16, String), ureq::Error> {
        let url = format!("http://127.0.0.1:{}{path}", self.port);
        let resp = ureq::get(&url)
            .config()
            .http_status_as_error(false)
            .build()
            .call()?;
        let code = resp.status().as_u16();
        let body = resp.into_body().read_to_string()?;
        Ok((code, body))
    }

    pub fn get_json(&self, path: &str) -> Value {
        let (code, body) = self.get(path).unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert_eq!(code, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
    }

    /// Metric samples by full series name (`name{labels}`).
    pub fn metrics(&self) -> HashMap<String, f64> {
        let (code, body) = self.get("/metrics").expect("GET /metrics");
        assert_eq!(code, 200);
        parse_metrics(&body)
    }

    /// The value of one series (`name{label="v",…}` as `/metrics` prints it). A
    /// missing series fails the test: "the backlog is 0" must not pass because the
    /// gauge is gone or was renamed.
    pub fn metric(&self, series: &str) -> f64 {
        let all = self.metrics();
        match all.get(series) {
            Some(v) => *v,
            None => panic!("{}", missing_series(series, &all)),
        }
    }

    /// Waits until `series` exists and its value satisfies `ok`; returns the value.
    /// Times out with the last value seen, or with the series that do exist when it
    /// never appeared.
    pub fn wait_metric(&self, timeout: Duration, series: &str, ok: impl Fn(f64) -> bool) -> f64 {
        let start = Instant::now();
        loop {
            let all = self.metrics();
            match all.get(series) {
                Some(v) if ok(*v) => return *v,
                Some(v) => assert!(
                    start.elapsed() < timeout,
                    "timed out after {timeout:?} waiting for {series}: last value {v}"
                ),
                None => assert!(
                    start.elapsed() < timeout,
                    "timed out after {timeout:?}: {}",
                    missing_series(series, &all)
                ),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Reads events appended since the last call.
    pub fn poll_events(&mut self) {
        let Ok(mut f) = std::fs::File::open(&self.events_path) else {
            return;
        };
        f.seek(SeekFrom::Start(self.read_pos)).unwrap();
        let mut reader = BufReader::new(f);
        let mut line = String::new();
        loop {
            line.clear();
            let n = reader.read_line(&mut line).unwrap();
            if n == 0 || !line.ends_with('\n') {
                break; // a partial line is re-read next time
            }
            self.read_pos += n as u64;
            let v: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("agent wrote invalid JSON ({e}): {line}"));
            self.events.push(v);
        }
    }

    /// Waits for the first event matching `pred`.
    pub fn wait_event(&mut self, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        let mut seen = 0;
        loop {
            self.poll_events();
            if let Some(v) = self.events[seen..].iter().find(|v| pred(v)) {
                return v.clone();
            }
            seen = self.events.len();
            if start.elapsed() > timeout {
                panic!(
                    "no matching event within {timeout:?} ({} events read)\nagent log:\n{}",
                    self.events.len(),
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Events read so far that match `pred`.
    pub fn count(&self, pred: impl Fn(&Value) -> bool) -> usize {
        self.events.iter().filter(|v| pred(v)).count()
    }

    /// Kills the agent with SIGKILL (no chance to flush) and hands back its state
    /// directory.
    pub fn kill(mut self) -> tempfile::TempDir {
        let mut child = self.child.take().expect("agent already stopped");
        child.kill().unwrap();
        child.wait().unwrap();
        std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap())
    }

    /// Stops the agent with SIGTERM and waits for a clean exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let child = self.child.as_ref().expect("agent already stopped");
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        self.wait_exit()
    }

    /// Waits (at most 20 s) for the agent to exit by itself, e.g. after a signal the
    /// test sent to it directly.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("agent already stopped");
        let start = Instant::now();
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                self.poll_events();
                return s;
            }
            if start.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                panic!("agent did not stop within 20 s of SIGTERM:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn parse_metrics(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect()
}

fn missing_series(series: &str, all: &HashMap<String, f64>) -> String {
    let name = series.split('{').next().unwrap_or(series);
    let mut same: Vec<&String> = all.keys().filter(|k| k.starts_with(name)).collect();
    same.sort();
    format!("metric series {series} is missing; series of that name: {same:?}")
}

/// The value at `path` (keys separated by `.`), which must exist: a check that a
/// value is null, absent-like or different passes for the wrong reason when the key
/// was renamed, so the key's presence is asserted first.
pub fn field<'a>(v: &'a Value, path: &str) -> &'a Value {
    let mut cur = v;
    for key in path.split('.') {
        cur = match cur {
            Value::Object(o) => o
                .get(key)
                .unwrap_or_else(|| panic!("no key {key:?} (of {path}) in {v:#}")),
            Value::Array(a) => key
                .parse::<usize>()
                .ok()
                .and_then(|i| a.get(i))
                .unwrap_or_else(|| panic!("no element {key} (of {path}) in {v:#}")),
            _ => panic!("{path}: {key:?} is not in a JSON object or array: {v:#}"),
        };
    }
    cur
}

/// A temporary directory every user may read, holding copies of `paths` (files or
/// directories): a process started as `nobody` reads its files there wherever the
/// checkout lives (a clone under a 0700 directory is unreadable to others).
pub fn world_readable_copy(paths: &[&Path]) -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    for p in paths {
        let out = Command::new("cp")
            .arg("-R")
            .arg("--no-preserve=mode,ownership")
            .arg(p)
            .arg(dir.path())
            .output()
            .expect("running cp");
        assert!(
            out.status.success(),
            "copying {}: {}",
            p.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // cp makes files 0644 and directories 0755 under the usual umask; do not rely on it.
    let out = Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(dir.path())
        .output()
        .expect("running chmod");
    assert!(out.status.success());
    dir
}

/// Process-event helpers.
pub fn argv(ev: &Value) -> Vec<String> {
    ev["process"]["argv"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| s.as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

pub fn is_exec_with(ev: &Value, token: &str) -> bool {
    ev["type"] == "process_exec" && argv(ev).iter().any(|a| a.contains(token))
}

pub fn sha256_file(path: &Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

/// Waits for a condition, polling.
pub fn eventually(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// The test environment `cargo xtask test` builds (Python venv, npm prefix).
pub fn test_env() -> PathBuf {
    let dir = std::env::var_os("MCPWATCH_TEST_ENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("MCPWATCH_TEST_ENV is not set: run the tests with `cargo xtask test`"));
    assert!(
        dir.join("venv/bin/python").exists(),
        "{} has no venv: run `cargo xtask test`",
        dir.display()
    );
    dir
}

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(name)
}

pub fn venv_bin(name: &str) -> PathBuf {
    test_env().join("venv/bin").join(name)
}

/// Runs a client to completion; returns its stdout and the pid it printed
/// (`client-pid N`).
pub fn run_client(cmd: &mut Command) -> (String, u32) {
    let out = cmd.stderr(Stdio::piped()).output().expect("starting the client");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "client failed ({}):\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let pid = stdout
        .lines()
        .find_map(|l| l.strip_prefix("client-pid ").and_then(|p| p.trim().parse().ok()))
        .unwrap_or_else(|| panic!("client printed no pid:\n{stdout}"));
    (stdout, pid)
}

impl Agent {
    pub fn mcp_servers(&self) -> Vec<Value> {
        self.get_json("/v1/mcp-servers")
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Waits for an inventory entry matching `pred`.
    pub fn wait_server(&self, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            if let Some(s) = self.mcp_servers().into_iter().find(|s| pred(s)) {
                return s;
            }
            if start.elapsed() > timeout {
                panic!(
                    "no matching MCP server within {timeout:?}; inventory:\n{:#}\nagent log:\n{}",
                    Value::Array(self.mcp_servers()),
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Runs a command to completion (a failure to start is a test failure).
pub fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// A command's status and output, for assertion messages.
pub fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
