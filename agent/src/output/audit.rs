//! Audit records (`events=audit`): one MCP request and its answer as OCSF API
//! Activity (6003, activity 99 "Invoke", with the `ai_operation` profile's
//! `message_context`) or as ECS. The method is `api.operation`, the tool (resource,
//! prompt) is in `resources[]`, the outcome in `status_id`/`status_code`; sizes,
//! argument keys and digests, which OCSF has no attribute for, go under `unmapped`.

use serde_json::{json, Map, Value};

use super::{ecs, host::HostInfo, ocsf};
use crate::{
    mcp::audit::{CallDirection, CallOutcome, McpRequestEvent},
    rules::context::transport_name,
};

/// The OCSF class name (HEC sourcetype `ocsf:api_activity`, syslog MSGID).
pub const KIND: &str = "api_activity";

/// `resources[].type` for what the method names.
fn target_type(method: &str) -> &'static str {
    match method.split('/').next() {
        Some("tools") => "tool",
        Some("resources") => "resource",
        Some("prompts") => "prompt",
        _ => "other",
    }
}

/// OCSF `status_id`: 1 Success, 2 Failure, 0 Unknown (never answered), 99 Other.
fn status(outcome: CallOutcome) -> (u8, &'static str) {
    match outcome {
        CallOutcome::Ok | CallOutcome::Notified => (1, "Success"),
        CallOutcome::ToolError | CallOutcome::Error => (2, "Failure"),
        CallOutcome::Timeout | CallOutcome::Evicted | CallOutcome::Unanswered => (0, "Unknown"),
    }
}

/// The outcome as `status_code`: the JSON-RPC error code for an error answer.
fn status_code(e: &McpRequestEvent) -> String {
    match (&e.request.outcome, &e.request.error) {
        (CallOutcome::Error, Some(err)) => err.code.map_or_else(|| "error".to_string(), |c| c.to_string()),
        (o, _) => o.name().to_string(),
    }
}

fn end_ms(start_ms: u64, e: &McpRequestEvent) -> Option<u64> {
    e.request.latency_us.map(|us| start_ms + us / 1_000)
}

/// When the request passed the server, Unix ms (the record's `time`).
pub fn time_ms(e: &McpRequestEvent) -> u64 {
    crate::clock::boot_to_wall(e.request.request_ns)
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn unmapped(e: &McpRequestEvent) -> Value {
    let r = &e.request;
    let mut u = Map::new();
    u.insert("outcome".into(), json!(r.outcome.name()));
    u.insert("transport".into(), json!(transport_name(r.transport)));
    u.insert(
        "direction".into(),
        json!(match r.direction {
            CallDirection::ClientToServer => "client_to_server",
            CallDirection::ServerToClient => "server_to_client",
        }),
    );
    u.insert("server_pid".into(), json!(r.pid));
    u.insert("server_id".into(), json!(e.server.id));
    u.insert("sanctioned".into(), json!(e.server.sanctioned));
    if let Some(s) = &e.server.sanctioned_entry {
        u.insert("sanctioned_entry".into(), json!(s));
    }
    if let Some(v) = &e.server.protocol_version {
        u.insert("protocol_version".into(), json!(v));
    }
    u.insert("request_bytes".into(), json!(r.request_bytes));
    if let Some(b) = r.response_bytes {
        u.insert("response_bytes".into(), json!(b));
    }
    if let Some(us) = r.latency_us {
        u.insert("latency_us".into(), json!(us));
    }
    if r.truncated {
        u.insert("truncated".into(), json!(true));
    }
    if let Some(a) = &r.arguments {
        u.insert("arguments".into(), json!(a));
    }
    if let Some(t) = &r.tools_sha256 {
        u.insert("tools_sha256".into(), json!(t));
    }
    Value::Object(u)
}

fn actor(e: &McpRequestEvent) -> Value {
    let mut actor = Map::new();
    actor.insert("session".into(), json!({"uid": e.request.session}));
    if let Some(c) = &e.client {
        let mut p = Map::new();
        p.insert("pid".into(), json!(c.pid));
        p.insert("name".into(), json!(c.name));
        if let Some(id) = &c.entity_id {
            p.insert("uid".into(), json!(id));
        }
        if let Some(exe) = &c.exe {
            p.insert(
                "file".into(),
                json!({"name": exe.rsplit('/').next().unwrap_or(exe), "path": exe, "type_id": 1, "type": "Regular File"}),
            );
        }
        actor.insert("process".into(), Value::Object(p));
        actor.insert("app_name".into(), json!(c.name));
    }
    // The server's user: a client on the same host runs the session under it.
    let mut user = json!({"uid": e.server.uid.to_string()});
    if let Some(name) = &e.server.user {
        user["name"] = json!(name);
    }
    actor.insert("user".into(), user);
    Value::Object(actor)
}

pub fn ocsf(e: &McpRequestEvent, host: &HostInfo, event_uid: &str) -> Value {
    let r = &e.request;
    let start = time_ms(e);
    let (status_id, status_name) = status(r.outcome);
    let mut metadata = ocsf::metadata(event_uid);
    metadata["profiles"] = json!(["host", "ai_operation"]);
    metadata["correlation_uid"] = json!(e.uid);
    let service_name = e
        .server
        .name
        .clone()
        .unwrap_or_else(|| e.server.server_uid.clone());
    let mut service = json!({"name": service_name, "uid": e.server.server_uid});
    if let Some(v) = &e.server.version {
        service["version"] = json!(v);
    }
    let mut api = json!({"operation": r.method, "service": service.clone()});
    if let Some(id) = &r.jsonrpc_id {
        api["request"] = json!({"uid": id});
    }
    if let Some(err) = &r.error {
        let mut resp = Map::new();
        if let Some(c) = err.code {
            resp.insert("code".into(), json!(c));
        }
        resp.insert("error".into(), json!("jsonrpc_error"));
        if let Some(m) = &err.message {
            resp.insert("error_message".into(), json!(m));
        }
        api["response"] = Value::Object(resp);
    } else if r.outcome == CallOutcome::ToolError {
        api["response"] = json!({"error": "tool_error"});
    }
    let mut o = json!({
        "class_uid": 6003,
        "class_name": "API Activity",
        "category_uid": 6,
        "category_name": "Application Activity",
        "activity_id": 99,
        "activity_name": "Invoke",
        "type_uid": 600399,
        "type_name": "API Activity: Invoke",
        "severity_id": 1,
        "severity": "Informational",
        "time": start,
        "start_time": start,
        "status_id": status_id,
        "status": status_name,
        "status_code": status_code(e),
        "message": match &r.target {
            Some(t) => format!("{} {} on {}", r.method, t, service_name),
            None => format!("{} on {}", r.method, service_name),
        },
        "metadata": metadata,
        "api": api,
        "actor": actor(e),
        "src_endpoint": {"hostname": host.hostname, "uid": host.id},
        "device": ocsf::device(host),
        // The `ai_operation` profile (OCSF 1.8.0): the MCP session and its server.
        "message_context": {
            "uid": r.session,
            "name": format!("mcp:{}", transport_name(r.transport)),
            "service": service,
            // 3 Tool: the speaker on the server side of an MCP session.
            "ai_role_id": 3,
            "ai_role": "Tool",
        },
        "unmapped": unmapped(e),
    });
    if let Some(end) = end_ms(start, e) {
        o["end_time"] = json!(end);
        o["duration"] = json!(end - start);
    }
    if let Some(err) = r.error.as_ref().and_then(|e| e.message.as_ref()) {
        o["status_detail"] = json!(err);
    }
    if let Some(t) = &r.target {
        o["resources"] = json!([{
            "type": target_type(&r.method),
            "name": t,
            "uid": format!("{}/{}", e.server.server_uid, t),
        }]);
    }
    o
}

pub fn ecs(e: &McpRequestEvent, host: &HostInfo, event_uid: &str) -> Value {
    let r = &e.request;
    let mut doc = ecs::common(host, &e.time, event_uid);
    let outcome = match status(r.outcome).0 {
        1 => "success",
        2 => "failure",
        _ => "unknown",
    };
    let mut event = json!({
        "id": event_uid,
        "module": "mcpwatch",
        "dataset": "mcpwatch.audit",
        "kind": "event",
        "category": ["api"],
        "type": ["access"],
        "action": r.method,
        "outcome": outcome,
        "reason": r.outcome.name(),
    });
    if let Some(us) = r.latency_us {
        event["duration"] = json!(us * 1_000);
    }
    doc["event"] = event;
    doc["message"] = json!(match &r.target {
        Some(t) => format!("{} {t}", r.method),
        None => r.method.clone(),
    });
    doc["service"] = json!({"name": e.server.name, "version": e.server.version, "id": e.server.server_uid});
    doc["user"] = json!({"id": e.server.uid.to_string(), "name": e.server.user});
    if let Some(c) = &e.client {
        doc["process"] = json!({"pid": c.pid, "name": c.name, "executable": c.exe, "entity_id": c.entity_id});
    }
    if let Some(err) = &r.error {
        doc["error"] = json!({"code": err.code.map(|c| c.to_string()), "message": err.message});
    }
    doc["mcpwatch"] = json!({"audit": {
        "uid": e.uid,
        "session": r.session,
        "jsonrpc_id": r.jsonrpc_id,
        "target": r.target,
        "details": unmapped(e),
    }});
    doc
}

#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;

    pub use crate::mcp::audit::fixtures::event;

    pub fn test_host() -> HostInfo {
        HostInfo {
            hostname: "host-01".into(),
            id: "0123456789abcdef0123456789abcdef".into(),
        }
    }

    pub fn ocsf_records() -> Vec<Value> {
        let host = test_host();
        [
            CallOutcome::Ok,
            CallOutcome::ToolError,
            CallOutcome::Error,
            CallOutcome::Timeout,
        ]
        .into_iter()
        .map(|o| ocsf(&event(o), &host, "e1"))
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::{fixtures::test_host, *};

    #[test]
    fn a_tool_call_maps_to_api_activity_invoke() {
        let v = &fixtures::ocsf_records()[0];
        assert_eq!(v["class_uid"], 6003);
        assert_eq!(v["type_uid"], 600399);
        assert_eq!(v["api"]["operation"], "tools/call");
        assert_eq!(v["api"]["request"]["uid"], "3");
        assert_eq!(v["api"]["service"]["name"], "secure-filesystem-server");
        assert_eq!(v["resources"][0]["type"], "tool");
        assert_eq!(v["resources"][0]["name"], "read_file");
        assert_eq!(v["status_id"], 1);
        assert_eq!(v["status_code"], "ok");
        assert_eq!(v["duration"], 2);
        assert_eq!(v["actor"]["process"]["pid"], 4200);
        assert_eq!(v["actor"]["session"]["uid"], "4242:stdio");
        assert_eq!(
            v["metadata"]["correlation_uid"],
            "0123456789abcdef0123456789abcdef"
        );
        assert_eq!(v["unmapped"]["arguments"]["keys"][0]["name"], "path");
        // Values never: only the digest.
        assert!(!v.to_string().contains("notes.txt"), "{v}");
    }

    #[test]
    fn failures_carry_their_codes() {
        let v = fixtures::ocsf_records();
        assert_eq!(
            (v[1]["status_id"].as_u64(), v[1]["status_code"].as_str()),
            (Some(2), Some("tool_error"))
        );
        assert_eq!(
            (v[2]["status_id"].as_u64(), v[2]["status_code"].as_str()),
            (Some(2), Some("-32602"))
        );
        assert_eq!(v[2]["api"]["response"]["code"], -32602);
        assert_eq!(v[2]["status_detail"], "Unknown tool");
        assert_eq!(
            (v[3]["status_id"].as_u64(), v[3]["status_code"].as_str()),
            (Some(0), Some("timeout"))
        );
    }

    #[test]
    fn ecs_names_the_method_and_outcome() {
        let d = ecs(&fixtures::event(CallOutcome::ToolError), &test_host(), "e1");
        assert_eq!(d["event"]["action"], "tools/call");
        assert_eq!(d["event"]["outcome"], "failure");
        assert_eq!(d["event"]["duration"], 2_500_000);
        assert_eq!(d["mcpwatch"]["audit"]["target"], "read_file");
    }
}
