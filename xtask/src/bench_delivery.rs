//! Delivery figures for `cargo xtask bench`: an exec storm with telemetry routed to a
//! local syslog-over-TCP receiver through the spool (`events=all`), measuring records/s
//! delivered and the time from the kernel event to its arrival at the receiver.
//! Figures only, no pass/fail.

use std::{
    io::{BufRead as _, BufReader, Read as _},
    net::TcpListener,
    path::Path,
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, Result};

use crate::util;

#[derive(Default)]
struct Received {
    /// Arrival − event time (ms) of every record carrying the token.
    latency_ms: Vec<f64>,
    first: Option<Instant>,
    last: Option<Instant>,
}

/// A syslog receiver: octet-counted frames, timestamps each one carrying `token`.
fn receiver(token: String) -> Result<(u16, Arc<Mutex<Received>>)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let got = Arc::new(Mutex::new(Received::default()));
    let g = got.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let g = g.clone();
            let token = token.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(conn);
                loop {
                    let mut len = Vec::new();
                    if r.read_until(b' ', &mut len).unwrap_or(0) == 0 {
                        return;
                    }
                    let Ok(n) = std::str::from_utf8(&len).unwrap_or("").trim().parse::<usize>() else {
                        return;
                    };
                    let mut msg = vec![0; n];
                    if r.read_exact(&mut msg).is_err() {
                        return;
                    }
                    let now = Instant::now();
                    let text = String::from_utf8_lossy(&msg);
                    if !text.contains(&token) {
                        continue;
                    }
                    let Some(json) = text.find("] {").map(|i| &text[i + 2..]) else {
                        continue;
                    };
                    let Ok(v) = serde_json::from_str::<serde_json::Value>(json) else {
                        continue;
                    };
                    if v["activity_id"] != 1 {
                        continue; // launches only: one per exec
                    }
                    let wall_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as f64;
                    let mut g = g.lock().unwrap();
                    g.latency_ms.push(wall_ms - v["time"].as_f64().unwrap_or(wall_ms));
                    g.first.get_or_insert(now);
                    g.last = Some(now);
                }
            });
        }
    });
    Ok((port, got))
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p).round() as usize]
}

pub fn bench_delivery(agent_bin: &Path, storm: &Path, work: &Path, execs: u64) -> Result<()> {
    let token = format!("benchdlv-{}", std::process::id());
    let (port, got) = receiver(token.clone())?;
    let listen = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let state = work.join("delivery-state");
    let _ = std::fs::remove_dir_all(&state);
    let mut agent = Command::new(agent_bin)
        .args(["run", "--listen", &format!("127.0.0.1:{listen}")])
        .arg("--state-dir")
        .arg(&state)
        .arg("--output")
        .arg(format!("syslog+tcp://127.0.0.1:{port}?events=all&batch=256"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting the agent")?;
    let ready = Instant::now();
    while crate::bench::http_get(listen, "/readyz").is_none_or(|(code, _)| code != 200) {
        anyhow::ensure!(ready.elapsed() < Duration::from_secs(30), "agent not ready");
        std::thread::sleep(Duration::from_millis(100));
    }
    let t0 = Instant::now();
    util::output(
        Command::new(storm)
            .arg(execs.to_string())
            .arg("/bin/true")
            .arg(&token),
    )?;
    let storm_s = t0.elapsed().as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(60);
    while (got.lock().unwrap().latency_ms.len() as u64) < execs && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = agent.kill();
    let _ = agent.wait();
    let mut g = got.lock().unwrap();
    let n = g.latency_ms.len();
    let span = match (g.first, g.last) {
        (Some(a), Some(b)) => (b.duration_since(t0).as_secs_f64()).max(a.duration_since(t0).as_secs_f64()),
        _ => f64::NAN,
    };
    println!();
    println!("delivery: exec storm → spool (fsync) → syslog+tcp receiver on loopback, {execs} execs");
    println!("  delivered           {n}/{execs} launch records");
    println!(
        "  throughput          {:.0} records/s (storm took {storm_s:.2} s; last record after {span:.2} s)",
        n as f64 / span
    );
    println!(
        "  kernel event → received: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        pct(&mut g.latency_ms, 0.5),
        pct(&mut g.latency_ms, 0.99),
        pct(&mut g.latency_ms, 1.0)
    );
    Ok(())
}
