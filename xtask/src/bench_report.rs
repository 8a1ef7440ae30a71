//! The bench's tables: per workload, one row per configuration with its ratio to the
//! unmonitored run of the same round (wall and workload CPU; median and min–max over the
//! rounds), time added per operation, the monitor's CPU per delivered event, its peak
//! RSS, events lost and completeness. The same figures go to `--json`.

use serde_json::{json, Value};

use crate::{
    bench::{BenchArgs, Config, Sample, Samples},
    bench_workloads::Workload,
};

pub use crate::measure::{median, stats};

fn stats_json(v: &[f64]) -> Value {
    let (lo, med, hi) = stats(v);
    json!({"min": finite(lo), "median": finite(med), "max": finite(hi)})
}

fn finite(x: f64) -> Value {
    if x.is_finite() {
        json!(x)
    } else {
        Value::Null
    }
}

fn ratio_cell(v: &[f64]) -> String {
    let (lo, med, hi) = stats(v);
    if med.is_nan() {
        return "–".into();
    }
    format!("{med:.3} ({lo:.2}–{hi:.2})")
}

/// Figures of one configuration on one workload, against the `none` runs of the same rounds.
struct Row<'a> {
    s: &'a [Sample],
    wall_ratio: Vec<f64>,
    cpu_ratio: Vec<f64>,
    added_ns: Vec<f64>,
}

impl<'a> Row<'a> {
    fn new(s: &'a [Sample], base: &[Sample]) -> Self {
        let pairs = || s.iter().zip(base);
        Self {
            s,
            wall_ratio: pairs().map(|(a, b)| a.ns_per_op / b.ns_per_op).collect(),
            cpu_ratio: pairs()
                .filter(|(_, b)| b.cpu_s > 0.0)
                .map(|(a, b)| a.cpu_s / b.cpu_s)
                .collect(),
            added_ns: pairs().map(|(a, b)| a.ns_per_op - b.ns_per_op).collect(),
        }
    }

    fn monitored(&self) -> bool {
        self.s.iter().any(|x| x.mon_cpu_s.is_some())
    }

    fn delivered(&self) -> Option<u64> {
        self.s
            .iter()
            .map(|x| x.delivered)
            .try_fold(0, |acc, d| d.map(|d| acc + d))
    }

    fn lost(&self) -> Option<u64> {
        self.s
            .iter()
            .map(|x| x.lost)
            .try_fold(0, |acc, d| d.map(|d| acc + d))
    }

    fn rss_mib(&self) -> Option<f64> {
        self.s
            .iter()
            .filter_map(|x| x.rss_peak_kib)
            .max()
            .map(|k| k as f64 / 1024.0)
    }

    /// Monitor CPU per delivered event (µs), per run where events were delivered.
    fn cpu_per_event_us(&self) -> Vec<f64> {
        self.s
            .iter()
            .filter_map(|x| match (x.mon_cpu_s, x.delivered) {
                (Some(c), Some(d)) if d > 0 => Some(c * 1e6 / d as f64),
                _ => None,
            })
            .collect()
    }

    fn cpu_per_run_ms(&self) -> Vec<f64> {
        self.s
            .iter()
            .filter_map(|x| x.mon_cpu_s.map(|c| c * 1e3))
            .collect()
    }
}

/// What the columns mean, printed once above the tables.
const LEGEND: &[&str] = &[
    "wall ratio: the workload's own time per operation ÷ that of the unmonitored run of the same round;",
    "CPU ratio: the same for its user+system CPU (RUSAGE_CHILDREN: the storm and what it spawned);",
    "both as median (min–max) over the rounds. added: median per-round difference in time per operation.",
    "monitor CPU: the monitor's CPU (auditd: with kauditd) per delivered event, or per run where events",
    "are not counted. peak RSS: its VmHWM. lost: its own loss counter (mcpwatch kernel drops of the",
    "storm's kinds, audit `lost`, bpftrace \"Lost N events\"). complete: the storm's events it delivered",
    "(mcpwatch JSONL events, audit SYSCALL records, bpftrace lines) / operations performed.",
];

pub fn report(args: &BenchArgs, configs: &[Config], workloads: &[Workload], samples: &Samples) -> Value {
    println!();
    for l in LEGEND {
        println!("{l}");
    }
    let mut out = Vec::new();
    for &w in workloads {
        out.push(workload_table(args, w, configs, samples));
    }
    json!({
        "rounds": args.rounds,
        "ops_per_run": workloads.iter().map(|w| (w.key().to_string(), json!(w.count(args)))).collect::<serde_json::Map<_, _>>(),
        "configs": configs.iter().map(|c| c.key()).collect::<Vec<_>>(),
        "workloads": out,
    })
}

fn workload_table(args: &BenchArgs, w: Workload, configs: &[Config], samples: &Samples) -> Value {
    let base = &samples[&(Config::None, w)];
    let (div, unit) = w.unit();
    let n = w.count(args);
    println!();
    println!("{} — {} per run", w.label(), w.describe(args));
    println!(
        "  {:<15} {:>10} {:>21} {:>21} {:>12} {:>15} {:>9} {:>7} {:>15}",
        "config",
        format!("{unit}/{}", w.op()),
        "wall ratio (min–max)",
        "CPU ratio (min–max)",
        format!("added/{}", w.op()),
        "monitor CPU",
        "peak RSS",
        "lost",
        "complete"
    );
    let mut rows_json = Vec::new();
    for &cfg in configs {
        let s = &samples[&(cfg, w)];
        let row = Row::new(s, base);
        let per_op: Vec<f64> = s.iter().map(|x| x.ns_per_op).collect();
        let added = median(&row.added_ns);
        // Per delivered event only where one event stands for one operation.
        let per_event = if w.counted() {
            row.cpu_per_event_us()
        } else {
            Vec::new()
        };
        let per_run = row.cpu_per_run_ms();
        let expected = n * s.len() as u64;
        let mon_cpu = if !row.monitored() {
            "–".to_string()
        } else if !per_event.is_empty() {
            format!("{:.1} µs/event", median(&per_event))
        } else {
            format!("{:.0} ms/run", median(&per_run))
        };
        let complete = match row.delivered() {
            Some(d) if w.counted() => format!("{d}/{expected}"),
            _ => "–".into(),
        };
        println!(
            "  {:<15} {:>10.2} {:>21} {:>21} {:>12} {:>15} {:>9} {:>7} {:>15}",
            cfg.name(),
            median(&per_op) / div,
            ratio_cell(&row.wall_ratio),
            ratio_cell(&row.cpu_ratio),
            if cfg == Config::None {
                "–".to_string()
            } else {
                format!("{:+.1} {unit}", added / div)
            },
            mon_cpu,
            row.rss_mib().map_or("–".into(), |m| format!("{m:.1} MiB")),
            row.lost().map_or("–".into(), |l| l.to_string()),
            complete,
        );
        rows_json.push(json!({
            "config": cfg.key(),
            "runs": s.len(),
            "ns_per_op": stats_json(&per_op),
            "wall_ratio": stats_json(&row.wall_ratio),
            "cpu_ratio": stats_json(&row.cpu_ratio),
            "added_ns_per_op": stats_json(&row.added_ns),
            "workload_cpu_s": stats_json(&s.iter().map(|x| x.cpu_s).collect::<Vec<_>>()),
            "monitor_cpu_us_per_event": if per_event.is_empty() { Value::Null } else { stats_json(&per_event) },
            "monitor_cpu_ms_per_run": if per_run.is_empty() { Value::Null } else { stats_json(&per_run) },
            "monitor_peak_rss_mib": row.rss_mib(),
            "lost": row.lost(),
            "delivered": row.delivered(),
            "expected": if row.delivered().is_some() { Some(expected) } else { None },
            "suspected_runs": s.iter().filter(|x| x.suspected == Some(true)).count(),
            "payload_records": s.iter().filter_map(|x| x.payload_records).sum::<u64>(),
            "audit_backlog_wait": s.iter().filter_map(|x| x.backlog_wait).sum::<u64>(),
            "samples": s.iter().map(|x| json!({
                "ns_per_op": x.ns_per_op,
                "wall_s": x.wall_s,
                "cpu_s": x.cpu_s,
                "monitor_cpu_s": x.mon_cpu_s,
                "monitor_rss_peak_kib": x.rss_peak_kib,
                "lost": x.lost,
                "delivered": x.delivered,
                "events": x.events,
                "suspected": x.suspected,
                "payload_records": x.payload_records,
                "audit_backlog_wait": x.backlog_wait,
            })).collect::<Vec<_>>(),
        }));
    }
    let notes = notes(args, w, configs, samples);
    json!({
        "workload": w.key(),
        "label": w.label(),
        "description": w.describe(args),
        "op": w.op(),
        "ops_per_run": n,
        "configs": rows_json,
        "notes": notes,
    })
}

/// Lines under a table that explain what the columns cannot: whether candidates were
/// captured, what capturing cost beyond the non-candidate storm, sustained rates,
/// audit back-pressure. Returned for `--json` too.
fn notes(args: &BenchArgs, w: Workload, configs: &[Config], samples: &Samples) -> Vec<String> {
    let mut notes = Vec::new();
    let get = |c: Config, w: Workload| samples.get(&(c, w));
    if let Some(m) = get(Config::Mcpwatch, w).filter(|_| configs.contains(&Config::Mcpwatch)) {
        if w.candidate() {
            let marked = m.iter().filter(|x| x.suspected == Some(true)).count();
            let records: u64 = m.iter().filter_map(|x| x.payload_records).sum();
            let lost: u64 = m.iter().filter_map(|x| x.lost).sum();
            notes.push(if marked == m.len() {
                format!(
                    "mcpwatch marked the storm a suspected MCP server (launch pattern on argv[0]) before \
                     its timed loop in {marked}/{} runs; payload records decoded {:.0} per run of {} \
                     writes (host-wide count), kernel payload drops {lost}",
                    m.len(),
                    records as f64 / m.len() as f64,
                    w.count(args)
                )
            } else {
                format!(
                    "NOT CAPTURED in {} of {} runs: no suspected event for the storm within 5 s; \
                     payload records {records}, kernel payload drops {lost}",
                    m.len() - marked,
                    m.len()
                )
            });
            let per_run = records as f64 / m.len().max(1) as f64;
            if w == Workload::CandidateJsonrpc && per_run < w.count(args) as f64 * 0.99 {
                // Every write of this storm passes the payload prefilter: fewer records
                // than writes means capture stopped, not that writes were filtered.
                notes.push(format!(
                    "capture stopped after ~{per_run:.0} of {} writes (the suspect's record budget was \
                     spent): the rest of the storm ran uncaptured, so its added time per write is mostly \
                     that of the uncaptured path",
                    w.count(args)
                ));
            }
            if let (Some(base_w), Some(none_c)) = (w.non_candidate(), get(Config::None, w)) {
                if let (Some(m_b), Some(none_b)) = (get(Config::Mcpwatch, base_w), get(Config::None, base_w))
                {
                    // Per round: (candidate − its none) − (non-candidate − its none).
                    let extra: Vec<f64> = (0..m.len().min(m_b.len()))
                        .map(|i| {
                            (m[i].ns_per_op - none_c[i].ns_per_op) - (m_b[i].ns_per_op - none_b[i].ns_per_op)
                        })
                        .collect();
                    let (lo, med, hi) = stats(&extra);
                    notes.push(format!(
                        "{}: {med:+.1} ns per {} beyond what mcpwatch adds to the {} \
                         (median of per-round differences, {lo:+.1}…{hi:+.1})",
                        if w == Workload::CandidateOpen {
                            "in-tree path"
                        } else {
                            "capture path"
                        },
                        w.op(),
                        base_w.label()
                    ));
                }
            }
        }
        if w.counted() {
            let rate: Vec<f64> = m
                .iter()
                .filter_map(|x| x.delivered.map(|d| d as f64 / x.wall_s))
                .collect();
            let lost: u64 = m.iter().filter_map(|x| x.lost).sum();
            notes.push(format!(
                "mcpwatch sustained {:.0} {} events/s delivered (median; the storm's own rate bounds it) \
                 with {lost} kernel drops",
                median(&rate),
                w.op()
            ));
        }
        if w == Workload::Udp {
            let packets: u64 = m.iter().filter_map(|x| x.delivered).sum();
            let events: u64 = m.iter().map(|x| x.events).sum();
            notes.push(format!(
                "mcpwatch reported the flow with its process in {}/{} runs ({events} events); \
                 {packets}/{} datagrams in the last reports (counted in the kernel; totals go out once \
                 per report interval, which can be longer than this storm)",
                m.iter().filter(|x| x.events > 0).count(),
                m.len(),
                w.count(args) * m.len() as u64
            ));
        }
    }
    if let Some(a) = get(Config::Auditd, w).filter(|_| configs.contains(&Config::Auditd)) {
        let wait: u64 = a.iter().filter_map(|x| x.backlog_wait).sum();
        if wait > 0 {
            notes.push(format!(
                "auditd: backlog_wait_time_actual grew by {wait} (audit held the audited syscalls back \
                 instead of dropping)"
            ));
        }
    }
    if w == Workload::Build {
        notes.push(
            "the mixed job is mostly compiler CPU with a few execs a second: a sanity check against \
             the A/A row, not a discriminator"
                .into(),
        );
    }
    for n in &notes {
        println!("  · {n}");
    }
    notes
}
