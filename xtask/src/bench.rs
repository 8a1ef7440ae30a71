//! `cargo xtask bench`: overhead measured side by side in one run. Configurations are
//! interleaved in a shuffled order every round, so machine drift hits all of them
//! alike; an A/A row (no monitor against no monitor) shows the noise floor.
//! Prints figures only: no pass/fail.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use crate::{build, setup, util};

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Rounds; each runs every configuration once, in a shuffled order.
    #[arg(long, default_value_t = 6)]
    rounds: usize,
    /// Execs per exec-storm run.
    #[arg(long, default_value_t = 20_000)]
    execs: u64,
    /// Loopback TCP connects per connect-storm run.
    #[arg(long, default_value_t = 20_000)]
    connects: u64,
    /// Datagrams per UDP-storm run.
    #[arg(long, default_value_t = 200_000)]
    datagrams: u64,
    /// 64-byte writes per pipe-storm run.
    #[arg(long, default_value_t = 500_000)]
    pipe_writes: u64,
    /// 1-byte writes to /dev/null per write-storm run.
    #[arg(long, default_value_t = 2_000_000)]
    writes: u64,
    /// Requests per loopback HTTP-storm run.
    #[arg(long, default_value_t = 20_000)]
    requests: u64,
    /// MCP sessions timed for detection latency.
    #[arg(long, default_value_t = 20)]
    sessions: usize,
    /// Execs whose telemetry goes through the spool to a local syslog receiver.
    #[arg(long, default_value_t = 5_000)]
    delivery_execs: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Config {
    None,
    NoneAa,
    Mcpwatch,
}

impl Config {
    fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::NoneAa => "none (A/A)",
            Self::Mcpwatch => "mcpwatch",
        }
    }
}

/// The storms, each a C program in `xtask/workloads/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Workload {
    /// posix_spawn + wait of /bin/true.
    Exec,
    /// Loopback TCP socket + connect + close (a server thread accepts).
    Connect,
    /// sendto() of 64-byte datagrams to a loopback UDP socket.
    Udp,
    /// 64-byte writes through a pipe by a process that is not an MCP server.
    Pipe,
    /// 1-byte writes to /dev/null.
    Write,
    /// HTTP/1.1 requests over a loopback keep-alive connection, not MCP.
    Http,
}

impl Workload {
    const ALL: [Workload; 6] = [
        Self::Exec,
        Self::Connect,
        Self::Udp,
        Self::Pipe,
        Self::Write,
        Self::Http,
    ];

    fn program(self) -> &'static str {
        match self {
            Self::Exec => "exec_storm",
            Self::Connect => "connect_storm",
            Self::Udp => "udp_storm",
            Self::Pipe => "pipe_storm",
            Self::Write => "write_storm",
            Self::Http => "http_storm",
        }
    }

    fn op(self) -> &'static str {
        match self {
            Self::Exec => "exec",
            Self::Connect => "connect",
            Self::Udp => "datagram",
            Self::Pipe | Self::Write => "write",
            Self::Http => "request",
        }
    }

    fn count(self, args: &BenchArgs) -> u64 {
        match self {
            Self::Exec => args.execs,
            Self::Connect => args.connects,
            Self::Udp => args.datagrams,
            Self::Pipe => args.pipe_writes,
            Self::Write => args.writes,
            Self::Http => args.requests,
        }
    }

    /// Kernel drop counters (`kind` labels) that concern this storm.
    fn drop_kinds(self) -> &'static [&'static str] {
        match self {
            Self::Exec => &["exec"],
            Self::Connect => &["connect", "accept", "tcp"],
            Self::Udp => &["udp_flow"],
            Self::Pipe | Self::Write | Self::Http => &["payload"],
        }
    }
}

#[derive(Debug, Default, Clone)]
struct Sample {
    ns_per_op: f64,
    wall_s: f64,
    /// Agent figures (mcpwatch only).
    agent_cpu_s: f64,
    /// Events (exec, connect) or, for the UDP storm, datagrams the agent accounted for.
    delivered: u64,
    /// Agent events that carried those figures.
    events: u64,
    dropped: u64,
    rss_peak_kib: u64,
}

pub fn bench(args: &BenchArgs) -> Result<()> {
    util::require_root("the bench")?;
    setup::setup()?;
    let agent_bin = build::build_agent()?;
    let env_dir = crate::testenv::ensure()?;
    let work = util::root().join("target").join("bench");
    std::fs::create_dir_all(&work)?;
    let mut programs = HashMap::new();
    for w in Workload::ALL {
        programs.insert(w, compile_workload(&work, w.program())?);
    }
    preflight()?;
    println!("machine: {} · {} CPUs · load {}", kernel(), num_cpus(), loadavg());
    println!(
        "per run: exec storm {} posix_spawn+wait of /bin/true; connect storm {} loopback TCP connects; \
         UDP storm {} sendto of 64 B; pipe storm {} writes of 64 B; write storm {} writes of 1 B; \
         HTTP storm {} requests; {} rounds",
        args.execs, args.connects, args.datagrams, args.pipe_writes, args.writes, args.requests, args.rounds
    );

    let configs = [Config::None, Config::NoneAa, Config::Mcpwatch];
    let mut samples: HashMap<(Config, Workload), Vec<Sample>> = HashMap::new();
    let mut rng = Lcg::seeded();
    for round in 0..args.rounds {
        let mut order = configs.to_vec();
        rng.shuffle(&mut order);
        for cfg in order {
            // One agent per configuration run, measured over every storm in turn.
            let mut agent = match cfg {
                Config::Mcpwatch => Some(BenchAgent::start(&agent_bin, &work)?),
                _ => None,
            };
            for w in Workload::ALL {
                let s = run_storm(w, agent.as_mut(), &programs[&w], w.count(args))
                    .with_context(|| format!("round {round}, {}, {}", cfg.name(), w.program()))?;
                eprintln!(
                    "  round {round} {:<10} {:<13} {:>8.0} ns/{}",
                    cfg.name(),
                    w.program(),
                    s.ns_per_op,
                    w.op()
                );
                samples.entry((cfg, w)).or_default().push(s);
            }
            if let Some(a) = agent.as_mut() {
                a.stop();
            }
        }
    }
    for w in Workload::ALL {
        report(args, w, &samples);
    }
    detection_latency(&agent_bin, &work, &env_dir, args.sessions)?;
    crate::bench_delivery::bench_delivery(&agent_bin, &programs[&Workload::Exec], &work, args.delivery_execs)
}

/// From an MCP server's first response (kernel timestamp) to its inventory entry,
/// over real SDK sessions (Python client, mcp-server-time from PyPI).
fn detection_latency(agent_bin: &Path, work: &Path, env_dir: &Path, sessions: usize) -> Result<()> {
    let mut agent = BenchAgent::start(agent_bin, work)?;
    let python = env_dir.join("venv/bin/python");
    let client = util::root().join("tests/fixtures/mcp_client.py");
    let server = env_dir.join("venv/bin/mcp-server-time");
    for _ in 0..sessions {
        util::output(Command::new(&python).arg(&client).arg("auto").arg(&server))?;
    }
    std::thread::sleep(Duration::from_millis(500));
    agent.stop();
    let text = std::fs::read_to_string(&agent.events)?;
    let mut lat: Vec<f64> = text
        .lines()
        .filter(|l| l.contains("\"mcp_server\"") && l.contains("\"action\":\"confirmed\""))
        .filter_map(|l| {
            let i = l.find("\"detection_latency_ms\":")? + 23;
            l[i..].split([',', '}']).next()?.parse().ok()
        })
        .collect();
    lat.sort_by(|a, b| a.total_cmp(b));
    println!();
    println!("MCP detection latency (server's first response → inventory entry), {sessions} stdio sessions:");
    if lat.is_empty() {
        println!("  no confirmed server seen: detection FAILED");
        return Ok(());
    }
    let p99 = lat[((lat.len() as f64 * 0.99).ceil() as usize)
        .saturating_sub(1)
        .min(lat.len() - 1)];
    println!(
        "  {} of {sessions} confirmed; median {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        lat.len(),
        median(&lat),
        p99,
        lat[lat.len() - 1]
    );
    Ok(())
}

fn report(args: &BenchArgs, w: Workload, samples: &HashMap<(Config, Workload), Vec<Sample>>) {
    let base = &samples[&(Config::None, w)];
    println!();
    println!("{}:", w.program());
    println!(
        "{:<12} {:>10} {:>26} {:>12}",
        "config",
        format!("µs/{}", w.op()),
        "ratio to none (med min–max)",
        "added µs/op"
    );
    for cfg in [Config::None, Config::NoneAa, Config::Mcpwatch] {
        let s = &samples[&(cfg, w)];
        let ratios: Vec<f64> = s
            .iter()
            .zip(base)
            .map(|(a, b)| a.ns_per_op / b.ns_per_op)
            .collect();
        let added: Vec<f64> = s
            .iter()
            .zip(base)
            .map(|(a, b)| (a.ns_per_op - b.ns_per_op) / 1000.0)
            .collect();
        let (lo, med, hi) = stats(&ratios);
        println!(
            "{:<12} {:>10.2} {:>12.3} ({:.3}–{:.3}) {:>12.2}",
            cfg.name(),
            median(&s.iter().map(|x| x.ns_per_op / 1000.0).collect::<Vec<_>>()),
            med,
            lo,
            hi,
            median(&added),
        );
    }
    let m = &samples[&(Config::Mcpwatch, w)];
    let delivered: u64 = m.iter().map(|s| s.delivered).sum();
    let events: u64 = m.iter().map(|s| s.events).sum();
    let dropped: u64 = m.iter().map(|s| s.dropped).sum();
    let expected = w.count(args) * m.len() as u64;
    let cpu_per_op: Vec<f64> = m
        .iter()
        .map(|s| s.agent_cpu_s * 1e6 / w.count(args).max(1) as f64)
        .collect();
    println!("mcpwatch, {}:", w.program());
    match w {
        Workload::Udp => println!(
            "  completeness        flow reported with its process in {}/{} runs ({events} events); \
             {delivered}/{expected} datagrams in the last reports (counted in the kernel, totals go \
             out once per report interval, longer than this storm); {dropped} records dropped",
            m.iter().filter(|s| s.events > 0).count(),
            m.len()
        ),
        Workload::Pipe | Workload::Write | Workload::Http => println!(
            "  not MCP traffic: no events expected; {dropped} payload records dropped"
        ),
        _ => println!(
            "  completeness        {delivered}/{expected} {} events delivered ({:.2} %), {dropped} counted as dropped",
            w.op(),
            delivered as f64 * 100.0 / expected as f64
        ),
    }
    println!(
        "  agent CPU per {:<6} {:.2} µs (median; min {:.2}, max {:.2})",
        w.op(),
        median(&cpu_per_op),
        stats(&cpu_per_op).0,
        stats(&cpu_per_op).2
    );
    if matches!(w, Workload::Exec | Workload::Connect) {
        let rate: Vec<f64> = m.iter().map(|s| s.delivered as f64 / s.wall_s).collect();
        println!(
            "  events/s delivered  {:.0} (median; the storm's own rate bounds it)",
            median(&rate)
        );
    }
    println!(
        "  agent peak RSS      {:.1} MiB (max over runs)",
        m.iter().map(|s| s.rss_peak_kib).max().unwrap_or(0) as f64 / 1024.0
    );
}

fn run_storm(w: Workload, agent: Option<&mut BenchAgent>, program: &Path, n: u64) -> Result<Sample> {
    let token = format!(
        "bench-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    );
    let cpu0 = agent.as_ref().map_or(0.0, |a| a.cpu_seconds());
    let drops0 = agent.as_ref().map_or(0, |a| a.drops(w.drop_kinds()));
    let mut cmd = Command::new(program);
    cmd.arg(n.to_string());
    match w {
        Workload::Exec => {
            cmd.arg("/bin/true").arg(&token);
        }
        Workload::Pipe => {
            cmd.arg("64");
        }
        _ => {}
    }
    let t0 = Instant::now();
    let child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", program.display()))?;
    let pid = child.id();
    let out = child.wait_with_output()?;
    let wall_s = t0.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!("{} failed: {}", program.display(), out.status);
    }
    let out = String::from_utf8_lossy(&out.stdout);
    let ns_per_op = parse_field(&out, "ns_per_op").with_context(|| format!("{} output", w.program()))?;
    let mut s = Sample {
        ns_per_op,
        wall_s,
        ..Default::default()
    };
    if let Some(a) = agent {
        let owner = format!("\"process\":{{\"pid\":{pid},");
        (s.delivered, s.events) = match w {
            Workload::Exec => {
                let argv = format!("\"argv\":[\"/bin/true\",\"{token}\"]");
                let k = a.wait_count(
                    n,
                    false,
                    |l| l.contains("\"process_exec\"") && l.contains(&argv),
                    |_| 1,
                );
                (k, k)
            }
            Workload::Connect => {
                let k = a.wait_count(
                    n,
                    false,
                    |l| {
                        l.contains("\"network_connect\"")
                            && l.contains(&owner)
                            && l.contains("\"result\":\"ok\"")
                    },
                    |_| 1,
                );
                (k, k)
            }
            Workload::Udp => {
                // Flow records carry running totals: the largest is the count.
                let mut events = 0;
                let packets = a.wait_count(
                    n,
                    true,
                    |l| {
                        (l.contains("\"network_send\"") || l.contains("\"network_progress\""))
                            && l.contains(&owner)
                    },
                    |l| {
                        events += 1;
                        parse_json_u64(l, "packets_sent").unwrap_or(0)
                    },
                );
                (packets, events)
            }
            // Not MCP traffic: the cost is what matters, nothing is expected out.
            Workload::Pipe | Workload::Write | Workload::Http => (0, 0),
        };
        s.agent_cpu_s = a.cpu_seconds() - cpu0;
        s.dropped = a.drops(w.drop_kinds()).saturating_sub(drops0);
        s.rss_peak_kib = a.rss_peak_kib();
    }
    Ok(s)
}

/// `"key":N` in a JSON line (the bench has no JSON dependency).
fn parse_json_u64(line: &str, key: &str) -> Option<u64> {
    let rest = line.split_once(&format!("\"{key}\":"))?.1;
    let end = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
    rest[..end].parse().ok()
}

struct BenchAgent {
    child: Child,
    port: u16,
    events: PathBuf,
}

impl BenchAgent {
    fn start(bin: &Path, work: &Path) -> Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let events = work.join("events.jsonl");
        let _ = std::fs::remove_file(&events);
        let child = Command::new(bin)
            .args(["run", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--output")
            .arg(format!("jsonl:{}", events.display()))
            .arg("--rules")
            .arg(util::root().join("rules.yaml"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let a = Self { child, port, events };
        let t0 = Instant::now();
        while http_get(a.port, "/readyz").map(|(c, _)| c) != Some(200) {
            if t0.elapsed() > Duration::from_secs(30) {
                bail!("agent not ready after 30 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(a)
    }

    fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        let after_comm = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
        let f: Vec<&str> = after_comm.split_whitespace().collect();
        // Fields 14 and 15 (utime, stime) are 12 and 13 after the comm.
        let ticks: f64 = f.get(11).and_then(|x| x.parse().ok()).unwrap_or(0.0)
            + f.get(12).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
        ticks / 100.0
    }

    fn rss_peak_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default()
            .lines()
            .find_map(|l| {
                l.strip_prefix("VmHWM:")
                    .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
            })
            .unwrap_or(0)
    }

    /// Sum of the kernel drop counters of these kinds.
    fn drops(&self, kinds: &[&str]) -> u64 {
        http_get(self.port, "/metrics")
            .map(|(_, body)| {
                body.lines()
                    .filter_map(|l| {
                        let (series, v) = l.rsplit_once(' ')?;
                        let kind = series
                            .strip_prefix("mcpwatch_kernel_drops_total{kind=\"")?
                            .strip_suffix("\"}")?;
                        kinds.contains(&kind).then(|| v.parse::<u64>().ok()).flatten()
                    })
                    .sum()
            })
            .unwrap_or(0)
    }

    /// Waits until the events matching `pred` settle (or reach `expected`). Returns
    /// the sum of `value` over them, or its largest value when `running_totals` (each
    /// event then carries a total so far).
    fn wait_count(
        &self,
        expected: u64,
        running_totals: bool,
        pred: impl Fn(&str) -> bool,
        mut value: impl FnMut(&str) -> u64,
    ) -> u64 {
        let mut read = 0u64;
        let mut total = 0u64;
        let mut best = 0u64;
        let mut stable = Instant::now();
        loop {
            // Re-read only what was appended since the last pass.
            if let Ok(mut f) = std::fs::File::open(&self.events) {
                use std::io::{Read as _, Seek as _, SeekFrom};
                let _ = f.seek(SeekFrom::Start(read));
                let mut buf = String::new();
                let _ = f.read_to_string(&mut buf);
                let complete = buf.rfind('\n').map_or(0, |i| i + 1);
                for l in buf[..complete].lines().filter(|l| pred(l)) {
                    let v = value(l);
                    total += v;
                    best = best.max(v);
                    stable = Instant::now();
                }
                read += complete as u64;
            }
            let got = if running_totals { best } else { total };
            if got >= expected || stable.elapsed() > Duration::from_secs(3) {
                // Let the once-a-second drop counter catch up.
                std::thread::sleep(Duration::from_millis(1200));
                return got;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn stop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

impl Drop for BenchAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Minimal HTTP/1.0 GET on loopback (the bench has no HTTP client dependency).
pub(crate) fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
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

fn compile_workload(work: &Path, name: &str) -> Result<PathBuf> {
    let src = util::root()
        .join("xtask")
        .join("workloads")
        .join(format!("{name}.c"));
    let out = work.join(name);
    util::run(
        Command::new("cc")
            .args(["-O2", "-Wall", "-o"])
            .arg(&out)
            .arg(&src)
            .arg("-lpthread"),
    )
    .with_context(|| format!("compiling {}", src.display()))?;
    Ok(out)
}

/// Refuses to measure while foreign tracing programs run: they would tax every
/// configuration and hide real differences.
fn preflight() -> Result<()> {
    if let Ok(progs) = util::output(Command::new("bpftool").args(["prog", "show"])) {
        let foreign: Vec<&str> = progs
            .lines()
            .filter(|l| {
                l.contains(": tracepoint")
                    || l.contains(": raw_tracepoint")
                    || l.contains(": kprobe")
                    || l.contains(": tracing")
            })
            .collect();
        if !foreign.is_empty() {
            bail!(
                "tracing BPF programs are already loaded; stop them before benchmarking:\n{}",
                foreign.join("\n")
            );
        }
    }
    if let Ok(status) = util::output(Command::new("auditctl").arg("-s")) {
        if status.lines().any(|l| l.trim() == "enabled 1") {
            bail!("auditd is enabled; disable it (auditctl -e 0) before benchmarking");
        }
    }
    Ok(())
}

fn parse_field(out: &str, key: &str) -> Option<f64> {
    out.split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")).and_then(|v| v.parse().ok()))
}

fn median(v: &[f64]) -> f64 {
    stats(v).1
}

fn stats(v: &[f64]) -> (f64, f64, f64) {
    if v.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let mid = if s.len() % 2 == 1 {
        s[s.len() / 2]
    } else {
        (s[s.len() / 2 - 1] + s[s.len() / 2]) / 2.0
    };
    (s[0], mid, s[s.len() - 1])
}

fn kernel() -> String {
    util::output(Command::new("uname").arg("-r"))
        .map(|s| format!("Linux {}", s.trim()))
        .unwrap_or_default()
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Tiny deterministic-per-run shuffler (no dependency needed for ordering configs).
struct Lcg(u64);

impl Lcg {
    fn seeded() -> Self {
        Self(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
                | 1,
        )
    }

    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }

    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
    }
}
