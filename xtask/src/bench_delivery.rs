//! Delivery figures for `cargo xtask bench`: an exec storm with telemetry routed to a
//! local syslog-over-TCP receiver through the spool (`events=all`). Measures the time
//! from the kernel event to its arrival at the receiver while it keeps up, then the
//! rate at which a backlog drains once a paused receiver resumes.
//! Figures only, no pass/fail.

use std::{
    io::{BufRead as _, BufReader, Read as _},
    net::TcpListener,
    path::Path,
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, Result};
use serde_json::{json, Value};

use crate::{measure::percentile, util};

#[derive(Default)]
struct Received {
    /// Arrival − event time (ms) of every record carrying the token.
    latency_ms: Vec<f64>,
    last: Option<Instant>,
    /// Every frame received, and the count when the last token record came.
    frames: u64,
    frames_at_last: u64,
}

type Shared = Arc<Mutex<Received>>;

/// A syslog receiver: octet-counted frames, timestamps each exec carrying `token`;
/// reads nothing while `paused`.
fn receiver(token: String, paused: Arc<AtomicBool>) -> Result<(u16, Shared)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let got = Arc::new(Mutex::new(Received::default()));
    let g = got.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let g = g.clone();
            let token = token.clone();
            let paused = paused.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(conn);
                loop {
                    while paused.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(5));
                    }
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
                    g.lock().unwrap().frames += 1;
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
                    if v["unmapped"]["action"] != "exec" || v["process"]["name"] != "true" {
                        continue; // one record per exec of the storm's child
                    }
                    let wall_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as f64;
                    let mut g = g.lock().unwrap();
                    g.latency_ms.push(wall_ms - v["time"].as_f64().unwrap_or(wall_ms));
                    g.last = Some(now);
                    g.frames_at_last = g.frames;
                }
            });
        }
    });
    Ok((port, got))
}

fn storm(bin: &Path, execs: u64, token: &str) -> Result<f64> {
    let t0 = Instant::now();
    util::output(
        Command::new(bin)
            .arg(execs.to_string())
            .arg("/bin/true")
            .arg(token),
    )?;
    Ok(t0.elapsed().as_secs_f64())
}

fn wait_for(got: &Shared, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while got.lock().unwrap().latency_ms.len() < n && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn bench_delivery(agent_bin: &Path, storm_bin: &Path, work: &Path, execs: u64) -> Result<Value> {
    let live_tok = format!("benchdlv-live-{}", std::process::id());
    let held_tok = format!("benchdlv-held-{}", std::process::id());
    let live_pause = Arc::new(AtomicBool::new(false));
    let held_pause = Arc::new(AtomicBool::new(true));
    let (live_port, live) = receiver(live_tok.clone(), live_pause)?;
    let (held_port, held) = receiver(held_tok.clone(), held_pause.clone())?;
    let listen = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let state = work.join("delivery-state");
    let _ = std::fs::remove_dir_all(&state);
    let mut agent = Command::new(agent_bin)
        .args(["run", "--listen", &format!("127.0.0.1:{listen}")])
        .arg("--state-dir")
        .arg(&state)
        .arg("--output")
        .arg(format!("syslog+tcp://127.0.0.1:{live_port}?events=all&batch=256"))
        .arg("--output")
        .arg(format!("syslog+tcp://127.0.0.1:{held_port}?events=all&batch=256"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting the agent")?;
    let ready = Instant::now();
    while crate::bench_monitor::http_get(listen, "/readyz").is_none_or(|(code, _)| code != 200) {
        anyhow::ensure!(ready.elapsed() < Duration::from_secs(30), "agent not ready");
        std::thread::sleep(Duration::from_millis(100));
    }
    // 1. The receiver keeps up: kernel event → arrival.
    let live_s = storm(storm_bin, execs, &live_tok)?;
    wait_for(&live, execs as usize);
    // 2. A receiver that was not reading resumes: how fast the spooled backlog drains.
    let held_s = storm(storm_bin, execs, &held_tok)?;
    std::thread::sleep(Duration::from_secs(1));
    let resumed = Instant::now();
    let frames_before = held.lock().unwrap().frames;
    held_pause.store(false, Ordering::Relaxed);
    wait_for(&held, execs as usize);
    let drain_s = held
        .lock()
        .unwrap()
        .last
        .map_or(f64::NAN, |l| l.duration_since(resumed).as_secs_f64());
    let _ = agent.kill();
    let _ = agent.wait();
    let l = live.lock().unwrap();
    let (n_held, drained) = {
        let h = held.lock().unwrap();
        (h.latency_ms.len(), h.frames_at_last - frames_before)
    };
    println!();
    println!(
        "delivery: exec storm → spool (fdatasync) → syslog+tcp receivers on loopback, {execs} execs each"
    );
    let live_n = l.latency_ms.len();
    let (p50, p99, max) = (
        percentile(&l.latency_ms, 0.5),
        percentile(&l.latency_ms, 0.99),
        percentile(&l.latency_ms, 1.0),
    );
    println!(
        "  receiver keeping up   {live_n}/{execs} delivered; kernel event → received p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms (storm {live_s:.2} s)"
    );
    println!(
        "  paused receiver       {n_held}/{execs} delivered after it resumed; backlog of {drained} records \
         (fork/exec/exit, host-wide) drained at {:.0} records/s (storm {held_s:.2} s)",
        drained as f64 / drain_s
    );
    Ok(json!({
        "execs": execs,
        "live": {"delivered": live_n, "p50_ms": p50, "p99_ms": p99, "max_ms": max, "storm_s": live_s},
        "paused": {"delivered": n_held, "backlog_records": drained, "drain_records_per_s": drained as f64 / drain_s, "storm_s": held_s},
    }))
}
