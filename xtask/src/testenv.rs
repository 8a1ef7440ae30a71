//! The test environment `cargo xtask test` builds for itself: a Python venv with the
//! official MCP SDK and real servers from PyPI, and an npm prefix with the official
//! TypeScript SDK and a real server from npm. Versions are pinned; a stamp file makes
//! a second run a no-op.

use std::{path::PathBuf, process::Command};

use anyhow::{Context as _, Result};

use crate::util::{root, run};

const PYPI: &[&str] = &[
    "mcp==2.3.0",
    "mcp-server-time==2026.10.19",
    "mcp-server-git==2026.10.19",
    "mcp-server-fetch==2026.10.24",
    "python-lsp-server==1.15.0",
];
const NPM: &[&str] = &[
    "@modelcontextprotocol/sdk@1.32.2",
    "@modelcontextprotocol/server-filesystem@2026.8.31",
    "@modelcontextprotocol/server-everything@2026.8.31",
    "@modelcontextprotocol/server-memory@2026.8.31",
    "@modelcontextprotocol/server-sequential-thinking@2026.8.31",
];

pub fn dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"));
    target.join("test-env")
}

pub fn ensure() -> Result<PathBuf> {
    let dir = dir();
    let stamp = dir.join("stamp");
    let want = format!("{PYPI:?}\n{NPM:?}\n");
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(want.as_str()) {
        eprintln!(
            "xtask: building the test environment in {} (PyPI: {PYPI:?}; npm: {NPM:?})",
            dir.display()
        );
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("npm"))?;
        run(Command::new("python3").args(["-m", "venv"]).arg(dir.join("venv")))
            .context("creating the Python venv (needs python3 with venv)")?;
        run(Command::new(dir.join("venv/bin/pip"))
            .args(["install", "-q", "--disable-pip-version-check"])
            .args(PYPI))
        .context("installing the Python test packages from PyPI")?;
        std::fs::write(
            dir.join("npm/package.json"),
            "{\"name\":\"mcpwatch-test-env\",\"private\":true}\n",
        )?;
        run(Command::new("npm")
            .current_dir(dir.join("npm"))
            .args(["install", "--no-audit", "--no-fund", "--loglevel=error"])
            .args(NPM))
        .context("installing the npm test packages (needs node and npm)")?;
        std::fs::write(&stamp, want)?;
    }
    // Node resolves the SDK from the script's own location: the TS client lives
    // beside node_modules.
    std::fs::copy(
        root().join("tests/fixtures/ts_client.mjs"),
        dir.join("npm/ts_client.mjs"),
    )?;
    Ok(dir)
}
