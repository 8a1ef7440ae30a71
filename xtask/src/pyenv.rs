//! The Python test env (`.test-env/venv`): third-party OCSF validators from PyPI,
//! pinned, that the agent's unit tests and the end-to-end tests run findings through.

use std::{path::PathBuf, process::Command};

use anyhow::{Context as _, Result};

use crate::util::{root, run, succeeds};

/// Pinned so a new release cannot change what "valid" means under our feet.
const PACKAGES: &[&str] = &["py-ocsf-models==0.10.0", "pydantic-ocsf==3.0.0"];
/// Imports that prove the packages are there.
const PROBE: &str = "import py_ocsf_models.events.findings.detection_finding, ocsf.v1_7_0.events";

/// The venv's python, created and filled when missing.
pub fn ensure_venv() -> Result<PathBuf> {
    let venv = root().join(".test-env").join("venv");
    let python = venv.join("bin").join("python");
    if succeeds(Command::new(&python).args(["-c", PROBE])) {
        return Ok(python);
    }
    eprintln!(
        "xtask: building the Python test env {} ({PACKAGES:?})",
        venv.display()
    );
    if !python.exists() {
        run(Command::new("python3").arg("-m").arg("venv").arg(&venv))
            .context("creating the Python venv (needs python3 with venv/ensurepip)")?;
    }
    run(Command::new(&python)
        .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"])
        .args(PACKAGES))
    .context("installing the OCSF validators from PyPI")?;
    if !succeeds(Command::new(&python).args(["-c", PROBE])) {
        anyhow::bail!("the OCSF validators do not import in {}", venv.display());
    }
    Ok(python)
}
