//! The live inventory of MCP servers: running and exited (bounded history), served at
//! `GET /v1/mcp-servers` and emitted as `mcp_server` events when it changes.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, RwLock},
};

use serde::Serialize;

use super::{identity::PackageId, recognizer::Transport};
use crate::state::{cgroup::ContainerInfo, view::AncestorView};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerState {
    /// Launch heuristics matched; the wire has not confirmed it (yet).
    Suspected,
    /// It answered an MCP handshake.
    Confirmed,
    Exited,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Confidence {
    Low,
    Medium,
    High,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HostProcess {
    pub pid: u32,
    pub entity_id: Option<String>,
    pub exe: Option<Arc<str>>,
    pub name: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ClientInfo {
    pub name: Option<String>,
    pub version: Option<String>,
    /// Remote address of an HTTP client that is not a local process.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct McpServer {
    /// Stable on this host for the life of the process: `mcp:<pid>:<start_ns>`.
    pub id: String,
    /// The same for the same server on the same host across process and agent
    /// restarts (see `stable_id.rs`): what the SIEM's inventory is keyed by.
    pub server_uid: String,
    /// The same for the same server on every host: counts one server across a fleet.
    pub fingerprint: String,
    /// Matches an entry of the rule file's `sanctioned_servers` (else: shadow).
    pub sanctioned: bool,
    /// The label of that entry.
    pub sanctioned_entry: Option<String>,
    pub state: ServerState,
    pub confidence: Confidence,
    pub name: Option<String>,
    pub title: Option<String>,
    pub version: Option<String>,
    pub protocol_version: Option<String>,
    pub transport: Option<Transport>,
    pub listen_address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_path: Option<String>,
    pub capabilities: Vec<String>,
    pub pid: u32,
    pub entity_id: String,
    pub exe: Option<Arc<str>>,
    pub argv: Arc<[String]>,
    pub sha256: Option<Arc<str>>,
    pub package: Option<PackageId>,
    pub uid: u32,
    pub user: Option<Arc<str>>,
    pub container_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<Arc<ContainerInfo>>,
    pub host: Option<HostProcess>,
    pub client: ClientInfo,
    /// The server and its ancestors up to (and including) the host.
    pub launch_chain: Vec<AncestorView>,
    pub first_seen: String,
    pub last_seen: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exited_at: Option<String>,
    /// What made us believe it (launch heuristic, handshake request/response).
    pub evidence: Vec<String>,
    /// Its tools, from the last complete `tools/list` answer its session carried.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tools: Option<super::tools::ToolSurface>,
}

/// How many exited servers are remembered.
const EXITED_HISTORY: usize = 1024;

#[derive(Default)]
pub struct Inventory {
    servers: HashMap<String, McpServer>,
    /// Live server id by pid.
    by_pid: HashMap<u32, String>,
    exited: VecDeque<String>,
}

pub type SharedInventory = Arc<RwLock<Inventory>>;

impl Inventory {
    pub fn get(&self, id: &str) -> Option<&McpServer> {
        self.servers.get(id)
    }

    /// The live server of `pid`.
    pub fn live_by_pid_mut(&mut self, pid: u32) -> Option<&mut McpServer> {
        self.servers.get_mut(self.by_pid.get(&pid)?)
    }

    /// Forgets a suspicion (not a confirmed or exited server) about `pid`.
    pub fn drop_suspect(&mut self, pid: u32) -> Option<McpServer> {
        let id = self.by_pid.get(&pid)?;
        if self
            .servers
            .get(id)
            .is_some_and(|s| s.state == ServerState::Suspected)
        {
            let id = id.clone();
            self.by_pid.remove(&pid);
            return self.servers.remove(&id);
        }
        None
    }

    pub fn upsert(&mut self, s: McpServer) {
        self.by_pid.insert(s.pid, s.id.clone());
        self.servers.insert(s.id.clone(), s);
    }

    /// Marks the live server of `pid` exited; returns it.
    pub fn exited(&mut self, pid: u32, at: String) -> Option<&McpServer> {
        let id = self.by_pid.remove(&pid)?;
        self.exited.push_back(id.clone());
        while self.exited.len() > EXITED_HISTORY {
            if let Some(old) = self.exited.pop_front() {
                self.servers.remove(&old);
            }
        }
        let s = self.servers.get_mut(&id)?;
        s.state = ServerState::Exited;
        s.last_seen = at.clone();
        s.exited_at = Some(at);
        Some(s)
    }

    /// Every server, running first, then by first sighting.
    pub fn list(&self) -> Vec<McpServer> {
        let mut v: Vec<McpServer> = self.servers.values().cloned().collect();
        v.sort_by(|a, b| {
            (a.state == ServerState::Exited, &a.first_seen, a.pid).cmp(&(
                b.state == ServerState::Exited,
                &b.first_seen,
                b.pid,
            ))
        });
        v
    }

    /// Servers by state and sanctioned status (every combination, zeros included).
    pub fn counts(&self) -> [(ServerState, bool, usize); 6] {
        use ServerState::*;
        let mut out = [
            (Suspected, true, 0),
            (Suspected, false, 0),
            (Confirmed, true, 0),
            (Confirmed, false, 0),
            (Exited, true, 0),
            (Exited, false, 0),
        ];
        for s in self.servers.values() {
            for slot in &mut out {
                if slot.0 == s.state && slot.1 == s.sanctioned {
                    slot.2 += 1;
                }
            }
        }
        out
    }

    /// Every server, mutably (re-judged when the sanctioned list changes).
    pub fn servers_mut(&mut self) -> impl Iterator<Item = &mut McpServer> {
        self.servers.values_mut()
    }

    /// Servers still running (suspected or confirmed), by first sighting.
    pub fn live(&self) -> Vec<McpServer> {
        let mut v: Vec<McpServer> = self
            .servers
            .values()
            .filter(|s| s.state != ServerState::Exited)
            .cloned()
            .collect();
        v.sort_by(|a, b| (&a.first_seen, a.pid).cmp(&(&b.first_seen, b.pid)));
        v
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerAction {
    Suspected,
    Confirmed,
    Updated,
    Exited,
    /// A suspicion withdrawn: it launched or hosts the real server.
    Dismissed,
    /// Not a change: one server of a periodic inventory snapshot (`snapshot` says which).
    Snapshot,
}

/// Which snapshot a `snapshot` event belongs to: all servers of one snapshot share
/// `uid` and `time`, so "what ran on this host at time T" is one query.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SnapshotInfo {
    pub uid: String,
    /// RFC 3339, the same for every server of the snapshot.
    pub time: String,
    /// 1-based position of this server in the snapshot.
    pub index: usize,
    /// Servers in the snapshot.
    pub count: usize,
}

/// Whether an inventory change reaches the SIEM, and as what. The local outputs (the
/// API, metrics, `jsonl` and other `events=all` sinks) see every change.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Announce {
    /// Not for the SIEM: a suspect that has neither spoken MCP nor lived past the
    /// grace period, or the end of one the SIEM never heard of.
    #[default]
    Local,
    /// The server's first SIEM record (`appeared`).
    First,
    /// A change to, or a snapshot of, a server the SIEM already has.
    Again,
}

/// Emitted whenever the inventory changes.
#[derive(Clone, Debug, Serialize)]
pub struct McpServerEvent {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub time: String,
    pub action: ServerAction,
    /// On confirmation: from the server's first MCP response (kernel timestamp) to
    /// this inventory entry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detection_latency_ms: Option<f64>,
    /// The state before this change, when the server was already known
    /// (`suspected` → `confirmed`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_state: Option<ServerState>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotInfo>,
    pub server: McpServer,
    /// A changed tool surface: the audit record of the listing that showed it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tools_listing: Option<crate::mcp::request_ref::RequestRef>,
    /// Set by the MCP stage, read by the output stage's routing.
    #[serde(skip)]
    pub announce: Announce,
}
