//! Network namespaces as "remote hosts": a client namespace and a server namespace
//! joined by a veth pair, with IPv4 and IPv6 addresses. Nothing touches the host's
//! own interfaces or routes, so tests never reach any address outside these two
//! namespaces. Names are unique per run; a Drop guard removes the namespaces (and
//! with them the veth pair) and any resolver file, also when a test panics.

use std::{
    os::fd::AsRawFd,
    path::PathBuf,
    process::{Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
};

pub const CLIENT_V4: &str = "10.77.0.1";
pub const SERVER_V4: &str = "10.77.0.2";
pub const CLIENT_V6: &str = "fd77::1";
pub const SERVER_V6: &str = "fd77::2";
/// The interface inside each namespace.
pub const IFACE: &str = "veth0";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Client,
    Server,
}

pub struct NetnsPair {
    pub client: String,
    pub server: String,
    /// `/etc/netns/<name>` directories we created (per-namespace resolv.conf).
    etc_dirs: Vec<PathBuf>,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!("running ip {args:?}: {e} (is iproute2 installed? run `cargo xtask setup`)")
        });
    assert!(
        out.status.success(),
        "ip {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl NetnsPair {
    pub fn new(tag: &str) -> Self {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let base = format!("mcpw-{tag}-{}-{n}", std::process::id());
        let pair = Self {
            client: format!("{base}-c"),
            server: format!("{base}-s"),
            etc_dirs: Vec::new(),
        };
        // The guard exists before the first namespace, so a failure below cleans up.
        ip(&["netns", "add", &pair.client]);
        ip(&["netns", "add", &pair.server]);
        ip(&[
            "link",
            "add",
            IFACE,
            "netns",
            &pair.client,
            "type",
            "veth",
            "peer",
            "name",
            IFACE,
            "netns",
            &pair.server,
        ]);
        for (ns, v4, v6) in [
            (&pair.client, CLIENT_V4, CLIENT_V6),
            (&pair.server, SERVER_V4, SERVER_V6),
        ] {
            ip(&["-n", ns, "addr", "add", &format!("{v4}/24"), "dev", IFACE]);
            // nodad: usable at once, no duplicate-address detection delay.
            ip(&[
                "-n",
                ns,
                "-6",
                "addr",
                "add",
                &format!("{v6}/64"),
                "dev",
                IFACE,
                "nodad",
            ]);
            ip(&["-n", ns, "link", "set", IFACE, "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        pair
    }

    pub fn name(&self, side: Side) -> &str {
        match side {
            Side::Client => &self.client,
            Side::Server => &self.server,
        }
    }

    /// Runs `f` on a new thread inside the namespace (setns only moves the thread).
    pub fn spawn<T: Send + 'static>(
        &self,
        side: Side,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = format!("/run/netns/{}", self.name(side));
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).unwrap_or_else(|e| panic!("opening {path}: {e}"));
            // SAFETY: setns on a valid namespace fd; it affects this thread only.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
            f()
        })
    }

    /// Runs `f` inside the namespace and waits for it.
    pub fn run<T: Send + 'static>(&self, side: Side, f: impl FnOnce() -> T + Send + 'static) -> T {
        self.spawn(side, f).join().expect("namespace thread panicked")
    }

    /// `ip netns exec <ns> program`: `ip` execs the program, so the child's pid is the
    /// program's. Also applies `/etc/netns/<ns>/resolv.conf` (see [`Self::set_resolver`]).
    pub fn command(&self, side: Side, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", self.name(side), program]);
        c
    }

    /// Points the namespace's resolver (for programs started with [`Self::command`])
    /// at `nameserver`.
    pub fn set_resolver(&mut self, side: Side, nameserver: &str) {
        let dir = PathBuf::from("/etc/netns").join(self.name(side));
        std::fs::create_dir_all(&dir).unwrap();
        self.etc_dirs.push(dir.clone());
        std::fs::write(dir.join("resolv.conf"), format!("nameserver {nameserver}\n")).unwrap();
    }

    pub fn set_link(&self, side: Side, up: bool) {
        ip(&[
            "-n",
            self.name(side),
            "link",
            "set",
            IFACE,
            if up { "up" } else { "down" },
        ]);
    }
}

impl Drop for NetnsPair {
    fn drop(&mut self) {
        for dir in &self.etc_dirs {
            let _ = std::fs::remove_dir_all(dir);
        }
        for ns in [&self.client, &self.server] {
            // Deleting the namespace deletes its end of the veth, and so the pair.
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// A child process killed (and reaped) when dropped.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
