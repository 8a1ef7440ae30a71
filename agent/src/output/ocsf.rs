//! OCSF 1.8.0, the canonical wire format: Detection Finding (2004) for alerts and
//! Process Activity (1007) for process telemetry. Pure functions from the agent's
//! types to JSON; anything OCSF has no attribute for goes under `unmapped`.

use serde_json::{json, Map, Value};

use super::host::HostInfo;
use crate::{
    alert::Alert,
    state::{
        net_view::{Direction, Endpoint, NetworkEvent, Protocol},
        view::{AncestorView, ProcessAction, ProcessEvent, ProcessView},
    },
};

pub const OCSF_VERSION: &str = "1.8.0";

pub(super) fn metadata(event_uid: &str) -> Value {
    json!({
        "version": OCSF_VERSION,
        "uid": event_uid,
        "product": {"name": "mcpwatch", "vendor_name": "mcpwatch", "version": env!("CARGO_PKG_VERSION")},
        "profiles": ["host"],
    })
}

pub(super) fn device(host: &HostInfo) -> Value {
    json!({
        "hostname": host.hostname,
        "name": host.hostname,
        "uid": host.id,
        // Unknown: the agent cannot tell a server from a laptop or a VM.
        "type_id": 0,
        "type": "Unknown",
        "os": {"name": "Linux", "type_id": 200, "type": "Linux"},
    })
}

fn rfc3339_to_ms(t: &str) -> Option<u64> {
    let dt = time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()?;
    u64::try_from(dt.unix_timestamp_nanos() / 1_000_000).ok()
}

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn cmd_line(argv: &[String]) -> String {
    argv.join(" ")
}

pub(super) fn ancestor(a: &AncestorView) -> Map<String, Value> {
    let mut p = Map::new();
    p.insert("pid".into(), json!(a.pid));
    p.insert("uid".into(), json!(a.entity_id));
    p.insert("name".into(), json!(a.comm));
    if !a.argv.is_empty() {
        p.insert("cmd_line".into(), json!(cmd_line(&a.argv)));
    }
    if let Some(exe) = &a.exe {
        p.insert(
            "file".into(),
            json!({"name": basename(exe), "path": exe, "type_id": 1, "type": "Regular File"}),
        );
    }
    p
}

/// An OCSF `process` with its ancestors nested as `parent_process` (parent first)
/// and their executables in `lineage`.
pub fn process(p: &ProcessView, lineage: &[AncestorView]) -> Value {
    let mut o = Map::new();
    o.insert("pid".into(), json!(p.pid));
    o.insert("uid".into(), json!(p.entity_id));
    o.insert("name".into(), json!(p.comm));
    o.insert("cmd_line".into(), json!(cmd_line(&p.argv)));
    if let Some(ms) = rfc3339_to_ms(&p.start_time) {
        o.insert("created_time".into(), json!(ms));
    }
    if let Some(ms) = p.exit_time.as_deref().and_then(rfc3339_to_ms) {
        o.insert("terminated_time".into(), json!(ms));
    }
    if let Some(cwd) = &p.cwd {
        o.insert("working_directory".into(), json!(cwd));
    }
    if let Some(exe) = &p.exe {
        let mut file = json!({"name": basename(exe), "path": exe, "type_id": 1, "type": "Regular File"});
        if let Some(sha) = &p.sha256 {
            file["hashes"] = json!([{"algorithm_id": 3, "algorithm": "SHA-256", "value": sha}]);
        }
        o.insert("file".into(), file);
    }
    let mut user = json!({"uid": p.uid.to_string()});
    if let Some(name) = &p.user {
        user["name"] = json!(name);
    }
    o.insert("user".into(), user);
    if !lineage.is_empty() {
        o.insert(
            "lineage".into(),
            json!(lineage
                .iter()
                .map(|a| a.exe.as_deref().unwrap_or(&a.comm).to_string())
                .collect::<Vec<_>>()),
        );
        // Nest from the root down so each ancestor holds its own parent.
        let mut parent: Option<Map<String, Value>> = None;
        for a in lineage.iter().rev() {
            let mut node = ancestor(a);
            if let Some(up) = parent.take() {
                node.insert("parent_process".into(), Value::Object(up));
            }
            parent = Some(node);
        }
        if let Some(up) = parent {
            o.insert("parent_process".into(), Value::Object(up));
        }
    } else if p.ppid != 0 {
        o.insert("parent_process".into(), json!({"pid": p.ppid}));
    }
    Value::Object(o)
}

/// Agent-specific process facts OCSF has no attribute for.
fn process_unmapped(p: &ProcessView) -> Value {
    json!({
        "argv": p.argv,
        "argv_truncated": p.argv_truncated,
        "filename": p.filename,
        "cgroup": p.cgroup,
        "container": p.container,
        "gid": p.gid,
        "origin": p.origin,
    })
}

fn endpoint(e: Option<Endpoint>, domain: Option<&str>) -> Option<Value> {
    let mut o = Map::new();
    if let Some(e) = e {
        o.insert("ip".into(), json!(e.ip.to_string()));
        o.insert("port".into(), json!(e.port));
    }
    if let Some(d) = domain {
        o.insert("domain".into(), json!(d));
        o.insert("hostname".into(), json!(d));
    }
    (!o.is_empty()).then_some(Value::Object(o))
}

/// Connection evidence: the local end is `src_endpoint`, the remote end (with the
/// domain it was resolved from) `dst_endpoint`, protocol and direction
/// `connection_info`.
fn connection_evidence(n: &NetworkEvent, evidence: &mut Map<String, Value>) {
    if let Some(src) = endpoint(n.local, None) {
        evidence.insert("src_endpoint".into(), src);
    }
    if let Some(dst) = endpoint(n.remote, n.domain.as_deref()) {
        evidence.insert("dst_endpoint".into(), dst);
    }
    let mut info = Map::new();
    let protocol = match n.protocol {
        Protocol::Tcp => Some(("tcp", 6)),
        Protocol::Udp => Some(("udp", 17)),
        Protocol::Icmp => Some(("icmp", 1)),
        Protocol::Icmpv6 => Some(("icmpv6", 58)),
        Protocol::Raw | Protocol::Packet | Protocol::Unknown => None,
    };
    if let Some((name, num)) = protocol {
        info.insert("protocol_name".into(), json!(name));
        info.insert("protocol_num".into(), json!(num));
    }
    let direction = match n.direction {
        Some(Direction::Inbound) => Some((1, "Inbound")),
        Some(Direction::Outbound) => Some((2, "Outbound")),
        None => None,
    };
    if let Some((id, name)) = direction {
        info.insert("direction_id".into(), json!(id));
        info.insert("direction".into(), json!(name));
    }
    if !info.is_empty() {
        evidence.insert("connection_info".into(), Value::Object(info));
    }
}

fn evidence_file(path: &str) -> Value {
    json!({"name": basename(path), "path": path, "type_id": 0, "type": "Unknown"})
}

/// ATT&CK techniques whose names the agent knows (OCSF wants the name with the id).
/// Ids not listed here, and ATLAS ids (`AML.T…`), stay in `unmapped.tags` only.
const ATTACK_TECHNIQUES: &[(&str, &str)] = &[
    ("T1005", "Data from Local System"),
    ("T1036", "Masquerading"),
    ("T1041", "Exfiltration Over C2 Channel"),
    ("T1048", "Exfiltration Over Alternative Protocol"),
    ("T1059", "Command and Scripting Interpreter"),
    ("T1071", "Application Layer Protocol"),
    ("T1078", "Valid Accounts"),
    ("T1090", "Proxy"),
    ("T1105", "Ingress Tool Transfer"),
    ("T1195", "Supply Chain Compromise"),
    ("T1204", "User Execution"),
    ("T1219", "Remote Access Software"),
    ("T1543", "Create or Modify System Process"),
    ("T1552", "Unsecured Credentials"),
    ("T1562", "Impair Defenses"),
    ("T1567", "Exfiltration Over Web Service"),
    ("T1572", "Protocol Tunneling"),
];

fn attacks(tags: &[String]) -> Vec<Value> {
    tags.iter()
        .filter_map(|t| {
            let (technique, sub) = match t.split_once('.') {
                Some((tech, _)) => (tech, Some(t)),
                None => (t.as_str(), None),
            };
            let name = ATTACK_TECHNIQUES.iter().find(|(id, _)| *id == technique)?.1;
            let mut a = json!({"technique": {"uid": technique, "name": name}});
            if let Some(sub) = sub {
                a["sub_technique"] = json!({"uid": sub});
            }
            Some(a)
        })
        .collect()
}

/// Detection Finding (2004), activity Create. `count` is how many detections the
/// throttle folded into this one (1 when none).
pub fn detection_finding(a: &Alert, host: &HostInfo, event_uid: &str, count: u64) -> Value {
    let time = a.unix_ms();
    let mut evidence = Map::new();
    evidence.insert("process".into(), process(&a.process, &a.lineage));
    if let Some(conn) = &a.connection {
        connection_evidence(conn, &mut evidence);
    }
    if let Some(f) = &a.file {
        evidence.insert("file".into(), evidence_file(&f.path));
    }
    let mut finding_info = json!({
        "uid": a.finding_uid(&host.id),
        "title": a.title,
        "desc": a.description,
        "types": [a.rule_name],
        "analytic": {"type_id": 1, "type": "Rule", "uid": a.rule_id, "name": a.rule_name},
        "created_time": time,
        "first_seen_time": time,
        "last_seen_time": time,
        "product": {"name": "mcpwatch", "vendor_name": "mcpwatch", "version": env!("CARGO_PKG_VERSION")},
    });
    let attacks = attacks(&a.tags);
    if !attacks.is_empty() {
        finding_info["attacks"] = json!(attacks);
    }
    // A chain names the sensitive-file findings it joins.
    if let Some(c) = &a.chain {
        let related: Vec<Value> = c
            .reads
            .iter()
            .filter_map(|r| r.finding.as_ref())
            .map(|f| {
                json!({
                    "uid": crate::alert::finding_uid(&f.rule_id, &f.identity, &host.id),
                    "type_uid": 200401,
                    "type_name": "Detection Finding: Create",
                })
            })
            .collect();
        if !related.is_empty() {
            finding_info["related_events"] = json!(related);
        }
    }
    let mut unmapped = json!({
        "rule_id": a.rule_id,
        "identity": a.identity,
        "tags": a.tags,
        "process": process_unmapped(&a.process),
    });
    if let Some(s) = &a.mcp_server {
        unmapped["mcp_server"] = json!(s);
    }
    if let Some(c) = &a.connection {
        unmapped["connection"] = json!(c);
    }
    if let Some(e) = &a.sanctioned_entry {
        unmapped["sanctioned_entry"] = json!(e);
    }
    if let Some(f) = &a.file {
        unmapped["file_access"] = json!(f);
    }
    let mut evidences = vec![Value::Object(evidence)];
    if let Some(c) = &a.chain {
        unmapped["exfiltration_chain"] = json!(c);
        // Each read of the chain is evidence of its own: the file and who read it.
        for r in &c.reads {
            evidences.push(json!({
                "name": "sensitive_read",
                "file": evidence_file(&r.path),
                "process": {"pid": r.pid, "name": r.comm},
            }));
        }
    }
    if let Some(r) = &a.mcp_request {
        // The audit record (API Activity) that raised the finding, by its uid.
        let mut e = json!({
            "name": "mcp_request",
            "uid": r.uid,
            "api": {"operation": r.method},
            "actor": {"session": {"uid": r.session}},
        });
        if let Some(id) = &r.jsonrpc_id {
            e["api"]["request"] = json!({"uid": id});
        }
        if let Some(t) = &r.target {
            e["resources"] = json!([{"name": t, "type": r.method.split('/').next().unwrap_or("other")}]);
        }
        evidences.push(e);
    }
    json!({
        "class_uid": 2004,
        "class_name": "Detection Finding",
        "category_uid": 2,
        "category_name": "Findings",
        "activity_id": 1,
        "activity_name": "Create",
        "type_uid": 200401,
        "type_name": "Detection Finding: Create",
        "severity_id": a.severity.id(),
        "severity": a.severity.name(),
        "status_id": 1,
        "status": "New",
        "is_alert": true,
        "confidence_id": 3,
        "confidence": "High",
        "time": time,
        "count": count.max(1),
        "message": a.description,
        "metadata": metadata(event_uid),
        "finding_info": finding_info,
        "device": device(host),
        "evidences": evidences,
        "unmapped": unmapped,
    })
}

/// Process Activity (1007): exec and fork are Launch (1), exit is Terminate (2).
pub fn process_activity(e: &ProcessEvent, host: &HostInfo, event_uid: &str) -> Value {
    let (activity_id, activity) = match e.action {
        ProcessAction::Exec | ProcessAction::Fork => (1, "Launch"),
        ProcessAction::Exit => (2, "Terminate"),
    };
    let time = rfc3339_to_ms(&e.time).unwrap_or(0);
    let actor = match e.lineage.first() {
        Some(parent) => json!({"process": Value::Object(ancestor(parent))}),
        None => json!({"process": {"pid": e.process.ppid}}),
    };
    let mut ev = json!({
        "class_uid": 1007,
        "class_name": "Process Activity",
        "category_uid": 1,
        "category_name": "System Activity",
        "activity_id": activity_id,
        "activity_name": activity,
        "type_uid": 1007 * 100 + activity_id,
        "type_name": format!("Process Activity: {activity}"),
        "severity_id": 1,
        "severity": "Informational",
        "time": time,
        "metadata": metadata(event_uid),
        "device": device(host),
        "actor": actor,
        "process": process(&e.process, &e.lineage),
        "unmapped": {"action": e.action, "process": process_unmapped(&e.process)},
    });
    if let Some(code) = e.process.exit_code {
        ev["exit_code"] = json!(code);
    }
    ev
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::fixtures;

    fn host() -> HostInfo {
        HostInfo {
            hostname: "host-01".into(),
            id: "0123456789abcdef0123456789abcdef".into(),
        }
    }

    #[test]
    fn finding_has_identity_rule_severity_and_evidence() {
        let a = fixtures::alert();
        let f = detection_finding(&a, &host(), "ev-1", 1);
        assert_eq!(f["class_uid"], 2004);
        assert_eq!(f["type_uid"], 200401);
        assert_eq!(f["severity_id"], 4);
        assert_eq!(f["time"], 1_763_769_600_123u64);
        assert_eq!(f["finding_info"]["uid"], a.finding_uid(&host().id));
        assert_eq!(f["finding_info"]["analytic"]["uid"], "MCP-001");
        assert_eq!(f["finding_info"]["attacks"][0]["technique"]["uid"], "T1059");
        let ev = &f["evidences"][0];
        assert_eq!(ev["process"]["pid"], 4242);
        assert_eq!(ev["process"]["parent_process"]["name"], "bash");
        assert_eq!(ev["process"]["file"]["hashes"][0]["algorithm_id"], 3);
        assert_eq!(ev["dst_endpoint"]["domain"], "api.example.net");
        assert_eq!(ev["dst_endpoint"]["port"], 443);
        assert_eq!(ev["connection_info"]["direction_id"], 2);
        assert_eq!(f["unmapped"]["mcp_server"]["transport"], "stdio");
        assert_eq!(f["unmapped"]["connection"]["remote"]["port"], 443);
        assert_eq!(f["unmapped"]["tags"][1], "AML.T0051");
        assert_eq!(f["device"]["hostname"], "host-01");
    }

    #[test]
    fn egress_evidence_has_the_connections_addresses() {
        let f = detection_finding(&fixtures::alert(), &host(), "ev-1", 1);
        let ev = &f["evidences"][0];
        let dst = ev["dst_endpoint"].as_object().expect("dst_endpoint present");
        assert_eq!(dst.get("ip").expect("dst_endpoint.ip"), "203.0.113.7");
        assert_eq!(dst.get("port").expect("dst_endpoint.port"), 443);
        let src = ev["src_endpoint"].as_object().expect("src_endpoint present");
        assert_eq!(src.get("ip").expect("src_endpoint.ip"), "10.0.0.5");
        assert_eq!(src.get("port").expect("src_endpoint.port"), 51544);
        assert_eq!(ev["connection_info"]["protocol_num"], 6);
    }

    #[test]
    fn lineage_nests_parents_from_the_parent_up() {
        let mut a = fixtures::alert();
        let mut grand = a.lineage[0].clone();
        grand.pid = 1;
        grand.comm = "systemd".into();
        a.lineage.push(grand);
        let p = process(&a.process, &a.lineage);
        assert_eq!(p["parent_process"]["pid"], 4200);
        assert_eq!(p["parent_process"]["parent_process"]["pid"], 1);
        assert_eq!(p["lineage"].as_array().unwrap().len(), 2);
    }
}

/// Validation of what this module emits by third-party OCSF validators from PyPI
/// (`tests/ocsf/validate.py` in the venv `cargo xtask test` builds).
#[cfg(test)]
mod third_party {
    use std::io::Write as _;

    fn validate(events: &[serde_json::Value]) -> (bool, String) {
        let python = std::env::var("MCPWATCH_OCSF_PYTHON").unwrap_or_else(|_| {
            panic!("MCPWATCH_OCSF_PYTHON is not set: run the tests with `cargo xtask test`, which builds the validator venv")
        });
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/ocsf/validate.py");
        let mut child = std::process::Command::new(python)
            .arg(script)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("running the OCSF validator");
        let mut stdin = child.stdin.take().unwrap();
        for e in events {
            writeln!(stdin, "{e}").unwrap();
        }
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    #[test]
    fn findings_and_process_activity_validate() {
        let mut events = crate::output::fixture_findings();
        events.push(crate::output::fixture_process_activity());
        let (ok, report) = validate(&events);
        assert!(ok, "{report}");
    }

    #[test]
    fn audit_records_validate() {
        let events = crate::output::audit::fixtures::ocsf_records();
        assert_eq!(events.len(), 4);
        let (ok, report) = validate(&events);
        assert!(ok, "{report}");
        let mut broken = events[0].clone();
        broken["message_context"]["bogus"] = serde_json::json!(1);
        broken["api"]["bogus"] = serde_json::json!(1);
        let (ok, report) = validate(&[broken]);
        assert!(
            !ok && report.contains("message_context.bogus") && report.contains("$.api.bogus"),
            "{report}"
        );
    }

    #[test]
    fn file_activity_validates() {
        let events = crate::output::file_activity::fixtures::ocsf_records();
        assert_eq!(events.len(), 5);
        let (ok, report) = validate(&events);
        assert!(ok, "{report}");
        let mut broken = events[3].clone();
        broken["file_result"]["bogus"] = serde_json::json!(1);
        let (ok, report) = validate(&[broken]);
        assert!(!ok && report.contains("file_result.bogus"), "{report}");
    }

    #[test]
    fn records_trimmed_to_the_budget_validate() {
        let events = crate::output::budget::fixtures::trimmed_ocsf();
        let (ok, report) = validate(&events);
        assert!(ok, "{report}");
    }

    #[test]
    fn inventory_events_validate() {
        let events = crate::output::inventory::fixture_ocsf();
        assert_eq!(events.len(), 5);
        let (ok, report) = validate(&events);
        assert!(ok, "{report}");
    }

    #[test]
    fn the_validator_catches_a_broken_inventory_event() {
        let mut events = crate::output::inventory::fixture_ocsf();
        events[1].as_object_mut().unwrap().remove("app");
        events[4]["product"]["bogus"] = serde_json::json!(1);
        events[3]["actor"]["process"]["bogus"] = serde_json::json!(1);
        let (ok, report) = validate(&events[1..]);
        assert!(
            !ok && report.contains("app")
                && report.contains("$.product.bogus")
                && report.contains("$.actor.process.bogus"),
            "{report}"
        );
    }

    #[test]
    fn the_validator_catches_a_broken_finding() {
        let mut f = crate::output::fixture_findings().remove(0);
        f["severity_id"] = serde_json::json!(9);
        f.as_object_mut().unwrap().remove("time");
        let (ok, report) = validate(&[f]);
        assert!(
            !ok && report.contains("severity_id") && report.contains("time"),
            "{report}"
        );
        let mut f = crate::output::fixture_findings().remove(0);
        f["evidences"][0]["process"]["parent_process"]["bogus"] = serde_json::json!(1);
        let (ok, report) = validate(&[f]);
        assert!(!ok && report.contains("parent_process.bogus"), "{report}");
    }
}
