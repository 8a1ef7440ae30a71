//! Command line (clap). Flags override the environment (`MCPWATCH_<KEY>`), which
//! overrides the config file, which overrides defaults (see `config.rs`).

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

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the agent: load the eBPF sensors and stream events to the outputs.
    Run(RunArgs),
    /// Print the version.
    Version,
    /// Print the effective configuration and where each value came from.
    PrintConfig(PrintConfigArgs),
    /// Check this host: kernel, BTF, tracefs, bpffs, capabilities, ring buffers, cgroups.
    /// Exits non-zero when the agent cannot run here.
    Doctor(DoctorArgs),
    /// List the MCP servers a running agent has seen.
    Inventory(InventoryArgs),
    /// The audit of MCP calls on this host: the running agent's recent records
    /// (`mcp_request`), filtered; with `--follow`, new ones as they come.
    Audit(AuditArgs),
    /// Replay a recording through state → MCP → rules → output with a rule file: what
    /// would these rules have raised on those events? No root, no eBPF. Exits 65 on a
    /// bad recording, 78 on a bad rule file.
    Replay(ReplayArgs),
    /// Validate a rule file: exit 0 with a summary, or print every error and exit 78.
    CheckRules {
        /// The rule file (YAML).
        file: PathBuf,
    },
}

#[derive(clap::Args, Debug)]
pub struct AuditArgs {
    /// The agent's HTTP listener.
    #[arg(long, default_value = crate::api::DEFAULT_LISTEN, value_name = "ADDR")]
    pub api: SocketAddr,
    /// Keep going: print new records as the agent audits them (Ctrl-C ends).
    #[arg(long, short)]
    pub follow: bool,
    /// Only this server (its name, inventory id or stable uid).
    #[arg(long)]
    pub server: Option<String>,
    /// Only calls of this tool (or reads of this resource, gets of this prompt).
    #[arg(long)]
    pub tool: Option<String>,
    /// Only this method (`tools/call`, `tools/list`, …).
    #[arg(long)]
    pub method: Option<String>,
    /// Only this outcome (`ok`, `tool_error`, `error`, `timeout`, `unanswered`, …).
    #[arg(long)]
    pub outcome: Option<String>,
    /// One JSON record per line instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct InventoryArgs {
    /// The agent's HTTP listener.
    #[arg(long, default_value = crate::api::DEFAULT_LISTEN, value_name = "ADDR")]
    pub api: SocketAddr,
    /// Print the raw JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Under each server, its tool set: the set's digest and each tool's (from its
    /// audited `tools/list` answers).
    #[arg(long)]
    pub tools: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    /// Human-readable text (for print-config: YAML with the source of each value).
    #[default]
    Text,
    Json,
}

#[derive(clap::Args, Debug)]
pub struct PrintConfigArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: ReportFormat,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(clap::Args, Debug)]
pub struct DoctorArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: ReportFormat,
    #[command(flatten)]
    pub run: RunArgs,
}

/// The environment variable of a `run` flag, by argument id (= config key).
pub fn env_var_of(id: &str) -> Option<String> {
    run_arg(id, |a| a.get_env().map(|e| e.to_string_lossy().into_owned()))
}

/// The long flag of a `run` flag, by argument id (= config key).
pub fn flag_of(id: &str) -> Option<String> {
    run_arg(id, |a| a.get_long().map(|l| format!("--{l}")))
}

fn run_arg<T>(id: &str, f: impl Fn(&clap::Arg) -> Option<T>) -> Option<T> {
    use clap::CommandFactory as _;
    let cmd = Cli::command();
    let run = cmd.find_subcommand("run")?;
    let found = run.get_arguments().find(|a| a.get_id() == id).and_then(f);
    found
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(clap::Args, Debug, Default)]
pub struct RunArgs {
    /// Configuration file (YAML) [default: /etc/mcpwatch/config.yaml if it exists];
    /// flags and MCPWATCH_* variables take precedence over it.
    #[arg(long, value_name = "FILE", env = "MCPWATCH_CONFIG")]
    pub config: Option<PathBuf>,
    /// Rule file (YAML).
    #[arg(long, value_name = "FILE", env = "MCPWATCH_RULES")]
    pub rules: Option<PathBuf>,
    /// Where events go, repeatable: `jsonl:-` (stdout), `jsonl:PATH`, or a SIEM sink such
    /// as `syslog+tls://HOST:6514?ca=FILE`, `webhook+https://HOST/PATH?token_file=FILE`,
    /// `hec+https://…`, `elastic+https://…`, `loki+https://…` (see README, "Sinks");
    /// comma-separated in MCPWATCH_OUTPUTS.
    #[arg(
        long = "output",
        value_name = "SINK",
        env = "MCPWATCH_OUTPUTS",
        value_delimiter = ','
    )]
    pub outputs: Vec<SinkSpec>,
    /// HTTP listener for /healthz, /readyz, /metrics and the API [default: 127.0.0.1:9477].
    #[arg(long, value_name = "ADDR", env = "MCPWATCH_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// TLS and basic auth for the listener, in the Prometheus exporter-toolkit web config format.
    #[arg(long, value_name = "FILE", env = "MCPWATCH_WEB_CONFIG_FILE")]
    pub web_config_file: Option<PathBuf>,
    /// Directory for state that survives restarts [default: /var/lib/mcpwatch].
    #[arg(long, value_name = "DIR", env = "MCPWATCH_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Diagnostics format on stderr [default: text].
    #[arg(long, value_enum, env = "MCPWATCH_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Size of the process event ring buffer in bytes (power of two, ≥ 4096) [default: 4194304].
    #[arg(long, value_name = "BYTES", env = "MCPWATCH_RINGBUF_SIZE")]
    pub ringbuf_size: Option<u32>,
    /// Size of the payload (MCP detection) ring buffer in bytes [default: 4194304].
    #[arg(long, value_name = "BYTES", env = "MCPWATCH_PAYLOAD_RINGBUF_SIZE")]
    pub payload_ringbuf_size: Option<u32>,
    /// Size of the network event ring buffer in bytes (power of two, ≥ 4096) [default: 4194304].
    #[arg(long, value_name = "BYTES", env = "MCPWATCH_NET_RINGBUF_SIZE")]
    pub net_ringbuf_size: Option<u32>,
    /// Seconds between byte reports of long connections and datagram flows [default: 30].
    #[arg(long, value_name = "SECS", env = "MCPWATCH_NET_REPORT_INTERVAL_SECS")]
    pub net_report_interval_secs: Option<u64>,
    /// How often the ring buffers are drained when the kernel does not wake us, in ms [default: 10].
    #[arg(long, value_name = "MS", env = "MCPWATCH_POLL_INTERVAL_MS")]
    pub poll_interval_ms: Option<u64>,
    /// Most processes tracked at once [default: 131072].
    #[arg(long, value_name = "N", env = "MCPWATCH_MAX_PROCESSES")]
    pub max_processes: Option<usize>,
    /// How long exited processes stay in the table, in seconds [default: 30].
    #[arg(long, value_name = "SECS", env = "MCPWATCH_EXITED_GRACE_SECS")]
    pub exited_grace_secs: Option<u64>,
    /// Send the MCP inventory (servers appeared, changed, gone, and snapshots) to the
    /// SIEM sinks along with alerts [default: true].
    #[arg(long, value_name = "BOOL", env = "MCPWATCH_INVENTORY_EVENTS")]
    pub inventory_events: Option<bool>,
    /// Seconds between inventory snapshots, also taken once at start; 0: none [default: 3600].
    #[arg(long, value_name = "SECS", env = "MCPWATCH_INVENTORY_SNAPSHOT_INTERVAL_SECS")]
    pub inventory_snapshot_interval_secs: Option<u64>,
    /// How long a suspected MCP server (medium confidence: a known server name in
    /// what it runs) must live, unconfirmed, before it reaches the SIEM as an
    /// inventory record, in seconds [default: 10].
    #[arg(long, value_name = "SECS", env = "MCPWATCH_SUSPECT_GRACE_SECS")]
    pub suspect_grace_secs: Option<u64>,
    /// Record every decoded sensor event to this file (JSON lines, created 0600: payloads
    /// may hold secrets), for `mcpwatch replay`. A recording already there is kept as FILE.1.
    #[arg(long, value_name = "FILE", env = "MCPWATCH_RECORD")]
    pub record: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct ReplayArgs {
    /// A recording made with `mcpwatch run --record FILE`.
    pub file: PathBuf,
    /// The rule file to judge the recorded events with.
    #[arg(long, value_name = "FILE")]
    pub rules: PathBuf,
    /// Where the findings go, as JSON lines: `-` (stdout) or a file.
    #[arg(long, value_name = "-|PATH", default_value = "-")]
    pub output: String,
    /// Write every event the pipeline produces (processes, network, MCP inventory), not
    /// only alerts.
    #[arg(long)]
    pub all_events: bool,
    /// Diagnostics format on stderr.
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
}
