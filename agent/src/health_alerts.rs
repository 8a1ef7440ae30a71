//! Alerts the agent raises about itself. Today: lost kernel events. When the ring
//! buffer is full the kernel drops records, and whatever started in that window may
//! be invisible; a SOC must hear about that blind spot through the same channel as
//! every other finding, not only as a metric. (An attacker flooding execs to hide a
//! launch is the known evasion, ATT&CK T1562.001 "Impair Defenses".)

use std::time::SystemTime;

use mcpwatch_common::EventKind;
use tokio::sync::mpsc;

use crate::{
    alert::{Alert, Severity},
    events::{Emitted, Event},
    metrics::Metrics,
    state::{
        exe_hash::ExeHasher,
        view::{AncestorView, ProcessView},
        SharedTable,
    },
};

pub const RULE_KERNEL_DROPS: &str = "MCPW-SENSOR-001";
const SEVERITY: Severity = Severity::Medium;

pub struct HealthAlerts {
    table: SharedTable,
    hasher: ExeHasher,
    tx: mpsc::Sender<Emitted>,
    /// Drop totals already reported, per kind.
    reported: Vec<(EventKind, u64)>,
}

impl HealthAlerts {
    pub fn new(table: SharedTable, hasher: ExeHasher, tx: mpsc::Sender<Emitted>, metrics: &Metrics) -> Self {
        metrics.alert_rule_known(RULE_KERNEL_DROPS, SEVERITY);
        Self {
            table,
            hasher,
            tx,
            reported: Vec::new(),
        }
    }

    /// Called with the kernel's running drop totals; raises an alert when they grew.
    /// The throttle downstream keeps it to one per window.
    pub fn observe_kernel_drops(&mut self, totals: &[(EventKind, u64)]) {
        let lost: Vec<(EventKind, u64)> = totals
            .iter()
            .map(|(k, t)| {
                let before = self
                    .reported
                    .iter()
                    .find(|(rk, _)| rk == k)
                    .map_or(0, |(_, v)| *v);
                (*k, t.saturating_sub(before))
            })
            .filter(|(_, n)| *n > 0)
            .collect();
        if lost.is_empty() {
            return;
        }
        let Some(alert) = self.kernel_drop_alert(&lost, totals) else {
            return;
        };
        match self.tx.try_send(Emitted::ready(Event::Alert(Box::new(alert)))) {
            Ok(()) => self.reported = totals.to_vec(),
            // The pipeline is full: try again on the next tick with the larger count.
            Err(e) => tracing::warn!(error = %e, "sensor health alert deferred"),
        }
    }

    fn kernel_drop_alert(&self, lost: &[(EventKind, u64)], totals: &[(EventKind, u64)]) -> Option<Alert> {
        let table = self.table.read().ok()?;
        let me = table
            .by_pid(std::process::id())
            .into_iter()
            .find(|p| p.is_alive())?;
        let process = ProcessView::of(me, me.exe_file.and_then(|id| self.hasher.known(&id)));
        let lineage = table.lineage(&me.key).into_iter().map(AncestorView::of).collect();
        let what = lost
            .iter()
            .map(|(k, n)| format!("{n} {}", k.name()))
            .collect::<Vec<_>>()
            .join(", ");
        let total: u64 = totals.iter().map(|(_, n)| n).sum();
        Some(Alert {
            rule_id: RULE_KERNEL_DROPS.into(),
            rule_name: "sensor_kernel_events_lost".into(),
            title: "mcpwatch lost kernel events: a detection blind spot".into(),
            description: format!(
                "The kernel ring buffer was full and dropped {what} event(s) ({total} since start). \
                 Processes and MCP servers started in that window may be unseen. Raise --ringbuf-size \
                 or look for an exec flood."
            ),
            severity: SEVERITY,
            tags: vec!["T1562.001".into()],
            time: SystemTime::now(),
            identity: "kernel-ring-buffer".into(),
            process,
            lineage,
            mcp_server: None,
            connection: None,
            sanctioned_entry: None,
            mcp_request: None,
            file: None,
            chain: None,
            throttle: None,
        })
    }
}
