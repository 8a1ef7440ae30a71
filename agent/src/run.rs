//! `mcpwatch run`: start the stages, report readiness, stop cleanly on a signal.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use anyhow::{Context as _, Result};
use tokio::{
    signal::unix::{signal, SignalKind},
    sync::mpsc,
};

use crate::{
    api,
    config::Config,
    health_alerts::HealthAlerts,
    mcp::{tree_scope::TreeControl, BudgetControl, KernelControl},
    metrics::Metrics,
    pipeline::{self, Pipeline, PipelineOptions},
    rules::reload::Reloader,
    sensor::{run_ring_reader, Recorder, SensorOptions, Sensors},
    shutdown,
    state::StateOptions,
};

const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Payload capture budget of every freshly exec'd process: records, examined calls,
/// seconds. MCP servers speak within moments of their launch.
const EXEC_BUDGET: (u32, u32, u64) = (64, 65_536, 30);

pub async fn run(config: Config) -> Result<()> {
    let metrics = Arc::new(Metrics::new());
    let (stop, stopped) = shutdown::channel();
    let ready = Arc::new(AtomicBool::new(false));

    prepare_state_dir(&config.state_dir)?;
    // The rule file is validated in full before anything is loaded: an agent never
    // starts on rules it would reject on reload.
    let (rules, heuristics) = pipeline::load_rules(config.rules.as_deref())?;
    let mut sensors = Sensors::load(&sensor_options(&config))?;
    tracing::info!(programs = sensors.attached.len(), "eBPF sensors attached");
    let recorder = config
        .record
        .as_deref()
        .map(|path| Recorder::create(path, metrics.clone()))
        .transpose()?;

    let mut pipeline = Pipeline::build(
        PipelineOptions {
            state: StateOptions {
                max_processes: config.max_processes,
                exited_grace: config.exited_grace,
                read_proc: true,
            },
            outputs: &config.outputs,
            delivery: &config.delivery,
            spool_dir: &config.state_dir,
            baseline_dir: Some(config.state_dir.clone()),
            inventory_events: config.inventory_events,
            inventory_snapshot_interval: config.inventory_snapshot_interval,
            suspect_grace: config.suspect_grace,
        },
        rules,
        heuristics,
        KernelControl {
            budgets: sensors.budgets.take().map(BudgetControl::new),
            trees: sensors.trees.take().map(TreeControl::new),
        },
        metrics.clone(),
    )
    .await?;
    if let Some(pods) = crate::k8s::spawn_pod_watch(stopped.clone()) {
        pipeline.state.set_pod_index(pods);
    }
    let reloader = match &config.rules {
        Some(path) => Some(Reloader::new(
            path.clone(),
            pipeline.rules_tx.clone(),
            pipeline.heuristics_tx.clone(),
            metrics.clone(),
        )?),
        None => None,
    };
    let api_state = api::ApiState {
        metrics: metrics.clone(),
        ready: ready.clone(),
        table: pipeline.state.table(),
        hasher: pipeline.state.hasher(),
        inventory: pipeline.mcp.inventory(),
        audit: pipeline.recent_audit(),
    };
    let listener = tokio::spawn(api::serve(
        config.listen,
        api_state,
        config.web.clone(),
        stopped.clone(),
    ));

    let (sensor_tx, sensor_rx) = mpsc::channel(pipeline::STAGE_QUEUE);
    let ring = sensors
        .proc_events
        .take()
        .context("process ring buffer already taken")?;
    // Network and payload records have their own rings (a flood of either cannot
    // crowd out process records); one reader merges them by timestamp, the process
    // ring drained last (see reader.rs).
    let net_ring = sensors
        .net_events
        .take()
        .context("network ring buffer already taken")?;
    let payload_ring = sensors
        .payload_events
        .take()
        .context("payload ring buffer already taken")?;
    let file_ring = sensors
        .file_events
        .take()
        .context("file ring buffer already taken")?;
    let reader = tokio::spawn(run_ring_reader(
        vec![net_ring, payload_ring, file_ring, ring],
        sensor_tx,
        recorder,
        metrics.clone(),
        config.poll_interval,
        stopped.clone(),
    ));

    // Seed while the reader queues kernel events: every process is then either
    // seeded, observed, or both (the table merges the two).
    let (pipeline, seeded) = tokio::task::spawn_blocking(move || {
        let n = pipeline.state.seed_from_proc();
        (pipeline, n)
    })
    .await
    .context("seeding the process table from /proc")?;
    tracing::info!(processes = seeded, "process table seeded from /proc");
    let table = pipeline.state.table();
    let hasher = pipeline.state.hasher();
    let stages = pipeline.start(sensor_rx, stopped.clone());
    let mut health = HealthAlerts::new(table, hasher, stages.alerts_in.clone(), &metrics);
    let reload_task = reloader.map(|r| tokio::spawn(r.run(stopped.clone())));
    // Handlers first: a SIGTERM right after /readyz turned 200 must drain, not kill.
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    ready.store(true, Ordering::Release);
    crate::service::ready("watching");
    tracing::info!(listen = %config.listen, "mcpwatch ready");
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut listener = listener;
    let listener_result = loop {
        tokio::select! {
            _ = sigint.recv() => break None,
            _ = sigterm.recv() => break None,
            _ = tick.tick() => {
                let drops = sensors.kernel_drops();
                metrics.set_kernel_drops(&drops);
                health.observe_kernel_drops(&drops);
            }
            // The listener only ends on its own when it failed (e.g. port in use).
            res = &mut listener => break Some(res),
        }
    };
    tracing::info!("stopping: draining buffered events");
    crate::service::stopping();
    drop(health); // its sender would keep the output stage's input open
    ready.store(false, Ordering::Release);
    stop.trigger();
    let drained = tokio::time::timeout(STOP_TIMEOUT, async {
        let _ = reader.await;
        stages.finished().await;
        if let Some(t) = reload_task {
            let _ = t.await;
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!("pipeline did not drain within {STOP_TIMEOUT:?}");
    }
    metrics.set_kernel_drops(&sensors.kernel_drops());
    let listener_result = match listener_result {
        Some(r) => r,
        None => listener.await,
    };
    match listener_result {
        Ok(Err(e)) => return Err(e),
        Err(e) => return Err(e).context("HTTP listener task"),
        Ok(Ok(())) => {}
    }
    tracing::info!("stopped");
    Ok(())
}

/// The file sensor's ring: records of MCP trees only, ~100–600 bytes each, so 2 MiB
/// holds a few thousand opens between two polls (a Node server's start-up).
const FILE_RINGBUF_BYTES: u32 = 2 << 20;

/// What the sensors are loaded with (also by `mcpwatch doctor`).
pub(crate) fn sensor_options(config: &Config) -> SensorOptions {
    SensorOptions {
        ringbuf_bytes: config.ringbuf_size,
        payload_ringbuf_bytes: config.payload_ringbuf_size,
        exec_budget: EXEC_BUDGET,
        // Wake the reader early once a quarter of the smaller of the two rings
        // sharing this threshold is waiting.
        wakeup_bytes: u64::from(config.ringbuf_size.min(config.payload_ringbuf_size) / 4),
        net_ringbuf_bytes: config.net_ringbuf_size,
        net_report_ns: config.net_report_interval.as_nanos() as u64,
        file_ringbuf_bytes: FILE_RINGBUF_BYTES,
    }
}

/// The state directory holds what must survive restarts (baselines, the alert spool);
/// it must exist and be private to the agent.
fn prepare_state_dir(dir: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating state directory {}", dir.display()))?;
    let probe = dir.join(".write-test");
    std::fs::write(&probe, b"")
        .with_context(|| format!("state directory {} is not writable", dir.display()))?;
    let _ = std::fs::remove_file(probe);
    let mode = std::fs::metadata(dir)?.permissions().mode();
    if mode & 0o077 != 0 {
        tracing::warn!(dir = %dir.display(), mode = format!("{mode:o}"), "state directory is readable by others");
    }
    Ok(())
}
