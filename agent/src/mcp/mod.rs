//! Stage 3: MCP detection. Launch heuristics mark suspects at exec; captured payloads
//! are reassembled and the recogniser confirms servers from their handshakes; each
//! server gets an identity (package, hash, host) and a place in the inventory.

pub mod audit;
pub mod framing;
pub mod heuristics;
pub mod identity;
pub mod inventory;
pub mod jsonrpc;
pub mod launch;
pub mod metadata;
pub mod procnet;
pub mod recognizer;
pub mod request_ref;
pub mod snapshot;
pub mod stable_id;
pub mod tools;
pub mod tree_scope;

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use aya::maps::{Array, MapData};
use mcpwatch_common::payload::{Budget, COPY_SESSION, COPY_WHOLE};
use tokio::sync::mpsc;

use self::{
    audit::{AuditRecord, McpRequestEvent, SessionAudit},
    heuristics::{Heuristics, Suspicion},
    inventory::{
        Announce, ClientInfo, Confidence, HostProcess, McpServer, McpServerEvent, ServerAction, ServerState,
        SharedInventory,
    },
    recognizer::{Detection, Recognizer, Transport},
    tree_scope::{TreeControl, TreeScope},
};
use crate::{
    clock,
    events::{Emitted, Event, Flow},
    metrics::Metrics,
    shutdown::Shutdown,
    state::{
        connections::SharedConnections,
        exe_hash::ExeHasher,
        process_table::{ProcKey, Process},
        view::{AncestorView, ProcessAction, ProcessEvent},
        SharedTable,
    },
};

/// What the MCP stage sets in the kernel: payload capture budgets and MCP tree
/// membership (both `None` without sensors, as in a replay).
#[derive(Clone, Default)]
pub struct KernelControl {
    pub budgets: Option<BudgetControl>,
    pub trees: Option<TreeControl>,
}

/// Grants and ends payload capture budgets in the kernel.
#[derive(Clone)]
pub struct BudgetControl(Arc<Mutex<Array<MapData, Budget>>>);

/// A suspect may speak for a while after launch: capture until confirmed or exited.
const SUSPECT_RECORDS: u32 = 256;
/// A confirmed server's session: captured for its life.
const SESSION_RECORDS: u32 = u32::MAX;

/// Suspects from this confidence up reach the SIEM once they have lived past the
/// grace period without speaking MCP; below it (a package runner with a tiny
/// environment) only when confirmed.
pub const ANNOUNCE_SUSPECTS_FROM: Confidence = Confidence::Medium;

/// How often suspects are checked against the grace period.
const PROMOTE_EVERY: Duration = Duration::from_secs(1);

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
            // Its first answers after the handshake come before the agent has
            // confirmed it: copied whole already.
            session: COPY_WHOLE,
            _pad: 0,
        };
        drop(map);
        self.set(pid, b);
    }

    /// Capture of a confirmed server's session for its life: the stdio wire of a
    /// stdio server (its other pipes and sockets no longer), the stream sockets of an
    /// HTTP server.
    pub fn session(&self, pid: u32, transport: Transport) {
        let map = self.0.lock().expect("budget map lock");
        let stdio = map.get(&pid, 0).map(|b| b.stdio).unwrap_or([0; 3]);
        drop(map);
        let (records, sockets) = match transport {
            Transport::Stdio => (SESSION_RECORDS, 0),
            Transport::StreamableHttp | Transport::Sse => (0, SESSION_RECORDS),
        };
        self.set(
            pid,
            Budget {
                records,
                probes: u32::MAX,
                deadline_ns: 0,
                sockets,
                side: 0,
                stdio,
                session: COPY_SESSION,
                _pad: 0,
            },
        );
    }
}

pub struct McpStage {
    recognizer: Recognizer,
    /// Requests on confirmed servers' sessions, paired with their answers.
    audit: SessionAudit,
    /// HTTP servers confirmed before the state stage had seen their client's end of
    /// the connection (the rings are read in turn): (local, remote) of the server's
    /// end, looked up again as the session goes on.
    unresolved_http: HashMap<u32, (SocketAddr, SocketAddr)>,
    inventory: SharedInventory,
    table: SharedTable,
    hasher: ExeHasher,
    /// Open TCP connections' ends, from the state stage: the client of an HTTP session.
    connections: SharedConnections,
    budgets: Option<BudgetControl>,
    /// Who the file sensor watches: suspects and servers, with their trees.
    trees: TreeScope,
    heuristics: Heuristics,
    metrics: Arc<Metrics>,
    /// New launch heuristics from a reloaded rule file, applied between events.
    heuristics_updates: Option<tokio::sync::watch::Receiver<Heuristics>>,
    /// This host's id (`/etc/machine-id`, else the host name): part of every
    /// server's stable uid.
    host_id: String,
    snapshot_every: Option<std::time::Duration>,
    /// Servers the SIEM has had an `appeared` record for, by inventory id.
    announced: HashSet<String>,
    /// Suspects that reach the SIEM if still unconfirmed and alive at this instant.
    pending: HashMap<String, tokio::time::Instant>,
    suspect_grace: Duration,
}

impl McpStage {
    /// `host_id`: this host's id (from the wiring, which the output stage shares).
    pub fn new(
        table: SharedTable,
        hasher: ExeHasher,
        connections: SharedConnections,
        kernel: KernelControl,
        heuristics: Heuristics,
        host_id: String,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            recognizer: Recognizer::default(),
            audit: SessionAudit::default(),
            unresolved_http: HashMap::new(),
            inventory: SharedInventory::default(),
            table,
            hasher,
            connections,
            budgets: kernel.budgets,
            trees: TreeScope::new(kernel.trees),
            heuristics,
            metrics,
            heuristics_updates: None,
            host_id,
            snapshot_every: None,
            announced: HashSet::new(),
            pending: HashMap::new(),
            suspect_grace: Duration::from_secs(10),
        }
    }

    /// How long an unconfirmed suspect must live before it reaches the SIEM.
    pub fn suspect_grace(&mut self, grace: Duration) {
        self.suspect_grace = grace;
    }

    /// Decides whether each inventory change in `out` reaches the SIEM (see
    /// [`Announce`]), and keeps track of what the SIEM has heard of.
    fn route(&mut self, out: &mut [Emitted]) {
        let now = tokio::time::Instant::now();
        for em in out {
            let Event::McpServer(e) = &mut em.event else {
                continue;
            };
            let id = &e.server.id;
            e.announce = match e.action {
                ServerAction::Suspected => {
                    if e.server.confidence >= ANNOUNCE_SUSPECTS_FROM {
                        self.pending.insert(id.clone(), now + self.suspect_grace);
                    }
                    Announce::Local
                }
                ServerAction::Confirmed | ServerAction::Updated => {
                    self.pending.remove(id);
                    if self.announced.insert(id.clone()) {
                        Announce::First
                    } else {
                        Announce::Again
                    }
                }
                ServerAction::Exited | ServerAction::Dismissed => {
                    self.pending.remove(id);
                    if self.announced.remove(id) {
                        Announce::Again
                    } else {
                        self.metrics.mcp_suspect_unannounced();
                        Announce::Local
                    }
                }
                ServerAction::Snapshot => {
                    if self.announced.contains(id) {
                        Announce::Again
                    } else {
                        Announce::Local
                    }
                }
            };
        }
    }

    /// Suspects past their grace period, still alive and unconfirmed: their first
    /// SIEM record.
    fn promote_due(&mut self) -> Vec<Emitted> {
        let now = tokio::time::Instant::now();
        let due: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(id, _)| id.clone())
            .collect();
        let mut out = Vec::new();
        for id in due {
            self.pending.remove(&id);
            let server = {
                let inv = self.inventory.read().expect("inventory lock");
                match inv.get(&id) {
                    Some(s) if s.state == ServerState::Suspected => s.clone(),
                    _ => continue,
                }
            };
            self.announced.insert(id);
            let mut ev = server_event(ServerAction::Suspected, server);
            if let Event::McpServer(e) = &mut ev.event {
                e.announce = Announce::First;
            }
            out.push(ev);
        }
        out
    }

    /// Emit an inventory snapshot at start and then this often (`None`: never).
    pub fn snapshot_every(&mut self, every: Option<std::time::Duration>) {
        self.snapshot_every = every;
    }

    fn snapshot(&self) -> Vec<Emitted> {
        let inv = self.inventory.read().expect("inventory lock");
        snapshot::take(&inv, &self.host_id, std::time::SystemTime::now(), |id| {
            self.announced.contains(id)
        })
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
        let mut out: Vec<Emitted> = seeded
            .into_iter()
            .flat_map(|(key, argv)| match self.heuristics.suspect(&argv, None) {
                Some(why) => self.suspect(key, &why),
                None => Vec::new(),
            })
            .collect();
        self.route(&mut out);
        // They ran before the agent did: past any grace period already, and a
        // restarted agent re-announces them (the start-up snapshot lists them).
        for em in &mut out {
            if let Event::McpServer(e) = &mut em.event {
                if self.pending.remove(&e.server.id).is_some() {
                    self.announced.insert(e.server.id.clone());
                    e.announce = Announce::First;
                }
            }
        }
        out
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
        let mut snapshots = snapshot::Schedule::new(self.snapshot_every);
        let mut promote = tokio::time::interval(PROMOTE_EVERY);
        promote.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut batch = Vec::with_capacity(crate::events::STAGE_BATCH);
        loop {
            let n = tokio::select! {
                n = rx.recv_many(&mut batch, crate::events::STAGE_BATCH) => n,
                _ = snapshots.due() => {
                    for ev in self.snapshot() {
                        if tx.send(ev).await.is_err() {
                            return;
                        }
                    }
                    continue;
                }
                _ = promote.tick() => {
                    let expired = self.audit.expire(clock::boottime_ns());
                    for ev in self.audited(expired).into_iter().chain(self.promote_due()) {
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
        match flow {
            Flow::Payload(p) => {
                if let Some(ev) = self.resolve_http_client(p.pid) {
                    out.push(ev);
                }
                let outcome = self.recognizer.observe(&p);
                for d in &outcome.discards {
                    self.metrics.payload_discarded(d.reason());
                }
                for _ in 0..outcome.bad_json {
                    self.metrics.payload_discarded("bad_json");
                }
                // The server first: a confirmation hands on its handshake's messages,
                // whose records name it.
                for d in outcome.detections {
                    out.extend(self.confirm(d));
                }
                for m in outcome.messages {
                    let records = self.audit.observe(m);
                    out.extend(self.audited(records));
                }
            }
            Flow::Event(em) => {
                if let Event::Process(p) = &em.event {
                    let servers = self.on_process(p);
                    out.extend(servers);
                }
                out.insert(0, em);
            }
        }
        self.route(&mut out);
        out
    }

    fn on_process(&mut self, ev: &ProcessEvent) -> Vec<Emitted> {
        let pid = ev.process.pid;
        match ev.action {
            ProcessAction::Exec => {
                let Some(why) = self.heuristics.suspect(&ev.process.argv, ev.process.envc) else {
                    return Vec::new();
                };
                let Some(key) = self.table.read().expect("table lock").latest_key(pid) else {
                    return Vec::new();
                };
                self.suspect(key, &why)
            }
            ProcessAction::Exit => {
                self.trees.unmark(pid);
                self.recognizer.forget(pid);
                self.unresolved_http.remove(&pid);
                // Its unanswered requests first: they go out while it is still live.
                let records = self.audit.server_exited(pid);
                let mut out = self.audited(records);
                let mut inv = self.inventory.write().expect("inventory lock");
                out.extend(
                    inv.exited(pid, ev.time.clone())
                        .map(|s| server_event(ServerAction::Exited, s.clone())),
                );
                out
            }
            ProcessAction::Fork => Vec::new(),
        }
    }

    /// Audit events for finished records, with their server as the inventory has it;
    /// counted per method and outcome.
    fn audited(&self, records: Vec<AuditRecord>) -> Vec<Emitted> {
        if records.is_empty() {
            return Vec::new();
        }
        let mut out = Vec::new();
        let mut inv = self.inventory.write().expect("inventory lock");
        for mut r in records {
            self.metrics
                .mcp_request(audit::method_label(&r.method), r.outcome.name(), r.latency_us);
            let surface = r.tool_surface.take();
            let Some(server) = inv.live_by_pid_mut(r.pid) else {
                continue;
            };
            let record = McpRequestEvent::new(r, server);
            // A new or changed tool surface is an inventory change, naming the record.
            let changed = surface
                .filter(|s| server.tools.as_ref() != Some(s))
                .map(|s| (s, record.reference()));
            out.push(Emitted::ready(Event::McpRequest(Box::new(record))));
            if let Some((surface, reference)) = changed {
                server.tools = Some(surface);
                let mut ev = server_event(ServerAction::Updated, server.clone());
                if let Event::McpServer(e) = &mut ev.event {
                    e.tools_listing = Some(reference);
                }
                out.push(ev);
            }
        }
        self.metrics.set_mcp_requests_pending(self.audit.pending());
        out
    }

    /// A new suspect; a suspected launcher above it (`npx` above the `node` it
    /// starts) is dismissed, so one server is one entry.
    fn suspect(&mut self, key: ProcKey, why: &Suspicion) -> Vec<Emitted> {
        let server = {
            let table = self.table.read().expect("table lock");
            let Some(p) = table.get(&key) else {
                return Vec::new();
            };
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
        if self
            .inventory
            .read()
            .expect("inventory lock")
            .get(&server.id)
            .is_some()
        {
            return Vec::new();
        }
        if let Some(b) = &self.budgets {
            b.grant(key.pid);
        }
        self.trees.mark(&self.table.read().expect("table lock"), key);
        let mut out = Vec::new();
        let mut inv = self.inventory.write().expect("inventory lock");
        for a in server.launch_chain.iter().filter(|a| a.pid != server.pid) {
            if let Some(mut s) = inv.drop_suspect(a.pid) {
                self.trees.unmark(a.pid);
                s.evidence
                    .push(format!("launches suspected MCP server pid {}", server.pid));
                out.push(dismissed(s));
            }
        }
        inv.upsert(server.clone());
        out.push(server_event(ServerAction::Suspected, server));
        out
    }

    fn set_host(&self, server: &mut McpServer, host_pid: u32) {
        let table = self.table.read().expect("table lock");
        let Some(hk) = table.latest_key(host_pid) else {
            return;
        };
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

    /// An HTTP server whose client was not known at confirmation: once the state
    /// stage has its end of the connection, the server gets its host (an update).
    fn resolve_http_client(&mut self, pid: u32) -> Option<Emitted> {
        let (local, remote) = *self.unresolved_http.get(&pid)?;
        let client = self
            .connections
            .read()
            .expect("connection index lock")
            .holder(remote, local)?;
        self.unresolved_http.remove(&pid);
        self.metrics.http_client_lookup("connections");
        let mut inv = self.inventory.write().expect("inventory lock");
        let mut server = inv.live_by_pid_mut(pid)?.clone();
        self.set_host(&mut server, client);
        server.client.address = None;
        inv.upsert(server.clone());
        Some(server_event(ServerAction::Updated, server))
    }

    /// An HTTP session's client process (when it is local), its address (when it is
    /// not), and the server's listen address. The capture carries the connection's
    /// addresses and the state stage knows who holds the other end; `/proc` is read
    /// (once) only for what neither knows: a connection opened before the agent
    /// started, or a capture without addresses.
    fn http_peer(&self, d: &Detection) -> (Option<u32>, Option<SocketAddr>, Option<SocketAddr>) {
        let from_index = |local: SocketAddr, remote: SocketAddr| {
            // The client's end: its local address is the server's peer.
            self.connections
                .read()
                .expect("connection index lock")
                .holder(remote, local)
        };
        let (source, client, local, remote) = match d.tuple {
            Some((local, remote)) => {
                // The index only when the capture did not name the client, /proc last.
                let found = d
                    .client_pid
                    .map(|c| ("capture", Some(c)))
                    .or_else(|| from_index(local, remote).map(|c| ("connections", Some(c))))
                    .unwrap_or_else(|| ("procfs", identity::http_peer(d.request_inode).0));
                (found.0, found.1, Some(local), Some(remote))
            }
            None => {
                let (client, local, remote) = identity::http_peer(d.request_inode);
                let source = if d.client_pid.is_some() {
                    "capture"
                } else {
                    "procfs"
                };
                (source, d.client_pid.or(client), local, remote)
            }
        };
        self.metrics
            .http_client_lookup(if client.is_some() { source } else { "none" });
        (client, if client.is_none() { remote } else { None }, local)
    }

    fn confirm(&mut self, d: Detection) -> Vec<Emitted> {
        self.metrics.mcp_detection();
        let (host_pid, client_addr, listen) = match d.transport {
            Transport::Stdio => (d.client_pid, None, None),
            Transport::StreamableHttp | Transport::Sse => self.http_peer(&d),
        };
        let (mut server, ancestors) = {
            let table = self.table.read().expect("table lock");
            let Some((key, p)) = table.latest_key(d.pid).and_then(|k| Some((k, table.get(&k)?))) else {
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
        match (host_pid, d.tuple) {
            (Some(h), _) => self.set_host(&mut server, h),
            (None, Some(tuple)) => {
                self.unresolved_http.insert(d.pid, tuple);
            }
            (None, None) => {}
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
        let mut out = Vec::new();
        let (action, previous) = {
            let mut inv = self.inventory.write().expect("inventory lock");
            // Launchers and the host above a confirmed server matched the launch
            // patterns only because they started it: they are not servers.
            for a in server.launch_chain.iter().filter(|a| a.pid != server.pid) {
                if let Some(mut s) = inv.drop_suspect(a.pid) {
                    self.trees.unmark(a.pid);
                    s.evidence.push(format!("launches MCP server pid {}", server.pid));
                    out.push(dismissed(s));
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
        // From now on its session is audited: its channel stays captured.
        self.recognizer.audit(d.pid);
        if let Some(b) = &self.budgets {
            b.session(d.pid, server.transport.unwrap_or(Transport::Stdio));
        }
        {
            let table = self.table.read().expect("table lock");
            if let Some(key) = table.latest_key(d.pid) {
                self.trees.mark(&table, key);
            }
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
        // The server, what its pid ran before (wrappers that exec their command), then
        // its parents.
        let mut chain = vec![AncestorView::of(p)];
        let entity_id: Arc<str> = Arc::from(p.key.to_string());
        chain.extend(p.earlier_images.iter().map(|img| {
            AncestorView::rendered(
                p.key.pid,
                entity_id.clone(),
                img.comm.clone(),
                img.exe.clone(),
                img.argv.clone(),
            )
        }));
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
            tools: None,
        }
    }
}

/// A suspect that turned out to be a launcher, not a server.
fn dismissed(server: McpServer) -> Emitted {
    let mut ev = server_event(ServerAction::Dismissed, server);
    if let Event::McpServer(e) = &mut ev.event {
        e.previous_state = Some(ServerState::Suspected);
    }
    ev
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
        tools_listing: None,
        announce: Announce::Local,
    }))
}

#[cfg(test)]
mod tests {
    use std::sync::RwLock;

    use super::*;
    use crate::state::{
        connections::ConnectionIndex,
        net_view::{Endpoint, NetAction, NetworkEvent, ProcessRef, Protocol},
        process_table::ProcessTable,
    };

    const CLIENT: u32 = 4_194_401;

    fn stage(connections: ConnectionIndex) -> McpStage {
        McpStage::new(
            Arc::new(RwLock::new(ProcessTable::new(16, 1_000))),
            ExeHasher::new(16),
            Arc::new(RwLock::new(connections)),
            KernelControl::default(),
            Heuristics::none(),
            "host-1".into(),
            Arc::new(Metrics::new()),
        )
    }

    fn http_detection(local: &str, remote: &str) -> Detection {
        Detection {
            pid: 4_194_402,
            ts_ns: 1,
            transport: Transport::StreamableHttp,
            channel: crate::sensor::Channel::Tcp,
            protocol_version: None,
            server_name: None,
            server_title: None,
            server_version: None,
            capabilities: vec![],
            client_name: None,
            client_version: None,
            // No such socket: `/proc` cannot answer, only the state stage's index can.
            request_inode: u64::MAX,
            response_inode: u64::MAX,
            http_path: Some("/mcp".into()),
            client_pid: None,
            tuple: Some((local.parse().unwrap(), remote.parse().unwrap())),
            evidence: vec![],
        }
    }

    #[test]
    fn the_client_of_an_http_session_comes_from_the_state_stages_connections() {
        let mut ix = ConnectionIndex::new(16);
        let mut connect = NetworkEvent::new(NetAction::Connect, Protocol::Tcp, "t".into());
        let ep = |a: &str| Some(Endpoint::from(a.parse::<SocketAddr>().unwrap()));
        connect.local = ep("127.0.0.1:40000");
        connect.remote = ep("127.0.0.1:8000");
        connect.process = Some(ProcessRef {
            pid: CLIENT,
            entity_id: format!("{CLIENT}:1"),
            exe: None,
            comm: "client".into(),
            argv: Arc::from(Vec::new()),
        });
        ix.observe(&connect);
        let s = stage(ix);

        let (client, client_addr, listen) = s.http_peer(&http_detection("127.0.0.1:8000", "127.0.0.1:40000"));
        assert_eq!(client, Some(CLIENT));
        assert_eq!(client_addr, None, "a local client is named by its process");
        assert_eq!(listen, Some("127.0.0.1:8000".parse().unwrap()));

        // A client the index does not know (remote, or connected before the agent):
        // named by its address.
        let (client, client_addr, _) = s.http_peer(&http_detection("127.0.0.1:8000", "192.0.2.7:5555"));
        assert_eq!(client, None);
        assert_eq!(client_addr, Some("192.0.2.7:5555".parse().unwrap()));
    }
}
