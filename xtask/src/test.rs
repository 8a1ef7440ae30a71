//! `cargo xtask test`: unit tests of every crate, then the end-to-end tests against
//! the real agent binary and the real kernel (serially: each starts its own agent,
//! and every agent sees every event on the host).

use std::process::Command;

use anyhow::Result;

use crate::{build, setup, testenv, util};

pub fn test(filter: Option<&str>) -> Result<()> {
    util::require_root("the end-to-end tests")?;
    setup::setup()?;
    let bin = build::build_agent()?;
    let env_dir = testenv::ensure()?;
    let ocsf_python = crate::pyenv::ensure_venv()?;
    let cargo = env!("CARGO");

    let mut unit = Command::new(cargo);
    unit.current_dir(util::root()).args([
        "test",
        "--release",
        "-p",
        "mcpwatch",
        "-p",
        "mcpwatch-common",
        "-p",
        "xtask",
    ]);
    unit.env("MCPWATCH_OCSF_PYTHON", &ocsf_python);
    if let Some(f) = filter {
        unit.arg(f);
    }
    util::run(&mut unit)?;

    let mut e2e = Command::new(cargo);
    e2e.current_dir(util::root())
        .args(["test", "--release", "-p", "mcpwatch-e2e"])
        .env("MCPWATCH_BIN", &bin)
        .env("MCPWATCH_REPO", util::root())
        .env("MCPWATCH_TEST_ENV", &env_dir)
        .env("MCPWATCH_OCSF_PYTHON", &ocsf_python);
    if let Some(f) = filter {
        e2e.arg(f);
    }
    e2e.args(["--", "--test-threads=1"]);
    util::run(&mut e2e)
}
