//! Who a detected server is: its package (npm or PyPI name and version, or a script
//! and its hash) resolved from argv and the files on disk, and who its host is (the
//! process at the other end of its stdio, or the connecting process for HTTP).

use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::procnet;
use crate::sensor::Channel;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PackageId {
    /// `npm`, `pypi` or `script`.
    pub ecosystem: &'static str,
    pub name: Option<String>,
    pub version: Option<String>,
    /// The file that identified it (package.json, dist-info, or the script).
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

fn basename(p: &str) -> &str {
    p.rsplit('/').next().unwrap_or(p)
}

fn absolute(arg: &str, cwd: Option<&str>) -> Option<PathBuf> {
    let p = Path::new(arg);
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        Path::new(cwd?).join(p)
    };
    std::fs::canonicalize(abs).ok()
}

/// The script a runtime runs: the first argument after the interpreter's own flags.
fn script_arg(argv: &[String]) -> Option<&str> {
    let mut it = argv.iter().skip(1);
    while let Some(a) = it.next() {
        if a == "-m" || a == "-c" {
            return None;
        }
        if a.starts_with('-') {
            // Flags that take a value.
            if matches!(a.as_str(), "-r" | "--require" | "--import" | "-W" | "-X") {
                it.next();
            }
            continue;
        }
        return Some(a);
    }
    None
}

fn module_arg(argv: &[String]) -> Option<&str> {
    argv.iter()
        .position(|a| a == "-m")
        .and_then(|i| argv.get(i + 1))
        .map(String::as_str)
}

/// The interpreter line of a script (`#!/venv/bin/python`, `#!/usr/bin/env node`).
fn shebang(path: &str) -> Option<Vec<String>> {
    use std::io::Read as _;
    let mut head = [0u8; 256];
    let n = std::fs::File::open(path).ok()?.read(&mut head).ok()?;
    let text = std::str::from_utf8(head.get(..n)?.strip_prefix(b"#!")?).ok()?;
    let line = text.lines().next()?;
    let mut words: Vec<String> = line.split_whitespace().map(str::to_string).collect();
    if words.first().is_some_and(|w| basename(w) == "env") {
        words.remove(0);
        words.retain(|w| !w.starts_with('-'));
    }
    (!words.is_empty()).then_some(words)
}

pub fn package_of(argv: &[String], exe: Option<&str>, cwd: Option<&str>) -> Option<PackageId> {
    // A script exec'd directly (npm/pip console scripts): identify it through its
    // interpreter, with the script as the interpreter's first argument.
    if let Some(exe) = exe {
        if let Some(mut interp) = shebang(exe) {
            interp.push(exe.to_string());
            interp.extend(argv.iter().skip(1).cloned());
            let runtime = interp[0].clone();
            return package_of(&interp, Some(&runtime), cwd);
        }
    }
    let runtime = basename(exe.unwrap_or_else(|| argv.first().map(String::as_str).unwrap_or("")));
    if runtime.starts_with("node") || runtime == "bun" || runtime == "deno" {
        let script = absolute(script_arg(argv)?, cwd)?;
        return npm_package(&script).or_else(|| Some(script_id(&script)));
    }
    if runtime.starts_with("python") {
        // A venv's python is a symlink to the base interpreter, so the environment is
        // found from argv[0] and the script's location before the resolved exe.
        let script = script_arg(argv).and_then(|s| absolute(s, cwd));
        let mut prefixes: Vec<PathBuf> = Vec::new();
        if let Some(s) = &script {
            prefixes.extend(s.parent().and_then(Path::parent).map(Path::to_path_buf));
        }
        if let Some(a0) = argv.first().filter(|a| a.starts_with('/')) {
            prefixes.extend(
                Path::new(a0)
                    .parent()
                    .and_then(Path::parent)
                    .map(Path::to_path_buf),
            );
        }
        if let Some(e) = exe {
            prefixes.extend(
                Path::new(e)
                    .parent()
                    .and_then(Path::parent)
                    .map(Path::to_path_buf),
            );
        }
        let site: Vec<PathBuf> = prefixes.iter().flat_map(|p| site_packages(p)).collect();
        if let Some(module) = module_arg(argv) {
            let top = module.split('.').next().unwrap_or(module);
            return site.iter().find_map(|s| dist_for_module(s, top));
        }
        let script = script?;
        let entry = basename(&script.to_string_lossy()).to_string();
        return site
            .iter()
            .find_map(|s| dist_for_console_script(s, &entry))
            .or_else(|| Some(script_id(&script)));
    }
    None
}

pub fn live_cwd(pid: u32) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/cwd"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

fn script_id(path: &Path) -> PackageId {
    let sha256 = std::fs::read(path).ok().map(|b| hex::encode(Sha256::digest(&b)));
    PackageId {
        ecosystem: "script",
        name: path.file_stem().map(|s| s.to_string_lossy().into_owned()),
        version: None,
        path: path.display().to_string(),
        sha256,
    }
}

/// The nearest `package.json` with a name, walking up from the script.
fn npm_package(script: &Path) -> Option<PackageId> {
    for dir in script.ancestors().skip(1).take(16) {
        let manifest = dir.join("package.json");
        let Ok(text) = std::fs::read_to_string(&manifest) else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        if let Some(name) = v.get("name").and_then(|n| n.as_str()) {
            return Some(PackageId {
                ecosystem: "npm",
                name: Some(name.to_string()),
                version: v.get("version").and_then(|n| n.as_str()).map(str::to_string),
                path: manifest.display().to_string(),
                sha256: None,
            });
        }
    }
    None
}

/// `site-packages` directories under an environment prefix
/// (`<prefix>/lib/python3.*/site-packages`).
fn site_packages(prefix: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for lib in ["lib", "lib64"] {
        let Ok(entries) = std::fs::read_dir(prefix.join(lib)) else {
            continue;
        };
        for e in entries.flatten() {
            let sp = e.path().join("site-packages");
            if e.file_name().to_string_lossy().starts_with("python") && sp.is_dir() {
                out.push(sp);
            }
        }
    }
    out
}

fn dist_infos(site: &Path) -> impl Iterator<Item = PathBuf> {
    std::fs::read_dir(site)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "dist-info"))
}

fn from_metadata(dist: &Path) -> Option<PackageId> {
    let meta = std::fs::read_to_string(dist.join("METADATA")).ok()?;
    let field = |k: &str| {
        meta.lines()
            .find_map(|l| l.strip_prefix(k))
            .map(|v| v.trim().to_string())
    };
    Some(PackageId {
        ecosystem: "pypi",
        name: field("Name:"),
        version: field("Version:"),
        path: dist.display().to_string(),
        sha256: None,
    })
}

fn dist_for_console_script(site: &Path, script: &str) -> Option<PackageId> {
    dist_infos(site).find_map(|d| {
        let eps = std::fs::read_to_string(d.join("entry_points.txt")).ok()?;
        let declares = eps
            .lines()
            .filter_map(|l| l.split_once('='))
            .any(|(name, _)| name.trim() == script);
        if declares {
            from_metadata(&d)
        } else {
            None
        }
    })
}

fn dist_for_module(site: &Path, top: &str) -> Option<PackageId> {
    dist_infos(site).find_map(|d| {
        let names = std::fs::read_to_string(d.join("top_level.txt")).unwrap_or_default();
        let record = std::fs::read_to_string(d.join("RECORD")).unwrap_or_default();
        let owns = names.lines().any(|l| l.trim() == top)
            || record
                .lines()
                .any(|l| l.starts_with(&format!("{top}/")) || l.starts_with(&format!("{top}.py,")));
        if owns {
            from_metadata(&d)
        } else {
            None
        }
    })
}

/// The host of a stdio server: among its ancestors (nearest first), the one at the
/// other end of the channel the request arrived on. For a pipe, the process holding
/// the same pipe for writing; for a socketpair, the first ancestor that does not hold
/// the server's own end (launchers like `npx` or `sh -c` inherit it).
pub fn stdio_host(channel: Channel, request_inode: u64, ancestors: &[u32]) -> Option<u32> {
    match channel {
        Channel::Pipe => {
            let target = procnet::pipe_target(request_inode);
            ancestors.iter().copied().find(|pid| {
                procnet::open_files(*pid)
                    .iter()
                    .any(|f| f.target == target && f.writable)
            })
        }
        Channel::Unix => {
            let target = procnet::socket_target(request_inode);
            ancestors.iter().copied().find(|pid| {
                let files = procnet::open_files(*pid);
                !files.is_empty() && !files.iter().any(|f| f.target == target)
            })
        }
        Channel::Tcp => None,
    }
}

/// The client of an HTTP server connection: the local process holding the other end
/// of the TCP connection, or its remote address if it is not local.
pub fn http_peer(
    server_socket_inode: u64,
) -> (
    Option<u32>,
    Option<std::net::SocketAddr>,
    Option<std::net::SocketAddr>,
) {
    let sockets = procnet::tcp_sockets();
    let Some(server) = sockets.iter().find(|s| s.inode == server_socket_inode) else {
        return (None, None, None);
    };
    let client = sockets
        .iter()
        .find(|s| s.local == server.remote && s.remote == server.local)
        .and_then(|s| procnet::holder_of(&procnet::socket_target(s.inode)));
    (client, Some(server.local), Some(server.remote))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npm_package_from_a_script_inside_node_modules() {
        let dir = tempfile::tempdir().unwrap();
        let pkg = dir.path().join("node_modules/@scope/server-x");
        std::fs::create_dir_all(pkg.join("dist")).unwrap();
        std::fs::write(
            pkg.join("package.json"),
            r#"{"name":"@scope/server-x","version":"1.2.3"}"#,
        )
        .unwrap();
        std::fs::write(pkg.join("dist/index.js"), "//").unwrap();
        let argv = vec![
            "node".to_string(),
            "--enable-source-maps".into(),
            "dist/index.js".into(),
            "/data".into(),
        ];
        let id = package_of(&argv, Some("/usr/bin/node"), Some(pkg.to_str().unwrap())).unwrap();
        assert_eq!(
            (id.ecosystem, id.name.as_deref(), id.version.as_deref()),
            ("npm", Some("@scope/server-x"), Some("1.2.3"))
        );
    }

    #[test]
    fn pypi_package_from_a_console_script_and_from_dash_m() {
        let dir = tempfile::tempdir().unwrap();
        let venv = dir.path();
        let site = venv.join("lib/python3.11/site-packages");
        let dist = site.join("mcp_server_time-2026.10.19.dist-info");
        std::fs::create_dir_all(&dist).unwrap();
        std::fs::create_dir_all(venv.join("bin")).unwrap();
        std::fs::write(
            dist.join("METADATA"),
            "Metadata-Version: 2.4\nName: mcp-server-time\nVersion: 2026.10.19\n",
        )
        .unwrap();
        std::fs::write(
            dist.join("entry_points.txt"),
            "[console_scripts]\nmcp-server-time = mcp_server_time:main\n",
        )
        .unwrap();
        std::fs::write(dist.join("RECORD"), "mcp_server_time/__init__.py,sha256=x,1\n").unwrap();
        std::fs::write(venv.join("bin/mcp-server-time"), "#!python").unwrap();
        let python = venv.join("bin/python").display().to_string();
        let script = venv.join("bin/mcp-server-time").display().to_string();
        let id = package_of(&[python.clone(), script], Some(&python), None).unwrap();
        assert_eq!(
            (id.ecosystem, id.name.as_deref(), id.version.as_deref()),
            ("pypi", Some("mcp-server-time"), Some("2026.10.19"))
        );
        let id = package_of(
            &[python.clone(), "-m".into(), "mcp_server_time".into()],
            Some(&python),
            None,
        )
        .unwrap();
        assert_eq!(id.name.as_deref(), Some("mcp-server-time"));
    }

    #[test]
    fn plain_script_is_identified_by_path_and_hash() {
        let dir = tempfile::tempdir().unwrap();
        let s = dir.path().join("server.py");
        std::fs::write(&s, "print(1)\n").unwrap();
        let id = package_of(
            &["python3".into(), s.display().to_string()],
            Some("/usr/bin/python3.11"),
            None,
        )
        .unwrap();
        assert_eq!(id.ecosystem, "script");
        assert_eq!(id.name.as_deref(), Some("server"));
        assert_eq!(id.sha256.as_deref().map(str::len), Some(64));
    }

    #[test]
    fn pipe_host_is_the_ancestor_holding_the_write_end() {
        // This test process holds both ends of a fresh pipe: it is "the host".
        let (r, w) = nix::unistd::pipe().unwrap();
        let target =
            std::fs::read_link(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&r))).unwrap();
        let inode: u64 = target
            .to_string_lossy()
            .trim_start_matches("pipe:[")
            .trim_end_matches(']')
            .parse()
            .unwrap();
        let me = std::process::id();
        assert_eq!(stdio_host(Channel::Pipe, inode, &[1, me]), Some(me));
        drop(w);
        assert_eq!(stdio_host(Channel::Pipe, inode, &[me]), None, "no write end left");
    }
}
