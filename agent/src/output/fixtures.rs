//! Test support for other modules: the output stage's renderings of the shared alert
//! and server fixtures.

use super::{host::HostInfo, inventory, ocsf};

fn host() -> HostInfo {
    HostInfo {
        hostname: "host-01".into(),
        id: "0123456789abcdef0123456789abcdef".into(),
    }
}

/// OCSF renderings of the alert fixture: in full, and bare of every optional part.
pub(crate) fn fixture_findings() -> Vec<serde_json::Value> {
    let host = host();
    let a = crate::alert::fixtures::alert();
    let mut bare = a.clone();
    bare.connection = None;
    bare.mcp_server = None;
    bare.lineage.clear();
    bare.tags.clear();
    let mut from_call = a.clone();
    from_call.mcp_request = Some(crate::alert::RequestRef {
        uid: "0123456789abcdef0123456789abcdef".into(),
        method: "tools/call".into(),
        target: Some("write_file".into()),
        session: "4242:stdio".into(),
        jsonrpc_id: Some("7".into()),
    });
    // An exfiltration chain: a sensitive read (its own finding) and the connection.
    let read = crate::state::files::fixtures::read();
    let mut sensitive = a.clone();
    sensitive.connection = None;
    sensitive.file = Some(read.clone());
    let mut chain = a.clone();
    chain.chain = Some(crate::alert::ExfilChain {
        reads: vec![crate::alert::ChainRead {
            time: read.time.clone(),
            path: read.path.clone(),
            pattern: "~/.aws/credentials".into(),
            pid: 42,
            comm: "node".into(),
            finding: Some(crate::alert::FindingRef {
                rule_id: "mcp-sensitive-file-access".into(),
                identity: "npm:x@1->file:/home/dev/.aws/credentials".into(),
            }),
        }],
        egress_reason: "a destination this server had never reached".into(),
        bytes_sent: Some(1234),
        elapsed_ms: 40,
        window_secs: 60,
    });
    vec![
        ocsf::detection_finding(&a, &host, "ev-1", 1),
        ocsf::detection_finding(&bare, &host, "ev-2", 7),
        ocsf::detection_finding(&from_call, &host, "ev-4", 1),
        ocsf::detection_finding(&sensitive, &host, "ev-5", 1),
        ocsf::detection_finding(&chain, &host, "ev-6", 1),
    ]
}

/// A confirmed, sanctioned server hosted by `claude`.
pub(crate) fn fixture_server() -> crate::mcp::inventory::McpServer {
    inventory::fixtures::server()
}

/// The OCSF process activity of the alert fixture's process.
pub(crate) fn fixture_process_activity() -> serde_json::Value {
    use crate::state::view::{ProcessAction, ProcessEvent};
    let a = crate::alert::fixtures::alert();
    let e = ProcessEvent {
        kind: "process_exec",
        time: "2026-11-22T00:51:29.105433428Z".into(),
        action: ProcessAction::Exec,
        process: a.process,
        lineage: a.lineage,
    };
    ocsf::process_activity(&e, &host(), "ev-3")
}
