//! The rule file as written: serde types that mirror `docs/rules.md` key for key.
//! Every struct denies unknown keys, and values that need checking beyond their type
//! (patterns, CIDRs, names, durations) keep their position (`Spanned`) so `check-rules`
//! can point at them.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_saphyr::Spanned;

pub type S<T> = Spanned<T>;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleFileSpec {
    /// Schema version; only 1 exists.
    #[serde(default)]
    pub version: Option<S<u32>>,
    #[serde(default)]
    pub launch_heuristics: Option<LaunchHeuristicsSpec>,
    /// Named address/domain lists for egress policies; built-in names may be redefined.
    #[serde(default)]
    pub network_lists: BTreeMap<String, S<Vec<S<String>>>>,
    /// Named string lists for conditions (`in_list:`).
    #[serde(default)]
    pub lists: BTreeMap<String, S<Vec<S<String>>>>,
    /// Named conditions, referenced with `macro:`.
    #[serde(default)]
    pub macros: BTreeMap<String, S<ConditionSpec>>,
    #[serde(default)]
    pub egress: Option<S<EgressSpec>>,
    #[serde(default)]
    pub sanctioned_servers: Vec<S<SanctionedSpec>>,
    /// Default per-tool policy of servers whose sanctioned entry has no `tools:`
    /// (unsanctioned servers included).
    #[serde(default)]
    pub tool_policy: Option<S<ToolPolicySpec>>,
    /// What audit records hold (`arguments: summary | full`).
    #[serde(default)]
    pub audit: Option<S<AuditSpec>>,
    /// Pattern families `mcp-tool-poisoning` scans server metadata with.
    #[serde(default)]
    pub tool_poisoning: Option<S<ToolPoisoningSpec>>,
    /// Path globs no process in an MCP server's tree should touch
    /// (`mcp-sensitive-file-access`, `mcp-exfiltration-chain`).
    #[serde(default)]
    pub sensitive_files: Vec<S<String>>,
    /// `mcp-exfiltration-chain`'s window.
    #[serde(default)]
    pub exfiltration: Option<S<ExfiltrationSpec>>,
    /// `mcp-egress-volume-anomaly`'s window, learning period and thresholds.
    #[serde(default)]
    pub egress_volume: Option<S<EgressVolumeSpec>>,
    #[serde(default)]
    pub rules: Vec<S<RuleSpec>>,
}

/// `exfiltration: {window: 60s}`: how long after a sensitive read an egress of the
/// same server's tree completes a chain.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExfiltrationSpec {
    #[serde(default)]
    pub window: Option<S<String>>,
}

/// `egress_volume:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressVolumeSpec {
    /// Bytes are summed per window (`5m`).
    #[serde(default)]
    pub window: Option<S<String>>,
    /// Windows learned before the baseline judges.
    #[serde(default)]
    pub learning_windows: Option<S<u32>>,
    /// A window over this many times the baseline is anomalous.
    #[serde(default)]
    pub factor: Option<S<f64>>,
    /// Windows below this many bytes never are.
    #[serde(default)]
    pub min_window_bytes: Option<S<u64>>,
    /// One connection sending more than this many bytes is, whatever the baseline.
    #[serde(default)]
    pub connection_max_bytes: Option<S<u64>>,
}

/// A sanctioned entry's `files: {allow: [globs]}`: sensitive paths it may touch.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesSpec {
    #[serde(default)]
    pub allow: Vec<S<String>>,
}

/// `tools: {allow: [globs], deny: [globs], arguments: [constraints]}`: a call is
/// outside policy when its tool matches a `deny` glob, or `allow` is given and it
/// matches none, or it breaks an argument constraint of its tool.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolPolicySpec {
    #[serde(default)]
    pub allow: Vec<S<String>>,
    #[serde(default)]
    pub deny: Vec<S<String>>,
    #[serde(default)]
    pub arguments: Vec<S<ArgumentConstraintSpec>>,
}

/// One argument of the tools matching `tool` (glob; every tool by default), by its
/// path (`path`, `options.mode`), must satisfy exactly one test. Paths (values
/// starting with `/`, `~` or `file://`) are normalised first.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArgumentConstraintSpec {
    #[serde(default)]
    pub tool: Option<S<String>>,
    pub argument: S<String>,
    #[serde(default)]
    pub equals: Option<S<String>>,
    #[serde(default, rename = "in")]
    pub in_: Option<Vec<S<String>>>,
    #[serde(default)]
    pub prefix: Option<Vec<S<String>>>,
    #[serde(default)]
    pub glob: Option<S<String>>,
    #[serde(default)]
    pub regex: Option<S<String>>,
    /// A call without the argument passes (by default it breaks the constraint).
    #[serde(default)]
    pub optional: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ArgumentsModeSpec {
    /// Keys, types, lengths and a digest (the default).
    #[default]
    Summary,
    /// The values too, secrets masked, capped at `max_value_bytes`.
    Full,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSpec {
    #[serde(default)]
    pub arguments: ArgumentsModeSpec,
    /// `full`: each string value is cut to this many bytes (default 1024).
    #[serde(default)]
    pub max_value_bytes: Option<S<u32>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolPoisoningSpec {
    #[serde(default)]
    pub families: Vec<S<PoisonFamilySpec>>,
}

/// A family of injection patterns: regexes (case-insensitive unless they say
/// otherwise), or the two checks no regex expresses: `max_length` (a text longer
/// than this) and `sibling_tools` (a text naming a tool of another server under
/// the same client: shadowing).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoisonFamilySpec {
    pub id: S<String>,
    #[serde(default)]
    pub description: String,
    pub severity: SeveritySpec,
    #[serde(default)]
    pub patterns: Vec<S<String>>,
    #[serde(default)]
    pub max_length: Option<S<u32>>,
    #[serde(default)]
    pub sibling_tools: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LaunchHeuristicsSpec {
    #[serde(default)]
    pub patterns: Vec<S<LaunchPatternSpec>>,
    /// The old name of `patterns`: plain regexes, matched like a pattern without
    /// `on` (every name of what a process runs; no longer the whole command line).
    #[serde(default)]
    pub argv_patterns: Vec<S<String>>,
    #[serde(default)]
    pub package_runners: Vec<String>,
    #[serde(default)]
    pub tiny_env_max: Option<u32>,
}

/// `{match: REGEX, on: [program, script, module, package, image, subcommand]}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LaunchPatternSpec {
    #[serde(rename = "match")]
    pub regex: S<String>,
    #[serde(default)]
    pub on: Option<Vec<crate::mcp::launch::Position>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressSpec {
    #[serde(default)]
    pub allow: DestinationsSpec,
    #[serde(default)]
    pub deny: DestinationsSpec,
}

/// A set of destinations: an address or domain matches if it is in a CIDR, a domain
/// pattern or a named list; `ports`, when given, further restricts (allow) or alone
/// selects (deny) by destination port.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationsSpec {
    #[serde(default)]
    pub cidrs: Vec<S<String>>,
    #[serde(default)]
    pub domains: Vec<S<String>>,
    #[serde(default)]
    pub ports: Vec<S<u16>>,
    #[serde(default)]
    pub lists: Vec<S<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SanctionedSpec {
    /// A label for alerts and baselines; defaults to `sanctioned_servers[N]`.
    #[serde(default)]
    pub id: Option<S<String>>,
    /// Server name (from its MCP handshake), glob.
    #[serde(default)]
    pub name: Option<S<String>>,
    /// Package name (npm / PyPI), exact.
    #[serde(default)]
    pub package: Option<S<String>>,
    /// Package version requirement (`>=1.2, <2`).
    #[serde(default)]
    pub version: Option<S<String>>,
    /// Executable path, glob.
    #[serde(default)]
    pub exe: Option<S<String>>,
    /// Pinned SHA-256 of the executable or package file (hex).
    #[serde(default)]
    pub sha256: Option<S<String>>,
    /// Pinned digest of the server's tool set (`tools_sha256` of its audit records).
    #[serde(default)]
    pub tools_sha256: Option<S<String>>,
    /// Regex over argv joined by spaces.
    #[serde(default)]
    pub argv: Option<S<String>>,
    #[serde(default)]
    pub user: Option<S<String>>,
    /// Host process (the MCP client that launched it): glob over its exe or name.
    #[serde(default)]
    pub host: Option<S<String>>,
    /// Container image, glob.
    #[serde(default)]
    pub container_image: Option<S<String>>,
    /// Replaces the default egress policy for this server's tree.
    #[serde(default)]
    pub egress: Option<S<EgressSpec>>,
    /// Replaces the default tool policy (`tool_policy:`) for this server.
    #[serde(default)]
    pub tools: Option<S<ToolPolicySpec>>,
    /// Replaces the file's `audit:` for this server.
    #[serde(default)]
    pub audit: Option<S<AuditSpec>>,
    /// Sensitive paths this server's tree may touch.
    #[serde(default)]
    pub files: Option<S<FilesSpec>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SeveritySpec {
    #[serde(alias = "Informational", alias = "info")]
    Informational,
    #[serde(alias = "Low")]
    Low,
    #[serde(alias = "Medium")]
    Medium,
    #[serde(alias = "High")]
    High,
    #[serde(alias = "Critical")]
    Critical,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionSpec {
    Alert,
    /// Reserved: accepted by the schema, refused by validation until enforcement lands.
    Kill,
    Block,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Builtin {
    ShadowMcpServer,
    McpUnsanctionedEgress,
    McpMetadataAccess,
    McpHttpListenerExposed,
    McpServerAttestationFailed,
    McpServerNewDestination,
    McpServerPrivileged,
    McpServerLongLived,
    McpRawNetwork,
    LlmProviderEgress,
    McpToolDefinitionsChanged,
    McpToolPoisoning,
    McpToolCallDenied,
    McpSensitiveFileAccess,
    McpExfiltrationChain,
    McpEgressVolumeAnomaly,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConfidenceSpec {
    Low,
    Medium,
    High,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    pub id: S<String>,
    #[serde(default)]
    pub description: String,
    pub severity: SeveritySpec,
    #[serde(default)]
    pub tags: Vec<S<String>>,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// A built-in detection this rule runs; `condition` then narrows it.
    #[serde(default)]
    pub detect: Option<Builtin>,
    /// Event kinds a custom rule is evaluated on (required without `detect`).
    #[serde(default)]
    pub on: Vec<S<String>>,
    #[serde(default)]
    pub condition: Option<S<ConditionSpec>>,
    /// Any exception that matches silences the rule.
    #[serde(default)]
    pub exceptions: Vec<S<ConditionSpec>>,
    /// Repeats of this rule for one identity are folded within this window (`30s`,
    /// `10m`, `1h`, `0` for none); configures the delivery-side throttle.
    #[serde(default)]
    pub throttle: Option<S<String>>,
    #[serde(default = "alert")]
    pub action: S<ActionSpec>,
    /// `shadow-mcp-server`: also report suspects at or above this confidence.
    #[serde(default)]
    pub suspected_min_confidence: Option<S<ConfidenceSpec>>,
    /// `mcp-server-long-lived`: the maximum lifetime (`8h`).
    #[serde(default)]
    pub max_lifetime: Option<S<String>>,
}

fn yes() -> bool {
    true
}

fn alert() -> S<ActionSpec> {
    Spanned::new(
        ActionSpec::Alert,
        serde_saphyr::Location::UNKNOWN,
        serde_saphyr::Location::UNKNOWN,
    )
}

/// A condition: exactly one of the combinators (`all`, `any`, `not`, `macro`) or one
/// field test (`field` with one operator).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConditionSpec {
    #[serde(default)]
    pub all: Option<Vec<S<ConditionSpec>>>,
    #[serde(default)]
    pub any: Option<Vec<S<ConditionSpec>>>,
    #[serde(default)]
    pub not: Option<Box<S<ConditionSpec>>>,
    #[serde(default, rename = "macro")]
    pub macro_: Option<S<String>>,
    #[serde(default)]
    pub field: Option<S<String>>,
    #[serde(default)]
    pub equals: Option<S<String>>,
    #[serde(default, rename = "in")]
    pub in_: Option<Vec<S<String>>>,
    #[serde(default)]
    pub in_list: Option<S<String>>,
    #[serde(default)]
    pub glob: Option<S<String>>,
    #[serde(default)]
    pub regex: Option<S<String>>,
    #[serde(default)]
    pub cidr: Option<Vec<S<String>>>,
    #[serde(default)]
    pub in_network_list: Option<S<String>>,
    #[serde(default)]
    pub gt: Option<S<i64>>,
    #[serde(default)]
    pub lt: Option<S<i64>>,
    #[serde(default)]
    pub exists: Option<S<bool>>,
}
