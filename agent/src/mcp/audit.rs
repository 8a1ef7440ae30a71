//! The session audit: every request on a confirmed MCP server's session, paired with
//! its answer, as one record: method, tool (or resource, prompt), outcome, sizes,
//! latency. Both directions: client → server (`tools/call`, …) and server → client
//! (`sampling/createMessage`, `elicitation/create`, `roots/list`).
//!
//! Privacy by default: argument values are never kept, only their keys with types
//! and lengths and a SHA-256 of the canonical arguments (keys sorted, no spaces), so
//! two identical calls are recognisable and no value leaves the host.
//!
//! Requests are paired by session and JSON-RPC id: two sessions that both use id 1
//! never mix. A request unanswered for `TIMEOUT` is recorded as `timeout`; past
//! `MAX_PENDING` open requests the oldest is recorded as `evicted`, never dropped
//! silently.

use std::collections::{HashMap, VecDeque};

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use super::{
    jsonrpc::{Message, UNKNOWN_ID},
    metadata::{texts, MetadataText},
    recognizer::{Transport, WireMessage},
    tools::{from_list_result, ToolSurface},
};
use crate::sensor::Direction;

/// How long a request may wait for its answer: tool calls run for minutes.
pub const TIMEOUT_NS: u64 = 10 * 60 * 1_000_000_000;
/// Open requests tracked at once, over every session.
pub const MAX_PENDING: usize = 16_384;
/// Error messages are kept this long (servers put anything in them).
const MAX_ERROR_MESSAGE: usize = 256;
/// Argument keys listed per request.
const MAX_KEYS: usize = 64;
/// Arguments larger than this (canonical JSON) are summarised, not kept for the rules.
pub const MAX_ARGUMENT_BYTES: usize = 64 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CallDirection {
    ClientToServer,
    ServerToClient,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CallOutcome {
    Ok,
    /// A tool ran and reported failure (`result.isError`).
    ToolError,
    /// A JSON-RPC error answer.
    Error,
    /// No answer within the timeout.
    Timeout,
    /// Forgotten unanswered because too many requests were open.
    Evicted,
    /// Unanswered when the server exited.
    Unanswered,
    /// A notification: nothing to answer.
    Notified,
}

impl CallOutcome {
    pub fn name(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::ToolError => "tool_error",
            Self::Error => "error",
            Self::Timeout => "timeout",
            Self::Evicted => "evicted",
            Self::Unanswered => "unanswered",
            Self::Notified => "notified",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ArgumentKey {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Characters of a string, items of an array, keys of an object.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub length: Option<usize>,
}

/// What the arguments were, without their values.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ArgumentSummary {
    pub keys: Vec<ArgumentKey>,
    /// More keys than were listed.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub keys_truncated: bool,
    /// SHA-256 of the arguments as canonical JSON (keys sorted, no whitespace).
    pub sha256: String,
    /// The values, secrets masked and capped, only where the rules ask for them
    /// (`audit: {arguments: full}`); set by the rules stage.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub values: Option<Value>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RpcError {
    pub code: Option<i64>,
    pub message: Option<String>,
}

/// One audited request and its answer.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AuditRecord {
    /// The server process.
    pub pid: u32,
    /// The session: the server's stdio, or the HTTP connection the request came on.
    pub session: String,
    pub transport: Transport,
    pub direction: CallDirection,
    pub method: String,
    /// The JSON-RPC id as sent (`"7"`, `"\"abc\""`); none for a notification.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jsonrpc_id: Option<String>,
    /// The tool (`tools/call`), resource URI (`resources/read`, `…/subscribe`) or
    /// prompt (`prompts/get`) the request names.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arguments: Option<ArgumentSummary>,
    pub outcome: CallOutcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<RpcError>,
    /// Boot-time ns the request was seen (read or written by the server).
    #[serde(skip)]
    pub request_ns: u64,
    pub request_bytes: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_bytes: Option<usize>,
    /// From the request passing the server to its answer passing it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_us: Option<u64>,
    /// Part of the request or answer was not captured: sizes are what was seen, and
    /// the argument summary may be missing.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    /// `tools/list`: the digest of the tools the answer listed (`tools.rs`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tools_sha256: Option<String>,
    /// `tools/list`: the surface itself, for the inventory (not in the record).
    #[serde(skip)]
    pub tool_surface: Option<ToolSurface>,
    /// The arguments themselves, for the rules (policy, `mcp.arguments.*`) only:
    /// never rendered. Kept up to `MAX_ARGUMENT_BYTES` of canonical JSON.
    #[serde(skip)]
    pub argument_values: Option<std::sync::Arc<Value>>,
    /// The metadata text of a listing or handshake answer, for the poisoning scan
    /// (never rendered).
    #[serde(skip)]
    pub metadata: Vec<MetadataText>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct CallKey {
    pid: u32,
    session: u64,
    id: String,
    direction: CallDirection,
}

#[derive(Default)]
pub struct SessionAudit {
    pending: HashMap<CallKey, AuditRecord>,
    /// Open requests oldest first, for timeouts and eviction (entries whose request
    /// was answered are skipped when they come up).
    order: VecDeque<(u64, CallKey)>,
}

/// The session a message belongs to: a stdio server has one; an HTTP server one per
/// connection (the request and its JSON or SSE answer pass on the same socket).
/// A request and its answer share it: the server's stdio; the HTTP connection of a
/// Streamable HTTP exchange; a legacy SSE session (requests POSTed on any
/// connection, answers on the session's event stream).
fn session_of(m: &WireMessage) -> u64 {
    match (&m.sse_session, m.transport) {
        (Some(s), _) => {
            use std::hash::{Hash as _, Hasher as _};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            s.hash(&mut h);
            h.finish()
        }
        (None, Transport::Stdio) => 0,
        (None, Transport::StreamableHttp | Transport::Sse) => m.inode,
    }
}

fn session_name(m: &WireMessage) -> String {
    match (&m.sse_session, m.transport) {
        (Some(s), _) => format!("{}:{s}", m.pid),
        (None, Transport::Stdio) => format!("{}:stdio", m.pid),
        (None, _) => format!("{}:socket:[{}]", m.pid, m.inode),
    }
}

/// The id as it was sent, from the recogniser's canonical key (`n:7`, `s:abc`).
fn id_text(key: &str) -> String {
    match key.split_once(':') {
        Some(("s", s)) => Value::String(s.to_string()).to_string(),
        Some((_, n)) => n.to_string(),
        None => key.to_string(),
    }
}

fn target_of(method: &str, params: &Value) -> Option<String> {
    let key = match method {
        "tools/call" | "prompts/get" => "name",
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => "uri",
        _ => return None,
    };
    params.get(key).and_then(Value::as_str).map(str::to_string)
}

fn kind_of(v: &Value) -> (&'static str, Option<usize>) {
    match v {
        Value::Null => ("null", None),
        Value::Bool(_) => ("boolean", None),
        Value::Number(_) => ("number", None),
        Value::String(s) => ("string", Some(s.chars().count())),
        Value::Array(a) => ("array", Some(a.len())),
        Value::Object(o) => ("object", Some(o.len())),
    }
}

/// Keys, types and lengths of the arguments, and their canonical digest.
#[cfg(test)]
pub fn summarize_arguments(args: &Value) -> ArgumentSummary {
    // serde_json's map is ordered by key: `to_string` is the canonical form.
    summarize_canonical(args, &args.to_string())
}

fn summarize_canonical(args: &Value, canonical: &str) -> ArgumentSummary {
    let sha256 = hex::encode(Sha256::digest(canonical.as_bytes()));
    let (keys, keys_truncated) = match args {
        Value::Object(o) => (
            o.iter()
                .take(MAX_KEYS)
                .map(|(k, v)| {
                    let (kind, length) = kind_of(v);
                    ArgumentKey {
                        name: k.chars().take(128).collect(),
                        kind,
                        length,
                    }
                })
                .collect(),
            o.len() > MAX_KEYS,
        ),
        _ => (Vec::new(), false),
    };
    ArgumentSummary {
        keys,
        keys_truncated,
        sha256,
        values: None,
    }
}

/// A call's arguments: their summary, and the values themselves (for the rules)
/// when they are at most `MAX_ARGUMENT_BYTES` of canonical JSON. One serialisation
/// serves both.
fn arguments_of(method: &str, params: &Value) -> (Option<ArgumentSummary>, Option<std::sync::Arc<Value>>) {
    let Some(args) = params
        .get("arguments")
        .filter(|_| matches!(method, "tools/call" | "prompts/get"))
    else {
        return (None, None);
    };
    let canonical = args.to_string();
    let values = (canonical.len() <= MAX_ARGUMENT_BYTES).then(|| std::sync::Arc::new(args.clone()));
    (Some(summarize_canonical(args, &canonical)), values)
}

fn error_of(e: &Value) -> RpcError {
    RpcError {
        code: e.get("code").and_then(Value::as_i64),
        message: e
            .get("message")
            .and_then(Value::as_str)
            .map(|m| m.chars().take(MAX_ERROR_MESSAGE).collect()),
    }
}

/// Notifications worth a record: the tool surface changed, a subscribed resource
/// changed, a request was cancelled.
fn audited_notification(method: &str) -> bool {
    matches!(
        method,
        "notifications/tools/list_changed"
            | "notifications/prompts/list_changed"
            | "notifications/resources/list_changed"
            | "notifications/resources/updated"
            | "notifications/cancelled"
    )
}

/// A record of `m` as far as the message itself says (answers fill in the rest).
fn record(m: &WireMessage, direction: CallDirection, method: &str, outcome: CallOutcome) -> AuditRecord {
    AuditRecord {
        pid: m.pid,
        session: session_name(m),
        transport: m.transport,
        direction,
        method: method.to_string(),
        jsonrpc_id: None,
        target: None,
        arguments: None,
        outcome,
        error: None,
        request_ns: m.ts_ns,
        request_bytes: m.bytes,
        response_bytes: None,
        latency_us: None,
        truncated: m.truncated,
        tools_sha256: None,
        tool_surface: None,
        argument_values: None,
        metadata: Vec::new(),
    }
}

/// Who sent a request or notification: read by the server, the client did.
fn sender(m: &WireMessage) -> CallDirection {
    match m.direction {
        Direction::Read => CallDirection::ClientToServer,
        Direction::Write => CallDirection::ServerToClient,
    }
}

impl SessionAudit {
    /// Open requests.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// One message of an audited server; returns the records it completes.
    pub fn observe(&mut self, m: WireMessage) -> Vec<AuditRecord> {
        let mut out = Vec::new();
        let session = session_of(&m);
        match &m.message {
            Message::Request { id, method, params } => {
                let direction = sender(&m);
                let key = CallKey {
                    pid: m.pid,
                    session,
                    id: id.clone(),
                    direction,
                };
                let (arguments, argument_values) = arguments_of(method, params);
                let record = AuditRecord {
                    jsonrpc_id: Some(id_text(id)),
                    target: target_of(method, params),
                    arguments,
                    argument_values,
                    ..record(&m, direction, method, CallOutcome::Unanswered)
                };
                if self.pending.len() >= MAX_PENDING {
                    out.extend(self.evict_oldest());
                }
                // A reused id on the same session: the earlier request went unanswered.
                if let Some(mut earlier) = self.pending.insert(key.clone(), record) {
                    earlier.outcome = CallOutcome::Unanswered;
                    out.push(earlier);
                }
                self.order.push_back((m.ts_ns, key));
            }
            Message::Response { id, result, error } => {
                // Written by the server: it answers the client; read: the client answers it.
                let direction = match m.direction {
                    Direction::Write => CallDirection::ClientToServer,
                    Direction::Read => CallDirection::ServerToClient,
                };
                let key = if id == UNKNOWN_ID {
                    // A cut answer whose id was not kept: the session's oldest open
                    // request the other way.
                    match self.oldest_open(m.pid, session, direction) {
                        Some(k) => k,
                        None => return out,
                    }
                } else {
                    CallKey {
                        pid: m.pid,
                        session,
                        id: id.clone(),
                        direction,
                    }
                };
                let Some(mut r) = self.pending.remove(&key) else {
                    return out;
                };
                r.response_bytes = Some(m.bytes);
                r.latency_us = Some(m.ts_ns.saturating_sub(r.request_ns) / 1_000);
                r.truncated |= m.truncated;
                r.outcome = match (result, error) {
                    (_, Some(e)) => {
                        r.error = Some(error_of(e));
                        CallOutcome::Error
                    }
                    (Some(res), None) if res.get("isError").and_then(Value::as_bool) == Some(true) => {
                        CallOutcome::ToolError
                    }
                    _ => CallOutcome::Ok,
                };
                if r.method == "tools/list" && r.outcome == CallOutcome::Ok && !r.truncated {
                    r.tool_surface = result.as_ref().and_then(from_list_result);
                    r.tools_sha256 = r.tool_surface.as_ref().map(|t| t.sha256.clone());
                }
                if r.outcome == CallOutcome::Ok && r.direction == CallDirection::ClientToServer {
                    if let Some(res) = result {
                        r.metadata = texts(&r.method, res);
                    }
                }
                out.push(r);
            }
            Message::Notification { method } if audited_notification(method) => {
                out.push(record(&m, sender(&m), method, CallOutcome::Notified))
            }
            Message::Notification { .. } => {}
        }
        out
    }

    fn oldest_open(&self, pid: u32, session: u64, direction: CallDirection) -> Option<CallKey> {
        self.pending
            .iter()
            .filter(|(k, _)| k.pid == pid && k.session == session && k.direction == direction)
            .min_by_key(|(_, r)| r.request_ns)
            .map(|(k, _)| k.clone())
    }

    fn evict_oldest(&mut self) -> Option<AuditRecord> {
        while let Some((_, key)) = self.order.pop_front() {
            if let Some(mut r) = self.pending.remove(&key) {
                r.outcome = CallOutcome::Evicted;
                return Some(r);
            }
        }
        None
    }

    /// Requests older than the timeout, recorded as `timeout`.
    pub fn expire(&mut self, now_ns: u64) -> Vec<AuditRecord> {
        let mut out = Vec::new();
        while let Some((ts, _)) = self.order.front() {
            if now_ns.saturating_sub(*ts) < TIMEOUT_NS {
                break;
            }
            let (_, key) = self.order.pop_front().expect("front exists");
            if let Some(mut r) = self.pending.remove(&key) {
                r.outcome = CallOutcome::Timeout;
                out.push(r);
            }
        }
        // Answered entries at the front are dropped from the queue as they surface.
        out
    }

    /// The server exited: its open requests were never answered.
    pub fn server_exited(&mut self, pid: u32) -> Vec<AuditRecord> {
        let keys: Vec<CallKey> = self.pending.keys().filter(|k| k.pid == pid).cloned().collect();
        let mut out: Vec<AuditRecord> = keys
            .into_iter()
            .filter_map(|k| self.pending.remove(&k))
            .map(|mut r| {
                r.outcome = CallOutcome::Unanswered;
                r
            })
            .collect();
        out.sort_by_key(|r| r.request_ns);
        self.order.retain(|(_, k)| k.pid != pid);
        out
    }
}

/// The server a record is about, as the inventory knows it when the answer passes.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AuditedServer {
    pub id: String,
    pub server_uid: String,
    pub name: Option<String>,
    pub version: Option<String>,
    pub protocol_version: Option<String>,
    pub sanctioned: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sanctioned_entry: Option<String>,
    /// Who runs it.
    pub user: Option<std::sync::Arc<str>>,
    pub uid: u32,
}

/// `{"type":"mcp_request",…}`: one audited request and its answer.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct McpRequestEvent {
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Names this record on this host: SIEM receivers dedup on it and findings
    /// raised by the request reference it.
    pub uid: String,
    /// When the request passed the server.
    pub time: String,
    pub server: AuditedServer,
    /// The client process (the server's host), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<super::inventory::HostProcess>,
    #[serde(flatten)]
    pub request: AuditRecord,
}

impl McpRequestEvent {
    /// How findings and inventory changes name this record.
    pub fn reference(&self) -> crate::mcp::request_ref::RequestRef {
        crate::mcp::request_ref::RequestRef {
            uid: self.uid.clone(),
            method: self.request.method.clone(),
            target: self.request.target.clone(),
            session: self.request.session.clone(),
            jsonrpc_id: self.request.jsonrpc_id.clone(),
        }
    }

    pub fn new(request: AuditRecord, server: &super::inventory::McpServer) -> Self {
        let mut h = Sha256::new();
        for part in [
            server.id.as_str(),
            request.session.as_str(),
            request.method.as_str(),
            request.jsonrpc_id.as_deref().unwrap_or(""),
            &request.request_ns.to_string(),
        ] {
            h.update(part.as_bytes());
            h.update([0x1f]);
        }
        Self {
            kind: "mcp_request",
            uid: hex::encode(&h.finalize()[..16]),
            time: crate::clock::rfc3339(crate::clock::boot_to_wall(request.request_ns)),
            server: AuditedServer {
                id: server.id.clone(),
                server_uid: server.server_uid.clone(),
                name: server.name.clone(),
                version: server.version.clone(),
                protocol_version: server.protocol_version.clone(),
                sanctioned: server.sanctioned,
                sanctioned_entry: server.sanctioned_entry.clone(),
                user: server.user.clone(),
                uid: server.uid,
            },
            client: server.host.clone(),
            request,
        }
    }
}

/// Bounded label values for metrics: the methods MCP defines, `other` for the rest.
pub fn method_label(method: &str) -> &'static str {
    const KNOWN: &[&str] = &[
        "initialize",
        "ping",
        "tools/list",
        "tools/call",
        "resources/list",
        "resources/templates/list",
        "resources/read",
        "resources/subscribe",
        "resources/unsubscribe",
        "prompts/list",
        "prompts/get",
        "completion/complete",
        "logging/setLevel",
        "sampling/createMessage",
        "elicitation/create",
        "roots/list",
        "server/discover",
        "notifications/tools/list_changed",
        "notifications/prompts/list_changed",
        "notifications/resources/list_changed",
        "notifications/resources/updated",
        "notifications/cancelled",
    ];
    KNOWN.iter().find(|k| **k == method).copied().unwrap_or("other")
}

/// A complete record, for the tests of the stages that read them.
#[cfg(test)]
pub mod fixtures {
    use serde_json::json;

    use super::*;

    pub fn event(outcome: CallOutcome) -> McpRequestEvent {
        McpRequestEvent {
            kind: "mcp_request",
            uid: "0123456789abcdef0123456789abcdef".into(),
            time: "2026-12-03T10:00:00.000Z".into(),
            server: AuditedServer {
                id: "mcp:4242:1".into(),
                server_uid: "npm:@modelcontextprotocol/server-filesystem".into(),
                name: Some("secure-filesystem-server".into()),
                version: Some("0.2.0".into()),
                protocol_version: Some("2025-06-18".into()),
                sanctioned: false,
                sanctioned_entry: None,
                user: Some("dev".into()),
                uid: 1000,
            },
            client: Some(super::super::inventory::HostProcess {
                pid: 4200,
                entity_id: Some("p:4200:1".into()),
                exe: Some("/usr/bin/python3.13".into()),
                name: "python3".into(),
            }),
            request: AuditRecord {
                pid: 4242,
                session: "4242:stdio".into(),
                transport: Transport::Stdio,
                direction: CallDirection::ClientToServer,
                method: "tools/call".into(),
                jsonrpc_id: Some("3".into()),
                target: Some("read_file".into()),
                arguments: Some(summarize_arguments(&json!({"path": "/home/dev/notes.txt"}))),
                outcome,
                error: (outcome == CallOutcome::Error).then(|| RpcError {
                    code: Some(-32602),
                    message: Some("Unknown tool".into()),
                }),
                request_ns: 0,
                request_bytes: 120,
                response_bytes: Some(300),
                latency_us: Some(2_500),
                truncated: false,
                tools_sha256: None,
                tool_surface: None,
                argument_values: Some(std::sync::Arc::new(json!({"path": "/home/dev/notes.txt"}))),
                metadata: Vec::new(),
            },
        }
    }
}

/// For tests and debugging: the records' methods and outcomes in order.
#[cfg(test)]
fn summary(records: &[AuditRecord]) -> Vec<(String, &'static str)> {
    records
        .iter()
        .map(|r| (r.method.clone(), r.outcome.name()))
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::mcp::jsonrpc::messages;

    fn wire(
        pid: u32,
        inode: u64,
        direction: Direction,
        ts_ns: u64,
        transport: Transport,
        v: Value,
    ) -> WireMessage {
        let bytes = v.to_string().len() + 1;
        WireMessage {
            pid,
            inode,
            direction,
            ts_ns,
            bytes,
            transport,
            truncated: false,
            sse_session: None,
            message: messages(v).pop().unwrap(),
        }
    }

    fn stdio(direction: Direction, ts_ns: u64, v: Value) -> WireMessage {
        wire(7, 10, direction, ts_ns, Transport::Stdio, v)
    }

    /// An answer longer than the agent keeps is recorded as truncated with its size;
    /// one whose id was past the kept bytes (the TS SDK writes `id` last) pairs with
    /// the session's oldest open request.
    #[test]
    fn a_cut_answer_is_a_truncated_record_with_its_size() {
        let mut a = SessionAudit::default();
        let call =
            json!({"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"big","arguments":{}}});
        a.observe(stdio(Direction::Read, 1_000, call));
        let cut = WireMessage {
            bytes: 400 * 1024,
            truncated: true,
            message: crate::mcp::jsonrpc::cut_message(
                br#"{"result":{"content":[{"type":"text","text":"xxxx"#,
            )
            .unwrap(),
            ..stdio(
                Direction::Write,
                9_000,
                json!({"jsonrpc":"2.0","id":0,"result":{}}),
            )
        };
        let done = a.observe(cut);
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].target.as_deref(), Some("big"));
        assert!(done[0].truncated);
        assert_eq!(done[0].response_bytes, Some(400 * 1024));
        assert_eq!(done[0].outcome, CallOutcome::Ok);
        assert_eq!(a.pending(), 0);
    }

    /// Legacy HTTP+SSE: the request is POSTed on one connection, the answer goes out
    /// on the session's event stream, another connection.
    #[test]
    fn a_legacy_sse_request_pairs_with_its_answer_on_the_event_stream() {
        let mut a = SessionAudit::default();
        let sse = |inode, direction, v| WireMessage {
            sse_session: Some("sse:0123456789abcdef".into()),
            ..wire(7, inode, direction, 1_000, Transport::Sse, v)
        };
        let list = json!({"jsonrpc":"2.0","id":2,"method":"tools/list"});
        assert!(a.observe(sse(41, Direction::Read, list)).is_empty());
        let answer = json!({"jsonrpc":"2.0","id":2,"result":{"tools":[]}});
        let done = a.observe(sse(40, Direction::Write, answer));
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].outcome, CallOutcome::Ok);
        assert_eq!(done[0].session, "7:sse:0123456789abcdef");
    }

    #[test]
    fn a_tool_call_is_one_record_with_its_outcome_and_no_argument_values() {
        let mut a = SessionAudit::default();
        let call = json!({"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"read_file","arguments":{"path":"/home/dev/.ssh/id_ed25519","head":10}}});
        assert!(a.observe(stdio(Direction::Read, 1_000_000, call)).is_empty());
        assert_eq!(a.pending(), 1);
        let answer = json!({"jsonrpc":"2.0","id":3,"result":{"content":[{"type":"text","text":"secret"}],"isError":false}});
        let r = a
            .observe(stdio(Direction::Write, 4_500_000, answer))
            .pop()
            .unwrap();
        assert_eq!(a.pending(), 0);
        assert_eq!(r.method, "tools/call");
        assert_eq!(r.target.as_deref(), Some("read_file"));
        assert_eq!(r.jsonrpc_id.as_deref(), Some("3"));
        assert_eq!(r.direction, CallDirection::ClientToServer);
        assert_eq!(r.outcome, CallOutcome::Ok);
        assert_eq!(r.latency_us, Some(3_500));
        assert_eq!(r.session, "7:stdio");
        assert!(r.response_bytes.unwrap() > 0);
        let args = r.arguments.as_ref().unwrap();
        assert_eq!(
            args.keys,
            vec![
                ArgumentKey {
                    name: "head".into(),
                    kind: "number",
                    length: None
                },
                ArgumentKey {
                    name: "path".into(),
                    kind: "string",
                    length: Some(25)
                },
            ]
        );
        // The digest is over the canonical form: key order and spacing do not matter.
        let same = summarize_arguments(
            &serde_json::from_str(r#"{ "path": "/home/dev/.ssh/id_ed25519", "head": 10 }"#).unwrap(),
        );
        assert_eq!(args.sha256, same.sha256);
        let text = serde_json::to_string(&r).unwrap();
        assert!(!text.contains("id_ed25519") && !text.contains("secret"), "{text}");
    }

    #[test]
    fn tool_errors_rpc_errors_and_server_requests() {
        let mut a = SessionAudit::default();
        let mut out = Vec::new();
        let call = |id: u32| json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":"t","arguments":{}}});
        out.extend(a.observe(stdio(Direction::Read, 1, call(1))));
        out.extend(a.observe(stdio(Direction::Read, 2, call(2))));
        // The server asks the client for a completion, with an id of its own side.
        out.extend(a.observe(stdio(
            Direction::Write,
            3,
            json!({"jsonrpc":"2.0","id":1,"method":"sampling/createMessage","params":{}}),
        )));
        out.extend(a.observe(stdio(
            Direction::Read,
            4,
            json!({"jsonrpc":"2.0","id":1,"result":{"role":"assistant"}}),
        )));
        out.extend(a.observe(stdio(
            Direction::Write,
            5,
            json!({"jsonrpc":"2.0","id":2,"error":{"code":-32602,"message":"Unknown tool: t"}}),
        )));
        out.extend(a.observe(stdio(
            Direction::Write,
            6,
            json!({"jsonrpc":"2.0","id":1,"result":{"content":[],"isError":true}}),
        )));
        out.extend(a.observe(stdio(
            Direction::Write,
            7,
            json!({"jsonrpc":"2.0","method":"notifications/tools/list_changed"}),
        )));
        assert_eq!(
            summary(&out),
            vec![
                ("sampling/createMessage".into(), "ok"),
                ("tools/call".into(), "error"),
                ("tools/call".into(), "tool_error"),
                ("notifications/tools/list_changed".into(), "notified"),
            ]
        );
        assert_eq!(out[0].direction, CallDirection::ServerToClient);
        assert_eq!(
            out[1].error,
            Some(RpcError {
                code: Some(-32602),
                message: Some("Unknown tool: t".into())
            })
        );
        assert_eq!(a.pending(), 0);
    }

    #[test]
    fn two_http_sessions_using_the_same_id_never_mix() {
        let mut a = SessionAudit::default();
        let req = |name: &str| json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":name,"arguments":{}}});
        let ok = json!({"jsonrpc":"2.0","id":1,"result":{"content":[]}});
        let http = Transport::StreamableHttp;
        a.observe(wire(9, 100, Direction::Read, 1, http, req("first")));
        a.observe(wire(9, 200, Direction::Read, 2, http, req("second")));
        let r = a
            .observe(wire(9, 200, Direction::Write, 3, http, ok.clone()))
            .pop()
            .unwrap();
        assert_eq!(r.target.as_deref(), Some("second"));
        assert_eq!(r.session, "9:socket:[200]");
        let r = a
            .observe(wire(9, 100, Direction::Write, 4, http, ok))
            .pop()
            .unwrap();
        assert_eq!(r.target.as_deref(), Some("first"));
    }

    #[test]
    fn unanswered_requests_time_out_are_evicted_or_end_with_the_server() {
        let mut a = SessionAudit::default();
        let ping = |id: u64| json!({"jsonrpc":"2.0","id":id,"method":"ping"});
        a.observe(stdio(Direction::Read, 0, ping(1)));
        a.observe(stdio(Direction::Read, TIMEOUT_NS / 2, ping(2)));
        assert!(a.expire(TIMEOUT_NS - 1).is_empty());
        assert_eq!(summary(&a.expire(TIMEOUT_NS)), vec![("ping".into(), "timeout")]);
        assert_eq!(summary(&a.server_exited(7)), vec![("ping".into(), "unanswered")]);
        assert_eq!(a.pending(), 0);

        for id in 0..MAX_PENDING as u64 {
            assert!(a.observe(stdio(Direction::Read, id, ping(id))).is_empty());
        }
        let evicted = a.observe(stdio(Direction::Read, u64::MAX / 2, ping(u64::MAX)));
        assert_eq!(summary(&evicted), vec![("ping".into(), "evicted")]);
        assert_eq!(evicted[0].jsonrpc_id.as_deref(), Some("0"));
        assert_eq!(a.pending(), MAX_PENDING);
    }

    #[test]
    fn string_ids_are_shown_as_sent() {
        assert_eq!(id_text("s:abc"), "\"abc\"");
        assert_eq!(id_text("n:12"), "12");
    }

    #[test]
    fn method_labels_are_bounded() {
        assert_eq!(method_label("tools/call"), "tools/call");
        assert_eq!(method_label("x/evil-label-of-any-length"), "other");
    }
}
