//! The stages after the sensors, state → MCP → rules → output, wired once for both
//! `mcpwatch run` (events from the rings) and `mcpwatch replay` (events from a
//! recording): what a replay reports is what the agent would have.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::Result;
use tokio::{
    sync::{mpsc, watch},
    task::JoinHandle,
};

use crate::{
    events::Emitted,
    mcp::{heuristics::Heuristics, KernelControl, McpStage},
    metrics::Metrics,
    output::{DeliveryConfig, HostInfo, OutputStage, SinkSpec},
    rules::{load, model::CompiledRules, RulesStage},
    sensor::SensorEvent,
    shutdown::Shutdown,
    state::{StateOptions, StateStage},
};

/// Bounded hand-offs between stages: a full channel backs up into the ring buffer,
/// where the kernel counts what it cannot store.
pub const STAGE_QUEUE: usize = 65_536;
/// How long an event waits for its executable's hash before going out without it.
const HASH_WAIT: Duration = Duration::from_secs(2);

/// The rule file, validated in full, and its launch heuristics; without a file, no
/// rules and no heuristics.
pub fn load_rules(path: Option<&Path>) -> Result<(CompiledRules, Heuristics)> {
    let Some(path) = path else {
        let rules = load::load_bytes(b"rules: []\n").map_err(|_| anyhow::anyhow!("empty rule set"))?;
        return Ok((rules, Heuristics::none()));
    };
    let rules =
        load::load_file(path).map_err(|e| anyhow::anyhow!("invalid rule file {}:\n{e}", path.display()))?;
    let heuristics = Heuristics::from_spec(&rules.launch_heuristics)?;
    tracing::info!(rules = %rules.summary(), "rules loaded");
    Ok((rules, heuristics))
}

/// What the stages are built with.
pub struct PipelineOptions<'a> {
    pub state: StateOptions,
    pub outputs: &'a [SinkSpec],
    pub delivery: &'a DeliveryConfig,
    /// Where the output stage spools for remote sinks.
    pub spool_dir: &'a Path,
    /// Where the rules stage keeps its baselines (`None`: in memory only).
    pub baseline_dir: Option<PathBuf>,
    pub inventory_events: bool,
    pub inventory_snapshot_interval: Option<Duration>,
    pub suspect_grace: Duration,
}

/// The stages, built and not yet running: the caller may still seed the table and
/// hand out the shared tables (`state`, `mcp`).
pub struct Pipeline {
    pub state: StateStage,
    pub mcp: McpStage,
    rules: RulesStage,
    output: OutputStage,
    /// Publish a new rule set (the reloader).
    pub rules_tx: watch::Sender<Arc<CompiledRules>>,
    pub heuristics_tx: watch::Sender<Heuristics>,
}

impl Pipeline {
    /// `kernel`: the payload sensor's capture budgets, granted to suspects, and the
    /// file sensor's MCP tree membership (none when there is no sensor).
    pub async fn build(
        opts: PipelineOptions<'_>,
        rules: CompiledRules,
        heuristics: Heuristics,
        kernel: KernelControl,
        metrics: Arc<Metrics>,
    ) -> Result<Self> {
        // One identity for the host: in every record's `device`, and in every MCP
        // server's stable uid.
        let host = HostInfo::detect();
        let host_id = host.id.clone();
        let output = OutputStage::open(
            opts.outputs,
            opts.delivery,
            opts.spool_dir,
            host,
            metrics.clone(),
            HASH_WAIT,
        )
        .await?
        .with_inventory_events(opts.inventory_events);
        let (rules_tx, rules_rx) = watch::channel(Arc::new(rules));
        let (heuristics_tx, heuristics_rx) = watch::channel(heuristics.clone());
        let state = StateStage::new(&opts.state, metrics.clone());
        let mut mcp = McpStage::new(
            state.table(),
            state.hasher(),
            state.connections(),
            kernel,
            heuristics,
            host_id,
            metrics.clone(),
        );
        mcp.follow_heuristics(heuristics_rx);
        mcp.snapshot_every(opts.inventory_snapshot_interval);
        mcp.suspect_grace(opts.suspect_grace);
        let rules = RulesStage::new(
            rules_rx,
            state.table(),
            mcp.inventory(),
            metrics,
            opts.baseline_dir,
        );
        Ok(Self {
            state,
            mcp,
            rules,
            output,
            rules_tx,
            heuristics_tx,
        })
    }

    /// The recent audit records the output stage keeps (`/v1/audit`).
    pub fn recent_audit(&self) -> crate::output::recent_audit::RecentAudit {
        self.output.recent_audit()
    }

    /// Starts the stages on `sensor_rx`. They stop in order once it closes (after
    /// `shutdown`, the sensor side drains and closes it).
    pub fn start(self, sensor_rx: mpsc::Receiver<SensorEvent>, shutdown: Shutdown) -> Running {
        let (state_tx, state_rx) = mpsc::channel(STAGE_QUEUE);
        let (mcp_tx, mcp_rx) = mpsc::channel(STAGE_QUEUE);
        let (rules_out_tx, rules_out_rx) = mpsc::channel(STAGE_QUEUE);
        let tasks = vec![
            tokio::spawn(self.state.run(sensor_rx, state_tx, shutdown.clone())),
            tokio::spawn(self.mcp.run(state_rx, mcp_tx.clone(), shutdown.clone())),
            tokio::spawn(self.rules.run(mcp_rx, rules_out_tx, shutdown)),
            tokio::spawn(self.output.run(rules_out_rx)),
        ];
        Running {
            alerts_in: mcp_tx,
            tasks,
        }
    }
}

/// The running stages.
pub struct Running {
    /// Where alerts of the agent's own (health) enter, in front of the rules stage
    /// (which passes them on). Drop it before waiting for the stages: it keeps the
    /// output stage's input open.
    pub alerts_in: mpsc::Sender<Emitted>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Waits until every stage has finished, upstream first.
    pub async fn finished(self) {
        drop(self.alerts_in);
        for t in self.tasks {
            if let Err(e) = t.await {
                tracing::warn!(%e, "pipeline stage ended abnormally");
            }
        }
    }
}
