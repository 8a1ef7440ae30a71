//! Conditions over typed fields: compiled once (patterns, lists and macros resolved,
//! operators checked against field types), evaluated per event without allocation
//! beyond field rendering.

use std::{net::IpAddr, sync::Arc};

use globset::{Glob, GlobMatcher};
use regex::Regex;

use super::{
    fields::{FieldId, FieldType},
    netlist::NetSet,
};

/// A field's value in one event.
#[derive(Clone, Debug)]
pub enum Value<'a> {
    Str(std::borrow::Cow<'a, str>),
    Num(i64),
    Ip(IpAddr),
    /// `dns.answer_ip`: any of them.
    Ips(Vec<IpAddr>),
    Bool(bool),
}

/// What conditions read; implemented by the engine's per-event context.
pub trait Fields {
    fn get(&self, field: FieldId) -> Option<Value<'_>>;
    /// `mcp.arguments.<path>`: the value at `path` of a call's arguments.
    fn argument(&self, _path: &[String]) -> Option<Value<'_>> {
        None
    }
}

#[derive(Clone)]
pub enum Cond {
    All(Vec<Cond>),
    Any(Vec<Cond>),
    Not(Box<Cond>),
    Test {
        field: FieldId,
        op: Op,
    },
    /// A test of `mcp.arguments.<path>`.
    Argument {
        path: Arc<[String]>,
        op: Op,
    },
}

#[derive(Clone)]
pub enum Op {
    Equals(String),
    In(Arc<[String]>),
    Glob(GlobMatcher),
    Regex(Regex),
    Cidr(Arc<NetSet>),
    Gt(i64),
    Lt(i64),
    Exists(bool),
}

impl Cond {
    pub fn eval(&self, f: &dyn Fields) -> bool {
        match self {
            Cond::All(v) => v.iter().all(|c| c.eval(f)),
            Cond::Any(v) => v.iter().any(|c| c.eval(f)),
            Cond::Not(c) => !c.eval(f),
            Cond::Test { field, op } => op.test_value(f.get(*field)),
            Cond::Argument { path, op } => op.test_value(f.argument(path)),
        }
    }
}

impl Op {
    fn test_value(&self, v: Option<Value<'_>>) -> bool {
        match (self, v) {
            (Op::Exists(want), v) => v.is_some() == *want,
            (_, None) => false,
            (op, Some(v)) => op.test(&v),
        }
    }

    fn test(&self, v: &Value<'_>) -> bool {
        match (self, v) {
            (Op::Equals(s), Value::Str(x)) => x == s,
            (Op::Equals(s), Value::Num(n)) => s.parse::<i64>().is_ok_and(|s| s == *n),
            (Op::Equals(s), Value::Bool(b)) => s.parse::<bool>().is_ok_and(|s| s == *b),
            (Op::Equals(s), Value::Ip(ip)) => s.parse::<IpAddr>().is_ok_and(|s| s == *ip),
            (Op::Equals(s), Value::Ips(ips)) => s.parse::<IpAddr>().is_ok_and(|s| ips.contains(&s)),
            (Op::In(l), Value::Str(x)) => l.iter().any(|s| s == x),
            (Op::In(l), Value::Num(n)) => l.iter().any(|s| s.parse::<i64>().is_ok_and(|s| s == *n)),
            (Op::Glob(g), Value::Str(x)) => g.is_match(x.as_ref()),
            (Op::Regex(r), Value::Str(x)) => r.is_match(x),
            (Op::Cidr(set), Value::Ip(ip)) => set.contains_ip(*ip),
            (Op::Cidr(set), Value::Ips(ips)) => ips.iter().any(|ip| set.contains_ip(*ip)),
            (Op::Cidr(set), Value::Str(d)) => set.contains_domain(d),
            (Op::Gt(t), Value::Num(n)) => n > t,
            (Op::Lt(t), Value::Num(n)) => n < t,
            _ => false,
        }
    }
}

/// Which operators apply to which field types (checked at load, never at evaluation).
pub fn op_allowed(op: &str, t: FieldType) -> bool {
    matches!(
        (op, t),
        ("exists", _)
            | ("equals", _)
            | ("in" | "in_list", FieldType::Str | FieldType::Num)
            | ("glob" | "regex", FieldType::Str)
            | ("cidr" | "in_network_list", FieldType::Ip | FieldType::IpList)
            | ("in_network_list", FieldType::Str)
            | ("gt" | "lt", FieldType::Num)
    )
}

pub fn compile_glob(p: &str) -> Result<GlobMatcher, String> {
    Glob::new(p)
        .map(|g| g.compile_matcher())
        .map_err(|e| format!("bad glob: {}", e.kind()))
}

pub fn compile_regex(p: &str) -> Result<Regex, String> {
    Regex::new(p).map_err(|e| {
        let s = e.to_string();
        // The regex crate's message spans several lines; its last line says what is wrong.
        let last = s
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or(&s)
            .trim();
        format!("bad regex: {}", last.trim_start_matches("error: "))
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    use crate::rules::fields::FieldId::*;

    struct F(HashMap<FieldId, Value<'static>>);
    impl Fields for F {
        fn get(&self, field: FieldId) -> Option<Value<'_>> {
            self.0.get(&field).cloned()
        }
    }

    #[test]
    fn operators_and_combinators() {
        let f = F(HashMap::from([
            (ProcessExe, Value::Str("/usr/bin/curl".into())),
            (ProcessUid, Value::Num(0)),
            (NetRemoteIp, Value::Ip("10.2.3.4".parse().unwrap())),
        ]));
        let t = |field, op| Cond::Test { field, op };
        assert!(t(ProcessExe, Op::Glob(compile_glob("/usr/bin/*").unwrap())).eval(&f));
        assert!(t(ProcessExe, Op::Regex(compile_regex("cu?rl$").unwrap())).eval(&f));
        assert!(t(ProcessUid, Op::Lt(1)).eval(&f));
        assert!(!t(ProcessUid, Op::Gt(0)).eval(&f));
        let cidr = Arc::new(NetSet::build(["10.0.0.0/8"]).unwrap());
        assert!(t(NetRemoteIp, Op::Cidr(cidr)).eval(&f));
        assert!(t(McpName, Op::Exists(false)).eval(&f));
        assert!(!t(McpName, Op::Equals("x".into())).eval(&f));
        let all = Cond::All(vec![
            t(ProcessUid, Op::In(Arc::from(vec!["0".to_string()]))),
            Cond::Not(Box::new(t(ProcessComm, Op::Exists(true)))),
        ]);
        assert!(all.eval(&f));
        assert!(!Cond::Any(vec![]).eval(&f));
    }

    #[test]
    fn pattern_errors_are_one_line() {
        let e = compile_regex("(unclosed").unwrap_err();
        assert!(!e.contains('\n'), "{e}");
        assert!(e.starts_with("bad regex: "), "{e}");
        assert!(compile_glob("a[").is_err());
    }
}
