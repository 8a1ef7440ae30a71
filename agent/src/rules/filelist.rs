//! Path globs of `sensitive_files:` and of a sanctioned entry's `files.allow`.
//!
//! `*` stays within one path component, `**` crosses them; a pattern starts with `/`,
//! `**/` (anywhere) or `~/` (every user's home: `/root`, `/home/*` and each home
//! directory in `/etc/passwd`, read when the rule file is compiled).

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

/// A compiled list of path globs that says which of its patterns a path matched.
#[derive(Debug, Default)]
pub struct FileSet {
    set: GlobSet,
    /// For each glob in `set`, the index of the pattern (as written) it came from.
    origin: Vec<usize>,
    patterns: Vec<String>,
}

impl FileSet {
    /// `homes`: the directories `~/` stands for.
    pub fn compile(patterns: &[String], homes: &[String]) -> Result<Self, (usize, String)> {
        let mut b = GlobSetBuilder::new();
        let mut origin = Vec::new();
        for (i, p) in patterns.iter().enumerate() {
            let expanded: Vec<String> = if let Some(rest) = p.strip_prefix("~/") {
                homes.iter().map(|h| format!("{h}/{rest}")).collect()
            } else if p.starts_with('/') || p.starts_with("**/") {
                vec![p.clone()]
            } else {
                return Err((i, format!("{p:?}: a path pattern starts with /, ~/ or **/")));
            };
            for g in expanded {
                let glob = GlobBuilder::new(&g)
                    .literal_separator(true)
                    .backslash_escape(true)
                    .build()
                    .map_err(|e| (i, format!("{p:?}: {}", e.kind())))?;
                b.add(glob);
                origin.push(i);
            }
        }
        let set = b.build().map_err(|e| (0, e.to_string()))?;
        Ok(Self {
            set,
            origin,
            patterns: patterns.to_vec(),
        })
    }

    /// The pattern (as written) the path matches first, if any.
    pub fn matching(&self, path: &str) -> Option<&str> {
        if self.patterns.is_empty() {
            return None;
        }
        let first = self.set.matches(path).into_iter().min()?;
        Some(&self.patterns[self.origin[first]])
    }
}

/// What `~/` stands for on this host: `/root`, every `/home/NAME`, and the home of
/// every account in `/etc/passwd` (service accounts' homes such as `/var/lib/x`),
/// each escaped as a glob literal.
pub fn homes() -> Vec<String> {
    let mut homes = vec!["/root".to_string(), "/home/*".to_string()];
    if let Ok(passwd) = std::fs::read_to_string("/etc/passwd") {
        for line in passwd.lines() {
            let Some(home) = line.split(':').nth(5) else {
                continue;
            };
            let home = home.trim_end_matches('/');
            // Accounts without a home, and homes the two globs above already cover.
            if home.is_empty()
                || !home.starts_with('/')
                || matches!(
                    home,
                    "/root" | "/nonexistent" | "/dev/null" | "/bin" | "/sbin" | "/usr/sbin"
                )
                || home.strip_prefix("/home/").is_some_and(|n| !n.contains('/'))
            {
                continue;
            }
            let escaped = globset::escape(home);
            if !homes.contains(&escaped) {
                homes.push(escaped);
            }
        }
    }
    homes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(p: &[&str]) -> FileSet {
        let homes = vec![
            "/root".to_string(),
            "/home/*".to_string(),
            "/var/lib/svc".to_string(),
        ];
        FileSet::compile(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>(), &homes).unwrap()
    }

    #[test]
    fn a_home_pattern_matches_in_every_home() {
        let s = set(&["~/.ssh/id_*", "/etc/shadow", "**/.env"]);
        assert_eq!(s.matching("/root/.ssh/id_ed25519"), Some("~/.ssh/id_*"));
        assert_eq!(s.matching("/home/dev/.ssh/id_rsa"), Some("~/.ssh/id_*"));
        assert_eq!(s.matching("/var/lib/svc/.ssh/id_rsa"), Some("~/.ssh/id_*"));
        assert_eq!(s.matching("/etc/shadow"), Some("/etc/shadow"));
        assert_eq!(s.matching("/srv/app/.env"), Some("**/.env"));
        // `*` does not cross a `/`: a deeper directory is not a home.
        assert_eq!(s.matching("/home/a/b/.ssh/id_rsa"), None);
        assert_eq!(s.matching("/home/dev/.ssh/known_hosts"), None);
        assert_eq!(s.matching("/etc/shadow-"), None);
    }

    #[test]
    fn relative_and_broken_patterns_are_refused() {
        let homes = vec!["/root".to_string()];
        let e = FileSet::compile(&[".ssh/id_rsa".to_string()], &homes).unwrap_err();
        assert_eq!(e.0, 0);
        assert!(e.1.contains("starts with /, ~/ or **/"), "{}", e.1);
        let e = FileSet::compile(&["/ok".to_string(), "/a/[b".to_string()], &homes).unwrap_err();
        assert_eq!(e.0, 1);
    }

    #[test]
    fn this_hosts_homes_include_root_and_home() {
        let h = homes();
        assert!(h.contains(&"/root".to_string()) && h.contains(&"/home/*".to_string()));
    }
}
