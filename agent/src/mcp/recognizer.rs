//! The MCP recogniser: confirms a server from a request/response pair seen in one
//! process — it *read* an `initialize` (2024-11-05 … 2025-11-25) or `server/discover`
//! (2026-07-28) request and *wrote* the matching result with MCP's signature. Works the
//! same over stdio (pipes, socketpairs), Streamable HTTP and legacy HTTP+SSE.
//!
//! Precision: LSP servers (Content-Length framing; `initialize` without
//! `protocolVersion`), JSON log streams and JSON pipelines never produce such a pair.

use std::collections::{HashMap, HashSet};

use serde::Serialize;
use serde_json::Value;

use super::{
    framing::{header, Discard, HttpItem, HttpStart, HttpStream, LineFramer},
    jsonrpc::{cut_message, is_protocol_version, messages, Message},
};
use crate::sensor::{Channel, Direction, PayloadEvent};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Transport {
    Stdio,
    StreamableHttp,
    Sse,
}

/// One JSON-RPC message on a captured channel of an audited server, as the
/// recogniser framed it.
#[derive(Clone, Debug)]
pub struct WireMessage {
    /// The server process.
    pub pid: u32,
    /// The pipe or socket it passed on.
    pub inode: u64,
    /// `Read`: the server received it; `Write`: the server sent it.
    pub direction: Direction,
    pub ts_ns: u64,
    /// Size of the framed message (a batch's messages each carry the batch's size).
    pub bytes: usize,
    pub transport: Transport,
    /// The capture was cut (the message is longer than what the kernel copied).
    pub truncated: bool,
    /// Legacy HTTP+SSE: the session the message belongs to (`sse:` and a digest of
    /// its endpoint's session id), the same for a request POSTed on any connection
    /// and its answer on the session's event stream.
    pub sse_session: Option<String>,
    pub message: Message,
}

/// A confirmed MCP server session, with what the wire said about it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Detection {
    pub pid: u32,
    pub ts_ns: u64,
    pub transport: Transport,
    pub channel: Channel,
    pub protocol_version: Option<String>,
    pub server_name: Option<String>,
    pub server_title: Option<String>,
    pub server_version: Option<String>,
    pub capabilities: Vec<String>,
    pub client_name: Option<String>,
    pub client_version: Option<String>,
    /// Inode of the pipe/socket the request came in on, and the one the answer left on.
    pub request_inode: u64,
    pub response_inode: u64,
    pub http_path: Option<String>,
    /// The process seen writing the request (same pipe, or the other end of the
    /// same TCP connection), if captured.
    pub client_pid: Option<u32>,
    /// HTTP: the server's (local, remote) addresses on the request's connection.
    pub tuple: Option<(std::net::SocketAddr, std::net::SocketAddr)>,
    pub evidence: Vec<String>,
}

/// What one payload event produced.
#[derive(Default, Debug)]
pub struct Outcome {
    pub detections: Vec<Detection>,
    /// Every message of an audited server (`Recognizer::audit`), for the session audit.
    pub messages: Vec<WireMessage>,
    pub discards: Vec<Discard>,
    pub bad_json: u32,
}

struct Pending {
    method: String,
    protocol_version: Option<String>,
    client_name: Option<String>,
    client_version: Option<String>,
    inode: u64,
    transport: Transport,
    http_path: Option<String>,
    tuple: Option<(std::net::SocketAddr, std::net::SocketAddr)>,
}

enum Stream {
    Lines(LineFramer),
    Http(HttpStream),
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct StreamKey {
    pid: u32,
    inode: u64,
    dir: Direction,
}

/// Bounds on recogniser memory: streams, processes with pending requests, requests
/// per process and client writes. Past them the oldest state is forgotten.
const MAX_STREAMS: usize = 8192;
const MAX_PENDING_PIDS: usize = 4096;
const MAX_PENDING_PER_PID: usize = 64;
const MAX_CLIENT_WRITES: usize = 8192;
/// Bounds on what is held for processes between a handshake request and its answer.
const MAX_PRELUDE_PIDS: usize = 256;
const MAX_PRELUDE_MESSAGES: usize = 32;
const MAX_PRELUDE_BYTES: usize = 512 * 1024;

/// A process's messages from the handshake request it read until its answer: the
/// audit gets them with the confirmation, so a fresh server's handshake (and its
/// `instructions`) and what a client pipelines behind it are audited, though the
/// agent learns it is a server only from the answer.
#[derive(Default)]
struct Prelude {
    messages: Vec<WireMessage>,
    bytes: usize,
}

#[derive(Default)]
pub struct Recognizer {
    streams: HashMap<StreamKey, Stream>,
    pending: HashMap<u32, HashMap<String, Pending>>,
    /// Handshake requests written, by channel inode: (writer pid).
    client_writes: HashMap<u64, u32>,
    /// Handshake requests written on TCP, by the writer's (local, remote) addresses.
    client_tuples: HashMap<(std::net::SocketAddr, std::net::SocketAddr), u32>,
    /// Last HTTP request head read by a server on a socket: (method, path).
    http_requests: HashMap<(u32, u64), (String, String)>,
    /// Processes that announced a legacy SSE `endpoint`.
    sse_servers: HashMap<u32, String>,
    /// Legacy SSE event streams, by (server pid, socket): their session.
    sse_streams: HashMap<(u32, u64), String>,
    /// Confirmed servers whose messages go to the session audit.
    audited: HashSet<u32>,
    preludes: HashMap<u32, Prelude>,
}

impl Recognizer {
    /// From now on, hands every message of `pid` (a confirmed server) on in
    /// `Outcome::messages`.
    pub fn audit(&mut self, pid: u32) {
        self.audited.insert(pid);
        self.preludes.remove(&pid);
    }

    /// Hands a message of an audited server on (or holds it in its prelude).
    /// Called after `on_message`, which may just have confirmed the server.
    fn keep(&mut self, ev: &PayloadEvent, m: Message, bytes: usize, transport: Transport, out: &mut Outcome) {
        self.keep_as(ev, m, bytes, transport, ev.truncated, out);
    }

    fn keep_as(
        &mut self,
        ev: &PayloadEvent,
        m: Message,
        bytes: usize,
        transport: Transport,
        truncated: bool,
        out: &mut Outcome,
    ) {
        let audited = self.audited.contains(&ev.pid);
        if !audited && !self.preludes.contains_key(&ev.pid) {
            return;
        }
        let sse_session = match (transport, ev.direction) {
            (Transport::Sse, Direction::Read) => self.request_path(ev).map(|p| sse_session(&p)),
            (Transport::Sse, Direction::Write) => self.sse_streams.get(&(ev.pid, ev.inode)).cloned(),
            _ => None,
        };
        let prelude = self.preludes.get_mut(&ev.pid);
        let wire = WireMessage {
            pid: ev.pid,
            inode: ev.inode,
            direction: ev.direction,
            ts_ns: ev.ts_ns,
            bytes,
            transport,
            truncated,
            sse_session,
            message: m,
        };
        match prelude {
            _ if audited => out.messages.push(wire),
            Some(p) if p.messages.len() < MAX_PRELUDE_MESSAGES && p.bytes + bytes <= MAX_PRELUDE_BYTES => {
                p.bytes += bytes;
                p.messages.push(wire);
            }
            _ => {}
        }
    }

    /// Forgets everything about a process (it exited).
    pub fn forget(&mut self, pid: u32) {
        self.audited.remove(&pid);
        self.preludes.remove(&pid);
        self.streams.retain(|k, _| k.pid != pid);
        self.pending.remove(&pid);
        self.http_requests.retain(|k, _| k.0 != pid);
        self.sse_servers.remove(&pid);
        self.sse_streams.retain(|k, _| k.0 != pid);
        self.client_writes.retain(|_, p| *p != pid);
        self.client_tuples.retain(|_, p| *p != pid);
    }

    pub fn observe(&mut self, ev: &PayloadEvent) -> Outcome {
        let mut out = Outcome::default();
        let key = StreamKey {
            pid: ev.pid,
            inode: ev.inode,
            dir: ev.direction,
        };
        if self.streams.len() >= MAX_STREAMS && !self.streams.contains_key(&key) {
            self.streams.clear();
        }
        let stream = self.streams.entry(key).or_insert_with(|| {
            let json_first = ev.data.first().is_some_and(|b| *b == b'{' || *b == b'[');
            if ev.channel == Channel::Tcp && !json_first {
                Stream::Http(HttpStream::default())
            } else {
                Stream::Lines(LineFramer::default())
            }
        });
        match stream {
            Stream::Lines(f) => {
                let missing = (ev.total_len as usize).saturating_sub(ev.data.len());
                let (lines, discard) = f.push_call(&ev.data, ev.truncated, missing);
                out.discards.extend(discard);
                // Messages too long to keep: the audit records them as truncated,
                // with their size, when their first bytes say what they are.
                for cut in f.take_cuts() {
                    if let Some(m) = cut_message(&cut.head) {
                        self.keep_as(ev, m, cut.size, Transport::Stdio, true, &mut out);
                    }
                }
                for line in lines {
                    match serde_json::from_slice::<Value>(&line) {
                        Ok(v) => {
                            for m in messages(v) {
                                self.on_message(ev, m.clone(), Transport::Stdio, None, &mut out);
                                self.keep(ev, m, line.len(), Transport::Stdio, &mut out);
                            }
                        }
                        Err(_) => out.bad_json += 1,
                    }
                }
            }
            Stream::Http(h) => {
                let (items, discard) = h.push(&ev.data, ev.truncated);
                out.discards.extend(discard);
                for item in items {
                    self.on_http(ev, item, &mut out);
                }
            }
        }
        out
    }

    fn on_http(&mut self, ev: &PayloadEvent, item: HttpItem, out: &mut Outcome) {
        match item {
            HttpItem::Message { start, headers, body } => {
                if let HttpStart::Request { method, path } = &start {
                    if ev.direction == Direction::Read {
                        self.http_requests
                            .insert((ev.pid, ev.inode), (method.clone(), path.clone()));
                    }
                }
                let json = header(&headers, "content-type").is_some_and(|c| c.contains("json"));
                if json && !body.is_empty() {
                    match serde_json::from_slice::<Value>(&body) {
                        Ok(v) => {
                            let path = match &start {
                                HttpStart::Request { path, .. } => Some(path.clone()),
                                HttpStart::Response { .. } => self.request_path(ev),
                            };
                            for m in messages(v) {
                                let transport = self.http_transport(ev.pid);
                                self.on_message(ev, m.clone(), transport, path.clone(), out);
                                self.keep(ev, m, body.len(), transport, out);
                            }
                        }
                        Err(_) => out.bad_json += 1,
                    }
                }
            }
            HttpItem::Sse { event, data } => {
                if ev.direction != Direction::Write {
                    return;
                }
                match event.as_deref() {
                    Some("endpoint") => {
                        // Legacy HTTP+SSE: the first event names the POST endpoint.
                        let get = self.http_requests.get(&(ev.pid, ev.inode));
                        if get.is_some_and(|(m, _)| m == "GET") {
                            if self.sse_streams.len() >= MAX_STREAMS {
                                self.sse_streams.clear();
                            }
                            self.sse_streams.insert((ev.pid, ev.inode), sse_session(&data));
                            self.sse_servers.insert(ev.pid, data);
                        }
                    }
                    None | Some("message") if data.starts_with('{') || data.starts_with('[') => {
                        match serde_json::from_str::<Value>(&data) {
                            Ok(v) => {
                                let path = self.request_path(ev);
                                for m in messages(v) {
                                    let transport = self.http_transport(ev.pid);
                                    self.on_message(ev, m.clone(), transport, path.clone(), out);
                                    self.keep(ev, m, data.len(), transport, out);
                                }
                            }
                            Err(_) => out.bad_json += 1,
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    fn request_path(&self, ev: &PayloadEvent) -> Option<String> {
        self.http_requests
            .get(&(ev.pid, ev.inode))
            .map(|(_, p)| p.clone())
    }

    fn http_transport(&self, pid: u32) -> Transport {
        if self.sse_servers.contains_key(&pid) {
            Transport::Sse
        } else {
            Transport::StreamableHttp
        }
    }

    fn on_message(
        &mut self,
        ev: &PayloadEvent,
        m: Message,
        transport: Transport,
        http_path: Option<String>,
        out: &mut Outcome,
    ) {
        match (m, ev.direction) {
            (Message::Request { id, method, params }, dir) if is_handshake(&method) => {
                let (client_name, client_version) = client_info(&method, &params);
                match dir {
                    Direction::Read => self.hold(
                        ev,
                        id,
                        Pending {
                            protocol_version: requested_version(&method, &params),
                            method,
                            client_name,
                            client_version,
                            inode: ev.inode,
                            transport,
                            http_path,
                            tuple: ev.tuple,
                        },
                    ),
                    Direction::Write => {
                        if self.client_writes.len() >= MAX_CLIENT_WRITES {
                            self.client_writes.clear();
                        }
                        self.client_writes.insert(ev.inode, ev.pid);
                        if let Some(t) = ev.tuple {
                            if self.client_tuples.len() >= MAX_CLIENT_WRITES {
                                self.client_tuples.clear();
                            }
                            self.client_tuples.insert(t, ev.pid);
                        }
                    }
                }
            }
            // A server that was running before the agent (no handshake to see): an
            // MCP request it reads, paired below with an answer of MCP's shape.
            (Message::Request { id, method, .. }, Direction::Read)
                if is_paired_method(&method) && !self.audited.contains(&ev.pid) =>
            {
                self.hold(
                    ev,
                    id,
                    Pending {
                        method,
                        protocol_version: None,
                        client_name: None,
                        client_version: None,
                        inode: ev.inode,
                        transport,
                        http_path,
                        tuple: ev.tuple,
                    },
                )
            }
            (
                Message::Response {
                    id,
                    result: Some(result),
                    ..
                },
                Direction::Write,
            ) => {
                let Some(p) = self.pending.get_mut(&ev.pid).and_then(|m| m.remove(&id)) else {
                    return;
                };
                if let Some(d) = self.confirm(ev, &p, &result, transport) {
                    out.detections.push(d);
                    // Audited from now on, from the handshake on.
                    if self.audited.insert(ev.pid) {
                        if let Some(prelude) = self.preludes.remove(&ev.pid) {
                            out.messages.extend(prelude.messages);
                        }
                    }
                }
            }
            _ => {}
        }
    }

    /// A request read that an answer may confirm: kept (bounded) until its answer,
    /// and, for a process not yet audited, its messages held from here on.
    fn hold(&mut self, ev: &PayloadEvent, id: String, p: Pending) {
        if self.pending.len() >= MAX_PENDING_PIDS && !self.pending.contains_key(&ev.pid) {
            self.pending.clear();
        }
        let per_pid = self.pending.entry(ev.pid).or_default();
        if per_pid.len() >= MAX_PENDING_PER_PID {
            per_pid.clear();
        }
        per_pid.insert(id, p);
        if !self.audited.contains(&ev.pid) {
            if self.preludes.len() >= MAX_PRELUDE_PIDS && !self.preludes.contains_key(&ev.pid) {
                self.preludes.clear();
            }
            self.preludes.entry(ev.pid).or_default();
        }
    }

    fn confirm(
        &self,
        ev: &PayloadEvent,
        p: &Pending,
        result: &Value,
        transport: Transport,
    ) -> Option<Detection> {
        let transport = if p.transport == Transport::Stdio {
            Transport::Stdio
        } else {
            transport
        };
        let (server_info, protocol_version, marker) = match p.method.as_str() {
            "initialize" => {
                let v = result.get("protocolVersion")?.as_str()?;
                if !is_protocol_version(v) || p.protocol_version.is_none() {
                    return None;
                }
                let info = result.get("serverInfo");
                if info.is_none() && !result.get("capabilities").is_some_and(Value::is_object) {
                    return None;
                }
                (
                    info,
                    Some(v.to_string()),
                    "initialize result with protocolVersion",
                )
            }
            "server/discover" => {
                let versions: Vec<&str> = result
                    .get("supportedVersions")?
                    .as_array()?
                    .iter()
                    .filter_map(Value::as_str)
                    .filter(|v| is_protocol_version(v))
                    .collect();
                let info = result
                    .get("_meta")
                    .and_then(|m| m.get("io.modelcontextprotocol/serverInfo"));
                if versions.is_empty()
                    || (info.is_none() && !result.get("capabilities").is_some_and(Value::is_object))
                {
                    return None;
                }
                let version = p
                    .protocol_version
                    .clone()
                    .filter(|v| versions.contains(&v.as_str()))
                    .or_else(|| versions.first().map(|v| v.to_string()));
                (info, version, "server/discover result with supportedVersions")
            }
            method if !self.audited.contains(&ev.pid) && has_mcp_result_shape(method, result) => {
                // 2026-07-28 results may say who the server is.
                let info = result
                    .get("_meta")
                    .and_then(|m| m.get("io.modelcontextprotocol/serverInfo"));
                (info, None, "result of MCP's shape for it")
            }
            _ => return None,
        };
        let text = |k: &str| {
            server_info
                .and_then(|i| i.get(k))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        let capabilities = result
            .get("capabilities")
            .and_then(Value::as_object)
            .map(|c| c.keys().cloned().collect())
            .unwrap_or_default();
        let chan = |c: Channel, ino: u64| match c {
            Channel::Pipe => format!("pipe:[{ino}]"),
            _ => format!("socket:[{ino}]"),
        };
        let evidence = vec![
            format!("{} request read on {}", p.method, chan(ev.channel, p.inode)),
            format!("{marker} written on {}", chan(ev.channel, ev.inode)),
        ];
        Some(Detection {
            pid: ev.pid,
            ts_ns: ev.ts_ns,
            transport,
            channel: ev.channel,
            protocol_version,
            server_name: text("name"),
            server_title: text("title"),
            server_version: text("version"),
            capabilities,
            client_name: p.client_name.clone(),
            client_version: p.client_version.clone(),
            request_inode: p.inode,
            response_inode: ev.inode,
            http_path: p.http_path.clone(),
            client_pid: match p.tuple {
                // The client's socket has the server's addresses swapped.
                Some((local, remote)) => self.client_tuples.get(&(remote, local)).copied(),
                None => self.client_writes.get(&p.inode).copied(),
            }
            .filter(|c| *c != ev.pid),
            tuple: p.tuple,
            evidence,
        })
    }
}

/// A legacy SSE session's name from its endpoint (`/messages/?session_id=…`, maybe
/// a full URL) or a POST's path to it: the query, digested (the session id lets
/// anyone who knows it post into the session: it does not leave the host).
fn sse_session(endpoint: &str) -> String {
    use sha2::Digest as _;
    let query = endpoint.rsplit_once('?').map_or(endpoint, |(_, q)| q);
    let digest = sha2::Sha256::digest(query.as_bytes());
    format!("sse:{}", &hex::encode(digest)[..16])
}

/// Requests whose answer has a shape only MCP gives it: a pair confirms a server
/// whose handshake the agent did not see.
fn is_paired_method(method: &str) -> bool {
    matches!(
        method,
        "tools/list" | "tools/call" | "resources/list" | "resources/read" | "prompts/list" | "prompts/get"
    )
}

/// The answer has the members MCP defines for `method`, with their types.
fn has_mcp_result_shape(method: &str, result: &Value) -> bool {
    let list = |key: &str, member: &str| {
        result
            .get(key)
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().all(|x| x.get(member).is_some()))
    };
    match method {
        "tools/list" => {
            list("tools", "name")
                && result["tools"].as_array().is_some_and(|t| {
                    t.iter()
                        .all(|t| t.get("inputSchema").is_some_and(Value::is_object))
                })
        }
        "tools/call" => {
            list("content", "type") || result.get("structuredContent").is_some_and(Value::is_object)
        }
        "resources/list" => list("resources", "uri"),
        "resources/read" => list("contents", "uri"),
        "prompts/list" => list("prompts", "name"),
        "prompts/get" => list("messages", "role"),
        _ => false,
    }
}

fn is_handshake(method: &str) -> bool {
    method == "initialize" || method == "server/discover"
}

fn meta<'a>(params: &'a Value, key: &str) -> Option<&'a Value> {
    params
        .get("_meta")
        .and_then(|m| m.get(format!("io.modelcontextprotocol/{key}")))
}

/// The version the client asked for: `params.protocolVersion` (legacy) or the
/// `_meta` key (2026-07-28). LSP's `initialize` has neither.
fn requested_version(method: &str, params: &Value) -> Option<String> {
    let v = if method == "initialize" {
        params.get("protocolVersion")
    } else {
        meta(params, "protocolVersion")
    };
    v.and_then(Value::as_str)
        .filter(|v| is_protocol_version(v))
        .map(str::to_string)
}

fn client_info(method: &str, params: &Value) -> (Option<String>, Option<String>) {
    let info = if method == "initialize" {
        params.get("clientInfo")
    } else {
        meta(params, "clientInfo")
    };
    let text = |k: &str| {
        info.and_then(|i| i.get(k))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    (text("name"), text("version"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(pid: u32, inode: u64, channel: Channel, dir: Direction, data: &[u8]) -> PayloadEvent {
        PayloadEvent {
            ts_ns: 1,
            pid,
            tid: pid,
            fd: 3,
            inode,
            channel,
            direction: dir,
            total_len: data.len() as u32,
            truncated: false,
            data: data.to_vec(),
            tuple: None,
        }
    }

    #[test]
    fn python_sdk_legacy_handshake_over_pipes() {
        let mut r = Recognizer::default();
        // The host writes the request into the server's stdin pipe (inode 10)...
        let req = br#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"mcp","version":"0.1.0"}}}
"#;
        assert!(r
            .observe(&ev(100, 10, Channel::Pipe, Direction::Write, req))
            .detections
            .is_empty());
        // ...the server reads it and answers on its stdout pipe (inode 11).
        assert!(r
            .observe(&ev(200, 10, Channel::Pipe, Direction::Read, req))
            .detections
            .is_empty());
        let resp = br#"{"jsonrpc":"2.0","id":1,"result":{"capabilities":{"tools":{"listChanged":false}},"protocolVersion":"2025-11-25","serverInfo":{"name":"mcp-git","version":"2026.10.19"}}}
"#;
        let d = r
            .observe(&ev(200, 11, Channel::Pipe, Direction::Write, resp))
            .detections
            .pop()
            .unwrap();
        assert_eq!(d.pid, 200);
        assert_eq!(d.transport, Transport::Stdio);
        assert_eq!(d.protocol_version.as_deref(), Some("2025-11-25"));
        assert_eq!(d.server_name.as_deref(), Some("mcp-git"));
        assert_eq!(d.server_version.as_deref(), Some("2026.10.19"));
        assert_eq!(d.client_name.as_deref(), Some("mcp"));
        assert_eq!(d.client_pid, Some(100));
        assert_eq!(d.capabilities, vec!["tools"]);
    }

    #[test]
    fn modern_discover_without_initialize() {
        let mut r = Recognizer::default();
        let req = br#"{"jsonrpc":"2.0","id":1,"method":"server/discover","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"mcp","version":"0.1.0"},"io.modelcontextprotocol/clientCapabilities":{}}}}
"#;
        r.observe(&ev(5, 1, Channel::Pipe, Direction::Read, req));
        let resp = br#"{"jsonrpc":"2.0","id":1,"result":{"cacheScope":"private","capabilities":{"tools":{"listChanged":false}},"resultType":"complete","supportedVersions":["2026-07-28"],"ttlMs":0,"_meta":{"io.modelcontextprotocol/serverInfo":{"name":"mcp-time","version":"2026.10.19"}}}}
"#;
        let d = r
            .observe(&ev(5, 2, Channel::Pipe, Direction::Write, resp))
            .detections
            .pop()
            .unwrap();
        assert_eq!(d.protocol_version.as_deref(), Some("2026-07-28"));
        assert_eq!(d.server_name.as_deref(), Some("mcp-time"));
        assert_eq!(d.client_name.as_deref(), Some("mcp"));
    }

    #[test]
    fn ts_key_order_and_socketpair_split_writes() {
        let mut r = Recognizer::default();
        let req = br#"{"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"ts-capture-client","version":"0.0.1"}},"jsonrpc":"2.0","id":0}
"#;
        r.observe(&ev(7, 40, Channel::Unix, Direction::Read, &req[..20]));
        r.observe(&ev(7, 40, Channel::Unix, Direction::Read, &req[20..]));
        let resp = br#"{"result":{"protocolVersion":"2025-11-25","capabilities":{"tools":{"listChanged":true}},"serverInfo":{"name":"secure-filesystem-server","version":"0.2.0"}},"jsonrpc":"2.0","id":0}
"#;
        let d = r
            .observe(&ev(7, 40, Channel::Unix, Direction::Write, resp))
            .detections
            .pop()
            .unwrap();
        assert_eq!(d.server_name.as_deref(), Some("secure-filesystem-server"));
        assert_eq!(d.channel, Channel::Unix);
    }

    #[test]
    fn streamable_http_with_sse_answer() {
        let mut r = Recognizer::default();
        let body = br#"{"jsonrpc":"2.0","id":2,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"mcp","version":"0.1.0"}}}"#;
        let head = format!(
            "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:3001\r\naccept: application/json, text/event-stream\r\ncontent-type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        r.observe(&ev(9, 70, Channel::Tcp, Direction::Read, head.as_bytes()));
        r.observe(&ev(9, 70, Channel::Tcp, Direction::Read, body));
        let resp_head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nmcp-session-id: ec3d\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(r
            .observe(&ev(9, 70, Channel::Tcp, Direction::Write, resp_head))
            .detections
            .is_empty());
        let data = br#"event: message
data: {"result":{"protocolVersion":"2025-11-25","capabilities":{},"serverInfo":{"name":"mcp-servers/everything","title":"Everything Reference Server","version":"2.0.0"}},"jsonrpc":"2.0","id":2}

"#;
        let mut chunk = format!("{:x}\r\n", data.len()).into_bytes();
        chunk.extend_from_slice(data);
        chunk.extend_from_slice(b"\r\n");
        let d = r
            .observe(&ev(9, 70, Channel::Tcp, Direction::Write, &chunk))
            .detections
            .pop()
            .unwrap();
        assert_eq!(d.transport, Transport::StreamableHttp);
        assert_eq!(d.http_path.as_deref(), Some("/mcp"));
        assert_eq!(d.server_title.as_deref(), Some("Everything Reference Server"));
    }

    #[test]
    fn legacy_sse_pairs_across_connections() {
        let mut r = Recognizer::default();
        r.observe(&ev(
            3,
            1,
            Channel::Tcp,
            Direction::Read,
            b"GET /sse HTTP/1.1\r\nhost: a\r\naccept: text/event-stream\r\n\r\n",
        ));
        r.observe(&ev(
            3,
            1,
            Channel::Tcp,
            Direction::Write,
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\nevent: endpoint\r\ndata: /messages/?session_id=4d05\r\n\r\n",
        ));
        let body = br#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2024-11-05","capabilities":{},"clientInfo":{"name":"c","version":"1"}}}"#;
        let mut post = format!(
            "POST /messages/?session_id=4d05 HTTP/1.1\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        post.extend_from_slice(body);
        r.observe(&ev(3, 2, Channel::Tcp, Direction::Read, &post));
        let d = r
            .observe(&ev(
                3,
                1,
                Channel::Tcp,
                Direction::Write,
                b"event: message\r\ndata: {\"jsonrpc\":\"2.0\",\"id\":0,\"result\":{\"protocolVersion\":\"2024-11-05\",\"capabilities\":{},\"serverInfo\":{\"name\":\"legacy\",\"version\":\"1\"}}}\r\n\r\n",
            ))
            .detections
            .pop()
            .unwrap();
        assert_eq!(d.transport, Transport::Sse);
        assert_eq!(d.server_name.as_deref(), Some("legacy"));
    }

    /// The TS SDK everything server (Express, Node 20) as strace showed it: the SSE
    /// stream's head and `endpoint` event in one writev, 202 "Accepted" chunked answers
    /// on the POST connection, and the initialize result as one writev of
    /// ["7f9", CRLF, event, CRLF] (the kernel record is their concatenation).
    #[test]
    fn ts_sdk_legacy_sse_with_node_chunked_writes() {
        let mut r = Recognizer::default();
        let tcp = |inode, dir, data: &[u8]| {
            let mut e = ev(31036, inode, Channel::Tcp, dir, data);
            e.tuple = Some((
                "127.0.0.1:39102".parse().unwrap(),
                "127.0.0.1:50000".parse().unwrap(),
            ));
            e
        };
        r.observe(&tcp(20, Direction::Read, b"GET /sse HTTP/1.1\r\nHost: 127.0.0.1:39102\r\nAccept-Encoding: gzip, deflate\r\nConnection: keep-alive\r\nUser-Agent: python-httpx2/2.16.2\r\nAccept: text/event-stream\r\nCache-Control: no-store\r\n\r\n"));
        r.observe(&tcp(20, Direction::Write, b"HTTP/1.1 200 OK\r\nX-Powered-By: Express\r\nAccess-Control-Allow-Origin: *\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache, no-transform\r\nConnection: keep-alive\r\nDate: Thu, 03 Dec 2026 07:00:05 GMT\r\nTransfer-Encoding: chunked\r\n\r\n4f\r\nevent: endpoint\ndata: /message?sessionId=fc6e6539-176b-4bff-a6da-bbc1040c6d7d\n\n\r\n"));
        let body = br#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"mcp","version":"0.1.0"}}}"#;
        let mut post = format!("POST /message?sessionId=fc6e6539-176b-4bff-a6da-bbc1040c6d7d HTTP/1.1\r\nHost: 127.0.0.1:39102\r\nAccept: */*\r\nAccept-Encoding: gzip, deflate\r\nConnection: keep-alive\r\nUser-Agent: python-httpx2/2.16.2\r\nContent-Length: {}\r\nContent-Type: application/json\r\n\r\n", body.len()).into_bytes();
        post.extend_from_slice(body);
        r.observe(&tcp(21, Direction::Read, &post));
        r.observe(&tcp(21, Direction::Write, b"HTTP/1.1 202 Accepted\r\nX-Powered-By: Express\r\nAccess-Control-Allow-Origin: *\r\nDate: Thu, 03 Dec 2026 07:00:05 GMT\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nTransfer-Encoding: chunked\r\n\r\n8\r\nAccepted\r\n0\r\n\r\n"));
        let event = "event: message\ndata: {\"result\":{\"protocolVersion\":\"2025-11-25\",\"capabilities\":{\"tools\":{\"listChanged\":true},\"logging\":{}},\"serverInfo\":{\"name\":\"mcp-servers/everything\",\"title\":\"Everything Reference Server\",\"version\":\"2.0.0\"},\"instructions\":\"# Everything Server \u{2013} Server Instructions\\n\"},\"jsonrpc\":\"2.0\",\"id\":1}\n\n";
        let mut rec = format!("{:x}", event.len()).into_bytes();
        for part in [&b"\r\n"[..], event.as_bytes(), b"\r\n"] {
            rec.extend_from_slice(part);
        }
        let d = r
            .observe(&tcp(20, Direction::Write, &rec))
            .detections
            .pop()
            .unwrap();
        assert_eq!(d.transport, Transport::Sse);
        assert_eq!(d.server_name.as_deref(), Some("mcp-servers/everything"));
        assert_eq!(d.server_version.as_deref(), Some("2.0.0"));
        assert_eq!(
            d.http_path.as_deref(),
            Some("/message?sessionId=fc6e6539-176b-4bff-a6da-bbc1040c6d7d")
        );
    }

    /// Streamable HTTP from the same server: the 400 to the `server/discover` probe,
    /// then the initialize answer as ONE writev of 8 iovecs — head + "31", CRLF, the
    /// priming event (`id: …\ndata: \n\n`), CRLF, "822", CRLF, the result event, CRLF.
    #[test]
    fn ts_sdk_streamable_http_priming_event_and_result_in_one_write() {
        let mut r = Recognizer::default();
        let post = |body: &str, extra: &str| {
            format!("POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:39101\r\nAccept-Encoding: gzip, deflate\r\nConnection: keep-alive\r\nUser-Agent: python-httpx2/2.16.2\r\naccept: application/json, text/event-stream\r\ncontent-type: application/json\r\n{extra}Content-Length: {}\r\n\r\n{body}", body.len()).into_bytes()
        };
        let discover = r#"{"jsonrpc":"2.0","id":1,"method":"server/discover","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"mcp","version":"0.1.0"},"io.modelcontextprotocol/clientCapabilities":{}}}}"#;
        r.observe(&ev(
            30279,
            20,
            Channel::Tcp,
            Direction::Read,
            &post(
                discover,
                "mcp-protocol-version: 2026-07-28\r\nmcp-method: server/discover\r\n",
            ),
        ));
        let err = r#"{"jsonrpc":"2.0","error":{"code":-32000,"message":"Bad Request: Server not initialized"},"id":null}"#;
        let resp = format!("HTTP/1.1 400 Bad Request\r\nX-Powered-By: Express\r\ncontent-type: application/json\r\ncontent-length: {}\r\nConnection: keep-alive\r\n\r\n{err}", err.len());
        assert!(r
            .observe(&ev(30279, 20, Channel::Tcp, Direction::Write, resp.as_bytes()))
            .detections
            .is_empty());
        let init = r#"{"jsonrpc":"2.0","id":2,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"mcp","version":"0.1.0"}}}"#;
        r.observe(&ev(30279, 20, Channel::Tcp, Direction::Read, &post(init, "")));
        let priming = "id: 9cd39f2f-2c58-4862-947b-b58d5e7a46f6\ndata: \n\n";
        let event = "event: message\nid: 8e283fa6-925e-478b-98e3-0c19901ac6b1\ndata: {\"result\":{\"protocolVersion\":\"2025-11-25\",\"capabilities\":{\"tools\":{\"listChanged\":true}},\"serverInfo\":{\"name\":\"mcp-servers/everything\",\"title\":\"Everything Reference Server\",\"version\":\"2.0.0\"}},\"jsonrpc\":\"2.0\",\"id\":2}\n\n";
        let mut rec = format!("HTTP/1.1 200 OK\r\nX-Powered-By: Express\r\ncache-control: no-cache, no-transform\r\nconnection: keep-alive\r\ncontent-type: text/event-stream\r\nmcp-session-id: d238a505-59e9-4be0-bc54-e04f9d851b1b\r\nx-accel-buffering: no\r\nTransfer-Encoding: chunked\r\n\r\n{:x}", priming.len()).into_bytes();
        let size = format!("{:x}", event.len());
        for part in [
            &b"\r\n"[..],
            priming.as_bytes(),
            b"\r\n",
            size.as_bytes(),
            b"\r\n",
            event.as_bytes(),
            b"\r\n",
        ] {
            rec.extend_from_slice(part);
        }
        let d = r
            .observe(&ev(30279, 20, Channel::Tcp, Direction::Write, &rec))
            .detections
            .pop()
            .unwrap();
        assert_eq!(d.transport, Transport::StreamableHttp);
        assert_eq!(d.server_name.as_deref(), Some("mcp-servers/everything"));
        assert_eq!(d.protocol_version.as_deref(), Some("2025-11-25"));
        assert_eq!(d.http_path.as_deref(), Some("/mcp"));
        // What the kernel delivered before the fix: only the first 4 iovecs (head,
        // CRLF, priming event, CRLF), and nothing about the rest: no detection.
        let mut r2 = Recognizer::default();
        r2.observe(&ev(1, 20, Channel::Tcp, Direction::Read, &post(init, "")));
        let cut = rec.len() - (size.len() + 2 + event.len() + 2);
        assert!(r2
            .observe(&ev(1, 20, Channel::Tcp, Direction::Write, &rec[..cut]))
            .detections
            .is_empty());
    }

    #[test]
    fn lsp_and_json_logs_and_pipelines_are_not_mcp() {
        let mut r = Recognizer::default();
        // LSP initialize, even if it were newline framed: no protocolVersion.
        let req = br#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"processId":1,"rootUri":"file:///w","capabilities":{}}}
"#;
        r.observe(&ev(1, 1, Channel::Pipe, Direction::Read, req));
        let resp = br#"{"jsonrpc":"2.0","id":1,"result":{"capabilities":{"hoverProvider":true},"serverInfo":{"name":"pylsp","version":"1.12"}}}
"#;
        assert!(r
            .observe(&ev(1, 2, Channel::Pipe, Direction::Write, resp))
            .detections
            .is_empty());
        // A pipeline that reads a handshake and writes the same request back out.
        let mcp_req =
            br#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25"}}
"#;
        r.observe(&ev(2, 3, Channel::Pipe, Direction::Read, mcp_req));
        assert!(r
            .observe(&ev(2, 4, Channel::Pipe, Direction::Write, mcp_req))
            .detections
            .is_empty());
        // JSON logs.
        let log = b"{\"level\":\"info\",\"id\":1,\"result\":{\"protocolVersion\":\"2025-11-25\"}}\n";
        assert!(r
            .observe(&ev(2, 4, Channel::Pipe, Direction::Write, log))
            .detections
            .is_empty());
        // Garbage lines are counted.
        assert_eq!(
            r.observe(&ev(2, 4, Channel::Pipe, Direction::Write, b"{not json\n"))
                .bad_json,
            1
        );
    }

    #[test]
    fn a_response_in_another_process_does_not_confirm() {
        let mut r = Recognizer::default();
        let req =
            br#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25"}}
"#;
        r.observe(&ev(1, 1, Channel::Pipe, Direction::Read, req));
        let resp =
            br#"{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-11-25","serverInfo":{"name":"x"}}}
"#;
        assert!(r
            .observe(&ev(99, 2, Channel::Pipe, Direction::Write, resp))
            .detections
            .is_empty());
    }

    /// A fresh server's session is audited from its handshake on: a client that
    /// pipelines `initialize`, `notifications/initialized` and `tools/list` (and a
    /// server that answers both in one write) has all of it in the audit, in order,
    /// though the agent confirms the server only at the handshake's answer.
    #[test]
    fn the_session_is_audited_from_its_handshake_even_when_pipelined() {
        let mut r = Recognizer::default();
        let reqs = br#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}
{"jsonrpc":"2.0","method":"notifications/initialized"}
{"jsonrpc":"2.0","id":2,"method":"tools/list"}
"#;
        let out = r.observe(&ev(9, 20, Channel::Pipe, Direction::Read, reqs));
        assert!(out.messages.is_empty(), "not a server yet");
        let answers = br#"{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-11-25","capabilities":{"tools":{}},"serverInfo":{"name":"s","version":"1"},"instructions":"Use me."}}
{"jsonrpc":"2.0","id":2,"result":{"tools":[]}}
"#;
        let out = r.observe(&ev(9, 21, Channel::Pipe, Direction::Write, answers));
        assert_eq!(out.detections.len(), 1);
        let seen: Vec<(Direction, String)> = out
            .messages
            .iter()
            .map(|m| {
                let what = match &m.message {
                    Message::Request { method, .. } | Message::Notification { method } => method.clone(),
                    Message::Response { id, .. } => format!("answer {id}"),
                };
                (m.direction, what)
            })
            .collect();
        assert_eq!(
            seen,
            [
                (Direction::Read, "initialize".to_string()),
                (Direction::Read, "notifications/initialized".to_string()),
                (Direction::Read, "tools/list".to_string()),
                (Direction::Write, "answer n:1".to_string()),
                (Direction::Write, "answer n:2".to_string()),
            ]
        );
        // Later messages go on to the audit as they come.
        let call = br#"{"jsonrpc":"2.0","id":3,"method":"ping"}
"#;
        let out = r.observe(&ev(9, 20, Channel::Pipe, Direction::Read, call));
        assert_eq!(out.messages.len(), 1);
    }

    /// A server running before the agent: no handshake to see, but a tool call read
    /// and an answer of MCP's shape written confirm it, and the pair is audited.
    #[test]
    fn a_request_and_an_answer_of_mcps_shape_confirm_a_server_without_handshake() {
        let mut r = Recognizer::default();
        let call = br#"{"jsonrpc":"2.0","id":41,"method":"tools/call","params":{"name":"sleep","arguments":{"seconds":0}}}
"#;
        assert!(r
            .observe(&ev(12, 30, Channel::Pipe, Direction::Read, call))
            .detections
            .is_empty());
        let answer = br#"{"jsonrpc":"2.0","id":41,"result":{"content":[{"type":"text","text":"slept"}],"isError":false}}
"#;
        let out = r.observe(&ev(12, 31, Channel::Pipe, Direction::Write, answer));
        assert_eq!(out.detections.len(), 1, "{out:?}");
        let d = &out.detections[0];
        assert_eq!(d.protocol_version, None);
        assert!(
            d.evidence[0].contains("tools/call request read on pipe:[30]"),
            "{:?}",
            d.evidence
        );
        assert_eq!(out.messages.len(), 2, "the pair goes to the audit");
        // Once audited, later calls do not confirm it again.
        r.observe(&ev(12, 30, Channel::Pipe, Direction::Read, call));
        assert!(r
            .observe(&ev(12, 31, Channel::Pipe, Direction::Write, answer))
            .detections
            .is_empty());
    }

    #[test]
    fn answers_without_mcps_shape_do_not_confirm() {
        let mut r = Recognizer::default();
        for (req, resp) in [
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{}}"#,
                r#"{"jsonrpc":"2.0","id":1,"result":{"content":"text"}}"#,
            ),
            (
                r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#,
                r#"{"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"x"}]}}"#,
            ),
            (
                r#"{"jsonrpc":"2.0","id":3,"method":"build/run"}"#,
                r#"{"jsonrpc":"2.0","id":3,"result":{"content":[{"type":"text"}]}}"#,
            ),
        ] {
            r.observe(&ev(
                13,
                1,
                Channel::Pipe,
                Direction::Read,
                format!("{req}\n").as_bytes(),
            ));
            let out = r.observe(&ev(
                13,
                2,
                Channel::Pipe,
                Direction::Write,
                format!("{resp}\n").as_bytes(),
            ));
            assert!(out.detections.is_empty(), "{req} → {resp}");
        }
    }
}
