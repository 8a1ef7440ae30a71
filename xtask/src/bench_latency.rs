//! MCP detection latency for `cargo xtask bench`: from an MCP server's first response
//! (kernel timestamp) to its inventory entry, over real SDK sessions (Python client,
//! mcp-server-time from PyPI), as the agent reports it in `detection_latency_ms`.

use std::{process::Command, time::Duration};

use anyhow::Result;
use serde_json::{json, Value};

use crate::{
    bench_monitor::{BenchAgent, MonitorEnv},
    bench_report::median,
    util,
};

pub fn detection_latency(env: &MonitorEnv, sessions: usize) -> Result<Value> {
    let env_dir = crate::testenv::ensure()?;
    let mut agent = BenchAgent::start(&env.agent_bin, &env.work, false)?;
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
        return Ok(json!({"sessions": sessions, "confirmed": 0}));
    }
    let p99 = lat[((lat.len() as f64 * 0.99).ceil() as usize)
        .saturating_sub(1)
        .min(lat.len() - 1)];
    let max = lat[lat.len() - 1];
    println!(
        "  {} of {sessions} confirmed; median {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        lat.len(),
        median(&lat),
        p99,
        max
    );
    Ok(json!({
        "sessions": sessions,
        "confirmed": lat.len(),
        "median_ms": median(&lat),
        "p99_ms": p99,
        "max_ms": max,
    }))
}
