//! Effective configuration: command-line flags > config file > defaults.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, Context as _, Result};
use serde::Deserialize;

use crate::{
    cli::{LogFormat, RunArgs},
    output::{DeliveryConfig, SinkSpec},
};

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
    /// Spool, throttling and retry settings of the alert delivery.
    #[serde(default)]
    pub delivery: DeliveryConfig,
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

impl Config {
    pub fn resolve(args: &RunArgs) -> Result<Self> {
        let file = match &args.config {
            Some(p) => FileConfig::load(p)?,
            None => FileConfig::default(),
        };
        let file_outputs = file
            .outputs
            .iter()
            .map(|s| s.parse::<SinkSpec>().map_err(anyhow::Error::msg))
            .collect::<Result<Vec<_>>>()?;
        let outputs = if !args.outputs.is_empty() {
            args.outputs.clone()
        } else if !file_outputs.is_empty() {
            file_outputs
        } else {
            vec!["jsonl:-".parse::<SinkSpec>().map_err(anyhow::Error::msg)?]
        };
        let ringbuf_size = args.ringbuf_size.or(file.ringbuf_size).unwrap_or(8 << 20);
        if ringbuf_size < 4096 || !ringbuf_size.is_power_of_two() {
            bail!("ringbuf_size {ringbuf_size}: must be a power of two of at least 4096 bytes");
        }
        let payload_ringbuf_size = args
            .payload_ringbuf_size
            .or(file.payload_ringbuf_size)
            .unwrap_or(4 << 20);
        if payload_ringbuf_size < 4096 || !payload_ringbuf_size.is_power_of_two() {
            bail!(
                "payload_ringbuf_size {payload_ringbuf_size}: must be a power of two of at least 4096 bytes"
            );
        }
        let net_ringbuf_size = args.net_ringbuf_size.or(file.net_ringbuf_size).unwrap_or(4 << 20);
        if net_ringbuf_size < 4096 || !net_ringbuf_size.is_power_of_two() {
            bail!("net_ringbuf_size {net_ringbuf_size}: must be a power of two of at least 4096 bytes");
        }
        let report_secs = args
            .net_report_interval_secs
            .or(file.net_report_interval_secs)
            .unwrap_or(30);
        if report_secs == 0 {
            bail!("net_report_interval_secs must be at least 1");
        }
        let poll_ms = args.poll_interval_ms.or(file.poll_interval_ms).unwrap_or(10);
        if !(1..=1000).contains(&poll_ms) {
            bail!("poll_interval_ms {poll_ms}: must be between 1 and 1000");
        }
        Ok(Self {
            rules: args.rules.clone().or(file.rules),
            outputs,
            listen: args
                .listen
                .or(file.listen)
                .unwrap_or_else(|| crate::api::DEFAULT_LISTEN.parse().expect("valid default")),
            web: args
                .web_config_file
                .clone()
                .or(file.web_config_file)
                .map(|p| crate::api::web_config::WebConfig::load(&p))
                .transpose()?,
            state_dir: args
                .state_dir
                .clone()
                .or(file.state_dir)
                .unwrap_or_else(|| PathBuf::from("/var/lib/mcpwatch")),
            log_format: args.log_format.or(file.log_format).unwrap_or(LogFormat::Text),
            ringbuf_size,
            payload_ringbuf_size,
            net_ringbuf_size,
            net_report_interval: Duration::from_secs(report_secs),
            poll_interval: Duration::from_millis(poll_ms),
            max_processes: args
                .max_processes
                .or(file.max_processes)
                .unwrap_or(131_072)
                .max(1024),
            exited_grace: Duration::from_secs(
                args.exited_grace_secs.or(file.exited_grace_secs).unwrap_or(30),
            ),
            delivery: file.delivery,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            config: Some(path),
            poll_interval_ms: Some(5),
            ..Default::default()
        };
        let c = Config::resolve(&args).unwrap();
        assert_eq!(c.listen.port(), 1234);
        assert_eq!(c.poll_interval, Duration::from_millis(5));
        assert_eq!(c.outputs, vec!["jsonl:/tmp/a".parse::<SinkSpec>().unwrap()]);
        assert_eq!(c.ringbuf_size, 8 << 20);
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
}
