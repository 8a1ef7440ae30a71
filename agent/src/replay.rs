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
        None,
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
