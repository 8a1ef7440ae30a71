//! Launch heuristics: which freshly started processes look like MCP servers before
//! their first byte. They come from the rule file (`launch_heuristics:`, validated by
//! `rules::load`), not code; a
//! match makes the process "suspected" and gives it a capture budget until the wire
//! confirms (or not).

use anyhow::{Context as _, Result};
use regex::RegexSet;
use serde::Deserialize;

/// The `launch_heuristics:` section of rules.yaml.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LaunchHeuristicsSpec {
    /// Regexes over the command line (argv joined by spaces).
    #[serde(default)]
    pub argv_patterns: Vec<String>,
    /// Package runners (`npx`, `uvx`, …): with a tiny environment they mark a suspect.
    #[serde(default)]
    pub package_runners: Vec<String>,
    /// "Tiny environment" threshold: SDK clients pass ≤ 6 variables to servers.
    #[serde(default = "default_tiny_env")]
    pub tiny_env_max: u32,
}

fn default_tiny_env() -> u32 {
    6
}

#[derive(Clone)]
pub struct Heuristics {
    argv: RegexSet,
    runners: Vec<String>,
    tiny_env_max: u32,
}

/// Why a process is suspected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Suspicion {
    ArgvPattern(String),
    RunnerWithTinyEnv(String),
}

impl Suspicion {
    pub fn describe(&self) -> String {
        match self {
            Self::ArgvPattern(p) => format!("argv matches launch pattern {p:?}"),
            Self::RunnerWithTinyEnv(r) => format!("package runner {r} started with a tiny environment"),
        }
    }
}

impl Heuristics {
    pub fn from_spec(spec: &LaunchHeuristicsSpec) -> Result<Self> {
        Ok(Self {
            argv: RegexSet::new(&spec.argv_patterns).context("launch_heuristics.argv_patterns")?,
            runners: spec.package_runners.clone(),
            tiny_env_max: spec.tiny_env_max,
        })
    }

    pub fn none() -> Self {
        Self {
            argv: RegexSet::empty(),
            runners: Vec::new(),
            tiny_env_max: 0,
        }
    }

    pub fn suspect(&self, argv: &[String], envc: Option<u32>) -> Option<Suspicion> {
        let line = argv.join(" ");
        if let Some(i) = self.argv.matches(&line).iter().next() {
            return Some(Suspicion::ArgvPattern(self.argv.patterns()[i].clone()));
        }
        let runner = argv.first().map(|a| a.rsplit('/').next().unwrap_or(a))?;
        if envc.is_some_and(|n| n <= self.tiny_env_max) && self.runners.iter().any(|r| r == runner) {
            return Some(Suspicion::RunnerWithTinyEnv(runner.to_string()));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn h() -> Heuristics {
        Heuristics::from_spec(&LaunchHeuristicsSpec {
            argv_patterns: vec![
                "@modelcontextprotocol/server-".into(),
                r"(^|/)mcp-server-[\w.-]+".into(),
            ],
            package_runners: vec!["npx".into(), "uvx".into()],
            tiny_env_max: 6,
        })
        .unwrap()
    }

    fn v(s: &str) -> Vec<String> {
        s.split(' ').map(str::to_string).collect()
    }

    #[test]
    fn argv_patterns_and_runners() {
        assert!(h()
            .suspect(
                &v("npx -y @modelcontextprotocol/server-filesystem /tmp"),
                Some(30)
            )
            .is_some());
        assert!(h()
            .suspect(&v("/venv/bin/python /venv/bin/mcp-server-time"), None)
            .is_some());
        assert_eq!(
            h().suspect(&v("npx cowsay"), Some(4)),
            Some(Suspicion::RunnerWithTinyEnv("npx".into()))
        );
        assert_eq!(h().suspect(&v("npx cowsay"), Some(40)), None);
        assert_eq!(h().suspect(&v("/bin/ls -l"), Some(4)), None);
    }

    #[test]
    fn bad_patterns_are_errors() {
        let spec = LaunchHeuristicsSpec {
            argv_patterns: vec!["(".into()],
            ..Default::default()
        };
        assert!(Heuristics::from_spec(&spec).is_err());
    }

    #[test]
    fn loads_from_the_repository_rules() {
        let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules.yaml");
        let compiled = crate::rules::load::load_file(&rules).unwrap();
        let h = Heuristics::from_spec(&compiled.launch_heuristics).unwrap();
        assert!(h
            .suspect(&v("npx -y @modelcontextprotocol/server-memory"), None)
            .is_some());
    }
}
