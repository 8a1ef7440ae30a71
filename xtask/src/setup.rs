//! `cargo xtask setup`: the dated nightly with rust-src, bpf-linker linked against that
//! nightly's own LLVM, the Debian packages the tests use, tracefs and bpffs.
//! Idempotent: every step checks first and does nothing when already satisfied.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
    time::Instant,
};

use anyhow::{bail, Context as _, Result};

use crate::util::{is_root, output, run, succeeds};

/// The nightly that builds the eBPF crate; keep in step with agent/build.rs.
pub const EBPF_TOOLCHAIN: &str = "nightly-2026-05-19";
/// bpf-linker release known to work with that nightly's LLVM 22.
const BPF_LINKER_VERSION: &str = "0.13.0";
const BPF_LINKER_LLVM_FEATURE: &str = "llvm-22";

/// Debian packages the tests and benches use, with a command each provides (checked
/// first, so a second run does not even call dpkg).
const DEBIAN_PACKAGES: &[(&str, &str)] = &[
    ("iproute2", "ip"),
    ("procps", "pgrep"),
    ("gcc", "gcc"),
    ("bpftool", "bpftool"),
    // Network tests: a DNS server inside a test namespace, and a real HTTP client.
    ("dnsmasq-base", "dnsmasq"),
    ("curl", "curl"),
    // Packaging tests: lintian checks the .deb, setpriv runs the agent with reduced
    // capabilities, strace lists the syscalls it makes (the unit's filter).
    ("lintian", "lintian"),
    ("util-linux", "setpriv"),
    ("strace", "strace"),
    // SIEM delivery tests: a real syslog receiver (TCP and TLS) and a real Prometheus.
    ("rsyslog", "rsyslogd"),
    ("rsyslog-openssl", "dpkg:rsyslog-openssl"),
    ("prometheus", "promtool"),
];

pub fn setup() -> Result<()> {
    static DONE: OnceLock<()> = OnceLock::new();
    if DONE.get().is_some() {
        return Ok(());
    }
    let t0 = Instant::now();
    build_tools()?;
    if is_root() {
        ensure_debian_packages()?;
        ensure_mounts()?;
        crate::pyenv::ensure_venv()?;
    } else {
        eprintln!("xtask: not root: skipping Debian packages and tracefs/bpffs mounts (needed to run, not to build)");
    }
    eprintln!("xtask: setup complete in {:.1} s", t0.elapsed().as_secs_f64());
    let _ = DONE.set(());
    Ok(())
}

/// What building the agent needs (no root, no mounts): also used by `package` and
/// container image builds.
pub fn build_tools() -> Result<()> {
    ensure_toolchain()?;
    ensure_bpf_linker()
}

fn ensure_toolchain() -> Result<()> {
    if !succeeds(Command::new("rustup").arg("--version")) {
        bail!("rustup not found: install it from your distribution or rustup.rs, then rerun `cargo xtask setup`");
    }
    let installed = succeeds(Command::new("rustup").args(["run", EBPF_TOOLCHAIN, "rustc", "--version"]));
    if !installed {
        eprintln!("xtask: installing {EBPF_TOOLCHAIN} (builds the eBPF programs)");
        run(Command::new("rustup").args([
            "toolchain", "install", EBPF_TOOLCHAIN, "--profile", "minimal", "--component", "rust-src",
        ]))
        .with_context(|| format!("installing toolchain {EBPF_TOOLCHAIN}; install it by hand with: rustup toolchain install {EBPF_TOOLCHAIN} --profile minimal --component rust-src"))?;
    }
    let components = output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        EBPF_TOOLCHAIN,
    ]))?;
    if !components.lines().any(|l| l.starts_with("rust-src")) {
        eprintln!("xtask: adding rust-src to {EBPF_TOOLCHAIN}");
        run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", EBPF_TOOLCHAIN]))
            .context("adding rust-src (needed for -Z build-std=core)")?;
    }
    Ok(())
}

fn cargo_home() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cargo")
        })
}

/// The nightly's own shared LLVM (`lib/libLLVM.so.22.1-rust-…`).
fn toolchain_llvm() -> Result<PathBuf> {
    let sysroot =
        output(Command::new("rustup").args(["run", EBPF_TOOLCHAIN, "rustc", "--print", "sysroot"]))?;
    let lib = Path::new(sysroot.trim()).join("lib");
    std::fs::read_dir(&lib)
        .with_context(|| format!("reading {}", lib.display()))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libLLVM.so."))
        })
        .with_context(|| {
            format!(
                "no libLLVM.so.* in {}: is {EBPF_TOOLCHAIN} complete?",
                lib.display()
            )
        })
}

/// A prefix whose lib/ holds `libLLVM.so` and the library's own name, both pointing
/// at the nightly's LLVM. bpf-linker is built against it and keeps it as its runpath,
/// so the prefix must outlive the build: it lives under CARGO_HOME.
fn llvm_prefix(llvm: &Path) -> Result<PathBuf> {
    let prefix = cargo_home()
        .join("mcpwatch")
        .join(format!("llvm-{EBPF_TOOLCHAIN}"));
    let lib = prefix.join("lib");
    std::fs::create_dir_all(&lib).with_context(|| format!("creating {}", lib.display()))?;
    let own_name = llvm.file_name().context("LLVM library name")?;
    for name in [std::ffi::OsStr::new("libLLVM.so"), own_name] {
        let link = lib.join(name);
        if std::fs::read_link(&link).ok().as_deref() != Some(llvm) {
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(llvm, &link).with_context(|| format!("linking {}", link.display()))?;
        }
    }
    Ok(prefix)
}

fn bpf_linker_path() -> PathBuf {
    cargo_home().join("bin").join("bpf-linker")
}

/// bpf-linker is usable when it runs and resolves libLLVM inside our prefix.
fn bpf_linker_ok(prefix: &Path) -> bool {
    let bin = bpf_linker_path();
    if !succeeds(Command::new(&bin).arg("--version")) {
        return false;
    }
    let Ok(ldd) = output(Command::new("ldd").arg(&bin)) else {
        return false;
    };
    ldd.lines()
        .filter(|l| l.contains("libLLVM"))
        .all(|l| l.contains(&*prefix.to_string_lossy()) && !l.contains("not found"))
        && ldd.contains("libLLVM")
}

fn ensure_bpf_linker() -> Result<()> {
    let llvm = toolchain_llvm()?;
    let prefix = llvm_prefix(&llvm)?;
    if bpf_linker_ok(&prefix) {
        return Ok(());
    }
    eprintln!(
        "xtask: building bpf-linker {BPF_LINKER_VERSION} against {} (about 90 s)",
        llvm.display()
    );
    run(Command::new("cargo")
        .args([
            "install",
            "bpf-linker",
            "--force",
            "--version",
            BPF_LINKER_VERSION,
            "--no-default-features",
            "--features",
            BPF_LINKER_LLVM_FEATURE,
        ])
        .env("LLVM_PREFIX", &prefix))
    .context("installing bpf-linker; it needs the nightly's LLVM (see README, 'Toolchain')")?;
    if !bpf_linker_ok(&prefix) {
        bail!(
            "bpf-linker was installed but does not load {}: check `ldd {}`",
            llvm.display(),
            bpf_linker_path().display()
        );
    }
    Ok(())
}

fn ensure_debian_packages() -> Result<()> {
    ensure_packages(DEBIAN_PACKAGES)
}

/// Installs those of `packages` (name, command it provides) whose command is missing.
pub fn ensure_packages(packages: &[(&str, &str)]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .filter(|(_, bin)| match bin.strip_prefix("dpkg:") {
            // Packages without a command of their own (plugins) are asked of dpkg.
            Some(pkg) => !output(Command::new("dpkg-query").args(["-W", "-f=${Status}", pkg]))
                .is_ok_and(|s| s.contains("install ok installed")),
            None => !succeeds(Command::new("sh").args(["-c", &format!("command -v {bin}")])),
        })
        .map(|(pkg, _)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !succeeds(Command::new("apt-get").arg("--version")) {
        bail!("missing packages {missing:?} and no apt-get: install them with your package manager");
    }
    eprintln!("xtask: installing Debian packages {missing:?}");
    run(Command::new("apt-get")
        .args(["update", "-qq"])
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
    .with_context(|| format!("installing {missing:?}"))
}

fn mounted(fstype: &str, at: &str) -> bool {
    std::fs::read_to_string("/proc/mounts").is_ok_and(|m| {
        m.lines().any(|l| {
            let mut f = l.split_whitespace();
            let (_, mnt, ty) = (f.next(), f.next(), f.next());
            mnt == Some(at) && ty == Some(fstype)
        })
    })
}

fn ensure_mounts() -> Result<()> {
    for (fstype, at) in [("tracefs", "/sys/kernel/tracing"), ("bpf", "/sys/fs/bpf")] {
        if !mounted(fstype, at) {
            eprintln!("xtask: mounting {fstype} at {at}");
            std::fs::create_dir_all(at).ok();
            run(Command::new("mount").args(["-t", fstype, fstype, at]))
                .with_context(|| format!("mounting {fstype} at {at} (tracepoints need it)"))?;
        }
    }
    Ok(())
}
