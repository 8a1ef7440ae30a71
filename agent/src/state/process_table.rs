//! The live process table: every process on the host, keyed so that pid reuse never
//! merges two processes, with exited entries kept for a grace period so that late
//! events still attribute.
//!
//! Pure data structure: no I/O. The state stage feeds it events and enrichment.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
};

use serde::Serialize;

use super::cgroup::ContainerInfo;
use super::exe_hash::FileId;

/// Identity of one process over its whole life: pid plus start time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct ProcKey {
    pub pid: u32,
    /// CLOCK_BOOTTIME ns at fork (kernel events) or the `/proc` start time (seeded).
    pub start_ns: u64,
}

impl std::fmt::Display for ProcKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.pid, self.start_ns)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// Found in `/proc` when the agent started (or filled in from `/proc` later).
    Procfs,
    /// Seen being forked by the kernel sensor.
    Kernel,
}

#[derive(Clone, Debug)]
pub struct Process {
    pub key: ProcKey,
    pub ppid: u32,
    pub parent: Option<ProcKey>,
    pub comm: String,
    /// Path of the running executable (for scripts: the interpreter).
    pub exe: Option<Arc<str>>,
    /// File name passed to exec (for scripts: the script).
    pub filename: Option<Arc<str>>,
    pub argv: Arc<[String]>,
    pub argv_truncated: bool,
    pub envc: Option<u32>,
    pub cwd: Option<Arc<str>>,
    pub uid: u32,
    pub gid: u32,
    pub user: Option<Arc<str>>,
    pub cgroup_id: Option<u64>,
    pub cgroup: Option<Arc<str>>,
    pub container: Option<Arc<ContainerInfo>>,
    /// `container` was read from `/proc` or inherited from a parent whose was, and no
    /// cgroup move has been seen since: an exec need not read `/proc/PID/cgroup` again.
    pub container_known: bool,
    pub exe_file: Option<FileId>,
    pub exec_ns: Option<u64>,
    pub exit_ns: Option<u64>,
    pub exit_status: Option<i32>,
    pub origin: Origin,
    /// This process's JSON as an ancestor in its descendants' lineages.
    pub rendered_ancestor: super::ancestor::RenderedAncestor,
    /// The images this pid ran before its current one (most recent first, at most
    /// [`EARLIER_IMAGES`]): wrappers that exec their command (`env`, `nice`, `exec`
    /// in a shell) are a launch step as much as a parent is.
    pub earlier_images: Arc<[EarlierImage]>,
}

/// How many earlier images of one pid are remembered.
pub const EARLIER_IMAGES: usize = 4;

/// What a pid ran before it exec'd again.
#[derive(Clone, Debug)]
pub struct EarlierImage {
    pub comm: Arc<str>,
    pub exe: Option<Arc<str>>,
    pub argv: Arc<[String]>,
}

impl Process {
    /// A process known only by its pid (its fork was not seen).
    pub fn bare(key: ProcKey, origin: Origin) -> Self {
        Self {
            key,
            ppid: 0,
            parent: None,
            comm: String::new(),
            exe: None,
            filename: None,
            argv: Arc::from(Vec::new()),
            argv_truncated: false,
            envc: None,
            cwd: None,
            uid: 0,
            gid: 0,
            user: None,
            cgroup_id: None,
            cgroup: None,
            container: None,
            container_known: false,
            exe_file: None,
            exec_ns: None,
            exit_ns: None,
            exit_status: None,
            origin,
            rendered_ancestor: Default::default(),
            earlier_images: Arc::from(Vec::new()),
        }
    }

    pub fn is_alive(&self) -> bool {
        self.exit_ns.is_none()
    }

    /// Rough heap + inline size, for the memory gauge.
    fn approx_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.comm.capacity()
            + self
                .argv
                .iter()
                .map(|a| a.len() + std::mem::size_of::<String>())
                .sum::<usize>()
            + [&self.exe, &self.filename, &self.cwd, &self.cgroup]
                .iter()
                .map(|s| s.as_ref().map_or(0, |s| s.len()))
                .sum::<usize>()
    }
}

/// A `/proc` start time has clock-tick resolution (10 ms) and is read after the fork
/// event was stamped; within this window a seeded entry and a fork are one process.
const SEED_MATCH_WINDOW_NS: u64 = 50_000_000;

/// Deepest lineage walked (a cycle cannot occur, but the bound makes that moot).
pub const MAX_LINEAGE: usize = 64;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TableStats {
    pub live: usize,
    pub exited: usize,
    pub approx_bytes: usize,
    /// Entries refused because the table was full of live processes.
    pub overflow: u64,
}

pub struct ProcessTable {
    procs: HashMap<ProcKey, Process>,
    live: HashMap<u32, ProcKey>,
    /// Exited entries in exit order, with the boot-time ns after which they may go.
    exited: VecDeque<(u64, ProcKey)>,
    capacity: usize,
    grace_ns: u64,
    overflow: u64,
}

/// What an event did to the table, for the caller to emit.
#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    Added(ProcKey),
    Updated(ProcKey),
    /// The event named a process the table could not hold (full).
    Refused,
}

impl ProcessTable {
    pub fn new(capacity: usize, grace_ns: u64) -> Self {
        Self {
            procs: HashMap::new(),
            live: HashMap::new(),
            exited: VecDeque::new(),
            capacity,
            grace_ns,
            overflow: 0,
        }
    }

    pub fn get(&self, key: &ProcKey) -> Option<&Process> {
        self.procs.get(key)
    }

    pub fn get_mut(&mut self, key: &ProcKey) -> Option<&mut Process> {
        self.procs.get_mut(key)
    }

    pub fn live_key(&self, pid: u32) -> Option<ProcKey> {
        self.live.get(&pid).copied()
    }

    /// The live process with this pid, else the last one that had it (exited, still
    /// within its grace period). The stages after this one see an event only once the
    /// table has moved on, maybe past the process's exit: a server that answers and
    /// exits at once is still the process that answered.
    pub fn latest_key(&self, pid: u32) -> Option<ProcKey> {
        self.live_key(pid).or_else(|| {
            self.procs
                .values()
                .filter(|p| p.key.pid == pid)
                .max_by_key(|p| p.key.start_ns)
                .map(|p| p.key)
        })
    }

    /// Every entry (live or exited) that had this pid, oldest first.
    pub fn by_pid(&self, pid: u32) -> Vec<&Process> {
        let mut v: Vec<_> = self.procs.values().filter(|p| p.key.pid == pid).collect();
        v.sort_by_key(|p| p.key.start_ns);
        v
    }

    pub fn iter(&self) -> impl Iterator<Item = &Process> {
        self.procs.values()
    }

    /// Inserts a process found in `/proc`, unless the pid is already live.
    pub fn insert_seeded(&mut self, p: Process) -> Change {
        if let Some(existing) = self.live.get(&p.key.pid) {
            return Change::Updated(*existing);
        }
        self.insert_live(p)
    }

    fn insert_live(&mut self, p: Process) -> Change {
        if self.procs.len() >= self.capacity {
            self.evict_oldest_exited();
            if self.procs.len() >= self.capacity {
                self.overflow += 1;
                return Change::Refused;
            }
        }
        let key = p.key;
        self.live.insert(key.pid, key);
        self.procs.insert(key, p);
        Change::Added(key)
    }

    /// A new process forked at `ts_ns`. The child starts as a copy of its parent's
    /// image (same exe, argv, cwd, cgroup) until it execs.
    pub fn fork(&mut self, parent_pid: u32, child_pid: u32, ts_ns: u64) -> Change {
        if let Some(existing) = self.live.get(&child_pid).copied() {
            let same = self.procs.get(&existing).is_some_and(|p| {
                p.origin == Origin::Procfs && existing.start_ns.abs_diff(ts_ns) <= SEED_MATCH_WINDOW_NS
            });
            if same {
                return Change::Updated(existing);
            }
            // The pid was reused: the old holder died without us seeing its exit.
            self.mark_exited(existing, ts_ns, None);
        }
        let parent_key = self.live.get(&parent_pid).copied();
        let key = ProcKey {
            pid: child_pid,
            start_ns: ts_ns,
        };
        let child = match parent_key.and_then(|k| self.procs.get(&k)) {
            Some(parent) => Process {
                key,
                ppid: parent_pid,
                parent: parent_key,
                exec_ns: None,
                exit_ns: None,
                exit_status: None,
                origin: Origin::Kernel,
                // The child's images are its own; the parent's are its lineage.
                earlier_images: Arc::from(Vec::new()),
                ..parent.clone()
            },
            None => Process {
                ppid: parent_pid,
                ..Process::bare(key, Origin::Kernel)
            },
        };
        self.insert_live(child)
    }

    /// The live process with this pid, created bare if its fork was never seen.
    pub fn live_or_insert(&mut self, pid: u32, make: impl FnOnce() -> Process) -> Change {
        match self.live.get(&pid) {
            Some(k) => Change::Updated(*k),
            None => {
                let p = make();
                debug_assert_eq!(p.key.pid, pid);
                self.insert_live(p)
            }
        }
    }

    /// The last thread of `pid` exited.
    pub fn exit(&mut self, pid: u32, ts_ns: u64, status: Option<i32>) -> Option<ProcKey> {
        let key = self.live.get(&pid).copied()?;
        self.mark_exited(key, ts_ns, status);
        Some(key)
    }

    fn mark_exited(&mut self, key: ProcKey, ts_ns: u64, status: Option<i32>) {
        if self.live.get(&key.pid) == Some(&key) {
            self.live.remove(&key.pid);
        }
        if let Some(p) = self.procs.get_mut(&key) {
            if p.exit_ns.is_none() {
                p.exit_ns = Some(ts_ns);
                p.exit_status = status;
                self.exited.push_back((ts_ns.saturating_add(self.grace_ns), key));
            }
        }
    }

    /// Drops exited entries whose grace period ended. Returns how many went.
    pub fn evict_expired(&mut self, now_ns: u64) -> usize {
        let mut n = 0;
        while let Some(&(deadline, key)) = self.exited.front() {
            if deadline > now_ns {
                break;
            }
            self.exited.pop_front();
            self.procs.remove(&key);
            n += 1;
        }
        n
    }

    fn evict_oldest_exited(&mut self) {
        if let Some((_, key)) = self.exited.pop_front() {
            self.procs.remove(&key);
        }
    }

    /// The process and its ancestors, nearest first, up to [`MAX_LINEAGE`].
    pub fn lineage(&self, key: &ProcKey) -> Vec<&Process> {
        let mut out = Vec::new();
        let mut cur = self.procs.get(key).and_then(|p| p.parent);
        while let Some(k) = cur {
            if out.len() >= MAX_LINEAGE {
                break;
            }
            let Some(p) = self.procs.get(&k) else { break };
            out.push(p);
            cur = p.parent;
        }
        out
    }

    /// Links every entry whose parent is unknown to its parent's live entry (used
    /// after seeding, when parents may have been read after their children).
    pub fn link_parents(&mut self) {
        let live = self.live.clone();
        for p in self.procs.values_mut() {
            if p.parent.is_none() && p.ppid != 0 {
                p.parent = live.get(&p.ppid).copied().filter(|k| *k != p.key);
            }
        }
    }

    pub fn stats(&self) -> TableStats {
        TableStats {
            live: self.live.len(),
            exited: self.procs.len() - self.live.len(),
            approx_bytes: self.procs.values().map(Process::approx_bytes).sum::<usize>()
                + self.procs.capacity() * std::mem::size_of::<(ProcKey, usize)>(),
            overflow: self.overflow,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seeded(pid: u32, ppid: u32, start_ns: u64, argv: &[&str]) -> Process {
        Process {
            ppid,
            argv: argv.iter().map(|s| s.to_string()).collect::<Vec<_>>().into(),
            ..Process::bare(ProcKey { pid, start_ns }, Origin::Procfs)
        }
    }

    #[test]
    fn fork_inherits_parent_image_and_links_lineage() {
        let mut t = ProcessTable::new(100, 1_000);
        t.insert_seeded(seeded(1, 0, 0, &["init"]));
        t.insert_seeded(seeded(10, 1, 5, &["bash"]));
        t.link_parents();
        assert_eq!(
            t.fork(10, 11, 1_000_000_000),
            Change::Added(ProcKey {
                pid: 11,
                start_ns: 1_000_000_000
            })
        );
        let k = t.live_key(11).unwrap();
        assert_eq!(&*t.get(&k).unwrap().argv, &["bash".to_string()]);
        let lineage: Vec<u32> = t.lineage(&k).iter().map(|p| p.key.pid).collect();
        assert_eq!(lineage, vec![10, 1]);
    }

    #[test]
    fn pid_reuse_never_merges_processes() {
        let mut t = ProcessTable::new(100, u64::MAX);
        t.insert_seeded(seeded(1, 0, 0, &["init"]));
        t.fork(1, 500, 1_000_000_000);
        let first = t.live_key(500).unwrap();
        t.get_mut(&first).unwrap().argv = vec!["first".to_string()].into();
        t.exit(500, 2_000_000_000, Some(0));
        t.fork(1, 500, 3_000_000_000);
        let second = t.live_key(500).unwrap();
        assert_ne!(first, second);
        t.get_mut(&second).unwrap().argv = vec!["second".to_string()].into();
        let all = t.by_pid(500);
        assert_eq!(all.len(), 2);
        assert_eq!(&*all[0].argv, &["first".to_string()]);
        assert!(!all[0].is_alive());
        assert_eq!(&*all[1].argv, &["second".to_string()]);
        assert!(all[1].is_alive());
    }

    #[test]
    fn missed_exit_is_inferred_from_reuse() {
        let mut t = ProcessTable::new(100, u64::MAX);
        t.fork(1, 500, 1_000_000_000);
        t.fork(1, 500, 9_000_000_000); // no exit seen in between
        let all = t.by_pid(500);
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].exit_ns, Some(9_000_000_000));
    }

    #[test]
    fn fork_of_seeded_process_is_not_duplicated() {
        let mut t = ProcessTable::new(100, u64::MAX);
        t.insert_seeded(seeded(77, 1, 1_000_000_000, &["x"]));
        assert!(matches!(t.fork(1, 77, 1_004_000_000), Change::Updated(_)));
        assert_eq!(t.by_pid(77).len(), 1);
    }

    #[test]
    fn exited_entries_are_kept_for_grace_then_evicted() {
        let mut t = ProcessTable::new(100, 10);
        t.fork(1, 2, 100);
        t.exit(2, 200, Some(256));
        assert_eq!(t.evict_expired(205), 0);
        assert_eq!(t.by_pid(2)[0].exit_status, Some(256));
        assert_eq!(t.evict_expired(210), 1);
        assert!(t.by_pid(2).is_empty());
    }

    #[test]
    fn capacity_is_a_hard_bound() {
        let mut t = ProcessTable::new(3, u64::MAX);
        for pid in 1..=3 {
            t.fork(0, pid, pid as u64);
        }
        t.exit(1, 10, None);
        // The exited entry makes room; a fourth live process is then refused.
        assert!(matches!(t.fork(0, 4, 11), Change::Added(_)));
        assert_eq!(t.fork(0, 5, 12), Change::Refused);
        assert_eq!(t.stats().overflow, 1);
        assert_eq!(t.stats().live, 3);
    }
}
