//! `cargo xtask …`: everything needed to set up, build, run, test, bench and package
//! mcpwatch on a fresh machine.

mod bench;
mod bench_bpf_stats;
mod bench_capacity;
mod bench_delivery;
mod bench_latency;
mod bench_monitor;
mod bench_report;
mod bench_toolcalls;
mod bench_workloads;
mod build;
mod measure;
mod package;
mod pyenv;
mod run;
mod setup;
mod test;
mod testenv;
mod util;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what building and testing need (idempotent; seconds when done before).
    Setup,
    /// Build the agent (release), eBPF programs embedded.
    Build,
    /// Set up, build and run the agent with the repository's rules.yaml; events on stdout.
    Run {
        /// Extra arguments for `mcpwatch run`, e.g. `--output jsonl:/tmp/events.jsonl`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up, build and run every test (unit and end to end).
    Test {
        /// Only tests whose name contains this.
        filter: Option<String>,
    },
    /// Measure overhead side by side (no pass/fail).
    Bench(bench::BenchArgs),
    /// Build a package: `deb` (Debian, with the systemd unit and /etc/mcpwatch).
    Package {
        #[arg(value_enum)]
        kind: package::Kind,
    },
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Setup => setup::setup().and_then(|()| package::ensure_test_tools()),
        Cmd::Build => setup::build_tools().and_then(|()| build::build_agent().map(drop)),
        Cmd::Run { args } => run::run(&args),
        Cmd::Test { filter } => test::test(filter.as_deref()),
        Cmd::Bench(args) => bench::bench(&args),
        Cmd::Package { kind } => package::package(kind).map(drop),
    };
    if let Err(e) = result {
        eprintln!("xtask: {e:#}");
        std::process::exit(1);
    }
}
