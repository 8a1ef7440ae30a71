//! mcpwatch: the agent and its command line. This file only wires the stages; each
//! stage lives in its own module, in data-flow order:
//! `sensor` (kernel → typed events) → `state` (process table, enrichment) → `mcp`
//! (MCP detection) → `rules` (rule evaluation, alerts) → `output`.
//! `api` serves health, metrics and the tables.

mod alert;
mod api;
mod cli;
mod clock;
mod config;
mod events;
mod health_alerts;
mod inventory_cli;
mod mcp;
mod metrics;
mod output;
mod rules;
mod run;
mod sensor;
mod shutdown;
mod state;
mod telemetry;

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match cli.command {
        cli::Command::Version => {
            println!("mcpwatch {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        cli::Command::CheckRules { file } => rules::check_rules_cli(&file),
        cli::Command::Inventory(args) => match inventory_cli::run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("mcpwatch: {e:#}");
                ExitCode::FAILURE
            }
        },
        cli::Command::Run(args) => {
            let config = match config::Config::resolve(&args) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("mcpwatch: configuration error: {e:#}");
                    return ExitCode::from(78); // EX_CONFIG
                }
            };
            telemetry::init(config.log_format);
            let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("mcpwatch: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match rt.block_on(run::run(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("mcpwatch: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
