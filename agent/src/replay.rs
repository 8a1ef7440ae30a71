//! `mcpwatch replay FILE --rules RULES`: a recording (`mcpwatch run --record`) through
//! the agent's own stages, state → MCP → rules → output (`pipeline.rs`), without
//! sensors, eBPF or root: what would this rule file have raised on those events?
//!
//! The replay judges the events as the agent did, with three differences: nothing is
//! read from `/proc` for the recorded pids (they are gone, or are other processes by
//! now), so processes that ran before the recording began are known only by what
//! later events say; executables are hashed as they are on disk now; and findings
//! are not throttled (the recording's hours pass in moments).

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    sync::Arc,
    time::Duration,
};

use anyhow::{Context as _, Result};
use tokio::sync::mpsc;

use crate::{
    cli::ReplayArgs,
    clock,
    metrics::Metrics,
    output::{DeliveryConfig, SinkSpec},
    pipeline::{self, Pipeline, PipelineOptions},
    sensor::RecordingReader,
    shutdown,
    state::StateOptions,
};

/// sysexits EX_DATAERR: the recording is not one, or is damaged.
const EX_DATAERR: u8 = 65;
/// sysexits EX_CONFIG: the rule file is invalid.
const EX_CONFIG: u8 = 78;
/// Events read ahead of the pipeline: small, so that the replay's clock (the newest
/// event read) stays close to the events the stages are judging.
const READ_AHEAD: usize = 256;

/// Why a replay failed, for the exit code.
#[derive(Debug)]
pub enum ReplayError {
    Recording(anyhow::Error),
    Rules(anyhow::Error),
    Other(anyhow::Error),
}

impl ReplayError {
    fn exit_code(&self) -> ExitCode {
        match self {
            Self::Recording(_) => ExitCode::from(EX_DATAERR),
            Self::Rules(_) => ExitCode::from(EX_CONFIG),
            Self::Other(_) => ExitCode::FAILURE,
        }
    }

    fn error(&self) -> &anyhow::Error {
        match self {
            Self::Recording(e) | Self::Rules(e) | Self::Other(e) => e,
        }
    }
}

/// How a replay went.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReplaySummary {
    pub events: u64,
}

/// What to replay, with which rules, and where the findings go.
pub struct ReplayRequest<'a> {
    pub recording: &'a Path,
    pub rules: &'a Path,
    /// `None`: stdout.
    pub output: Option<PathBuf>,
    /// Every event the pipeline produces, not only alerts.
    pub all_events: bool,
    /// Run on the recording's clock ([`clock::replay_advance`]); process-wide, so the
    /// command does and in-process tests, sharing the process, do not.
    pub recorded_clock: bool,
}

/// The command: exit 0 once the recording is consumed and the pipeline drained.
pub fn run_cli(args: &ReplayArgs) -> ExitCode {
    crate::telemetry::init(args.log_format);
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mcpwatch: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let request = ReplayRequest {
        recording: &args.file,
        rules: &args.rules,
        output: (args.output != "-").then(|| PathBuf::from(&args.output)),
        all_events: args.all_events,
        recorded_clock: true,
    };
    match rt.block_on(replay(&request)) {
        Ok(summary) => {
            tracing::info!(events = summary.events, recording = %args.file.display(), "replay done");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mcpwatch: {:#}", e.error());
            e.exit_code()
        }
    }
}

pub async fn replay(req: &ReplayRequest<'_>) -> Result<ReplaySummary, ReplayError> {
    let mut reader = RecordingReader::open(req.recording).map_err(ReplayError::Recording)?;
    let (rules, heuristics) = pipeline::load_rules(Some(req.rules)).map_err(ReplayError::Rules)?;
    let output = sink_spec(req.output.as_deref(), req.all_events).map_err(ReplayError::Other)?;
    if req.recorded_clock {
        clock::replay_with_offset(reader.header.boot_wall_offset_ns);
    }
    let metrics = Arc::new(Metrics::new());
    let delivery = DeliveryConfig {
        alert_throttle_secs: 0,
        ..DeliveryConfig::default()
    };
    let spool_dir = std::env::temp_dir();
    let stages = Pipeline::build(
        PipelineOptions {
            state: StateOptions {
                max_processes: 131_072,
                exited_grace: Duration::from_secs(30),
                read_proc: false,
            },
            outputs: std::slice::from_ref(&output),
            delivery: &delivery,
            // Only remote sinks spool, and a replay has none.
            spool_dir: &spool_dir,
            // The agent's baselines are its own: a replay learns in memory.
            baseline_dir: None,
            inventory_events: false,
            inventory_snapshot_interval: None,
            suspect_grace: Duration::from_secs(10),
        },
        rules,
        heuristics,
        Default::default(),
        metrics,
    )
    .await
    .map_err(ReplayError::Other)?;
    let (_stop, stopped) = shutdown::channel();
    let (tx, rx) = mpsc::channel(READ_AHEAD);
    let running = stages.start(rx, stopped);
    let recorded_clock = req.recorded_clock;
    // The file is read on a thread of its own: reading blocks.
    let feeder = tokio::task::spawn_blocking(move || -> Result<u64> {
        let mut n = 0;
        while let Some(ev) = reader.next_event()? {
            if recorded_clock {
                clock::replay_advance(ev.ts_ns());
            }
            if tx.blocking_send(ev).is_err() {
                break;
            }
            n += 1;
        }
        Ok(n)
    });
    let fed = feeder.await.context("reading the recording");
    // The sender is gone with the feeder: the stages drain and stop in order.
    running.finished().await;
    match fed {
        Ok(Ok(events)) => Ok(ReplaySummary { events }),
        Ok(Err(e)) => Err(ReplayError::Recording(e)),
        Err(e) => Err(ReplayError::Other(e)),
    }
}

fn sink_spec(output: Option<&Path>, all_events: bool) -> Result<SinkSpec> {
    let target = match output {
        None => "-".to_string(),
        Some(p) => p.to_str().context("output path is not UTF-8")?.to_string(),
    };
    let events = if all_events { "all" } else { "alerts" };
    format!("jsonl:{target}?events={events}")
        .parse::<SinkSpec>()
        .map_err(anyhow::Error::msg)
}

/// The in-process tier: sensor events, as a recording holds them, through the agent's
/// own stages with a real rule file, no root and no eBPF.
#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::Value;

    use super::*;
    use crate::sensor::{
        Channel, Direction, ExecEvent, ExitEvent, ForkEvent, PayloadEvent, Recorder, SensorEvent,
    };

    // Beyond the largest pid_max (2^22): no live process on the test host has them,
    // so nothing of this host leaks into the judgement.
    const INIT: u32 = 4_194_400;
    const HOST: u32 = 4_194_401;
    const SERVER: u32 = 4_194_402;

    fn exec(ts_ns: u64, pid: u32, comm: &str, argv: &[&str]) -> SensorEvent {
        SensorEvent::Exec(ExecEvent {
            ts_ns,
            pid,
            tid: pid,
            old_tid: pid,
            uid: 1000,
            gid: 1000,
            cgroup_id: 1,
            comm: comm.into(),
            filename: argv[0].into(),
            argv: argv.iter().map(|s| s.to_string()).collect(),
            argv_truncated: false,
            argv_incomplete: false,
            envc: 3,
        })
    }

    fn fork(ts_ns: u64, parent_pid: u32, child_pid: u32, comm: &str) -> SensorEvent {
        SensorEvent::Fork(ForkEvent {
            ts_ns,
            parent_pid,
            child_pid,
            uid: 1000,
            gid: 1000,
            cgroup_id: 1,
            comm: comm.into(),
        })
    }

    fn pipe(ts_ns: u64, pid: u32, inode: u64, direction: Direction, data: &[u8]) -> SensorEvent {
        SensorEvent::Payload(PayloadEvent {
            ts_ns,
            pid,
            tid: pid,
            fd: if direction == Direction::Read { 0 } else { 1 },
            inode,
            channel: Channel::Pipe,
            direction,
            total_len: data.len() as u32,
            truncated: false,
            data: data.to_vec(),
            tuple: None,
        })
    }

    /// A host launching a stdio server that answers `initialize` (bytes as the Python
    /// SDK writes them), then exits: replayed at once, the state stage has seen the exit
    /// before the MCP stage reads the answer, as it does live for a server that exits
    /// right after answering.
    fn session() -> Vec<SensorEvent> {
        let request = br#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"mcp","version":"0.1.0"}}}
"#;
        let response = br#"{"jsonrpc":"2.0","id":1,"result":{"capabilities":{"tools":{"listChanged":false}},"protocolVersion":"2025-11-25","serverInfo":{"name":"mcp-git","version":"2026.10.19"}}}
"#;
        let s = 1_000_000_000;
        vec![
            fork(s, INIT, HOST, "bash"),
            exec(s + 1_000, HOST, "agent-host", &["/usr/bin/agent-host", "--mcp"]),
            fork(s + 2_000, HOST, SERVER, "agent-host"),
            exec(
                s + 3_000,
                SERVER,
                "mcp-server-git",
                &["/opt/venv/bin/mcp-server-git"],
            ),
            pipe(s + 4_000, HOST, 10, Direction::Write, request),
            pipe(s + 5_000, SERVER, 10, Direction::Read, request),
            pipe(s + 6_000, SERVER, 11, Direction::Write, response),
            SensorEvent::Exit(ExitEvent {
                ts_ns: s + 7_000,
                pid: SERVER,
                status: Some(0),
                comm: "mcp-server-git".into(),
            }),
        ]
    }

    fn record(dir: &Path, events: &[SensorEvent]) -> PathBuf {
        let path = dir.join("recording.jsonl");
        let rec = Recorder::create(&path, Arc::new(Metrics::new())).unwrap();
        for ev in events {
            rec.record(ev);
        }
        drop(rec);
        path
    }

    async fn replayed(recording: &Path, rules_text: &str, all_events: bool) -> (ReplaySummary, Vec<Value>) {
        let dir = recording.parent().unwrap();
        let rules = dir.join("rules.yaml");
        std::fs::write(&rules, rules_text).unwrap();
        let output = dir.join("out.jsonl");
        let _ = std::fs::remove_file(&output);
        let summary = replay(&ReplayRequest {
            recording,
            rules: &rules,
            output: Some(output.clone()),
            all_events,
            recorded_clock: false,
        })
        .await
        .unwrap_or_else(|e| panic!("{:#}", e.error()));
        let lines = std::fs::read_to_string(&output)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        (summary, lines)
    }

    fn repo_rules() -> String {
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../rules.yaml")).unwrap()
    }

    fn shadow_findings(events: &[Value]) -> Vec<&Value> {
        events
            .iter()
            .filter(|e| e["type"] == "alert" && e["rule_id"] == "shadow-mcp-server")
            .collect()
    }

    #[tokio::test]
    async fn a_recorded_session_raises_a_shadow_finding_and_sanctioning_it_silences_it() {
        let dir = tempfile::tempdir().unwrap();
        let recording = record(dir.path(), &session());

        let (summary, out) = replayed(&recording, &repo_rules(), false).await;
        assert_eq!(summary.events, session().len() as u64);
        let shadow = shadow_findings(&out);
        assert_eq!(shadow.len(), 1, "{out:#?}");
        let a = shadow[0];
        assert_eq!(a["mcp_server"]["name"], "mcp-git", "{a:#}");
        assert_eq!(a["mcp_server"]["pid"], SERVER, "{a:#}");
        assert_eq!(a["mcp_server"]["host"]["pid"], HOST, "{a:#}");
        assert_eq!(a["process"]["pid"], SERVER, "{a:#}");
        assert!(out.iter().all(|e| e["type"] == "alert"), "{out:#?}");

        let sanctioned = repo_rules().replace(
            "sanctioned_servers: []\n",
            "sanctioned_servers:\n  - id: git\n    name: mcp-git\n",
        );
        assert_ne!(sanctioned, repo_rules());
        let (_, out) = replayed(&recording, &sanctioned, true).await;
        let confirmed = out
            .iter()
            .find(|e| e["type"] == "mcp_server" && e["server"]["state"] == "confirmed")
            .unwrap_or_else(|| panic!("the server is not confirmed: {out:#?}"));
        assert_eq!(confirmed["server"]["name"], "mcp-git");
        assert_eq!(confirmed["server"]["sanctioned"], true, "{confirmed:#}");
        assert!(shadow_findings(&out).is_empty(), "{out:#?}");
    }

    #[tokio::test]
    async fn a_damaged_recording_and_a_broken_rule_file_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let recording = record(dir.path(), &session());
        let mut text = std::fs::read_to_string(&recording).unwrap();
        text.push_str("{\"kind\":\"exec\",\"ts_ns\":\n");
        std::fs::write(&recording, text).unwrap();
        let rules = dir.path().join("rules.yaml");
        std::fs::write(&rules, repo_rules()).unwrap();
        let request = ReplayRequest {
            recording: &recording,
            rules: &rules,
            output: Some(dir.path().join("out.jsonl")),
            all_events: false,
            recorded_clock: false,
        };
        let e = replay(&request).await.unwrap_err();
        assert!(matches!(e, ReplayError::Recording(_)), "{e:?}");
        assert!(format!("{:#}", e.error()).contains("line 10"), "{:#}", e.error());

        std::fs::write(&rules, "rules: [{id: x}]\n").unwrap();
        let e = replay(&request).await.unwrap_err();
        assert!(matches!(e, ReplayError::Rules(_)), "{e:?}");
    }
}
