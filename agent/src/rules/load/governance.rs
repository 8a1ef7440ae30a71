//! The governance sections: per-tool policies (`tool_policy:` and each sanctioned
//! entry's `tools:`), what audit records hold (`audit:`), and the pattern families
//! of `mcp-tool-poisoning` (`tool_poisoning:`).

use std::collections::HashSet;

use super::Compiler;
use crate::rules::{
    condition,
    model::{AuditPolicy, PoisonFamily},
    schema::{ArgumentsModeSpec, AuditSpec, RuleFileSpec, ToolPolicySpec},
    tool_policy::{ArgumentConstraint, ArgumentTest, ToolPolicy},
};

/// Longest string value `audit.max_value_bytes` may ask for.
const MAX_VALUE_BYTES: u32 = 64 * 1024;

impl Compiler {
    pub(super) fn tool_policy(&mut self, key: &str, p: &ToolPolicySpec) -> ToolPolicy {
        let mut globs = |what: &str, list: &[crate::rules::schema::S<String>]| {
            list.iter()
                .enumerate()
                .filter_map(|(i, g)| {
                    condition::compile_glob(&g.value)
                        .map_err(|m| {
                            self.err(
                                g.referenced,
                                format!("{key}.{what}[{i}]"),
                                format!("{:?}: {m}", g.value),
                            )
                        })
                        .ok()
                        .map(|m| (g.value.clone(), m))
                })
                .collect::<Vec<_>>()
        };
        let allow = globs("allow", &p.allow);
        let deny = globs("deny", &p.deny);
        let mut arguments = Vec::new();
        for (i, c) in p.arguments.iter().enumerate() {
            let k = format!("{key}.arguments[{i}]");
            let c_at = c.referenced;
            let c = &c.value;
            let tool_text = c.tool.as_ref().map_or("*".to_string(), |t| t.value.clone());
            let tool = match condition::compile_glob(&tool_text) {
                Ok(m) => (tool_text, m),
                Err(m) => {
                    let at = c.tool.as_ref().map_or(c_at, |t| t.referenced);
                    self.err(at, format!("{k}.tool"), format!("{tool_text:?}: {m}"));
                    continue;
                }
            };
            let path: Vec<String> = c.argument.value.split('.').map(str::to_string).collect();
            if path.iter().any(String::is_empty) {
                self.err(
                    c.argument.referenced,
                    format!("{k}.argument"),
                    format!(
                        "{:?}: expected an argument name or a dotted path (options.mode)",
                        c.argument.value
                    ),
                );
                continue;
            }
            let set: Vec<&str> = [
                c.equals.as_ref().map(|_| "equals"),
                c.in_.as_ref().map(|_| "in"),
                c.prefix.as_ref().map(|_| "prefix"),
                c.glob.as_ref().map(|_| "glob"),
                c.regex.as_ref().map(|_| "regex"),
            ]
            .into_iter()
            .flatten()
            .collect();
            if set.len() != 1 {
                self.err(
                    c_at,
                    k.clone(),
                    format!(
                        "an argument constraint needs exactly one of equals, in, prefix, glob, regex; found {}",
                        if set.is_empty() { "none".to_string() } else { set.join(", ") }
                    ),
                );
                continue;
            }
            let test = if let Some(v) = &c.equals {
                ArgumentTest::Equals(v.value.clone())
            } else if let Some(v) = &c.in_ {
                ArgumentTest::In(v.iter().map(|s| s.value.clone()).collect())
            } else if let Some(v) = &c.prefix {
                ArgumentTest::Prefix(v.iter().map(|s| s.value.clone()).collect())
            } else if let Some(g) = &c.glob {
                match condition::compile_glob(&g.value) {
                    Ok(m) => ArgumentTest::Glob(g.value.clone(), m),
                    Err(m) => {
                        self.err(g.referenced, format!("{k}.glob"), format!("{:?}: {m}", g.value));
                        continue;
                    }
                }
            } else if let Some(r) = &c.regex {
                match condition::compile_regex(&r.value) {
                    Ok(m) => ArgumentTest::Regex(m),
                    Err(m) => {
                        self.err(r.referenced, format!("{k}.regex"), m);
                        continue;
                    }
                }
            } else {
                unreachable!("one test is set")
            };
            arguments.push(ArgumentConstraint {
                tool,
                path,
                test,
                optional: c.optional,
            });
        }
        ToolPolicy {
            allow,
            deny,
            arguments,
        }
    }

    pub(super) fn audit_policy(&mut self, key: &str, a: &AuditSpec) -> AuditPolicy {
        let mut p = AuditPolicy {
            full_arguments: a.arguments == ArgumentsModeSpec::Full,
            ..AuditPolicy::default()
        };
        if let Some(m) = &a.max_value_bytes {
            if m.value == 0 || m.value > MAX_VALUE_BYTES {
                self.err(
                    m.referenced,
                    format!("{key}.max_value_bytes"),
                    format!("{}: expected 1 to {MAX_VALUE_BYTES}", m.value),
                );
            }
            p.max_value_bytes = m.value.clamp(1, MAX_VALUE_BYTES) as usize;
        }
        p
    }

    pub(super) fn poison_families(&mut self, spec: &RuleFileSpec) -> Vec<PoisonFamily> {
        let Some(tp) = &spec.tool_poisoning else {
            return Vec::new();
        };
        let mut ids = HashSet::new();
        let mut out = Vec::new();
        for (i, f) in tp.value.families.iter().enumerate() {
            let k = format!("tool_poisoning.families[{i}]");
            let f_at = f.referenced;
            let f = &f.value;
            if let Err(m) = super::rule::check_id(&f.id.value) {
                self.err(f.id.referenced, format!("{k}.id"), m);
            }
            if !ids.insert(f.id.value.clone()) {
                self.err(
                    f.id.referenced,
                    format!("{k}.id"),
                    format!("duplicate family id {:?}", f.id.value),
                );
            }
            if f.patterns.is_empty() && f.max_length.is_none() && !f.sibling_tools {
                self.err(
                    f_at,
                    k.clone(),
                    "a family needs patterns, max_length or sibling_tools",
                );
            }
            let patterns = f
                .patterns
                .iter()
                .enumerate()
                .filter_map(|(j, p)| {
                    // Case-insensitive unless the pattern sets its own flags.
                    let text = if p.value.starts_with("(?") {
                        p.value.clone()
                    } else {
                        format!("(?i){}", p.value)
                    };
                    condition::compile_regex(&text)
                        .map_err(|m| self.err(p.referenced, format!("{k}.patterns[{j}]"), m))
                        .ok()
                })
                .collect();
            out.push(PoisonFamily {
                id: f.id.value.clone(),
                description: f.description.clone(),
                severity: super::rule::severity(f.severity),
                patterns,
                max_length: f.max_length.as_ref().map(|m| m.value as usize),
                sibling_tools: f.sibling_tools,
            });
        }
        out
    }
}
