//! Capacity: the agent's memory with many processes in its table. Starts the agent,
//! then `hold_procs` (10 000 long-lived processes with distinct command lines), waits
//! until the table holds them, and reads the agent's resident memory, split into the
//! ring buffers (kernel memory mapped into the agent) and everything else.

use std::{
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use serde_json::{json, Value};

use crate::bench_monitor::BenchAgent;

pub fn capacity(agent_bin: &Path, work: &Path, processes: u64) -> Result<Value> {
    let hold = crate::bench_workloads::compile(work, "hold_procs")?;
    // Started the bench's way: ready, and idle after its start-up work.
    let mut agent = BenchAgent::start(agent_bin, work, false)?;
    let (pid, port) = (agent.pid(), agent.port());
    let idle = Memory::of(pid);
    let base_live = live_entries(port);

    let mut holder = Command::new(&hold)
        .arg(processes.to_string())
        .arg(format!("mcpwatch-bench-hold-{}", std::process::id()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting hold_procs")?;
    let mut line = String::new();
    BufReader::new(holder.stdout.take().expect("piped")).read_line(&mut line)?;
    let held: u64 = line
        .trim()
        .strip_prefix("held ")
        .and_then(|n| n.parse().ok())
        .context("hold_procs did not report")?;
    let t0 = Instant::now();
    let settled = wait_until(Duration::from_secs(60), || live_entries(port) >= base_live + held);
    let table_s = t0.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(2));
    let live = live_entries(port);
    let loaded = Memory::of(pid);
    // hold_procs kills its processes when its stdin closes (also if we bail out early:
    // dropping the Child closes the pipe).
    drop(holder.stdin.take());
    let _ = holder.wait();
    agent.stop();

    println!();
    println!("Capacity (agent memory with many processes in its table):");
    println!(
        "  {held} processes held; table {live} live entries{} ({table_s:.1} s to take them in)",
        if settled.is_ok() {
            ""
        } else {
            " (NOT all seen within 60 s)"
        }
    );
    println!(
        "  agent RSS idle {:.1} MiB → loaded {:.1} MiB (peak {:.1} MiB); of it ring buffers {:.1} MiB \
         (as RSS counts them: the kernel maps each ring's data twice), heap and code {:.1} MiB",
        mib(idle.rss_kib),
        mib(loaded.rss_kib),
        mib(loaded.hwm_kib),
        mib(loaded.rings_kib),
        mib(loaded.rss_kib.saturating_sub(loaded.rings_kib)),
    );
    Ok(json!({
        "processes_held": held,
        "table_live_entries": live,
        "seconds_to_table": table_s,
        "rss_idle_kib": idle.rss_kib,
        "rss_loaded_kib": loaded.rss_kib,
        "rss_peak_kib": loaded.hwm_kib,
        "rss_ring_buffers_kib": loaded.rings_kib,
    }))
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

struct Memory {
    rss_kib: u64,
    hwm_kib: u64,
    rings_kib: u64,
}

impl Memory {
    fn of(pid: u32) -> Self {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let field = |name: &str| crate::measure::status_kib(&status, name);
        // Resident pages of the BPF map mappings (the ring buffers).
        let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
        let mut rings = 0;
        let mut in_map = false;
        for l in smaps.lines() {
            if l.split_whitespace()
                .next()
                .is_some_and(|f| f.contains('-') && !f.ends_with(':'))
            {
                in_map = l.contains("anon_inode:bpf-map");
            } else if let Some(v) = l.strip_prefix("Rss:") {
                if in_map {
                    rings += v
                        .trim()
                        .trim_end_matches(" kB")
                        .trim()
                        .parse::<u64>()
                        .unwrap_or(0);
                }
            }
        }
        Self {
            rss_kib: field("VmRSS"),
            hwm_kib: field("VmHWM"),
            rings_kib: rings,
        }
    }
}

fn live_entries(port: u16) -> u64 {
    crate::bench_monitor::http_get(port, "/metrics")
        .and_then(|(_, body)| {
            body.lines().find_map(|l| {
                l.strip_prefix("mcpwatch_process_table_entries{state=\"live\"} ")
                    .and_then(|v| v.trim().parse::<f64>().ok())
            })
        })
        .map_or(0, |v| v as u64)
}

fn wait_until(limit: Duration, mut ok: impl FnMut() -> bool) -> Result<()> {
    let t0 = Instant::now();
    while !ok() {
        if t0.elapsed() > limit {
            bail!("not reached within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}
