//! Command line (clap). Flags override the config file, which overrides defaults.

use std::{net::SocketAddr, path::PathBuf};

use clap::{Parser, Subcommand, ValueEnum};

use crate::output::SinkSpec;

#[derive(Parser, Debug)]
#[command(
    name = "mcpwatch",
    version,
    about = "Finds every MCP server on this host from the kernel, and what it talks to"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once at start-up: the size of `RunArgs` does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the agent: load the eBPF sensors and stream events to the outputs.
    Run(RunArgs),
    /// Print the version.
    Version,
    /// List the MCP servers a running agent has seen.
    Inventory(InventoryArgs),
    /// Validate a rule file: exit 0 with a summary, or print every error and exit 78.
    CheckRules {
        /// The rule file (YAML).
        file: PathBuf,
    },
}

#[derive(clap::Args, Debug)]
pub struct InventoryArgs {
    /// The agent's HTTP listener.
    #[arg(long, default_value = crate::api::DEFAULT_LISTEN, value_name = "ADDR")]
    pub api: SocketAddr,
    /// Print the raw JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(clap::Args, Debug, Default)]
pub struct RunArgs {
    /// Configuration file (YAML); flags given here take precedence over it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Rule file (YAML).
    #[arg(long, value_name = "FILE")]
    pub rules: Option<PathBuf>,
    /// Where events go, repeatable: `jsonl:-` (stdout), `jsonl:PATH`, or a SIEM sink such
    /// as `syslog+tls://HOST:6514?ca=FILE`, `webhook+https://HOST/PATH?token_file=FILE`,
    /// `hec+https://…`, `elastic+https://…`, `loki+https://…` (see README, "Sinks").
    #[arg(long = "output", value_name = "SINK")]
    pub outputs: Vec<SinkSpec>,
    /// HTTP listener for /healthz, /readyz, /metrics and the API [default: 127.0.0.1:9477].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// TLS and basic auth for the listener, in the Prometheus exporter-toolkit web config format.
    #[arg(long, value_name = "FILE")]
    pub web_config_file: Option<PathBuf>,
    /// Directory for state that survives restarts [default: /var/lib/mcpwatch].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Diagnostics format on stderr [default: text].
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Size of the process event ring buffer in bytes (power of two, ≥ 4096) [default: 8388608].
    #[arg(long, value_name = "BYTES")]
    pub ringbuf_size: Option<u32>,
    /// Size of the payload (MCP detection) ring buffer in bytes [default: 4194304].
    #[arg(long, value_name = "BYTES")]
    pub payload_ringbuf_size: Option<u32>,
    /// Size of the network event ring buffer in bytes (power of two, ≥ 4096) [default: 4194304].
    #[arg(long, value_name = "BYTES")]
    pub net_ringbuf_size: Option<u32>,
    /// Seconds between byte reports of long connections and datagram flows [default: 30].
    #[arg(long, value_name = "SECS")]
    pub net_report_interval_secs: Option<u64>,
    /// How often the ring buffers are drained when the kernel does not wake us, in ms [default: 10].
    #[arg(long, value_name = "MS")]
    pub poll_interval_ms: Option<u64>,
    /// Most processes tracked at once [default: 131072].
    #[arg(long, value_name = "N")]
    pub max_processes: Option<usize>,
    /// How long exited processes stay in the table, in seconds [default: 30].
    #[arg(long, value_name = "SECS")]
    pub exited_grace_secs: Option<u64>,
}
