//! JSON-RPC 2.0 message shapes, as MCP uses them (any key order: the TypeScript SDK
//! puts `"jsonrpc"` last).

use serde_json::Value;

#[derive(Clone, Debug, PartialEq)]
pub enum Message {
    Request {
        id: String,
        method: String,
        params: Value,
    },
    Notification {
        method: String,
    },
    Response {
        id: String,
        result: Option<Value>,
        error: Option<Value>,
    },
}

/// JSON-RPC ids are strings or numbers; one canonical text form pairs them.
fn id_key(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(format!("s:{s}")),
        Value::Number(n) => Some(format!("n:{n}")),
        _ => None,
    }
}

/// Messages in one JSON text: an object, or a batch (2025-03-26 only).
pub fn messages(v: Value) -> Vec<Message> {
    match v {
        Value::Array(items) => items.into_iter().filter_map(message).collect(),
        other => message(other).into_iter().collect(),
    }
}

fn message(v: Value) -> Option<Message> {
    let Value::Object(mut o) = v else { return None };
    if o.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return None;
    }
    let method = o.get("method").and_then(Value::as_str).map(str::to_string);
    let id = o.get("id").and_then(id_key);
    match (method, id) {
        (Some(method), Some(id)) => Some(Message::Request {
            id,
            method,
            params: o.remove("params").unwrap_or(Value::Null),
        }),
        (Some(method), None) => Some(Message::Notification { method }),
        (None, Some(id)) => Some(Message::Response {
            id,
            result: o.remove("result"),
            error: o.remove("error"),
        }),
        (None, None) => None,
    }
}

/// `YYYY-MM-DD`, the shape of every MCP protocol version.
pub fn is_protocol_version(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn classifies_in_any_key_order() {
        let ts =
            json!({"method":"initialize","params":{"protocolVersion":"2025-11-25"},"jsonrpc":"2.0","id":0});
        assert!(
            matches!(&messages(ts)[0], Message::Request { id, method, .. } if id == "n:0" && method == "initialize")
        );
        let py = json!({"jsonrpc":"2.0","id":"a","result":{}});
        assert!(matches!(&messages(py)[0], Message::Response { id, result: Some(_), .. } if id == "s:a"));
        let note = json!({"method":"notifications/initialized","jsonrpc":"2.0"});
        assert_eq!(
            messages(note),
            vec![Message::Notification {
                method: "notifications/initialized".into()
            }]
        );
    }

    #[test]
    fn non_jsonrpc_json_is_ignored() {
        assert!(messages(json!({"level":"info","msg":"hello","id":3})).is_empty());
        assert!(messages(json!({"jsonrpc":"1.0","id":1,"method":"x"})).is_empty());
        assert!(messages(json!([1, 2, "x"])).is_empty());
        assert!(messages(json!("str")).is_empty());
    }

    #[test]
    fn batches_split() {
        let b = json!([{"jsonrpc":"2.0","id":1,"method":"a"},{"jsonrpc":"2.0","method":"b"}]);
        assert_eq!(messages(b).len(), 2);
    }

    #[test]
    fn protocol_versions() {
        for v in ["2024-11-05", "2025-11-25", "2026-07-28"] {
            assert!(is_protocol_version(v));
        }
        for v in ["3.17", "2025-11-2", "20251125", "2025-1a-25"] {
            assert!(!is_protocol_version(v));
        }
    }
}
