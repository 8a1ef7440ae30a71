//! Reading a rule file: YAML → schema types (structural errors, with positions) →
//! validation and compilation (every semantic error, with positions). Nothing is
//! checked later: a `CompiledRules` that exists is a valid one.
//!
//! Split the way Falco's rule loader is: `errors` (what a problem looks like),
//! `lists` (destination and string lists, egress policies), `sanctioned`
//! (sanctioned entries), `rule` (one rule and its options, the fields its events carry), `condition`
//! (conditions, macros, field checks). This file reads the bytes and runs the compiler's passes.

mod condition;
mod errors;
mod governance;
mod lists;
mod rule;
mod sanctioned;

use std::{
    collections::{HashMap, HashSet},
    path::Path,
    sync::Arc,
    time::Duration,
};

use serde_saphyr::{Location, Spanned};

pub use self::errors::{RuleError, RuleErrors};
use super::{
    condition::Cond,
    filelist::FileSet,
    model::{CompiledRules, Rule},
    netlist::{EgressPolicy, NetSet},
    schema::*,
};
use crate::mcp::heuristics::LaunchHeuristicsSpec;

/// Larger rule files are refused: nobody writes 4 MiB of rules by hand, and the
/// parser's work must stay bounded.
pub const MAX_FILE_BYTES: usize = 4 << 20;

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
    /// The field tests of the condition being compiled, macros' included.
    uses: Vec<condition::FieldUse>,
    /// The field tests of each compiled macro.
    macro_uses: HashMap<String, Vec<condition::FieldUse>>,
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

    fn compile(mut self, mut spec: RuleFileSpec) -> Result<CompiledRules, Vec<RuleError>> {
        if let Some(v) = &spec.version {
            if v.value != 1 {
                self.err(
                    v.referenced,
                    "version",
                    format!("unsupported version {}, expected 1", v.value),
                );
            }
        }
        let launch_heuristics = self.heuristics(spec.launch_heuristics.take().unwrap_or_default());
        self.named_lists(&spec);
        self.compile_macros(std::mem::take(&mut spec.macros));
        let default_egress = match &spec.egress {
            Some(e) => self.egress("egress", &e.value),
            None => EgressPolicy::default(),
        };
        let sanctioned = self.sanctioned_entries(&spec);
        let default_tool_policy = spec
            .tool_policy
            .as_ref()
            .map(|p| Arc::new(self.tool_policy("tool_policy", &p.value)));
        let audit = spec
            .audit
            .as_ref()
            .map(|a| self.audit_policy("audit", &a.value))
            .unwrap_or_default();
        let poison_families = self.poison_families(&spec);
        let sensitive_files = self.file_set("sensitive_files", &spec.sensitive_files);
        let exfiltration_window = self.exfiltration_window(&spec);
        let egress_volume = self.egress_volume(&spec);
        let rules = self.rules(&spec);
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
            default_tool_policy,
            audit,
            poison_families,
            sensitive_files,
            exfiltration_window,
            egress_volume,
        })
    }

    fn egress_volume(&mut self, spec: &RuleFileSpec) -> super::volume_baseline::VolumePolicy {
        let mut p = super::volume_baseline::VolumePolicy::default();
        let Some(v) = spec.egress_volume.as_ref().map(|v| &v.value) else {
            return p;
        };
        if let Some(w) = &v.window {
            match parse_duration(&w.value) {
                Ok(d) if !d.is_zero() => p.window_ns = d.as_nanos() as u64,
                Ok(_) => self.err(w.referenced, "egress_volume.window", "must be longer than 0"),
                Err(m) => self.err(w.referenced, "egress_volume.window", m),
            }
        }
        if let Some(n) = &v.learning_windows {
            if n.value == 0 {
                self.err(
                    n.referenced,
                    "egress_volume.learning_windows",
                    "must be at least 1",
                );
            }
            p.learning_windows = n.value.max(1);
        }
        if let Some(f) = &v.factor {
            if !(f.value > 1.0 && f.value.is_finite()) {
                self.err(
                    f.referenced,
                    "egress_volume.factor",
                    format!("{}: must be more than 1", f.value),
                );
            } else {
                p.factor = f.value;
            }
        }
        if let Some(b) = &v.min_window_bytes {
            p.min_window_bytes = b.value;
        }
        if let Some(b) = &v.connection_max_bytes {
            if b.value == 0 {
                self.err(
                    b.referenced,
                    "egress_volume.connection_max_bytes",
                    "must be more than 0",
                );
            } else {
                p.connection_max_bytes = b.value;
            }
        }
        p
    }

    /// A list of path globs; each bad pattern is an error at its own line.
    fn file_set(&mut self, key: &str, patterns: &[Spanned<String>]) -> FileSet {
        let homes = super::filelist::homes();
        let texts: Vec<String> = patterns.iter().map(|p| p.value.clone()).collect();
        match FileSet::compile(&texts, &homes) {
            Ok(s) => s,
            Err((i, m)) => {
                match patterns.get(i) {
                    Some(p) => self.err(p.referenced, format!("{key}[{i}]"), m),
                    None => self.errors.push(RuleError {
                        line: 1,
                        column: 1,
                        key: key.to_string(),
                        message: m,
                    }),
                }
                FileSet::default()
            }
        }
    }

    fn exfiltration_window(&mut self, spec: &RuleFileSpec) -> Duration {
        const DEFAULT: Duration = Duration::from_secs(60);
        let Some(w) = spec.exfiltration.as_ref().and_then(|e| e.value.window.as_ref()) else {
            return DEFAULT;
        };
        match parse_duration(&w.value) {
            Ok(d) if !d.is_zero() => d,
            Ok(_) => {
                self.err(w.referenced, "exfiltration.window", "must be longer than 0");
                DEFAULT
            }
            Err(m) => {
                self.err(w.referenced, "exfiltration.window", m);
                DEFAULT
            }
        }
    }

    fn heuristics(&mut self, h: super::schema::LaunchHeuristicsSpec) -> LaunchHeuristicsSpec {
        use crate::mcp::{heuristics::LaunchPattern, launch::Position};
        let mut patterns = Vec::new();
        for (i, p) in h.patterns.into_iter().enumerate() {
            let p = p.value;
            if let Err(m) = super::condition::compile_regex(&p.regex.value) {
                self.err(
                    p.regex.referenced,
                    format!("launch_heuristics.patterns[{i}].match"),
                    m,
                );
            }
            let on = p.on.unwrap_or_else(|| Position::NAMES.to_vec());
            patterns.push(LaunchPattern {
                regex: p.regex.value,
                on,
            });
        }
        for (i, p) in h.argv_patterns.into_iter().enumerate() {
            if let Err(m) = super::condition::compile_regex(&p.value) {
                self.err(p.referenced, format!("launch_heuristics.argv_patterns[{i}]"), m);
            }
            patterns.push(LaunchPattern {
                regex: p.value,
                on: Position::NAMES.to_vec(),
            });
        }
        LaunchHeuristicsSpec {
            patterns,
            package_runners: h.package_runners,
            tiny_env_max: h.tiny_env_max.unwrap_or(6),
        }
    }
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
        assert_eq!(r.builtins.len(), 16, "{}", r.summary());
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
