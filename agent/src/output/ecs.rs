//! Elastic Common Schema profile (`format=ecs`) for Elastic/OpenSearch users, whose
//! detection content expects `event.kind: alert` and `rule.*`.

use serde_json::{json, Value};

use super::host::HostInfo;
use crate::{
    alert::Alert,
    state::{
        net_view::Direction,
        view::{AncestorView, ProcessAction, ProcessEvent, ProcessView},
    },
};

pub const ECS_VERSION: &str = "9.4.0";

fn process(p: &ProcessView, lineage: &[AncestorView]) -> Value {
    let mut o = json!({
        "pid": p.pid,
        "entity_id": p.entity_id,
        "name": p.comm,
        "executable": p.exe,
        "args": p.argv,
        "args_count": p.argv.len(),
        "command_line": p.argv.join(" "),
        "start": p.start_time,
        "working_directory": p.cwd,
        "user": {"id": p.uid.to_string(), "name": p.user},
    });
    if let Some(sha) = &p.sha256 {
        o["hash"] = json!({"sha256": sha});
    }
    if let Some(parent) = lineage.first() {
        o["parent"] = json!({
            "pid": parent.pid, "entity_id": parent.entity_id, "name": parent.comm,
            "executable": parent.exe, "args": parent.argv, "command_line": parent.argv.join(" "),
        });
    } else {
        o["parent"] = json!({"pid": p.ppid});
    }
    if let Some(code) = p.exit_code {
        o["exit_code"] = json!(code);
    }
    o
}

pub(super) fn common(host: &HostInfo, timestamp: &str, event_uid: &str) -> Value {
    json!({
        "@timestamp": timestamp,
        "ecs": {"version": ECS_VERSION},
        "host": {"hostname": host.hostname, "name": host.hostname, "id": host.id},
        "agent": {"type": "mcpwatch", "name": "mcpwatch", "version": env!("CARGO_PKG_VERSION")},
        "observer": {"vendor": "mcpwatch", "product": "mcpwatch", "type": "host"},
        "event": {"id": event_uid, "module": "mcpwatch"},
    })
}

pub fn alert(a: &Alert, host: &HostInfo, event_uid: &str, count: u64) -> Value {
    let mut doc = common(host, &crate::clock::rfc3339(a.time), event_uid);
    let has_conn = a.connection.is_some();
    doc["message"] = json!(a.description);
    doc["event"] = json!({
        "id": event_uid,
        "module": "mcpwatch",
        "dataset": "mcpwatch.alerts",
        "kind": "alert",
        "category": if has_conn { json!(["network", "intrusion_detection"]) } else { json!(["process", "intrusion_detection"]) },
        "type": ["info"],
        "action": a.rule_name,
        "severity": a.severity.ecs_score(),
        "risk_score": f64::from(a.severity.ecs_score()),
        "reason": a.title,
        "code": a.rule_id,
    });
    doc["rule"] = json!({
        "id": a.rule_id, "name": a.rule_name, "description": a.description,
        "uuid": a.finding_uid(&host.id), "ruleset": "mcpwatch",
    });
    doc["process"] = process(&a.process, &a.lineage);
    doc["user"] = json!({"id": a.process.uid.to_string(), "name": a.process.user});
    if let Some(c) = &a.container_id() {
        doc["container"] = json!({"id": c});
    }
    let attack: Vec<&String> = a.tags.iter().filter(|t| t.starts_with('T')).collect();
    if !attack.is_empty() {
        doc["threat"] = json!({"framework": "MITRE ATT&CK", "technique": {"id": attack}});
    }
    doc["tags"] = json!(a.tags);
    if let Some(n) = &a.connection {
        doc["source"] = json!({
            "ip": n.local.map(|e| e.ip.to_string()),
            "port": n.local.map(|e| e.port),
        });
        doc["destination"] = json!({
            "ip": n.remote.map(|e| e.ip.to_string()),
            "port": n.remote.map(|e| e.port),
            "domain": n.domain,
        });
        doc["network"] = json!({
            "transport": n.protocol,
            "direction": match n.direction {
                Some(Direction::Outbound) => "egress",
                Some(Direction::Inbound) => "ingress",
                None => "unknown",
            },
        });
    }
    if let Some(f) = &a.file {
        doc["file"] = json!({"path": f.path, "name": f.path.rsplit('/').next()});
    }
    // Agent-specific data under the agent's own namespace (ECS custom fields).
    doc["mcpwatch"] = json!({
        "file_access": a.file,
        "exfiltration_chain": a.chain,
        "finding_uid": a.finding_uid(&host.id),
        "identity": a.identity,
        "count": count.max(1),
        "mcp_server": a.mcp_server,
        "connection": a.connection,
        "sanctioned_entry": a.sanctioned_entry,
        "severity": a.severity.label(),
    });
    doc
}

pub fn process_event(e: &ProcessEvent, host: &HostInfo, event_uid: &str) -> Value {
    let mut doc = common(host, &e.time, event_uid);
    let (ty, action) = match e.action {
        ProcessAction::Exec => ("start", "exec"),
        ProcessAction::Fork => ("start", "fork"),
        ProcessAction::Exit => ("end", "exit"),
    };
    doc["event"] = json!({
        "id": event_uid, "module": "mcpwatch", "dataset": "mcpwatch.process",
        "kind": "event", "category": ["process"], "type": [ty], "action": action,
    });
    doc["process"] = process(&e.process, &e.lineage);
    doc["user"] = json!({"id": e.process.uid.to_string(), "name": e.process.user});
    doc
}

impl Alert {
    fn container_id(&self) -> Option<String> {
        self.process.container.as_ref().map(|c| c.id.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::fixtures;

    #[test]
    fn alert_maps_to_ecs_alert_with_rule_and_egress() {
        let host = HostInfo {
            hostname: "h".into(),
            id: "id".into(),
        };
        let d = alert(&fixtures::alert(), &host, "ev", 1);
        assert_eq!(d["event"]["kind"], "alert");
        assert_eq!(d["rule"]["id"], "MCP-001");
        assert_eq!(d["event"]["severity"], 73);
        assert_eq!(d["destination"]["domain"], "api.example.net");
        assert_eq!(d["network"]["direction"], "egress");
        assert_eq!(d["process"]["parent"]["name"], "bash");
        assert_eq!(d["threat"]["technique"]["id"][0], "T1059");
        assert_eq!(d["ecs"]["version"], ECS_VERSION);
    }

    #[test]
    fn egress_alert_has_destination_ip_and_port() {
        let host = HostInfo {
            hostname: "h".into(),
            id: "id".into(),
        };
        let d = alert(&fixtures::alert(), &host, "ev", 1);
        assert_eq!(d["destination"]["ip"], "203.0.113.7", "{d:#}");
        assert_eq!(d["destination"]["port"], 443);
        assert_eq!(d["source"]["ip"], "10.0.0.5");
        assert_eq!(d["source"]["port"], 51544);
        assert_eq!(d["network"]["transport"], "tcp");
    }
}
