//! Service-manager notifications (systemd `Type=notify`, `sd_notify(3)`).
//!
//! Outside systemd (`NOTIFY_SOCKET` unset) every call is a no-op, so the agent does
//! not care how it was started.
//!
//! - [`ready`]: once every program is attached and the process table is seeded (the
//!   moment `/readyz` turns 200). `systemctl start` returns only then.
//! - [`reloading`]: the reload hook. Whoever handles SIGHUP (the rule engine) wraps
//!   its reload in it:
//!   ```ignore
//!   service::reloading(|| rules.reload(&path))?;
//!   ```
//!   It sends `RELOADING=1` with `MONOTONIC_USEC`, runs the closure, then `READY=1`
//!   with a status line saying whether the reload worked. A failed reload keeps the
//!   service ready (the old rules stay in force) and its error is returned.
//!   The unit's `ExecReload` validates the rules with `mcpwatch check-rules` before
//!   it sends SIGHUP, so a bad file fails `systemctl reload` and never reaches this.
//! - [`stopping`]: when a stop signal arrived and the pipeline drains.

use sd_notify::NotifyState;

fn notify(states: &[NotifyState]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify the service manager");
    }
}

pub fn ready(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

pub fn stopping() {
    notify(&[
        NotifyState::Stopping,
        NotifyState::Status("stopping: draining events"),
    ]);
}

/// Runs `reload` between `RELOADING=1` and `READY=1`.
pub fn reloading<T, E: std::fmt::Display>(reload: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => notify(&[NotifyState::Reloading, now]),
        Err(_) => notify(&[NotifyState::Reloading]),
    }
    let result = reload();
    match &result {
        Ok(_) => ready("watching: reloaded"),
        Err(e) => ready(&format!("watching: reload failed, previous rules kept: {e}")),
    }
    result
}

#[cfg(test)]
mod tests {
    use std::{os::unix::net::UnixDatagram, time::Duration};

    use super::*;

    /// The only test that sets `NOTIFY_SOCKET` (the environment is process-wide).
    #[test]
    fn reload_hook_brackets_the_reload_with_reloading_and_ready() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        std::env::set_var("NOTIFY_SOCKET", &path);
        let recv = || {
            let mut buf = [0u8; 1024];
            let n = sock.recv(&mut buf).unwrap();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        };

        let got: Result<u32, String> = reloading(|| Ok(7));
        assert_eq!(got, Ok(7));
        let first = recv();
        assert!(first.contains("RELOADING=1"), "{first}");
        assert!(first.contains("MONOTONIC_USEC="), "{first}");
        let second = recv();
        assert!(second.contains("READY=1"), "{second}");
        assert!(second.contains("STATUS=watching: reloaded"), "{second}");

        let got: Result<(), String> = reloading(|| Err("bad rule at line 3".to_string()));
        assert!(got.is_err());
        assert!(recv().contains("RELOADING=1"));
        let after_failure = recv();
        assert!(after_failure.contains("READY=1"), "{after_failure}");
        assert!(after_failure.contains("bad rule at line 3"), "{after_failure}");
        std::env::remove_var("NOTIFY_SOCKET");
    }
}
