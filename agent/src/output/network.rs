//! Network telemetry as OCSF 1.8.0 Network Activity (4001) and ECS network events,
//! for SOCs that take the raw telemetry (`events=all`):
//!
//! | `network_*` action | activity |
//! |---|---|
//! | connect `ok` / `in_progress`, accept | Open (1) |
//! | connect `ECONNREFUSED` | Refuse (5) |
//! | connect other errors | Fail (4) |
//! | close | Close (2); Reset (3) when the peer reset it |
//! | progress, send (datagram flows) | Traffic (6), with byte counts |
//! | listen | Listen (7) |
//! | unlisten, bind, raw/packet socket | Other (99), named in `activity_name` |
//!
//! The initiator is `src_endpoint` (inbound: the remote peer), the responder
//! `dst_endpoint` with the domain the process resolved; an event without addresses
//! (a raw socket) names this host as `src_endpoint`. Agent-specific fields go under
//! `unmapped`.

use serde_json::{json, Map, Value};

use super::{ecs, host::HostInfo, ocsf};
use crate::state::net_view::{Direction, Endpoint, NetAction, NetworkEvent, Protocol};

/// (activity_id, activity_name) of a network event.
fn activity(e: &NetworkEvent) -> (u32, &'static str) {
    match (e.action, &*e.result) {
        (NetAction::Connect, "ok" | "in_progress") | (NetAction::Accept, _) => (1, "Open"),
        (NetAction::Connect, "ECONNREFUSED") => (5, "Refuse"),
        (NetAction::Connect, _) => (4, "Fail"),
        (NetAction::Close, "ECONNRESET") => (3, "Reset"),
        (NetAction::Close, _) => (2, "Close"),
        (NetAction::Progress | NetAction::Send, _) => (6, "Traffic"),
        (NetAction::Listen, _) => (7, "Listen"),
        (NetAction::Unlisten, _) => (99, "Unlisten"),
        (NetAction::Bind, _) => (99, "Bind"),
        (NetAction::Socket, _) => (99, "Socket"),
    }
}

fn endpoint(ep: Endpoint, domain: Option<&str>) -> Value {
    let mut o = json!({"ip": ep.ip.to_string(), "port": ep.port});
    if let Some(d) = domain {
        o["domain"] = json!(d);
        o["hostname"] = json!(d);
    }
    o
}

fn protocol(p: Protocol) -> Option<(&'static str, u8)> {
    match p {
        Protocol::Tcp => Some(("tcp", 6)),
        Protocol::Udp => Some(("udp", 17)),
        Protocol::Icmp => Some(("icmp", 1)),
        Protocol::Icmpv6 => Some(("ipv6-icmp", 58)),
        Protocol::Raw | Protocol::Packet | Protocol::Unknown => None,
    }
}

pub fn network_activity(e: &NetworkEvent, host: &HostInfo, event_uid: &str, time_ms: u64) -> Value {
    let (activity_id, activity_name) = activity(e);
    let domain = e.domain.as_deref();
    // Listen and bind name the local (responding) end; inbound connections were
    // initiated by the remote peer.
    let (src, dst) = match (e.action, e.direction) {
        (NetAction::Listen | NetAction::Unlisten | NetAction::Bind, _) => {
            (None, e.local.map(|l| endpoint(l, None)))
        }
        (_, Some(Direction::Inbound)) => (
            e.remote.map(|r| endpoint(r, domain)),
            e.local.map(|l| endpoint(l, None)),
        ),
        _ => (
            e.local.map(|l| endpoint(l, None)),
            e.remote.map(|r| endpoint(r, domain)),
        ),
    };
    let src = match (&src, &dst) {
        (None, None) => Some(json!({"hostname": host.hostname})),
        _ => src,
    };
    let mut info = Map::new();
    info.insert(
        "direction_id".into(),
        json!(match e.direction {
            Some(Direction::Inbound) => 1,
            Some(Direction::Outbound) => 2,
            None => 0,
        }),
    );
    info.insert(
        "direction".into(),
        json!(match e.direction {
            Some(Direction::Inbound) => "Inbound",
            Some(Direction::Outbound) => "Outbound",
            None => "Unknown",
        }),
    );
    if let Some((name, num)) = protocol(e.protocol) {
        info.insert("protocol_name".into(), json!(name));
        info.insert("protocol_num".into(), json!(num));
    }
    if let Some(id) = &e.connection_id {
        info.insert("uid".into(), json!(id));
    }
    let failed = !matches!(&*e.result, "ok" | "in_progress");
    let mut ev = json!({
        "class_uid": 4001,
        "class_name": "Network Activity",
        "category_uid": 4,
        "category_name": "Network Activity",
        "activity_id": activity_id,
        "activity_name": activity_name,
        "type_uid": 4001 * 100 + activity_id,
        "type_name": format!("Network Activity: {activity_name}"),
        "severity_id": 1,
        "severity": "Informational",
        "status_id": if failed { 2 } else { 1 },
        "status": if failed { "Failure" } else { "Success" },
        "time": time_ms,
        "metadata": ocsf::metadata(event_uid),
        "device": ocsf::device(host),
        "connection_info": Value::Object(info),
        "unmapped": {
            "action": e.action,
            "result": e.result,
            "address_class": e.address_class,
            "domain_source": e.domain_source,
            "fd": e.fd,
            "socket_type": e.socket_type,
            "nonblocking": e.nonblocking,
            "argv": e.process.as_ref().map(|p| p.argv.clone()),
        },
    });
    if failed {
        ev["status_detail"] = json!(e.result);
    }
    if let Some(s) = src {
        ev["src_endpoint"] = s;
    }
    if let Some(d) = dst {
        ev["dst_endpoint"] = d;
    }
    if let Some(ms) = e.duration_ms {
        ev["duration"] = json!(ms);
    }
    let mut traffic = Map::new();
    for (k, v) in [
        ("bytes_out", e.bytes_sent),
        ("bytes_in", e.bytes_received),
        ("packets_out", e.packets_sent),
    ] {
        if let Some(v) = v {
            traffic.insert(k.into(), json!(v));
        }
    }
    if let (Some(o), Some(i)) = (e.bytes_sent, e.bytes_received) {
        traffic.insert("bytes".into(), json!(o + i));
    }
    if !traffic.is_empty() {
        ev["traffic"] = Value::Object(traffic);
    }
    if let Some(p) = &e.process {
        let mut proc =
            json!({"pid": p.pid, "uid": p.entity_id, "name": p.comm, "cmd_line": p.argv.join(" ")});
        if let Some(exe) = &p.exe {
            proc["file"] = json!({
                "name": exe.rsplit('/').next().unwrap_or(exe),
                "path": exe, "type_id": 1, "type": "Regular File",
            });
        }
        ev["actor"] = json!({"process": proc});
    }
    ev
}

/// ECS: `event.category: network`, source/destination as in OCSF.
pub fn ecs_network_event(e: &NetworkEvent, host: &HostInfo, event_uid: &str) -> Value {
    let mut doc = ecs::common(host, &e.time, event_uid);
    let (activity_id, activity_name) = activity(e);
    let ty = match activity_id {
        1 => "start",
        2 | 3 => "end",
        4 | 5 => "denied",
        _ => "info",
    };
    let failed = !matches!(&*e.result, "ok" | "in_progress");
    doc["event"] = json!({
        "id": event_uid, "module": "mcpwatch", "dataset": "mcpwatch.network",
        "kind": "event", "category": ["network"], "type": ["connection", ty],
        "action": e.kind, "outcome": if failed { "failure" } else { "success" },
    });
    let side = |ep: Option<Endpoint>, domain: Option<&str>| {
        ep.map(|ep| {
            let mut o = json!({"ip": ep.ip.to_string(), "port": ep.port});
            if let Some(d) = domain {
                o["domain"] = json!(d);
            }
            o
        })
    };
    let (src, dst) = match e.direction {
        Some(Direction::Inbound) => (side(e.remote, e.domain.as_deref()), side(e.local, None)),
        _ => (side(e.local, None), side(e.remote, e.domain.as_deref())),
    };
    if let Some(mut s) = src {
        if let Some(b) = e.bytes_sent.filter(|_| e.direction != Some(Direction::Inbound)) {
            s["bytes"] = json!(b);
        }
        doc["source"] = s;
    }
    if let Some(d) = dst {
        doc["destination"] = d;
    }
    let mut net = json!({
        "direction": match e.direction {
            Some(Direction::Inbound) => "ingress",
            Some(Direction::Outbound) => "egress",
            None => "unknown",
        },
    });
    if let Some((name, num)) = protocol(e.protocol) {
        net["transport"] = json!(name);
        net["iana_number"] = json!(num.to_string());
    }
    if let (Some(o), Some(i)) = (e.bytes_sent, e.bytes_received) {
        net["bytes"] = json!(o + i);
    }
    doc["network"] = net;
    if let Some(p) = &e.process {
        doc["process"] = json!({
            "pid": p.pid, "entity_id": p.entity_id, "name": p.comm, "executable": p.exe,
            "args": p.argv, "command_line": p.argv.join(" "),
        });
    }
    doc["mcpwatch"] = json!({
        "network": {"activity": activity_name, "result": e.result, "address_class": e.address_class,
                    "connection_id": e.connection_id, "bytes_received": e.bytes_received,
                    "packets_sent": e.packets_sent, "duration_ms": e.duration_ms},
    });
    doc
}

/// Test support: one Network Activity per activity (validated in `ocsf.rs`).
#[cfg(test)]
pub(crate) fn fixture_ocsf() -> Vec<Value> {
    tests::all()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::state::net_view::ProcessRef;

    fn host() -> HostInfo {
        HostInfo {
            hostname: "host-01".into(),
            id: "0123456789abcdef0123456789abcdef".into(),
        }
    }

    fn ev(action: NetAction, result: &str, direction: Option<Direction>) -> NetworkEvent {
        let mut e = NetworkEvent::new(action, Protocol::Tcp, "2026-11-22T01:27:48.479940117Z".into());
        e.result = Arc::from(result);
        e.direction = direction;
        e.local = Some(Endpoint {
            ip: "10.77.0.1".parse().unwrap(),
            port: 47196,
        });
        e.remote = Some(Endpoint {
            ip: "10.77.0.2".parse().unwrap(),
            port: 80,
        });
        e.domain = Some(Arc::from("web.mcpw.test"));
        e.connection_id = Some("6b02450f-3".into());
        e.process = Some(ProcessRef {
            pid: 12702,
            entity_id: "12702:2815713066047".into(),
            exe: Some(Arc::from("/usr/bin/curl")),
            comm: "curl".into(),
            argv: vec!["curl".to_string(), "-s".into(), "http://web.mcpw.test/".into()].into(),
        });
        e
    }

    /// One event per activity, as OCSF.
    pub(crate) fn all() -> Vec<Value> {
        let mut close = ev(NetAction::Close, "ok", Some(Direction::Outbound));
        close.bytes_sent = Some(77);
        close.bytes_received = Some(215);
        close.duration_ms = Some(3);
        let mut send = ev(NetAction::Send, "ok", Some(Direction::Outbound));
        send.protocol = Protocol::Udp;
        send.packets_sent = Some(1);
        send.bytes_sent = Some(40);
        let mut raw = NetworkEvent::new(NetAction::Socket, Protocol::Raw, "2026-11-22T01:27:48Z".into());
        raw.socket_type = Some("raw");
        let listen = {
            let mut l = ev(NetAction::Listen, "ok", None);
            l.remote = None;
            l.domain = None;
            l
        };
        [
            ev(NetAction::Connect, "ok", Some(Direction::Outbound)),
            ev(NetAction::Connect, "ECONNREFUSED", Some(Direction::Outbound)),
            ev(NetAction::Connect, "ETIMEDOUT", Some(Direction::Outbound)),
            ev(NetAction::Accept, "ok", Some(Direction::Inbound)),
            close,
            ev(NetAction::Close, "ECONNRESET", Some(Direction::Inbound)),
            send,
            listen,
            raw,
        ]
        .iter()
        .enumerate()
        .map(|(i, e)| network_activity(e, &host(), &format!("ev-{i}"), 1))
        .collect()
    }

    #[test]
    fn actions_map_to_network_activities_with_endpoints_and_traffic() {
        let v = all();
        let ids: Vec<u64> = v.iter().map(|e| e["activity_id"].as_u64().unwrap()).collect();
        assert_eq!(ids, [1, 5, 4, 1, 2, 3, 6, 7, 99]);
        let connect = &v[0];
        assert_eq!(connect["type_uid"], 400101);
        assert_eq!(connect["src_endpoint"]["port"], 47196);
        assert_eq!(connect["dst_endpoint"]["hostname"], "web.mcpw.test");
        assert_eq!(connect["connection_info"]["direction_id"], 2);
        assert_eq!(connect["connection_info"]["uid"], "6b02450f-3");
        assert_eq!(connect["actor"]["process"]["name"], "curl");
        assert_eq!(v[1]["status_detail"], "ECONNREFUSED");
        let accept = &v[3];
        assert_eq!(accept["src_endpoint"]["ip"], "10.77.0.2", "the peer initiated it");
        assert_eq!(accept["dst_endpoint"]["port"], 47196);
        assert_eq!(v[4]["traffic"]["bytes"], 292);
        assert_eq!(v[4]["duration"], 3);
        assert_eq!(v[6]["connection_info"]["protocol_num"], 17);
        assert_eq!(v[7]["dst_endpoint"]["port"], 47196);
        assert!(v[7].get("src_endpoint").is_none());
        assert_eq!(v[8]["src_endpoint"]["hostname"], "host-01");
        assert_eq!(v[8]["activity_name"], "Socket");
    }

    #[test]
    fn ecs_network_events_keep_the_initiator_as_source() {
        let d = ecs_network_event(
            &ev(NetAction::Accept, "ok", Some(Direction::Inbound)),
            &host(),
            "e",
        );
        assert_eq!(d["event"]["category"][0], "network");
        assert_eq!(d["event"]["type"][1], "start");
        assert_eq!(d["source"]["ip"], "10.77.0.2");
        assert_eq!(d["network"]["direction"], "ingress");
        let d = ecs_network_event(
            &ev(NetAction::Connect, "ECONNREFUSED", Some(Direction::Outbound)),
            &host(),
            "e",
        );
        assert_eq!(d["event"]["outcome"], "failure");
        assert_eq!(d["destination"]["domain"], "web.mcpw.test");
        assert_eq!(d["network"]["transport"], "tcp");
    }
}
