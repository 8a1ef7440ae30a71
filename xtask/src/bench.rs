//! `cargo xtask bench`: overhead measured side by side in one run. Configurations are
//! interleaved in a shuffled order every round, so machine drift hits all of them
//! alike; an A/A row (no monitor against no monitor) shows the noise floor.
//! Prints figures only: no pass/fail.

use std::{
    collections::HashMap,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, Context as _, Result};

use crate::{build, setup, util};

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Rounds; each runs every configuration once, in a shuffled order.
    #[arg(long, default_value_t = 6)]
    rounds: usize,
    /// Execs per exec-storm run.
    #[arg(long, default_value_t = 5_000)]
    execs: u64,
    /// MCP sessions timed for detection latency.
    #[arg(long, default_value_t = 20)]
    sessions: usize,
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

/// A workload: a small program from xtask/workloads, run with fixed arguments; it
/// prints its own time per operation (`ns_per_op=`).
struct Workload {
    name: &'static str,
    unit: &'static str,
    bin: PathBuf,
    args: Vec<String>,
}

#[derive(Debug, Default, Clone)]
struct Sample {
    ns_per_op: f64,
    wall_s: f64,
    /// Agent figures (mcpwatch only).
    agent_cpu_s: f64,
    delivered: u64,
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
    let workloads = vec![
        Workload {
            name: "exec storm",
            unit: "exec",
            bin: compile_workload(&work, "exec_storm")?,
            args: vec![args.execs.to_string(), "/bin/true".into()],
        },
        Workload {
            name: "pipe storm (64 B)",
            unit: "write",
            bin: compile_workload(&work, "pipe_storm")?,
            args: vec!["500000".into(), "64".into()],
        },
        Workload {
            name: "write storm (/dev/null)",
            unit: "write",
            bin: compile_workload(&work, "write_storm")?,
            args: vec!["2000000".into()],
        },
        Workload {
            name: "HTTP request storm",
            unit: "request",
            bin: compile_workload(&work, "http_storm")?,
            args: vec!["20000".into()],
        },
    ];
    preflight()?;
    println!("machine: {} · {} CPUs · load {}", kernel(), num_cpus(), loadavg());
    println!(
        "{} rounds; configurations shuffled in every round; workloads: {}",
        args.rounds,
        workloads
            .iter()
            .map(|w| format!("{} {}", w.name, w.args.join(" ")))
            .collect::<Vec<_>>()
            .join(" · ")
    );

    let configs = [Config::None, Config::NoneAa, Config::Mcpwatch];
    let mut samples: HashMap<(Config, usize), Vec<Sample>> = HashMap::new();
    let mut rng = Lcg::seeded();
    for round in 0..args.rounds {
        let mut order = configs.to_vec();
        rng.shuffle(&mut order);
        for cfg in order {
            let mut agent = match cfg {
                Config::Mcpwatch => Some(BenchAgent::start(&agent_bin, &work)?),
                _ => None,
            };
            for (i, w) in workloads.iter().enumerate() {
                let s = run_workload(w, agent.as_mut())
                    .with_context(|| format!("round {round}, {}, {}", cfg.name(), w.name))?;
                eprintln!(
                    "  round {round} {:<10} {:<24} {:>10.1} ns/{}",
                    cfg.name(),
                    w.name,
                    s.ns_per_op,
                    w.unit
                );
                samples.entry((cfg, i)).or_default().push(s);
            }
            if let Some(a) = agent.as_mut() {
                a.stop();
            }
        }
    }
    report(args, &workloads, &samples);
    detection_latency(&agent_bin, &work, &env_dir, args.sessions)?;
    Ok(())
}

fn report(args: &BenchArgs, workloads: &[Workload], samples: &HashMap<(Config, usize), Vec<Sample>>) {
    for (i, w) in workloads.iter().enumerate() {
        let base = &samples[&(Config::None, i)];
        println!();
        println!("{} ({} per op)", w.name, w.unit);
        println!(
            "  {:<12} {:>12} {:>30} {:>14}",
            "config", "ns/op (med)", "ratio to none (med, min–max)", "added ns/op"
        );
        for cfg in [Config::None, Config::NoneAa, Config::Mcpwatch] {
            let s = &samples[&(cfg, i)];
            let ratios: Vec<f64> = s
                .iter()
                .zip(base)
                .map(|(a, b)| a.ns_per_op / b.ns_per_op)
                .collect();
            let added: Vec<f64> = s
                .iter()
                .zip(base)
                .map(|(a, b)| a.ns_per_op - b.ns_per_op)
                .collect();
            let (lo, med, hi) = stats(&ratios);
            println!(
                "  {:<12} {:>12.1} {:>14.3} ({:.3}–{:.3}) {:>14.1}",
                cfg.name(),
                median(&s.iter().map(|x| x.ns_per_op).collect::<Vec<_>>()),
                med,
                lo,
                hi,
                median(&added),
            );
        }
        let m = &samples[&(Config::Mcpwatch, i)];
        let cpu: Vec<f64> = m.iter().map(|s| s.agent_cpu_s * 1e3).collect();
        println!("  agent CPU during the run: {:.1} ms (median)", median(&cpu));
    }
    let m = &samples[&(Config::Mcpwatch, 0)];
    let delivered: u64 = m.iter().map(|s| s.delivered).sum();
    let dropped: u64 = m.iter().map(|s| s.dropped).sum();
    let expected = args.execs * m.len() as u64;
    let cpu_per_event: Vec<f64> = m
        .iter()
        .map(|s| s.agent_cpu_s * 1e6 / s.delivered.max(1) as f64)
        .collect();
    let rate: Vec<f64> = m.iter().map(|s| s.delivered as f64 / s.wall_s).collect();
    let all: Vec<&Sample> = samples
        .iter()
        .filter(|((c, _), _)| *c == Config::Mcpwatch)
        .flat_map(|(_, v)| v)
        .collect();
    println!();
    println!("mcpwatch, exec storm:");
    println!(
        "  completeness        {delivered}/{expected} exec events delivered ({:.2} %), {dropped} counted as dropped",
        delivered as f64 * 100.0 / expected as f64
    );
    let (lo, med, hi) = stats(&cpu_per_event);
    println!("  agent CPU per event {med:.1} µs (median; min {lo:.1}, max {hi:.1})");
    println!(
        "  events/s delivered  {:.0} (median; the storm's own rate bounds it)",
        median(&rate)
    );
    println!(
        "  agent peak RSS      {:.1} MiB (max over runs)",
        all.iter().map(|s| s.rss_peak_kib).max().unwrap_or(0) as f64 / 1024.0
    );
}

fn run_workload(w: &Workload, agent: Option<&mut BenchAgent>) -> Result<Sample> {
    let token = format!(
        "bench-{}-{}",
        std::process::id(),
        SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos()
    );
    let cpu0 = agent.as_ref().map_or(0.0, |a| a.cpu_seconds());
    let drops0 = agent.as_ref().map_or(0, |a| a.exec_drops());
    let mut cmd = Command::new(&w.bin);
    cmd.args(&w.args);
    if w.unit == "exec" {
        cmd.arg(&token);
    }
    let t0 = Instant::now();
    let out = util::output(&mut cmd)?;
    let wall_s = t0.elapsed().as_secs_f64();
    let ns_per_op = parse_field(&out, "ns_per_op").with_context(|| format!("{} output: {out}", w.name))?;
    let mut s = Sample {
        ns_per_op,
        wall_s,
        ..Default::default()
    };
    if let Some(a) = agent {
        if w.unit == "exec" {
            let n: u64 = w.args[0].parse()?;
            s.delivered = a.wait_delivered(&token, n);
            s.dropped = a.exec_drops().saturating_sub(drops0);
        }
        s.agent_cpu_s = a.cpu_seconds() - cpu0;
        s.rss_peak_kib = a.rss_peak_kib();
    }
    Ok(s)
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

struct BenchAgent {
    child: Child,
    port: u16,
    events: PathBuf,
    stopped: bool,
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
        let a = Self {
            child,
            port,
            events,
            stopped: false,
        };
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

    fn exec_drops(&self) -> u64 {
        http_get(self.port, "/metrics")
            .and_then(|(_, body)| {
                body.lines().find_map(|l| {
                    l.strip_prefix("mcpwatch_kernel_drops_total{kind=\"exec\"} ")
                        .and_then(|v| v.parse().ok())
                })
            })
            .unwrap_or(0)
    }

    /// Counts delivered exec events with `token`, waiting until the count settles.
    fn wait_delivered(&self, token: &str, expected: u64) -> u64 {
        let mut last = 0;
        let mut stable = Instant::now();
        loop {
            let n = std::fs::File::open(&self.events)
                .map(|f| {
                    BufReader::new(f)
                        .lines()
                        .map_while(Result::ok)
                        .filter(|l| {
                            l.contains("\"process_exec\"")
                                && l.contains(&format!("\"argv\":[\"/bin/true\",\"{token}\"]"))
                        })
                        .count() as u64
                })
                .unwrap_or(0);
            if n != last {
                last = n;
                stable = Instant::now();
            }
            if n >= expected || stable.elapsed() > Duration::from_secs(3) {
                // Let the once-a-second drop counter catch up.
                std::thread::sleep(Duration::from_millis(1200));
                return n;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
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
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
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
