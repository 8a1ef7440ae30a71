//! `mcp-tool-call-denied`: a `tools/call` outside the per-tool policy of its server
//! (its sanctioned entry's `tools:`, else the file's `tool_policy:`). The finding
//! names the tool, the argument (its value masked like every audit value) and the
//! constraint.

use serde_json::Value;

use super::{Finding, TrackedServer};
use crate::{
    mcp::audit::{CallDirection, McpRequestEvent},
    redact,
    rules::model::CompiledRules,
};

pub fn detect(e: &McpRequestEvent, t: &TrackedServer, rules: &CompiledRules, name: &str) -> Option<Finding> {
    let r = &e.request;
    if r.method != "tools/call" || r.direction != CallDirection::ClientToServer {
        return None;
    }
    let tool = r.target.as_deref()?;
    let policy = t
        .entry(rules)
        .and_then(|e| e.tools.as_deref())
        .or(rules.default_tool_policy.as_deref())?;
    let violation = policy.judge(tool, r.argument_values.as_deref())?;
    let whose = match t.entry(rules) {
        Some(entry) if entry.tools.is_some() => format!("sanctioned entry {}", entry.label),
        _ => "the default tool_policy".to_string(),
    };
    let mut f = Finding::new(
        format!("MCP server {name} was asked to run {tool}, outside its tool policy"),
        format!(
            "tools/call {tool:?} (JSON-RPC id {}, session {}): {} ({whose})",
            r.jsonrpc_id.as_deref().unwrap_or("?"),
            r.session,
            redact::text(&violation.describe()),
        ),
    );
    f.identity = Some(format!("{}#denied:{tool}", t.server.server_uid));
    Some(f)
}

/// `v` with every string cut to `max` bytes (at a character boundary, marked with
/// how much was cut): what `audit: {arguments: full}` records.
pub fn capped(v: &Value, max: usize) -> Value {
    match v {
        Value::String(s) if s.len() > max => {
            let mut end = max;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            Value::String(format!("{}…[+{} bytes]", &s[..end], s.len() - end))
        }
        Value::Array(a) => Value::Array(a.iter().map(|x| capped(x, max)).collect()),
        Value::Object(o) => Value::Object(o.iter().map(|(k, x)| (k.clone(), capped(x, max))).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn long_strings_are_cut_at_a_character_boundary() {
        let v = capped(&json!({"a": "ééé", "b": [1, "xy"]}), 3);
        assert_eq!(v, json!({"a": "é…[+4 bytes]", "b": [1, "xy"]}));
    }
}
