//! Stage 2: host state. Applies sensor events to the process table, enriches them
//! (user, cgroup and container, executable hash) and hands enriched events on.

pub mod ancestor;
pub mod cgroup;
pub mod connections;
pub mod dns;
pub mod exe_hash;
pub mod files;
pub mod net_view;
pub mod netaddr;
pub mod network;
pub mod process_table;
pub mod procfs;
pub mod sockets;
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
    network::NetState,
    process_table::{Change, Origin, ProcKey, Process, ProcessTable},
    users::UserNames,
    view::{AncestorView, ProcessAction, ProcessEvent, ProcessView},
};
use crate::{
    clock,
    events::{Emitted, Event, Flow},
    k8s::PodIndex,
    metrics::Metrics,
    sensor::{ExecEvent, ExitEvent, ForkEvent, SensorEvent},
    shutdown::Shutdown,
};

#[derive(Clone, Debug)]
pub struct StateOptions {
    pub max_processes: usize,
    pub exited_grace: Duration,
    /// The events' pids are live on this host (`mcpwatch run`): what an event lacks
    /// may be read from `/proc/PID`, and executables are hashed in the background.
    /// Off for a replay, whose pids are long gone or belong to other processes by
    /// now, and whose executables are hashed before its events go on.
    pub read_proc: bool,
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
    net: NetState,
    metrics: Arc<Metrics>,
    /// cgroup v1 is mounted: a container may be named only by a v1 controller path.
    cgroup_v1: bool,
    /// This node's pods, when running in a Kubernetes cluster.
    pods: Option<PodIndex>,
    pods_generation: u64,
    read_proc: bool,
}

const MAX_PATH_CACHE: usize = 8192;

impl StateStage {
    pub fn new(opts: &StateOptions, metrics: Arc<Metrics>) -> Self {
        Self {
            table: Arc::new(RwLock::new(ProcessTable::new(
                opts.max_processes,
                opts.exited_grace.as_nanos() as u64,
            ))),
            // A replay's pids are not live: its hashes cannot race the events either.
            hasher: if opts.read_proc {
                ExeHasher::new(4096)
            } else {
                ExeHasher::inline(4096)
            },
            users: UserNames::default(),
            cgroups: CgroupResolver::new(),
            containers: HashMap::new(),
            canonical: HashMap::new(),
            net: NetState::new(metrics.clone()),
            metrics,
            cgroup_v1: cgroup::v1_mounted(),
            pods: None,
            pods_generation: 0,
            read_proc: opts.read_proc,
        }
    }

    /// Names the pods behind containers from now on (see `k8s`).
    pub fn set_pod_index(&mut self, pods: PodIndex) {
        self.pods = Some(pods);
    }

    pub fn table(&self) -> SharedTable {
        self.table.clone()
    }

    pub fn hasher(&self) -> ExeHasher {
        self.hasher.clone()
    }

    /// Open TCP connections' ends by address pair (read access for later stages).
    pub fn connections(&self) -> connections::SharedConnections {
        self.net.connections()
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
            self.enrich_identity(&mut p, Some(pid), None);
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
        tx: mpsc::Sender<Flow>,
        mut shutdown: Shutdown,
    ) {
        let mut housekeeping = tokio::time::interval(Duration::from_secs(1));
        let mut batch = Vec::with_capacity(crate::events::STAGE_BATCH);
        loop {
            tokio::select! {
                n = rx.recv_many(&mut batch, crate::events::STAGE_BATCH) => {
                    if n == 0 { break };
                    for ev in batch.drain(..) {
                        if !self.forward(ev, &tx).await { return; }
                    }
                }
                _ = housekeeping.tick() => {
                    self.table.write().expect("table lock").evict_expired(clock::boottime_ns());
                    self.refresh_pod_metadata();
                    self.publish_stats();
                }
                _ = shutdown.wait() => {
                    // The ring readers drain their buffers once more and then drop
                    // their senders: take everything until the channel closes.
                    while let Some(ev) = rx.recv().await {
                        if !self.forward(ev, &tx).await { break; }
                    }
                    break;
                }
            }
        }
    }

    fn publish_stats(&self) {
        let stats = self.table.read().expect("table lock").stats();
        self.metrics.set_table_stats(&stats);
        self.net.publish_stats();
    }

    /// Applies one event and hands on what it produced; false once the next stage is gone.
    async fn forward(&mut self, ev: SensorEvent, tx: &mpsc::Sender<Flow>) -> bool {
        if let SensorEvent::Net(e) = ev {
            let out = {
                let table = self.table.read().expect("table lock");
                self.net.apply(e, &table)
            };
            for ev in out {
                if tx.send(Flow::Event(Emitted::ready(ev))).await.is_err() {
                    return false;
                }
            }
            return true;
        }
        match self.apply(ev) {
            Some(out) => tx.send(out).await.is_ok(),
            None => true,
        }
    }

    pub fn apply(&mut self, ev: SensorEvent) -> Option<Flow> {
        match ev {
            SensorEvent::Exec(e) => self.on_exec(e).map(Flow::Event),
            SensorEvent::Fork(e) => self.on_fork(e).map(Flow::Event),
            SensorEvent::Exit(e) => self.on_exit(e).map(Flow::Event),
            SensorEvent::CgroupMove(e) => {
                self.on_cgroup_move(e.pid);
                None
            }
            // Payload bytes belong to MCP detection; the table has nothing to add.
            SensorEvent::Payload(p) => Some(Flow::Payload(p)),
            SensorEvent::File(f) => {
                let table = self.table.read().expect("table lock");
                let ev = files::file_access(&table, f, self.read_proc);
                Some(Flow::Event(Emitted::ready(Event::FileAccess(ev))))
            }
            // Network events go through `forward`, which may emit several per record.
            SensorEvent::Net(_) => None,
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
        let live_pid = self.read_proc.then_some(pid);
        let change = {
            let mut table = self.table.write().expect("table lock");
            table.live_or_insert(pid, || bare_from_proc(live_pid, pid, e.ts_ns))
        };
        let key = match change {
            Change::Added(k) | Change::Updated(k) => k,
            Change::Refused => {
                self.metrics.table_refused();
                return None;
            }
        };
        let (cwd, inherited) = self
            .table
            .read()
            .expect("table lock")
            .get(&key)
            .map(|p| (p.cwd.clone(), p.container_known.then(|| p.container.clone())))
            .unwrap_or_default();
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
        self.enrich_identity(&mut p, live_pid, inherited);

        let mut table = self.table.write().expect("table lock");
        let entry = table.get_mut(&key)?;
        // Identity and lineage survive exec; the image and credentials do not.
        p.key = entry.key;
        p.ppid = entry.ppid;
        p.parent = entry.parent;
        p.cwd = cwd;
        p.origin = entry.origin;
        if p.cgroup.is_none() {
            p.cgroup = entry.cgroup.clone();
            p.container = entry.container.clone();
        }
        // An image this pid exec'd (not one a fork copied from the parent) is a step
        // of the launch: remember it.
        if entry.exec_ns.is_some() {
            p.earlier_images = std::iter::once(process_table::EarlierImage {
                comm: Arc::from(std::mem::take(&mut entry.comm)),
                exe: entry.exe.take(),
                argv: entry.argv.clone(),
            })
            .chain(entry.earlier_images.iter().cloned())
            .take(process_table::EARLIER_IMAGES)
            .collect();
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
    /// `inherited`: the container the entry already had, when it is still known (see
    /// `Process::container_known`).
    fn enrich_identity(
        &mut self,
        p: &mut Process,
        live_pid: Option<u32>,
        inherited: Option<Option<Arc<ContainerInfo>>>,
    ) {
        p.user = self.users.name(p.uid);
        let path = match p.cgroup_id {
            Some(id) => self.cgroups.resolve(id, live_pid),
            None => live_pid.and_then(cgroup::v2_path_of_pid).map(Arc::from),
        };
        p.container_known = inherited.is_some() || live_pid.is_some();
        p.container = self.container_of(path.as_ref(), live_pid, inherited);
        if path.is_some() {
            p.cgroup = path;
        }
    }

    /// A live process was moved to another cgroup: read its membership again now (the
    /// move tracepoint is what lets execs trust inherited membership).
    fn on_cgroup_move(&mut self, pid: u32) {
        if !self.read_proc {
            return;
        }
        let Some(key) = self.table.read().expect("table lock").live_key(pid) else {
            // A thread other than the leader, or a process not (yet) in the table.
            return;
        };
        let path = cgroup::v2_path_of_pid(pid).map(Arc::from);
        let container = self.container_of(path.as_ref(), Some(pid), None);
        let mut table = self.table.write().expect("table lock");
        if let Some(p) = table.get_mut(&key) {
            if path.is_some() {
                p.cgroup = path;
            }
            p.container = container;
            p.container_known = true;
        }
    }

    fn container_of(
        &mut self,
        path: Option<&Arc<str>>,
        pid: Option<u32>,
        inherited: Option<Option<Arc<ContainerInfo>>>,
    ) -> Option<Arc<ContainerInfo>> {
        let from_v2 = path.and_then(|path| {
            if let Some(c) = self.containers.get(path) {
                return c.clone();
            }
            let c = cgroup::container_from_path(path).map(Arc::new);
            if self.containers.len() >= MAX_PATH_CACHE {
                self.containers.clear();
            }
            self.containers.insert(path.clone(), c.clone());
            c
        });
        // On hybrid and v1 hosts the v2 path (often "/", shared by every process) may
        // not name the container while a v1 controller path does: per process, uncached.
        let c = from_v2.or_else(|| {
            if !self.cgroup_v1 {
                return None;
            }
            // Membership only changes by a move, which `on_cgroup_move` reads: what
            // the process had before its exec still holds.
            if let Some(known) = inherited {
                return known;
            }
            pid.map(cgroup::paths_of_pid)
                .unwrap_or_default()
                .iter()
                .find_map(|p| cgroup::container_from_path(p))
                .map(Arc::new)
        })?;
        Some(self.with_pod(c))
    }

    /// The container with its pod's name, namespace and labels when they are known.
    fn with_pod(&self, c: Arc<ContainerInfo>) -> Arc<ContainerInfo> {
        let (Some(pods), Some(uid)) = (&self.pods, &c.pod_uid) else {
            return c;
        };
        let meta = pods.get(uid);
        if c.pod == meta {
            return c;
        }
        Arc::new(ContainerInfo {
            pod: meta,
            ..(*c).clone()
        })
    }

    /// A pod seen by the API after its processes were: name it on the table's entries
    /// (and drop names of deleted pods). Runs only when the pod index changed.
    fn refresh_pod_metadata(&mut self) {
        let Some(generation) = self.pods.as_ref().map(PodIndex::generation) else {
            return;
        };
        if generation == self.pods_generation {
            return;
        }
        self.pods_generation = generation;
        let table = self.table.clone();
        let mut table = table.write().expect("table lock");
        let keys: Vec<ProcKey> = table
            .iter()
            .filter(|p| p.container.as_ref().is_some_and(|c| c.pod_uid.is_some()))
            .map(|p| p.key)
            .collect();
        for key in keys {
            if let Some(p) = table.get_mut(&key) {
                if let Some(c) = p.container.take() {
                    p.container = Some(self.with_pod(c));
                }
            }
        }
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

/// An entry for a pid whose fork was not seen: from `/proc` if still there (and
/// `live_pid`: live pids are to be read).
fn bare_from_proc(live_pid: Option<u32>, pid: u32, ts_ns: u64) -> Process {
    match live_pid.and_then(procfs::read_process) {
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
        // Only an exec changes what a process is; fork and exit events name their
        // parent by ppid, and their lineage would only repeat the exec's.
        lineage: match action {
            ProcessAction::Exec => table.lineage(&key).into_iter().map(AncestorView::of).collect(),
            ProcessAction::Fork | ProcessAction::Exit => Vec::new(),
        },
    }
}
