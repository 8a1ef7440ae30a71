//! Stage 3: MCP detection. Launch heuristics mark suspects at exec; captured payloads
//! are reassembled and the recogniser confirms servers from their handshakes; each
//! server gets an identity (package, hash, host) and a place in the inventory.

pub mod framing;
pub mod heuristics;
pub mod identity;
pub mod inventory;
pub mod jsonrpc;
pub mod launch;
pub mod procnet;
pub mod recognizer;
pub mod snapshot;
pub mod stable_id;

use std::sync::{Arc, Mutex};

use aya::maps::{Array, MapData};
use mcpwatch_common::payload::Budget;
use tokio::sync::mpsc;

use self::{
    heuristics::{Heuristics, Suspicion},
    inventory::{
        ClientInfo, Confidence, HostProcess, McpServer, McpServerEvent, ServerAction, ServerState,
        SharedInventory,
    },
    recognizer::{Detection, Recognizer, Transport},
};
use crate::{
    clock,
    events::{Emitted, Event, Flow},
    metrics::Metrics,
    rules::model::CompiledRules,
    shutdown::Shutdown,
    state::{
        exe_hash::ExeHasher,
        process_table::{ProcKey, Process},
        view::{AncestorView, ProcessAction, ProcessEvent},
        SharedTable,
    },
};

/// Grants and ends payload capture budgets in the kernel.
#[derive(Clone)]
pub struct BudgetControl(Arc<Mutex<Array<MapData, Budget>>>);

/// A suspect may speak for a while after launch: capture until confirmed or exited.
const SUSPECT_RECORDS: u32 = 256;

/// Inode of the pipe or socket behind `fd` of `pid` (`pipe:[N]`, `socket:[N]`).
fn proc_fd_inode(pid: u32, fd: u32) -> Option<u64> {
    let link = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()?;
    let link = link.to_str()?;
    let n = link
        .strip_prefix("pipe:[")
        .or_else(|| link.strip_prefix("socket:["))?
        .strip_suffix(']')?;
    n.parse().ok()
}

impl BudgetControl {
    pub fn new(map: Array<MapData, Budget>) -> Self {
        Self(Arc::new(Mutex::new(map)))
    }

    fn set(&self, pid: u32, b: Budget) {
        if let Err(e) = self.0.lock().expect("budget map lock").set(pid, b, 0) {
            tracing::debug!(pid, error = %e, "capture budget not updated");
        }
    }

    /// Capture without deadline (a suspected MCP server). The stdio channels the
    /// kernel noted at exec are kept; a process that was running before the agent
    /// has them from /proc (its fds 0, 1, 2 now).
    pub fn grant(&self, pid: u32) {
        let map = self.0.lock().expect("budget map lock");
        let stdio = match map.get(&pid, 0) {
            Ok(b) if b.stdio != [0; 3] => b.stdio,
            _ => [0, 1, 2].map(|fd| proc_fd_inode(pid, fd).unwrap_or(0)),
        };
        let b = Budget {
            records: SUSPECT_RECORDS,
            probes: u32::MAX,
            deadline_ns: 0,
            sockets: SUSPECT_RECORDS,
            side: SUSPECT_RECORDS,
            stdio,
        };
        drop(map);
        self.set(pid, b);
    }

    /// Stop capturing: nothing the rules need comes from payloads once confirmed.
    pub fn end(&self, pid: u32) {
        self.set(pid, Budget::default());
    }
}

pub struct McpStage {
    recognizer: Recognizer,
    inventory: SharedInventory,
    table: SharedTable,
    hasher: ExeHasher,
    budgets: Option<BudgetControl>,
    heuristics: Heuristics,
    metrics: Arc<Metrics>,
    /// New launch heuristics from a reloaded rule file, applied between events.
    heuristics_updates: Option<tokio::sync::watch::Receiver<Heuristics>>,
    /// The rule file, for the sanctioned list every inventory entry is judged by.
    rules: Option<tokio::sync::watch::Receiver<Arc<CompiledRules>>>,
    /// This host's id (`/etc/machine-id`, else the host name): part of every
    /// server's stable uid.
    host_id: String,
    snapshot_every: Option<std::time::Duration>,
}

impl McpStage {
    pub fn new(
        table: SharedTable,
        hasher: ExeHasher,
        budgets: Option<BudgetControl>,
        heuristics: Heuristics,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            recognizer: Recognizer::default(),
            inventory: SharedInventory::default(),
            table,
            hasher,
            budgets,
            heuristics,
            metrics,
            heuristics_updates: None,
            rules: None,
            host_id: crate::output::HostInfo::detect().id.clone(),
            snapshot_every: None,
        }
    }

    /// Judge servers by the rule file's sanctioned list, across reloads.
    pub fn follow_rules(&mut self, rules: tokio::sync::watch::Receiver<Arc<CompiledRules>>) {
        self.rules = Some(rules);
    }

    /// Emit an inventory snapshot at start and then this often (`None`: never).
    pub fn snapshot_every(&mut self, every: Option<std::time::Duration>) {
        self.snapshot_every = every;
    }

    /// Sets a server's sanctioned status from the current sanctioned list.
    fn judge(&self, s: &mut McpServer) {
        let entry = self
            .rules
            .as_ref()
            .and_then(|r| r.borrow().sanctioned_entry(s).map(|e| e.label.clone()));
        s.sanctioned = entry.is_some();
        s.sanctioned_entry = entry;
    }

    /// A reloaded rule file may sanction (or no longer sanction) known servers: the
    /// inventory, its metric and the next snapshot follow at once.
    fn rejudge_on_reload(&mut self) {
        let changed = self
            .rules
            .as_mut()
            .is_some_and(|r| r.has_changed().unwrap_or(false));
        if !changed {
            return;
        }
        if let Some(r) = self.rules.as_mut() {
            r.borrow_and_update();
        }
        {
            let mut inv = self.inventory.write().expect("inventory lock");
            for s in inv.servers_mut() {
                self.judge(s);
            }
        }
        self.publish_counts();
    }

    fn snapshot(&self) -> Vec<Emitted> {
        let inv = self.inventory.read().expect("inventory lock");
        snapshot::take(&inv, &self.host_id, std::time::SystemTime::now())
            .into_iter()
            .map(|e| Emitted::ready(Event::McpServer(e)))
            .collect()
    }

    /// Follow the rule file's `launch_heuristics` across reloads.
    pub fn follow_heuristics(&mut self, updates: tokio::sync::watch::Receiver<Heuristics>) {
        self.heuristics_updates = Some(updates);
    }

    pub fn inventory(&self) -> SharedInventory {
        self.inventory.clone()
    }

    /// Processes that were running before the agent and look like MCP servers: they
    /// are suspects, and get a budget so their next exchange confirms them.
    pub fn suspect_seeded(&mut self) -> Vec<Emitted> {
        let seeded: Vec<(ProcKey, Arc<[String]>)> = {
            let t = self.table.read().expect("table lock");
            t.iter()
                .filter(|p| p.is_alive())
                .map(|p| (p.key, p.argv.clone()))
                .collect()
        };
        seeded
            .into_iter()
            .filter_map(|(key, argv)| {
                let why = self.heuristics.suspect(&argv, None)?;
                self.suspect(key, &why)
            })
            .collect()
    }

    pub async fn run(
        mut self,
        mut rx: mpsc::Receiver<Flow>,
        tx: mpsc::Sender<Emitted>,
        mut shutdown: Shutdown,
    ) {
        for ev in self.suspect_seeded() {
            let _ = tx.send(ev).await;
        }
        self.publish_counts();
        let mut snapshots = snapshot::Schedule::new(self.snapshot_every);
        let mut batch = Vec::with_capacity(crate::events::STAGE_BATCH);
        loop {
            let n = tokio::select! {
                n = rx.recv_many(&mut batch, crate::events::STAGE_BATCH) => n,
                _ = snapshots.due() => {
                    self.rejudge_on_reload();
                    for ev in self.snapshot() {
                        if tx.send(ev).await.is_err() {
                            return;
                        }
                    }
                    continue;
                }
                // Upstream drains into us; keep going until it closes the channel.
                _ = shutdown.wait() => rx.recv_many(&mut batch, crate::events::STAGE_BATCH).await,
            };
            if n == 0 {
                break;
            }
            if let Some(h) = self
                .heuristics_updates
                .as_mut()
                .filter(|u| u.has_changed().unwrap_or(false))
            {
                self.heuristics = h.borrow_and_update().clone();
            }
            self.rejudge_on_reload();
            for flow in batch.drain(..) {
                for out in self.apply(flow) {
                    if tx.send(out).await.is_err() {
                        return;
                    }
                }
            }
        }
    }

    pub fn apply(&mut self, flow: Flow) -> Vec<Emitted> {
        let mut out = Vec::new();
        // The gauges are refreshed when the inventory may have changed, not per event.
        let mut changed = false;
        match flow {
            Flow::Payload(p) => {
                let outcome = self.recognizer.observe(&p);
                for d in &outcome.discards {
                    self.metrics.payload_discarded(d.reason());
                }
                for _ in 0..outcome.bad_json {
                    self.metrics.payload_discarded("bad_json");
                }
                for d in outcome.detections {
                    changed = true;
                    out.extend(self.confirm(d));
                }
            }
            Flow::Event(em) => {
                if let Event::Process(p) = &em.event {
                    let server = self.on_process(p);
                    changed = server.is_some();
                    out.extend(server);
                }
                out.insert(0, em);
            }
        }
        if changed {
            self.publish_counts();
        }
        out
    }

    fn publish_counts(&self) {
        let counts = self.inventory.read().expect("inventory lock").counts();
        self.metrics.set_mcp_servers(&counts);
    }

    fn on_process(&mut self, ev: &ProcessEvent) -> Option<Emitted> {
        let pid = ev.process.pid;
        match ev.action {
            ProcessAction::Exec => {
                let why = self.heuristics.suspect(&ev.process.argv, ev.process.envc)?;
                let key = self.table.read().expect("table lock").live_key(pid)?;
                self.suspect(key, &why)
            }
            ProcessAction::Exit => {
                self.recognizer.forget(pid);
                let mut inv = self.inventory.write().expect("inventory lock");
                let server = inv.exited(pid, ev.time.clone())?.clone();
                Some(server_event(ServerAction::Exited, server))
            }
            ProcessAction::Fork => None,
        }
    }

    fn suspect(&mut self, key: ProcKey, why: &Suspicion) -> Option<Emitted> {
        let server = {
            let table = self.table.read().expect("table lock");
            let p = table.get(&key)?;
            let mut s = self.base_record(&table, p);
            s.state = ServerState::Suspected;
            // A known server name in argv says more than a runner with a tiny environment.
            s.confidence = match why {
                Suspicion::Pattern { .. } => Confidence::Medium,
                Suspicion::RunnerWithTinyEnv(_) => Confidence::Low,
            };
            s.evidence = vec![why.describe()];
            s
        };
        let mut server = server;
        self.judge(&mut server);
        if self
            .inventory
            .read()
            .expect("inventory lock")
            .get(&server.id)
            .is_some()
        {
            return None;
        }
        if let Some(b) = &self.budgets {
            b.grant(key.pid);
        }
        self.inventory
            .write()
            .expect("inventory lock")
            .upsert(server.clone());
        Some(server_event(ServerAction::Suspected, server))
    }

    fn confirm(&mut self, d: Detection) -> Vec<Emitted> {
        self.metrics.mcp_detection();
        // Everything from /proc is read before taking the locks.
        let (host_pid, client_addr, listen) = match d.transport {
            Transport::Stdio => (d.client_pid, None, None),
            Transport::StreamableHttp | Transport::Sse => {
                // Addresses come with the capture; /proc only fills in what is missing
                // (the connection may already be closed).
                let (local, remote) = match d.tuple {
                    Some((l, r)) => (Some(l), Some(r)),
                    None => {
                        let (_, l, r) = identity::http_peer(d.request_inode);
                        (l, r)
                    }
                };
                let client = d.client_pid.or_else(|| identity::http_peer(d.request_inode).0);
                (client, if client.is_none() { remote } else { None }, local)
            }
        };
        let (mut server, ancestors) = {
            let table = self.table.read().expect("table lock");
            let Some((key, p)) = table.live_key(d.pid).and_then(|k| Some((k, table.get(&k)?))) else {
                return Vec::new();
            };
            let ancestors: Vec<u32> = table.lineage(&key).iter().map(|a| a.key.pid).collect();
            (self.base_record(&table, p), ancestors)
        };
        let host_pid = match d.transport {
            Transport::Stdio => host_pid
                .or_else(|| identity::stdio_host(d.channel, d.request_inode, &ancestors))
                .or_else(|| ancestors.first().copied()),
            _ => host_pid,
        };
        {
            let table = self.table.read().expect("table lock");
            if let Some(hk) = host_pid.and_then(|h| table.live_key(h)) {
                let h = table.get(&hk);
                server.host = Some(HostProcess {
                    pid: hk.pid,
                    entity_id: Some(hk.to_string()),
                    exe: h.and_then(|h| h.exe.clone()),
                    name: h.map(|h| h.comm.clone()).unwrap_or_default(),
                });
                // The launch chain ends at the host.
                if let Some(i) = server.launch_chain.iter().position(|a| a.pid == hk.pid) {
                    server.launch_chain.truncate(i + 1);
                }
            }
        }
        server.state = ServerState::Confirmed;
        server.confidence = Confidence::High;
        server.name = d.server_name;
        server.title = d.server_title;
        server.version = d.server_version;
        server.protocol_version = d.protocol_version;
        server.transport = Some(d.transport);
        server.capabilities = d.capabilities;
        server.http_path = d.http_path;
        server.listen_address = listen.map(|a| a.to_string());
        server.client = ClientInfo {
            name: d.client_name,
            version: d.client_version,
            address: client_addr.map(|a| a.to_string()),
        };
        server.evidence = d.evidence;
        // After the host is known: a sanctioned entry may name it.
        self.judge(&mut server);
        let mut out = Vec::new();
        let (action, previous) = {
            let mut inv = self.inventory.write().expect("inventory lock");
            // Launchers and the host above a confirmed server matched the launch
            // patterns only because they started it: they are not servers.
            for a in server.launch_chain.iter().skip(1) {
                if let Some(mut s) = inv.drop_suspect(a.pid) {
                    s.evidence.push(format!("launches MCP server pid {}", server.pid));
                    let mut ev = server_event(ServerAction::Dismissed, s);
                    if let Event::McpServer(e) = &mut ev.event {
                        e.previous_state = Some(ServerState::Suspected);
                    }
                    out.push(ev);
                }
            }
            let previous = inv.get(&server.id).map(|old| old.state);
            let action = match inv.get(&server.id) {
                Some(old) => {
                    server.first_seen = old.first_seen.clone();
                    if old.state == ServerState::Confirmed {
                        ServerAction::Updated
                    } else {
                        ServerAction::Confirmed
                    }
                }
                None => ServerAction::Confirmed,
            };
            inv.upsert(server.clone());
            (action, previous)
        };
        if let Some(b) = &self.budgets {
            b.end(d.pid);
        }
        tracing::info!(
            pid = server.pid,
            name = server.name.as_deref().unwrap_or("?"),
            transport = ?server.transport,
            "MCP server {}",
            if action == ServerAction::Confirmed { "confirmed" } else { "seen again" }
        );
        let mut ev = server_event(action, server);
        if let Event::McpServer(e) = &mut ev.event {
            e.detection_latency_ms = Some(clock::boottime_ns().saturating_sub(d.ts_ns) as f64 / 1e6);
            e.previous_state = previous;
        }
        out.push(ev);
        out
    }

    /// The parts of a record that come from the process table.
    fn base_record(&self, table: &crate::state::process_table::ProcessTable, p: &Process) -> McpServer {
        let now = clock::rfc3339(std::time::SystemTime::now());
        let mut chain = vec![AncestorView::of(p)];
        chain.extend(table.lineage(&p.key).into_iter().map(AncestorView::of));
        // cwd from /proc while the process lives: chdir is not traced, so the
        // table's (inherited) cwd may be stale, and relative script paths need it.
        let package = identity::package_of(
            &p.argv,
            p.exe.as_deref(),
            identity::live_cwd(p.key.pid).as_deref().or(p.cwd.as_deref()),
        );
        let stable = stable_id::stable_id(&self.host_id, p.uid, package.as_ref(), p.exe.as_deref(), &p.argv);
        McpServer {
            id: format!("mcp:{}", p.key),
            server_uid: stable.server_uid,
            fingerprint: stable.fingerprint,
            sanctioned: false,
            sanctioned_entry: None,
            state: ServerState::Suspected,
            confidence: Confidence::Low,
            name: None,
            title: None,
            version: None,
            protocol_version: None,
            transport: None,
            listen_address: None,
            http_path: None,
            capabilities: Vec::new(),
            pid: p.key.pid,
            entity_id: p.key.to_string(),
            exe: p.exe.clone(),
            argv: p.argv.clone(),
            sha256: p.exe_file.and_then(|id| self.hasher.known(&id)),
            package,
            uid: p.uid,
            user: p.user.clone(),
            container_id: p.container.as_ref().map(|c| c.id.clone()),
            container: p.container.clone(),
            host: None,
            client: ClientInfo::default(),
            launch_chain: chain,
            first_seen: now.clone(),
            last_seen: now,
            exited_at: None,
            evidence: Vec::new(),
        }
    }
}

fn server_event(action: ServerAction, server: McpServer) -> Emitted {
    Emitted::ready(Event::McpServer(McpServerEvent {
        kind: "mcp_server",
        time: clock::rfc3339(std::time::SystemTime::now()),
        action,
        detection_latency_ms: None,
        previous_state: None,
        snapshot: None,
        server,
    }))
}
