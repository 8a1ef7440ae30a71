//! `cargo xtask bench`: overhead measured side by side in one run. Configurations are
//! interleaved in a shuffled order every round, so machine drift hits all of them
//! alike; an A/A row (no monitor against no monitor) shows the noise floor.
//! Prints figures only: no pass/fail.

use std::{
    collections::HashMap,
    io::{BufRead as _, BufReader},
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
    let work = util::root().join("target").join("bench");
    std::fs::create_dir_all(&work)?;
    let exec_storm = compile_workload(&work, "exec_storm")?;
    preflight()?;
    println!("machine: {} · {} CPUs · load {}", kernel(), num_cpus(), loadavg());
    println!(
        "exec storm: {} posix_spawn+wait of /bin/true per run, {} rounds",
        args.execs, args.rounds
    );

    let configs = [Config::None, Config::NoneAa, Config::Mcpwatch];
    let mut samples: HashMap<Config, Vec<Sample>> = HashMap::new();
    let mut rng = Lcg::seeded();
    for round in 0..args.rounds {
        let mut order = configs.to_vec();
        rng.shuffle(&mut order);
        for cfg in order {
            let s = run_exec_storm(cfg, &agent_bin, &exec_storm, args.execs, &work)
                .with_context(|| format!("round {round}, {}", cfg.name()))?;
            eprintln!("  round {round} {:<10} {:>8.0} ns/exec", cfg.name(), s.ns_per_op);
            samples.entry(cfg).or_default().push(s);
        }
    }
    report(args, &samples);
    crate::bench_delivery::bench_delivery(&agent_bin, &exec_storm, &work, args.delivery_execs)
}

fn report(args: &BenchArgs, samples: &HashMap<Config, Vec<Sample>>) {
    let base = &samples[&Config::None];
    println!();
    println!(
        "{:<12} {:>10} {:>26} {:>12} {:>10}",
        "config", "µs/exec", "ratio to none (med min–max)", "added µs/op", ""
    );
    for cfg in [Config::None, Config::NoneAa, Config::Mcpwatch] {
        let s = &samples[&cfg];
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
            "{:<12} {:>10.1} {:>12.3} ({:.3}–{:.3}) {:>12.1}",
            cfg.name(),
            median(&s.iter().map(|x| x.ns_per_op / 1000.0).collect::<Vec<_>>()),
            med,
            lo,
            hi,
            median(&added),
        );
    }
    let m = &samples[&Config::Mcpwatch];
    let delivered: u64 = m.iter().map(|s| s.delivered).sum();
    let dropped: u64 = m.iter().map(|s| s.dropped).sum();
    let expected = args.execs * m.len() as u64;
    let cpu_per_event: Vec<f64> = m
        .iter()
        .map(|s| s.agent_cpu_s * 1e6 / s.delivered.max(1) as f64)
        .collect();
    let rate: Vec<f64> = m.iter().map(|s| s.delivered as f64 / s.wall_s).collect();
    println!();
    println!("mcpwatch, exec storm:");
    println!("  completeness        {delivered}/{expected} exec events delivered ({:.2} %), {dropped} counted as dropped",
        delivered as f64 * 100.0 / expected as f64);
    println!(
        "  agent CPU per event {:.1} µs (median; min {:.1}, max {:.1})",
        median(&cpu_per_event),
        stats(&cpu_per_event).0,
        stats(&cpu_per_event).2
    );
    println!(
        "  events/s delivered  {:.0} (median; the storm's own rate bounds it)",
        median(&rate)
    );
    println!(
        "  agent peak RSS      {:.1} MiB (max over runs)",
        m.iter().map(|s| s.rss_peak_kib).max().unwrap_or(0) as f64 / 1024.0
    );
}

fn run_exec_storm(cfg: Config, agent_bin: &Path, storm: &Path, n: u64, work: &Path) -> Result<Sample> {
    let token = format!(
        "bench-{}-{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos()
    );
    let mut agent = match cfg {
        Config::Mcpwatch => Some(BenchAgent::start(agent_bin, work)?),
        _ => None,
    };
    let cpu0 = agent.as_ref().map_or(0.0, |a| a.cpu_seconds());
    let drops0 = agent.as_ref().map_or(0, |a| a.exec_drops());
    let t0 = Instant::now();
    let out = util::output(
        Command::new(storm)
            .arg(n.to_string())
            .arg("/bin/true")
            .arg(&token),
    )?;
    let wall_s = t0.elapsed().as_secs_f64();
    let ns_per_op = parse_field(&out, "ns_per_op").context("exec_storm output")?;
    let mut s = Sample {
        ns_per_op,
        wall_s,
        ..Default::default()
    };
    if let Some(a) = agent.as_mut() {
        s.delivered = a.wait_delivered(&token, n);
        s.agent_cpu_s = a.cpu_seconds() - cpu0;
        s.dropped = a.exec_drops().saturating_sub(drops0);
        s.rss_peak_kib = a.rss_peak_kib();
        a.stop();
    }
    Ok(s)
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
