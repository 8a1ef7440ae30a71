//! The one table of what conditions can test: every field's name, its value type, and
//! the kinds of event that carry it. The loader checks conditions against it (an
//! unknown field, a field the rule's events never carry, an operand of the wrong
//! type). Conditions hold a `FieldId`, not a name, and the engine's per-event context
//! answers by matching on it, so a field added here without an answer there is a
//! compile error; the context's tests check that it answers exactly these fields on
//! exactly these kinds, and `docs/rules.md` carries the rendered table.

use super::schema::Builtin;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldType {
    Str,
    Num,
    Ip,
    /// Several addresses (`dns.answer_ip`): a test matches if any of them does.
    IpList,
    Bool,
}

impl FieldType {
    pub fn name(self) -> &'static str {
        match self {
            FieldType::Str => "string",
            FieldType::Num => "number",
            FieldType::Ip => "address",
            FieldType::IpList => "address list",
            FieldType::Bool => "boolean",
        }
    }
}

/// The kinds of event conditions are evaluated on: custom rules name them in `on:`,
/// built-in detections have theirs (`Kind::of_builtin`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    ProcessExec,
    ProcessExit,
    NetworkConnect,
    NetworkSend,
    NetworkListen,
    NetworkAccept,
    NetworkSocket,
    DnsResponse,
    McpServer,
    /// One audited MCP request and its answer.
    McpRequest,
    /// An open, unlink, rename or chmod by a process in an MCP server's tree.
    FileAccess,
}

impl Kind {
    /// The kinds custom rules may name in `on:`, in the order the docs list them.
    pub const ON: [Kind; 11] = [
        Kind::ProcessExec,
        Kind::ProcessExit,
        Kind::NetworkConnect,
        Kind::NetworkSend,
        Kind::NetworkListen,
        Kind::NetworkAccept,
        Kind::NetworkSocket,
        Kind::DnsResponse,
        Kind::McpServer,
        Kind::McpRequest,
        Kind::FileAccess,
    ];

    /// The `on:` name, which is also the value of `event.type`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::ProcessExec => "process_exec",
            Kind::ProcessExit => "process_exit",
            Kind::NetworkConnect => "network_connect",
            Kind::NetworkSend => "network_send",
            Kind::NetworkListen => "network_listen",
            Kind::NetworkAccept => "network_accept",
            Kind::NetworkSocket => "network_socket",
            Kind::DnsResponse => "dns_response",
            Kind::McpServer => "mcp_server",
            Kind::McpRequest => "mcp_request",
            Kind::FileAccess => "file_access",
        }
    }

    pub fn from_on(name: &str) -> Option<Kind> {
        Kind::ON.into_iter().find(|k| k.name() == name)
    }

    /// What a built-in detection's condition and exceptions are evaluated on.
    pub fn of_builtin(b: Builtin) -> &'static [Kind] {
        match b {
            Builtin::ShadowMcpServer
            | Builtin::McpServerAttestationFailed
            | Builtin::McpServerPrivileged
            | Builtin::McpHttpListenerExposed
            | Builtin::McpServerLongLived
            | Builtin::McpToolDefinitionsChanged => &[Kind::McpServer],
            // Egress is judged on TCP connects and on the first datagram to a peer.
            Builtin::McpUnsanctionedEgress
            | Builtin::McpMetadataAccess
            | Builtin::McpServerNewDestination
            | Builtin::LlmProviderEgress => &[Kind::NetworkConnect, Kind::NetworkSend],
            Builtin::McpRawNetwork => &[Kind::NetworkSocket],
            Builtin::McpToolPoisoning | Builtin::McpToolCallDenied => &[Kind::McpRequest],
            Builtin::McpSensitiveFileAccess => &[Kind::FileAccess],
            // A chain is closed by its egress.
            Builtin::McpExfiltrationChain => &[Kind::NetworkConnect, Kind::NetworkSend],
            // Judged on byte reports (close, progress), which carry a connection.
            Builtin::McpEgressVolumeAnomaly => &[Kind::NetworkConnect],
        }
    }
}

/// One field: its name in conditions, its type, and the kinds whose events can carry
/// it (an event of another kind never does, so a test on it never matches).
pub struct Field {
    pub id: FieldId,
    pub name: &'static str,
    pub ty: FieldType,
    pub on: &'static [Kind],
}

use FieldId::*;
use Kind::*;

/// Every event has a type, and a process from the process table (an `mcp_server`
/// event's is the server's), unless it has left it already.
const ALL: &[Kind] = &Kind::ON;
const NETWORK: &[Kind] = &[
    NetworkConnect,
    NetworkSend,
    NetworkListen,
    NetworkAccept,
    NetworkSocket,
];
/// Connections have a direction and a peer; listens and socket creations have not.
const CONNECTION: &[Kind] = &[NetworkConnect, NetworkSend, NetworkAccept];
/// A bound local address: TCP connects and accepts, and listens (not datagram sends).
const LOCAL: &[Kind] = &[NetworkConnect, NetworkAccept, NetworkListen];
const DNS: &[Kind] = &[DnsResponse];
const REQUEST: &[Kind] = &[McpRequest];
const FILE: &[Kind] = &[Kind::FileAccess];

const fn f(id: FieldId, name: &'static str, ty: FieldType, on: &'static [Kind]) -> Field {
    Field { id, name, ty, on }
}

/// A field, as conditions hold it and the engine's context answers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FieldId {
    EventType,
    ProcessPid,
    ProcessUid,
    ProcessUser,
    ProcessExe,
    ProcessComm,
    ProcessCmdline,
    McpInTree,
    McpSanctioned,
    McpName,
    McpVersion,
    McpPackage,
    McpState,
    McpTransport,
    McpExe,
    McpSha256,
    McpUser,
    McpUid,
    McpHost,
    McpContainerImage,
    NetProtocol,
    NetDirection,
    NetResult,
    NetRemoteIp,
    NetRemotePort,
    NetLocalIp,
    NetLocalPort,
    NetDomain,
    DnsQuestion,
    DnsAnswerIp,
    RequestMethod,
    RequestTool,
    RequestOutcome,
    RequestDirection,
    RequestErrorCode,
    RequestLatencyUs,
    RequestBytes,
    ResponseBytes,
    /// `mcp.arguments.<path>`: the condition holds the path (`Cond::Argument`).
    RequestArgument,
    FilePath,
    FileOp,
    FileMode,
    FileResult,
}

/// The prefix of `mcp.arguments.<path>` field names.
pub const ARGUMENT_PREFIX: &str = "mcp.arguments.";

/// Every field a condition can test.
pub const FIELDS: &[Field] = &[
    f(EventType, "event.type", FieldType::Str, ALL),
    f(ProcessPid, "process.pid", FieldType::Num, ALL),
    f(ProcessUid, "process.uid", FieldType::Num, ALL),
    f(ProcessUser, "process.user", FieldType::Str, ALL),
    f(ProcessExe, "process.exe", FieldType::Str, ALL),
    f(ProcessComm, "process.comm", FieldType::Str, ALL),
    f(ProcessCmdline, "process.cmdline", FieldType::Str, ALL),
    // `mcp.*` describe the server whose tree the process is in; any event can have one.
    f(McpInTree, "mcp.in_tree", FieldType::Bool, ALL),
    f(McpSanctioned, "mcp.sanctioned", FieldType::Bool, ALL),
    f(McpName, "mcp.name", FieldType::Str, ALL),
    f(McpVersion, "mcp.version", FieldType::Str, ALL),
    f(McpPackage, "mcp.package", FieldType::Str, ALL),
    f(McpState, "mcp.state", FieldType::Str, ALL),
    f(McpTransport, "mcp.transport", FieldType::Str, ALL),
    f(McpExe, "mcp.exe", FieldType::Str, ALL),
    f(McpSha256, "mcp.sha256", FieldType::Str, ALL),
    f(McpUser, "mcp.user", FieldType::Str, ALL),
    f(McpUid, "mcp.uid", FieldType::Num, ALL),
    f(McpHost, "mcp.host", FieldType::Str, ALL),
    f(McpContainerImage, "mcp.container_image", FieldType::Str, ALL),
    f(NetProtocol, "net.protocol", FieldType::Str, NETWORK),
    f(NetDirection, "net.direction", FieldType::Str, CONNECTION),
    f(NetResult, "net.result", FieldType::Str, NETWORK),
    f(NetRemoteIp, "net.remote_ip", FieldType::Ip, CONNECTION),
    f(NetRemotePort, "net.remote_port", FieldType::Num, CONNECTION),
    f(NetLocalIp, "net.local_ip", FieldType::Ip, LOCAL),
    f(NetLocalPort, "net.local_port", FieldType::Num, LOCAL),
    f(NetDomain, "net.domain", FieldType::Str, CONNECTION),
    f(DnsQuestion, "dns.question", FieldType::Str, DNS),
    f(DnsAnswerIp, "dns.answer_ip", FieldType::IpList, DNS),
    f(RequestMethod, "mcp.method", FieldType::Str, REQUEST),
    f(RequestTool, "mcp.tool", FieldType::Str, REQUEST),
    f(RequestOutcome, "mcp.outcome", FieldType::Str, REQUEST),
    f(RequestDirection, "mcp.direction", FieldType::Str, REQUEST),
    f(RequestErrorCode, "mcp.error_code", FieldType::Num, REQUEST),
    f(RequestLatencyUs, "mcp.latency_us", FieldType::Num, REQUEST),
    f(RequestBytes, "mcp.request_bytes", FieldType::Num, REQUEST),
    f(ResponseBytes, "mcp.response_bytes", FieldType::Num, REQUEST),
    // The values of a call's arguments, by path (`mcp.arguments.path`,
    // `mcp.arguments.options.mode`): strings as they are, others as JSON text.
    f(RequestArgument, "mcp.arguments.<path>", FieldType::Str, REQUEST),
    // Absolute unless the directory it was relative to could not be read.
    f(FilePath, "file.path", FieldType::Str, FILE),
    f(FileOp, "file.op", FieldType::Str, FILE),
    f(FileMode, "file.access", FieldType::Str, FILE),
    f(FileResult, "file.result", FieldType::Str, FILE),
];

/// The field a condition names, and the argument path of `mcp.arguments.<path>`.
pub fn field(name: &str) -> Option<&'static Field> {
    if name
        .strip_prefix(ARGUMENT_PREFIX)
        .is_some_and(|p| !p.is_empty() && p != "<path>")
    {
        return FIELDS.iter().find(|f| f.id == RequestArgument);
    }
    FIELDS.iter().find(|f| f.name == name && f.id != RequestArgument)
}

impl Field {
    pub fn set_on(&self, kind: Kind) -> bool {
        self.on.contains(&kind)
    }
}

/// `a, b or c`.
pub fn labels(kinds: &[Kind]) -> String {
    let names: Vec<&str> = kinds.iter().map(|k| k.name()).collect();
    match names.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => names.concat(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The field reference of `docs/rules.md`, as it must read there.
    pub fn markdown() -> String {
        let mut out = String::from("| field | type | set on |\n|---|---|---|\n");
        for f in FIELDS {
            let on = if f.on == ALL {
                "every event".to_string()
            } else {
                f.on.iter()
                    .map(|k| format!("`{}`", k.name()))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            out.push_str(&format!("| `{}` | {} | {on} |\n", f.name, f.ty.name()));
        }
        out
    }

    #[test]
    fn names_are_unique_and_every_field_is_set_somewhere() {
        for (i, f) in FIELDS.iter().enumerate() {
            assert!(!f.on.is_empty(), "{} is set on no event", f.name);
            assert!(
                FIELDS[..i].iter().all(|g| g.name != f.name),
                "{} listed twice",
                f.name
            );
        }
    }

    #[test]
    fn on_names_round_trip() {
        for k in Kind::ON {
            assert_eq!(Kind::from_on(k.name()), Some(k));
        }
        assert_eq!(Kind::from_on("network_progress"), None);
    }

    /// The reference in the docs is the table, rendered.
    #[test]
    fn docs_list_exactly_the_table() {
        let docs = include_str!("../../../docs/rules.md");
        let begin = "<!-- fields: generated from agent/src/rules/fields.rs -->\n";
        let end = "<!-- end of fields -->";
        let start = docs
            .find(begin)
            .expect("docs/rules.md has the field reference markers")
            + begin.len();
        let len = docs[start..].find(end).expect("the field reference ends");
        assert_eq!(
            &docs[start..start + len],
            markdown(),
            "docs/rules.md's field reference differs from the table; paste the right side"
        );
    }
}
