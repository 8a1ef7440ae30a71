//! An ancestor as lineages show it, and its JSON cached on the process table entry.
//!
//! A leaf of the state stage: the table entry (`process_table.rs`) holds the cache,
//! `view.rs` fills it from an entry; this file knows neither.

use std::sync::{Arc, OnceLock};

use serde::Serialize;
use serde_json::value::RawValue;

/// An ancestor in a lineage: enough to read a launch chain at a glance. Cheap to
/// clone (shared strings), since every exec event carries one per ancestor.
#[derive(Clone, Debug)]
pub struct AncestorView {
    pub pid: u32,
    pub entity_id: Arc<str>,
    pub comm: Arc<str>,
    pub exe: Option<Arc<str>>,
    pub argv: Arc<[String]>,
    /// The same fields already rendered as JSON (see [`RenderedAncestor`]).
    rendered: Option<Arc<RawValue>>,
}

#[derive(Serialize)]
struct AncestorFields<'a> {
    pid: u32,
    entity_id: &'a str,
    comm: &'a str,
    exe: &'a Option<Arc<str>>,
    argv: &'a [String],
}

impl AncestorView {
    /// An ancestor with its JSON rendered once, for sharing across events.
    pub fn rendered(
        pid: u32,
        entity_id: Arc<str>,
        comm: Arc<str>,
        exe: Option<Arc<str>>,
        argv: Arc<[String]>,
    ) -> Self {
        let mut v = Self {
            pid,
            entity_id,
            comm,
            exe,
            argv,
            rendered: None,
        };
        v.rendered = serde_json::value::to_raw_value(&v.fields()).ok().map(Arc::from);
        v
    }

    /// An ancestor not taken from the table (alert fixtures, tests).
    #[cfg(test)]
    pub fn new(pid: u32, entity_id: &str, comm: &str, exe: Option<&str>, argv: &[&str]) -> Self {
        Self {
            pid,
            entity_id: entity_id.into(),
            comm: comm.into(),
            exe: exe.map(Arc::from),
            argv: argv.iter().map(|a| a.to_string()).collect(),
            rendered: None,
        }
    }

    #[cfg(test)]
    pub fn is_rendered(&self) -> bool {
        self.rendered.is_some()
    }

    fn fields(&self) -> AncestorFields<'_> {
        AncestorFields {
            pid: self.pid,
            entity_id: &self.entity_id,
            comm: &self.comm,
            exe: &self.exe,
            argv: &self.argv,
        }
    }
}

impl Serialize for AncestorView {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.rendered {
            Some(raw) => raw.serialize(s),
            None => self.fields().serialize(s),
        }
    }
}

/// An ancestor's view and JSON, built once per process instead of once per
/// descendant event.
///
/// Every exec event carries its lineage up to init, and an ancestor's command line can
/// be long (interpreters, JVMs, sandboxes passing JSON in argv): escaping the same
/// ancestors again for each of thousands of execs was half of the agent's CPU in an
/// exec storm (measured: 107 k → 50 k instructions per exec without it). A cloned
/// entry (a fork's child, which has its own pid) starts empty.
///
/// The cached view is used only while the caller's `is_current` check holds: the
/// caller compares the fields the view was built from (the cached view holds its own
/// reference to the argv, so a pointer comparison cannot be fooled by a new argv
/// allocated where a freed one was).
#[derive(Default)]
pub struct RenderedAncestor(OnceLock<AncestorView>);

impl RenderedAncestor {
    pub fn get_or_build(
        &self,
        is_current: impl Fn(&AncestorView) -> bool,
        build: impl FnOnce() -> AncestorView,
    ) -> AncestorView {
        if let Some(view) = self.0.get() {
            if is_current(view) {
                return view.clone();
            }
            // Changed since it was cached (a late-resolved exe, a renamed thread):
            // build afresh, uncached; rare, and the cache stays lock-free.
            return build();
        }
        let view = build();
        let _ = self.0.set(view.clone());
        view
    }
}

impl Clone for RenderedAncestor {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl std::fmt::Debug for RenderedAncestor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "rendered"
        } else {
            "not rendered"
        })
    }
}
