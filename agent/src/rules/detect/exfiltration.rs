//! `mcp-exfiltration-chain`: in one MCP server's tree, a sensitive read followed
//! within `exfiltration.window` by egress outside the server's policy or to a
//! destination the server had never reached: the two moves of an exfiltration, as
//! one finding with the whole chain.
//!
//! The engine arms a server with each sensitive read ([`Chains::arm`]) and shows it
//! every egress of its tree ([`Chains::egress`]). A chain found on a connection
//! waits for the connection's byte count (its close or first byte report) so the
//! finding says how much was sent; one that gets none within the window goes out
//! without it ([`Chains::due`]). Each (server, destination, first read) is reported
//! once.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    num::NonZeroUsize,
};

use lru::LruCache;

use super::{display_name, server_identity, ConnectionSubject, Finding};
use crate::alert::{Alert, ChainRead, ExfilChain};

/// Sensitive reads kept per server (the oldest go first).
const READS_PER_SERVER: usize = 32;
/// Destinations remembered per server instance.
const DESTINATIONS_PER_SERVER: usize = 4096;
/// Chains already reported.
const REPORTED: usize = 16_384;
/// Chains waiting for their connection's bytes.
const PENDING: usize = 1024;

struct Armed {
    ts_ns: u64,
    read: ChainRead,
}

/// A chain found, waiting for its connection's bytes.
struct Pending {
    alert: Alert,
    since_ns: u64,
}

pub struct Chains {
    armed: HashMap<String, VecDeque<Armed>>,
    destinations: HashMap<String, HashSet<String>>,
    reported: LruCache<String, ()>,
    pending: HashMap<String, Pending>,
}

impl Default for Chains {
    fn default() -> Self {
        Self {
            armed: HashMap::new(),
            destinations: HashMap::new(),
            reported: LruCache::new(NonZeroUsize::new(REPORTED).expect("non-zero")),
            pending: HashMap::new(),
        }
    }
}

/// An egress that completes a chain: the reads it follows and why it counts.
pub struct Completed {
    pub reads: Vec<ChainRead>,
    pub first_ns: u64,
    pub reason: String,
    pub identity: String,
}

impl Chains {
    /// A sensitive read by the tree of server `server` (its entity id).
    pub fn arm(&mut self, server: &str, ts_ns: u64, read: ChainRead) {
        let q = self.armed.entry(server.to_string()).or_default();
        if q.len() == READS_PER_SERVER {
            q.pop_front();
        }
        q.push_back(Armed { ts_ns, read });
    }

    /// The server is gone: its reads and destinations with it.
    pub fn forget(&mut self, server: &str) {
        self.armed.remove(server);
        self.destinations.remove(server);
    }

    /// An egress of `server`'s tree at `now_ns`. `outside_policy`: why its policy does
    /// not allow it, if it does not. Every egress teaches the server's destinations;
    /// one that follows reads within `window_ns` and is outside policy or new
    /// completes a chain, unless that chain was reported already.
    pub fn egress(
        &mut self,
        server: &str,
        c: &ConnectionSubject,
        outside_policy: Option<String>,
        now_ns: u64,
        window_ns: u64,
    ) -> Option<Completed> {
        let dest = match c.domain() {
            Some(d) => format!("{d}:{}", c.remote.port),
            None => format!("{}:{}", c.remote.ip, c.remote.port),
        };
        let seen = self.destinations.entry(server.to_string()).or_default();
        let new = seen.len() < DESTINATIONS_PER_SERVER && seen.insert(dest.clone());
        let q = self.armed.get_mut(server)?;
        q.retain(|a| now_ns.saturating_sub(a.ts_ns) <= window_ns);
        if q.is_empty() {
            return None;
        }
        let reason = match outside_policy {
            Some(why) => format!("egress outside the policy: {why}"),
            None if new => "a destination this server had never reached".to_string(),
            None => return None,
        };
        let tree = c.tree?;
        let first = q.front()?;
        let identity = format!("{}->{dest}<-{}", server_identity(&tree.server), first.read.path);
        if self.reported.put(identity.clone(), ()).is_some() {
            return None;
        }
        Some(Completed {
            first_ns: first.ts_ns,
            reads: q.iter().map(|a| a.read.clone()).collect(),
            reason,
            identity,
        })
    }

    /// Holds a chain's alert until its connection reports bytes.
    pub fn hold(&mut self, connection_id: String, alert: Alert, now_ns: u64) -> Option<Alert> {
        if self.pending.len() >= PENDING {
            // Full: out at once rather than lost.
            return Some(alert);
        }
        self.pending.insert(
            connection_id,
            Pending {
                alert,
                since_ns: now_ns,
            },
        );
        None
    }

    /// A connection's byte count: the chain it completes, with the bytes.
    pub fn bytes(&mut self, connection_id: &str, bytes_sent: Option<u64>) -> Option<Alert> {
        let mut p = self.pending.remove(connection_id)?;
        if let Some(chain) = &mut p.alert.chain {
            chain.bytes_sent = bytes_sent;
        }
        Some(p.alert)
    }

    /// Chains that waited longer than `wait_ns` for their bytes.
    pub fn due(&mut self, now_ns: u64, wait_ns: u64) -> Vec<Alert> {
        let due: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, p)| now_ns.saturating_sub(p.since_ns) > wait_ns)
            .map(|(k, _)| k.clone())
            .collect();
        due.into_iter()
            .filter_map(|k| self.pending.remove(&k).map(|p| p.alert))
            .collect()
    }
}

/// The finding of a completed chain, and its evidence.
pub fn detect(
    c: &ConnectionSubject,
    done: &Completed,
    now_ns: u64,
    window_secs: u64,
) -> (Finding, ExfilChain) {
    let tree = c.tree.expect("a chain has a server");
    let name = display_name(&tree.server);
    let dest = c.destination();
    let files: Vec<&str> = done.reads.iter().map(|r| &*r.path).collect();
    let elapsed_ms = now_ns.saturating_sub(done.first_ns) / 1_000_000;
    let mut f = Finding::new(
        format!("MCP server {name} read {} then sent to {dest}", files.join(", ")),
        format!(
            "exfiltration chain in the tree of MCP server {name}: {} read {} ({} ms before), then process {} (pid {}) reached {dest} ({}): {}",
            done.reads.first().map_or("?", |r| r.comm.as_str()),
            files.join(", "),
            elapsed_ms,
            c.comm,
            c.pid,
            c.net.result,
            done.reason,
        ),
    );
    f.identity = Some(done.identity.clone());
    f.entry = c.entry().map(|e| e.label.clone());
    let chain = ExfilChain {
        reads: done.reads.clone(),
        egress_reason: done.reason.clone(),
        bytes_sent: c.net.bytes_sent,
        elapsed_ms,
        window_secs,
    };
    (f, chain)
}
