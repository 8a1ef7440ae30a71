//! Evaluation: every event (and every inventory change) against the compiled rules.
//! The engine keeps what the rules need across events: the live MCP servers (with the
//! sanctioned entry each matches), which built-in findings already fired for a server,
//! the connections already judged, and the destination baseline.

use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, SocketAddr},
    num::NonZeroUsize,
    sync::Arc,
    time::{Duration, SystemTime},
};

use lru::LruCache;

use super::{
    baseline::Baseline,
    condition::{Fields, Value},
    model::{CompiledRules, Rule},
    netlist::{EgressPolicy, Verdict},
    schema::Builtin,
};
use crate::{
    alert::Alert,
    clock,
    events::Event,
    mcp::{
        inventory::{McpServer, ServerAction, ServerState},
        recognizer::Transport,
    },
    state::{
        net_view::{NetAction, NetworkEvent, Protocol},
        process_table::{Origin, ProcKey, Process},
        view::{AncestorView, ProcessAction, ProcessView},
        SharedTable,
    },
};

/// Connections judged recently (a non-blocking connect reports its attempt and its
/// outcome: judge it once).
const JUDGED_CONNECTIONS: usize = 16_384;

struct Tracked {
    server: McpServer,
    /// Index of the sanctioned entry that matches it.
    sanctioned: Option<usize>,
    start_ns: u64,
}

pub struct Engine {
    rules: Arc<CompiledRules>,
    table: SharedTable,
    /// Live servers by entity id (`pid:start_ns`).
    servers: HashMap<String, Tracked>,
    /// Built-in findings about one server instance fire once.
    fired: HashSet<(Builtin, String)>,
    judged: LruCache<String, ()>,
    /// Non-loopback listeners by pid (`network_listen`): an HTTP server's inventory
    /// entry shows the address its client reached, not the one it is bound to.
    exposed_listeners: LruCache<u32, SocketAddr>,
    baseline: Baseline,
}

/// The per-event view conditions read.
struct Ctx<'a> {
    kind: &'static str,
    process: Option<&'a Process>,
    server: Option<&'a Tracked>,
    net: Option<&'a NetworkEvent>,
    dns: Option<&'a crate::state::net_view::DnsEvent>,
}

impl Fields for Ctx<'_> {
    fn get(&self, field: &str) -> Option<Value<'_>> {
        let s = |v: &str| Some(Value::Str(v.to_string().into()));
        let p = self.process;
        let m = self.server.map(|t| &t.server);
        let n = self.net;
        match field {
            "event.type" => s(self.kind),
            "process.pid" => p.map(|p| Value::Num(p.key.pid.into())),
            "process.uid" => p.map(|p| Value::Num(p.uid.into())),
            "process.user" => p?.user.as_deref().and_then(s),
            "process.exe" => p?.exe.as_deref().and_then(s),
            "process.comm" => p.and_then(|p| s(&p.comm)),
            "process.cmdline" => p.and_then(|p| s(&p.argv.join(" "))),
            "mcp.in_tree" => Some(Value::Bool(m.is_some())),
            "mcp.sanctioned" => Some(Value::Bool(self.server.is_some_and(|t| t.sanctioned.is_some()))),
            "mcp.name" => m?.name.as_deref().and_then(s),
            "mcp.version" => m?.version.as_deref().and_then(s),
            "mcp.package" => m?.package.as_ref()?.name.as_deref().and_then(s),
            "mcp.state" => m.and_then(|m| s(state_name(m.state))),
            "mcp.transport" => m?.transport.map(transport_name).and_then(s),
            "mcp.exe" => m?.exe.as_deref().and_then(s),
            "mcp.sha256" => m?.sha256.as_deref().and_then(s),
            "mcp.user" => m?.user.as_deref().and_then(s),
            "mcp.uid" => m.map(|m| Value::Num(m.uid.into())),
            "mcp.host" => m?.host.as_ref().and_then(|h| s(&h.name)),
            "mcp.container_image" => m?
                .container
                .as_ref()
                .and_then(|c| s(&format!("{}://{}", c.runtime, c.id))),
            "net.protocol" => n.and_then(|n| s(protocol_name(n.protocol))),
            "net.direction" => n?
                .direction
                .map(|d| format!("{d:?}").to_lowercase())
                .and_then(|d| s(&d)),
            "net.result" => n.and_then(|n| s(&n.result)),
            "net.remote_ip" => n?.remote.map(|e| Value::Ip(e.ip)),
            "net.remote_port" => n?.remote.map(|e| Value::Num(e.port.into())),
            "net.local_ip" => n?.local.map(|e| Value::Ip(e.ip)),
            "net.local_port" => n?.local.map(|e| Value::Num(e.port.into())),
            "net.domain" => n?.domain.as_deref().and_then(s),
            "dns.question" => self.dns?.question.as_deref().and_then(s),
            "dns.answer_ip" => {
                let ips: Vec<IpAddr> = self
                    .dns?
                    .answers
                    .iter()
                    .filter_map(|a| a.data.as_deref()?.parse().ok())
                    .collect();
                (!ips.is_empty()).then_some(Value::Ips(ips))
            }
            _ => None,
        }
    }
}

fn state_name(s: ServerState) -> &'static str {
    match s {
        ServerState::Suspected => "suspected",
        ServerState::Confirmed => "confirmed",
        ServerState::Exited => "exited",
    }
}

fn transport_name(t: Transport) -> &'static str {
    match t {
        Transport::Stdio => "stdio",
        Transport::StreamableHttp => "streamable_http",
        Transport::Sse => "sse",
    }
}

fn protocol_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
        Protocol::Icmp => "icmp",
        Protocol::Icmpv6 => "icmpv6",
        Protocol::Raw => "raw",
        Protocol::Packet => "packet",
        Protocol::Unknown => "unknown",
    }
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

impl Engine {
    pub fn new(rules: Arc<CompiledRules>, table: SharedTable, state_dir: Option<std::path::PathBuf>) -> Self {
        Self {
            rules,
            table,
            servers: HashMap::new(),
            fired: HashSet::new(),
            judged: LruCache::new(NonZeroUsize::new(JUDGED_CONNECTIONS).expect("non-zero")),
            exposed_listeners: LruCache::new(NonZeroUsize::new(JUDGED_CONNECTIONS).expect("non-zero")),
            baseline: Baseline::open(state_dir),
        }
    }

    /// Swaps the rule set between two events; servers are re-judged against the new
    /// sanctioned list (findings already raised are not raised again).
    pub fn set_rules(&mut self, rules: Arc<CompiledRules>) {
        self.rules = rules;
        let ids: Vec<String> = self.servers.keys().cloned().collect();
        for id in ids {
            let sanctioned = {
                let t = &self.servers[&id];
                self.sanctioned_index(&t.server)
            };
            if let Some(t) = self.servers.get_mut(&id) {
                t.sanctioned = sanctioned;
            }
        }
    }

    fn sanctioned_index(&self, s: &McpServer) -> Option<usize> {
        self.rules.sanctioned_position(s)
    }

    pub fn evaluate(&mut self, ev: &Event) -> Vec<Alert> {
        let mut out = Vec::new();
        match ev {
            Event::McpServer(e) => self.on_server(e.action, &e.server, &mut out),
            Event::Network(n) => self.on_network(n, &mut out),
            Event::Process(p) => {
                let kind = match p.action {
                    ProcessAction::Exec => "process_exec",
                    ProcessAction::Exit => "process_exit",
                    ProcessAction::Fork => return out,
                };
                self.custom(kind, Some(p.process.pid), None, None, &mut out);
            }
            Event::Dns(d) if d.kind == "dns_response" => {
                let pid = d.process.as_ref().map(|p| p.pid);
                self.custom("dns_response", pid, None, Some(d), &mut out);
            }
            #[allow(unreachable_patterns)]
            _ => {}
        }
        out
    }

    /// Time-based findings (lifetime), checked on a timer.
    pub fn tick(&mut self) -> Vec<Alert> {
        let mut out = Vec::new();
        let rules = self.rules.clone();
        let now = clock::boottime_ns();
        for rule in rules.builtin(Builtin::McpServerLongLived) {
            let max = rule.max_lifetime.unwrap_or(Duration::MAX);
            let over: Vec<String> = self
                .servers
                .iter()
                .filter(|(_, t)| t.server.state == ServerState::Confirmed)
                .filter(|(_, t)| Duration::from_nanos(now.saturating_sub(t.start_ns)) > max)
                .map(|(id, _)| id.clone())
                .collect();
            for id in over {
                let t = &self.servers[&id];
                if self.fired.contains(&(Builtin::McpServerLongLived, id.clone())) {
                    continue;
                }
                let ctx = Self::ctx("mcp_server", Some(t.server.pid), Some(t), None, None);
                if !passes(rule, &ctx) {
                    continue;
                }
                let age = Duration::from_nanos(now.saturating_sub(t.start_ns));
                let a = self.alert(
                    rule,
                    t,
                    t.server.pid,
                    format!(
                        "MCP server {} outlived its maximum lifetime",
                        display_name(&t.server)
                    ),
                    format!(
                        "running for {}s, longer than max_lifetime {}s",
                        age.as_secs(),
                        max.as_secs()
                    ),
                    None,
                    None,
                );
                self.fired.insert((Builtin::McpServerLongLived, id));
                out.push(a);
            }
        }
        out
    }

    fn on_server(&mut self, action: ServerAction, s: &McpServer, out: &mut Vec<Alert>) {
        match action {
            // A periodic re-announcement of the inventory, not a change to judge.
            ServerAction::Snapshot => return,
            ServerAction::Exited | ServerAction::Dismissed => {
                self.servers.remove(&s.entity_id);
                self.fired.retain(|(_, id)| id != &s.entity_id);
                return;
            }
            ServerAction::Suspected | ServerAction::Confirmed | ServerAction::Updated => {}
        }
        let start_ns = s
            .entity_id
            .split_once(':')
            .and_then(|(_, n)| n.parse().ok())
            .unwrap_or_else(clock::boottime_ns);
        let tracked = Tracked {
            sanctioned: self.sanctioned_index(s),
            server: s.clone(),
            start_ns,
        };
        self.servers.insert(s.entity_id.clone(), tracked);
        let rules = self.rules.clone();
        let t = &self.servers[&s.entity_id];
        let ctx = Self::ctx("mcp_server", Some(s.pid), Some(t), None, None);
        let confirmed = s.state == ServerState::Confirmed;
        // Candidate findings; raised below once `t` is no longer borrowed.
        let mut found: Vec<(Builtin, &Rule, String, String, Option<String>)> = Vec::new();

        // Attestation first: a server claimed by an entry whose pinned hash differs
        // is that finding, not a shadow server.
        let mut attestation_failed = false;
        if t.sanctioned.is_none() {
            let claim = rules
                .sanctioned
                .iter()
                .find(|e| e.sha256.is_some() && e.claims(s) && !e.hash_matches(s));
            let known_hash = s.sha256.is_some() || s.package.as_ref().is_some_and(|p| p.sha256.is_some());
            if let (Some(entry), true) = (claim, known_hash) {
                attestation_failed = true;
                for rule in rules.builtin(Builtin::McpServerAttestationFailed) {
                    found.push((
                        Builtin::McpServerAttestationFailed,
                        rule,
                        format!("MCP server {} failed attestation", display_name(s)),
                        format!(
                            "matches sanctioned entry {} by identity but its hash differs: pinned {}, \
                             executable {}, package {}",
                            entry.label,
                            entry.sha256.as_deref().unwrap_or("-"),
                            s.sha256.as_deref().unwrap_or("unknown"),
                            s.package
                                .as_ref()
                                .and_then(|p| p.sha256.as_deref())
                                .unwrap_or("unknown"),
                        ),
                        Some(entry.label.clone()),
                    ));
                }
            }
        }
        if t.sanctioned.is_none() && !attestation_failed {
            for rule in rules.builtin(Builtin::ShadowMcpServer) {
                let eligible = confirmed
                    || (s.state == ServerState::Suspected
                        && rule.suspected_min_confidence.is_some_and(|m| s.confidence >= m));
                if eligible {
                    found.push((
                        Builtin::ShadowMcpServer,
                        rule,
                        format!("Shadow MCP server {}", display_name(s)),
                        format!(
                            "{} MCP server {} (pid {}, {}) matches no sanctioned entry in the rule file",
                            state_name(s.state),
                            display_name(s),
                            s.pid,
                            server_identity(s)
                        ),
                        None,
                    ));
                }
            }
        }
        if confirmed {
            for rule in rules.builtin(Builtin::McpServerPrivileged) {
                let caps = effective_caps(s.pid);
                let why = if s.uid == 0 {
                    Some("runs as root (uid 0)".to_string())
                } else {
                    caps.filter(|c| *c != 0)
                        .map(|c| format!("runs with capabilities CapEff={c:016x}"))
                };
                if let Some(why) = why {
                    found.push((
                        Builtin::McpServerPrivileged,
                        rule,
                        format!("MCP server {} runs privileged", display_name(s)),
                        format!("MCP server {} (pid {}) {why}", display_name(s), s.pid),
                        None,
                    ));
                }
            }
            let exposed = s
                .listen_address
                .as_deref()
                .and_then(|a| a.parse::<SocketAddr>().ok())
                .filter(|a| !a.ip().to_canonical().is_loopback())
                .or_else(|| self.exposed_listeners.peek(&s.pid).copied());
            let http = matches!(s.transport, Some(Transport::StreamableHttp | Transport::Sse));
            if let (Some(addr), true) = (exposed, http) {
                for rule in rules.builtin(Builtin::McpHttpListenerExposed) {
                    found.push((
                        Builtin::McpHttpListenerExposed,
                        rule,
                        format!("MCP HTTP server {} listens on {addr}", display_name(s)),
                        format!(
                            "MCP server {} accepts connections on non-loopback address {addr}",
                            display_name(s)
                        ),
                        None,
                    ));
                }
            }
        }
        for (b, rule, title, desc, entry) in found {
            let key = (b, s.entity_id.clone());
            if self.fired.contains(&key) || !passes(rule, &ctx) {
                continue;
            }
            let mut a = self.alert(rule, t, s.pid, title, desc, None, None);
            if entry.is_some() {
                a.sanctioned_entry = entry;
            }
            out.push(a);
            self.fired.insert(key);
        }
        self.custom_for_server(s, out);
    }

    fn custom_for_server(&mut self, s: &McpServer, out: &mut Vec<Alert>) {
        self.custom("mcp_server", Some(s.pid), None, None, out);
    }

    /// The MCP server whose process tree `pid` belongs to (itself or an ancestor).
    fn tree_of(&self, pid: u32) -> Option<&Tracked> {
        if self.servers.is_empty() {
            return None;
        }
        let t = self.table.read().expect("table lock");
        let key = t.live_key(pid).or_else(|| t.by_pid(pid).last().map(|p| p.key))?;
        std::iter::once(key)
            .chain(t.lineage(&key).into_iter().map(|p| p.key))
            .find_map(|k| self.servers.get(&k.to_string()))
    }

    fn process(&self, pid: u32) -> Option<Process> {
        let t = self.table.read().expect("table lock");
        let key = t.live_key(pid).or_else(|| t.by_pid(pid).last().map(|p| p.key))?;
        t.get(&key).cloned()
    }

    fn ctx<'a>(
        kind: &'static str,
        _pid: Option<u32>,
        server: Option<&'a Tracked>,
        net: Option<&'a NetworkEvent>,
        dns: Option<&'a crate::state::net_view::DnsEvent>,
    ) -> Ctx<'a> {
        Ctx {
            kind,
            process: None,
            server,
            net,
            dns,
        }
    }

    fn on_network(&mut self, n: &NetworkEvent, out: &mut Vec<Alert>) {
        let Some(pref) = &n.process else { return };
        let pid = pref.pid;
        match n.action {
            NetAction::Socket => {
                if !matches!(
                    n.protocol,
                    Protocol::Raw | Protocol::Icmp | Protocol::Icmpv6 | Protocol::Packet
                ) {
                    return;
                }
                let rules = self.rules.clone();
                let Some(t) = self.tree_of(pid) else { return };
                let proc_ = self.process(pid);
                let mut ctx = Self::ctx("network_socket", Some(pid), Some(t), Some(n), None);
                ctx.process = proc_.as_ref();
                for rule in rules.builtin(Builtin::McpRawNetwork) {
                    if passes(rule, &ctx) {
                        out.push(self.alert(
                            rule,
                            t,
                            pid,
                            format!(
                                "{} socket in the tree of MCP server {}",
                                protocol_name(n.protocol),
                                display_name(&t.server)
                            ),
                            format!(
                                "process {} (pid {pid}) opened a {} socket ({})",
                                pref.comm,
                                protocol_name(n.protocol),
                                n.socket_type.unwrap_or("?")
                            ),
                            Some(n),
                            None,
                        ));
                    }
                }
                self.custom("network_socket", Some(pid), Some(n), None, out);
            }
            NetAction::Connect | NetAction::Send => {
                let kind = if n.action == NetAction::Connect {
                    "network_connect"
                } else {
                    "network_send"
                };
                if n.action == NetAction::Connect {
                    // The attempt and the outcome of one connect are judged once.
                    if let Some(id) = &n.connection_id {
                        if self.judged.put(id.clone(), ()).is_some() {
                            return;
                        }
                    }
                }
                self.on_egress(n, pid, out);
                self.custom(kind, Some(pid), Some(n), None, out);
            }
            NetAction::Listen => {
                if let Some(l) = n.local.filter(|l| !l.ip.is_loopback()) {
                    self.exposed_listeners.put(pid, SocketAddr::new(l.ip, l.port));
                    // A server confirmed before it listened: judge it again.
                    if let Some(s) = self
                        .servers
                        .values()
                        .find(|t| t.server.pid == pid)
                        .map(|t| t.server.clone())
                    {
                        self.on_server(ServerAction::Updated, &s, out);
                    }
                }
                self.custom("network_listen", Some(pid), Some(n), None, out)
            }
            NetAction::Accept => self.custom("network_accept", Some(pid), Some(n), None, out),
            _ => {}
        }
    }

    fn on_egress(&mut self, n: &NetworkEvent, pid: u32, out: &mut Vec<Alert>) {
        let Some(remote) = n.remote else { return };
        let rules = self.rules.clone();
        let domain = n.domain.as_deref();
        // Most connections are outside any MCP server's tree and to no LLM provider:
        // leave them before touching the process table.
        let llm_hit = domain.is_some_and(|d| {
            rules
                .list("llm_api_providers")
                .is_some_and(|l| l.contains_domain(d))
        });
        if !llm_hit && self.tree_of(pid).is_none() {
            return;
        }
        let proc_ = self.process(pid);
        let dest = match domain {
            Some(d) => format!("{d} ({}:{})", remote.ip, remote.port),
            None => format!("{}:{}", remote.ip, remote.port),
        };
        let comm = n.process.as_ref().map_or("?", |p| p.comm.as_str()).to_string();
        let mut pending: Vec<Alert> = Vec::new();
        let mut new_dest: Option<(String, String)> = None;
        if let Some(t) = self.tree_of(pid) {
            let mut ctx = Self::ctx("network_connect", Some(pid), Some(t), Some(n), None);
            ctx.process = proc_.as_ref();
            let entry = t.sanctioned.map(|i| &rules.sanctioned[i]);
            let policy: &EgressPolicy = entry
                .and_then(|e| e.egress.as_deref())
                .unwrap_or(&rules.default_egress);
            let meta = rules.list("cloud_metadata");
            let is_meta = meta
                .is_some_and(|m| m.contains_ip(remote.ip) || domain.is_some_and(|d| m.contains_domain(d)));
            if is_meta {
                for rule in rules
                    .builtin(Builtin::McpMetadataAccess)
                    .filter(|r| passes(r, &ctx))
                {
                    pending.push(self.alert(
                        rule,
                        t,
                        pid,
                        format!(
                            "Cloud metadata access from the tree of MCP server {}",
                            display_name(&t.server)
                        ),
                        format!(
                            "process {comm} (pid {pid}) connected to metadata endpoint {dest}: {}",
                            n.result
                        ),
                        Some(n),
                        entry.map(|e| e.label.clone()),
                    ));
                }
            }
            if let Verdict::NotAllowed | Verdict::Denied(_) =
                policy.judge(Some(remote.ip), Some(remote.port), domain)
            {
                let why = match policy.judge(Some(remote.ip), Some(remote.port), domain) {
                    Verdict::Denied(w) => w,
                    _ => "not in the allowed destinations".into(),
                };
                for rule in rules
                    .builtin(Builtin::McpUnsanctionedEgress)
                    .filter(|r| passes(r, &ctx))
                {
                    pending.push(self.alert(
                        rule,
                        t,
                        pid,
                        format!("MCP server {} egress to {dest}", display_name(&t.server)),
                        format!(
                            "process {comm} (pid {pid}) in the tree of {} MCP server {} reached {dest} ({}): {why}; policy: {}",
                            if entry.is_some() { "sanctioned" } else { "unsanctioned" },
                            display_name(&t.server),
                            n.result,
                            entry.filter(|e| e.egress.is_some()).map_or("egress (default)".to_string(), |e| format!("{}.egress", e.label)),
                        ),
                        Some(n),
                        entry.map(|e| e.label.clone()),
                    ));
                }
            }
            if let Some(e) = entry {
                if rules
                    .builtin(Builtin::McpServerNewDestination)
                    .any(|r| passes(r, &ctx))
                {
                    let d = match domain {
                        Some(d) => format!("{d}:{}", remote.port),
                        None => format!("{}:{}", remote.ip, remote.port),
                    };
                    // The baseline belongs to the sanctioned entry: the identity the
                    // organisation approved (stable across versions, names and how
                    // quickly the package was identified).
                    new_dest = Some((format!("sanctioned:{}", e.label), d));
                }
            }
        }
        if let Some((ident, d)) = &new_dest {
            if self.baseline.record(ident, d) {
                if let Some(t) = self.tree_of(pid) {
                    let mut ctx = Self::ctx("network_connect", Some(pid), Some(t), Some(n), None);
                    ctx.process = proc_.as_ref();
                    for rule in rules
                        .builtin(Builtin::McpServerNewDestination)
                        .filter(|r| passes(r, &ctx))
                    {
                        let mut a = self.alert(
                            rule,
                            t,
                            pid,
                            format!(
                                "MCP server {} reached a new destination {d}",
                                display_name(&t.server)
                            ),
                            format!(
                                "first connection of {ident} to {d} (process {comm}, pid {pid}): {}",
                                n.result
                            ),
                            Some(n),
                            None,
                        );
                        a.identity = format!("{ident}->{d}");
                        pending.push(a);
                    }
                }
            }
        }
        if let Some(llm) = rules.list("llm_api_providers") {
            if domain.is_some_and(|d| llm.contains_domain(d)) {
                let t = self.tree_of(pid);
                let entry = t.and_then(|t| t.sanctioned).map(|i| &rules.sanctioned[i]);
                let policy = entry
                    .and_then(|e| e.egress.as_deref())
                    .unwrap_or(&rules.default_egress);
                if !matches!(
                    policy.judge(Some(remote.ip), Some(remote.port), domain),
                    Verdict::Allowed(_)
                ) {
                    let mut ctx = Self::ctx("network_connect", Some(pid), t, Some(n), None);
                    ctx.process = proc_.as_ref();
                    for rule in rules
                        .builtin(Builtin::LlmProviderEgress)
                        .filter(|r| passes(r, &ctx))
                    {
                        let mut a = self.alert_for_process(
                            rule,
                            pid,
                            format!("Data sent to LLM API provider {}", domain.unwrap_or("?")),
                            format!("process {comm} (pid {pid}) connected to {dest}, an LLM API provider the egress policy does not allow"),
                        );
                        a.connection = Some(n.clone());
                        a.identity = format!(
                            "{}->{}",
                            a.process.exe.as_deref().unwrap_or(&comm),
                            domain.unwrap_or("?")
                        );
                        pending.push(a);
                    }
                }
            }
        }
        out.extend(pending);
    }

    /// Custom rules (`on:` + `condition`) for one event.
    fn custom(
        &mut self,
        kind: &'static str,
        pid: Option<u32>,
        net: Option<&NetworkEvent>,
        dns: Option<&crate::state::net_view::DnsEvent>,
        out: &mut Vec<Alert>,
    ) {
        let rules = self.rules.clone();
        let Some(idx) = rules.by_kind.get(kind) else {
            return;
        };
        let proc_ = pid.and_then(|p| self.process(p));
        let t = pid.and_then(|p| self.tree_of(p));
        let ctx = Ctx {
            kind,
            process: proc_.as_ref(),
            server: t,
            net,
            dns,
        };
        for &i in idx {
            let rule = &rules.rules[i];
            if !passes(rule, &ctx) {
                continue;
            }
            let pid = pid.unwrap_or(0);
            let mut a = self.alert_for_process(
                rule,
                pid,
                if rule.description.is_empty() {
                    rule.id.clone()
                } else {
                    rule.description.clone()
                },
                format!("rule {} matched a {kind} event of pid {pid}", rule.id),
            );
            if let Some(t) = t {
                a.mcp_server = Some(Arc::new(t.server.clone()));
                a.identity = server_identity(&t.server);
            }
            if let Some(n) = net {
                a.connection = Some(n.clone());
            }
            out.push(a);
        }
    }

    fn process_view(&self, pid: u32) -> (ProcessView, Vec<AncestorView>) {
        let t = self.table.read().expect("table lock");
        let key = t.live_key(pid).or_else(|| t.by_pid(pid).last().map(|p| p.key));
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

    fn alert_for_process(&self, rule: &Rule, pid: u32, title: String, description: String) -> Alert {
        let (process, lineage) = self.process_view(pid);
        Alert {
            rule_id: rule.id.clone(),
            rule_name: rule.id.replace('-', "_"),
            title,
            description,
            severity: rule.severity,
            tags: rule.tags.clone(),
            time: SystemTime::now(),
            identity: process.exe.as_deref().unwrap_or(&process.comm).to_string(),
            process,
            lineage,
            mcp_server: None,
            connection: None,
            sanctioned_entry: None,
            throttle: rule.throttle,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn alert(
        &self,
        rule: &Rule,
        t: &Tracked,
        pid: u32,
        title: String,
        description: String,
        conn: Option<&NetworkEvent>,
        entry: Option<String>,
    ) -> Alert {
        let mut a = self.alert_for_process(rule, pid, title, description);
        if pid == t.server.pid {
            a.process.sha256 = t.server.sha256.clone();
        }
        a.identity = match conn.and_then(|c| c.remote) {
            Some(r) => format!(
                "{}->{}",
                server_identity(&t.server),
                conn.and_then(|c| c.domain.as_deref().map(str::to_string))
                    .unwrap_or_else(|| format!("{}:{}", r.ip, r.port))
            ),
            None => server_identity(&t.server),
        };
        a.mcp_server = Some(Arc::new(t.server.clone()));
        a.connection = conn.cloned();
        a.sanctioned_entry = entry.or_else(|| t.sanctioned.map(|i| self.rules.sanctioned[i].label.clone()));
        a
    }
}

fn passes(rule: &Rule, ctx: &Ctx<'_>) -> bool {
    rule.condition.as_ref().is_none_or(|c| c.eval(ctx)) && !rule.exceptions.iter().any(|c| c.eval(ctx))
}

fn display_name(s: &McpServer) -> String {
    s.name
        .clone()
        .or_else(|| s.package.as_ref().and_then(|p| p.name.clone()))
        .unwrap_or_else(|| format!("pid {}", s.pid))
}

/// Effective capabilities of a process (`CapEff` in /proc/PID/status).
fn effective_caps(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("CapEff:"))?;
    u64::from_str_radix(line.trim_start_matches("CapEff:").trim(), 16).ok()
}
