//! The compiled rule set: what evaluation uses. Built only by `load`, immutable after,
//! swapped whole on reload.

use std::{collections::HashMap, sync::Arc, time::Duration};

use globset::GlobMatcher;
use regex::Regex;

use super::{
    condition::Cond, filelist::FileSet, netlist::EgressPolicy, netlist::NetSet, schema::Builtin,
    tool_policy::ToolPolicy,
};
use crate::{
    alert::Severity,
    mcp::{heuristics::LaunchHeuristicsSpec, inventory::Confidence, inventory::McpServer},
};

pub struct CompiledRules {
    pub launch_heuristics: LaunchHeuristicsSpec,
    pub default_egress: Arc<EgressPolicy>,
    pub network_lists: HashMap<String, Arc<NetSet>>,
    pub sanctioned: Vec<Sanctioned>,
    pub rules: Vec<Rule>,
    /// Custom rules by event kind (`on:`).
    pub by_kind: HashMap<&'static str, Vec<usize>>,
    /// Enabled built-in rules by detection.
    pub builtins: HashMap<Builtin, Vec<usize>>,
    /// Per-tool policy of servers whose entry has none (`tool_policy:`).
    pub default_tool_policy: Option<Arc<ToolPolicy>>,
    /// What audit records hold (`audit:`).
    pub audit: AuditPolicy,
    /// `mcp-tool-poisoning`'s pattern families (`tool_poisoning.families`).
    pub poison_families: Vec<PoisonFamily>,
    /// `sensitive_files:`.
    pub sensitive_files: FileSet,
    /// `exfiltration.window`: a sensitive read and an egress this close form a chain.
    pub exfiltration_window: Duration,
    /// `egress_volume:`.
    pub egress_volume: super::volume_baseline::VolumePolicy,
}

/// `audit:`: argument values recorded or not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuditPolicy {
    pub full_arguments: bool,
    /// Each string value cut to this many bytes.
    pub max_value_bytes: usize,
}

impl Default for AuditPolicy {
    fn default() -> Self {
        Self {
            full_arguments: false,
            max_value_bytes: 1024,
        }
    }
}

/// One family of `tool_poisoning.families`.
#[derive(Debug)]
pub struct PoisonFamily {
    pub id: String,
    pub description: String,
    pub severity: Severity,
    pub patterns: Vec<Regex>,
    pub max_length: Option<usize>,
    pub sibling_tools: bool,
}

impl CompiledRules {
    pub fn builtin(&self, b: Builtin) -> impl Iterator<Item = &Rule> {
        self.builtins
            .get(&b)
            .into_iter()
            .flatten()
            .map(|&i| &self.rules[i])
    }

    /// The index of the first sanctioned entry `s` matches (host and hash included):
    /// one definition for the rule engine and the inventory.
    pub fn sanctioned_position(&self, s: &McpServer) -> Option<usize> {
        let host = s.host.as_ref().and_then(|h| h.exe.as_deref());
        self.sanctioned.iter().position(|e| e.matches(s, host, true))
    }

    /// Sets a server's sanctioned status (and the entry's label) from this rule set;
    /// returns the entry's index. The one place sanctioned status is decided.
    pub fn judge(&self, s: &mut McpServer) -> Option<usize> {
        let position = self.sanctioned_position(s);
        s.sanctioned_entry = position.map(|i| self.sanctioned[i].label.clone());
        s.sanctioned = position.is_some();
        position
    }

    pub fn list(&self, name: &str) -> Option<&Arc<NetSet>> {
        self.network_lists.get(name)
    }

    pub fn summary(&self) -> String {
        let enabled = self.rules.iter().filter(|r| r.enabled).count();
        format!(
            "{} rules ({} enabled, {} built-in detections), {} sanctioned servers, {} network lists",
            self.rules.len(),
            enabled,
            self.builtins.values().map(Vec::len).sum::<usize>(),
            self.sanctioned.len(),
            self.network_lists.len()
        )
    }
}

pub struct Rule {
    pub id: String,
    pub description: String,
    pub severity: Severity,
    pub tags: Vec<String>,
    pub enabled: bool,
    pub detect: Option<Builtin>,
    pub condition: Option<Cond>,
    pub exceptions: Vec<Cond>,
    pub throttle: Option<Duration>,
    pub suspected_min_confidence: Option<Confidence>,
    pub max_lifetime: Option<Duration>,
}

#[derive(Default)]
pub struct Sanctioned {
    /// `id:` or `sanctioned_servers[N]`.
    pub label: String,
    pub name: Option<GlobMatcher>,
    pub package: Option<String>,
    pub version: Option<semver::VersionReq>,
    pub exe: Option<GlobMatcher>,
    pub sha256: Option<String>,
    /// Pinned digest of its tool set.
    pub tools_sha256: Option<String>,
    pub argv: Option<Regex>,
    pub user: Option<String>,
    pub host: Option<GlobMatcher>,
    pub container_image: Option<GlobMatcher>,
    pub egress: Option<Arc<EgressPolicy>>,
    /// Its own per-tool policy (`tools:`).
    pub tools: Option<Arc<ToolPolicy>>,
    /// Its own `audit:`.
    pub audit: Option<AuditPolicy>,
    /// Sensitive paths its tree may touch (`files.allow`).
    pub files_allow: Option<FileSet>,
}

/// Versions as packages write them (`2025.1`, `1.2.3rc1`): padded and cut to semver.
pub fn lenient_version(v: &str) -> Option<semver::Version> {
    if let Ok(v) = semver::Version::parse(v) {
        return Some(v);
    }
    let core: Vec<&str> = v
        .split(|c: char| !c.is_ascii_digit() && c != '.')
        .next()?
        .split('.')
        .filter(|s| !s.is_empty())
        .collect();
    let n = |i: usize| core.get(i).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    (!core.is_empty()).then(|| semver::Version::new(n(0), n(1), n(2)))
}

impl Sanctioned {
    /// Does the entry match? With `with_hash` false the pinned hash is ignored (to
    /// tell "right server, wrong binary" from "unknown server").
    pub fn matches(&self, s: &McpServer, host: Option<&str>, with_hash: bool) -> bool {
        let name_ok = self
            .name
            .as_ref()
            .is_none_or(|g| s.name.as_deref().is_some_and(|n| g.is_match(n)));
        let pkg_name = s.package.as_ref().and_then(|p| p.name.as_deref());
        let pkg_ok = self.package.as_ref().is_none_or(|p| pkg_name == Some(p.as_str()));
        let version = s
            .package
            .as_ref()
            .and_then(|p| p.version.as_deref())
            .or(s.version.as_deref());
        let ver_ok = self
            .version
            .as_ref()
            .is_none_or(|r| version.and_then(lenient_version).is_some_and(|v| r.matches(&v)));
        let exe_ok = self
            .exe
            .as_ref()
            .is_none_or(|g| s.exe.as_deref().is_some_and(|e| g.is_match(e)));
        let argv_ok = self.argv.as_ref().is_none_or(|r| r.is_match(&s.argv.join(" ")));
        let user_ok = self.user.as_ref().is_none_or(|u| {
            s.user.as_deref() == Some(u.as_str()) || u.parse::<u32>().is_ok_and(|uid| uid == s.uid)
        });
        let host_ok = self.host.as_ref().is_none_or(|g| {
            host.is_some_and(|h| g.is_match(h))
                || s.host
                    .as_ref()
                    .is_some_and(|h| g.is_match(&h.name) || h.exe.as_deref().is_some_and(|e| g.is_match(e)))
        });
        let image_ok = self.container_image.as_ref().is_none_or(|g| {
            // The agent knows a container's runtime and id, not (yet) its image name:
            // the glob is matched against `<runtime>://<id>`.
            s.container
                .as_ref()
                .is_some_and(|c| g.is_match(format!("{}://{}", c.runtime, c.id)))
        });
        let hash_ok = !with_hash || self.hash_matches(s);
        name_ok && pkg_ok && ver_ok && exe_ok && argv_ok && user_ok && host_ok && image_ok && hash_ok
    }

    /// A pinned hash matches the executable's or the package file's hash.
    pub fn hash_matches(&self, s: &McpServer) -> bool {
        let Some(pin) = &self.sha256 else { return true };
        let pkg_hash = s.package.as_ref().and_then(|p| p.sha256.as_deref());
        s.sha256.as_deref().is_some_and(|h| h.eq_ignore_ascii_case(pin))
            || pkg_hash.is_some_and(|h| h.eq_ignore_ascii_case(pin))
    }

    /// Does the entry claim this server by name or package (its identity) at all?
    pub fn claims(&self, s: &McpServer) -> bool {
        (self.name.is_some() || self.package.is_some()) && self.matches(s, None, false)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{
        mcp::{identity::PackageId, inventory::ServerState},
        rules::load::load_bytes,
    };

    pub fn server() -> McpServer {
        McpServer {
            id: "mcp:42:1".into(),
            server_uid: "0".repeat(32),
            fingerprint: "1".repeat(32),
            sanctioned: false,
            sanctioned_entry: None,
            state: ServerState::Confirmed,
            confidence: Confidence::High,
            name: Some("mcp-time".into()),
            title: None,
            version: Some("1.0".into()),
            protocol_version: None,
            transport: None,
            listen_address: None,
            http_path: None,
            capabilities: vec![],
            pid: 42,
            entity_id: "42:1".into(),
            exe: Some(Arc::from("/usr/bin/python3.11")),
            argv: Arc::from(vec!["python3".to_string(), "-m".into(), "mcp_server_time".into()]),
            sha256: Some(Arc::from("ab".repeat(32).as_str())),
            package: Some(PackageId {
                ecosystem: "pypi",
                name: Some("mcp-server-time".into()),
                version: Some("2025.9.25".into()),
                path: "/x".into(),
                sha256: None,
            }),
            uid: 1000,
            user: Some(Arc::from("dev")),
            container_id: None,
            container: None,
            host: None,
            client: Default::default(),
            launch_chain: vec![],
            first_seen: String::new(),
            last_seen: String::new(),
            exited_at: None,
            evidence: vec![],
            tools: None,
        }
    }

    fn entries(yaml: &str) -> Vec<Sanctioned> {
        load_bytes(format!("sanctioned_servers:\n{yaml}").as_bytes())
            .unwrap_or_else(|e| panic!("{e:?}"))
            .sanctioned
    }

    #[test]
    fn every_criterion_must_match() {
        let s = server();
        let e = entries(
            "  - {name: 'mcp-*', package: mcp-server-time, version: '>=2025.1, <2026'}\n  - {name: 'mcp-*', version: '>=2026'}\n  - {exe: '/usr/bin/python3*', user: dev, argv: 'mcp_server_time$'}\n  - {exe: '/usr/bin/node', user: dev}\n  - {package: mcp-server-time, user: '1000'}\n  - {package: mcp-server-time, user: root}\n",
        );
        let m: Vec<bool> = e.iter().map(|e| e.matches(&s, None, true)).collect();
        assert_eq!(m, [true, false, true, false, true, false]);
    }

    #[test]
    fn pinned_hash_tells_claims_from_matches() {
        let s = server();
        let good = "ab".repeat(32);
        let e = entries(&format!(
            "  - {{name: mcp-time, sha256: '{}'}}\n  - {{name: mcp-time, sha256: '{good}'}}\n  - {{name: other, sha256: '{}'}}\n",
            "0".repeat(64),
            "0".repeat(64)
        ));
        assert!(!e[0].matches(&s, None, true) && e[0].claims(&s) && !e[0].hash_matches(&s));
        assert!(e[1].matches(&s, None, true));
        assert!(!e[2].claims(&s));
    }

    #[test]
    fn lenient_versions() {
        assert_eq!(lenient_version("2025.1"), Some(semver::Version::new(2025, 1, 0)));
        assert_eq!(lenient_version("1.2.3rc1"), Some(semver::Version::new(1, 2, 3)));
        assert_eq!(lenient_version("v"), None);
    }
}
