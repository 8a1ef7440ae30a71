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

/// The id of a message whose id was past the bytes kept (the TS SDK writes `id`
/// last): the audit pairs it with its session's oldest open request.
pub const UNKNOWN_ID: &str = "?";

/// What the first bytes of a message too long to keep say it is: a request (its id
/// and method; parameters unknown) or a response (its id, and an `error` marker when
/// the error key comes before any result). `None` when they do not look like
/// JSON-RPC.
pub fn cut_message(head: &[u8]) -> Option<Message> {
    let text = String::from_utf8_lossy(head);
    let t = text.trim_start();
    if !t.starts_with('{') {
        return None;
    }
    let pos = |key: &str| t.find(&format!("\"{key}\":"));
    let jsonrpc = t.contains("\"jsonrpc\":\"2.0\"");
    let (result, error) = (pos("result"), pos("error"));
    let method = pos("method").and_then(|i| string_after(&t[i + "\"method\":".len()..]));
    if !jsonrpc && result.is_none() && error.is_none() {
        return None;
    }
    let id = pos("id")
        .and_then(|i| id_token(&t[i + "\"id\":".len()..]))
        .unwrap_or_else(|| UNKNOWN_ID.to_string());
    match method {
        Some(method) if id != UNKNOWN_ID => Some(Message::Request {
            id,
            method,
            params: Value::Null,
        }),
        Some(method) => Some(Message::Notification { method }),
        None if result.is_some() || error.is_some() => {
            let is_error = match (result, error) {
                (Some(r), Some(e)) => e < r,
                (None, Some(_)) => true,
                _ => false,
            };
            Some(Message::Response {
                id,
                result: (!is_error).then_some(Value::Null),
                error: is_error.then(|| Value::Object(Default::default())),
            })
        }
        None => None,
    }
}

/// A JSON string at the start of `s` (after whitespace), unescaped.
fn string_after(s: &str) -> Option<String> {
    let s = s.trim_start();
    let mut de = serde_json::Deserializer::from_str(s).into_iter::<String>();
    de.next()?.ok()
}

/// A JSON number or string at the start of `s`, as [`id_key`] names it.
fn id_token(s: &str) -> Option<String> {
    let s = s.trim_start();
    if s.starts_with('"') {
        return string_after(s).map(|v| format!("s:{v}"));
    }
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '-'))
        .unwrap_or(s.len());
    // A number cut at the end of the kept bytes is not trusted.
    (end > 0 && end < s.len()).then(|| format!("n:{}", &s[..end]))
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
    fn cut_messages_are_named_from_their_first_bytes() {
        let py = br#"{"jsonrpc":"2.0","id":12,"result":{"content":[{"type":"text","text":"xxxx"#;
        assert!(
            matches!(cut_message(py), Some(Message::Response { id, result: Some(_), error: None }) if id == "n:12")
        );
        let ts = br#"{"result":{"content":[{"type":"text","text":"xxxx"#;
        assert!(matches!(cut_message(ts), Some(Message::Response { id, .. }) if id == UNKNOWN_ID));
        let err = br#"{"jsonrpc":"2.0","id":"a","error":{"code":-32603,"message":"xxx"#;
        assert!(
            matches!(cut_message(err), Some(Message::Response { id, error: Some(_), .. }) if id == "s:a")
        );
        let call = br#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"write","arguments":{"text":"xx"#;
        assert!(
            matches!(cut_message(call), Some(Message::Request { id, method, .. }) if id == "n:5" && method == "tools/call")
        );
        assert!(cut_message(b"{\"level\":\"info\",\"msg\":\"aaaa").is_none());
        assert!(cut_message(b"xxxx").is_none());
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
