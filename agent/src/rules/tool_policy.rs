//! Per-tool policy, compiled: which tools a server may be asked to run and what
//! their arguments may be, and the judgement of one call against it. Path-like
//! values are normalised lexically before matching (`/srv/data/../../etc/passwd`
//! is `/etc/passwd`; `file:///x` is `/x`), so a constraint on a prefix cannot be
//! walked around with `..`. Symlinks cannot be resolved from bytes on the wire: a
//! prefix constraint is about the path the call names.

use globset::GlobMatcher;
use regex::Regex;
use serde_json::Value;

pub struct ToolPolicy {
    pub allow: Vec<(String, GlobMatcher)>,
    pub deny: Vec<(String, GlobMatcher)>,
    pub arguments: Vec<ArgumentConstraint>,
}

pub struct ArgumentConstraint {
    /// Which tools (glob text, matcher).
    pub tool: (String, GlobMatcher),
    /// The argument's path in the arguments object (`options.mode`).
    pub path: Vec<String>,
    pub test: ArgumentTest,
    pub optional: bool,
}

pub enum ArgumentTest {
    Equals(String),
    In(Vec<String>),
    Prefix(Vec<String>),
    Glob(String, GlobMatcher),
    Regex(Regex),
}

impl ArgumentTest {
    fn passes(&self, v: &str) -> bool {
        match self {
            ArgumentTest::Equals(s) => v == s,
            ArgumentTest::In(l) => l.iter().any(|s| s == v),
            ArgumentTest::Prefix(l) => l.iter().any(|p| within(v, p)),
            ArgumentTest::Glob(_, g) => g.is_match(v),
            ArgumentTest::Regex(r) => r.is_match(v),
        }
    }

    /// `prefix ["/srv/data"]`, as the finding states it.
    pub fn describe(&self) -> String {
        match self {
            ArgumentTest::Equals(s) => format!("equals {s:?}"),
            ArgumentTest::In(l) => format!("in {l:?}"),
            ArgumentTest::Prefix(l) => format!("prefix {l:?}"),
            ArgumentTest::Glob(g, _) => format!("glob {g:?}"),
            ArgumentTest::Regex(r) => format!("regex {:?}", r.as_str()),
        }
    }
}

/// `v` is `prefix` or below it: a path prefix ends at a component boundary (so
/// `/srv/data` does not admit `/srv/database`); other prefixes are textual.
fn within(v: &str, prefix: &str) -> bool {
    if !prefix.starts_with('/') || prefix.ends_with('/') {
        return v.starts_with(prefix);
    }
    v == prefix || v.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('/'))
}

/// Why a call is outside policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Violation {
    /// The tool matches a `deny` glob.
    Denied { glob: String },
    /// `allow` is given and the tool matches none of it.
    NotAllowed,
    /// An argument breaks a constraint (`value` as seen, to be masked by the caller).
    Argument {
        tool_glob: String,
        argument: String,
        value: Option<String>,
        constraint: String,
    },
}

impl Violation {
    pub fn describe(&self) -> String {
        match self {
            Violation::Denied { glob } => format!("the tool matches deny glob {glob:?}"),
            Violation::NotAllowed => "the tool matches no allow glob".into(),
            Violation::Argument {
                argument,
                value,
                constraint,
                tool_glob,
            } => match value {
                Some(v) => format!(
                    "argument {argument} = {v:?} breaks the constraint {constraint} (tools {tool_glob:?})"
                ),
                None => format!("argument {argument} is missing; the constraint {constraint} requires it (tools {tool_glob:?})"),
            },
        }
    }
}

/// Lexical normalisation of a path-like value: `file://` stripped, `.` and empty
/// components dropped, `..` applied (never above the root). Other values unchanged.
pub fn normalize(v: &str) -> std::borrow::Cow<'_, str> {
    let path = v.strip_prefix("file://").unwrap_or(v);
    if !path.starts_with('/') && !path.starts_with('~') {
        return v.into();
    }
    let (root, rest) = match path.strip_prefix('~') {
        Some(r) => {
            let (home, rest) = r.split_once('/').unwrap_or((r, ""));
            (format!("~{home}"), rest)
        }
        None => (String::new(), path),
    };
    let mut parts: Vec<&str> = Vec::new();
    for c in rest.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    let normal = format!("{root}/{}", parts.join("/"));
    if normal == v {
        v.into()
    } else {
        normal.into()
    }
}

/// The value at `path` in the arguments, as text (strings as they are, other
/// values as JSON).
pub fn argument_at<'a>(args: &'a Value, path: &[String]) -> Option<std::borrow::Cow<'a, str>> {
    let mut v = args;
    for p in path {
        v = match v {
            Value::Object(o) => o.get(p)?,
            Value::Array(a) => a.get(p.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(match v {
        Value::String(s) => s.as_str().into(),
        other => other.to_string().into(),
    })
}

impl ToolPolicy {
    /// The first way a call of `tool` with `args` is outside policy, if any. With
    /// no arguments known (too large to keep) only the tool is judged.
    pub fn judge(&self, tool: &str, args: Option<&Value>) -> Option<Violation> {
        if let Some((glob, _)) = self.deny.iter().find(|(_, g)| g.is_match(tool)) {
            return Some(Violation::Denied { glob: glob.clone() });
        }
        if !self.allow.is_empty() && !self.allow.iter().any(|(_, g)| g.is_match(tool)) {
            return Some(Violation::NotAllowed);
        }
        let args = args?;
        for c in self.arguments.iter().filter(|c| c.tool.1.is_match(tool)) {
            let argument = c.path.join(".");
            let value = argument_at(args, &c.path);
            let ok = match &value {
                None => c.optional,
                Some(v) => c.test.passes(&normalize(v)),
            };
            if !ok {
                return Some(Violation::Argument {
                    tool_glob: c.tool.0.clone(),
                    argument,
                    value: value.map(|v| v.into_owned()),
                    constraint: c.test.describe(),
                });
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::rules::condition::compile_glob;

    fn g(s: &str) -> (String, GlobMatcher) {
        (s.to_string(), compile_glob(s).unwrap())
    }

    fn policy() -> ToolPolicy {
        ToolPolicy {
            allow: vec![g("read_*"), g("list_*")],
            deny: vec![g("read_secret")],
            arguments: vec![ArgumentConstraint {
                tool: g("read_*"),
                path: vec!["path".into()],
                test: ArgumentTest::Prefix(vec!["/srv/data".into()]),
                optional: false,
            }],
        }
    }

    #[test]
    fn deny_allow_and_argument_constraints() {
        let p = policy();
        assert_eq!(p.judge("list_directory", Some(&json!({}))), None);
        assert_eq!(
            p.judge("read_file", Some(&json!({"path": "/srv/data/a.txt"}))),
            None
        );
        assert_eq!(
            p.judge("read_secret", None),
            Some(Violation::Denied {
                glob: "read_secret".into()
            })
        );
        assert_eq!(p.judge("write_file", None), Some(Violation::NotAllowed));
        let v = p.judge("read_file", Some(&json!({"path": "/srv/data/../../etc/shadow"})));
        match v {
            Some(Violation::Argument { argument, value, .. }) => {
                assert_eq!(argument, "path");
                assert_eq!(value.as_deref(), Some("/srv/data/../../etc/shadow"));
            }
            other => panic!("{other:?}"),
        }
        // A component boundary, not a textual prefix.
        assert!(p
            .judge("read_file", Some(&json!({"path": "/srv/database"})))
            .is_some());
        // Missing is a violation unless optional.
        assert!(p.judge("read_file", Some(&json!({}))).is_some());
    }

    #[test]
    fn normalisation() {
        assert_eq!(normalize("/a/./b//c/../d"), "/a/b/d");
        assert_eq!(normalize("/../../etc"), "/etc");
        assert_eq!(normalize("file:///srv/x/../y"), "/srv/y");
        assert_eq!(normalize("~/x/../.ssh/id_rsa"), "~/.ssh/id_rsa");
        assert_eq!(normalize("relative/../x"), "relative/../x");
        assert_eq!(
            argument_at(&json!({"o": {"m": 3}}), &["o".into(), "m".into()]).as_deref(),
            Some("3")
        );
    }
}
