//! `sanctioned_servers:` entries: what identifies a server, its version range,
//! pinned hash and own egress policy.

use std::{collections::HashSet, sync::Arc};

use serde_saphyr::{Location, Spanned};

use super::Compiler;
use crate::rules::{
    condition,
    model::Sanctioned,
    schema::{RuleFileSpec, SanctionedSpec},
};

impl Compiler {
    /// Every entry, in file order; ids are unique.
    pub(super) fn sanctioned_entries(&mut self, spec: &RuleFileSpec) -> Vec<Sanctioned> {
        let mut sanctioned = Vec::new();
        let mut labels = HashSet::new();
        for (i, s) in spec.sanctioned_servers.iter().enumerate() {
            let key = format!("sanctioned_servers[{i}]");
            let entry = self.sanctioned(&key, i, &s.value, s.referenced);
            if !labels.insert(entry.label.clone()) {
                let loc = s.value.id.as_ref().map_or(s.referenced, |id| id.referenced);
                self.err(
                    loc,
                    format!("{key}.id"),
                    format!("duplicate sanctioned entry id {:?}", entry.label),
                );
            }
            sanctioned.push(entry);
        }
        sanctioned
    }

    fn glob(&mut self, key: &str, g: &Option<Spanned<String>>) -> Option<globset::GlobMatcher> {
        let g = g.as_ref()?;
        condition::compile_glob(&g.value)
            .map_err(|m| self.err(g.referenced, key, format!("{:?}: {m}", g.value)))
            .ok()
    }

    fn sanctioned(&mut self, key: &str, i: usize, s: &SanctionedSpec, at: Location) -> Sanctioned {
        let has_identity = s.name.is_some()
            || s.package.is_some()
            || s.exe.is_some()
            || s.sha256.is_some()
            || s.argv.is_some();
        if !has_identity {
            self.err(
                at,
                key,
                "a sanctioned entry must match by at least one of name, package, exe, sha256, argv",
            );
        }
        let version = s.version.as_ref().and_then(|v| {
            semver::VersionReq::parse(&v.value)
                .map_err(|e| {
                    self.err(
                        v.referenced,
                        format!("{key}.version"),
                        format!(
                            "{:?}: bad version range ({e}); expected e.g. \">=1.2, <2\"",
                            v.value
                        ),
                    )
                })
                .ok()
        });
        if let (Some(v), None, None) = (&s.version, &s.package, &s.name) {
            self.err(
                v.referenced,
                format!("{key}.version"),
                "a version range needs a package or name",
            );
        }
        for (name, h) in [("sha256", &s.sha256), ("tools_sha256", &s.tools_sha256)] {
            if let Some(h) = h {
                if h.value.len() != 64 || !h.value.bytes().all(|b| b.is_ascii_hexdigit()) {
                    self.err(
                        h.referenced,
                        format!("{key}.{name}"),
                        "expected 64 hex digits (a SHA-256)",
                    );
                }
            }
        }
        let argv = s.argv.as_ref().and_then(|r| {
            condition::compile_regex(&r.value)
                .map_err(|m| self.err(r.referenced, format!("{key}.argv"), m))
                .ok()
        });
        let egress = s
            .egress
            .as_ref()
            .map(|e| Arc::new(self.egress(&format!("{key}.egress"), &e.value)));
        let tools = s
            .tools
            .as_ref()
            .map(|p| Arc::new(self.tool_policy(&format!("{key}.tools"), &p.value)));
        let audit = s
            .audit
            .as_ref()
            .map(|a| self.audit_policy(&format!("{key}.audit"), &a.value));
        let files_allow = s.files.as_ref().map(|f| {
            let key = format!("{key}.files.allow");
            self.file_set(&key, &f.value.allow)
        });
        Sanctioned {
            tools,
            audit,
            files_allow,
            label: s
                .id
                .as_ref()
                .map_or_else(|| format!("sanctioned_servers[{i}]"), |id| id.value.clone()),
            name: self.glob(&format!("{key}.name"), &s.name),
            package: s.package.as_ref().map(|p| p.value.clone()),
            version,
            exe: self.glob(&format!("{key}.exe"), &s.exe),
            sha256: s.sha256.as_ref().map(|h| h.value.to_ascii_lowercase()),
            tools_sha256: s.tools_sha256.as_ref().map(|h| h.value.to_ascii_lowercase()),
            argv,
            user: s.user.as_ref().map(|u| u.value.clone()),
            host: self.glob(&format!("{key}.host"), &s.host),
            container_image: self.glob(&format!("{key}.container_image"), &s.container_image),
            egress,
        }
    }
}
