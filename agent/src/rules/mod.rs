//! Stage 4: rule evaluation. Sits between MCP detection and the sinks; sees every
//! event, pushes alerts in front of the event that raised them. The rule file
//! (`rules.yaml`) is parsed and validated with positions (`load`), compiled into a
//! matcher (`model`, `condition`, `netlist`), evaluated by `engine`, and reloaded on
//! SIGHUP or change (`reload`): a new rule set is swapped in between two events.

pub mod baseline;
pub mod condition;
pub mod context;
pub mod detect;
pub mod engine;
pub mod fields;
pub mod filelist;
pub mod host;
pub mod load;
pub mod model;
pub mod netlist;
pub mod reload;
pub mod schema;
pub mod state_file;
pub mod tool_baseline;
pub mod tool_policy;
pub mod volume_baseline;

use std::{path::Path, process::ExitCode, sync::Arc, time::Duration};

use tokio::sync::{mpsc, watch};

use self::{engine::Engine, host::LiveHost, model::CompiledRules};
use crate::{
    events::{Emitted, Event},
    mcp::inventory::SharedInventory,
    metrics::Metrics,
    shutdown::Shutdown,
    state::SharedTable,
};

/// How often time-based rules (server lifetime) are checked.
const TICK: Duration = Duration::from_secs(1);

pub struct RulesStage {
    engine: Engine,
    updates: watch::Receiver<Arc<CompiledRules>>,
    /// The inventory the MCP stage keeps: this stage writes each server's sanctioned
    /// status into it (it is the one judge) and publishes the counts by status.
    inventory: SharedInventory,
    metrics: Arc<Metrics>,
}

impl RulesStage {
    pub fn new(
        updates: watch::Receiver<Arc<CompiledRules>>,
        table: SharedTable,
        inventory: SharedInventory,
        metrics: Arc<Metrics>,
        state_dir: Option<std::path::PathBuf>,
    ) -> Self {
        let rules = updates.borrow().clone();
        Self {
            engine: Engine::new(rules, Box::new(LiveHost { table }), state_dir),
            updates,
            inventory,
            metrics,
        }
    }

    pub async fn run(
        mut self,
        mut rx: mpsc::Receiver<Emitted>,
        tx: mpsc::Sender<Emitted>,
        mut shutdown: Shutdown,
    ) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut batch = Vec::with_capacity(crate::events::STAGE_BATCH);
        self.publish_counts();
        loop {
            let n = tokio::select! {
                n = rx.recv_many(&mut batch, crate::events::STAGE_BATCH) => n,
                _ = tick.tick() => {
                    self.take_update();
                    let alerts = self.engine.tick();
                    if !self.send_alerts(alerts, &tx).await {
                        return;
                    }
                    continue;
                }
                // Upstream drains into us; keep going until it closes the channel.
                _ = shutdown.wait() => rx.recv_many(&mut batch, crate::events::STAGE_BATCH).await,
            };
            if n == 0 {
                break;
            }
            for mut em in batch.drain(..) {
                // A new rule set takes effect between two events: each event is judged
                // by exactly one rule set.
                self.take_update();
                let alerts = self.engine.evaluate(&mut em.event);
                if let Event::McpServer(e) = &em.event {
                    self.record_status(&e.server);
                }
                if !self.send_alerts(alerts, &tx).await || tx.send(em).await.is_err() {
                    return;
                }
            }
        }
    }

    fn take_update(&mut self) {
        if self.updates.has_changed().unwrap_or(false) {
            let rules = self.updates.borrow_and_update().clone();
            {
                let mut inv = self.inventory.write().expect("inventory lock");
                for s in inv.servers_mut() {
                    rules.judge(s);
                }
            }
            self.engine.set_rules(rules);
            self.publish_counts();
        }
    }

    /// Writes the status this stage judged into the inventory (what the API and the
    /// snapshots show) and refreshes the counts when it changed.
    fn record_status(&self, judged: &crate::mcp::inventory::McpServer) {
        {
            let mut inv = self.inventory.write().expect("inventory lock");
            if let Some(s) = inv.servers_mut().find(|s| s.id == judged.id) {
                s.sanctioned = judged.sanctioned;
                s.sanctioned_entry = judged.sanctioned_entry.clone();
            };
        }
        self.publish_counts();
    }

    fn publish_counts(&self) {
        let counts = self.inventory.read().expect("inventory lock").counts();
        self.metrics.set_mcp_servers(&counts);
    }

    async fn send_alerts(&self, alerts: Vec<crate::alert::Alert>, tx: &mpsc::Sender<Emitted>) -> bool {
        for a in alerts {
            if tx.send(Emitted::ready(Event::Alert(Box::new(a)))).await.is_err() {
                return false;
            }
        }
        true
    }
}

/// `mcpwatch check-rules FILE`: exit 0 with a one-line summary, or every error and
/// exit 78 (EX_CONFIG).
pub fn check_rules_cli(path: &Path) -> ExitCode {
    match load::load_file(path) {
        Ok(r) => {
            println!("{}: OK: {}", path.display(), r.summary());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            let n = e.errors.len();
            eprintln!("{}: {n} error{}", path.display(), if n == 1 { "" } else { "s" });
            ExitCode::from(78)
        }
    }
}
