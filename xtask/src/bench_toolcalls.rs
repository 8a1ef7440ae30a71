//! The MCP tool-call storm of `cargo xtask bench`: back-to-back `tools/call`s through
//! the real Python SDK client and server over stdio, with no monitor and under
//! mcpwatch (which audits every call), side by side in alternating rounds. Reports
//! the time per call in both (the added latency), the agent's CPU per audit record,
//! and records lost (calls without a record).

use std::process::Command;

use anyhow::{bail, Context as _, Result};
use serde_json::{json, Value};

use crate::{
    bench_monitor::{cpu_seconds, BenchAgent, MonitorEnv},
    bench_report::median,
    util,
};

/// One session of `calls` calls; returns its wall time in seconds (the client's own
/// measure, from its first call to its last answer).
fn storm(python: &std::path::Path, calls: usize, name: &str) -> Result<f64> {
    let fixtures = util::root().join("tests/fixtures");
    let out = util::output(
        Command::new(python)
            .arg(fixtures.join("storm_client.py"))
            .arg(calls.to_string())
            .arg(python)
            .arg(fixtures.join("rules_server.py"))
            .arg(name),
    )?;
    // "calls: N in T s (R/s)"
    let secs = out
        .split("calls: ")
        .nth(1)
        .and_then(|r| r.split(" in ").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|t| t.parse::<f64>().ok())
        .with_context(|| format!("the storm client printed no timing: {out}"))?;
    Ok(secs)
}

pub fn tool_call_storm(env: &MonitorEnv, calls: usize, rounds: usize) -> Result<Value> {
    let env_dir = crate::testenv::ensure()?;
    let python = env_dir.join("venv/bin/python");
    let mut without = Vec::new();
    let mut with = Vec::new();
    let mut cpu_per_record = Vec::new();
    let mut lost = 0usize;
    let mut recorded = 0usize;
    for round in 0..rounds {
        crate::bench::check_interrupted()?;
        // Alternate which goes first: drift in the machine's speed hits both.
        let order = if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for monitored in order {
            let name = format!("bench-toolcalls-{}-{round}", std::process::id());
            if !monitored {
                without.push(storm(&python, calls, &name)? / calls as f64);
                continue;
            }
            let mut agent = BenchAgent::start(&env.agent_bin, &env.work, false)?;
            let cpu_before = cpu_seconds(agent.pid());
            let secs = storm(&python, calls, &name)?;
            // Let the agent finish the session's records (the server has exited).
            std::thread::sleep(std::time::Duration::from_millis(1500));
            let cpu = cpu_seconds(agent.pid()) - cpu_before;
            agent.stop();
            let text = std::fs::read_to_string(&agent.events)?;
            let records = text
                .lines()
                .filter(|l| {
                    l.contains("\"type\":\"mcp_request\"")
                        && l.contains(&format!("\"name\":\"{name}\""))
                        && l.contains("\"method\":\"tools/call\"")
                })
                .count();
            if records == 0 {
                bail!("no audit record of the tool-call storm under mcpwatch");
            }
            recorded += records;
            lost += calls.saturating_sub(records);
            with.push(secs / calls as f64);
            cpu_per_record.push(cpu / records as f64);
        }
    }
    let (base, under) = (median(&without) * 1e6, median(&with) * 1e6);
    let cpu = median(&cpu_per_record) * 1e6;
    println!();
    println!(
        "MCP tool-call storm ({calls} × tools/call, Python SDK client → server over stdio, {rounds} rounds each):"
    );
    println!(
        "  per call: {base:.0} µs without a monitor, {under:.0} µs under mcpwatch ({:+.1} %, {:+.0} µs added)",
        (under / base - 1.0) * 100.0,
        under - base
    );
    println!(
        "  agent CPU per audit record: {cpu:.1} µs; records {recorded} of {} calls, lost {lost}",
        calls * rounds
    );
    Ok(json!({
        "calls": calls,
        "rounds": rounds,
        "per_call_us_none": base,
        "per_call_us_mcpwatch": under,
        "added_us_per_call": under - base,
        "ratio": under / base,
        "agent_cpu_us_per_record": cpu,
        "records": recorded,
        "lost": lost,
    }))
}
