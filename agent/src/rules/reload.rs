//! Hot reload of the rule file on SIGHUP and on change.
//!
//! Change detection polls the file's metadata (mtime, size, inode) once a second
//! rather than using inotify: editors and configuration managers replace files by
//! rename, Kubernetes ConfigMaps swap a symlink, and an inotify watch on the old inode
//! misses all of these unless the directory is watched too; a `stat` a second costs
//! nothing and follows every one of them.
//!
//! The new file is validated first; an invalid one keeps the running rules (logged,
//! `mcpwatch_rule_reloads_total{result="error"}`); a valid one is published on watch
//! channels the rules and MCP stages read between two events.

use std::{
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use tokio::{
    signal::unix::{signal, Signal, SignalKind},
    sync::watch,
};

use super::{load, model::CompiledRules};
use crate::{mcp::heuristics::Heuristics, metrics::Metrics, shutdown::Shutdown};

const POLL: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Stamp {
    mtime: Option<SystemTime>,
    len: u64,
    ino: u64,
    dev: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        mtime: m.modified().ok(),
        len: m.len(),
        ino: m.ino(),
        dev: m.dev(),
    })
}

pub struct Reloader {
    path: PathBuf,
    rules: watch::Sender<Arc<CompiledRules>>,
    heuristics: watch::Sender<Heuristics>,
    metrics: Arc<Metrics>,
    sighup: Signal,
    last: Option<Stamp>,
}

impl Reloader {
    /// Installs the SIGHUP handler now (before the agent reports ready, so an early
    /// SIGHUP reloads instead of killing the agent).
    pub fn new(
        path: PathBuf,
        rules: watch::Sender<Arc<CompiledRules>>,
        heuristics: watch::Sender<Heuristics>,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Self> {
        let last = stamp(&path);
        Ok(Self {
            path,
            rules,
            heuristics,
            metrics,
            sighup: signal(SignalKind::hangup())?,
            last,
        })
    }

    pub async fn run(mut self, mut shutdown: Shutdown) {
        let mut poll = tokio::time::interval(POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let why = tokio::select! {
                _ = self.sighup.recv() => "sighup",
                _ = poll.tick() => {
                    let now = stamp(&self.path);
                    if now == self.last || now.is_none() {
                        continue;
                    }
                    "file changed"
                }
                _ = shutdown.wait() => return,
            };
            self.last = stamp(&self.path);
            self.reload(why);
        }
    }

    /// A reload, bracketed by systemd's RELOADING=1 / READY=1 (a no-op outside systemd).
    fn reload(&self, why: &str) {
        let _ = crate::service::reloading(|| self.apply(why));
    }

    fn apply(&self, why: &str) -> Result<(), String> {
        match load::load_file(&self.path) {
            Ok(rules) => {
                let summary = rules.summary();
                match Heuristics::from_spec(&rules.launch_heuristics) {
                    Ok(h) => {
                        let _ = self.heuristics.send(h);
                    }
                    Err(e) => tracing::warn!(error = %e, "launch heuristics not updated"),
                }
                let _ = self.rules.send(Arc::new(rules));
                self.metrics.rule_reload("ok");
                tracing::info!(file = %self.path.display(), trigger = why, rules = %summary, "rule file reloaded");
                Ok(())
            }
            Err(e) => {
                self.metrics.rule_reload("error");
                tracing::error!(
                    file = %self.path.display(),
                    trigger = why,
                    errors = %e,
                    "rule file invalid: keeping the running rules"
                );
                Err(e.to_string())
            }
        }
    }
}
