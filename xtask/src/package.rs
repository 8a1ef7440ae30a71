//! `cargo xtask package deb`, and the packaging tools the tests use: cargo-deb, and a
//! Python venv with kubernetes-validate for the Kubernetes manifests.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};

use crate::{
    build, setup,
    util::{output, root, run, succeeds},
};

/// cargo-deb release known to build the package (systemd unit scripts included).
const CARGO_DEB_VERSION: &str = "3.8.0";
/// kubernetes-validate ships the Kubernetes schemas it validates against, so it works
/// offline; its version is the newest Kubernetes version it knows.
const KUBERNETES_VALIDATE_VERSION: &str = "1.37.0";

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Kind {
    /// A Debian package (target/debian/mcpwatch_VERSION-1_ARCH.deb).
    Deb,
}

pub fn package(kind: Kind) -> Result<PathBuf> {
    match kind {
        Kind::Deb => {
            setup::build_tools()?;
            ensure_cargo_deb()?;
            build::build_agent()?;
            deb()
        }
    }
}

/// Builds the .deb from the release binary already built; returns its path.
pub fn deb() -> Result<PathBuf> {
    let out = output(Command::new("cargo").current_dir(root()).args([
        "deb",
        "-p",
        "mcpwatch",
        "--no-build",
        "--strip",
    ]))
    .context("cargo deb")?;
    let path = out
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.ends_with(".deb"))
        .map(PathBuf::from)
        .with_context(|| format!("cargo deb did not print the package path: {out}"))?;
    eprintln!("xtask: built {}", path.display());
    Ok(path)
}

fn cargo_deb_ok() -> bool {
    output(Command::new("cargo").args(["deb", "--version"])).is_ok_and(|v| v.contains(CARGO_DEB_VERSION))
}

pub fn ensure_cargo_deb() -> Result<()> {
    if cargo_deb_ok() {
        return Ok(());
    }
    eprintln!("xtask: installing cargo-deb {CARGO_DEB_VERSION} (about 3 minutes)");
    run(Command::new("cargo").args(["install", "cargo-deb", "--locked", "--version", CARGO_DEB_VERSION]))
        .context("installing cargo-deb (builds the Debian package)")?;
    if !cargo_deb_ok() {
        bail!("cargo-deb {CARGO_DEB_VERSION} was installed but `cargo deb --version` does not report it");
    }
    Ok(())
}

/// The venv holding kubernetes-validate (under target/, rebuilt if missing).
pub fn k8s_venv() -> PathBuf {
    build::agent_binary()
        .parent()
        .and_then(Path::parent)
        .map(|t| t.join("xtask-venv"))
        .expect("target dir")
}

pub fn kubernetes_validate_bin() -> PathBuf {
    k8s_venv().join("bin").join("kubernetes-validate")
}

pub fn ensure_kubernetes_validate() -> Result<()> {
    let bin = kubernetes_validate_bin();
    let pip = k8s_venv().join("bin").join("pip");
    let installed = output(Command::new(&pip).args(["show", "kubernetes-validate"])).is_ok_and(|s| {
        s.lines()
            .any(|l| l == format!("Version: {KUBERNETES_VALIDATE_VERSION}"))
    });
    if installed && bin.exists() {
        return Ok(());
    }
    eprintln!(
        "xtask: installing kubernetes-validate {KUBERNETES_VALIDATE_VERSION} into {}",
        k8s_venv().display()
    );
    if !pip.exists() {
        run(Command::new("python3").arg("-m").arg("venv").arg(k8s_venv())).context(
            "creating a Python venv (needs python3 with the venv module: apt-get install python3-venv)",
        )?;
    }
    run(Command::new(&pip).args([
        "install",
        "--quiet",
        "--disable-pip-version-check",
        &format!("kubernetes-validate=={KUBERNETES_VALIDATE_VERSION}"),
    ]))
    .context("installing kubernetes-validate from PyPI")?;
    if !succeeds(Command::new(&bin).arg("--version")) {
        bail!("{} does not run after installation", bin.display());
    }
    Ok(())
}

/// Everything the packaging tests need beyond the Debian packages.
pub fn ensure_test_tools() -> Result<()> {
    ensure_cargo_deb()?;
    ensure_kubernetes_validate()
}
