//! One rule: id, tags, severity, the events it is evaluated on (`on:`) or the
//! built-in detection it configures (`detect:`), its options, condition and
//! exceptions.

use std::collections::HashMap;

use super::{parse_duration, Compiler};
use crate::{
    alert::Severity,
    mcp::inventory::Confidence,
    rules::{
        fields::{self, Kind},
        model::Rule,
        schema::{ActionSpec, Builtin, ConfidenceSpec, RuleFileSpec, RuleSpec, SeveritySpec},
    },
};

impl Compiler {
    /// Every rule with the event kinds of its `on:`; rule ids are unique.
    pub(super) fn rules(&mut self, spec: &RuleFileSpec) -> Vec<(Rule, Vec<&'static str>)> {
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
        rules
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
            match Kind::from_on(&k.value) {
                Some(e) => kinds.push(e),
                None => self.err(
                    k.referenced,
                    format!("{key}.on[{i}]"),
                    format!(
                        "unknown event kind {:?}, expected one of: {}",
                        k.value,
                        Kind::ON.map(Kind::name).join(", ")
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
        self.uses.clear();
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
        let evaluated_on = match r.detect {
            Some(b) => Kind::of_builtin(b),
            None => &kinds[..],
        };
        self.fields_carried(&r.id.value, evaluated_on);
        Some((
            Rule {
                id: r.id.value.clone(),
                description: r.description.clone(),
                severity: severity(r.severity),
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
            kinds.into_iter().map(Kind::name).collect(),
        ))
    }

    /// Every field the rule's condition and exceptions test (through macros too) is
    /// one its events can carry: a test on any other never matches.
    fn fields_carried(&mut self, rule: &str, kinds: &[Kind]) {
        // An `on:` of unknown kinds only is reported as that.
        if kinds.is_empty() {
            return;
        }
        for u in std::mem::take(&mut self.uses) {
            if kinds.iter().any(|k| u.field.set_on(*k)) {
                continue;
            }
            let via = u
                .via_macro
                .as_ref()
                .map_or(String::new(), |m| format!(", through macro {m}"));
            self.err(
                u.at,
                u.key,
                format!(
                    "field {} is never set on {} events (rule {rule}{via})",
                    u.field.name,
                    fields::labels(kinds)
                ),
            );
        }
    }
}

/// Rule ids are stable identifiers SIEM queries refer to: lower-case kebab.
pub(super) fn severity(s: SeveritySpec) -> Severity {
    match s {
        SeveritySpec::Informational => Severity::Informational,
        SeveritySpec::Low => Severity::Low,
        SeveritySpec::Medium => Severity::Medium,
        SeveritySpec::High => Severity::High,
        SeveritySpec::Critical => Severity::Critical,
    }
}

pub(super) fn check_id(id: &str) -> Result<(), String> {
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
