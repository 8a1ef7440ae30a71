//! The built-in detections, one per file: each is one function from what the engine
//! knows about an event to a finding (or none). The engine (`../engine.rs`) decides
//! when each runs, narrows it by the rule's condition and exceptions, deduplicates,
//! and assembles the alert.

pub mod attestation;
pub mod egress;
pub mod egress_volume;
pub mod exfiltration;
pub mod http_exposed;
pub mod llm_provider;
pub mod long_lived;
pub mod metadata;
pub mod new_destination;
pub mod privileged;
pub mod raw_network;
pub mod sensitive_file;
pub mod shadow;
pub mod tool_call_denied;
pub mod tool_definitions;
pub mod tool_poisoning;

use std::net::SocketAddr;

use super::model::{CompiledRules, Sanctioned};
use crate::{
    mcp::inventory::McpServer,
    state::net_view::{Endpoint, NetworkEvent},
};

/// A live MCP server as the engine tracks it.
pub struct TrackedServer {
    pub server: McpServer,
    /// Index of the sanctioned entry that matches it.
    pub sanctioned: Option<usize>,
    /// Boot-time start of its process, for lifetime limits.
    pub start_ns: u64,
}

impl TrackedServer {
    pub fn entry<'r>(&self, rules: &'r CompiledRules) -> Option<&'r Sanctioned> {
        self.sanctioned.and_then(|i| rules.sanctioned.get(i))
    }
}

/// What a built-in detection found: the text of the alert and what it is about.
#[derive(Clone, Debug)]
pub struct Finding {
    pub title: String,
    pub description: String,
    /// The sanctioned entry the finding names, when not the one the server matches
    /// (an attestation failure names the entry the server claims).
    pub entry: Option<String>,
    /// Dedup identity, when not the server's (or the server's and destination's).
    pub identity: Option<String>,
    /// The finding's own severity, when not the rule's (a poisoning family's).
    pub severity: Option<crate::alert::Severity>,
    /// The audited request that raised it.
    pub request: Option<crate::alert::RequestRef>,
}

impl Finding {
    pub fn new(title: String, description: String) -> Self {
        Self {
            title,
            description,
            entry: None,
            identity: None,
            severity: None,
            request: None,
        }
    }
}

/// An MCP server appearing, confirmed or updated.
pub struct ServerSubject<'a> {
    pub tracked: &'a TrackedServer,
    pub rules: &'a CompiledRules,
    /// Its effective capabilities (read only when a rule needs them).
    pub caps: Option<u64>,
    /// A non-loopback address it listens on, if the kernel saw one.
    pub exposed_listener: Option<SocketAddr>,
}

impl ServerSubject<'_> {
    pub fn server(&self) -> &McpServer {
        &self.tracked.server
    }
}

/// A connection attempt or send by a process, in the tree of `tree` if any.
pub struct ConnectionSubject<'a> {
    pub net: &'a NetworkEvent,
    pub remote: Endpoint,
    pub pid: u32,
    pub comm: &'a str,
    pub tree: Option<&'a TrackedServer>,
    pub rules: &'a CompiledRules,
}

impl ConnectionSubject<'_> {
    pub fn domain(&self) -> Option<&str> {
        self.net.domain.as_deref()
    }

    /// `domain (ip:port)` or `ip:port`.
    pub fn destination(&self) -> String {
        match self.domain() {
            Some(d) => format!("{d} ({}:{})", self.remote.ip, self.remote.port),
            None => format!("{}:{}", self.remote.ip, self.remote.port),
        }
    }

    pub fn entry(&self) -> Option<&Sanctioned> {
        self.tree.and_then(|t| t.entry(self.rules))
    }

    /// The egress policy that governs the connection: the sanctioned entry's own,
    /// else the file's default.
    pub fn policy(&self) -> &super::netlist::EgressPolicy {
        self.entry()
            .and_then(|e| e.egress.as_deref())
            .unwrap_or(&self.rules.default_egress)
    }
}

/// How findings name a server: its MCP name, else its package, else its pid.
pub fn display_name(s: &McpServer) -> String {
    s.name
        .clone()
        .or_else(|| s.package.as_ref().and_then(|p| p.name.clone()))
        .unwrap_or_else(|| format!("pid {}", s.pid))
}

/// What a finding is about across repeats and restarts: the server's identity.
pub fn server_identity(s: &McpServer) -> String {
    if let Some(p) = &s.package {
        // A script is its file; one script may serve under several names.
        if p.ecosystem == "script" {
            return format!("script:{}#{}", p.path, s.name.as_deref().unwrap_or("?"));
        }
        if let Some(n) = &p.name {
            return format!("{}:{}@{}", p.ecosystem, n, p.version.as_deref().unwrap_or("?"));
        }
    }
    match (&s.name, &s.exe) {
        (Some(n), _) => format!("mcp:{n}"),
        (None, Some(e)) => format!("exe:{e}"),
        (None, None) => format!("cmd:{}", s.argv.join(" ")),
    }
}
