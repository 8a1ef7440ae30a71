//! Reading processes from `/proc`: the seed at start-up (processes that ran before the
//! agent) and lazy fill-in for pids whose fork the sensor did not see.

use std::{path::PathBuf, sync::Arc};

use super::process_table::{Origin, ProcKey, Process};
use crate::clock;

/// A process as `/proc` shows it, before enrichment.
pub struct ProcSnapshot {
    pub process: Process,
    /// Where to hash the executable from: `/proc/PID/exe` first (the running inode).
    pub exe_candidates: Vec<PathBuf>,
}

/// Reads one process. `None` if it is gone or unreadable (a race, never an error).
pub fn read_process(pid: u32) -> Option<ProcSnapshot> {
    let proc = procfs::process::Process::new(pid as i32).ok()?;
    let stat = proc.stat().ok()?;
    // Kernel threads and zombies have no exe; they are still processes.
    let status = proc.status().ok();
    let exe = proc.exe().ok().map(|p| Arc::<str>::from(p.to_string_lossy()));
    let ticks = clock::ticks_per_second();
    let start_ns = stat.starttime.saturating_mul(1_000_000_000) / ticks;
    let argv: Vec<String> = proc.cmdline().unwrap_or_default();
    let (uid, gid) = status.as_ref().map_or((0, 0), |s| (s.ruid, s.rgid));
    let mut exe_candidates = vec![PathBuf::from(format!("/proc/{pid}/exe"))];
    if let Some(e) = &exe {
        exe_candidates.push(PathBuf::from(&**e));
    }
    let process = Process {
        ppid: stat.ppid.max(0) as u32,
        comm: stat.comm.clone(),
        filename: exe.clone(),
        exe,
        argv: argv.into(),
        cwd: proc.cwd().ok().map(|p| Arc::from(p.to_string_lossy())),
        uid,
        gid,
        ..Process::bare(ProcKey { pid, start_ns }, Origin::Procfs)
    };
    Some(ProcSnapshot {
        process,
        exe_candidates,
    })
}

/// Every process currently in `/proc`.
pub fn all_pids() -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        let snap = super::read_process(me).expect("own /proc entry");
        assert_eq!(snap.process.key.pid, me);
        assert!(snap.process.exe.is_some());
        assert!(!snap.process.argv.is_empty());
        assert!(super::all_pids().contains(&me));
    }
}
