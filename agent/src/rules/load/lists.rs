//! Named lists: destination lists (CIDRs, addresses, domains; the built-in ones
//! first, redefinable), string lists for `in_list`, and egress policies built from
//! them.

use std::sync::Arc;

use serde_saphyr::{Location, Spanned};

use super::Compiler;
use crate::rules::{
    netlist::{self, EgressPolicy, NetSet, BUILTIN_LISTS},
    schema::{DestinationsSpec, EgressSpec, RuleFileSpec},
};

impl Compiler {
    /// `network_lists:` over the built-in lists, and `lists:`.
    pub(super) fn named_lists(&mut self, spec: &RuleFileSpec) {
        for (name, entries) in BUILTIN_LISTS {
            let set = NetSet::build(entries.iter().copied()).expect("built-in lists are valid");
            self.network_lists.insert(name.to_string(), Arc::new(set));
        }
        for (name, entries) in &spec.network_lists {
            let key = format!("network_lists.{name}");
            if let Err(m) = check_name(name) {
                self.err(entries.referenced, &key, m);
            }
            if let Some(set) = self.netset(&key, &entries.value) {
                self.network_lists.insert(name.clone(), Arc::new(set));
            }
        }
        for (name, items) in &spec.lists {
            if let Err(m) = check_name(name) {
                self.err(items.referenced, format!("lists.{name}"), m);
            }
            let v: Vec<String> = items.value.iter().map(|s| s.value.clone()).collect();
            self.lists.insert(name.clone(), Arc::from(v));
        }
    }

    pub(super) fn netset(&mut self, key: &str, entries: &[Spanned<String>]) -> Option<NetSet> {
        match NetSet::build(entries.iter().map(|e| e.value.as_str())) {
            Ok(s) => Some(s),
            Err((i, m)) => {
                let loc = entries.get(i).map_or(Location::UNKNOWN, |e| e.referenced);
                let v = entries.get(i).map(|e| e.value.clone()).unwrap_or_default();
                self.err(loc, format!("{key}[{i}]"), format!("{v:?}: {m}"));
                None
            }
        }
    }

    fn destinations(&mut self, key: &str, d: &DestinationsSpec) -> (NetSet, Vec<u16>) {
        let mut set = NetSet::default();
        for (i, c) in d.cidrs.iter().enumerate() {
            if let Err(m) = netlist::parse_cidr(&c.value) {
                self.err(
                    c.referenced,
                    format!("{key}.cidrs[{i}]"),
                    format!("{:?}: {m}", c.value),
                );
            }
        }
        for (i, c) in d.domains.iter().enumerate() {
            if let Err(m) = netlist::check_domain(&c.value) {
                self.err(
                    c.referenced,
                    format!("{key}.domains[{i}]"),
                    format!("{:?}: {m}", c.value),
                );
            }
        }
        let ok_entries: Vec<&str> = d
            .cidrs
            .iter()
            .filter(|c| netlist::parse_cidr(&c.value).is_ok())
            .chain(
                d.domains
                    .iter()
                    .filter(|c| netlist::check_domain(&c.value).is_ok()),
            )
            .map(|c| c.value.as_str())
            .collect();
        if let Ok(s) = NetSet::build(ok_entries) {
            set = s;
        }
        for (i, l) in d.lists.iter().enumerate() {
            match self.network_lists.get(&l.value) {
                Some(other) => set.extend(&other.clone()),
                None => {
                    let known = self.known_lists();
                    self.err(
                        l.referenced,
                        format!("{key}.lists[{i}]"),
                        format!("unknown network list {:?}, expected one of: {known}", l.value),
                    );
                }
            }
        }
        for (i, p) in d.ports.iter().enumerate() {
            if p.value == 0 {
                self.err(
                    p.referenced,
                    format!("{key}.ports[{i}]"),
                    "expected a port 1-65535, got 0",
                );
            }
        }
        (set, d.ports.iter().map(|p| p.value).collect())
    }

    pub(super) fn known_lists(&self) -> String {
        let mut v: Vec<&str> = self.network_lists.keys().map(String::as_str).collect();
        v.sort();
        v.join(", ")
    }

    pub(super) fn egress(&mut self, key: &str, e: &EgressSpec) -> EgressPolicy {
        let (allow, allow_ports) = self.destinations(&format!("{key}.allow"), &e.allow);
        let (deny, deny_ports) = self.destinations(&format!("{key}.deny"), &e.deny);
        EgressPolicy {
            allow,
            allow_ports,
            deny,
            deny_ports,
        }
    }
}

pub(super) fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!("{name:?}: names are 1-64 letters, digits, _ or -"))
    }
}
