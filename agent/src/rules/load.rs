//! Reading a rule file: YAML → schema types (structural errors, with positions) →
//! validation and compilation (every semantic error, with positions). Nothing is
//! checked later: a `CompiledRules` that exists is a valid one.

use std::{
    collections::{HashMap, HashSet},
    fmt,
    path::Path,
    sync::Arc,
    time::Duration,
};

use serde_saphyr::{Location, Spanned};

use super::{
    condition::{self, Cond, FieldType, Op, EVENT_KINDS},
    model::{CompiledRules, Rule, Sanctioned},
    netlist::{self, EgressPolicy, NetSet, BUILTIN_LISTS},
    schema::*,
};
use crate::{alert::Severity, mcp::heuristics::LaunchHeuristicsSpec, mcp::inventory::Confidence};

/// Larger rule files are refused: nobody writes 4 MiB of rules by hand, and the
/// parser's work must stay bounded.
pub const MAX_FILE_BYTES: usize = 4 << 20;

/// One problem in a rule file, where it is, and what was expected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleError {
    pub line: u64,
    pub column: u64,
    /// The offending key (path), when known.
    pub key: String,
    pub message: String,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: ", self.line, self.column)?;
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

/// All the errors of one file, each line prefixed with the file name.
#[derive(Debug)]
pub struct RuleErrors {
    pub file: String,
    pub errors: Vec<RuleError>,
}

impl fmt::Display for RuleErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}:{e}", self.file)?;
        }
        Ok(())
    }
}

impl std::error::Error for RuleErrors {}

pub fn load_file(path: &Path) -> Result<CompiledRules, RuleErrors> {
    let file = path.display().to_string();
    let fail = |message: String| RuleErrors {
        file: file.clone(),
        errors: vec![RuleError {
            line: 1,
            column: 1,
            key: String::new(),
            message,
        }],
    };
    let bytes = std::fs::read(path).map_err(|e| fail(format!("cannot read the file: {e}")))?;
    load_bytes(&bytes).map_err(|errors| RuleErrors { file, errors })
}

pub fn load_bytes(bytes: &[u8]) -> Result<CompiledRules, Vec<RuleError>> {
    let at = |line, column, message: String| {
        vec![RuleError {
            line,
            column,
            key: String::new(),
            message,
        }]
    };
    if bytes.len() > MAX_FILE_BYTES {
        return Err(at(
            1,
            1,
            format!(
                "file is {} bytes; rule files are limited to {} bytes",
                bytes.len(),
                MAX_FILE_BYTES
            ),
        ));
    }
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let (line, col) = position_of(bytes, e.valid_up_to());
            return Err(at(line, col, "not UTF-8 text (is this a binary file?)".into()));
        }
    };
    if let Some(i) = text.find('\0') {
        let (line, col) = position_of(bytes, i);
        return Err(at(line, col, "NUL byte: not a text file".into()));
    }
    if text
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
    {
        return Err(at(
            1,
            1,
            "empty rule file: expected a mapping with `rules:` (see docs/rules.md)".into(),
        ));
    }
    let options = serde_saphyr::options! { with_snippet: false };
    let spec: RuleFileSpec =
        serde_saphyr::from_str_with_options(text, options).map_err(|e| vec![parse_error(text, &e)])?;
    Compiler::default().compile(spec)
}

fn position_of(bytes: &[u8], offset: usize) -> (u64, u64) {
    let before = &bytes[..offset];
    let line = before.iter().filter(|&&b| b == b'\n').count() as u64 + 1;
    let col = (offset - before.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1)) as u64 + 1;
    (line, col)
}

/// A structural error from the YAML deserializer, reworded to `line:col: key: message`.
fn parse_error(text: &str, e: &serde_saphyr::Error) -> RuleError {
    let inner = e.without_snippet();
    let loc = inner.location().filter(|l| l.line() > 0);
    let (line, column) = loc.map_or((1, 1), |l| (l.line(), l.column()));
    let mut message = inner.to_string();
    // The deserializer appends the position; we print it first instead.
    for sep in [" at line ", "\n"] {
        if let Some(i) = message.find(sep) {
            message.truncate(i);
        }
    }
    let message = message.trim().trim_start_matches("error: ").to_string();
    // Some scalar errors name only the type; say what was expected.
    let message = match message.as_str() {
        "invalid boolean" => "invalid boolean: expected true or false".to_string(),
        "invalid u16" => "invalid u16: expected an integer 0-65535".to_string(),
        "invalid u32" | "invalid i64" => format!("{message}: expected an integer"),
        "expected sequence start" => "expected a list".to_string(),
        "expected mapping start" => "expected a mapping (key: value)".to_string(),
        m if m.starts_with("duplicate mapping key") => m
            .split(", set DuplicateKeyPolicy")
            .next()
            .unwrap_or(m)
            .to_string(),
        m if m.starts_with("multiple YAML documents") => {
            "multiple YAML documents: a rule file is a single document".to_string()
        }
        _ => message,
    };
    // Unknown keys name themselves in the message; type errors do not, so name the
    // key written on that line.
    let key = text
        .lines()
        .nth(line.saturating_sub(1) as usize)
        .and_then(|l| {
            let l = l.trim_start().trim_start_matches("- ").trim_start();
            let (k, _) = l.split_once(':')?;
            let k = k.trim();
            (!k.is_empty() && k.chars().all(|c| c.is_alphanumeric() || c == '_' || c == '-'))
                .then(|| k.to_string())
        })
        .filter(|_| !message.starts_with("unknown field"))
        .unwrap_or_default();
    RuleError {
        line,
        column,
        key,
        message,
    }
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("expected a duration like 30s, 10m, 8h or 0, got {s:?}");
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().map_err(|_| bad())?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        _ => return Err(bad()),
    };
    Ok(Duration::from_secs(secs))
}

#[derive(Default)]
struct Compiler {
    errors: Vec<RuleError>,
    network_lists: HashMap<String, Arc<NetSet>>,
    lists: HashMap<String, Arc<[String]>>,
    macro_specs: HashMap<String, Spanned<ConditionSpec>>,
    macros: HashMap<String, Cond>,
    /// Macros being compiled (cycle detection).
    stack: Vec<String>,
    /// Macros that failed to compile (reported once).
    failed: HashSet<String>,
}

impl Compiler {
    fn err(&mut self, loc: Location, key: impl Into<String>, message: impl Into<String>) {
        self.errors.push(RuleError {
            line: loc.line().max(1),
            column: loc.column().max(1),
            key: key.into(),
            message: message.into(),
        });
    }

    fn compile(mut self, spec: RuleFileSpec) -> Result<CompiledRules, Vec<RuleError>> {
        if let Some(v) = &spec.version {
            if v.value != 1 {
                self.err(
                    v.referenced,
                    "version",
                    format!("unsupported version {}, expected 1", v.value),
                );
            }
        }
        let launch_heuristics = self.heuristics(spec.launch_heuristics.unwrap_or_default());

        for (name, entries) in BUILTIN_LISTS {
            let set = NetSet::build(entries.iter().copied()).expect("built-in lists are valid");
            self.network_lists.insert(name.to_string(), Arc::new(set));
        }
        for (name, entries) in &spec.network_lists {
            let key = format!("network_lists.{name}");
            if let Err(m) = check_name(name) {
                self.err(entries.referenced, &key, m);
            }
            if let Some(set) = self.netset(&key, &entries.value) {
                self.network_lists.insert(name.clone(), Arc::new(set));
            }
        }
        for (name, items) in &spec.lists {
            if let Err(m) = check_name(name) {
                self.err(items.referenced, format!("lists.{name}"), m);
            }
            let v: Vec<String> = items.value.iter().map(|s| s.value.clone()).collect();
            self.lists.insert(name.clone(), Arc::from(v));
        }
        let mut macro_names = Vec::new();
        for (name, m) in spec.macros {
            if let Err(msg) = check_name(&name) {
                self.err(m.referenced, format!("macros.{name}"), msg);
            }
            macro_names.push(name.clone());
            self.macro_specs.insert(name, m);
        }
        for name in macro_names {
            self.resolve_macro(&name, Location::UNKNOWN, &format!("macros.{name}"));
        }

        let default_egress = match &spec.egress {
            Some(e) => self.egress("egress", &e.value),
            None => EgressPolicy::default(),
        };

        let mut sanctioned = Vec::new();
        let mut labels = HashSet::new();
        for (i, s) in spec.sanctioned_servers.iter().enumerate() {
            let key = format!("sanctioned_servers[{i}]");
            let entry = self.sanctioned(&key, i, &s.value, s.referenced);
            if !labels.insert(entry.label.clone()) {
                let loc = s.value.id.as_ref().map_or(s.referenced, |id| id.referenced);
                self.err(
                    loc,
                    format!("{key}.id"),
                    format!("duplicate sanctioned entry id {:?}", entry.label),
                );
            }
            sanctioned.push(entry);
        }

        let mut rules = Vec::new();
        let mut ids = HashMap::new();
        for (i, r) in spec.rules.iter().enumerate() {
            let key = format!("rules[{i}]");
            if let Some(first) = ids.insert(r.value.id.value.clone(), r.value.id.referenced.line()) {
                self.err(
                    r.value.id.referenced,
                    format!("{key}.id"),
                    format!(
                        "duplicate rule id {:?} (first defined on line {first})",
                        r.value.id.value
                    ),
                );
            }
            if let Some(rule) = self.rule(&key, &r.value) {
                rules.push(rule);
            }
        }
        if !self.errors.is_empty() {
            self.errors.sort_by_key(|e| (e.line, e.column));
            return Err(self.errors);
        }
        let mut by_kind: HashMap<&'static str, Vec<usize>> = HashMap::new();
        let mut builtins: HashMap<Builtin, Vec<usize>> = HashMap::new();
        for (i, (rule, kinds)) in rules.iter().enumerate() {
            let rule: &Rule = rule;
            if !rule.enabled {
                continue;
            }
            match rule.detect {
                Some(b) => builtins.entry(b).or_default().push(i),
                None => kinds.iter().for_each(|k| by_kind.entry(*k).or_default().push(i)),
            }
        }
        Ok(CompiledRules {
            launch_heuristics,
            default_egress: Arc::new(default_egress),
            network_lists: self.network_lists,
            sanctioned,
            rules: rules.into_iter().map(|(r, _)| r).collect(),
            by_kind,
            builtins,
        })
    }

    fn heuristics(&mut self, h: super::schema::LaunchHeuristicsSpec) -> LaunchHeuristicsSpec {
        for (i, p) in h.argv_patterns.iter().enumerate() {
            if let Err(m) = condition::compile_regex(&p.value) {
                self.err(p.referenced, format!("launch_heuristics.argv_patterns[{i}]"), m);
            }
        }
        LaunchHeuristicsSpec {
            argv_patterns: h.argv_patterns.into_iter().map(|p| p.value).collect(),
            package_runners: h.package_runners,
            tiny_env_max: h.tiny_env_max.unwrap_or(6),
        }
    }

    fn netset(&mut self, key: &str, entries: &[Spanned<String>]) -> Option<NetSet> {
        match NetSet::build(entries.iter().map(|e| e.value.as_str())) {
            Ok(s) => Some(s),
            Err((i, m)) => {
                let loc = entries.get(i).map_or(Location::UNKNOWN, |e| e.referenced);
                let v = entries.get(i).map(|e| e.value.clone()).unwrap_or_default();
                self.err(loc, format!("{key}[{i}]"), format!("{v:?}: {m}"));
                None
            }
        }
    }

    fn destinations(&mut self, key: &str, d: &DestinationsSpec) -> (NetSet, Vec<u16>) {
        let mut set = NetSet::default();
        for (i, c) in d.cidrs.iter().enumerate() {
            if let Err(m) = netlist::parse_cidr(&c.value) {
                self.err(
                    c.referenced,
                    format!("{key}.cidrs[{i}]"),
                    format!("{:?}: {m}", c.value),
                );
            }
        }
        for (i, c) in d.domains.iter().enumerate() {
            if let Err(m) = netlist::check_domain(&c.value) {
                self.err(
                    c.referenced,
                    format!("{key}.domains[{i}]"),
                    format!("{:?}: {m}", c.value),
                );
            }
        }
        let ok_entries: Vec<&str> = d
            .cidrs
            .iter()
            .filter(|c| netlist::parse_cidr(&c.value).is_ok())
            .chain(
                d.domains
                    .iter()
                    .filter(|c| netlist::check_domain(&c.value).is_ok()),
            )
            .map(|c| c.value.as_str())
            .collect();
        if let Ok(s) = NetSet::build(ok_entries) {
            set = s;
        }
        for (i, l) in d.lists.iter().enumerate() {
            match self.network_lists.get(&l.value) {
                Some(other) => set.extend(&other.clone()),
                None => {
                    let known = self.known_lists();
                    self.err(
                        l.referenced,
                        format!("{key}.lists[{i}]"),
                        format!("unknown network list {:?}, expected one of: {known}", l.value),
                    );
                }
            }
        }
        for (i, p) in d.ports.iter().enumerate() {
            if p.value == 0 {
                self.err(
                    p.referenced,
                    format!("{key}.ports[{i}]"),
                    "expected a port 1-65535, got 0",
                );
            }
        }
        (set, d.ports.iter().map(|p| p.value).collect())
    }

    fn known_lists(&self) -> String {
        let mut v: Vec<&str> = self.network_lists.keys().map(String::as_str).collect();
        v.sort();
        v.join(", ")
    }

    fn egress(&mut self, key: &str, e: &EgressSpec) -> EgressPolicy {
        let (allow, allow_ports) = self.destinations(&format!("{key}.allow"), &e.allow);
        let (deny, deny_ports) = self.destinations(&format!("{key}.deny"), &e.deny);
        EgressPolicy {
            allow,
            allow_ports,
            deny,
            deny_ports,
        }
    }

    fn glob(&mut self, key: &str, g: &Option<Spanned<String>>) -> Option<globset::GlobMatcher> {
        let g = g.as_ref()?;
        condition::compile_glob(&g.value)
            .map_err(|m| self.err(g.referenced, key, format!("{:?}: {m}", g.value)))
            .ok()
    }

    fn sanctioned(&mut self, key: &str, i: usize, s: &SanctionedSpec, at: Location) -> Sanctioned {
        let has_identity = s.name.is_some()
            || s.package.is_some()
            || s.exe.is_some()
            || s.sha256.is_some()
            || s.argv.is_some();
        if !has_identity {
            self.err(
                at,
                key,
                "a sanctioned entry must match by at least one of name, package, exe, sha256, argv",
            );
        }
        let version = s.version.as_ref().and_then(|v| {
            semver::VersionReq::parse(&v.value)
                .map_err(|e| {
                    self.err(
                        v.referenced,
                        format!("{key}.version"),
                        format!(
                            "{:?}: bad version range ({e}); expected e.g. \">=1.2, <2\"",
                            v.value
                        ),
                    )
                })
                .ok()
        });
        if let (Some(v), None, None) = (&s.version, &s.package, &s.name) {
            self.err(
                v.referenced,
                format!("{key}.version"),
                "a version range needs a package or name",
            );
        }
        if let Some(h) = &s.sha256 {
            if h.value.len() != 64 || !h.value.bytes().all(|b| b.is_ascii_hexdigit()) {
                self.err(
                    h.referenced,
                    format!("{key}.sha256"),
                    "expected 64 hex digits (a SHA-256)",
                );
            }
        }
        let argv = s.argv.as_ref().and_then(|r| {
            condition::compile_regex(&r.value)
                .map_err(|m| self.err(r.referenced, format!("{key}.argv"), m))
                .ok()
        });
        let egress = s
            .egress
            .as_ref()
            .map(|e| Arc::new(self.egress(&format!("{key}.egress"), &e.value)));
        Sanctioned {
            label: s
                .id
                .as_ref()
                .map_or_else(|| format!("sanctioned_servers[{i}]"), |id| id.value.clone()),
            name: self.glob(&format!("{key}.name"), &s.name),
            package: s.package.as_ref().map(|p| p.value.clone()),
            version,
            exe: self.glob(&format!("{key}.exe"), &s.exe),
            sha256: s.sha256.as_ref().map(|h| h.value.to_ascii_lowercase()),
            argv,
            user: s.user.as_ref().map(|u| u.value.clone()),
            host: self.glob(&format!("{key}.host"), &s.host),
            container_image: self.glob(&format!("{key}.container_image"), &s.container_image),
            egress,
        }
    }

    fn rule(&mut self, key: &str, r: &RuleSpec) -> Option<(Rule, Vec<&'static str>)> {
        if let Err(m) = check_id(&r.id.value) {
            self.err(r.id.referenced, format!("{key}.id"), m);
        }
        for (i, t) in r.tags.iter().enumerate() {
            if !is_attack_tag(&t.value) {
                self.err(
                    t.referenced,
                    format!("{key}.tags[{i}]"),
                    format!(
                        "{:?}: expected a MITRE ATT&CK (T1071, T1071.001, TA0010) or ATLAS (AML.T0051) id",
                        t.value
                    ),
                );
            }
        }
        if r.action.value != ActionSpec::Alert {
            self.err(
                r.action.referenced,
                format!("{key}.action"),
                "only `alert` is supported in this version (kill and block are reserved)",
            );
        }
        let mut kinds = Vec::new();
        for (i, k) in r.on.iter().enumerate() {
            match EVENT_KINDS.iter().find(|e| **e == k.value) {
                Some(e) => kinds.push(*e),
                None => self.err(
                    k.referenced,
                    format!("{key}.on[{i}]"),
                    format!(
                        "unknown event kind {:?}, expected one of: {}",
                        k.value,
                        EVENT_KINDS.join(", ")
                    ),
                ),
            }
        }
        if r.detect.is_none() && r.on.is_empty() {
            self.err(
                r.id.referenced,
                format!("{key}.on"),
                "a rule without `detect` needs `on:` event kinds",
            );
        }
        if r.detect.is_none() && r.condition.is_none() {
            self.err(
                r.id.referenced,
                format!("{key}.condition"),
                "a rule without `detect` needs a `condition`",
            );
        }
        if r.detect.is_some() && !r.on.is_empty() {
            self.err(
                r.on[0].referenced,
                format!("{key}.on"),
                "`on` is for custom rules; a built-in detection chooses its own events",
            );
        }
        let throttle = r.throttle.as_ref().and_then(|t| {
            parse_duration(&t.value)
                .map_err(|m| self.err(t.referenced, format!("{key}.throttle"), m))
                .ok()
        });
        let max_lifetime = r.max_lifetime.as_ref().and_then(|t| {
            if r.detect != Some(Builtin::McpServerLongLived) {
                self.err(
                    t.referenced,
                    format!("{key}.max_lifetime"),
                    "only for detect: mcp-server-long-lived",
                );
            }
            parse_duration(&t.value)
                .map_err(|m| self.err(t.referenced, format!("{key}.max_lifetime"), m))
                .ok()
        });
        if r.detect == Some(Builtin::McpServerLongLived) && r.max_lifetime.is_none() {
            self.err(
                r.id.referenced,
                format!("{key}.max_lifetime"),
                "mcp-server-long-lived needs max_lifetime",
            );
        }
        if let Some(c) = &r.suspected_min_confidence {
            if r.detect != Some(Builtin::ShadowMcpServer) {
                self.err(
                    c.referenced,
                    format!("{key}.suspected_min_confidence"),
                    "only for detect: shadow-mcp-server",
                );
            }
        }
        let condition = r
            .condition
            .as_ref()
            .and_then(|c| self.condition(&format!("{key}.condition"), c));
        let exceptions = r
            .exceptions
            .iter()
            .enumerate()
            .filter_map(|(i, c)| self.condition(&format!("{key}.exceptions[{i}]"), c))
            .collect();
        Some((
            Rule {
                id: r.id.value.clone(),
                description: r.description.clone(),
                severity: match r.severity {
                    SeveritySpec::Informational => Severity::Informational,
                    SeveritySpec::Low => Severity::Low,
                    SeveritySpec::Medium => Severity::Medium,
                    SeveritySpec::High => Severity::High,
                    SeveritySpec::Critical => Severity::Critical,
                },
                tags: r.tags.iter().map(|t| t.value.clone()).collect(),
                enabled: r.enabled,
                detect: r.detect,
                condition,
                exceptions,
                throttle,
                suspected_min_confidence: r.suspected_min_confidence.as_ref().map(|c| match c.value {
                    ConfidenceSpec::Low => Confidence::Low,
                    ConfidenceSpec::Medium => Confidence::Medium,
                    ConfidenceSpec::High => Confidence::High,
                }),
                max_lifetime,
            },
            kinds,
        ))
    }

    fn resolve_macro(&mut self, name: &str, at: Location, key: &str) -> Option<Cond> {
        if let Some(c) = self.macros.get(name) {
            return Some(c.clone());
        }
        if self.stack.iter().any(|n| n == name) {
            let chain = format!("{} -> {name}", self.stack.join(" -> "));
            self.err(at, key, format!("macro cycle: {chain}"));
            return None;
        }
        if self.failed.contains(name) {
            return None;
        }
        let Some(spec) = self.macro_specs.remove(name) else {
            let mut known: Vec<&str> = self.macro_specs.keys().map(String::as_str).collect();
            known.extend(self.stack.iter().map(String::as_str));
            known.sort();
            self.err(
                at,
                key,
                format!("unknown macro {name:?}; defined macros: [{}]", known.join(", ")),
            );
            return None;
        };
        self.stack.push(name.to_string());
        let c = self.condition(&format!("macros.{name}"), &spec);
        self.stack.pop();
        match &c {
            Some(c) => {
                self.macros.insert(name.to_string(), c.clone());
            }
            None => {
                self.failed.insert(name.to_string());
            }
        }
        c
    }

    fn condition(&mut self, key: &str, c: &Spanned<ConditionSpec>) -> Option<Cond> {
        let at = c.referenced;
        let s = &c.value;
        let combinators = [
            s.all.is_some(),
            s.any.is_some(),
            s.not.is_some(),
            s.macro_.is_some(),
        ];
        let ops: Vec<&str> = [
            ("equals", s.equals.is_some()),
            ("in", s.in_.is_some()),
            ("in_list", s.in_list.is_some()),
            ("glob", s.glob.is_some()),
            ("regex", s.regex.is_some()),
            ("cidr", s.cidr.is_some()),
            ("in_network_list", s.in_network_list.is_some()),
            ("gt", s.gt.is_some()),
            ("lt", s.lt.is_some()),
            ("exists", s.exists.is_some()),
        ]
        .into_iter()
        .filter(|(_, set)| *set)
        .map(|(n, _)| n)
        .collect();
        let n_comb = combinators.iter().filter(|b| **b).count();
        if n_comb + usize::from(s.field.is_some()) != 1 {
            self.err(
                at,
                key,
                "a condition needs exactly one of: all, any, not, macro, or field with one operator",
            );
            return None;
        }
        if n_comb == 1 && !ops.is_empty() {
            self.err(at, key, format!("operator `{}` needs a `field`", ops[0]));
            return None;
        }
        let list = |this: &mut Self, v: &[Spanned<ConditionSpec>], k: &str| -> Option<Vec<Cond>> {
            if v.is_empty() {
                this.err(at, format!("{key}.{k}"), "expected at least one condition");
                return None;
            }
            let out: Vec<Option<Cond>> = v
                .iter()
                .enumerate()
                .map(|(i, c)| this.condition(&format!("{key}.{k}[{i}]"), c))
                .collect();
            out.into_iter().collect()
        };
        if let Some(v) = &s.all {
            return list(self, v, "all").map(Cond::All);
        }
        if let Some(v) = &s.any {
            return list(self, v, "any").map(Cond::Any);
        }
        if let Some(n) = &s.not {
            return self
                .condition(&format!("{key}.not"), n)
                .map(|c| Cond::Not(Box::new(c)));
        }
        if let Some(m) = &s.macro_ {
            return self.resolve_macro(&m.value, m.referenced, &format!("{key}.macro"));
        }
        let field = s.field.as_ref().expect("checked above");
        let Some(ftype) = condition::field_type(&field.value) else {
            let names: Vec<&str> = condition::FIELDS.iter().map(|(n, _)| *n).collect();
            self.err(
                field.referenced,
                format!("{key}.field"),
                format!(
                    "unknown field {:?}, expected one of: {}",
                    field.value,
                    names.join(", ")
                ),
            );
            return None;
        };
        let fname: &'static str = condition::FIELDS
            .iter()
            .find(|(n, _)| *n == field.value)
            .map(|(n, _)| *n)
            .expect("found above");
        if ops.len() != 1 {
            self.err(
                at,
                key,
                format!(
                    "field {:?} needs exactly one operator (equals, in, in_list, glob, regex, cidr, \
                     in_network_list, gt, lt, exists), found {}",
                    field.value,
                    if ops.is_empty() {
                        "none".to_string()
                    } else {
                        ops.join(", ")
                    }
                ),
            );
            return None;
        }
        if !condition::op_allowed(ops[0], ftype) {
            self.err(
                at,
                format!("{key}.{}", ops[0]),
                format!(
                    "operator `{}` does not apply to {} field {:?}",
                    ops[0],
                    type_name(ftype),
                    field.value
                ),
            );
            return None;
        }
        let k = |op: &str| format!("{key}.{op}");
        let op = if let Some(v) = &s.equals {
            Op::Equals(v.value.clone())
        } else if let Some(v) = &s.in_ {
            Op::In(Arc::from(v.iter().map(|s| s.value.clone()).collect::<Vec<_>>()))
        } else if let Some(l) = &s.in_list {
            match self.lists.get(&l.value) {
                Some(v) => Op::In(v.clone()),
                None => {
                    let mut known: Vec<&str> = self.lists.keys().map(String::as_str).collect();
                    known.sort();
                    self.err(
                        l.referenced,
                        k("in_list"),
                        format!(
                            "unknown list {:?}; defined lists: [{}]",
                            l.value,
                            known.join(", ")
                        ),
                    );
                    return None;
                }
            }
        } else if let Some(g) = &s.glob {
            match condition::compile_glob(&g.value) {
                Ok(m) => Op::Glob(m),
                Err(m) => {
                    self.err(g.referenced, k("glob"), format!("{:?}: {m}", g.value));
                    return None;
                }
            }
        } else if let Some(r) = &s.regex {
            match condition::compile_regex(&r.value) {
                Ok(m) => Op::Regex(m),
                Err(m) => {
                    self.err(r.referenced, k("regex"), m);
                    return None;
                }
            }
        } else if let Some(c) = &s.cidr {
            let bad = c
                .iter()
                .enumerate()
                .find(|(_, e)| netlist::parse_cidr(&e.value).is_err());
            if let Some((i, e)) = bad {
                self.err(
                    e.referenced,
                    format!("{key}.cidr[{i}]"),
                    format!("{:?}: expected an IPv4/IPv6 address or CIDR", e.value),
                );
                return None;
            }
            Op::Cidr(Arc::new(self.netset(&k("cidr"), c)?))
        } else if let Some(l) = &s.in_network_list {
            match self.network_lists.get(&l.value) {
                Some(set) => Op::Cidr(set.clone()),
                None => {
                    let known = self.known_lists();
                    self.err(
                        l.referenced,
                        k("in_network_list"),
                        format!("unknown network list {:?}, expected one of: {known}", l.value),
                    );
                    return None;
                }
            }
        } else if let Some(v) = &s.gt {
            Op::Gt(v.value)
        } else if let Some(v) = &s.lt {
            Op::Lt(v.value)
        } else if let Some(v) = &s.exists {
            Op::Exists(v.value)
        } else {
            unreachable!("one operator is set")
        };
        if let (Op::Equals(v), FieldType::Num) = (&op, ftype) {
            if v.parse::<i64>().is_err() {
                self.err(
                    at,
                    k("equals"),
                    format!("{v:?}: field {:?} is a number", field.value),
                );
                return None;
            }
        }
        Some(Cond::Test { field: fname, op })
    }
}

fn type_name(t: FieldType) -> &'static str {
    match t {
        FieldType::Str => "string",
        FieldType::Num => "number",
        FieldType::Ip => "address",
        FieldType::Bool => "boolean",
    }
}

fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!("{name:?}: names are 1-64 letters, digits, _ or -"))
    }
}

/// Rule ids are stable identifiers SIEM queries refer to: lower-case kebab.
fn check_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id.starts_with(|c: char| c.is_ascii_lowercase())
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{id:?}: expected a lower-case id of letters, digits and - (shadow-mcp-server)"
        ))
    }
}

fn is_attack_tag(t: &str) -> bool {
    static RE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    RE.get_or_init(|| {
        regex::Regex::new(r"^(T[0-9]{4}(\.[0-9]{3})?|TA[0-9]{4}|AML\.TA?[0-9]{4}(\.[0-9]{3})?)$")
            .expect("static regex")
    })
    .is_match(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errs(y: &str) -> Vec<String> {
        match load_bytes(y.as_bytes()) {
            Ok(_) => vec![],
            Err(v) => v.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn repository_rules_are_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules.yaml");
        let r = load_file(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.builtins.len(), 10, "{}", r.summary());
    }

    #[test]
    fn positions_of_structural_errors() {
        let e = errs("rules:\n  - id: a\n    severity: high\n    detect: shadow-mcp-server\n    bogus: 1\n");
        assert_eq!(e.len(), 1);
        assert!(e[0].starts_with("5:5: unknown field `bogus`"), "{e:?}");
        let e = errs(
            "rules:\n  - id: a\n    severity: high\n    enabled: maybe\n    detect: shadow-mcp-server\n",
        );
        assert!(e[0].starts_with("4:14: enabled: "), "{e:?}");
    }

    #[test]
    fn semantic_errors_all_reported() {
        let y = "macros:\n  m:\n    macro: n\n  n:\n    macro: m\nrules:\n  - id: a\n    severity: low\n    on: [process_exec]\n    condition: {field: process.exe, regex: '('}\n  - id: a\n    severity: low\n    detect: mcp-raw-network\n    tags: [bogus]\n";
        let e = errs(y);
        assert!(e.iter().any(|m| m.contains("macro cycle")), "{e:?}");
        assert!(
            e.iter().any(|m| m.starts_with("10:") && m.contains("bad regex")),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|m| m.starts_with("11:") && m.contains("duplicate rule id")),
            "{e:?}"
        );
        assert!(
            e.iter().any(|m| m.starts_with("14:") && m.contains("ATT&CK")),
            "{e:?}"
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("5y").is_err());
    }
}
