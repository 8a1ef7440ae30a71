//! The bench's bpf_stats pass: with `kernel.bpf_stats_enabled=1` (which itself adds two
//! clock reads per program run, so no timing of this pass is reported), each workload
//! runs once under mcpwatch, and the kernel's run count and run time of every program
//! the agent loaded say where the in-kernel cost goes: ns per run and runs per operation.

use std::{collections::HashMap, process::Command};

use anyhow::{Context as _, Result};
use serde_json::{json, Value};

use crate::{
    bench::BenchArgs,
    bench_monitor::{BenchAgent, Monitor, MonitorEnv},
    bench_workloads::{Programs, Workload},
    util,
};

const SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// Turns bpf_stats on; back off when dropped (also on error or Ctrl-C).
struct StatsEnabled;

impl StatsEnabled {
    fn on() -> Result<Self> {
        std::fs::write(SYSCTL, "1").with_context(|| format!("enabling {SYSCTL}"))?;
        Ok(Self)
    }
}

impl Drop for StatsEnabled {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(SYSCTL, "0") {
            eprintln!("xtask: could not restore {SYSCTL} to 0: {e}");
        }
    }
}

#[derive(Clone, Default)]
struct Prog {
    name: String,
    kind: String,
    run_cnt: u64,
    run_time_ns: u64,
}

/// Every loaded program by id.
fn programs() -> Result<HashMap<u64, Prog>> {
    let text = util::output(Command::new("bpftool").args(["prog", "show", "--json"]))?;
    let v: Value = serde_json::from_str(&text).context("parsing bpftool prog show --json")?;
    Ok(v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| {
                    Some((
                        p["id"].as_u64()?,
                        Prog {
                            name: p["name"].as_str().unwrap_or("?").to_string(),
                            kind: p["type"].as_str().unwrap_or("?").to_string(),
                            run_cnt: p["run_cnt"].as_u64().unwrap_or(0),
                            run_time_ns: p["run_time_ns"].as_u64().unwrap_or(0),
                        },
                    ))
                })
                .collect()
        })
        .unwrap_or_default())
}

pub fn pass(env: &MonitorEnv, progs: &Programs, args: &BenchArgs, workloads: &[Workload]) -> Result<Value> {
    let before: Vec<u64> = programs()?.into_keys().collect();
    let agent = BenchAgent::start(&env.agent_bin, &env.work, false)?;
    // The agent's programs: the ones that appeared with it (the bench holds the host).
    let ours: Vec<u64> = programs()?
        .into_keys()
        .filter(|id| !before.contains(id))
        .collect();
    let mut monitor = Monitor::Agent(agent);
    let _stats = StatsEnabled::on()?;
    println!();
    println!(
        "bpf_stats: each workload once under mcpwatch with kernel.bpf_stats_enabled=1 ({} programs of \
         the agent; ns/run includes the stats' own clock reads, ~40 ns on this kind of machine; runs are \
         host-wide: every process's syscalls reach the raw sys_enter/sys_exit programs)",
        ours.len()
    );
    let mut out = Vec::new();
    for &w in workloads {
        let p0 = programs()?;
        let s = crate::bench::run_one(w, Some(&mut monitor), progs, args)?;
        let p1 = programs()?;
        let n = w.count(args).max(1) as f64;
        let mut rows: Vec<(Prog, u64, u64)> = ours
            .iter()
            .filter_map(|id| {
                let (a, b) = (p0.get(id)?, p1.get(id)?);
                let runs = b.run_cnt.saturating_sub(a.run_cnt);
                let ns = b.run_time_ns.saturating_sub(a.run_time_ns);
                (runs > 0).then(|| (b.clone(), runs, ns))
            })
            .collect();
        rows.sort_by_key(|r| std::cmp::Reverse(r.2));
        let total_ns: u64 = rows.iter().map(|r| r.2).sum();
        let top: Vec<String> = rows
            .iter()
            .take(4)
            .map(|(p, runs, ns)| {
                format!(
                    "{} {:.2} runs/{} × {:.0} ns",
                    p.name,
                    *runs as f64 / n,
                    w.op(),
                    *ns as f64 / *runs as f64
                )
            })
            .collect();
        println!(
            "  {:<30} {:>8.0} ns BPF per {:<8} {}",
            w.label(),
            total_ns as f64 / n,
            w.op(),
            top.join(" · ")
        );
        if w.candidate() && s.suspected != Some(true) {
            println!(
                "    (not marked suspected in this pass: candidate figures are those of a plain process)"
            );
        }
        out.push(json!({
            "workload": w.key(),
            "ops": w.count(args),
            "bpf_ns_per_op": total_ns as f64 / n,
            "suspected": s.suspected,
            "programs": rows.iter().map(|(p, runs, ns)| json!({
                "name": p.name,
                "type": p.kind,
                "runs": runs,
                "run_time_ns": ns,
                "ns_per_run": *ns as f64 / *runs as f64,
                "runs_per_op": *runs as f64 / n,
            })).collect::<Vec<_>>(),
        }));
        crate::bench::check_interrupted()?;
    }
    monitor.stop()?;
    Ok(json!({"programs_loaded": ours.len(), "workloads": out}))
}
