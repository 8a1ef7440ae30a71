//! The MCP inventory as SIEM records, so the SIEM the SOC already runs answers
//! "every MCP server in the fleet, sanctioned or not":
//!
//! | inventory event | when | OCSF 1.8.0 | ECS |
//! |---|---|---|---|
//! | `appeared` | suspected at launch, or confirmed without a suspicion before | Application Lifecycle (6002) Start (3) | `event.kind: event`, `event.type: start` |
//! | `changed` | confirmed after a suspicion, or seen again with a new identity | Application Lifecycle (6002) Update (8) | `event.type: change` |
//! | `gone` | the process exited, or the suspicion was withdrawn | Application Lifecycle (6002) Stop (4) | `event.type: end` |
//! | `snapshot` | every live server, periodically and at start-up | Software Inventory Info (5020) Collect (2) | `event.kind: asset`, `event.type: info` |
//!
//! The server is `app` / `product` (uid = the stable server uid), its process
//! `actor.process` (launch chain as `parent_process`), the host `device`; a snapshot's
//! uid is `metadata.correlation_uid`. Everything agent-specific, under the same names
//! in both formats: `unmapped.inventory` (OCSF) / `mcpwatch.inventory` (ECS), with the
//! full server record beside it as `mcp_server`.

use serde_json::{json, Map, Value};

use super::{ecs, host::HostInfo, ocsf};
use crate::mcp::inventory::{Announce, McpServer, McpServerEvent, ServerAction, ServerState};

/// What happened to the inventory, in the SIEM's terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    Appeared,
    Changed,
    Gone,
    Snapshot,
}

impl Change {
    /// A server's first SIEM record is `appeared`, whatever its state then (a
    /// suspect past its grace period, or confirmed); the MCP stage decides which
    /// record is the first.
    pub fn of(e: &McpServerEvent) -> Self {
        match e.action {
            ServerAction::Exited | ServerAction::Dismissed => Change::Gone,
            ServerAction::Snapshot => Change::Snapshot,
            _ if e.announce == Announce::First => Change::Appeared,
            _ => Change::Changed,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Change::Appeared => "appeared",
            Change::Changed => "changed",
            Change::Gone => "gone",
            Change::Snapshot => "snapshot",
        }
    }

    /// The OCSF class name: the record's `kind` (HEC sourcetype `ocsf:<kind>`).
    pub fn ocsf_class(self) -> &'static str {
        match self {
            Change::Snapshot => "software_info",
            _ => "application_lifecycle",
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

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// A name that does not change once the handshake is seen: the package's, else what
/// the server calls itself, else its file.
fn display_name(s: &McpServer) -> String {
    if let Some(n) = s
        .package
        .as_ref()
        .filter(|p| p.ecosystem != "script")
        .and_then(|p| p.name.clone())
    {
        return n;
    }
    if let Some(n) = &s.name {
        return n.clone();
    }
    if let Some(p) = &s.package {
        return basename(&p.path).to_string();
    }
    s.exe
        .as_deref()
        .or(s.argv.first().map(String::as_str))
        .map_or_else(|| "unknown".to_string(), |e| basename(e).to_string())
}

fn version(s: &McpServer) -> Option<&str> {
    s.package
        .as_ref()
        .and_then(|p| p.version.as_deref())
        .or(s.version.as_deref())
}

/// `pkg:npm/%40scope/name@1.2.3`, `pkg:pypi/name@1.2.3` (purl-spec).
fn purl(ecosystem: &str, name: &str, version: &str) -> Option<String> {
    match ecosystem {
        "npm" => Some(format!("pkg:npm/{}@{version}", name.replace('@', "%40"))),
        "pypi" => Some(format!(
            "pkg:pypi/{}@{version}",
            name.to_lowercase().replace(['_', '.'], "-")
        )),
        _ => None,
    }
}

/// The server as an OCSF `product` (`app` in Application Lifecycle).
fn product(s: &McpServer) -> Value {
    let mut p = json!({"name": display_name(s), "uid": s.server_uid});
    if let Some(v) = version(s) {
        p["version"] = json!(v);
    }
    let path = s.package.as_ref().map(|p| p.path.as_str()).or(s.exe.as_deref());
    if let Some(path) = path {
        p["path"] = json!(path);
    }
    // An npm scope names its publisher; other ecosystems do not say.
    if let Some(scope) = s
        .package
        .as_ref()
        .filter(|p| p.ecosystem == "npm")
        .and_then(|p| p.name.as_deref()?.strip_prefix('@')?.split_once('/'))
    {
        p["vendor_name"] = json!(scope.0);
    }
    p
}

/// The package as an OCSF `package` (name and version are required there).
fn package(s: &McpServer) -> Option<Value> {
    let p = s.package.as_ref()?;
    let (name, version) = (p.name.as_deref()?, p.version.as_deref()?);
    let mut o = json!({"name": name, "version": version, "type_id": 1, "type": "Application"});
    if let Some(purl) = purl(p.ecosystem, name, version) {
        o["purl"] = json!(purl);
    }
    o["package_manager"] = json!(match p.ecosystem {
        "pypi" => "pip",
        other => other,
    });
    Some(o)
}

/// The server process as an OCSF `process`, its launch chain up to the host nested
/// as `parent_process`.
fn process(s: &McpServer) -> Value {
    let mut o = Map::new();
    o.insert("pid".into(), json!(s.pid));
    o.insert("uid".into(), json!(s.entity_id));
    let comm = s.launch_chain.first().map(|a| a.comm.to_string());
    if let Some(name) = comm.or_else(|| s.exe.as_deref().map(|e| basename(e).to_string())) {
        o.insert("name".into(), json!(name));
    }
    o.insert("cmd_line".into(), json!(s.argv.join(" ")));
    if let Some(exe) = &s.exe {
        let mut file = json!({"name": basename(exe), "path": exe, "type_id": 1, "type": "Regular File"});
        if let Some(sha) = &s.sha256 {
            file["hashes"] = json!([{"algorithm_id": 3, "algorithm": "SHA-256", "value": sha}]);
        }
        o.insert("file".into(), file);
    }
    let mut user = json!({"uid": s.uid.to_string()});
    if let Some(name) = &s.user {
        user["name"] = json!(name);
    }
    o.insert("user".into(), user);
    let mut parent: Option<Map<String, Value>> = None;
    for a in s.launch_chain.iter().skip(1).rev() {
        let mut node = ocsf::ancestor(a);
        if let Some(up) = parent.take() {
            node.insert("parent_process".into(), Value::Object(up));
        }
        parent = Some(node);
    }
    if let Some(up) = parent {
        o.insert("parent_process".into(), Value::Object(up));
    }
    Value::Object(o)
}

/// The agent's inventory fields, flat (Loki's `| json` and SPL field names stay short):
/// the same block in OCSF (`unmapped.inventory`) and ECS (`mcpwatch.inventory`).
pub fn inventory_fields(e: &McpServerEvent) -> Value {
    let s = &e.server;
    let change = Change::of(e);
    let mut o = json!({
        "event": change.name(),
        "action": e.action,
        "server_uid": s.server_uid,
        "fingerprint": s.fingerprint,
        "instance_uid": s.id,
        "sanctioned": s.sanctioned,
        "sanctioned_entry": s.sanctioned_entry,
        "state": state_name(s.state),
        "confidence": s.confidence,
        "name": display_name(s),
        "server_name": s.name,
        "version": version(s),
        "protocol_version": s.protocol_version,
        "transport": s.transport,
        "listen_address": s.listen_address,
        "package_ecosystem": s.package.as_ref().map(|p| p.ecosystem),
        "package_name": s.package.as_ref().and_then(|p| p.name.clone()),
        "package_version": s.package.as_ref().and_then(|p| p.version.clone()),
        "pid": s.pid,
        "exe": s.exe,
        "exe_sha256": s.sha256,
        "user": s.user,
        "uid": s.uid,
        "host_process": s.host.as_ref().map(|h| h.name.clone()),
        "host_pid": s.host.as_ref().map(|h| h.pid),
        "client_name": s.client.name,
        "container_id": s.container_id,
        "first_seen": s.first_seen,
        "last_seen": s.last_seen,
        "exited_at": s.exited_at,
    });
    if let Some(p) = e.previous_state {
        o["previous_state"] = json!(state_name(p));
    }
    if let Some(snap) = &e.snapshot {
        o["snapshot_uid"] = json!(snap.uid);
        o["snapshot_time"] = json!(snap.time);
        o["snapshot_index"] = json!(snap.index);
        o["snapshot_count"] = json!(snap.count);
    }
    o
}

fn message(e: &McpServerEvent) -> String {
    let s = &e.server;
    let status = match &s.sanctioned_entry {
        Some(entry) => format!("sanctioned by {entry}"),
        None => "shadow: not on the sanctioned list".into(),
    };
    let what = match Change::of(e) {
        Change::Appeared => "appeared",
        Change::Changed => "changed",
        Change::Gone => "is gone",
        Change::Snapshot => "is running",
    };
    format!(
        "MCP server {} {} {what} (pid {}, {}, {status})",
        display_name(s),
        version(s).unwrap_or("?"),
        s.pid,
        state_name(s.state)
    )
}

/// OCSF 1.8.0: Application Lifecycle (6002) for changes, Software Inventory Info
/// (5020) for a snapshot.
pub fn ocsf(e: &McpServerEvent, host: &HostInfo, event_uid: &str, time_ms: u64) -> Value {
    let change = Change::of(e);
    let mut metadata = ocsf::metadata(event_uid);
    let (class_uid, class_name, category_uid, category_name, activity_id, activity) = match change {
        Change::Appeared => (
            6002,
            "Application Lifecycle",
            6,
            "Application Activity",
            3,
            "Start",
        ),
        Change::Changed => (
            6002,
            "Application Lifecycle",
            6,
            "Application Activity",
            8,
            "Update",
        ),
        Change::Gone => (
            6002,
            "Application Lifecycle",
            6,
            "Application Activity",
            4,
            "Stop",
        ),
        Change::Snapshot => (5020, "Software Inventory Info", 5, "Discovery", 2, "Collect"),
    };
    if let Some(snap) = &e.snapshot {
        metadata["correlation_uid"] = json!(snap.uid);
    }
    let mut ev = json!({
        "class_uid": class_uid,
        "class_name": class_name,
        "category_uid": category_uid,
        "category_name": category_name,
        "activity_id": activity_id,
        "activity_name": activity,
        "type_uid": class_uid * 100 + activity_id,
        "type_name": format!("{class_name}: {activity}"),
        "severity_id": 1,
        "severity": "Informational",
        "time": time_ms,
        "message": message(e),
        "metadata": metadata,
        "device": ocsf::device(host),
        "actor": {"process": process(&e.server)},
        "unmapped": {
            "inventory": inventory_fields(e),
            "mcp_server": e.server,
        },
    });
    if change == Change::Snapshot {
        ev["product"] = product(&e.server);
        if let Some(p) = package(&e.server) {
            ev["package"] = p;
        }
    } else {
        ev["app"] = product(&e.server);
    }
    ev
}

/// ECS: a process lifecycle event, or an asset record for a snapshot.
pub fn ecs(e: &McpServerEvent, host: &HostInfo, event_uid: &str, timestamp: &str) -> Value {
    let s = &e.server;
    let change = Change::of(e);
    let mut doc = ecs::common(host, timestamp, event_uid);
    let (kind, ty) = match change {
        Change::Appeared => ("event", "start"),
        Change::Changed => ("event", "change"),
        Change::Gone => ("event", "end"),
        Change::Snapshot => ("asset", "info"),
    };
    doc["message"] = json!(message(e));
    doc["event"] = json!({
        "id": event_uid, "module": "mcpwatch", "dataset": "mcpwatch.inventory",
        "kind": kind, "category": ["process"], "type": [ty],
        "action": format!("mcp-server-{}", change.name()),
    });
    let mut p = json!({
        "pid": s.pid,
        "entity_id": s.entity_id,
        "executable": s.exe,
        "args": s.argv,
        "args_count": s.argv.len(),
        "command_line": s.argv.join(" "),
    });
    if let Some(a) = s.launch_chain.first() {
        p["name"] = json!(a.comm);
    }
    if let Some(sha) = &s.sha256 {
        p["hash"] = json!({"sha256": sha});
    }
    if let Some(parent) = s.launch_chain.get(1) {
        p["parent"] = json!({
            "pid": parent.pid, "entity_id": parent.entity_id, "name": parent.comm,
            "executable": parent.exe, "args": parent.argv, "command_line": parent.argv.join(" "),
        });
    }
    doc["process"] = p;
    doc["user"] = json!({"id": s.uid.to_string(), "name": s.user});
    if let Some(pkg) = &s.package {
        let mut o =
            json!({"name": pkg.name, "version": pkg.version, "path": pkg.path, "type": pkg.ecosystem});
        if let Some(sha) = &pkg.sha256 {
            o["checksum"] = json!(sha);
        }
        doc["package"] = o;
    }
    if let Some(c) = &s.container_id {
        doc["container"] = json!({"id": c});
    }
    doc["mcpwatch"] = json!({"inventory": inventory_fields(e), "mcp_server": s});
    doc
}

#[cfg(test)]
pub(crate) mod fixtures {
    use std::sync::Arc;

    use crate::mcp::{
        identity::PackageId,
        inventory::{ClientInfo, Confidence, HostProcess, McpServer, ServerState},
        recognizer::Transport,
    };
    use crate::state::view::AncestorView;

    pub fn server() -> McpServer {
        let chain = vec![
            AncestorView::new(
                4242,
                "4242:1000",
                "mcp-server-time",
                Some("/venv/bin/mcp-server-time"),
                &["/venv/bin/mcp-server-time"],
            ),
            AncestorView::new(4200, "4200:900", "claude", Some("/usr/bin/claude"), &["claude"]),
        ];
        McpServer {
            id: "mcp:4242:1000".into(),
            server_uid: "0123456789abcdef0123456789abcdef".into(),
            fingerprint: "fedcba9876543210fedcba9876543210".into(),
            sanctioned: true,
            sanctioned_entry: Some("time".into()),
            state: ServerState::Confirmed,
            confidence: Confidence::High,
            name: Some("mcp-time".into()),
            title: None,
            version: Some("1.0.0".into()),
            protocol_version: Some("2025-11-25".into()),
            transport: Some(Transport::Stdio),
            listen_address: None,
            http_path: None,
            capabilities: vec!["tools".into()],
            pid: 4242,
            entity_id: "4242:1000".into(),
            exe: Some(Arc::from("/venv/bin/mcp-server-time")),
            argv: vec!["/venv/bin/mcp-server-time".to_string()].into(),
            sha256: Some(Arc::from("a".repeat(64).as_str())),
            package: Some(PackageId {
                ecosystem: "pypi",
                name: Some("mcp-server-time".into()),
                version: Some("2026.10.19".into()),
                path: "/venv/lib/python3.11/site-packages/mcp_server_time-2026.10.19.dist-info".into(),
                sha256: None,
            }),
            uid: 1000,
            user: Some(Arc::from("alice")),
            container_id: None,
            container: None,
            host: Some(HostProcess {
                pid: 4200,
                entity_id: Some("4200:900".into()),
                exe: Some(Arc::from("/usr/bin/claude")),
                name: "claude".into(),
            }),
            client: ClientInfo {
                name: Some("claude-ai".into()),
                version: Some("0.1".into()),
                address: None,
            },
            launch_chain: chain,
            first_seen: "2026-11-22T00:00:00Z".into(),
            last_seen: "2026-11-22T00:00:01Z".into(),
            exited_at: None,
            evidence: vec!["initialize request read on pipe:[1]".into()],
            tools: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mcp::inventory::SnapshotInfo;

    pub(super) fn host() -> HostInfo {
        HostInfo {
            hostname: "host-01".into(),
            id: "0123456789abcdef0123456789abcdef".into(),
        }
    }

    pub(super) fn event(action: ServerAction, previous: Option<ServerState>) -> McpServerEvent {
        let mut server = fixtures::server();
        if action == ServerAction::Exited {
            server.state = ServerState::Exited;
            server.exited_at = Some("2026-11-22T00:00:09Z".into());
        }
        McpServerEvent {
            kind: "mcp_server",
            time: "2026-11-22T00:00:02Z".into(),
            action,
            detection_latency_ms: None,
            previous_state: previous,
            snapshot: (action == ServerAction::Snapshot).then(|| SnapshotInfo {
                uid: "snap-1".into(),
                time: "2026-11-22T00:00:02Z".into(),
                index: 1,
                count: 3,
            }),
            server,
            tools_listing: None,
            announce: match action {
                ServerAction::Suspected => Announce::First,
                ServerAction::Confirmed if previous.is_none() => Announce::First,
                _ => Announce::Again,
            },
        }
    }

    /// Every inventory event of the fixture server, as OCSF.
    pub(crate) fn all_ocsf() -> Vec<Value> {
        let mut shadow = event(ServerAction::Suspected, None);
        shadow.server.sanctioned = false;
        shadow.server.sanctioned_entry = None;
        shadow.server.package.as_mut().unwrap().ecosystem = "npm";
        shadow.server.package.as_mut().unwrap().name = Some("@acme/server-x".into());
        vec![
            ocsf(&shadow, &host(), "ev-0", 1),
            ocsf(&event(ServerAction::Confirmed, None), &host(), "ev-1", 1),
            ocsf(
                &event(ServerAction::Confirmed, Some(ServerState::Suspected)),
                &host(),
                "ev-2",
                2,
            ),
            ocsf(
                &event(ServerAction::Exited, Some(ServerState::Confirmed)),
                &host(),
                "ev-3",
                3,
            ),
            ocsf(&event(ServerAction::Snapshot, None), &host(), "ev-4", 4),
        ]
    }

    #[test]
    fn changes_map_to_lifecycle_activities_and_snapshots_to_software_inventory() {
        let v = all_ocsf();
        let classes: Vec<(u64, u64)> = v
            .iter()
            .map(|e| {
                (
                    e["class_uid"].as_u64().unwrap(),
                    e["activity_id"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(classes, [(6002, 3), (6002, 3), (6002, 8), (6002, 4), (5020, 2)]);
        for e in &v {
            assert_eq!(
                e["type_uid"].as_u64().unwrap(),
                e["class_uid"].as_u64().unwrap() * 100 + e["activity_id"].as_u64().unwrap()
            );
        }
        let events: Vec<&str> = v
            .iter()
            .map(|e| e["unmapped"]["inventory"]["event"].as_str().unwrap())
            .collect();
        assert_eq!(events, ["appeared", "appeared", "changed", "gone", "snapshot"]);
    }

    #[test]
    fn the_server_carries_its_stable_uid_and_status_everywhere() {
        let v = all_ocsf();
        let lifecycle = &v[1];
        assert_eq!(lifecycle["app"]["uid"], "0123456789abcdef0123456789abcdef");
        assert_eq!(lifecycle["app"]["name"], "mcp-server-time");
        assert_eq!(lifecycle["app"]["version"], "2026.10.19");
        assert_eq!(lifecycle["actor"]["process"]["pid"], 4242);
        assert_eq!(lifecycle["actor"]["process"]["parent_process"]["name"], "claude");
        assert_eq!(lifecycle["device"]["hostname"], "host-01");
        let inv = &lifecycle["unmapped"]["inventory"];
        assert_eq!(inv["sanctioned"], true);
        assert_eq!(inv["sanctioned_entry"], "time");
        assert_eq!(inv["fingerprint"], "fedcba9876543210fedcba9876543210");
        assert_eq!(inv["host_process"], "claude");
        assert_eq!(v[0]["unmapped"]["inventory"]["sanctioned"], false);
        assert_eq!(v[0]["app"]["vendor_name"], "acme");
        assert!(v[0]["message"].as_str().unwrap().contains("shadow"));
        let snap = &v[4];
        assert_eq!(snap["product"]["uid"], lifecycle["app"]["uid"]);
        assert_eq!(snap["package"]["purl"], "pkg:pypi/mcp-server-time@2026.10.19");
        assert_eq!(snap["metadata"]["correlation_uid"], "snap-1");
        assert_eq!(snap["unmapped"]["inventory"]["snapshot_count"], 3);
        assert!(snap.get("app").is_none() && lifecycle.get("product").is_none());
    }

    #[test]
    fn ecs_lifecycle_events_and_asset_snapshots() {
        let start = ecs(&event(ServerAction::Suspected, None), &host(), "e", "t");
        assert_eq!(start["event"]["kind"], "event");
        assert_eq!(start["event"]["type"][0], "start");
        assert_eq!(start["event"]["action"], "mcp-server-appeared");
        assert_eq!(start["process"]["parent"]["name"], "claude");
        assert_eq!(start["package"]["name"], "mcp-server-time");
        assert_eq!(
            start["mcpwatch"]["inventory"]["server_uid"],
            "0123456789abcdef0123456789abcdef"
        );
        let gone = ecs(&event(ServerAction::Exited, None), &host(), "e", "t");
        assert_eq!(gone["event"]["type"][0], "end");
        let snap = ecs(&event(ServerAction::Snapshot, None), &host(), "e", "t");
        assert_eq!(snap["event"]["kind"], "asset");
        assert_eq!(snap["mcpwatch"]["inventory"]["snapshot_uid"], "snap-1");
        assert_eq!(snap["host"]["id"], host().id);
    }

    #[test]
    fn purls_follow_the_spec() {
        assert_eq!(
            purl("npm", "@modelcontextprotocol/server-filesystem", "2026.8.31").unwrap(),
            "pkg:npm/%40modelcontextprotocol/server-filesystem@2026.8.31"
        );
        assert_eq!(
            purl("pypi", "MCP_Server.Time", "1.0").unwrap(),
            "pkg:pypi/mcp-server-time@1.0"
        );
        assert_eq!(purl("script", "x", "1"), None);
    }
}

/// Test support: the fixture's inventory events as OCSF (validated by the third-party
/// validators in `ocsf.rs`): appeared (shadow, npm), appeared, changed, gone, snapshot.
#[cfg(test)]
pub(crate) fn fixture_ocsf() -> Vec<Value> {
    tests::all_ocsf()
}
