//! The text a server gives the model about itself: every string of its tool, prompt
//! and resource metadata (names, titles, descriptions, parameter descriptions, enum
//! and default values, anywhere in the input and output schemas) and its
//! `instructions`, each with where it was found. The rules stage scans these for
//! injection (`mcp-tool-poisoning`); nothing here leaves the host.

use serde_json::{Map, Value};

/// Strings kept per answer, and bytes over all of them: an answer is at most a
/// captured message (`recognizer`), so these bound the work of one scan.
const MAX_TEXTS: usize = 8_192;
const MAX_TOTAL_BYTES: usize = 1 << 20;
/// Schema nesting followed.
const MAX_DEPTH: usize = 16;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetadataText {
    /// `tool`, `prompt`, `resource` or `server`.
    pub kind: &'static str,
    /// The tool's (prompt's, resource's) name; the server's name for `instructions`.
    pub item: String,
    /// Where in the item: `description`, `inputSchema.properties.path.description`.
    pub field: String,
    pub text: String,
}

struct Collector {
    out: Vec<MetadataText>,
    bytes: usize,
}

impl Collector {
    fn push(&mut self, kind: &'static str, item: &str, field: String, text: &str) {
        if self.out.len() >= MAX_TEXTS || self.bytes + text.len() > MAX_TOTAL_BYTES || text.is_empty() {
            return;
        }
        self.bytes += text.len();
        self.out.push(MetadataText {
            kind,
            item: item.to_string(),
            field,
            text: text.to_string(),
        });
    }

    /// Every string under `v` (keys of `properties` too: a parameter's name is read
    /// by the model as much as its description).
    fn strings(&mut self, kind: &'static str, item: &str, path: &str, v: &Value, depth: usize) {
        if depth > MAX_DEPTH {
            return;
        }
        match v {
            Value::String(s) => self.push(kind, item, path.to_string(), s),
            Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    self.strings(kind, item, &format!("{path}[{i}]"), x, depth + 1);
                }
            }
            Value::Object(o) => {
                for (k, x) in o {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    if path.ends_with("properties") {
                        self.push(kind, item, format!("{p}#name"), k);
                    }
                    self.strings(kind, item, &p, x, depth + 1);
                }
            }
            _ => {}
        }
    }

    fn item(&mut self, kind: &'static str, o: &Map<String, Value>, skip: &[&str]) {
        let name = o
            .get("name")
            .or_else(|| o.get("uri"))
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_string();
        for (k, v) in o {
            // Icons and `_meta` are for the client's display and plumbing.
            if skip.contains(&k.as_str()) || k == "_meta" || k == "icons" {
                continue;
            }
            self.strings(kind, &name, k, v, 0);
        }
    }
}

/// The metadata texts of the answer to `method`, if it is one that carries them.
pub fn texts(method: &str, result: &Value) -> Vec<MetadataText> {
    let mut c = Collector {
        out: Vec::new(),
        bytes: 0,
    };
    let list = |key: &str| result.get(key).and_then(Value::as_array).into_iter().flatten();
    match method {
        "tools/list" => {
            for t in list("tools").filter_map(Value::as_object) {
                c.item("tool", t, &[]);
            }
        }
        "prompts/list" => {
            for p in list("prompts").filter_map(Value::as_object) {
                c.item("prompt", p, &[]);
            }
        }
        "resources/list" => {
            for r in list("resources").filter_map(Value::as_object) {
                c.item("resource", r, &["uri", "mimeType"]);
            }
        }
        "resources/templates/list" => {
            for r in list("resourceTemplates").filter_map(Value::as_object) {
                c.item("resource", r, &["uriTemplate", "mimeType"]);
            }
        }
        // The handshake: `serverInfo` at the top (≤ 2025-11-25) or in `_meta`
        // (2026-07-28 `server/discover`).
        "initialize" | "server/discover" => {
            let info = result
                .get("serverInfo")
                .or_else(|| result.pointer("/_meta/io.modelcontextprotocol~1serverInfo"));
            let server = info
                .and_then(|i| i.get("name"))
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_string();
            if let Some(i) = result.get("instructions").and_then(Value::as_str) {
                c.push("server", &server, "instructions".into(), i);
            }
            if let Some(t) = info.and_then(|i| i.get("title")).and_then(Value::as_str) {
                c.push("server", &server, "serverInfo.title".into(), t);
            }
        }
        _ => {}
    }
    c.out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn every_string_of_a_tool_with_its_place() {
        let r = json!({"tools": [{
            "name": "read",
            "description": "Reads a file",
            "inputSchema": {"type": "object", "properties": {
                "path": {"type": "string", "description": "The file"},
                "mode": {"type": "string", "enum": ["text", "binary"], "default": "text"}
            }},
            "annotations": {"title": "Read"},
            "_meta": {"x": "not scanned"}
        }]});
        let t: Vec<(String, String)> = texts("tools/list", &r)
            .into_iter()
            .map(|m| (m.field, m.text))
            .collect();
        for want in [
            ("name", "read"),
            ("description", "Reads a file"),
            ("inputSchema.properties.path#name", "path"),
            ("inputSchema.properties.path.description", "The file"),
            ("inputSchema.properties.mode.enum[1]", "binary"),
            ("inputSchema.properties.mode.default", "text"),
            ("annotations.title", "Read"),
        ] {
            assert!(
                t.contains(&(want.0.to_string(), want.1.to_string())),
                "{want:?} in {t:?}"
            );
        }
        assert!(!t.iter().any(|(_, s)| s == "not scanned"));
    }

    #[test]
    fn discover_instructions_and_title() {
        let discover = json!({"supportedVersions": ["2026-07-28"], "instructions": "Be brief",
            "_meta": {"io.modelcontextprotocol/serverInfo": {"name": "srv", "title": "Server"}}});
        let got: Vec<(String, String, String)> = texts("server/discover", &discover)
            .into_iter()
            .map(|t| (t.item, t.field, t.text))
            .collect();
        assert_eq!(
            got,
            [
                ("srv".into(), "instructions".into(), "Be brief".into()),
                ("srv".into(), "serverInfo.title".into(), "Server".into())
            ]
        );
    }

    #[test]
    fn instructions_prompts_and_resources() {
        let init = json!({"serverInfo": {"name": "srv"}, "instructions": "Use me well"});
        let t = texts("initialize", &init);
        assert_eq!(
            (t[0].kind, t[0].item.as_str(), t[0].field.as_str()),
            ("server", "srv", "instructions")
        );
        let p = texts(
            "prompts/list",
            &json!({"prompts": [{"name": "p", "arguments": [{"name": "a", "description": "d"}]}]}),
        );
        assert!(p
            .iter()
            .any(|m| m.field == "arguments[0].description" && m.text == "d"));
        let r = texts(
            "resources/list",
            &json!({"resources": [{"uri": "file:///x", "name": "x", "description": "y"}]}),
        );
        // Keys in order: description, name.
        assert_eq!(r.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(), ["y", "x"]);
        assert!(texts("tools/call", &json!({"content": []})).is_empty());
    }
}
