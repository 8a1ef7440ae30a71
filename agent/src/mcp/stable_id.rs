//! Stable identity of an MCP server for the fleet inventory in the SIEM.
//!
//! - `server_uid`: the same for the same server on the same host across server and
//!   agent restarts: host id + user + what software it is + how it is launched.
//! - `fingerprint`: the same server on any host (no host, no user, paths reduced), so
//!   the SIEM can count one server across the fleet.
//!
//! Only what is known from the moment a server is suspected (before its handshake)
//! and reads the same whether the process was seen exec'ing or found in `/proc` after
//! an agent restart goes in. Hence not the pid or start time, not the handshake's
//! server name or transport (the launch arguments already decide the transport), and
//! not the executable's SHA-256 (computed off the hot path, it may arrive after the
//! first event; it is reported beside the uid). Argv is taken from the entry point
//! on: a shebang script exec'd directly shows `[script, args…]` to the exec sensor and
//! `[interpreter, script, args…]` in `/proc/PID/cmdline`.

use sha2::{Digest as _, Sha256};

use super::identity::PackageId;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StableId {
    pub server_uid: String,
    pub fingerprint: String,
}

/// Runtimes whose first non-flag argument (or `-m module`) is the program they run.
fn is_interpreter(argv0: &str) -> bool {
    let base = argv0.rsplit('/').next().unwrap_or(argv0);
    base.starts_with("python") || base.starts_with("node") || base == "bun" || base == "deno"
}

/// Interpreter flags that take a value (`node -r mod`, `python -W ignore`).
fn takes_value(flag: &str) -> bool {
    matches!(flag, "-r" | "--require" | "--import" | "-W" | "-X")
}

/// The launch arguments after the entry point: for an interpreter, what follows the
/// script or `-m module`; for anything else, what follows argv[0].
pub fn launch_args(argv: &[String]) -> &[String] {
    let Some(first) = argv.first() else {
        return argv;
    };
    if !is_interpreter(first) {
        return &argv[1..];
    }
    let mut i = 1;
    while let Some(a) = argv.get(i) {
        match a.as_str() {
            "-m" => return argv.get(i + 2..).unwrap_or(&[]),
            // Inline code: the code is the entry.
            "-c" | "-e" | "--eval" => return argv.get(i + 2..).unwrap_or(&[]),
            f if f.starts_with('-') => i += if takes_value(f) { 2 } else { 1 },
            _ => return &argv[i + 1..],
        }
    }
    &[]
}

/// An argument with host-specific paths taken out (`/home/alice/docs` → `<path>`,
/// `--root=/srv/x` → `--root=<path>`): one server configured alike on many hosts.
fn fleet_arg(a: &str) -> String {
    match a.find('/') {
        Some(i) => format!("{}<path>", &a[..i]),
        None => a.to_string(),
    }
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// What software runs: (on this host, on any host).
fn software(package: Option<&PackageId>, exe: Option<&str>, argv: &[String]) -> (String, String) {
    if let Some(p) = package {
        if p.ecosystem == "script" {
            let sha = p.sha256.as_deref().unwrap_or("?");
            return (
                format!("script:{}@{sha}", p.path),
                match &p.sha256 {
                    Some(sha) => format!("script-sha256:{sha}"),
                    None => format!("script:{}", file_name(&p.path)),
                },
            );
        }
        if let Some(name) = &p.name {
            let key = format!("{}:{name}@{}", p.ecosystem, p.version.as_deref().unwrap_or(""));
            return (key.clone(), key);
        }
    }
    match exe.or(argv.first().map(String::as_str)) {
        Some(e) => (format!("exe:{e}"), format!("exe:{}", file_name(e))),
        None => ("unknown".into(), "unknown".into()),
    }
}

fn digest(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    hex::encode(&h.finalize()[..16])
}

pub fn stable_id(
    host_id: &str,
    user_uid: u32,
    package: Option<&PackageId>,
    exe: Option<&str>,
    argv: &[String],
) -> StableId {
    let (sw_host, sw_fleet) = software(package, exe, argv);
    let args = launch_args(argv);
    let host_args = args.join("\u{1f}");
    let fleet_args = args
        .iter()
        .map(|a| fleet_arg(a))
        .collect::<Vec<_>>()
        .join("\u{1f}");
    StableId {
        server_uid: digest(&[
            "mcp-server/1",
            host_id,
            &user_uid.to_string(),
            &sw_host,
            &host_args,
        ]),
        fingerprint: digest(&["mcp-fingerprint/1", &sw_fleet, &fleet_args]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    fn pypi() -> PackageId {
        PackageId {
            ecosystem: "pypi",
            name: Some("mcp-server-time".into()),
            version: Some("2026.10.19".into()),
            path: "/venv/lib/python3.11/site-packages/mcp_server_time-2026.10.19.dist-info".into(),
            sha256: None,
        }
    }

    #[test]
    fn a_shebang_script_reads_the_same_from_exec_and_from_proc() {
        // What the exec sensor saw, and /proc/PID/cmdline of the same process.
        let exec = v(&["/opt/tools/mcp-server-time", "--local-timezone", "UTC"]);
        let proc = v(&[
            "/venv/bin/python3",
            "/opt/tools/mcp-server-time",
            "--local-timezone",
            "UTC",
        ]);
        assert_eq!(launch_args(&exec), launch_args(&proc));
        let a = stable_id(
            "host-a",
            1000,
            Some(&pypi()),
            Some("/venv/bin/mcp-server-time"),
            &exec,
        );
        let b = stable_id("host-a", 1000, Some(&pypi()), Some("/usr/bin/python3.11"), &proc);
        assert_eq!(a, b);
    }

    #[test]
    fn interpreter_flags_and_modules_are_skipped() {
        let argv = v(&[
            "node",
            "--enable-source-maps",
            "-r",
            "ts-node",
            "dist/index.js",
            "/data",
        ]);
        assert_eq!(launch_args(&argv), v(&["/data"]).as_slice());
        let argv = v(&["python3", "-u", "-m", "mcp_server_fetch", "--ignore-robots-txt"]);
        assert_eq!(launch_args(&argv), v(&["--ignore-robots-txt"]).as_slice());
        let argv = v(&["/usr/local/bin/github-mcp-server", "stdio"]);
        assert_eq!(launch_args(&argv), v(&["stdio"]).as_slice());
        assert!(launch_args(&[]).is_empty());
        assert!(launch_args(&v(&["python3"])).is_empty());
    }

    #[test]
    fn uid_is_per_host_and_user_fingerprint_is_fleet_wide() {
        let argv = v(&["/venv/bin/python3", "/venv/bin/mcp-server-time"]);
        let a = stable_id("host-a", 0, Some(&pypi()), None, &argv);
        let b = stable_id("host-b", 0, Some(&pypi()), None, &argv);
        let alice = stable_id("host-a", 1000, Some(&pypi()), None, &argv);
        assert_ne!(a.server_uid, b.server_uid);
        assert_ne!(a.server_uid, alice.server_uid);
        assert_eq!(a.fingerprint, b.fingerprint);
        assert_eq!(a.fingerprint, alice.fingerprint);
        assert_eq!(a.server_uid.len(), 32);
        // Not a pid, start time or anything else that changes across restarts.
        assert_eq!(a, stable_id("host-a", 0, Some(&pypi()), None, &argv));
    }

    #[test]
    fn version_and_launch_arguments_tell_servers_apart() {
        let argv = v(&["/venv/bin/python3", "/venv/bin/mcp-server-time"]);
        let mut newer = pypi();
        newer.version = Some("2027.1.1".into());
        let base = stable_id("h", 0, Some(&pypi()), None, &argv);
        assert_ne!(base, stable_id("h", 0, Some(&newer), None, &argv));
        let paris = v(&[
            "/venv/bin/python3",
            "/venv/bin/mcp-server-time",
            "--local-timezone",
            "Europe/Paris",
        ]);
        assert_ne!(
            base.server_uid,
            stable_id("h", 0, Some(&pypi()), None, &paris).server_uid
        );
    }

    #[test]
    fn host_paths_do_not_split_the_fleet_fingerprint() {
        let npm = PackageId {
            ecosystem: "npm",
            name: Some("@modelcontextprotocol/server-filesystem".into()),
            version: Some("2026.8.31".into()),
            path: "/x/package.json".into(),
            sha256: None,
        };
        let alice = v(&[
            "node",
            "/home/alice/.npm/_npx/1/dist/index.js",
            "/home/alice/docs",
        ]);
        let bob = v(&["node", "/home/bob/.npm/_npx/2/dist/index.js", "/home/bob/docs"]);
        let a = stable_id("h1", 1000, Some(&npm), Some("/usr/bin/node"), &alice);
        let b = stable_id("h2", 1001, Some(&npm), Some("/usr/bin/node"), &bob);
        assert_eq!(a.fingerprint, b.fingerprint);
        assert_ne!(a.server_uid, b.server_uid);
        // On one host, two directories served are two servers.
        let other = v(&["node", "/home/alice/.npm/_npx/1/dist/index.js", "/srv/data"]);
        assert_ne!(
            a.server_uid,
            stable_id("h1", 1000, Some(&npm), Some("/usr/bin/node"), &other).server_uid
        );
    }

    #[test]
    fn scripts_are_their_file_and_content_binaries_their_path() {
        let script = |path: &str, sha: &str| PackageId {
            ecosystem: "script",
            name: Some("server".into()),
            version: None,
            path: path.into(),
            sha256: Some(sha.into()),
        };
        let argv = v(&["python3", "/srv/a/server.py"]);
        let a = stable_id("h", 0, Some(&script("/srv/a/server.py", "aa")), None, &argv);
        let edited = stable_id("h", 0, Some(&script("/srv/a/server.py", "bb")), None, &argv);
        let moved = stable_id("h2", 0, Some(&script("/opt/server.py", "aa")), None, &argv);
        assert_ne!(a.server_uid, edited.server_uid);
        assert_ne!(a.fingerprint, edited.fingerprint);
        assert_eq!(a.fingerprint, moved.fingerprint, "same content elsewhere");
        let bin = v(&["/usr/local/bin/github-mcp-server", "stdio"]);
        let x = stable_id("h", 0, None, Some("/usr/local/bin/github-mcp-server"), &bin);
        let y = stable_id("h2", 0, None, Some("/opt/bin/github-mcp-server"), &bin);
        assert_eq!(x.fingerprint, y.fingerprint);
        assert_ne!(x.server_uid, y.server_uid);
    }
}
