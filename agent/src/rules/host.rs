//! What the engine asks of the host: the process table the state stage keeps and the
//! few facts only `/proc` knows. Behind a trait so the engine runs in a unit test on a
//! table built there, and in `mcpwatch replay` on processes long gone.

use crate::state::{
    process_table::{Origin, ProcKey, Process},
    view::{AncestorView, ProcessView},
    SharedTable,
};

pub trait Host: Send + Sync {
    /// The process table of the state stage.
    fn table(&self) -> &SharedTable;

    /// Effective capabilities (`CapEff`) of a live process.
    fn effective_caps(&self, pid: u32) -> Option<u64>;

    /// The live process with this pid, else the last one that had it.
    fn process(&self, pid: u32) -> Option<Process> {
        let t = self.table().read().expect("table lock");
        let key = t.latest_key(pid)?;
        t.get(&key).cloned()
    }

    /// The process and its ancestors, nearest first.
    fn tree(&self, pid: u32) -> Vec<ProcKey> {
        let t = self.table().read().expect("table lock");
        let Some(key) = t.latest_key(pid) else {
            return Vec::new();
        };
        std::iter::once(key)
            .chain(t.lineage(&key).into_iter().map(|p| p.key))
            .collect()
    }

    /// The process and lineage views a finding carries (a bare pid if unknown).
    fn view(&self, pid: u32) -> (ProcessView, Vec<AncestorView>) {
        let t = self.table().read().expect("table lock");
        let key = t.latest_key(pid);
        match key.and_then(|k| t.get(&k).map(|p| (k, p))) {
            Some((k, p)) => (
                ProcessView::of(p, None),
                t.lineage(&k).into_iter().map(AncestorView::of).collect(),
            ),
            None => (
                ProcessView::of(&Process::bare(ProcKey { pid, start_ns: 0 }, Origin::Kernel), None),
                Vec::new(),
            ),
        }
    }
}

/// The running host: the shared table and `/proc`.
pub struct LiveHost {
    pub table: SharedTable,
}

impl Host for LiveHost {
    fn table(&self) -> &SharedTable {
        &self.table
    }

    fn effective_caps(&self, pid: u32) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let line = status.lines().find(|l| l.starts_with("CapEff:"))?;
        u64::from_str_radix(line.trim_start_matches("CapEff:").trim(), 16).ok()
    }
}
