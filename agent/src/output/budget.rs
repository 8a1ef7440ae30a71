//! The record budget: every record a remote sink sends fits `record_max_bytes`
//! (7680 by default: with its header a syslog message fits the 8096 bytes that
//! rsyslog's default `maxMessageSize` takes, and far below Splunk's 10 000-byte
//! `TRUNCATE`), or a receiver cuts it into invalid JSON.
//!
//! A record over the budget is trimmed as a whole JSON value, never cut as text, in
//! this order, stopping as soon as it fits:
//! 1. `lineage.args`: the ancestors' command lines (each argument, then the
//!    arguments past the first few, then the joined `cmd_line`);
//! 2. `lineage.depth`: the farthest ancestors (the parent is always kept), then
//!    the farthest names of the `lineage` list;
//! 3. `process.args`: the process's own command line, to a generous bound;
//! 4. `strings`: any other long string (descriptions, handshake evidence, …) that
//!    does not identify the finding.
//!
//! What identifies the finding is never touched: class, ids, times, severity, title,
//! rule, the process's pid, name and executable, the MCP server's name and ids, the
//! endpoints. A cut string ends in `…`; the record lists the steps taken under
//! `unmapped.trimmed` (OCSF) or `mcpwatch.trimmed` (ECS), with its size before
//! trimming in `…untrimmed_bytes`. A record that still does not fit is sent as
//! trimmed as it got (whole, valid JSON) and counted: the budget is never met by
//! cutting the JSON.

use serde_json::{Map, Value};

use super::spec::Format;

/// Default `record_max_bytes`: rsyslog's default message size (8096) less room for
/// the syslog header (see `sinks/syslog.rs`).
pub const DEFAULT_RECORD_MAX_BYTES: usize = 7680;

/// What a cut string ends with.
const ELLIPSIS: &str = "…";

/// How far a record was trimmed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fit {
    /// Within the budget as rendered: untouched.
    Whole,
    /// Trimmed into the budget.
    Trimmed,
    /// Trimmed as far as allowed and still over the budget (sent so, counted).
    OverBudget,
}

/// Bounds of one trimming level: bytes per argument, arguments kept, bytes of a
/// joined command line.
#[derive(Clone, Copy)]
struct Level {
    arg: usize,
    args: usize,
    line: usize,
}

const LINEAGE_LEVELS: [Level; 4] = [
    Level {
        arg: 256,
        args: usize::MAX,
        line: 512,
    },
    Level {
        arg: 256,
        args: 8,
        line: 512,
    },
    Level {
        arg: 64,
        args: 4,
        line: 128,
    },
    Level {
        arg: 32,
        args: 2,
        line: 64,
    },
];

const PROCESS_LEVELS: [Level; 3] = [
    Level {
        arg: 1024,
        args: usize::MAX,
        line: 2048,
    },
    Level {
        arg: 256,
        args: 16,
        line: 512,
    },
    Level {
        arg: 128,
        args: 8,
        line: 256,
    },
];

const STRING_BOUNDS: [usize; 3] = [1024, 256, 128];

/// Keys whose strings identify the finding (or are ids a receiver dedups on):
/// never cut by the last step.
const PROTECTED: &[&str] = &[
    "uid",
    "id",
    "uuid",
    "entity_id",
    "instance_uid",
    "server_uid",
    "finding_uid",
    "snapshot_uid",
    "correlation_uid",
    "fingerprint",
    "identity",
    "rule_id",
    "code",
    "title",
    "name",
    "server_name",
    "path",
    "exe",
    "executable",
    "ip",
    "domain",
    "hostname",
    "value",
    "sha256",
    "exe_sha256",
    "checksum",
    "version",
    "trimmed",
];

/// Trims `v` (a record in `format`) until its JSON takes at most `max` bytes
/// (0: no budget). A record within the budget is left as it is, without a marker.
pub fn fit(v: &mut Value, format: Format, max: usize) -> Fit {
    let before = size(v);
    if max == 0 || before <= max || !v.is_object() {
        return if max == 0 || before <= max {
            Fit::Whole
        } else {
            Fit::OverBudget
        };
    }
    let mut t = Trimmer {
        v,
        format,
        max,
        before,
        steps: Vec::new(),
    };
    if t.run() {
        Fit::Trimmed
    } else {
        Fit::OverBudget
    }
}

fn size(v: &Value) -> usize {
    serde_json::to_vec(v).map_or(usize::MAX, |b| b.len())
}

struct Trimmer<'a> {
    v: &'a mut Value,
    format: Format,
    max: usize,
    before: usize,
    steps: Vec<&'static str>,
}

impl Trimmer<'_> {
    /// True when the record fits in the end.
    fn run(&mut self) -> bool {
        let lineage = lineage_nodes(self.v);
        for level in LINEAGE_LEVELS {
            let ptrs = lineage.clone();
            if self.step("lineage.args", |v| trim_nodes(v, &ptrs, level)) {
                return true;
            }
        }
        let depth = lineage_depth(self.v);
        for k in (1..depth).rev() {
            if self.step("lineage.depth", |v| truncate_depth(v, k)) {
                return true;
            }
        }
        let names = lineage_list_len(self.v);
        for k in (1..names).rev() {
            if self.step("lineage.depth", |v| truncate_lineage_lists(v, k)) {
                return true;
            }
        }
        let own = own_nodes(self.v);
        for level in PROCESS_LEVELS {
            let ptrs = own.clone();
            if self.step("process.args", |v| trim_nodes(v, &ptrs, level)) {
                return true;
            }
        }
        for bound in STRING_BOUNDS {
            if self.step("strings", |v| cut_strings(v, None, bound)) {
                return true;
            }
        }
        false
    }

    /// Applies `op`; when it changed anything, records the step and says whether the
    /// record (marker included) now fits.
    fn step(&mut self, name: &'static str, op: impl FnOnce(&mut Value) -> bool) -> bool {
        if !op(self.v) {
            return false;
        }
        if !self.steps.contains(&name) {
            self.steps.push(name);
        }
        self.mark();
        size(self.v) <= self.max
    }

    fn mark(&mut self) {
        let ns = match self.format {
            Format::Ocsf => "unmapped",
            Format::Ecs => "mcpwatch",
            Format::Native => "mcpwatch_budget",
        };
        let Some(root) = self.v.as_object_mut() else {
            return;
        };
        let slot = root.entry(ns).or_insert_with(|| Value::Object(Map::new()));
        if !slot.is_object() {
            *slot = Value::Object(Map::new());
        }
        let o = slot.as_object_mut().expect("an object");
        o.insert("trimmed".into(), Value::from(self.steps.clone()));
        o.insert("untrimmed_bytes".into(), Value::from(self.before));
    }
}

/// Cuts `s` to at most `max` bytes (on a character boundary), ending in `…`.
fn cut(s: &mut String, max: usize) -> bool {
    if s.len() <= max {
        return false;
    }
    let mut end = max.saturating_sub(ELLIPSIS.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.push_str(ELLIPSIS);
    true
}

/// Trims the command-line fields of one process node, whatever its format: joined
/// strings (`cmd_line`, OCSF; `command_line`, ECS) and argv arrays (`argv`, `args`).
fn trim_node(node: &mut Value, level: Level) -> bool {
    let Some(o) = node.as_object_mut() else {
        return false;
    };
    let mut changed = false;
    for key in ["cmd_line", "command_line"] {
        if let Some(Value::String(s)) = o.get_mut(key) {
            changed |= cut(s, level.line);
        }
    }
    for key in ["argv", "args"] {
        if let Some(Value::Array(a)) = o.get_mut(key) {
            for arg in a.iter_mut() {
                if let Value::String(s) = arg {
                    changed |= cut(s, level.arg);
                }
            }
            if a.len() > level.args {
                a.truncate(level.args);
                changed = true;
            }
        }
    }
    changed
}

fn trim_nodes(v: &mut Value, ptrs: &[String], level: Level) -> bool {
    let mut changed = false;
    for p in ptrs {
        if let Some(node) = v.pointer_mut(p) {
            changed |= trim_node(node, level);
        }
    }
    changed
}

fn is_process_activity(v: &Value) -> bool {
    v.get("class_uid").and_then(Value::as_u64) == Some(1007)
}

/// The MCP server objects the agent adds (`unmapped.mcp_server`, `mcpwatch.mcp_server`).
fn server_pointers(v: &Value) -> Vec<String> {
    ["/unmapped/mcp_server", "/mcpwatch/mcp_server"]
        .into_iter()
        .filter(|p| v.pointer(p).is_some_and(Value::is_object))
        .map(String::from)
        .collect()
}

/// The process nodes that hold the process itself: the finding's evidence, the
/// activity's process, an inventory record's actor (the server), the agent's argv
/// copy, and the MCP server with the first entry of its launch chain.
fn own_roots(v: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(ev) = v.get("evidences").and_then(Value::as_array) {
        for (i, e) in ev.iter().enumerate() {
            if e.get("process").is_some() {
                out.push(format!("/evidences/{i}/process"));
            }
        }
    }
    if v.get("process").is_some_and(Value::is_object) {
        out.push("/process".into());
    }
    // In Process Activity the actor is the parent; elsewhere (inventory) the server.
    if v.pointer("/actor/process").is_some() && !is_process_activity(v) {
        out.push("/actor/process".into());
    }
    out
}

fn own_nodes(v: &Value) -> Vec<String> {
    let mut out = own_roots(v);
    if v.pointer("/unmapped/process").is_some() {
        out.push("/unmapped/process".into());
    }
    for s in server_pointers(v) {
        out.push(format!("{s}/launch_chain/0"));
        out.push(s);
    }
    out
}

/// Every ancestor node: the nested `parent_process` chains (OCSF), `parent` (ECS),
/// Process Activity's actor, and the MCP server's launch chain past the server.
fn lineage_nodes(v: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for root in own_roots(v) {
        let mut p = root;
        while let Some(node) = v.pointer(&p) {
            if node.get("parent").is_some_and(Value::is_object) {
                out.push(format!("{p}/parent"));
            }
            if node.get("parent_process").is_none() {
                break;
            }
            p = format!("{p}/parent_process");
            out.push(p.clone());
        }
    }
    if is_process_activity(v) && v.pointer("/actor/process").is_some() {
        out.push("/actor/process".into());
    }
    for s in server_pointers(v) {
        if let Some(chain) = v.pointer(&format!("{s}/launch_chain")).and_then(Value::as_array) {
            out.extend((1..chain.len()).map(|i| format!("{s}/launch_chain/{i}")));
        }
    }
    out
}

fn chain_depth(node: &Value) -> usize {
    let mut n = 0;
    let mut cur = node;
    while let Some(up) = cur.get("parent_process") {
        n += 1;
        cur = up;
    }
    n
}

/// The most ancestors any chain holds (launch chains count the server too).
fn lineage_depth(v: &Value) -> usize {
    let nested = own_roots(v)
        .iter()
        .filter_map(|p| v.pointer(p))
        .map(chain_depth)
        .max()
        .unwrap_or(0);
    let chains = server_pointers(v)
        .iter()
        .filter_map(|s| v.pointer(&format!("{s}/launch_chain")))
        .filter_map(Value::as_array)
        .map(|c| c.len().saturating_sub(1))
        .max()
        .unwrap_or(0);
    nested.max(chains)
}

/// Keeps `k` ancestors (k >= 1) in every chain.
fn truncate_depth(v: &mut Value, k: usize) -> bool {
    let mut changed = false;
    for root in own_roots(v) {
        let at = format!("{root}{}", "/parent_process".repeat(k));
        if let Some(Value::Object(o)) = v.pointer_mut(&at) {
            changed |= o.remove("parent_process").is_some();
        }
    }
    for s in server_pointers(v) {
        if let Some(Value::Array(chain)) = v.pointer_mut(&format!("{s}/launch_chain")) {
            if chain.len() > k + 1 {
                chain.truncate(k + 1);
                changed = true;
            }
        }
    }
    changed
}

/// The longest `lineage` list (OCSF: the ancestors' executables, parent first).
fn lineage_list_len(v: &Value) -> usize {
    own_roots(v)
        .iter()
        .filter_map(|p| v.pointer(&format!("{p}/lineage")))
        .filter_map(Value::as_array)
        .map(Vec::len)
        .max()
        .unwrap_or(0)
}

fn truncate_lineage_lists(v: &mut Value, k: usize) -> bool {
    let mut changed = false;
    for p in own_roots(v) {
        if let Some(Value::Array(a)) = v.pointer_mut(&format!("{p}/lineage")) {
            if a.len() > k {
                a.truncate(k);
                changed = true;
            }
        }
    }
    changed
}

/// Cuts every string longer than `bound` whose key does not identify the finding
/// (an array's strings go by the array's key).
fn cut_strings(v: &mut Value, key: Option<&str>, bound: usize) -> bool {
    match v {
        Value::String(s) => !key.is_some_and(|k| PROTECTED.contains(&k)) && cut(s, bound),
        Value::Array(a) => {
            let mut changed = false;
            for x in a {
                changed |= cut_strings(x, key, bound);
            }
            changed
        }
        Value::Object(o) => {
            let mut changed = false;
            for (k, x) in o.iter_mut() {
                changed |= cut_strings(x, Some(k), bound);
            }
            changed
        }
        _ => false,
    }
}

/// Test support: an alert from a deep tree, and its OCSF records trimmed.
#[cfg(test)]
pub(crate) mod fixtures {
    use std::sync::Arc;

    use serde_json::Value;

    use super::{fit, Fit, DEFAULT_RECORD_MAX_BYTES};
    use crate::{
        alert::{fixtures, Alert},
        output::{host::HostInfo, ocsf, spec::Format},
        state::view::{AncestorView, ProcessAction, ProcessEvent},
    };

    pub fn host() -> HostInfo {
        HostInfo {
            hostname: "dev-laptop-01".into(),
            id: "0123456789abcdef0123456789abcdef".into(),
        }
    }

    /// A 1.5 KB command line, as IDEs and terminals have.
    pub fn long_argv(i: usize) -> Vec<String> {
        let mut argv = vec![format!("/opt/app{i}/bin/app{i}")];
        for j in 0..12 {
            argv.push(format!(
                "--option-{j}={}",
                format!("/home/dev/.config/app{i}/profile/extensions/").repeat(3)
            ));
        }
        argv
    }

    /// The fixture alert (an MCP server's egress) with eight ancestors, each with a
    /// 1.5 KB command line, and the server's launch chain as deep.
    pub fn deep_alert() -> Alert {
        let mut a = fixtures::alert();
        a.lineage = (0..8u32)
            .map(|i| {
                let argv = long_argv(i as usize);
                assert!(argv.join(" ").len() >= 1500);
                AncestorView::new(
                    4200 - i,
                    &format!("{}:{}", 4200 - i, 900 - i),
                    &format!("app{i}"),
                    Some(&format!("/opt/app{i}/bin/app{i}")),
                    &argv.iter().map(String::as_str).collect::<Vec<_>>(),
                )
            })
            .collect();
        if let Some(s) = &a.mcp_server {
            let mut s = (**s).clone();
            s.launch_chain.extend(a.lineage.iter().cloned());
            a.mcp_server = Some(Arc::new(s));
        }
        a
    }

    pub fn process_event(a: &Alert) -> ProcessEvent {
        ProcessEvent {
            kind: "process_exec",
            time: "2026-11-22T00:51:29.105433428Z".into(),
            action: ProcessAction::Exec,
            process: a.process.clone(),
            lineage: a.lineage.clone(),
        }
    }

    /// The deep alert's finding and process activity, trimmed to the default budget.
    pub fn trimmed_ocsf() -> Vec<Value> {
        let a = deep_alert();
        let mut out = vec![
            ocsf::detection_finding(&a, &host(), "ev-1", 1),
            ocsf::process_activity(&process_event(&a), &host(), "ev-2"),
        ];
        for v in &mut out {
            assert_eq!(fit(v, Format::Ocsf, DEFAULT_RECORD_MAX_BYTES), Fit::Trimmed);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::{
        fixtures::{deep_alert, host, process_event},
        *,
    };
    use crate::{
        alert::fixtures,
        output::{ecs, ocsf},
    };

    fn ptr<'a>(v: &'a Value, p: &str) -> &'a Value {
        v.pointer(p).unwrap_or_else(|| panic!("no {p} in {v:#}"))
    }

    fn trimmed_marker<'a>(v: &'a Value, ns: &str) -> Vec<&'a str> {
        ptr(v, &format!("/{ns}/trimmed"))
            .as_array()
            .expect("trimmed is a list")
            .iter()
            .map(|s| s.as_str().expect("step names are strings"))
            .collect()
    }

    #[test]
    fn a_finding_from_a_deep_tree_is_trimmed_into_the_budget_keeping_its_core_whole() {
        let a = deep_alert();
        let original = ocsf::detection_finding(&a, &host(), "ev-1", 1);
        let before = original.to_string().len();
        assert!(before > 2 * DEFAULT_RECORD_MAX_BYTES, "{before}");
        let mut f = original.clone();
        assert_eq!(fit(&mut f, Format::Ocsf, DEFAULT_RECORD_MAX_BYTES), Fit::Trimmed);
        let text = f.to_string();
        eprintln!(
            "finding with 8 ancestors: {before} bytes, trimmed: {}",
            text.len()
        );
        assert!(text.len() <= DEFAULT_RECORD_MAX_BYTES, "{}", text.len());
        let back: Value = serde_json::from_str(&text).expect("valid JSON");
        assert_eq!(back, f);
        // The core of the finding, whole.
        for p in [
            "/class_uid",
            "/type_uid",
            "/time",
            "/severity_id",
            "/metadata/uid",
            "/finding_info/uid",
            "/finding_info/title",
            "/finding_info/analytic/uid",
            "/device/hostname",
            "/evidences/0/process/pid",
            "/evidences/0/process/uid",
            "/evidences/0/process/name",
            "/evidences/0/process/cmd_line",
            "/evidences/0/process/file/path",
            "/evidences/0/process/file/hashes",
            "/evidences/0/process/parent_process/pid",
            "/evidences/0/process/parent_process/file/path",
            "/evidences/0/dst_endpoint",
            "/evidences/0/src_endpoint",
            "/unmapped/identity",
            "/unmapped/mcp_server/name",
            "/unmapped/mcp_server/server_uid",
            "/unmapped/connection/remote",
        ] {
            assert_eq!(ptr(&back, p), ptr(&original, p), "{p}");
        }
        assert_eq!(ptr(&back, "/evidences/0/dst_endpoint/ip"), "203.0.113.7");
        // Lineage first, and marked so.
        let steps = trimmed_marker(&back, "unmapped");
        assert_eq!(steps.first(), Some(&"lineage.args"), "{steps:?}");
        assert!(!steps.contains(&"strings"), "{steps:?}");
        assert_eq!(*ptr(&back, "/unmapped/untrimmed_bytes"), before);
        let parent_line = ptr(&back, "/evidences/0/process/parent_process/cmd_line")
            .as_str()
            .unwrap();
        assert!(
            parent_line.ends_with('…') && parent_line.len() < 1500,
            "{parent_line}"
        );
    }

    #[test]
    fn depth_goes_after_the_arguments_and_the_parent_stays() {
        let a = deep_alert();
        let mut f = ocsf::detection_finding(&a, &host(), "ev-1", 1);
        // A budget the arguments alone cannot meet.
        assert_eq!(fit(&mut f, Format::Ocsf, 4500), Fit::Trimmed);
        assert!(f.to_string().len() <= 4500);
        let steps = trimmed_marker(&f, "unmapped");
        assert_eq!(&steps[..2], ["lineage.args", "lineage.depth"], "{steps:?}");
        let p = ptr(&f, "/evidences/0/process");
        let depth = chain_depth(p);
        assert!((1..8).contains(&depth), "{depth}");
        assert_eq!(ptr(p, "/parent_process/pid"), 4200);
        assert_eq!(ptr(p, "/parent_process/uid"), "4200:900");
    }

    #[test]
    fn an_ecs_alert_and_a_process_activity_are_trimmed_too() {
        let a = deep_alert();
        let original = ecs::alert(&a, &host(), "ev-1", 1);
        let mut d = original.clone();
        assert!(d.to_string().len() > DEFAULT_RECORD_MAX_BYTES);
        assert_eq!(fit(&mut d, Format::Ecs, DEFAULT_RECORD_MAX_BYTES), Fit::Trimmed);
        assert!(d.to_string().len() <= DEFAULT_RECORD_MAX_BYTES);
        assert!(trimmed_marker(&d, "mcpwatch").contains(&"lineage.args"));
        for p in [
            "/rule/id",
            "/event/kind",
            "/process/pid",
            "/process/executable",
            "/process/parent/pid",
            "/destination",
            "/mcpwatch/mcp_server/name",
        ] {
            assert_eq!(ptr(&d, p), ptr(&original, p), "{p}");
        }

        let original = ocsf::process_activity(&process_event(&a), &host(), "ev-2");
        let mut v = original.clone();
        assert_eq!(fit(&mut v, Format::Ocsf, DEFAULT_RECORD_MAX_BYTES), Fit::Trimmed);
        assert!(v.to_string().len() <= DEFAULT_RECORD_MAX_BYTES);
        for p in [
            "/class_uid",
            "/process/pid",
            "/process/file/path",
            "/actor/process/pid",
        ] {
            assert_eq!(ptr(&v, p), ptr(&original, p), "{p}");
        }
    }

    #[test]
    fn a_small_record_is_untouched_and_unmarked() {
        for original in crate::output::fixture_findings() {
            let mut f = original.clone();
            assert_eq!(fit(&mut f, Format::Ocsf, DEFAULT_RECORD_MAX_BYTES), Fit::Whole);
            assert_eq!(f, original);
            assert!(f.pointer("/unmapped/trimmed").is_none());
        }
        let mut f = crate::output::fixture_findings().remove(0);
        let original = f.clone();
        assert_eq!(fit(&mut f, Format::Ocsf, 0), Fit::Whole, "0: no budget");
        assert_eq!(f, original);
    }

    #[test]
    fn a_record_that_cannot_fit_is_sent_whole_as_valid_json_and_said_so() {
        let a = deep_alert();
        let original = ocsf::detection_finding(&a, &host(), "ev-1", 1);
        let mut f = original.clone();
        assert_eq!(fit(&mut f, Format::Ocsf, 1500), Fit::OverBudget);
        let text = f.to_string();
        assert!(text.len() > 1500 && text.len() < original.to_string().len());
        let back: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back["finding_info"]["uid"], original["finding_info"]["uid"]);
        // Every step it could take, marked.
        let steps = trimmed_marker(&back, "unmapped");
        assert_eq!(&steps[..2], ["lineage.args", "lineage.depth"], "{steps:?}");
        assert_eq!(
            chain_depth(&back["evidences"][0]["process"]),
            1,
            "the parent stays"
        );
        // Nothing to trim: over the budget, untouched.
        let mut f = crate::output::fixture_findings().remove(1);
        let original = f.clone();
        assert_eq!(fit(&mut f, Format::Ocsf, 300), Fit::OverBudget);
        assert_eq!(f, original);
    }

    #[test]
    fn long_descriptions_go_last_and_ids_never() {
        let mut a = fixtures::alert();
        a.description = "d".repeat(9000);
        a.identity = "i".repeat(600);
        let original = ocsf::detection_finding(&a, &host(), "ev-1", 1);
        let mut f = original.clone();
        assert_eq!(fit(&mut f, Format::Ocsf, DEFAULT_RECORD_MAX_BYTES), Fit::Trimmed);
        assert!(f.to_string().len() <= DEFAULT_RECORD_MAX_BYTES);
        assert!(trimmed_marker(&f, "unmapped").contains(&"strings"));
        assert_eq!(f["unmapped"]["identity"], original["unmapped"]["identity"]);
        assert!(f["message"].as_str().unwrap().ends_with('…'));
    }

    #[test]
    fn cuts_fall_on_character_boundaries() {
        let mut s = "é".repeat(100);
        assert!(cut(&mut s, 51));
        assert!(s.len() <= 51 && s.ends_with('…'));
        let mut short = "abc".to_string();
        assert!(!cut(&mut short, 3));
    }
}
