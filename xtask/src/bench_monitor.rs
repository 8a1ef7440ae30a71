//! The monitors the bench compares: mcpwatch (every sensor on, or its floor: same hooks,
//! programs inert), auditd with execve+connect rules, and a bpftrace exec+connect
//! tracer writing to a file. Each is started before a configuration's storms and
//! stopped after them; Drop guards restore the host (audit off, no rules) on any error.

use std::{
    io::{Read as _, Seek as _, SeekFrom},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use crate::{bench_workloads::Workload, util};

/// What the bench needs to start any monitor.
pub struct MonitorEnv {
    pub agent_bin: PathBuf,
    pub work: PathBuf,
}

/// Counters read before and after a storm.
#[derive(Clone, Copy, Default, Debug)]
pub struct Snapshot {
    pub cpu_s: f64,
    /// Events the monitor says it lost (kernel drops, audit `lost`, bpftrace "Lost").
    pub lost: u64,
    /// mcpwatch: payload records decoded (host-wide).
    pub payload_records: u64,
    /// auditd: `backlog_wait_time_actual` (time audited syscalls were held back).
    pub backlog_wait: u64,
}

/// Events of one storm the monitor delivered.
pub struct Delivered {
    /// Operations accounted for (events; for the UDP storm, datagrams).
    pub ops: u64,
    /// Records that carried them.
    pub events: u64,
}

pub enum Monitor {
    Agent(BenchAgent),
    Auditd(Auditd),
    Bpftrace(Bpftrace),
}

impl Monitor {
    pub fn snapshot(&mut self, w: Workload) -> Snapshot {
        match self {
            Self::Agent(a) => a.snapshot(w),
            Self::Auditd(a) => a.snapshot(),
            Self::Bpftrace(b) => b.snapshot(),
        }
    }

    pub fn rss_peak_kib(&self) -> u64 {
        match self {
            Self::Agent(a) => vm_hwm_kib(a.child.id()),
            Self::Auditd(a) => vm_hwm_kib(a.child.id()),
            Self::Bpftrace(b) => vm_hwm_kib(b.child.id()),
        }
    }

    /// Called once the storm `pid` exists, before its timed loop: for a candidate
    /// under mcpwatch, waits until the agent marked it suspected (true) or gives up.
    pub fn before_go(&mut self, w: Workload, pid: u32) -> Option<bool> {
        match self {
            Self::Agent(a) if w.candidate() && !a.floor => Some(a.wait_suspected(pid)),
            _ => None,
        }
    }

    /// After the storm: waits until the monitor caught up with it and counts what it
    /// delivered of it, where that can be counted.
    pub fn settle(&mut self, w: Workload, pid: u32, token: &str, expected: u64) -> Option<Delivered> {
        match self {
            Self::Agent(a) => a.settle(w, pid, token, expected),
            Self::Auditd(a) => a.settle(w, pid, expected),
            Self::Bpftrace(b) => b.settle(w, pid, expected),
        }
    }

    pub fn stop(self) -> Result<()> {
        match self {
            Self::Agent(mut a) => {
                a.stop();
                Ok(())
            }
            Self::Auditd(a) => a.stop(),
            Self::Bpftrace(b) => b.stop(),
        }
    }
}

/// Reads what was appended to a file since the last call, whole lines only.
pub struct Tail {
    path: PathBuf,
    offset: u64,
}

impl Tail {
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            offset: 0,
        }
    }

    /// Calls `f` on every complete line appended since the last call; returns how many.
    pub fn poll(&mut self, mut f: impl FnMut(&str)) -> usize {
        let Ok(mut file) = std::fs::File::open(&self.path) else {
            return 0;
        };
        if file.seek(SeekFrom::Start(self.offset)).is_err() {
            return 0;
        }
        let mut buf = Vec::new();
        let _ = file.read_to_end(&mut buf);
        let complete = buf.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let text = String::from_utf8_lossy(&buf[..complete]);
        let mut n = 0;
        for l in text.lines() {
            f(l);
            n += 1;
        }
        self.offset += complete as u64;
        n
    }
}

/// Polls `tail` until `count` reaches `expected` or nothing matching came for `quiet`.
fn wait_count(tail: &mut Tail, expected: u64, quiet: Duration, mut on_line: impl FnMut(&str) -> u64) -> u64 {
    let mut got = 0;
    let mut last = Instant::now();
    loop {
        let mut grew = false;
        tail.poll(|l| {
            let v = on_line(l);
            if v > 0 {
                got += v;
                grew = true;
            }
        });
        if grew {
            last = Instant::now();
        }
        if got >= expected || last.elapsed() > quiet {
            return got;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// CPU time of a process (every thread, also those that ended), in seconds: the
/// kernel's exact per-process clock, or /proc's 10 ms ticks if that is unavailable.
pub fn cpu_seconds(pid: u32) -> f64 {
    let mut clock: libc::clockid_t = 0;
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: both calls only write into the locals passed.
    if unsafe { libc::clock_getcpuclockid(pid as libc::pid_t, &mut clock) } == 0
        && unsafe { libc::clock_gettime(clock, &mut ts) } == 0
    {
        return ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after_comm = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = after_comm.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime) are 12 and 13 after the comm.
    let ticks: f64 = f.get(11).and_then(|x| x.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

fn vm_hwm_kib(pid: u32) -> u64 {
    crate::measure::proc_status_kib(pid, "VmHWM")
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: signalling our own child, which has not been reaped yet.
    unsafe { libc::kill(child.id() as i32, sig) };
}

/// Waits for `child` up to `limit`, then kills it.
fn wait_or_kill(child: &mut Child, limit: Duration) {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Minimal HTTP/1.0 GET on loopback (the bench has no HTTP client dependency).
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let code = buf.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_string())
        .unwrap_or_default();
    Some((code, body))
}

/// `"key":N` in a JSON line (matching lines is all the bench does with events).
pub fn parse_json_u64(line: &str, key: &str) -> Option<u64> {
    let rest = line.split_once(&format!("\"{key}\":"))?.1;
    let end = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
    rest[..end].parse().ok()
}

// ---------------------------------------------------------------------------------
// mcpwatch

/// The agent with the repository's rules.yaml, events to a JSONL file.
pub struct BenchAgent {
    child: Child,
    port: u16,
    pub events: PathBuf,
    tail: Tail,
    /// Floor mode: same hooks attached, every program returns at once.
    pub floor: bool,
    /// When the last storm ended (the drop counters refresh once a second).
    storm_end: Instant,
}

impl BenchAgent {
    pub fn start(bin: &Path, work: &Path, floor: bool) -> Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let events = work.join(if floor {
            "events-floor.jsonl"
        } else {
            "events.jsonl"
        });
        let _ = std::fs::remove_file(&events);
        let mut cmd = Command::new(bin);
        cmd.args(["run", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--output")
            .arg(format!("jsonl:{}", events.display()))
            .arg("--rules")
            .arg(util::root().join("rules.yaml"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if floor {
            cmd.env("MCPWATCH_SENSOR_FLOOR", "1");
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut a = Self {
            child,
            port,
            tail: Tail::new(&events),
            events,
            floor,
            storm_end: Instant::now(),
        };
        let t0 = Instant::now();
        while http_get(a.port, "/readyz").map(|(c, _)| c) != Some(200) {
            if let Ok(Some(st)) = a.child.try_wait() {
                bail!("the agent exited before it was ready: {st}");
            }
            if t0.elapsed() > Duration::from_secs(30) {
                bail!("agent not ready after 30 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Start-up work (seeding the table from /proc, hashing the executable of every
        // running process) must not be charged to the first storm of the run: wait
        // until the agent is idle (under 5 ms of CPU in 250 ms; at most 20 s).
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(20) {
            let before = cpu_seconds(a.child.id());
            std::thread::sleep(Duration::from_millis(250));
            if cpu_seconds(a.child.id()) - before < 0.005 {
                break;
            }
        }
        Ok(a)
    }

    fn metric_sum(&self, name: &str, kinds: &[&str]) -> u64 {
        http_get(self.port, "/metrics")
            .map(|(_, body)| {
                body.lines()
                    .filter_map(|l| {
                        let (series, v) = l.rsplit_once(' ')?;
                        let kind = series
                            .strip_prefix(name)?
                            .strip_prefix("{kind=\"")?
                            .strip_suffix("\"}")?;
                        kinds.contains(&kind).then(|| v.parse::<u64>().ok()).flatten()
                    })
                    .sum()
            })
            .unwrap_or(0)
    }

    fn snapshot(&mut self, w: Workload) -> Snapshot {
        // Everything so far belongs to earlier storms.
        self.tail.poll(|_| {});
        Snapshot {
            cpu_s: cpu_seconds(self.child.id()),
            lost: self.metric_sum("mcpwatch_kernel_drops_total", w.agent_drop_kinds()),
            payload_records: self.metric_sum("mcpwatch_events_total", &["payload"]),
            backlog_wait: 0,
        }
    }

    /// Waits (up to 5 s) for the agent's `mcp_server` "suspected" event for `pid`.
    pub fn wait_suspected(&mut self, pid: u32) -> bool {
        let id = format!("\"id\":\"mcp:{pid}:");
        let t0 = Instant::now();
        let mut seen = false;
        while !seen && t0.elapsed() < Duration::from_secs(5) {
            self.tail.poll(|l| {
                seen |= l.contains("\"type\":\"mcp_server\"")
                    && l.contains("\"action\":\"suspected\"")
                    && l.contains(&id);
            });
            if !seen {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        seen
    }

    fn settle(&mut self, w: Workload, pid: u32, token: &str, expected: u64) -> Option<Delivered> {
        self.storm_end = Instant::now();
        let owner = format!("\"process\":{{\"pid\":{pid},");
        let quiet = Duration::from_secs(3);
        let delivered = if self.floor {
            None
        } else {
            match w {
                Workload::Exec => {
                    let argv = format!("\"argv\":[\"/bin/true\",\"{token}\"]");
                    let k = wait_count(&mut self.tail, expected, quiet, |l| {
                        u64::from(l.contains("\"process_exec\"") && l.contains(&argv))
                    });
                    Some(Delivered { ops: k, events: k })
                }
                Workload::Connect => {
                    let k = wait_count(&mut self.tail, expected, quiet, |l| {
                        u64::from(
                            l.contains("\"network_connect\"")
                                && l.contains(&owner)
                                && l.contains("\"result\":\"ok\""),
                        )
                    });
                    Some(Delivered { ops: k, events: k })
                }
                Workload::Udp => {
                    // Flow records carry running totals: the largest is the count.
                    let mut best = 0;
                    let events = wait_count(&mut self.tail, u64::MAX, Duration::from_millis(1500), |l| {
                        if (l.contains("\"network_send\"") || l.contains("\"network_progress\""))
                            && l.contains(&owner)
                        {
                            best = best.max(parse_json_u64(l, "packets_sent").unwrap_or(0));
                            1
                        } else {
                            0
                        }
                    });
                    Some(Delivered { ops: best, events })
                }
                _ => None,
            }
        };
        // Let the once-a-second kernel drop counters catch up with this storm (the
        // floor's programs return before they could drop anything).
        if self.floor {
            return None;
        }
        let since = self.storm_end.elapsed();
        if since < Duration::from_millis(1100) {
            std::thread::sleep(Duration::from_millis(1100) - since);
        }
        delivered
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn stop(&mut self) {
        signal(&self.child, libc::SIGTERM);
        wait_or_kill(&mut self.child, Duration::from_secs(15));
    }
}

impl Drop for BenchAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------
// auditd

/// The audit rule performance.md §4.1 measured: every execve and connect of 64-bit
/// processes.
const AUDIT_RULE: &[&str] = &[
    "-a",
    "always,exit",
    "-F",
    "arch=b64",
    "-S",
    "execve",
    "-S",
    "connect",
];

fn auditctl(args: &[&str]) -> Result<String> {
    util::output(Command::new("auditctl").args(args))
}

/// `auditctl -s` as (name, value) pairs.
fn audit_status() -> Vec<(String, u64)> {
    auditctl(&["-s"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (k, v) = l.trim().split_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

fn audit_value(status: &[(String, u64)], key: &str) -> u64 {
    status.iter().find(|(k, _)| k == key).map_or(0, |(_, v)| *v)
}

/// Audit enabled or any rule loaded: someone else is auditing this host.
pub fn audit_active() -> Option<String> {
    let status = audit_status();
    if audit_value(&status, "enabled") != 0 {
        return Some("audit is enabled (auditctl -s: enabled 1)".into());
    }
    match auditctl(&["-l"]) {
        Ok(rules) if !rules.trim().is_empty() && !rules.contains("No rules") => {
            Some(format!("audit rules are loaded:\n{}", rules.trim()))
        }
        _ => None,
    }
}

/// Restores audit to "disabled, no rules, the backlog limit it had" when dropped.
struct AuditRestore {
    backlog_limit: u64,
}

impl Drop for AuditRestore {
    fn drop(&mut self) {
        let _ = auditctl(&["-D"]);
        let _ = auditctl(&["-e", "0"]);
        let _ = auditctl(&["-b", &self.backlog_limit.to_string()]);
    }
}

pub struct Auditd {
    child: Child,
    log: PathBuf,
    tail: Tail,
    kauditd: Option<u32>,
    // Dropped after `child` is stopped (fields drop in declaration order, but `stop`
    // and `Drop` stop the daemon explicitly first).
    restore: Option<AuditRestore>,
}

impl Auditd {
    /// auditd in the foreground with Debian's default configuration, except that it
    /// logs to a file of the bench's that is never rotated; then the rule.
    pub fn start(work: &Path) -> Result<Self> {
        let dir = work.join("audit");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let log = dir.join("audit.log");
        let conf = std::fs::read_to_string("/etc/audit/auditd.conf")
            .context("reading /etc/audit/auditd.conf (installed with auditd)")?;
        let conf: String = conf
            .lines()
            .map(|l| match l.split('=').next().map(str::trim) {
                Some("log_file") => format!("log_file = {}", log.display()),
                Some("max_log_file_action") => "max_log_file_action = ignore".to_string(),
                _ => l.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n");
        let conf_path = dir.join("auditd.conf");
        std::fs::write(&conf_path, conf + "\n")?;
        use std::os::unix::fs::PermissionsExt as _;
        // auditd refuses a configuration others may write.
        std::fs::set_permissions(&conf_path, std::fs::Permissions::from_mode(0o640))?;
        let backlog_limit = audit_value(&audit_status(), "backlog_limit");
        let restore = AuditRestore { backlog_limit };
        let child = Command::new("auditd")
            .arg("-n")
            .arg("-c")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("auditd.stderr"))?)
            .spawn()
            .context("starting auditd")?;
        let mut a = Self {
            child,
            tail: Tail::new(&log),
            log,
            kauditd: find_kernel_thread("kauditd"),
            restore: Some(restore),
        };
        let t0 = Instant::now();
        while audit_value(&audit_status(), "pid") != u64::from(a.child.id()) {
            if let Ok(Some(st)) = a.child.try_wait() {
                let err = std::fs::read_to_string(dir.join("auditd.stderr")).unwrap_or_default();
                bail!("auditd exited before it registered: {st}: {}", err.trim());
            }
            if t0.elapsed() > Duration::from_secs(15) {
                bail!("auditd did not register with the kernel within 15 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        auditctl(&["-b", "8192"])?;
        auditctl(AUDIT_RULE).context("adding the execve+connect audit rule")?;
        auditctl(&["-e", "1"])?;
        Ok(a)
    }

    fn snapshot(&mut self) -> Snapshot {
        self.tail.poll(|_| {});
        let status = audit_status();
        Snapshot {
            cpu_s: cpu_seconds(self.child.id()) + self.kauditd.map_or(0.0, cpu_seconds),
            lost: audit_value(&status, "lost"),
            payload_records: 0,
            backlog_wait: audit_value(&status, "backlog_wait_time_actual"),
        }
    }

    /// Counts the storm's SYSCALL records: execve by its children, connect by it.
    fn settle(&mut self, w: Workload, pid: u32, expected: u64) -> Option<Delivered> {
        let (syscall, owner) = match w {
            Workload::Exec => (" syscall=59 ", format!(" ppid={pid} ")),
            Workload::Connect => (" syscall=42 ", format!(" pid={pid} ")),
            _ => {
                std::thread::sleep(Duration::from_millis(200));
                return None;
            }
        };
        let k = wait_count(&mut self.tail, expected, Duration::from_secs(3), |l| {
            u64::from(l.starts_with("type=SYSCALL") && l.contains(syscall) && l.contains(&owner))
        });
        Some(Delivered { ops: k, events: k })
    }

    fn shutdown(&mut self) {
        let _ = auditctl(&["-D"]);
        signal(&self.child, libc::SIGTERM);
        wait_or_kill(&mut self.child, Duration::from_secs(10));
        // Audit off, no rules, backlog limit as found.
        self.restore.take();
    }

    fn stop(mut self) -> Result<()> {
        self.shutdown();
        let _ = std::fs::remove_file(&self.log);
        if let Some(why) = audit_active() {
            bail!("audit still active after stopping auditd: {why}");
        }
        Ok(())
    }
}

impl Drop for Auditd {
    fn drop(&mut self) {
        if self.restore.is_some() {
            self.shutdown();
        }
    }
}

fn find_kernel_thread(name: &str) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
        (comm.trim() == name).then_some(pid)
    })
}

// ---------------------------------------------------------------------------------
// bpftrace

pub struct Bpftrace {
    child: Child,
    out: PathBuf,
    err: PathBuf,
    tail: Tail,
    /// "Lost N events" seen on stdout so far.
    lost_out: u64,
}

fn lost_in(line: &str) -> u64 {
    line.trim()
        .strip_prefix("Lost ")
        .and_then(|r| r.strip_suffix(" events"))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

impl Bpftrace {
    /// `bpftrace -B line exec_connect.bt > file`; ready when it printed READY.
    pub fn start(work: &Path) -> Result<Self> {
        let script = util::root().join("xtask/workloads/exec_connect.bt");
        let out = work.join("bpftrace.out");
        let err = work.join("bpftrace.err");
        let child = Command::new("bpftrace")
            .args(["-B", "line"])
            .arg(&script)
            .stdout(std::fs::File::create(&out)?)
            .stderr(std::fs::File::create(&err)?)
            .spawn()
            .context("starting bpftrace")?;
        let mut b = Self {
            child,
            tail: Tail::new(&out),
            out,
            err,
            lost_out: 0,
        };
        let t0 = Instant::now();
        let mut ready = false;
        while !ready {
            b.tail.poll(|l| ready |= l.trim() == "READY");
            if let Ok(Some(st)) = b.child.try_wait() {
                let e = std::fs::read_to_string(&b.err).unwrap_or_default();
                bail!("bpftrace exited before READY: {st}: {}", e.trim());
            }
            if t0.elapsed() > Duration::from_secs(60) {
                bail!("bpftrace not ready after 60 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(b)
    }

    fn lost(&self) -> u64 {
        let err = std::fs::read_to_string(&self.err).unwrap_or_default();
        self.lost_out + err.lines().map(lost_in).sum::<u64>()
    }

    fn snapshot(&mut self) -> Snapshot {
        let mut lost = 0;
        self.tail.poll(|l| lost += lost_in(l));
        self.lost_out += lost;
        Snapshot {
            cpu_s: cpu_seconds(self.child.id()),
            lost: self.lost(),
            ..Default::default()
        }
    }

    /// Counts the storm's lines: execs whose parent is the storm, its connects.
    fn settle(&mut self, w: Workload, pid: u32, expected: u64) -> Option<Delivered> {
        let (prefix, owner) = match w {
            Workload::Exec => ("exec ", format!(" ppid={pid} ")),
            Workload::Connect => ("connect ", format!(" pid={pid} ")),
            _ => {
                std::thread::sleep(Duration::from_millis(200));
                return None;
            }
        };
        let mut lost = 0;
        let k = wait_count(&mut self.tail, expected, Duration::from_secs(3), |l| {
            lost += lost_in(l);
            u64::from(l.starts_with(prefix) && l.contains(&owner))
        });
        self.lost_out += lost;
        Some(Delivered { ops: k, events: k })
    }

    fn stop(mut self) -> Result<()> {
        signal(&self.child, libc::SIGINT);
        wait_or_kill(&mut self.child, Duration::from_secs(15));
        let _ = std::fs::remove_file(&self.out);
        Ok(())
    }
}

impl Drop for Bpftrace {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
