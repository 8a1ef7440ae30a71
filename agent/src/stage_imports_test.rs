//! Data flows one way, and so do imports: a module uses only stages upstream of it
//! (`sensor → state → mcp → rules → output`), and no two modules import each other,
//! directly or around a loop. This test parses every `use` and every `crate::`,
//! `super::` and `self::` path of `agent/src` (outside `#[cfg(test)]` code) and fails
//! on an import against the pipeline or on any import cycle between files, so that
//! the cycles the review found (decode ↔ net_decode, http ↔ each HTTP sink,
//! process_table ↔ view) cannot come back.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use syn::visit::Visit;

/// The pipeline stages, upstream first. A stage may import itself and those before it.
const STAGES: [&str; 5] = ["sensor", "state", "mcp", "rules", "output"];

/// Leaves any module may use; they import only each other.
const FOUNDATION: &[&str] = &["clock", "redact", "shutdown", "alloc", "service", "k8s"];

/// Types that cross stage boundaries: the stage-to-stage envelope (`events`), the
/// finding (`alert`) and the counters every stage writes (`metrics`). They may import
/// the stage types they carry or count; stages may import them.
const SHARED: &[&str] = &["events", "alert", "metrics"];

/// Wiring and the command line: they may import anything, nothing in a stage, the
/// foundation or the shared types may import them.
const WIRING: &[&str] = &[
    "", // main.rs
    "run",
    "pipeline",
    "replay",
    "cli",
    "config",
    "doctor",
    "api",
    "print_config",
    "health_alerts",
    "inventory_cli",
    "audit_cli",
    "telemetry",
];

/// Imports against the pipeline that exist today, each with the way out. Keep this
/// list short: an entry here is a defect, not a design.
const KNOWN_BACK_EDGES: &[(&str, &str, &str)] = &[];

type Module = String;

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// `src/a/b.rs` → `a::b`, `src/a/mod.rs` → `a`, `src/main.rs` → `` (the crate root).
fn module_of(rel: &Path) -> Module {
    let mut parts: Vec<String> = rel
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "main") {
        parts.pop();
    }
    parts.join("::")
}

fn has_cfg_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("cfg")
            && a.meta
                .require_list()
                .is_ok_and(|l| l.tokens.to_string().contains("test"))
    })
}

/// Every path a file names, as written, outside `#[cfg(test)]` code; and the
/// test-only child modules it declares.
#[derive(Default)]
struct Paths {
    /// (segments, is a `use` path)
    found: Vec<(Vec<String>, bool)>,
    test_only_children: Vec<String>,
}

impl Paths {
    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, &p.tree);
                prefix.pop();
            }
            syn::UseTree::Name(n) => self.found.push((push(prefix, &n.ident), true)),
            syn::UseTree::Rename(r) => self.found.push((push(prefix, &r.ident), true)),
            syn::UseTree::Glob(_) => self.found.push((prefix.clone(), true)),
            syn::UseTree::Group(g) => {
                for t in &g.items {
                    self.use_tree(prefix, t);
                }
            }
        }
    }
}

fn push(prefix: &[String], ident: &syn::Ident) -> Vec<String> {
    let mut v = prefix.to_vec();
    v.push(ident.to_string());
    v
}

impl<'ast> Visit<'ast> for Paths {
    fn visit_item(&mut self, item: &'ast syn::Item) {
        let attrs: &[syn::Attribute] = match item {
            syn::Item::Mod(m) => &m.attrs,
            syn::Item::Fn(f) => &f.attrs,
            syn::Item::Impl(i) => &i.attrs,
            syn::Item::Use(u) => &u.attrs,
            syn::Item::Struct(s) => &s.attrs,
            syn::Item::Enum(e) => &e.attrs,
            syn::Item::Const(c) => &c.attrs,
            syn::Item::Static(s) => &s.attrs,
            syn::Item::Trait(t) => &t.attrs,
            _ => &[],
        };
        if has_cfg_test(attrs) {
            if let syn::Item::Mod(m) = item {
                self.test_only_children.push(m.ident.to_string());
            }
            return;
        }
        if let syn::Item::Use(u) = item {
            self.use_tree(&mut Vec::new(), &u.tree);
            return;
        }
        syn::visit::visit_item(self, item);
    }

    fn visit_impl_item_fn(&mut self, f: &'ast syn::ImplItemFn) {
        if !has_cfg_test(&f.attrs) {
            syn::visit::visit_impl_item_fn(self, f);
        }
    }

    fn visit_path(&mut self, p: &'ast syn::Path) {
        let segs: Vec<String> = p.segments.iter().map(|s| s.ident.to_string()).collect();
        if matches!(segs.first().map(String::as_str), Some("crate" | "super" | "self")) {
            self.found.push((segs, false));
        }
        syn::visit::visit_path(self, p);
    }
}

struct Crate {
    /// Every module of the crate, with its file.
    modules: BTreeMap<Module, PathBuf>,
    /// File-level imports: module → modules it names (not counting its own children).
    edges: BTreeMap<Module, BTreeSet<Module>>,
}

fn segments(m: &str) -> Vec<String> {
    if m.is_empty() {
        Vec::new()
    } else {
        m.split("::").map(String::from).collect()
    }
}

fn read_crate() -> Crate {
    let root = src_dir();
    let mut files = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("reading agent/src") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    let mut parsed = BTreeMap::new();
    for path in &files {
        let text = std::fs::read_to_string(path).expect("reading a source file");
        let file = syn::parse_file(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut paths = Paths::default();
        paths.visit_file(&file);
        parsed.insert(
            module_of(path.strip_prefix(&root).unwrap()),
            (path.clone(), paths),
        );
    }
    // Drop modules that exist only in tests (declared `#[cfg(test)] mod x;`).
    let test_only: BTreeSet<Module> = parsed
        .iter()
        .flat_map(|(m, (_, p))| {
            p.test_only_children.iter().map(move |c| {
                if m.is_empty() {
                    c.clone()
                } else {
                    format!("{m}::{c}")
                }
            })
        })
        .collect();
    parsed.retain(|m, _| {
        !test_only
            .iter()
            .any(|t| m == t || m.starts_with(&format!("{t}::")))
    });

    let modules: BTreeMap<Module, PathBuf> =
        parsed.iter().map(|(m, (p, _))| (m.clone(), p.clone())).collect();
    let mut edges = BTreeMap::new();
    for (m, (path, paths)) in &parsed {
        let here = segments(m);
        let is_dir_module = path.file_name().is_some_and(|f| f == "mod.rs" || f == "main.rs");
        let mut targets = BTreeSet::new();
        for (segs, is_use) in &paths.found {
            let mut abs: Vec<String> = Vec::new();
            let mut rest = segs.as_slice();
            match rest.first().map(String::as_str) {
                Some("crate") => rest = &rest[1..],
                Some("self") => {
                    abs = here.clone();
                    rest = &rest[1..];
                }
                Some("super") => {
                    abs = here.clone();
                    while rest.first().is_some_and(|s| s == "super") {
                        abs.pop();
                        rest = &rest[1..];
                    }
                }
                // A `use child::…` in a directory module names its own child (2018 paths).
                Some(first) if *is_use => {
                    let child = if m.is_empty() {
                        first.to_string()
                    } else {
                        format!("{m}::{first}")
                    };
                    if !modules.contains_key(&child) {
                        continue; // an external crate
                    }
                    abs = here.clone();
                }
                _ => continue,
            }
            abs.extend(rest.iter().cloned());
            // The longest prefix that is a module is what the path depends on.
            let target = (0..=abs.len())
                .rev()
                .map(|n| abs[..n].join("::"))
                .find(|cand| modules.contains_key(cand));
            let Some(target) = target else { continue };
            let own_child = target.starts_with(&format!("{m}::")) || (m.is_empty() && !target.is_empty());
            // A directory module re-exporting or declaring its children contains them.
            if target == *m || (is_dir_module && own_child) {
                continue;
            }
            targets.insert(target);
        }
        edges.insert(m.clone(), targets);
    }
    Crate { modules, edges }
}

fn top(m: &str) -> &str {
    m.split("::").next().unwrap_or("")
}

fn stage_rank(m: &str) -> Option<usize> {
    STAGES.iter().position(|s| *s == top(m))
}

/// Why `from` may not import `to`, if it may not.
fn violation(from: &str, to: &str) -> Option<String> {
    let (ft, tt) = (top(from), top(to));
    if ft == tt {
        return None;
    }
    if WIRING.contains(&tt) && !WIRING.contains(&ft) {
        return Some(format!("`{from}` imports `{to}`, which wires the agent"));
    }
    if FOUNDATION.contains(&ft) && !FOUNDATION.contains(&tt) {
        return Some(format!("`{from}` is a foundation module but imports `{to}`"));
    }
    if let (Some(a), Some(b)) = (stage_rank(from), stage_rank(to)) {
        let known = KNOWN_BACK_EDGES.iter().any(|(f, t, _)| *f == from && *t == to);
        if b > a && !known {
            return Some(format!(
                "`{from}` (stage {ft}) imports `{to}` from downstream stage {tt}: data flows {}",
                STAGES.join(" → ")
            ));
        }
    }
    if SHARED.contains(&ft) && WIRING.contains(&tt) {
        return Some(format!("`{from}` is shared by the stages but imports `{to}`"));
    }
    None
}

/// The import cycles between files (strongly connected components of more than one).
fn cycles(edges: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<Module>> {
    struct Tarjan<'a> {
        edges: &'a BTreeMap<Module, BTreeSet<Module>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        found: Vec<Vec<Module>>,
    }
    impl<'a> Tarjan<'a> {
        fn visit(&mut self, v: &'a str) {
            let i = self.index.len();
            self.index.insert(v, i);
            self.low.insert(v, i);
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in self.edges.get(v).into_iter().flatten() {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let lw = self.low[w];
                    let lv = self.low.get_mut(v).unwrap();
                    *lv = (*lv).min(lw);
                } else if self.on_stack.contains(w) {
                    let iw = self.index[w];
                    let lv = self.low.get_mut(v).unwrap();
                    *lv = (*lv).min(iw);
                }
            }
            if self.low[v] == self.index[v] {
                let mut scc = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    scc.push(w.to_string());
                    if w == v {
                        break;
                    }
                }
                if scc.len() > 1 {
                    scc.sort();
                    self.found.push(scc);
                }
            }
        }
    }
    let mut t = Tarjan {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in edges.keys() {
        if !t.index.contains_key(v.as_str()) {
            t.visit(v);
        }
    }
    t.found
}

#[test]
fn modules_import_only_upstream_stages() {
    let krate = read_crate();
    // The parser sees the pipeline: every stage is there, and the known edges are real.
    for stage in STAGES {
        assert!(
            krate.modules.contains_key(stage),
            "stage module {stage} not found"
        );
    }
    assert!(
        krate.edges["state::network"].contains("sensor::net_decode"),
        "{:?}",
        krate.edges["state::network"]
    );
    assert!(krate.edges["sensor::reader"].contains("metrics"));

    let problems: Vec<String> = krate
        .edges
        .iter()
        .flat_map(|(from, tos)| tos.iter().filter_map(move |to| violation(from, to)))
        .collect();
    assert!(
        problems.is_empty(),
        "imports against the pipeline:\n{}",
        problems.join("\n")
    );
}

#[test]
fn no_two_files_import_each_other() {
    let krate = read_crate();
    let found = cycles(&krate.edges);
    assert!(
        found.is_empty(),
        "import cycles between files (move what both need into a leaf file):\n{}",
        found.iter().map(|c| c.join(" ↔ ")).collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn the_checker_sees_a_cycle_and_a_back_edge() {
    // Positive controls: the checks above would fail on the defects they guard against.
    let mut edges = BTreeMap::new();
    edges.insert(
        "sensor::decode".to_string(),
        BTreeSet::from(["sensor::net_decode".to_string()]),
    );
    edges.insert(
        "sensor::net_decode".to_string(),
        BTreeSet::from(["sensor::decode".to_string()]),
    );
    edges.insert("state::view".to_string(), BTreeSet::new());
    assert_eq!(
        cycles(&edges),
        vec![vec![
            "sensor::decode".to_string(),
            "sensor::net_decode".to_string()
        ]]
    );
    assert!(violation("state::mod", "mcp::inventory").is_some());
    assert!(violation("sensor::reader", "run").is_some());
    assert!(violation("clock", "state").is_some());
    assert!(violation("output::ocsf", "state::view").is_none());
    assert!(violation("mcp", "output").is_some());
    assert!(violation("mcp::identity", "output").is_some());
}
