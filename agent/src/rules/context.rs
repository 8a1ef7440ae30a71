//! The per-event view rule conditions read: the event, its process, the MCP server
//! whose tree it is in, and its connection or DNS message, answered by field name.

use std::net::IpAddr;

use super::{
    condition::{Fields, Value},
    detect::TrackedServer,
    fields::FieldId,
};
use crate::{
    mcp::{
        audit::{CallDirection, McpRequestEvent},
        inventory::ServerState,
        recognizer::Transport,
    },
    state::{
        files::FileAccessEvent,
        net_view::{DnsEvent, NetworkEvent, Protocol},
        process_table::Process,
    },
};

/// The per-event view conditions read.
pub struct Ctx<'a> {
    pub kind: &'static str,
    pub process: Option<&'a Process>,
    pub server: Option<&'a TrackedServer>,
    pub net: Option<&'a NetworkEvent>,
    pub dns: Option<&'a DnsEvent>,
    /// An `mcp_request` event's request and answer.
    pub request: Option<&'a McpRequestEvent>,
    /// A `file_access` event's operation.
    pub file: Option<&'a FileAccessEvent>,
}

impl Fields for Ctx<'_> {
    fn get(&self, field: FieldId) -> Option<Value<'_>> {
        use FieldId::*;
        let s = |v: &str| Some(Value::Str(v.to_string().into()));
        let p = self.process;
        let m = self.server.map(|t| &t.server);
        let n = self.net;
        let r = self.request.map(|e| &e.request);
        let num = |v: usize| Some(Value::Num(i64::try_from(v).unwrap_or(i64::MAX)));
        match field {
            EventType => s(self.kind),
            ProcessPid => p.map(|p| Value::Num(p.key.pid.into())),
            ProcessUid => p.map(|p| Value::Num(p.uid.into())),
            ProcessUser => p?.user.as_deref().and_then(s),
            ProcessExe => p?.exe.as_deref().and_then(s),
            ProcessComm => p.and_then(|p| s(&p.comm)),
            ProcessCmdline => p.and_then(|p| s(&p.argv.join(" "))),
            McpInTree => Some(Value::Bool(m.is_some())),
            McpSanctioned => Some(Value::Bool(self.server.is_some_and(|t| t.sanctioned.is_some()))),
            McpName => m?.name.as_deref().and_then(s),
            McpVersion => m?.version.as_deref().and_then(s),
            McpPackage => m?.package.as_ref()?.name.as_deref().and_then(s),
            McpState => m.and_then(|m| s(state_name(m.state))),
            McpTransport => m?.transport.map(transport_name).and_then(s),
            McpExe => m?.exe.as_deref().and_then(s),
            McpSha256 => m?.sha256.as_deref().and_then(s),
            McpUser => m?.user.as_deref().and_then(s),
            McpUid => m.map(|m| Value::Num(m.uid.into())),
            McpHost => m?.host.as_ref().and_then(|h| s(&h.name)),
            McpContainerImage => m?
                .container
                .as_ref()
                .and_then(|c| s(&format!("{}://{}", c.runtime, c.id))),
            NetProtocol => n.and_then(|n| s(protocol_name(n.protocol))),
            NetDirection => n?
                .direction
                .map(|d| format!("{d:?}").to_lowercase())
                .and_then(|d| s(&d)),
            NetResult => n.and_then(|n| s(&n.result)),
            NetRemoteIp => n?.remote.map(|e| Value::Ip(e.ip)),
            NetRemotePort => n?.remote.map(|e| Value::Num(e.port.into())),
            NetLocalIp => n?.local.map(|e| Value::Ip(e.ip)),
            NetLocalPort => n?.local.map(|e| Value::Num(e.port.into())),
            NetDomain => n?.domain.as_deref().and_then(s),
            DnsQuestion => self.dns?.question.as_deref().and_then(s),
            DnsAnswerIp => {
                let ips: Vec<IpAddr> = self
                    .dns?
                    .answers
                    .iter()
                    .filter_map(|a| a.data.as_deref()?.parse().ok())
                    .collect();
                (!ips.is_empty()).then_some(Value::Ips(ips))
            }
            RequestMethod => r.and_then(|r| s(&r.method)),
            RequestTool => r?.target.as_deref().and_then(s),
            RequestOutcome => r.and_then(|r| s(r.outcome.name())),
            RequestDirection => r.and_then(|r| {
                s(match r.direction {
                    CallDirection::ClientToServer => "client_to_server",
                    CallDirection::ServerToClient => "server_to_client",
                })
            }),
            RequestErrorCode => r?.error.as_ref()?.code.map(Value::Num),
            RequestLatencyUs => r?
                .latency_us
                .map(|l| Value::Num(i64::try_from(l).unwrap_or(i64::MAX))),
            RequestBytes => r.and_then(|r| num(r.request_bytes)),
            ResponseBytes => r?.response_bytes.and_then(num),
            // Answered by `argument`, with the condition's path.
            RequestArgument => None,
            FilePath => self.file.and_then(|f| s(&f.path)),
            FileOp => self.file.and_then(|f| s(f.op.name())),
            FileMode => self.file.and_then(|f| s(f.mode_label())),
            FileResult => self.file.and_then(|f| s(&f.result)),
        }
    }

    fn argument(&self, path: &[String]) -> Option<Value<'_>> {
        let args = self.request?.request.argument_values.as_deref()?;
        // A JSON integer compares as a number (`equals: 3`); anything else as text.
        let at = path.iter().try_fold(args, |v, p| match v {
            serde_json::Value::Object(o) => o.get(p),
            serde_json::Value::Array(a) => a.get(p.parse::<usize>().ok()?),
            _ => None,
        })?;
        Some(match at.as_i64() {
            Some(n) => Value::Num(n),
            None => Value::Str(super::tool_policy::argument_at(at, &[])?.into_owned().into()),
        })
    }
}

pub fn state_name(s: ServerState) -> &'static str {
    match s {
        ServerState::Suspected => "suspected",
        ServerState::Confirmed => "confirmed",
        ServerState::Exited => "exited",
    }
}

pub fn transport_name(t: Transport) -> &'static str {
    match t {
        Transport::Stdio => "stdio",
        Transport::StreamableHttp => "streamable_http",
        Transport::Sse => "sse",
    }
}

pub fn protocol_name(p: Protocol) -> &'static str {
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

#[cfg(test)]
mod tests {
    use std::{collections::BTreeSet, sync::Arc};

    use super::*;
    use crate::{
        mcp::inventory::HostProcess,
        rules::{
            fields::{Kind, FIELDS},
            model::tests::server,
        },
        state::{
            cgroup::ContainerInfo,
            dns::DnsAnswer,
            net_view::{Direction, Endpoint, NetAction},
            process_table::{Origin, ProcKey},
        },
    };

    fn process() -> Process {
        Process {
            comm: "python3".into(),
            exe: Some(Arc::from("/usr/bin/python3.11")),
            argv: Arc::from(vec!["python3".to_string(), "-m".into(), "mcp_server_time".into()]),
            uid: 1000,
            user: Some(Arc::from("dev")),
            ..Process::bare(ProcKey { pid: 42, start_ns: 1 }, Origin::Kernel)
        }
    }

    fn tracked() -> TrackedServer {
        let mut s = server();
        s.transport = Some(Transport::Stdio);
        s.host = Some(HostProcess {
            pid: 41,
            entity_id: None,
            exe: None,
            name: "claude".into(),
        });
        s.container = Some(Arc::new(ContainerInfo {
            id: "c".repeat(64),
            runtime: "podman",
            pod_uid: None,
            pod: None,
        }));
        TrackedServer {
            server: s,
            sanctioned: Some(0),
            start_ns: 1,
        }
    }

    fn ep(ip: &str, port: u16) -> Option<Endpoint> {
        Some(Endpoint {
            ip: ip.parse().unwrap(),
            port,
        })
    }

    /// A network event of the kind with every part its producer (`state/network.rs`)
    /// can set: a socket creation has no addresses, a listen only its local one, a
    /// datagram's first send no local one.
    fn network(kind: Kind) -> Option<NetworkEvent> {
        let action = match kind {
            Kind::NetworkConnect => NetAction::Connect,
            Kind::NetworkSend => NetAction::Send,
            Kind::NetworkListen => NetAction::Listen,
            Kind::NetworkAccept => NetAction::Accept,
            Kind::NetworkSocket => NetAction::Socket,
            _ => return None,
        };
        let mut n = NetworkEvent::new(action, Protocol::Tcp, "t".into());
        assert_eq!(n.kind, kind.name());
        if matches!(action, NetAction::Connect | NetAction::Send | NetAction::Accept) {
            n.direction = Some(Direction::Outbound);
            n.remote = ep("203.0.113.7", 443);
            n.domain = Some(Arc::from("api.example.net"));
        }
        if matches!(action, NetAction::Connect | NetAction::Accept | NetAction::Listen) {
            n.local = ep("10.0.0.5", 51544);
        }
        Some(n)
    }

    fn dns() -> DnsEvent {
        DnsEvent {
            kind: "dns_response",
            time: "t".into(),
            id: 1,
            transport: Protocol::Udp,
            server: ep("10.0.0.53", 53),
            question: Some("api.example.net".into()),
            qtype: Some("A".into()),
            rcode: Some("NOERROR".into()),
            answers: vec![DnsAnswer {
                name: "api.example.net".into(),
                rtype: "A".into(),
                ttl: 60,
                data: Some("203.0.113.7".into()),
            }],
            truncated: false,
            process: None,
        }
    }

    /// On an event of each kind, with everything its producer can fill in, the
    /// context answers exactly the fields the table says that kind carries: the
    /// loader's "never set on" check and the docs cannot drift from what rules see.
    #[test]
    fn the_context_answers_exactly_the_fields_the_table_gives_each_kind() {
        let (p, t, d) = (process(), tracked(), dns());
        let req = crate::mcp::audit::fixtures::event(crate::mcp::audit::CallOutcome::Error);
        let file = crate::state::files::fixtures::read();
        for kind in Kind::ON {
            let n = network(kind);
            let ctx = Ctx {
                kind: kind.name(),
                process: Some(&p),
                server: Some(&t),
                net: n.as_ref(),
                dns: (kind == Kind::DnsResponse).then_some(&d),
                request: (kind == Kind::McpRequest).then_some(&req),
                file: (kind == Kind::FileAccess).then_some(&file),
            };
            let answered: BTreeSet<&str> = FIELDS
                .iter()
                .filter(|f| match f.id {
                    FieldId::RequestArgument => ctx.argument(&["path".to_string()]).is_some(),
                    id => ctx.get(id).is_some(),
                })
                .map(|f| f.name)
                .collect();
            let table: BTreeSet<&str> = FIELDS.iter().filter(|f| f.set_on(kind)).map(|f| f.name).collect();
            assert!(!answered.is_empty(), "{kind:?}: nothing answered");
            assert_eq!(
                answered, table,
                "{kind:?}: the context and the field table disagree"
            );
        }
    }
}
