//! `cargo xtask bench`: overhead measured side by side in one run. Configurations (no
//! monitor twice for an A/A row, mcpwatch, mcpwatch's floor, auditd, bpftrace) are
//! interleaved in a shuffled order every round, so machine drift hits all of them
//! alike; ratios are taken against the unmonitored run of the same round. Then a
//! separate bpf_stats pass, MCP detection latency and delivery latency.
//! Prints figures only: no pass/fail. `--json FILE` writes the same figures.

use std::{
    collections::HashMap,
    path::PathBuf,
    process::Command,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use serde_json::json;

use crate::{
    bench_monitor::{self, Auditd, BenchAgent, Bpftrace, Monitor, MonitorEnv},
    bench_workloads::{Programs, Workload},
    build, setup, util,
};

#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Rounds; each runs every configuration once, in a shuffled order.
    #[arg(long, default_value_t = 12)]
    pub rounds: usize,
    /// Execs per exec-storm run.
    #[arg(long, default_value_t = 4_000)]
    pub execs: u64,
    /// Loopback TCP connects per connect-storm run.
    #[arg(long, default_value_t = 20_000)]
    pub connects: u64,
    /// Datagrams per UDP-storm run.
    #[arg(long, default_value_t = 200_000)]
    pub datagrams: u64,
    /// 64-byte writes per pipe-storm run (also the candidate pipe storms).
    #[arg(long, default_value_t = 500_000)]
    pub pipe_writes: u64,
    /// 1-byte writes to /dev/null per write-storm run (also the candidate write storm).
    #[arg(long, default_value_t = 2_000_000)]
    pub writes: u64,
    /// Opens per open-storm run (also the candidate open storm).
    #[arg(long, default_value_t = 200_000)]
    pub opens: u64,
    /// Requests per loopback HTTP-storm run.
    #[arg(long, default_value_t = 20_000)]
    pub requests: u64,
    /// MCP sessions timed for detection latency (0: skip).
    #[arg(long, default_value_t = 20)]
    pub sessions: usize,
    /// Tool calls per session of the MCP tool-call storm (0: skip).
    #[arg(long, default_value_t = 2_000)]
    pub tool_calls: usize,
    /// Execs whose telemetry goes through the spool to a local syslog receiver (0: skip).
    #[arg(long, default_value_t = 5_000)]
    pub delivery_execs: u64,
    /// Only these configurations (comma-separated); `none` is always run.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub configs: Vec<Config>,
    /// Only these workloads (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub workloads: Vec<Workload>,
    /// Long-lived processes held for the capacity (memory) figures (0: skip).
    #[arg(long, default_value_t = 10_000)]
    pub hold_processes: u64,
    /// Skip the bpf_stats pass.
    #[arg(long)]
    pub no_bpf_stats: bool,
    /// Development run: 2 rounds and a tenth of every count.
    #[arg(long)]
    pub quick: bool,
    /// Also write every figure to this file as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Config {
    /// No monitor.
    None,
    /// No monitor again: the A/A row, the noise floor of a ratio.
    #[value(name = "aa")]
    NoneAa,
    /// mcpwatch, repository rules.yaml, every sensor on.
    Mcpwatch,
    /// mcpwatch with MCPWATCH_SENSOR_FLOOR=1: same hooks, programs return at once.
    #[value(name = "floor")]
    McpwatchFloor,
    /// auditd with `-a always,exit -F arch=b64 -S execve -S connect`.
    Auditd,
    /// bpftrace printing every exec and connect to a file.
    Bpftrace,
}

impl Config {
    pub const ALL: [Config; 6] = [
        Self::None,
        Self::NoneAa,
        Self::Mcpwatch,
        Self::McpwatchFloor,
        Self::Auditd,
        Self::Bpftrace,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::NoneAa => "none (A/A)",
            Self::Mcpwatch => "mcpwatch",
            Self::McpwatchFloor => "mcpwatch floor",
            Self::Auditd => "auditd",
            Self::Bpftrace => "bpftrace",
        }
    }

    pub fn key(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::NoneAa => "none_aa",
            Self::Mcpwatch => "mcpwatch",
            Self::McpwatchFloor => "mcpwatch_floor",
            Self::Auditd => "auditd",
            Self::Bpftrace => "bpftrace",
        }
    }

    fn start(self, env: &MonitorEnv) -> Result<Option<Monitor>> {
        Ok(match self {
            Self::None | Self::NoneAa => None,
            Self::Mcpwatch => Some(Monitor::Agent(BenchAgent::start(
                &env.agent_bin,
                &env.work,
                false,
            )?)),
            Self::McpwatchFloor => Some(Monitor::Agent(BenchAgent::start(
                &env.agent_bin,
                &env.work,
                true,
            )?)),
            Self::Auditd => Some(Monitor::Auditd(Auditd::start(&env.work)?)),
            Self::Bpftrace => Some(Monitor::Bpftrace(Bpftrace::start(&env.work)?)),
        })
    }
}

impl clap::ValueEnum for Workload {
    fn value_variants<'a>() -> &'a [Self] {
        &Workload::ALL
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(self.key()))
    }
}

/// Debian packages of the peers (installed by the bench when missing, not by setup:
/// the tests do not need them), with a command each provides.
const PEER_PACKAGES: &[(&str, &str)] = &[("auditd", "auditctl"), ("bpftrace", "bpftrace")];
/// What the mixed job needs besides gcc (a setup package).
const BUILD_PACKAGES: &[(&str, &str)] = &[("make", "make")];

/// One run of one workload under one configuration.
#[derive(Debug, Default, Clone)]
pub struct Sample {
    pub ns_per_op: f64,
    pub wall_s: f64,
    /// CPU of the workload (RUSAGE_CHILDREN user+sys delta).
    pub cpu_s: f64,
    /// Monitor figures (none for the unmonitored configurations).
    pub mon_cpu_s: Option<f64>,
    pub rss_peak_kib: Option<u64>,
    pub lost: Option<u64>,
    /// Operations the monitor delivered, where they can be counted.
    pub delivered: Option<u64>,
    /// Records that carried them.
    pub events: u64,
    /// Candidates under mcpwatch: marked suspected before the timed loop.
    pub suspected: Option<bool>,
    pub payload_records: Option<u64>,
    pub backlog_wait: Option<u64>,
}

pub type Samples = HashMap<(Config, Workload), Vec<Sample>>;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Ctrl-C (or a SIGTERM/SIGHUP) must not kill the bench before its guards ran (audit
/// off, bpf_stats off, monitors stopped): the signal only sets a flag, the bench stops
/// after the current storm (which Ctrl-C ends at once) and unwinds with an error.
fn catch_sigint() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic.
        unsafe { libc::signal(sig, on_sigint as *const () as libc::sighandler_t) };
    }
}

pub fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

pub fn bench(args: &BenchArgs) -> Result<()> {
    util::require_root("the bench")?;
    let args = &effective(args);
    let configs: Vec<Config> = Config::ALL
        .into_iter()
        .filter(|c| *c == Config::None || args.configs.is_empty() || args.configs.contains(c))
        .collect();
    let workloads: Vec<Workload> = Workload::ALL
        .into_iter()
        .filter(|w| args.workloads.is_empty() || args.workloads.contains(w))
        .collect();
    let t_start = Instant::now();
    setup::setup()?;
    if configs
        .iter()
        .any(|c| matches!(c, Config::Auditd | Config::Bpftrace))
    {
        setup::ensure_packages(PEER_PACKAGES).context("installing the peers")?;
    }
    if workloads.contains(&Workload::Build) {
        setup::ensure_packages(BUILD_PACKAGES)?;
    }
    let agent_bin = build::build_agent()?;
    let work = util::root().join("target").join("bench");
    std::fs::create_dir_all(&work)?;
    let programs = Programs::build(&work)?;
    preflight()?;
    catch_sigint();
    let env = MonitorEnv { agent_bin, work };
    let machine = machine();
    println!(
        "machine: {} · {} · {} CPUs · {} GiB · load {} (at start)",
        machine["kernel"].as_str().unwrap_or(""),
        machine["cpu_model"].as_str().unwrap_or(""),
        machine["cpus"],
        machine["memory_gib"],
        machine["load_start"].as_str().unwrap_or("")
    );
    println!(
        "{} rounds; configurations shuffled in every round: {}",
        args.rounds,
        configs.iter().map(|c| c.name()).collect::<Vec<_>>().join(", ")
    );

    let mut samples: Samples = HashMap::new();
    let mut rng = Lcg::seeded();
    let t_rounds = Instant::now();
    for round in 0..args.rounds {
        let mut order = configs.clone();
        rng.shuffle(&mut order);
        eprintln!(
            "round {}/{}: {}",
            round + 1,
            args.rounds,
            order.iter().map(|c| c.name()).collect::<Vec<_>>().join(" → ")
        );
        for cfg in order {
            let t0 = Instant::now();
            let mut monitor = cfg
                .start(&env)
                .with_context(|| format!("starting {}", cfg.name()))?;
            if monitor.is_some() {
                eprintln!(
                    "  {:<15} ready in {:.1} s",
                    cfg.name(),
                    t0.elapsed().as_secs_f64()
                );
            }
            let t_cfg = Instant::now();
            for &w in &workloads {
                let s = run_one(w, monitor.as_mut(), &programs, args)
                    .with_context(|| format!("round {}, {}, {}", round + 1, cfg.name(), w.label()))?;
                let (div, unit) = w.unit();
                eprintln!(
                    "  {:<15} {:<30} {:>10.2} {unit}/{}",
                    cfg.name(),
                    w.label(),
                    s.ns_per_op / div,
                    w.op()
                );
                samples.entry((cfg, w)).or_default().push(s);
                check_interrupted()?;
            }
            if let Some(m) = monitor {
                m.stop().with_context(|| format!("stopping {}", cfg.name()))?;
            }
            ensure_no_tracing_programs().with_context(|| format!("after {}", cfg.name()))?;
            eprintln!(
                "  {:<15} done in {:.1} s",
                cfg.name(),
                t_cfg.elapsed().as_secs_f64()
            );
            check_interrupted()?;
        }
    }
    let rounds_s = t_rounds.elapsed().as_secs_f64();
    let mut report = crate::bench_report::report(args, &configs, &workloads, &samples);
    let bpf_stats = if args.no_bpf_stats || !configs.contains(&Config::Mcpwatch) {
        serde_json::Value::Null
    } else {
        crate::bench_bpf_stats::pass(&env, &programs, args, &workloads)?
    };
    check_interrupted()?;
    let latency = if args.sessions > 0 {
        crate::bench_latency::detection_latency(&env, args.sessions)?
    } else {
        serde_json::Value::Null
    };
    check_interrupted()?;
    let tool_calls = if args.tool_calls > 0 && configs.contains(&Config::Mcpwatch) {
        crate::bench_toolcalls::tool_call_storm(&env, args.tool_calls, args.rounds.clamp(1, 3))?
    } else {
        serde_json::Value::Null
    };
    let delivery = if args.delivery_execs > 0 {
        crate::bench_delivery::bench_delivery(
            &env.agent_bin,
            programs.exec_storm(),
            &env.work,
            args.delivery_execs,
        )?
    } else {
        serde_json::Value::Null
    };
    let capacity = if args.hold_processes > 0 && configs.contains(&Config::Mcpwatch) {
        crate::bench_capacity::capacity(&env.agent_bin, &env.work, args.hold_processes)?
    } else {
        serde_json::Value::Null
    };
    let load_end = loadavg();
    println!();
    println!(
        "bench took {:.0} s ({:.0} s of rounds); load at the end {load_end}",
        t_start.elapsed().as_secs_f64(),
        rounds_s
    );
    if let Some(path) = &args.json {
        let mut machine = machine;
        machine["load_end"] = json!(load_end);
        report["machine"] = machine;
        report["bpf_stats"] = bpf_stats;
        report["detection_latency"] = latency;
        report["tool_call_storm"] = tool_calls;
        report["delivery"] = delivery;
        report["capacity"] = capacity;
        report["duration_s"] = json!(t_start.elapsed().as_secs_f64());
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
        println!("figures written to {}", path.display());
    }
    Ok(())
}

/// `--quick` shrinks the run for development.
fn effective(args: &BenchArgs) -> BenchArgs {
    let mut a = args.clone();
    if a.quick {
        a.rounds = a.rounds.min(2);
        for n in [
            &mut a.execs,
            &mut a.connects,
            &mut a.datagrams,
            &mut a.pipe_writes,
            &mut a.writes,
            &mut a.opens,
            &mut a.requests,
            &mut a.delivery_execs,
            &mut a.hold_processes,
        ] {
            *n = (*n / 10).max(1);
        }
        a.sessions = a.sessions.min(5);
        a.tool_calls = (a.tool_calls / 10).max(1);
    }
    a
}

/// Runs `w` once under `monitor` (if any) and collects every figure of that run.
pub fn run_one(
    w: Workload,
    mut monitor: Option<&mut Monitor>,
    programs: &Programs,
    args: &BenchArgs,
) -> Result<Sample> {
    let token = format!(
        "bench-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    );
    let before = monitor.as_deref_mut().map(|m| m.snapshot(w));
    let run = crate::bench_workloads::run(w, programs, args, &token, |pid| {
        monitor.as_deref_mut().and_then(|m| m.before_go(w, pid))
    })?;
    let mut s = Sample {
        ns_per_op: run.ns_per_op,
        wall_s: run.wall_s,
        cpu_s: run.cpu_s,
        suspected: run.suspected,
        ..Default::default()
    };
    if let (Some(m), Some(before)) = (monitor, before) {
        let delivered = m.settle(w, run.pid, &token, w.count(args));
        let after = m.snapshot(w);
        s.mon_cpu_s = Some(after.cpu_s - before.cpu_s);
        s.lost = Some(after.lost.saturating_sub(before.lost));
        s.payload_records = Some(after.payload_records.saturating_sub(before.payload_records));
        s.backlog_wait = Some(after.backlog_wait.saturating_sub(before.backlog_wait));
        s.rss_peak_kib = Some(m.rss_peak_kib());
        if let Some(d) = delivered {
            s.delivered = Some(d.ops);
            s.events = d.events;
        }
    }
    Ok(s)
}

/// Tracing programs currently loaded (bpftool's one-line summaries).
fn tracing_programs() -> Vec<String> {
    util::output(Command::new("bpftool").args(["prog", "show"]))
        .unwrap_or_default()
        .lines()
        .filter(|l| {
            l.contains(": tracepoint")
                || l.contains(": raw_tracepoint")
                || l.contains(": kprobe")
                || l.contains(": tracing")
                || l.contains(": perf_event")
        })
        .map(str::to_string)
        .collect()
}

/// After a monitor stopped, nothing of it may tax the next configuration.
fn ensure_no_tracing_programs() -> Result<()> {
    let t0 = Instant::now();
    loop {
        let left = tracing_programs();
        if left.is_empty() {
            return Ok(());
        }
        if t0.elapsed() > Duration::from_secs(5) {
            bail!(
                "tracing BPF programs still loaded after the monitor stopped:\n{}",
                left.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Refuses to measure while anything else traces the host: it would tax every
/// configuration and hide real differences.
fn preflight() -> Result<()> {
    let foreign = tracing_programs();
    if !foreign.is_empty() {
        bail!(
            "tracing BPF programs are already loaded; stop them before benchmarking:\n{}",
            foreign.join("\n")
        );
    }
    if util::succeeds(Command::new("auditctl").arg("-v")) {
        if let Some(why) = bench_monitor::audit_active() {
            bail!("{why}; disable it (auditctl -D; auditctl -e 0) before benchmarking");
        }
    }
    if util::succeeds(Command::new("pgrep").args(["-x", "auditd"])) {
        bail!("an auditd is already running; stop it before benchmarking (the bench starts its own)");
    }
    let stats = std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").unwrap_or_default();
    if stats.trim() != "0" && !stats.is_empty() {
        bail!("kernel.bpf_stats_enabled is on (it taxes every BPF program); set it to 0 first");
    }
    Ok(())
}

fn machine() -> serde_json::Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_default();
    let mem_kib: u64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    json!({
        "kernel": util::output(Command::new("uname").arg("-r"))
            .map(|s| format!("Linux {}", s.trim()))
            .unwrap_or_default(),
        "cpu_model": model,
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "memory_gib": (mem_kib as f64 / 1048576.0).round(),
        "load_start": loadavg(),
        "date": util::output(Command::new("date").args(["-u", "+%Y-%m-%dT%H:%M:%SZ"]))
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
    })
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Tiny shuffler seeded from the clock (no dependency needed for ordering configs).
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
