//! `cargo xtask run`: the agent with the repository's rules, events on stdout.

use std::{os::unix::process::CommandExt as _, process::Command};

use anyhow::{bail, Result};

use crate::{build, setup, util};

pub fn run(extra: &[String]) -> Result<()> {
    util::require_root("the agent")?;
    setup::setup()?;
    let bin = build::build_agent()?;
    let rules = util::root().join("rules.yaml");
    let mut cmd = Command::new(bin);
    cmd.arg("run").arg("--rules").arg(rules);
    if !extra
        .iter()
        .any(|a| a == "--output" || a.starts_with("--output="))
    {
        cmd.args(["--output", "jsonl:-"]);
    }
    cmd.args(extra);
    eprintln!("xtask: {cmd:?}");
    // Replace this process so Ctrl-C and SIGTERM reach the agent directly.
    let err = cmd.exec();
    bail!("starting the agent: {err}")
}
