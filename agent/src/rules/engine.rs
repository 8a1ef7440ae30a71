//! Evaluation: every event (and every inventory change) against the compiled rules.
//! The engine dispatches each event to the built-in detections that apply to it
//! (`detect/`, one per file) and to the custom rules on its kind, narrows each by its
//! rule's condition and exceptions, deduplicates, and assembles the alerts. It keeps
//! what the rules need across events: the live MCP servers (with the sanctioned entry
//! each matches), which built-in findings already fired for a server, the connections
//! already judged, and the destination baseline.
//!
//! It is also the one judge of sanctioned status: every MCP server event is stamped
//! here, with the rule set that judges the event, before it reaches the sinks.

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    num::NonZeroUsize,
    sync::Arc,
    time::SystemTime,
};

use lru::LruCache;

use super::{
    baseline::Baseline,
    context::Ctx,
    detect::{self, server_identity, ConnectionSubject, Finding, ServerSubject, TrackedServer},
    host::Host,
    model::{CompiledRules, Rule},
    schema::Builtin,
    tool_baseline::ToolBaseline,
    volume_baseline::VolumeBaseline,
};
use crate::{
    alert::Alert,
    clock,
    events::Event,
    mcp::{
        audit::McpRequestEvent,
        inventory::{McpServer, ServerAction, ServerState},
    },
    sensor::AccessMode,
    state::{
        files::FileAccessEvent,
        net_view::{Direction, DnsEvent, NetAction, NetworkEvent},
        process_table::Process,
        view::ProcessAction,
    },
};

/// Connections judged recently (a non-blocking connect reports its attempt and its
/// outcome: judge it once).
const JUDGED_CONNECTIONS: usize = 16_384;

pub struct Engine {
    rules: Arc<CompiledRules>,
    host: Box<dyn Host>,
    /// Live servers by entity id (`pid:start_ns`).
    servers: HashMap<String, TrackedServer>,
    /// Built-in findings about one server instance fire once.
    fired: HashSet<(Builtin, String)>,
    judged: LruCache<String, ()>,
    /// Non-loopback listeners by pid (`network_listen`): an HTTP server's inventory
    /// entry shows the address its client reached, not the one it is bound to.
    exposed_listeners: LruCache<u32, SocketAddr>,
    baseline: Baseline,
    tool_baseline: ToolBaseline,
    /// Sensitive reads waiting for an egress (`mcp-exfiltration-chain`).
    chains: detect::exfiltration::Chains,
    /// Bytes per server identity, destination and window (`mcp-egress-volume-anomaly`).
    volume: VolumeBaseline,
    /// Bytes each open connection had sent at its last report.
    sent_so_far: LruCache<String, u64>,
    /// Connections already reported over `connection_max_bytes`.
    oversized: LruCache<String, ()>,
}

impl Engine {
    pub fn new(
        rules: Arc<CompiledRules>,
        host: Box<dyn Host>,
        state_dir: Option<std::path::PathBuf>,
    ) -> Self {
        Self {
            rules,
            host,
            servers: HashMap::new(),
            fired: HashSet::new(),
            judged: LruCache::new(NonZeroUsize::new(JUDGED_CONNECTIONS).expect("non-zero")),
            exposed_listeners: LruCache::new(NonZeroUsize::new(JUDGED_CONNECTIONS).expect("non-zero")),
            baseline: Baseline::open(state_dir.clone()),
            volume: VolumeBaseline::open(state_dir.clone()),
            tool_baseline: ToolBaseline::open(state_dir),
            chains: detect::exfiltration::Chains::default(),
            sent_so_far: LruCache::new(NonZeroUsize::new(JUDGED_CONNECTIONS).expect("non-zero")),
            oversized: LruCache::new(NonZeroUsize::new(JUDGED_CONNECTIONS).expect("non-zero")),
        }
    }

    /// Swaps the rule set between two events; servers are re-judged against the new
    /// sanctioned list (findings already raised are not raised again).
    pub fn set_rules(&mut self, rules: Arc<CompiledRules>) {
        self.rules = rules;
        for t in self.servers.values_mut() {
            t.sanctioned = self.rules.judge(&mut t.server);
        }
    }

    /// Judges one event. An MCP server event leaves with its sanctioned status set.
    pub fn evaluate(&mut self, ev: &mut Event) -> Vec<Alert> {
        let mut out = Vec::new();
        match ev {
            Event::McpServer(e) => {
                let position = self.rules.judge(&mut e.server);
                self.on_server(e.action, &e.server, position, e.tools_listing.as_ref(), &mut out);
            }
            Event::Network(n) => self.on_network(n, &mut out),
            Event::Process(p) => {
                let kind = match p.action {
                    ProcessAction::Exec => "process_exec",
                    ProcessAction::Exit => "process_exit",
                    ProcessAction::Fork => return out,
                };
                self.custom(kind, Some(p.process.pid), None, None, None, &mut out);
            }
            Event::McpRequest(e) => self.on_request(e, &mut out),
            Event::FileAccess(f) => self.on_file(f, &mut out),
            Event::Dns(d) if d.kind == "dns_response" => {
                let pid = d.process.as_ref().map(|p| p.pid);
                self.custom("dns_response", pid, None, Some(d), None, &mut out);
            }
            _ => {}
        }
        out
    }

    /// Time-based findings (lifetime), checked on a timer.
    pub fn tick(&mut self) -> Vec<Alert> {
        let mut out = Vec::new();
        let rules = self.rules.clone();
        let now = clock::boottime_ns();
        // Chains whose connection sent no byte report within the window.
        out.extend(self.chains.due(now, rules.exfiltration_window.as_nanos() as u64));
        for rule in rules.builtin(Builtin::McpServerLongLived) {
            for (id, t) in &self.servers {
                let key = (Builtin::McpServerLongLived, id.clone());
                if self.fired.contains(&key) {
                    continue;
                }
                let Some(f) = detect::long_lived::detect(rule, t, now) else {
                    continue;
                };
                let process = self.host.process(t.server.pid);
                if passes(rule, &ctx("mcp_server", process.as_ref(), Some(t), None)) {
                    out.push(self.assemble(rule, t.server.pid, f, Some(t), None));
                    self.fired.insert(key);
                }
            }
        }
        out
    }

    fn on_server(
        &mut self,
        action: ServerAction,
        s: &McpServer,
        sanctioned: Option<usize>,
        listing: Option<&crate::alert::RequestRef>,
        out: &mut Vec<Alert>,
    ) {
        match action {
            // A periodic re-announcement of the inventory, not a change to judge.
            ServerAction::Snapshot => return,
            ServerAction::Exited | ServerAction::Dismissed => {
                self.servers.remove(&s.entity_id);
                self.chains.forget(&s.entity_id);
                let tools_prefix = format!("{}#", s.entity_id);
                self.fired
                    .retain(|(_, id)| id != &s.entity_id && !id.starts_with(&tools_prefix));
                return;
            }
            ServerAction::Suspected | ServerAction::Confirmed | ServerAction::Updated => {}
        }
        let start_ns = s
            .entity_id
            .split_once(':')
            .and_then(|(_, n)| n.parse().ok())
            .unwrap_or_else(clock::boottime_ns);
        self.servers.insert(
            s.entity_id.clone(),
            TrackedServer {
                sanctioned,
                server: s.clone(),
                start_ns,
            },
        );
        let rules = self.rules.clone();
        let t = &self.servers[&s.entity_id];
        let confirmed = s.state == ServerState::Confirmed;
        let wants_caps =
            confirmed && s.uid != 0 && rules.builtin(Builtin::McpServerPrivileged).next().is_some();
        let subject = ServerSubject {
            tracked: t,
            rules: &rules,
            caps: if wants_caps {
                self.host.effective_caps(s.pid)
            } else {
                None
            },
            exposed_listener: self.exposed_listeners.peek(&s.pid).copied(),
        };
        let mut found: Vec<(Builtin, &Rule, Finding)> = Vec::new();
        for b in [
            Builtin::McpServerAttestationFailed,
            Builtin::ShadowMcpServer,
            Builtin::McpServerPrivileged,
            Builtin::McpHttpListenerExposed,
        ] {
            for rule in rules.builtin(b) {
                let f = match b {
                    Builtin::McpServerAttestationFailed => detect::attestation::detect(&subject),
                    Builtin::ShadowMcpServer => detect::shadow::detect(rule, &subject),
                    Builtin::McpServerPrivileged => detect::privileged::detect(&subject),
                    _ => detect::http_exposed::detect(&subject),
                };
                if let Some(f) = f {
                    found.push((b, rule, f));
                }
            }
        }
        // The tool surface: against the identity's baseline (updated at once, so one
        // change is one finding) and the entry's pin.
        if let (Some(surface), true) = (
            &s.tools,
            rules.builtin(Builtin::McpToolDefinitionsChanged).next().is_some(),
        ) {
            let before = self
                .tool_baseline
                .replace(&s.server_uid, detect::tool_definitions::digests(surface));
            if let Some(mut f) = detect::tool_definitions::detect(&subject, surface, before.as_ref()) {
                // The audit record of the listing that showed the change.
                f.request = listing.cloned();
                for rule in rules.builtin(Builtin::McpToolDefinitionsChanged) {
                    found.push((Builtin::McpToolDefinitionsChanged, rule, f.clone()));
                }
            }
        }
        let process = self.host.process(s.pid);
        let ctx = ctx("mcp_server", process.as_ref(), Some(t), None);
        for (b, rule, f) in found {
            // A server may change its tools more than once: each set once.
            let key = match (&f.identity, b) {
                (Some(id), Builtin::McpToolDefinitionsChanged) => (b, format!("{}#{id}", s.entity_id)),
                _ => (b, s.entity_id.clone()),
            };
            if self.fired.contains(&key) || !passes(rule, &ctx) {
                continue;
            }
            out.push(self.assemble(rule, s.pid, f, Some(t), None));
            self.fired.insert(key);
        }
        self.custom("mcp_server", Some(s.pid), None, None, None, out);
    }

    fn on_network(&mut self, n: &NetworkEvent, out: &mut Vec<Alert>) {
        let Some(pref) = &n.process else { return };
        let pid = pref.pid;
        match n.action {
            NetAction::Socket => {
                if let Some(id) = self.tree_of(pid) {
                    let rules = self.rules.clone();
                    let t = &self.servers[&id];
                    let process = self.host.process(pid);
                    let ctx = ctx(n.kind, process.as_ref(), Some(t), Some(n));
                    for rule in rules.builtin(Builtin::McpRawNetwork).filter(|r| passes(r, &ctx)) {
                        if let Some(f) = detect::raw_network::detect(n, pid, t) {
                            out.push(self.assemble(rule, pid, f, Some(t), Some(n)));
                        }
                    }
                }
                self.custom(n.kind, Some(pid), Some(n), None, None, out);
            }
            NetAction::Connect | NetAction::Send => {
                if n.action == NetAction::Connect {
                    // The attempt and the outcome of one connect are judged once.
                    if let Some(id) = &n.connection_id {
                        if self.judged.put(id.clone(), ()).is_some() {
                            return;
                        }
                    }
                }
                self.on_egress(n, pid, out);
                self.custom(n.kind, Some(pid), Some(n), None, None, out);
            }
            NetAction::Listen => {
                if let Some(l) = n.local.filter(|l| !l.ip.is_loopback()) {
                    self.exposed_listeners.put(pid, SocketAddr::new(l.ip, l.port));
                    // A server confirmed before it listened: judge it again.
                    if let Some(t) = self.servers.values().find(|t| t.server.pid == pid) {
                        let (s, sanctioned) = (t.server.clone(), t.sanctioned);
                        self.on_server(ServerAction::Updated, &s, sanctioned, None, out);
                    }
                }
                self.custom(n.kind, Some(pid), Some(n), None, None, out)
            }
            NetAction::Accept => self.custom(n.kind, Some(pid), Some(n), None, None, out),
            // A chain held for its connection's bytes goes out with them.
            NetAction::Close | NetAction::Progress => {
                self.on_bytes(n, pid, out);
                if let Some(a) = n
                    .connection_id
                    .as_deref()
                    .and_then(|id| self.chains.bytes(id, n.bytes_sent))
                {
                    out.push(a);
                }
            }
            _ => {}
        }
    }

    /// Connects and sends: metadata access, egress policy, new destinations of
    /// sanctioned servers, LLM providers.
    fn on_egress(&mut self, n: &NetworkEvent, pid: u32, out: &mut Vec<Alert>) {
        let Some(remote) = n.remote else { return };
        let rules = self.rules.clone();
        // Most connections are outside any MCP server's tree and to no LLM provider:
        // leave them before touching the process table.
        let llm = detect::llm_provider::is_provider(n.domain.as_deref(), &rules);
        let tree = self.tree_of(pid);
        if !llm && tree.is_none() {
            return;
        }
        let process = self.host.process(pid);
        let comm = n.process.as_ref().map_or("?", |p| p.comm.as_str());
        let t = tree.as_ref().map(|id| &self.servers[id]);
        let subject = ConnectionSubject {
            net: n,
            remote,
            pid,
            comm,
            tree: t,
            rules: &rules,
        };
        let ctx = ctx(n.kind, process.as_ref(), t, Some(n));
        let mut pending = Vec::new();
        for (b, f) in [
            (
                Builtin::McpMetadataAccess,
                detect::metadata::detect as fn(&ConnectionSubject) -> Option<Finding>,
            ),
            (Builtin::McpUnsanctionedEgress, detect::egress::detect),
        ] {
            let Some(f) = f(&subject) else { continue };
            for rule in rules.builtin(b).filter(|r| passes(r, &ctx)) {
                pending.push(self.assemble(rule, pid, f.clone(), t, Some(n)));
            }
        }
        let wants_baseline = rules
            .builtin(Builtin::McpServerNewDestination)
            .any(|r| passes(r, &ctx));
        if let Some((ident, dest)) =
            detect::new_destination::baseline_key(&subject).filter(|_| wants_baseline)
        {
            if self.baseline.record(&ident, &dest) {
                if let Some(f) = detect::new_destination::detect(&subject, &ident, &dest) {
                    for rule in rules
                        .builtin(Builtin::McpServerNewDestination)
                        .filter(|r| passes(r, &ctx))
                    {
                        pending.push(self.assemble(rule, pid, f.clone(), t, Some(n)));
                    }
                }
            }
        }
        // The second move of an exfiltration: does this egress complete a chain?
        let chain_rules: Vec<&Rule> = rules
            .builtin(Builtin::McpExfiltrationChain)
            .filter(|r| passes(r, &ctx))
            .collect();
        if let (Some(id), false) = (&tree, chain_rules.is_empty()) {
            let now = clock::boottime_ns();
            let window = rules.exfiltration_window;
            let done = self.chains.egress(
                id,
                &subject,
                detect::egress::outside_policy(&subject),
                now,
                window.as_nanos() as u64,
            );
            if let Some(done) = done {
                let (f, chain) = detect::exfiltration::detect(&subject, &done, now, window.as_secs());
                // A TCP connection reports its bytes when it closes: the finding waits
                // for them (at most the window).
                let waits = chain.bytes_sent.is_none() && n.action == NetAction::Connect;
                for rule in chain_rules {
                    let mut a = self.assemble(rule, pid, f.clone(), t, Some(n));
                    a.chain = Some(chain.clone());
                    match n.connection_id.clone().filter(|_| waits) {
                        Some(cid) => pending.extend(self.chains.hold(cid, a, now)),
                        None => pending.push(a),
                    }
                }
            }
        }
        if llm {
            if let Some(f) =
                detect::llm_provider::detect(&subject, process.as_ref().and_then(|p| p.exe.as_deref()))
            {
                for rule in rules
                    .builtin(Builtin::LlmProviderEgress)
                    .filter(|r| passes(r, &ctx))
                {
                    // About the process that sent the data, wherever it runs.
                    pending.push(self.assemble(rule, pid, f.clone(), None, Some(n)));
                }
            }
        }
        out.extend(pending);
    }

    /// A connection's byte report (close or progress): the egress volume of its
    /// server's tree against the baseline, and the connection against the bound.
    fn on_bytes(&mut self, n: &NetworkEvent, pid: u32, out: &mut Vec<Alert>) {
        let (Some(sent), Some(cid)) = (n.bytes_sent, n.connection_id.as_deref()) else {
            return;
        };
        let rules = self.rules.clone();
        if rules.builtin(Builtin::McpEgressVolumeAnomaly).next().is_none()
            || n.direction == Some(Direction::Inbound)
            || n.remote.is_none_or(|r| r.ip.is_loopback())
        {
            return;
        }
        let before = if n.action == NetAction::Close {
            self.sent_so_far.pop(cid)
        } else {
            self.sent_so_far.put(cid.to_string(), sent)
        }
        .unwrap_or(0);
        let Some(id) = self.tree_of(pid) else { return };
        let Some(dest) = detect::egress_volume::destination(n) else {
            return;
        };
        let t = &self.servers[&id];
        let p = rules.egress_volume;
        let process = self.host.process(pid);
        let ctx = ctx(n.kind, process.as_ref(), Some(t), Some(n));
        let mut found = Vec::new();
        let anomaly = self.volume.add(
            &server_identity(&t.server),
            &dest,
            sent.saturating_sub(before),
            clock::boottime_ns(),
            &p,
        );
        if let Some(a) = anomaly {
            found.push(detect::egress_volume::window(
                t,
                &dest,
                &a,
                p.window_ns / 1_000_000_000,
            ));
        }
        if sent > p.connection_max_bytes && self.oversized.put(cid.to_string(), ()).is_none() {
            found.push(detect::egress_volume::connection(
                t,
                &dest,
                sent,
                p.connection_max_bytes,
            ));
        }
        for f in found {
            for rule in rules
                .builtin(Builtin::McpEgressVolumeAnomaly)
                .filter(|r| passes(r, &ctx))
            {
                out.push(self.assemble(rule, pid, f.clone(), Some(t), Some(n)));
            }
        }
    }

    /// A file operation in an MCP server's tree: sensitive paths, chains armed, and
    /// the custom rules on `file_access`.
    fn on_file(&mut self, e: &FileAccessEvent, out: &mut Vec<Alert>) {
        let pid = e.pid;
        let tree = self.tree_of(pid).or_else(|| self.tree_of(e.tree_root));
        if let Some(id) = tree.as_deref() {
            let rules = self.rules.clone();
            let t = &self.servers[id];
            let process = self.host.process(pid);
            let comm = e.process.as_ref().map_or("?", |p| p.comm.as_str());
            let subject = detect::sensitive_file::FileSubject {
                file: e,
                pid,
                comm,
                tree: t,
                rules: &rules,
            };
            if let Some(hit) = subject.sensitive() {
                let mut ctx = ctx("file_access", process.as_ref(), Some(t), None);
                ctx.file = Some(e);
                let f = detect::sensitive_file::detect(&subject, &hit);
                let mut reported = None;
                let mut found = Vec::new();
                for rule in rules
                    .builtin(Builtin::McpSensitiveFileAccess)
                    .filter(|r| passes(r, &ctx))
                {
                    let mut a = self.assemble(rule, pid, f.clone(), Some(t), None);
                    a.file = Some(e.clone());
                    reported.get_or_insert(crate::alert::FindingRef {
                        rule_id: rule.id.clone(),
                        identity: a.identity.clone(),
                    });
                    found.push(a);
                }
                // Something was read: the first move of an exfiltration.
                let read =
                    e.succeeded() && matches!(e.access, Some(AccessMode::Read | AccessMode::ReadWrite));
                if read && rules.builtin(Builtin::McpExfiltrationChain).next().is_some() {
                    let armed = crate::alert::ChainRead {
                        time: e.time.clone(),
                        path: Arc::from(hit.path),
                        pattern: hit.pattern.to_string(),
                        pid,
                        comm: comm.to_string(),
                        finding: reported,
                    };
                    self.chains.arm(id, e.ts_ns, armed);
                }
                out.extend(found);
            }
        }
        self.custom_file(e, tree.as_deref(), out);
    }

    /// Custom rules on `file_access`; `tree`: the server whose tree it is in, as
    /// `on_file` found it.
    fn custom_file(&self, e: &FileAccessEvent, tree: Option<&str>, out: &mut Vec<Alert>) {
        let rules = self.rules.clone();
        let Some(idx) = rules.by_kind.get("file_access") else {
            return;
        };
        let process = self.host.process(e.pid);
        let t = tree.map(|id| &self.servers[id]);
        let mut c = ctx("file_access", process.as_ref(), t, None);
        c.file = Some(e);
        let what = format!("a file_access event of pid {} on {}", e.pid, e.path);
        for mut a in self.custom_matches(&rules, idx, &c, e.pid, t, &what) {
            if let Some(t) = t {
                a.identity = format!("{}->file:{}", server_identity(&t.server), e.path);
            }
            a.file = Some(e.clone());
            out.push(a);
        }
    }

    /// Custom rules (`on:` + `condition`) for one event.
    fn custom(
        &mut self,
        kind: &'static str,
        pid: Option<u32>,
        net: Option<&NetworkEvent>,
        dns: Option<&DnsEvent>,
        request: Option<&McpRequestEvent>,
        out: &mut Vec<Alert>,
    ) {
        let rules = self.rules.clone();
        let Some(idx) = rules.by_kind.get(kind) else {
            return;
        };
        let process = pid.and_then(|p| self.host.process(p));
        let t = pid.and_then(|p| self.tree_of(p)).map(|id| &self.servers[&id]);
        let mut ctx = ctx(kind, process.as_ref(), t, net);
        ctx.dns = dns;
        ctx.request = request;
        let pid = pid.unwrap_or(0);
        let what = format!("a {kind} event of pid {pid}");
        for mut a in self.custom_matches(&rules, idx, &ctx, pid, t, &what) {
            a.connection = net.cloned();
            a.mcp_request = request.map(McpRequestEvent::reference);
            out.push(a);
        }
    }

    /// The alerts of the custom rules `idx` whose condition holds on `ctx`: each about
    /// process `pid` and, in the tree of `t`, about its server (and identified by it).
    fn custom_matches(
        &self,
        rules: &CompiledRules,
        idx: &[usize],
        ctx: &Ctx<'_>,
        pid: u32,
        t: Option<&TrackedServer>,
        what: &str,
    ) -> Vec<Alert> {
        idx.iter()
            .map(|&i| &rules.rules[i])
            .filter(|rule| passes(rule, ctx))
            .map(|rule| {
                let title = if rule.description.is_empty() {
                    rule.id.clone()
                } else {
                    rule.description.clone()
                };
                let mut a = self.process_alert(
                    rule,
                    pid,
                    Finding::new(title, format!("rule {} matched {what}", rule.id)),
                );
                if let Some(t) = t {
                    a.mcp_server = Some(Arc::new(t.server.clone()));
                    a.identity = server_identity(&t.server);
                }
                a
            })
            .collect()
    }

    /// One audited request: its values where the rules ask for them, its listing
    /// scanned for poisoning, its call judged against the tool policy, and the
    /// custom rules on `mcp_request`.
    fn on_request(&mut self, e: &mut McpRequestEvent, out: &mut Vec<Alert>) {
        let rules = self.rules.clone();
        let Some(id) = self
            .servers
            .iter()
            .find(|(_, t)| t.server.id == e.server.id)
            .map(|(k, _)| k.clone())
        else {
            self.custom("mcp_request", Some(e.request.pid), None, None, Some(e), out);
            return;
        };
        let t = &self.servers[&id];
        let entry = t.entry(&rules);
        let audit = entry.and_then(|e| e.audit).unwrap_or(rules.audit);
        if audit.full_arguments {
            if let (Some(summary), Some(values)) =
                (e.request.arguments.as_mut(), e.request.argument_values.as_deref())
            {
                summary.values = Some(detect::tool_call_denied::capped(
                    &crate::redact::json(values),
                    audit.max_value_bytes,
                ));
            }
        }
        let e: &McpRequestEvent = e;
        let reference = e.reference();
        let name = detect::display_name(&t.server);
        let mut found: Vec<(Builtin, &Rule, Finding)> = Vec::new();
        if !e.request.metadata.is_empty() && rules.builtin(Builtin::McpToolPoisoning).next().is_some() {
            let own: HashSet<&str> = e
                .request
                .tool_surface
                .iter()
                .chain(t.server.tools.iter())
                .flat_map(|s| s.tools.iter().map(|d| d.name.as_str()))
                .collect();
            let host = t.server.host.as_ref().map(|h| h.pid);
            let siblings: Vec<String> = self
                .servers
                .values()
                .filter(|o| {
                    o.server.id != t.server.id
                        && host.is_some()
                        && o.server.host.as_ref().map(|h| h.pid) == host
                })
                .flat_map(|o| {
                    o.server
                        .tools
                        .iter()
                        .flat_map(|s| s.tools.iter().map(|d| d.name.clone()))
                })
                .filter(|n| !own.contains(n.as_str()))
                .collect();
            for hit in detect::tool_poisoning::scan(&rules.poison_families, &e.request.metadata, &siblings) {
                let mut f = Finding::new(
                    format!(
                        "MCP server {name} has poisoned {} metadata ({})",
                        hit.kind, hit.family.id
                    ),
                    format!(
                        "{} {:?}, field {}: {:?}{} (family {}{})",
                        hit.kind,
                        hit.item,
                        hit.field,
                        hit.excerpt,
                        hit.hidden
                            .as_ref()
                            .map(|h| format!("; hidden text: {h:?}"))
                            .unwrap_or_default(),
                        hit.family.id,
                        if hit.family.description.is_empty() {
                            String::new()
                        } else {
                            format!(": {}", hit.family.description)
                        },
                    ),
                );
                f.identity = Some(format!(
                    "{}#poison:{}:{}:{}",
                    t.server.server_uid, hit.family.id, hit.kind, hit.item
                ));
                f.severity = Some(hit.family.severity);
                f.request = Some(reference.clone());
                for rule in rules.builtin(Builtin::McpToolPoisoning) {
                    found.push((Builtin::McpToolPoisoning, rule, f.clone()));
                }
            }
        }
        if let Some(f) = detect::tool_call_denied::detect(e, t, &rules, &name) {
            for rule in rules.builtin(Builtin::McpToolCallDenied) {
                let mut f = f.clone();
                f.request = Some(reference.clone());
                found.push((Builtin::McpToolCallDenied, rule, f));
            }
        }
        let process = self.host.process(t.server.pid);
        let mut c = ctx("mcp_request", process.as_ref(), Some(t), None);
        c.request = Some(e);
        for (b, rule, f) in found {
            // A listing is scanned each time it is asked for: each hit once per
            // server instance. Denied calls are each a finding (the throttle folds
            // repeats).
            let key = (
                b,
                format!("{}#{}", t.server.entity_id, f.identity.as_deref().unwrap_or("")),
            );
            if b == Builtin::McpToolPoisoning && self.fired.contains(&key) {
                continue;
            }
            if !passes(rule, &c) {
                continue;
            }
            out.push(self.assemble(rule, t.server.pid, f, Some(t), None));
            if b == Builtin::McpToolPoisoning {
                self.fired.insert(key);
            }
        }
        let pid = t.server.pid;
        self.custom("mcp_request", Some(pid), None, None, Some(e), out);
    }

    /// The entity id of the MCP server whose process tree `pid` belongs to (itself or
    /// an ancestor).
    fn tree_of(&self, pid: u32) -> Option<String> {
        if self.servers.is_empty() {
            return None;
        }
        self.host
            .tree(pid)
            .into_iter()
            .map(|k| k.to_string())
            .find(|k| self.servers.contains_key(k))
    }

    /// An alert about a process: its view and lineage, identified by its executable.
    fn process_alert(&self, rule: &Rule, pid: u32, f: Finding) -> Alert {
        let (process, lineage) = self.host.view(pid);
        Alert {
            rule_id: rule.id.clone(),
            rule_name: rule.id.replace('-', "_"),
            title: f.title,
            description: f.description,
            severity: f.severity.unwrap_or(rule.severity),
            tags: rule.tags.clone(),
            time: SystemTime::now(),
            identity: f
                .identity
                .unwrap_or_else(|| process.exe.as_deref().unwrap_or(&process.comm).to_string()),
            process,
            lineage,
            mcp_server: None,
            connection: None,
            sanctioned_entry: f.entry,
            mcp_request: f.request,
            file: None,
            chain: None,
            throttle: rule.throttle,
        }
    }

    /// A built-in finding as an alert: about the server when there is one (identified
    /// by the server, and the destination for a connection), else about the process.
    fn assemble(
        &self,
        rule: &Rule,
        pid: u32,
        f: Finding,
        server: Option<&TrackedServer>,
        conn: Option<&NetworkEvent>,
    ) -> Alert {
        let own_identity = f.identity.is_some();
        let mut a = self.process_alert(rule, pid, f);
        a.connection = conn.cloned();
        let Some(t) = server else { return a };
        if pid == t.server.pid {
            a.process.sha256 = t.server.sha256.clone();
        }
        if !own_identity {
            a.identity = match conn.and_then(|c| c.remote) {
                Some(r) => format!(
                    "{}->{}",
                    server_identity(&t.server),
                    conn.and_then(|c| c.domain.as_deref().map(str::to_string))
                        .unwrap_or_else(|| format!("{}:{}", r.ip, r.port))
                ),
                None => server_identity(&t.server),
            };
        }
        a.mcp_server = Some(Arc::new(t.server.clone()));
        if a.sanctioned_entry.is_none() {
            a.sanctioned_entry = t.entry(&self.rules).map(|e| e.label.clone());
        }
        a
    }
}

fn ctx<'a>(
    kind: &'static str,
    process: Option<&'a Process>,
    server: Option<&'a TrackedServer>,
    net: Option<&'a NetworkEvent>,
) -> Ctx<'a> {
    Ctx {
        kind,
        process,
        server,
        net,
        dns: None,
        request: None,
        file: None,
    }
}

fn passes(rule: &Rule, ctx: &Ctx<'_>) -> bool {
    rule.condition.as_ref().is_none_or(|c| c.eval(ctx)) && !rule.exceptions.iter().any(|c| c.eval(ctx))
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, RwLock};

    use super::*;
    use crate::{
        mcp::inventory::{Announce, McpServerEvent},
        rules::{load::load_bytes, model::tests::server},
        state::{
            process_table::{Origin, ProcKey, ProcessTable},
            SharedTable,
        },
    };

    /// A host whose process table the test fills and whose capabilities it sets.
    struct TestHost {
        table: SharedTable,
    }

    impl Host for TestHost {
        fn table(&self) -> &SharedTable {
            &self.table
        }
        fn effective_caps(&self, _pid: u32) -> Option<u64> {
            Some(0)
        }
    }

    /// An engine over `rules` with the server's process (pid 42, user dev) in its table.
    fn engine(rules: &str) -> Engine {
        let mut table = ProcessTable::new(1024, 1_000_000_000);
        let mut p = Process::bare(ProcKey { pid: 42, start_ns: 1 }, Origin::Kernel);
        p.uid = 1000;
        p.user = Some(Arc::from("dev"));
        p.comm = "python3".into();
        table.insert_seeded(p);
        let rules = Arc::new(load_bytes(rules.as_bytes()).unwrap_or_else(|e| panic!("{e:?}")));
        Engine::new(
            rules,
            Box::new(TestHost {
                table: Arc::new(RwLock::new(table)),
            }),
            None,
        )
    }

    fn confirmed(s: McpServer) -> Event {
        Event::McpServer(McpServerEvent {
            kind: "mcp_server",
            time: String::new(),
            action: ServerAction::Confirmed,
            detection_latency_ms: None,
            previous_state: None,
            snapshot: None,
            server: s,
            tools_listing: None,
            announce: Announce::Local,
        })
    }

    fn ids(alerts: &[Alert]) -> Vec<&str> {
        alerts.iter().map(|a| a.rule_id.as_str()).collect()
    }

    const SHADOW: &str = "rules:\n  - id: shadow\n    severity: high\n    detect: shadow-mcp-server\n";

    #[test]
    fn a_confirmed_unsanctioned_server_is_a_shadow_server() {
        let mut e = engine(SHADOW);
        let alerts = e.evaluate(&mut confirmed(server()));
        assert_eq!(ids(&alerts), ["shadow"]);
        let a = &alerts[0];
        assert_eq!(a.process.pid, 42);
        assert_eq!(a.mcp_server.as_ref().map(|s| s.pid), Some(42));
    }

    /// Defect 2: the context of a built-in rule fired by an MCP server event had no
    /// process, so an exception on `process.user` never applied.
    #[test]
    fn an_exception_on_the_process_applies_to_built_in_rules_on_server_events() {
        let rules = format!("{SHADOW}    exceptions:\n      - field: process.user\n        equals: dev\n");
        let mut e = engine(&rules);
        let alerts = e.evaluate(&mut confirmed(server()));
        assert!(
            alerts.is_empty(),
            "exception on process.user ignored: {:?}",
            ids(&alerts)
        );
        // The same exception on another user does not silence it.
        let mut e = engine(&format!(
            "{SHADOW}    exceptions:\n      - field: process.user\n        equals: root\n"
        ));
        assert_eq!(ids(&e.evaluate(&mut confirmed(server()))), ["shadow"]);
    }

    /// Defect 4: the rules stage is the one judge of sanctioned status; an MCP server
    /// event leaves the engine stamped with the verdict of the rule set that judged it,
    /// whatever the MCP stage (or anyone upstream) claimed.
    #[test]
    fn the_engine_stamps_sanctioned_status_with_its_own_rule_set() {
        let sanctioning =
            format!("sanctioned_servers:\n  - id: time\n    package: mcp-server-time\n{SHADOW}");
        let mut e = engine(&sanctioning);
        let mut claimed_shadow = server();
        claimed_shadow.sanctioned = false;
        let mut ev = confirmed(claimed_shadow);
        assert!(e.evaluate(&mut ev).is_empty());
        let Event::McpServer(judged) = &ev else {
            unreachable!()
        };
        assert!(judged.server.sanctioned);
        assert_eq!(judged.server.sanctioned_entry.as_deref(), Some("time"));

        let mut e = engine(SHADOW);
        let mut claimed_sanctioned = server();
        claimed_sanctioned.sanctioned = true;
        claimed_sanctioned.sanctioned_entry = Some("time".into());
        let mut ev = confirmed(claimed_sanctioned);
        assert_eq!(ids(&e.evaluate(&mut ev)), ["shadow"]);
        let Event::McpServer(judged) = &ev else {
            unreachable!()
        };
        assert!(!judged.server.sanctioned);
        assert_eq!(judged.server.sanctioned_entry, None);
    }

    /// A reload re-judges tracked servers: no longer sanctioned, a later update of the
    /// same instance is a shadow server.
    #[test]
    fn a_reload_re_judges_the_servers_the_engine_tracks() {
        let sanctioning =
            format!("sanctioned_servers:\n  - id: time\n    package: mcp-server-time\n{SHADOW}");
        let mut e = engine(&sanctioning);
        assert!(e.evaluate(&mut confirmed(server())).is_empty());
        e.set_rules(Arc::new(load_bytes(SHADOW.as_bytes()).expect("rules")));
        assert_eq!(e.servers.values().filter(|t| t.sanctioned.is_none()).count(), 1);
        assert_eq!(ids(&e.evaluate(&mut confirmed(server()))), ["shadow"]);
    }

    const FILE_RULES: &str = "sensitive_files: [\"~/.aws/credentials\"]\nrules:\n  - id: sens\n    severity: high\n    detect: mcp-sensitive-file-access\n  - id: chain\n    severity: critical\n    detect: mcp-exfiltration-chain\n";

    fn read_event() -> Event {
        let mut f = crate::state::files::fixtures::read();
        f.ts_ns = clock::boottime_ns();
        Event::FileAccess(f)
    }

    fn connect(ip: &str, id: &str) -> Event {
        use crate::state::net_view::{Endpoint, ProcessRef, Protocol};
        let mut n = NetworkEvent::new(NetAction::Connect, Protocol::Tcp, "t".into());
        n.direction = Some(Direction::Outbound);
        n.remote = Some(Endpoint {
            ip: ip.parse().unwrap(),
            port: 443,
        });
        n.result = Arc::from("ok");
        n.bytes_sent = Some(100);
        n.connection_id = Some(id.into());
        n.process = Some(ProcessRef {
            pid: 42,
            entity_id: "42:1".into(),
            exe: None,
            comm: "python3".into(),
            argv: Arc::from(Vec::new()),
        });
        Event::Network(n)
    }

    /// The two moves in the engine: a sensitive read is its own finding and arms the
    /// server; its next egress outside policy is one chain naming the read's finding,
    /// not repeated for the same destination.
    #[test]
    fn a_sensitive_read_then_egress_is_one_chain_naming_the_reads_finding() {
        let mut e = engine(FILE_RULES);
        e.evaluate(&mut confirmed(server()));
        let read = e.evaluate(&mut read_event());
        assert_eq!(ids(&read), ["sens"]);
        assert_eq!(
            read[0].file.as_ref().map(|f| &*f.path),
            Some("/home/dev/.aws/credentials")
        );
        let chain = e.evaluate(&mut connect("203.0.113.7", "c1"));
        assert_eq!(ids(&chain), ["chain"]);
        let c = chain[0].chain.as_ref().expect("the chain's evidence");
        assert_eq!(c.reads.len(), 1);
        assert_eq!(&*c.reads[0].path, "/home/dev/.aws/credentials");
        let joined = c.reads[0].finding.as_ref().expect("the read's finding");
        assert_eq!(
            (joined.rule_id.as_str(), joined.identity.as_str()),
            ("sens", read[0].identity.as_str())
        );
        assert_eq!(c.bytes_sent, Some(100));
        assert!(
            c.egress_reason.contains("outside the policy"),
            "{}",
            c.egress_reason
        );
        // Same server, destination and read: not again.
        assert!(e.evaluate(&mut connect("203.0.113.7", "c2")).is_empty());
    }

    #[test]
    fn egress_without_a_read_or_a_read_allowed_to_the_entry_is_no_chain() {
        let mut e = engine(FILE_RULES);
        e.evaluate(&mut confirmed(server()));
        assert!(e.evaluate(&mut connect("203.0.113.7", "c1")).is_empty());
        let allowing = FILE_RULES.replace(
            "rules:\n",
            "sanctioned_servers:\n  - id: time\n    package: mcp-server-time\n    files:\n      allow: [\"/home/dev/.aws/**\"]\nrules:\n",
        );
        let mut e = engine(&allowing);
        e.evaluate(&mut confirmed(server()));
        assert!(
            e.evaluate(&mut read_event()).is_empty(),
            "the entry allows the path"
        );
        assert!(
            e.evaluate(&mut connect("203.0.113.7", "c1")).is_empty(),
            "nothing armed"
        );
    }
}
