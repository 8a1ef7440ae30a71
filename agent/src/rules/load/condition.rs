//! Conditions: combinators, macros (resolved once, cycles reported), and field tests
//! whose field, operator and operand are checked against the field table. Each field
//! test is also recorded with its position (`FieldUse`), so that the rule using it,
//! directly or through macros, can check that its events carry the field.

use std::sync::Arc;

use serde_saphyr::{Location, Spanned};

use super::Compiler;
use crate::rules::{
    condition::{self, Cond, Op},
    fields::{self, Field, FieldType},
    netlist,
    schema::ConditionSpec,
};

/// A field test as written: where, under which key, and in which macro if any.
#[derive(Clone)]
pub(super) struct FieldUse {
    pub field: &'static Field,
    pub at: Location,
    pub key: String,
    pub via_macro: Option<String>,
}

impl Compiler {
    /// `macros:`, each compiled once (a macro may use macros defined after it).
    pub(super) fn compile_macros(
        &mut self,
        macros: std::collections::BTreeMap<String, Spanned<ConditionSpec>>,
    ) {
        let mut macro_names = Vec::new();
        for (name, m) in macros {
            if let Err(msg) = super::lists::check_name(&name) {
                self.err(m.referenced, format!("macros.{name}"), msg);
            }
            macro_names.push(name.clone());
            self.macro_specs.insert(name, m);
        }
        for name in macro_names {
            self.resolve_macro(&name, Location::UNKNOWN, &format!("macros.{name}"));
        }
    }

    fn resolve_macro(&mut self, name: &str, at: Location, key: &str) -> Option<Cond> {
        if let Some(c) = self.macros.get(name) {
            let uses = self.macro_uses.get(name).cloned().unwrap_or_default();
            self.uses.extend(uses);
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
        let outer = std::mem::take(&mut self.uses);
        let c = self.condition(&format!("macros.{name}"), &spec);
        let mut uses = std::mem::replace(&mut self.uses, outer);
        self.stack.pop();
        match &c {
            Some(c) => {
                for u in &mut uses {
                    u.via_macro.get_or_insert_with(|| name.to_string());
                }
                self.uses.extend(uses.iter().cloned());
                self.macro_uses.insert(name.to_string(), uses);
                self.macros.insert(name.to_string(), c.clone());
            }
            None => {
                self.failed.insert(name.to_string());
            }
        }
        c
    }

    pub(super) fn condition(&mut self, key: &str, c: &Spanned<ConditionSpec>) -> Option<Cond> {
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
        let Some(ftable) = fields::field(&field.value) else {
            let names: Vec<&str> = fields::FIELDS.iter().map(|f| f.name).collect();
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
        let ftype = ftable.ty;
        self.uses.push(FieldUse {
            field: ftable,
            at: field.referenced,
            key: format!("{key}.field"),
            via_macro: None,
        });
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
                    ftype.name(),
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
        let operands: Vec<(&str, &str)> = match (&op, &s.in_list) {
            (Op::Equals(v), _) => vec![("equals", v.as_str())],
            (Op::In(l), None) => l.iter().map(|v| ("in", v.as_str())).collect(),
            (Op::In(l), Some(_)) => l.iter().map(|v| ("in_list", v.as_str())).collect(),
            _ => Vec::new(),
        };
        if let Some((op_name, v)) = operands.into_iter().find(|(_, v)| !operand_fits(v, ftype)) {
            self.err(
                at,
                k(op_name),
                format!("{v:?}: field {:?} is {}", field.value, a_type(ftype)),
            );
            return None;
        }
        if ftable.id == fields::FieldId::RequestArgument {
            let path = field.value[fields::ARGUMENT_PREFIX.len()..]
                .split('.')
                .map(str::to_string)
                .collect::<Vec<_>>();
            return Some(Cond::Argument {
                path: Arc::from(path),
                op,
            });
        }
        Some(Cond::Test { field: ftable.id, op })
    }
}

/// Whether a literal can ever equal a value of the field's type (the engine parses it
/// the same way when it compares).
fn operand_fits(v: &str, t: FieldType) -> bool {
    match t {
        FieldType::Str => true,
        FieldType::Num => v.parse::<i64>().is_ok(),
        FieldType::Ip | FieldType::IpList => v.parse::<std::net::IpAddr>().is_ok(),
        FieldType::Bool => v.parse::<bool>().is_ok(),
    }
}

fn a_type(t: FieldType) -> &'static str {
    match t {
        FieldType::Str => "a string",
        FieldType::Num => "a number",
        FieldType::Ip => "an address",
        FieldType::IpList => "a list of addresses",
        FieldType::Bool => "a boolean (true or false)",
    }
}
