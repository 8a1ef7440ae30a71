//! mcpwatch: the agent and its command line. This file only wires the stages; each
//! stage lives in its own module, in data-flow order:
//! `sensor` (kernel → typed events) → `state` (process table, enrichment) → `mcp`
//! (MCP detection) → `rules` (rule evaluation, alerts) → `output`.
//! `api` serves health, metrics and the tables.

mod alert;
mod alloc;
mod api;
mod audit_cli;
mod cli;
mod clock;
mod config;
mod doctor;
mod events;
mod health_alerts;
mod inventory_cli;
mod k8s;
mod mcp;
mod metrics;
mod output;
mod pipeline;
mod print_config;
mod redact;
mod replay;
mod rules;
mod run;
mod sensor;
mod service;
mod shutdown;
#[cfg(test)]
mod stage_imports_test;
mod state;
mod telemetry;

use std::process::ExitCode;

use clap::{CommandFactory as _, FromArgMatches as _};

/// sysexits EX_CONFIG: the configuration is invalid (systemd does not restart on it).
const EX_CONFIG: u8 = 78;

fn resolve_config(
    args: &cli::RunArgs,
    matches: Option<&clap::ArgMatches>,
) -> Result<config::Config, ExitCode> {
    config::Config::resolve_from(args, matches).map_err(|e| {
        eprintln!("mcpwatch: configuration error: {e:#}");
        ExitCode::from(EX_CONFIG)
    })
}

fn main() -> ExitCode {
    let matches = cli::Cli::command().get_matches();
    let cli = cli::Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let sub = matches.subcommand().map(|(_, m)| m);
    match cli.command {
        cli::Command::Version => {
            println!("mcpwatch {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        cli::Command::CheckRules { file } => rules::check_rules_cli(&file),
        cli::Command::Replay(args) => replay::run_cli(&args),
        cli::Command::Audit(args) => match audit_cli::run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("mcpwatch: {e:#}");
                ExitCode::FAILURE
            }
        },
        cli::Command::Inventory(args) => match inventory_cli::run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("mcpwatch: {e:#}");
                ExitCode::FAILURE
            }
        },
        cli::Command::PrintConfig(args) => {
            let config = match resolve_config(&args.run, sub) {
                Ok(c) => c,
                Err(code) => return code,
            };
            match args.format {
                cli::ReportFormat::Text => print!("{}", print_config::as_yaml(&config.provenance)),
                cli::ReportFormat::Json => println!("{}", print_config::as_json(&config.provenance)),
            }
            ExitCode::SUCCESS
        }
        cli::Command::Doctor(args) => {
            let config = match resolve_config(&args.run, sub) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let checks = doctor::run_checks(&config);
            match args.format {
                cli::ReportFormat::Text => print!("{}", doctor::as_text(&checks)),
                cli::ReportFormat::Json => println!("{}", doctor::as_json(&checks)),
            }
            if doctor::cannot_run(&checks) {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        cli::Command::Run(args) => {
            let config = match resolve_config(&args, sub) {
                Ok(c) => c,
                Err(code) => return code,
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
