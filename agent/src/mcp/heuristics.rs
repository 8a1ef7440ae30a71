//! Launch heuristics: which freshly started processes look like MCP servers before
//! their first byte. They come from the rule file (`launch_heuristics:`, validated by
//! `rules::load`), not code. Each pattern is matched against one part of what the
//! process runs (`launch::subject`: its program, the script or module an interpreter
//! runs, the package a runner starts, the image of `docker run`), never against every
//! argument, so tools that copy, search, install or edit such files are not suspects,
//! and wrappers (`timeout`, `env`, `sudo`, `sh -c`, …) are not either: the command
//! they start is judged on its own exec. A match makes the process "suspected" and
//! gives it a capture budget until the wire confirms (or not).

use anyhow::{Context as _, Result};
use regex::Regex;
use serde::Deserialize;

use super::launch::{self, Position, Subject};

/// One launch pattern: a regex and the parts of a launch it applies to.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct LaunchPattern {
    pub regex: String,
    pub on: Vec<Position>,
}

/// The `launch_heuristics:` section of rules.yaml, validated.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LaunchHeuristicsSpec {
    #[serde(default)]
    pub patterns: Vec<LaunchPattern>,
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
    patterns: Vec<(Regex, Vec<Position>)>,
    runners: Vec<String>,
    tiny_env_max: u32,
}

/// Why a process is suspected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Suspicion {
    /// A pattern matched this part of the launch.
    Pattern {
        pattern: String,
        position: Position,
        value: String,
    },
    RunnerWithTinyEnv(String),
}

impl Suspicion {
    pub fn describe(&self) -> String {
        match self {
            Self::Pattern {
                pattern,
                position,
                value,
            } => format!("{} {value:?} matches launch pattern {pattern:?}", position.name()),
            Self::RunnerWithTinyEnv(r) => format!("package runner {r} started with a tiny environment"),
        }
    }
}

impl Heuristics {
    pub fn from_spec(spec: &LaunchHeuristicsSpec) -> Result<Self> {
        let patterns = spec
            .patterns
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let re = Regex::new(&p.regex).with_context(|| format!("launch_heuristics.patterns[{i}]"))?;
                Ok((re, p.on.clone()))
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            patterns,
            runners: spec.package_runners.clone(),
            tiny_env_max: spec.tiny_env_max,
        })
    }

    pub fn none() -> Self {
        Self {
            patterns: Vec::new(),
            runners: Vec::new(),
            tiny_env_max: 0,
        }
    }

    pub fn suspect(&self, argv: &[String], envc: Option<u32>) -> Option<Suspicion> {
        let subject = launch::subject(argv);
        if subject.wrapped {
            return None;
        }
        self.judge(&subject, envc)
    }

    fn judge(&self, subject: &Subject, envc: Option<u32>) -> Option<Suspicion> {
        for (position, value) in subject.parts() {
            for (re, on) in &self.patterns {
                if on.contains(&position) && re.is_match(value) {
                    return Some(Suspicion::Pattern {
                        pattern: re.as_str().to_string(),
                        position,
                        value: value.to_string(),
                    });
                }
            }
        }
        let runner = subject.runner.as_deref()?;
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

    /// The shipped rules' heuristics.
    fn shipped() -> Heuristics {
        let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules.yaml");
        let compiled = crate::rules::load::load_file(&rules).unwrap();
        Heuristics::from_spec(&compiled.launch_heuristics).unwrap()
    }

    fn v(s: &str) -> Vec<String> {
        s.split(' ').map(str::to_string).collect()
    }

    /// Commands people run on packages and files named like MCP servers: none is one.
    pub const ORDINARY: &[&str] = &[
        "cp /venv/bin/mcp-server-time /tmp/mcp-server-time",
        "timeout 40 node client.mjs node /x/node_modules/@modelcontextprotocol/server-sequential-thinking/dist/index.js",
        "grep -r @modelcontextprotocol/server- .",
        "/usr/bin/python3 /venv/bin/pip install mcp-server-fetch",
        "/usr/bin/python3 /venv/bin/pip download mcp-server-fetch",
        "/usr/bin/env node /usr/bin/npm view @modelcontextprotocol/server-github",
        "node /usr/bin/npm pack @modelcontextprotocol/server-github",
        "node /usr/bin/npm install @modelcontextprotocol/server-memory",
        "vim mcp-server.py",
        "git log -- mcp-server-x/",
        "less /x/mcp-server-fetch/README.md",
        "cat /venv/bin/mcp-server-time",
        "rg mcp-server-fetch",
        "find / -name mcp-server-*",
        "tar czf mcp-server-x.tgz mcp-server-x",
        "rsync -a mcp-server-x/ /backup/mcp-server-x/",
        "python3 -m py_compile /x/mcp-server-x/server.py",
        "python3 -m pip install mcp-server-fetch",
        "code /x/mcp-server-x",
        "nano /x/github-mcp-server/config.json",
        "ls -l /venv/bin/mcp-server-time",
        "head -c 100 /x/node_modules/@modelcontextprotocol/server-memory/dist/index.js",
        "uv pip install mcp-server-fetch",
        "/usr/bin/python3 /usr/bin/pipx install mcp-server-fetch",
        "docker pull mcp/github",
        "docker image rm mcp/github",
        "sha256sum /venv/bin/mcp-server-time",
        "chmod +x mcp-server-x.sh",
        "mv mcp-server-x mcp-server-y",
        "file /usr/local/bin/github-mcp-server",
    ];

    #[test]
    fn ordinary_commands_naming_servers_are_not_suspects() {
        let h = shipped();
        assert!(ORDINARY.len() >= 20);
        for line in ORDINARY {
            // With a tiny environment too: these are not runners starting a package.
            assert_eq!(h.suspect(&v(line), Some(3)), None, "{line}");
        }
    }

    #[test]
    fn servers_are_suspects_by_what_they_run() {
        let h = shipped();
        for (line, position) in [
            ("node /usr/bin/npx -y @modelcontextprotocol/server-filesystem /tmp", Position::Package),
            (
                "node /root/.npm/_npx/1/node_modules/@modelcontextprotocol/server-filesystem/dist/index.js /tmp",
                Position::Script,
            ),
            ("/venv/bin/python /venv/bin/mcp-server-time", Position::Script),
            ("/usr/bin/python3 -m mcp_server_fetch", Position::Module),
            ("/root/.local/bin/uv tool run mcp-server-fetch", Position::Package),
            ("/usr/local/bin/github-mcp-server stdio", Position::Program),
            ("docker run -i --rm -e GITHUB_TOKEN mcp/github", Position::Image),
            ("/usr/bin/python3 /venv/bin/mcp run server.py", Position::Subcommand),
            ("docker mcp gateway run", Position::Subcommand),
            ("node /usr/bin/npx -y mcp-remote https://example.com/mcp", Position::Package),
        ] {
            match h.suspect(&v(line), Some(40)) {
                Some(Suspicion::Pattern { position: p, .. }) => assert_eq!(p, position, "{line}"),
                other => panic!("{line}: {other:?}"),
            }
        }
    }

    #[test]
    fn wrappers_are_not_suspects_their_command_is() {
        let h = shipped();
        for line in [
            "timeout 40 /venv/bin/python /venv/bin/mcp-server-time",
            "env FOO=1 /venv/bin/python /venv/bin/mcp-server-time",
            "nice -n 5 /venv/bin/python /venv/bin/mcp-server-time",
            "sudo -u dev /venv/bin/python /venv/bin/mcp-server-time",
            "setsid /venv/bin/python /venv/bin/mcp-server-time",
            "systemd-run --user --scope /venv/bin/python /venv/bin/mcp-server-time",
        ] {
            assert_eq!(h.suspect(&v(line), Some(4)), None, "{line}");
        }
        let sh = vec![
            "/bin/sh".to_string(),
            "-c".into(),
            "/venv/bin/mcp-server-time".into(),
        ];
        assert_eq!(h.suspect(&sh, Some(4)), None);
        assert!(h
            .suspect(&v("/venv/bin/python /venv/bin/mcp-server-time"), None)
            .is_some());
    }

    #[test]
    fn runners_with_a_tiny_environment() {
        let h = shipped();
        assert_eq!(
            h.suspect(&v("node /usr/bin/npx cowsay"), Some(4)),
            Some(Suspicion::RunnerWithTinyEnv("npx".into()))
        );
        assert_eq!(h.suspect(&v("node /usr/bin/npx cowsay"), Some(40)), None);
        assert_eq!(h.suspect(&v("/bin/ls -l"), Some(4)), None);
    }

    #[test]
    fn patterns_apply_only_where_they_say() {
        let h = Heuristics::from_spec(&LaunchHeuristicsSpec {
            patterns: vec![LaunchPattern {
                regex: "weather".into(),
                on: vec![Position::Package],
            }],
            ..Default::default()
        })
        .unwrap();
        assert!(h.suspect(&v("node /usr/bin/npx weather-server"), None).is_some());
        assert_eq!(h.suspect(&v("node /x/weather/index.js"), None), None);
    }

    #[test]
    fn bad_patterns_are_errors() {
        let spec = LaunchHeuristicsSpec {
            patterns: vec![LaunchPattern {
                regex: "(".into(),
                on: Position::NAMES.to_vec(),
            }],
            ..Default::default()
        };
        assert!(Heuristics::from_spec(&spec).is_err());
    }
}
