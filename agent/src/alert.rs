//! The alert contract: what a detection hands to the delivery side. The rule engine
//! (and the agent's own health checks) build `Alert`s; `output/` maps them to OCSF
//! Detection Findings (canonical), ECS, syslog, … and delivers them at least once.

use std::{sync::Arc, time::SystemTime};

use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::{
    mcp::inventory::McpServer,
    state::{
        files::FileAccessEvent,
        net_view::NetworkEvent,
        view::{AncestorView, ProcessView},
    },
};

/// OCSF `severity_id` values (names as OCSF spells them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[repr(u8)]
#[allow(dead_code)] // the rule engine picks the others
pub enum Severity {
    Informational = 1,
    Low = 2,
    Medium = 3,
    High = 4,
    Critical = 5,
}

impl Severity {
    pub fn id(self) -> u8 {
        self as u8
    }

    /// The OCSF `severity` caption.
    pub fn name(self) -> &'static str {
        match self {
            Severity::Informational => "Informational",
            Severity::Low => "Low",
            Severity::Medium => "Medium",
            Severity::High => "High",
            Severity::Critical => "Critical",
        }
    }

    /// Lower-case label for metrics and syslog structured data.
    pub fn label(self) -> &'static str {
        match self {
            Severity::Informational => "informational",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    /// ECS `event.severity` / `risk_score` on a 0–100 scale (the Elastic detection
    /// engine's bands: low 21, medium 47, high 73, critical 99).
    pub fn ecs_score(self) -> u8 {
        match self {
            Severity::Informational => 0,
            Severity::Low => 21,
            Severity::Medium => 47,
            Severity::High => 73,
            Severity::Critical => 99,
        }
    }
}

/// A detection, with the evidence an analyst needs to act on it without going back
/// to the host.
#[derive(Clone, Debug, Serialize)]
pub struct Alert {
    /// Stable rule identifier (`finding_info.analytic.uid`), e.g. `MCP-001`.
    pub rule_id: String,
    /// Short rule name (`finding_info.analytic.name`), e.g. `shadow_mcp_server`.
    pub rule_name: String,
    /// One line for the SOC queue (`finding_info.title`).
    pub title: String,
    /// What was seen and why it matters (`finding_info.desc`, `message`).
    pub description: String,
    pub severity: Severity,
    /// MITRE ATT&CK / ATLAS technique ids, e.g. `T1562.001`, `AML.T0051`.
    pub tags: Vec<String>,
    /// When the detection fired.
    #[serde(serialize_with = "ser_time")]
    pub time: SystemTime,
    /// What this finding is about, stable across repeats and restarts (e.g. the MCP
    /// server's identity, or server + destination). With the rule id it forms the
    /// dedup/throttle key and `finding_info.uid`.
    pub identity: String,
    /// The process the finding is about.
    pub process: ProcessView,
    /// Its ancestors, parent first.
    pub lineage: Vec<AncestorView>,
    /// The MCP server whose tree the process is in, as the MCP stage recorded it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mcp_server: Option<Arc<McpServer>>,
    /// The connection that triggered the finding, with its domain, as the state
    /// stage produced it. Typed, so the SIEM mappings cannot drift from it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection: Option<NetworkEvent>,
    /// The sanctioned-list entry consulted (`rules.yaml`), if any; `null` when none.
    pub sanctioned_entry: Option<String>,
    /// The audited MCP request that raised the finding (its `mcp_request` record).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mcp_request: Option<RequestRef>,
    /// The file operation that raised the finding.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<FileAccessEvent>,
    /// An exfiltration chain: the sensitive reads the connection completes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chain: Option<ExfilChain>,
    /// The rule's dedup/throttle window (`throttle:` in rules.yaml); `None` leaves the
    /// delivery side's default. Not part of the finding.
    #[serde(skip)]
    pub throttle: Option<std::time::Duration>,
}

pub use crate::mcp::request_ref::RequestRef;

/// `mcp-exfiltration-chain`: sensitive reads in one MCP server's tree, then egress
/// outside its policy or to a destination it had never reached (`connection`).
#[derive(Clone, Debug, Serialize)]
pub struct ExfilChain {
    /// The sensitive reads the egress followed, oldest first.
    pub reads: Vec<ChainRead>,
    /// Why the egress completes a chain.
    pub egress_reason: String,
    /// Bytes the connection sent, from its close or latest byte report (`None`: no
    /// report came within the window).
    pub bytes_sent: Option<u64>,
    /// From the first read to the egress, in milliseconds.
    pub elapsed_ms: u64,
    pub window_secs: u64,
}

/// One sensitive read of a chain.
#[derive(Clone, Debug, Serialize)]
pub struct ChainRead {
    pub time: String,
    pub path: Arc<str>,
    /// The `sensitive_files` pattern it matched.
    pub pattern: String,
    pub pid: u32,
    pub comm: String,
    /// The `mcp-sensitive-file-access` finding the read raised (rule id and identity,
    /// from which its `finding_uid` follows), when that rule reported it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finding: Option<FindingRef>,
}

/// A finding by its rule and identity.
#[derive(Clone, Debug, Serialize)]
pub struct FindingRef {
    pub rule_id: String,
    pub identity: String,
}

fn ser_time<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&crate::clock::rfc3339(*t))
}

impl Alert {
    /// The dedup key: rule and identity. Not a label: it is unbounded.
    pub fn dedup_key(&self) -> String {
        format!("{}\u{1f}{}", self.rule_id, self.identity)
    }

    /// `finding_info.uid`: a stable digest of rule, identity and host, so the same
    /// finding from the same host has the same uid across repeats and restarts, and
    /// two hosts never collide.
    pub fn finding_uid(&self, host_id: &str) -> String {
        finding_uid(&self.rule_id, &self.identity, host_id)
    }

    pub fn unix_ms(&self) -> u64 {
        self.time
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

#[cfg(test)]
pub(crate) mod fixtures {
    //! A realistic alert for mapping tests: an MCP server started by an agent under
    //! a user's shell, connecting out.

    use super::*;
    use crate::state::process_table::Origin;

    pub fn process() -> ProcessView {
        ProcessView {
            pid: 4242,
            ppid: 4200,
            entity_id: "4242:636352999548".into(),
            start_time: "2026-11-22T00:51:29.104640247Z".into(),
            comm: "node".into(),
            exe: Some(Arc::from("/usr/bin/node")),
            filename: None,
            sha256: Some(Arc::from(
                "a049fb47a049fb47a049fb47a049fb47a049fb47a049fb47a049fb47a049fb47",
            )),
            argv: Arc::from(vec![
                "node".to_string(),
                "/usr/lib/node_modules/@modelcontextprotocol/server-filesystem/dist/index.js".into(),
                "/home/dev".into(),
            ]),
            argv_truncated: false,
            envc: Some(12),
            cwd: Some(Arc::from("/home/dev")),
            uid: 1000,
            gid: 1000,
            user: Some(Arc::from("dev")),
            cgroup_id: Some(1),
            cgroup: Some(Arc::from("/user.slice")),
            container: None,
            exec_time: Some("2026-11-22T00:51:29.105433428Z".into()),
            exit_time: None,
            exit_code: None,
            exit_signal: None,
            origin: Origin::Kernel,
        }
    }

    /// An outbound TCP connect as the state stage produces it.
    pub fn connection() -> crate::state::net_view::NetworkEvent {
        use crate::state::net_view::{Direction, Endpoint, NetAction, NetworkEvent, Protocol};
        let mut n = NetworkEvent::new(
            NetAction::Connect,
            Protocol::Tcp,
            "2026-11-22T00:51:30.000000000Z".into(),
        );
        n.direction = Some(Direction::Outbound);
        n.local = Some(Endpoint {
            ip: "10.0.0.5".parse().unwrap(),
            port: 51544,
        });
        n.remote = Some(Endpoint {
            ip: "203.0.113.7".parse().unwrap(),
            port: 443,
        });
        n.domain = Some(Arc::from("api.example.net"));
        n
    }

    pub fn alert() -> Alert {
        Alert {
            rule_id: "MCP-001".into(),
            rule_name: "shadow_mcp_server".into(),
            title: "Shadow MCP server detected".into(),
            description: "Process speaks MCP and is not on the sanctioned list in rules.yaml".into(),
            severity: Severity::High,
            tags: vec!["T1059".into(), "AML.T0051".into()],
            time: SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_763_769_600_123),
            identity: "npm:@modelcontextprotocol/server-filesystem@2026.1.14".into(),
            process: process(),
            lineage: vec![AncestorView::new(
                4200,
                "4200:636351593427",
                "bash",
                Some("/usr/bin/bash"),
                &["bash"],
            )],
            mcp_server: Some(Arc::new(crate::output::fixture_server())),
            connection: Some(connection()),
            sanctioned_entry: None,
            mcp_request: None,
            file: None,
            chain: None,
            throttle: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finding_uid_is_stable_and_host_scoped() {
        let a = fixtures::alert();
        let mut b = fixtures::alert();
        b.time = SystemTime::now();
        b.process.pid = 1;
        assert_eq!(a.finding_uid("h1"), b.finding_uid("h1"));
        assert_ne!(a.finding_uid("h1"), a.finding_uid("h2"));
        b.identity.push('x');
        assert_ne!(a.finding_uid("h1"), b.finding_uid("h1"));
        assert_eq!(a.dedup_key(), fixtures::alert().dedup_key());
    }
}

/// The `finding_info.uid` of the finding `rule_id` raised about `identity` on a host
/// (also how a chain names the findings it joins).
pub fn finding_uid(rule_id: &str, identity: &str, host_id: &str) -> String {
    let mut h = Sha256::new();
    h.update(rule_id.as_bytes());
    h.update([0x1f]);
    h.update(identity.as_bytes());
    h.update([0x1f]);
    h.update(host_id.as_bytes());
    let d = h.finalize();
    format!("mcpw-{}", hex::encode(&d[..16]))
}
