//! Which processes the file sensor watches: the kernel's MCP tree membership map.
//!
//! The MCP stage marks a suspect when it is suspected and a server when it is
//! confirmed, together with the descendants it already has; the kernel copies the
//! mark to every child at fork and clears it at exit. A launcher dismissed in favour
//! of the server it started is unmarked (its other children keep the mark they
//! inherited until they exit).

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
};

use aya::maps::{Array, MapData};

use crate::state::process_table::{ProcKey, ProcessTable};

/// How far up a process's parents are followed when looking for a root.
const MAX_DEPTH: usize = 64;

#[derive(Clone)]
pub struct TreeControl {
    map: Arc<Mutex<Array<MapData, u32>>>,
}

impl TreeControl {
    pub fn new(map: Array<MapData, u32>) -> Self {
        Self {
            map: Arc::new(Mutex::new(map)),
        }
    }

    fn set(&self, pid: u32, root: u32) {
        if let Err(e) = self.map.lock().expect("tree map lock").set(pid, root, 0) {
            tracing::debug!(pid, error = %e, "MCP tree membership not updated");
        }
    }
}

/// The marks the MCP stage has set, so that it unmarks only its own.
pub struct TreeScope {
    control: Option<TreeControl>,
    marked: HashSet<u32>,
}

impl TreeScope {
    pub fn new(control: Option<TreeControl>) -> Self {
        Self {
            control,
            marked: HashSet::new(),
        }
    }

    /// `root` and its live descendants join `root`'s tree.
    pub fn mark(&mut self, table: &ProcessTable, root: ProcKey) {
        let Some(c) = &self.control else { return };
        c.set(root.pid, root.pid);
        self.marked.insert(root.pid);
        for pid in descendants(table, root) {
            c.set(pid, root.pid);
            self.marked.insert(pid);
        }
    }

    /// A mark this stage set, undone (a dismissed launcher, an exited process whose
    /// mark the agent may have set after the kernel cleared it).
    pub fn unmark(&mut self, pid: u32) {
        if !self.marked.remove(&pid) {
            return;
        }
        if let Some(c) = &self.control {
            c.set(pid, 0);
        }
    }
}

/// Live processes below `root` in the table.
fn descendants(table: &ProcessTable, root: ProcKey) -> Vec<u32> {
    table
        .iter()
        .filter(|p| p.is_alive() && p.key != root)
        .filter(|p| {
            let mut up = p.parent;
            for _ in 0..MAX_DEPTH {
                match up {
                    Some(k) if k == root => return true,
                    Some(k) => up = table.get(&k).and_then(|q| q.parent),
                    None => return false,
                }
            }
            false
        })
        .map(|p| p.key.pid)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::process_table::Origin;

    #[test]
    fn descendants_are_found_through_their_parents() {
        let mut t = ProcessTable::new(100, 1_000);
        let root =
            crate::state::process_table::Process::bare(ProcKey { pid: 10, start_ns: 1 }, Origin::Procfs);
        t.insert_seeded(root);
        t.fork(10, 11, 2);
        t.fork(11, 12, 3);
        t.fork(1, 13, 4);
        let root = t.latest_key(10).unwrap();
        let mut d = descendants(&t, root);
        d.sort_unstable();
        assert_eq!(d, vec![11, 12]);
    }
}
