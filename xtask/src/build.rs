//! Building the agent: one release binary with the eBPF object embedded.

use std::{path::PathBuf, process::Command};

use anyhow::Result;

use crate::util::{root, run};

pub fn build_agent() -> Result<PathBuf> {
    run(Command::new(env!("CARGO"))
        .current_dir(root())
        .args(["build", "--release", "-p", "mcpwatch"]))?;
    Ok(agent_binary())
}

pub fn agent_binary() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"));
    target.join("release").join("mcpwatch")
}
