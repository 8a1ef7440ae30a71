//! Stage 4: rule evaluation. Sits between MCP detection and the sinks; sees every
//! event, pushes alerts in front of the event that raised them. The rule file
//! (`rules.yaml`) is parsed and validated with positions (`load`), compiled into a
//! matcher (`model`, `condition`, `netlist`), evaluated by `engine`, and reloaded on
//! SIGHUP or change (`reload`): a new rule set is swapped in between two events.

pub mod baseline;
pub mod condition;
pub mod engine;
pub mod load;
pub mod model;
pub mod netlist;
pub mod reload;
pub mod schema;

use std::{path::Path, process::ExitCode, sync::Arc, time::Duration};

use tokio::sync::{mpsc, watch};

use self::{engine::Engine, model::CompiledRules};
use crate::{
    events::{Emitted, Event},
    shutdown::Shutdown,
    state::SharedTable,
};

/// How often time-based rules (server lifetime) are checked.
const TICK: Duration = Duration::from_secs(1);

pub struct RulesStage {
    engine: Engine,
    updates: watch::Receiver<Arc<CompiledRules>>,
}

impl RulesStage {
    pub fn new(
        updates: watch::Receiver<Arc<CompiledRules>>,
        table: SharedTable,
        state_dir: Option<std::path::PathBuf>,
    ) -> Self {
        let rules = updates.borrow().clone();
        Self {
            engine: Engine::new(rules, table, state_dir),
            updates,
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
            for em in batch.drain(..) {
                // A new rule set takes effect between two events: each event is judged
                // by exactly one rule set.
                self.take_update();
                let alerts = self.engine.evaluate(&em.event);
                if !self.send_alerts(alerts, &tx).await || tx.send(em).await.is_err() {
                    return;
                }
            }
        }
    }

    fn take_update(&mut self) {
        if self.updates.has_changed().unwrap_or(false) {
            let rules = self.updates.borrow_and_update().clone();
            self.engine.set_rules(rules);
        }
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
