//! Effective configuration: command-line flags > environment (`MCPWATCH_<KEY>`) >
//! config file > defaults, with the source of every value kept for `print-config`.
//!
//! Adding a key is one line per layer:
//! - flag and environment: a field in [`RunArgs`] with `#[arg(long, env = "MCPWATCH_<KEY>")]`
//!   (clap gives flag > env; `tests::every_flag_has_its_env_var` checks the name);
//! - file: the same name in [`FileConfig`];
//! - default and result: one `layers.pick("<key>", …, default)` in [`Config::resolve_from`].

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, Context as _, Result};
use clap::{parser::ValueSource, ArgMatches};
use serde::{Deserialize, Serialize};

use crate::{
    cli::{LogFormat, RunArgs},
    output::{DeliveryConfig, SinkSpec},
};

/// Read when neither `--config` nor `MCPWATCH_CONFIG` names a file and it exists:
/// where the Debian package installs the configuration.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/mcpwatch/config.yaml";

/// The config file. Every key is optional; unknown keys are errors.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub rules: Option<PathBuf>,
    #[serde(default)]
    pub outputs: Vec<String>,
    pub listen: Option<SocketAddr>,
    pub web_config_file: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    pub log_format: Option<LogFormat>,
    pub ringbuf_size: Option<u32>,
    pub payload_ringbuf_size: Option<u32>,
    pub net_ringbuf_size: Option<u32>,
    pub net_report_interval_secs: Option<u64>,
    pub poll_interval_ms: Option<u64>,
    pub max_processes: Option<usize>,
    pub exited_grace_secs: Option<u64>,
    pub inventory_events: Option<bool>,
    pub inventory_snapshot_interval_secs: Option<u64>,
    pub suspect_grace_secs: Option<u64>,
    pub record: Option<PathBuf>,
    /// Spool, throttling and retry settings of the alert delivery.
    #[serde(default)]
    pub delivery: Option<DeliveryConfig>,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub rules: Option<PathBuf>,
    pub outputs: Vec<SinkSpec>,
    pub listen: SocketAddr,
    /// TLS / basic auth for the listener (read and checked at start-up).
    pub web: Option<crate::api::web_config::WebConfig>,
    pub state_dir: PathBuf,
    pub log_format: LogFormat,
    pub ringbuf_size: u32,
    pub payload_ringbuf_size: u32,
    pub net_ringbuf_size: u32,
    pub net_report_interval: Duration,
    pub poll_interval: Duration,
    pub max_processes: usize,
    pub exited_grace: Duration,
    pub delivery: DeliveryConfig,
    /// MCP inventory events to the SIEM sinks by default.
    pub inventory_events: bool,
    /// Inventory snapshots at start and this often (`None`: none; also none when
    /// `inventory_events` is off).
    pub inventory_snapshot_interval: Option<Duration>,
    /// An unconfirmed suspect reaches the SIEM only once it has lived this long.
    pub suspect_grace: Duration,
    /// Write every decoded sensor event to this recording (`mcpwatch replay` reads it).
    pub record: Option<PathBuf>,
    /// Where each value came from, in file-key terms, for `print-config`.
    pub provenance: Provenance,
}

/// Where an effective value came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Source {
    Flag { name: String },
    Env { name: String },
    File { path: PathBuf },
    Default,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Flag { name } => write!(f, "flag {name}"),
            Source::Env { name } => write!(f, "env {name}"),
            Source::File { path } => write!(f, "file {}", path.display()),
            Source::Default => f.write_str("default"),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Setting {
    /// The value as it would be written in the config file (secrets redacted).
    pub value: serde_json::Value,
    pub source: Source,
}

/// The effective configuration in file-key terms, with the source of each value.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Provenance {
    /// The config file read, if any.
    pub config_file: Option<PathBuf>,
    pub settings: BTreeMap<&'static str, Setting>,
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        serde_saphyr::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }
}

/// Picks each value from the first layer that has it and records where it came from.
struct Layers<'a> {
    matches: Option<&'a ArgMatches>,
    file: Option<PathBuf>,
    provenance: Provenance,
}

impl Layers<'_> {
    /// `key` is both the clap argument id (the `RunArgs` field) and the file key.
    fn pick<T: Serialize>(&mut self, key: &'static str, flag: Option<T>, file: Option<T>, default: T) -> T {
        let (value, source) = match (flag, file) {
            (Some(v), _) => (v, self.cli_source(key)),
            (None, Some(v)) => (
                v,
                Source::File {
                    path: self.file.clone().unwrap_or_default(),
                },
            ),
            (None, None) => (default, Source::Default),
        };
        let json = serde_json::to_value(&value).unwrap_or(serde_json::Value::Null);
        self.provenance.settings.insert(
            key,
            Setting {
                value: redact(key, json),
                source,
            },
        );
        value
    }

    /// A value clap handed us came from the command line or the environment.
    fn cli_source(&self, key: &str) -> Source {
        let arg = self.matches.and_then(|m| {
            m.value_source(key)
                .map(|s| (s, crate::cli::env_var_of(key), crate::cli::flag_of(key)))
        });
        match arg {
            Some((ValueSource::EnvVariable, Some(env), _)) => Source::Env { name: env },
            Some((_, _, Some(flag))) => Source::Flag { name: flag },
            _ => Source::Flag {
                name: format!("--{}", key.replace('_', "-")),
            },
        }
    }
}

/// Hides credentials before a value is printed: keys that name a secret, and the
/// user-info part of URLs (`https://user:token@host`).
fn redact(key: &str, value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    const SECRET_WORDS: [&str; 4] = ["token", "password", "secret", "api_key"];
    if SECRET_WORDS.iter().any(|w| key.contains(w)) && !value.is_null() {
        return Value::String("<redacted>".into());
    }
    match value {
        Value::String(s) => Value::String(redact_url_userinfo(&s)),
        Value::Array(a) => Value::Array(a.into_iter().map(|v| redact(key, v)).collect()),
        Value::Object(o) => Value::Object(o.into_iter().map(|(k, v)| (k.clone(), redact(&k, v))).collect()),
        other => other,
    }
}

fn redact_url_userinfo(s: &str) -> String {
    let Some(scheme_end) = s.find("://") else {
        return s.to_string();
    };
    let rest = &s[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{}://<redacted>@{}", &s[..scheme_end], &rest[at + 1..]),
        None => s.to_string(),
    }
}

impl Config {
    /// Resolves without knowing which values came from the environment (every value
    /// clap set is reported as a flag). Prefer [`Config::resolve_from`].
    #[allow(dead_code)] // kept for callers that have no ArgMatches (tests, tools)
    pub fn resolve(args: &RunArgs) -> Result<Self> {
        Self::resolve_from(args, None)
    }

    /// `matches` are the subcommand's, so that sources can tell flags from environment.
    pub fn resolve_from(args: &RunArgs, matches: Option<&ArgMatches>) -> Result<Self> {
        let (file, file_path) = match &args.config {
            Some(p) => (FileConfig::load(p)?, Some(p.clone())),
            None if Path::new(DEFAULT_CONFIG_PATH).exists() => {
                let p = PathBuf::from(DEFAULT_CONFIG_PATH);
                (FileConfig::load(&p)?, Some(p))
            }
            None => (FileConfig::default(), None),
        };
        let mut layers = Layers {
            matches,
            file: file_path.clone(),
            provenance: Provenance {
                config_file: file_path,
                ..Default::default()
            },
        };
        let file_outputs = file
            .outputs
            .iter()
            .map(|s| s.parse::<SinkSpec>().map_err(anyhow::Error::msg))
            .collect::<Result<Vec<_>>>()?;
        let outputs = layers.pick(
            "outputs",
            (!args.outputs.is_empty()).then(|| args.outputs.clone()),
            (!file_outputs.is_empty()).then_some(file_outputs),
            vec!["jsonl:-".parse::<SinkSpec>().map_err(anyhow::Error::msg)?],
        );
        let rules = layers.pick("rules", args.rules.clone().map(Some), file.rules.map(Some), None);
        let listen = layers.pick(
            "listen",
            args.listen,
            file.listen,
            crate::api::DEFAULT_LISTEN.parse().expect("valid default"),
        );
        let web_config_file = layers.pick(
            "web_config_file",
            args.web_config_file.clone().map(Some),
            file.web_config_file.map(Some),
            None,
        );
        let delivery = layers.pick("delivery", None, file.delivery, DeliveryConfig::default());
        let state_dir = layers.pick(
            "state_dir",
            args.state_dir.clone(),
            file.state_dir,
            PathBuf::from("/var/lib/mcpwatch"),
        );
        let log_format = layers.pick("log_format", args.log_format, file.log_format, LogFormat::Text);
        // Exec records carry only the argv bytes in use (~300 B typical): 4 MiB buffers some
        // ten thousand execs.
        let ringbuf_size = layers.pick("ringbuf_size", args.ringbuf_size, file.ringbuf_size, 4 << 20);
        let payload_ringbuf_size = layers.pick(
            "payload_ringbuf_size",
            args.payload_ringbuf_size,
            file.payload_ringbuf_size,
            4 << 20,
        );
        let net_ringbuf_size = layers.pick(
            "net_ringbuf_size",
            args.net_ringbuf_size,
            file.net_ringbuf_size,
            4 << 20,
        );
        let report_secs = layers.pick(
            "net_report_interval_secs",
            args.net_report_interval_secs,
            file.net_report_interval_secs,
            30,
        );
        let poll_ms = layers.pick(
            "poll_interval_ms",
            args.poll_interval_ms,
            file.poll_interval_ms,
            10,
        );
        let max_processes = layers.pick("max_processes", args.max_processes, file.max_processes, 131_072);
        let exited_grace_secs = layers.pick(
            "exited_grace_secs",
            args.exited_grace_secs,
            file.exited_grace_secs,
            30,
        );

        let inventory_events = layers.pick(
            "inventory_events",
            args.inventory_events,
            file.inventory_events,
            true,
        );
        let snapshot_secs = layers.pick(
            "inventory_snapshot_interval_secs",
            args.inventory_snapshot_interval_secs,
            file.inventory_snapshot_interval_secs,
            3600,
        );
        let suspect_grace_secs = layers.pick(
            "suspect_grace_secs",
            args.suspect_grace_secs,
            file.suspect_grace_secs,
            10,
        );

        let record = layers.pick(
            "record",
            args.record.clone().map(Some),
            file.record.map(Some),
            None,
        );

        if ringbuf_size < 4096 || !ringbuf_size.is_power_of_two() {
            bail!("ringbuf_size {ringbuf_size}: must be a power of two of at least 4096 bytes");
        }
        if payload_ringbuf_size < 4096 || !payload_ringbuf_size.is_power_of_two() {
            bail!(
                "payload_ringbuf_size {payload_ringbuf_size}: must be a power of two of at least 4096 bytes"
            );
        }
        if net_ringbuf_size < 4096 || !net_ringbuf_size.is_power_of_two() {
            bail!("net_ringbuf_size {net_ringbuf_size}: must be a power of two of at least 4096 bytes");
        }
        if report_secs == 0 {
            bail!("net_report_interval_secs must be at least 1");
        }
        if !(1..=1000).contains(&poll_ms) {
            bail!("poll_interval_ms {poll_ms}: must be between 1 and 1000");
        }
        Ok(Self {
            rules,
            outputs,
            listen,
            web: web_config_file
                .map(|p| crate::api::web_config::WebConfig::load(&p))
                .transpose()?,
            state_dir,
            log_format,
            ringbuf_size,
            payload_ringbuf_size,
            net_ringbuf_size,
            net_report_interval: Duration::from_secs(report_secs),
            poll_interval: Duration::from_millis(poll_ms),
            max_processes: max_processes.max(1024),
            exited_grace: Duration::from_secs(exited_grace_secs),
            delivery,
            inventory_events,
            inventory_snapshot_interval: (inventory_events && snapshot_secs > 0)
                .then(|| Duration::from_secs(snapshot_secs)),
            suspect_grace: Duration::from_secs(suspect_grace_secs),
            record,
            provenance: layers.provenance,
        })
    }
}

impl Serialize for SinkSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory as _, FromArgMatches as _};

    use super::*;
    use crate::cli::{Cli, Command};

    #[test]
    fn flags_override_file_and_defaults_apply() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(
            &path,
            "listen: 127.0.0.1:1234\npoll_interval_ms: 50\noutputs: [\"jsonl:/tmp/a\"]\n",
        )
        .unwrap();
        let args = RunArgs {
            config: Some(path.clone()),
            poll_interval_ms: Some(5),
            ..Default::default()
        };
        let c = Config::resolve(&args).unwrap();
        assert_eq!(c.listen.port(), 1234);
        assert_eq!(c.poll_interval, Duration::from_millis(5));
        assert_eq!(c.outputs, vec!["jsonl:/tmp/a".parse::<SinkSpec>().unwrap()]);
        assert_eq!(c.ringbuf_size, 4 << 20);
        let s = &c.provenance.settings;
        assert_eq!(s["listen"].source, Source::File { path: path.clone() });
        assert_eq!(s["listen"].value, "127.0.0.1:1234");
        assert_eq!(s["outputs"].value, serde_json::json!(["jsonl:/tmp/a"]));
        assert_eq!(s["ringbuf_size"].source, Source::Default);
        assert!(matches!(s["poll_interval_ms"].source, Source::Flag { .. }));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, "lisen: 1\n").unwrap();
        let args = RunArgs {
            config: Some(path),
            ..Default::default()
        };
        let err = Config::resolve(&args).unwrap_err().to_string();
        assert!(err.contains("lisen"), "{err}");
        let args = RunArgs {
            ringbuf_size: Some(5000),
            ..Default::default()
        };
        assert!(Config::resolve(&args).is_err());
    }

    /// Every flag of `run` (but `--config` itself, which has `MCPWATCH_CONFIG`) has an
    /// environment variable named after its key, and every key has a provenance entry.
    #[test]
    fn every_flag_has_its_env_var_and_a_provenance_entry() {
        let cmd = Cli::command();
        let run = cmd.find_subcommand("run").unwrap();
        let c = Config::resolve(&RunArgs::default()).unwrap();
        for arg in run.get_arguments() {
            let id = arg.get_id().as_str();
            if id == "help" {
                continue;
            }
            let want = format!("MCPWATCH_{}", id.to_uppercase());
            assert_eq!(
                arg.get_env().and_then(|e| e.to_str()),
                Some(want.as_str()),
                "flag {id} needs env = \"{want}\""
            );
            if id != "config" {
                assert!(
                    c.provenance.settings.contains_key(id),
                    "no layers.pick(\"{id}\", …)"
                );
            }
        }
    }

    /// Printed configuration is a valid config file: the keys match `FileConfig`.
    #[test]
    fn printed_keys_are_file_keys() {
        let empty = tempfile::NamedTempFile::new().unwrap();
        let c = Config::resolve(&RunArgs {
            config: Some(empty.path().into()),
            rules: Some("/etc/mcpwatch/rules.yaml".into()),
            ..Default::default()
        })
        .unwrap();
        let yaml = crate::print_config::as_yaml(&c.provenance);
        let back: FileConfig = serde_saphyr::from_str(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        assert_eq!(back.rules.as_deref(), Some(Path::new("/etc/mcpwatch/rules.yaml")));
        assert_eq!(back.outputs, vec!["jsonl:-".to_string()]);
        assert_eq!(back.ringbuf_size, Some(4 << 20));
    }

    /// flag > env > file > default, through the real clap parser. The only test that
    /// sets `MCPWATCH_*` variables (the process environment is shared by tests).
    #[test]
    fn environment_sits_between_flags_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(
            &path,
            "poll_interval_ms: 50\nmax_processes: 5000\nexited_grace_secs: 7\n",
        )
        .unwrap();
        std::env::set_var("MCPWATCH_POLL_INTERVAL_MS", "20");
        std::env::set_var("MCPWATCH_MAX_PROCESSES", "6000");
        std::env::set_var("MCPWATCH_CONFIG", &path);
        let matches = Cli::command()
            .try_get_matches_from(["mcpwatch", "run", "--max-processes", "7000"])
            .unwrap();
        std::env::remove_var("MCPWATCH_POLL_INTERVAL_MS");
        std::env::remove_var("MCPWATCH_MAX_PROCESSES");
        std::env::remove_var("MCPWATCH_CONFIG");
        let Command::Run(args) = Cli::from_arg_matches(&matches).unwrap().command else {
            panic!("not run");
        };
        let sub = matches.subcommand_matches("run");
        let c = Config::resolve_from(&args, sub).unwrap();
        let s = &c.provenance.settings;
        assert_eq!(c.max_processes, 7000);
        assert_eq!(
            s["max_processes"].source,
            Source::Flag {
                name: "--max-processes".into()
            }
        );
        assert_eq!(c.poll_interval, Duration::from_millis(20));
        assert_eq!(
            s["poll_interval_ms"].source,
            Source::Env {
                name: "MCPWATCH_POLL_INTERVAL_MS".into()
            }
        );
        assert_eq!(c.exited_grace, Duration::from_secs(7));
        assert_eq!(s["exited_grace_secs"].source, Source::File { path: path.clone() });
        assert_eq!(c.provenance.config_file.as_deref(), Some(path.as_path()));
        assert_eq!(s["listen"].source, Source::Default);
    }

    #[test]
    fn inventory_stream_and_snapshot_interval_through_the_layers() {
        let c = Config::resolve(&RunArgs::default()).unwrap();
        assert!(c.inventory_events);
        assert_eq!(c.inventory_snapshot_interval, Some(Duration::from_secs(3600)));
        assert_eq!(c.provenance.settings["inventory_events"].source, Source::Default);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(
            &path,
            "inventory_snapshot_interval_secs: 600\ninventory_events: true\n",
        )
        .unwrap();
        let matches = Cli::command()
            .try_get_matches_from([
                "mcpwatch",
                "run",
                "--config",
                path.to_str().unwrap(),
                "--inventory-events",
                "false",
            ])
            .unwrap();
        let Command::Run(args) = Cli::from_arg_matches(&matches).unwrap().command else {
            panic!("not run");
        };
        let c = Config::resolve_from(&args, matches.subcommand_matches("run")).unwrap();
        assert!(!c.inventory_events);
        assert_eq!(c.inventory_snapshot_interval, None, "no inventory, no snapshots");
        let s = &c.provenance.settings;
        assert_eq!(s["inventory_events"].value, false);
        assert_eq!(s["inventory_snapshot_interval_secs"].value, 600);
        assert_eq!(
            s["inventory_snapshot_interval_secs"].source,
            Source::File { path }
        );
        let c = Config::resolve(&RunArgs {
            inventory_snapshot_interval_secs: Some(0),
            ..Default::default()
        })
        .unwrap();
        assert!(c.inventory_events && c.inventory_snapshot_interval.is_none());
    }

    #[test]
    fn secrets_are_redacted() {
        let v = redact(
            "outputs",
            serde_json::json!(["https://splunk:abc123@siem.example/collector", "jsonl:-"]),
        );
        assert_eq!(
            v,
            serde_json::json!(["https://<redacted>@siem.example/collector", "jsonl:-"])
        );
        assert_eq!(
            redact("hec_token", serde_json::json!("abc")),
            serde_json::json!("<redacted>")
        );
        assert_eq!(
            redact("hec_token", serde_json::Value::Null),
            serde_json::Value::Null
        );
    }
}
