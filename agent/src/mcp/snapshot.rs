//! Periodic inventory snapshots: every live server, one `mcp_server` event each with
//! `action: snapshot`, all sharing one snapshot uid and time. Taken once right after
//! start-up (after the `/proc` seed, so a restarted agent re-announces what runs) and
//! then every `inventory_snapshot_interval_secs`.

use std::time::{Duration, SystemTime};

use sha2::{Digest as _, Sha256};

use super::inventory::{Announce, Inventory, McpServerEvent, ServerAction, SnapshotInfo};
use crate::clock;

/// When snapshots are taken; `None` turns them off.
pub struct Schedule(Option<tokio::time::Interval>);

impl Schedule {
    pub fn new(every: Option<Duration>) -> Self {
        Self(every.filter(|d| !d.is_zero()).map(|d| {
            // The first tick is immediate: the start-up snapshot.
            let mut i = tokio::time::interval(d);
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            i
        }))
    }

    /// Resolves when the next snapshot is due; never when snapshots are off.
    pub async fn due(&mut self) {
        match &mut self.0 {
            Some(i) => {
                i.tick().await;
            }
            None => std::future::pending().await,
        }
    }
}

/// The events of one snapshot of `inv` taken at `at` on host `host_id`: every live
/// server the SIEM has heard of (`announced`), so that the snapshot's count is what
/// the SIEM can reconcile.
pub fn take(
    inv: &Inventory,
    host_id: &str,
    at: SystemTime,
    announced: impl Fn(&str) -> bool,
) -> Vec<McpServerEvent> {
    let time = clock::rfc3339(at);
    let mut live = inv.live();
    live.retain(|s| announced(&s.id));
    let count = live.len();
    let mut h = Sha256::new();
    h.update(b"mcp-snapshot/1\0");
    h.update(host_id.as_bytes());
    h.update([0]);
    h.update(time.as_bytes());
    let uid = hex::encode(&h.finalize()[..16]);
    live.into_iter()
        .enumerate()
        .map(|(i, server)| McpServerEvent {
            kind: "mcp_server",
            time: time.clone(),
            action: ServerAction::Snapshot,
            detection_latency_ms: None,
            previous_state: None,
            snapshot: Some(SnapshotInfo {
                uid: uid.clone(),
                time: time.clone(),
                index: i + 1,
                count,
            }),
            server,
            tools_listing: None,
            announce: Announce::Again,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mcp::inventory::ServerState;

    #[test]
    fn a_snapshot_is_every_live_server_under_one_uid_and_time() {
        let mut inv = Inventory::default();
        for (pid, first_seen) in [
            (10, "2026-11-22T00:00:02Z"),
            (11, "2026-11-22T00:00:01Z"),
            (12, "x"),
        ] {
            let mut s = crate::output::fixture_server();
            s.pid = pid;
            s.id = format!("mcp:{pid}:1");
            s.first_seen = first_seen.into();
            inv.upsert(s);
        }
        inv.exited(12, "2026-11-22T00:00:03Z".into());
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let snap = take(&inv, "host-a", at, |_| true);
        assert_eq!(snap.len(), 2, "exited servers are not in it");
        assert_eq!(snap[0].server.pid, 11, "by first sighting");
        let info: Vec<&SnapshotInfo> = snap.iter().map(|e| e.snapshot.as_ref().unwrap()).collect();
        assert_eq!((info[0].index, info[1].index, info[0].count), (1, 2, 2));
        assert_eq!(info[0].uid, info[1].uid);
        assert_eq!(info[0].time, snap[1].time);
        assert!(snap.iter().all(|e| e.action == ServerAction::Snapshot));
        assert!(snap.iter().all(|e| e.server.state != ServerState::Exited));
        assert_ne!(
            info[0].uid,
            take(&inv, "host-b", at, |_| true)[0]
                .snapshot
                .as_ref()
                .unwrap()
                .uid
        );
        assert!(take(&Inventory::default(), "host-a", at, |_| true).is_empty());
        let only = take(&inv, "host-a", at, |id| id == "mcp:10:1");
        assert_eq!(only.len(), 1, "servers the SIEM never heard of are not in it");
        assert_eq!(only[0].snapshot.as_ref().unwrap().count, 1);
    }

    #[test]
    fn counts_split_by_state_and_sanctioned() {
        let mut inv = Inventory::default();
        for (pid, sanctioned) in [(1, true), (2, false), (3, false)] {
            let mut s = crate::output::fixture_server();
            s.pid = pid;
            s.id = format!("mcp:{pid}:1");
            s.sanctioned = sanctioned;
            inv.upsert(s);
        }
        inv.exited(3, "t".into());
        let c = inv.counts();
        assert!(c.contains(&(ServerState::Confirmed, true, 1)));
        assert!(c.contains(&(ServerState::Confirmed, false, 1)));
        assert!(c.contains(&(ServerState::Exited, false, 1)));
        assert!(c.contains(&(ServerState::Suspected, true, 0)));
    }

    #[tokio::test]
    async fn first_snapshot_at_once_then_every_interval() {
        let mut s = Schedule::new(Some(Duration::from_millis(200)));
        let t0 = tokio::time::Instant::now();
        s.due().await;
        assert!(
            t0.elapsed() < Duration::from_millis(150),
            "not delayed by an interval: {:?}",
            t0.elapsed()
        );
        s.due().await;
        assert!(t0.elapsed() >= Duration::from_millis(190), "{:?}", t0.elapsed());
        let mut off = Schedule::new(Some(Duration::ZERO));
        let r = tokio::time::timeout(Duration::from_millis(300), off.due()).await;
        assert!(r.is_err(), "0 turns snapshots off");
    }
}
