//! Stage 2: host state. Applies sensor events to the process table, enriches them
//! (user, cgroup and container, executable hash) and hands enriched events on.

pub mod cgroup;
pub mod exe_hash;
pub mod process_table;
pub mod procfs;
pub mod users;
pub mod view;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::Duration,
};

use tokio::sync::mpsc;

use self::{
    cgroup::{CgroupResolver, ContainerInfo},
    exe_hash::ExeHasher,
    process_table::{Change, Origin, ProcKey, Process, ProcessTable},
    users::UserNames,
    view::{AncestorView, ProcessAction, ProcessEvent, ProcessView},
};
use crate::{
    clock,
    events::{Emitted, Event},
    metrics::Metrics,
    sensor::{ExecEvent, ExitEvent, ForkEvent, SensorEvent},
    shutdown::Shutdown,
};

#[derive(Clone, Debug)]
pub struct StateOptions {
    pub max_processes: usize,
    pub exited_grace: Duration,
}

/// Read access for the API; the state stage is the only writer.
pub type SharedTable = Arc<RwLock<ProcessTable>>;

pub struct StateStage {
    table: SharedTable,
    hasher: ExeHasher,
    users: UserNames,
    cgroups: CgroupResolver,
    containers: HashMap<Arc<str>, Option<Arc<ContainerInfo>>>,
    canonical: HashMap<String, Arc<str>>,
    metrics: Arc<Metrics>,
}

const MAX_PATH_CACHE: usize = 8192;

impl StateStage {
    pub fn new(opts: &StateOptions, metrics: Arc<Metrics>) -> Self {
        Self {
            table: Arc::new(RwLock::new(ProcessTable::new(
                opts.max_processes,
                opts.exited_grace.as_nanos() as u64,
            ))),
            hasher: ExeHasher::new(4096),
            users: UserNames::default(),
            cgroups: CgroupResolver::new(),
            containers: HashMap::new(),
            canonical: HashMap::new(),
            metrics,
        }
    }

    pub fn table(&self) -> SharedTable {
        self.table.clone()
    }

    pub fn hasher(&self) -> ExeHasher {
        self.hasher.clone()
    }

    /// Fills the table from `/proc`. Call after the sensors are attached, so that a
    /// process is either seeded or seen by the sensor (or both, which the table merges).
    pub fn seed_from_proc(&mut self) -> usize {
        let mut n = 0;
        for pid in procfs::all_pids() {
            let Some(snap) = procfs::read_process(pid) else {
                continue;
            };
            let mut p = snap.process;
            self.enrich_identity(&mut p, Some(pid));
            if let Some((id, _)) = self.hasher.file(&snap.exe_candidates) {
                p.exe_file = Some(id);
            }
            if matches!(
                self.table.write().expect("table lock").insert_seeded(p),
                Change::Added(_)
            ) {
                n += 1;
            }
        }
        self.table.write().expect("table lock").link_parents();
        self.publish_stats();
        n
    }

    pub async fn run(
        mut self,
        mut rx: mpsc::Receiver<SensorEvent>,
        tx: mpsc::Sender<Emitted>,
        mut shutdown: Shutdown,
    ) {
        let mut housekeeping = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                ev = rx.recv() => {
                    let Some(ev) = ev else { break };
                    if let Some(out) = self.apply(ev) {
                        if tx.send(out).await.is_err() { break; }
                    }
                }
                _ = housekeeping.tick() => {
                    self.table.write().expect("table lock").evict_expired(clock::boottime_ns());
                    self.publish_stats();
                }
                _ = shutdown.wait() => {
                    // Drain until the readers are gone: they empty the ring buffer one
                    // last time on shutdown and close the channel when done.
                    while let Some(ev) = rx.recv().await {
                        if let Some(out) = self.apply(ev) {
                            let _ = tx.send(out).await;
                        }
                    }
                    break;
                }
            }
        }
    }

    fn publish_stats(&self) {
        let stats = self.table.read().expect("table lock").stats();
        self.metrics.set_table_stats(&stats);
    }

    pub fn apply(&mut self, ev: SensorEvent) -> Option<Emitted> {
        match ev {
            SensorEvent::Exec(e) => self.on_exec(e),
            SensorEvent::Fork(e) => self.on_fork(e),
            SensorEvent::Exit(e) => self.on_exit(e),
        }
    }

    fn on_fork(&mut self, e: ForkEvent) -> Option<Emitted> {
        let mut table = self.table.write().expect("table lock");
        let key = match table.fork(e.parent_pid, e.child_pid, e.ts_ns) {
            Change::Added(k) | Change::Updated(k) => k,
            Change::Refused => {
                self.metrics.table_refused();
                return None;
            }
        };
        let p = table.get_mut(&key)?;
        p.uid = e.uid;
        p.gid = e.gid;
        if p.comm.is_empty() {
            p.comm = e.comm;
        }
        let hash = p.exe_file.and_then(|id| self.hasher.known(&id));
        Some(Emitted::ready(Event::Process(event(
            &table,
            key,
            ProcessAction::Fork,
            e.ts_ns,
            hash,
        ))))
    }

    fn on_exec(&mut self, e: ExecEvent) -> Option<Emitted> {
        let pid = e.pid;
        let change = {
            let mut table = self.table.write().expect("table lock");
            table.live_or_insert(pid, || bare_from_proc(pid, e.ts_ns))
        };
        let key = match change {
            Change::Added(k) | Change::Updated(k) => k,
            Change::Refused => {
                self.metrics.table_refused();
                return None;
            }
        };
        let cwd = self
            .table
            .read()
            .expect("table lock")
            .get(&key)
            .and_then(|p| p.cwd.clone());
        let exe = self.resolve_exe(&e.filename, cwd.as_deref());
        let file = exe
            .as_ref()
            .and_then(|x| self.hasher.file(&[PathBuf::from(&**x)]));

        let mut p = Process {
            comm: e.comm,
            filename: Some(Arc::from(e.filename)),
            exe,
            argv: e.argv.into(),
            argv_truncated: e.argv_truncated,
            envc: (!e.argv_incomplete).then_some(e.envc),
            uid: e.uid,
            gid: e.gid,
            cgroup_id: Some(e.cgroup_id),
            exe_file: file.as_ref().map(|(id, _)| *id),
            exec_ns: Some(e.ts_ns),
            ..Process::bare(key, Origin::Kernel)
        };
        self.enrich_identity(&mut p, Some(pid));

        let mut table = self.table.write().expect("table lock");
        let entry = table.get_mut(&key)?;
        // Identity and lineage survive exec; the image and credentials do not.
        p.key = entry.key;
        p.ppid = entry.ppid;
        p.parent = entry.parent;
        p.cwd = entry.cwd.clone();
        p.origin = entry.origin;
        if p.cgroup.is_none() {
            p.cgroup = entry.cgroup.clone();
            p.container = entry.container.clone();
        }
        *entry = p;
        let (hash_now, handle) = match file {
            Some((_, h)) => (h.now(), Some(h)),
            None => (None, None),
        };
        let hash = if hash_now.is_some() { None } else { handle };
        Some(Emitted {
            event: Event::Process(event(&table, key, ProcessAction::Exec, e.ts_ns, hash_now)),
            hash,
        })
    }

    fn on_exit(&mut self, e: ExitEvent) -> Option<Emitted> {
        let mut table = self.table.write().expect("table lock");
        let key = table.exit(e.pid, e.ts_ns, e.status)?;
        let hash = table
            .get(&key)
            .and_then(|p| p.exe_file)
            .and_then(|id| self.hasher.known(&id));
        Some(Emitted::ready(Event::Process(event(
            &table,
            key,
            ProcessAction::Exit,
            e.ts_ns,
            hash,
        ))))
    }

    /// User name, cgroup path and container, shared by seeded and observed entries.
    fn enrich_identity(&mut self, p: &mut Process, live_pid: Option<u32>) {
        p.user = self.users.name(p.uid);
        let path = match p.cgroup_id {
            Some(id) => self.cgroups.resolve(id, live_pid),
            None => live_pid.and_then(cgroup::v2_path_of_pid).map(Arc::from),
        };
        if let Some(path) = path {
            p.container = self.container_of(&path, live_pid);
            p.cgroup = Some(path);
        }
    }

    fn container_of(&mut self, path: &Arc<str>, pid: Option<u32>) -> Option<Arc<ContainerInfo>> {
        if let Some(c) = self.containers.get(path) {
            return c.clone();
        }
        // On hybrid hosts the v2 path may be "/"; v1 controller paths still name the container.
        let c = cgroup::container_from_path(path)
            .or_else(|| {
                pid.map(cgroup::paths_of_pid)
                    .unwrap_or_default()
                    .iter()
                    .find_map(|p| cgroup::container_from_path(p))
            })
            .map(Arc::new);
        if self.containers.len() >= MAX_PATH_CACHE {
            self.containers.clear();
        }
        self.containers.insert(path.clone(), c.clone());
        c
    }

    /// The executable's canonical path: the exec'd file name made absolute against the
    /// process's cwd, with symlinks resolved (`/bin/sh` → `/usr/bin/dash`). Not read
    /// from `/proc/PID/exe`, which may already show a later exec of the same pid.
    fn resolve_exe(&mut self, filename: &str, cwd: Option<&str>) -> Option<Arc<str>> {
        if filename.is_empty() {
            return None;
        }
        let abs = if filename.starts_with('/') {
            filename.to_string()
        } else {
            Path::new(cwd?).join(filename).to_string_lossy().into_owned()
        };
        if let Some(c) = self.canonical.get(&abs) {
            return Some(c.clone());
        }
        let canon: Arc<str> = std::fs::canonicalize(&abs)
            .map(|p| Arc::from(p.to_string_lossy()))
            .unwrap_or_else(|_| Arc::from(abs.as_str()));
        if self.canonical.len() >= MAX_PATH_CACHE {
            self.canonical.clear();
        }
        self.canonical.insert(abs, canon.clone());
        Some(canon)
    }
}

/// An entry for a pid whose fork was not seen: from `/proc` if still there.
fn bare_from_proc(pid: u32, ts_ns: u64) -> Process {
    match procfs::read_process(pid) {
        Some(s) => s.process,
        None => Process::bare(ProcKey { pid, start_ns: ts_ns }, Origin::Kernel),
    }
}

fn event(
    table: &ProcessTable,
    key: ProcKey,
    action: ProcessAction,
    ts_ns: u64,
    sha256: Option<Arc<str>>,
) -> ProcessEvent {
    let p = table.get(&key).expect("event for a present key");
    ProcessEvent {
        kind: match action {
            ProcessAction::Exec => "process_exec",
            ProcessAction::Fork => "process_fork",
            ProcessAction::Exit => "process_exit",
        },
        time: clock::rfc3339(clock::boot_to_wall(ts_ns)),
        action,
        process: ProcessView::of(p, sha256),
        lineage: table.lineage(&key).into_iter().map(AncestorView::of).collect(),
    }
}
