//! Bytes each MCP server identity sends to each destination per window, learned and
//! kept in the state directory (`egress-volume-baseline.json`) so that
//! `mcp-egress-volume-anomaly` survives restarts.
//!
//! A window is counted when traffic to the destination arrives after it ended (idle
//! windows are not windows of that destination's traffic). Once an identity and
//! destination have `learning_windows` windows, a window whose bytes exceed
//! `factor` times their mean (and `min_window_bytes`) is anomalous, once per window;
//! an anomalous window is not learned, so an exfiltration does not become the norm.

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
};

use serde::{Deserialize, Serialize};

/// Bounds, as for the destination baseline.
const MAX_PER_IDENTITY: usize = 4096;
const MAX_IDENTITIES: usize = 1024;
/// The mean is over at most this many windows: an old habit fades.
const MEAN_OVER: u32 = 1000;

/// `egress_volume:` of the rule file.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct VolumePolicy {
    pub window_ns: u64,
    pub learning_windows: u32,
    pub factor: f64,
    pub min_window_bytes: u64,
    pub connection_max_bytes: u64,
}

impl Default for VolumePolicy {
    fn default() -> Self {
        Self {
            window_ns: 300 * 1_000_000_000,
            learning_windows: 12,
            factor: 10.0,
            min_window_bytes: 1 << 20,
            connection_max_bytes: 100 << 20,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Learned {
    pub windows: u32,
    pub mean_bytes: f64,
}

struct Current {
    start_ns: u64,
    bytes: u64,
    alerted: bool,
}

/// A window over its baseline.
#[derive(Clone, Debug, PartialEq)]
pub struct Anomaly {
    pub window_bytes: u64,
    pub baseline: Learned,
    pub threshold: u64,
}

pub struct VolumeBaseline {
    path: Option<PathBuf>,
    learned: BTreeMap<String, BTreeMap<String, Learned>>,
    current: HashMap<(String, String), Current>,
}

impl VolumeBaseline {
    pub const FILE: &'static str = "egress-volume-baseline.json";

    pub fn open(dir: Option<PathBuf>) -> Self {
        let path = dir.map(|d| d.join(Self::FILE));
        let learned = super::state_file::load(path.as_deref(), "egress volume baseline");
        Self {
            path,
            learned,
            current: HashMap::new(),
        }
    }

    /// `bytes` more sent by `identity` to `destination` at `now_ns`.
    pub fn add(
        &mut self,
        identity: &str,
        destination: &str,
        bytes: u64,
        now_ns: u64,
        p: &VolumePolicy,
    ) -> Option<Anomaly> {
        let key = (identity.to_string(), destination.to_string());
        let cur = self.current.entry(key).or_insert(Current {
            start_ns: now_ns,
            bytes: 0,
            alerted: false,
        });
        if now_ns.saturating_sub(cur.start_ns) >= p.window_ns {
            let (done, alerted) = (cur.bytes, cur.alerted);
            *cur = Current {
                start_ns: now_ns,
                bytes: 0,
                alerted: false,
            };
            if !alerted {
                self.learn(identity, destination, done);
            }
        }
        let learned = self
            .learned
            .get(identity)
            .and_then(|d| d.get(destination))
            .copied()
            .unwrap_or_default();
        let cur = self
            .current
            .get_mut(&(identity.to_string(), destination.to_string()))
            .expect("inserted above");
        cur.bytes = cur.bytes.saturating_add(bytes);
        if cur.alerted || learned.windows < p.learning_windows {
            return None;
        }
        let threshold = ((learned.mean_bytes * p.factor) as u64).max(p.min_window_bytes);
        if cur.bytes <= threshold {
            return None;
        }
        cur.alerted = true;
        Some(Anomaly {
            window_bytes: cur.bytes,
            baseline: learned,
            threshold,
        })
    }

    fn learn(&mut self, identity: &str, destination: &str, bytes: u64) {
        if !self.learned.contains_key(identity) && self.learned.len() >= MAX_IDENTITIES {
            return;
        }
        let dests = self.learned.entry(identity.to_string()).or_default();
        if !dests.contains_key(destination) && dests.len() >= MAX_PER_IDENTITY {
            return;
        }
        let l = dests.entry(destination.to_string()).or_default();
        let n = f64::from(l.windows.min(MEAN_OVER - 1));
        l.mean_bytes = (l.mean_bytes * n + bytes as f64) / (n + 1.0);
        l.windows = l.windows.saturating_add(1);
        super::state_file::save(self.path.as_deref(), &self.learned, "egress volume baseline");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn policy() -> VolumePolicy {
        VolumePolicy {
            window_ns: S,
            learning_windows: 3,
            factor: 10.0,
            min_window_bytes: 10_000,
            connection_max_bytes: 1 << 30,
        }
    }

    #[test]
    fn usual_traffic_is_learned_and_a_jump_is_an_anomaly_once() {
        let dir = tempfile::tempdir().unwrap();
        let p = policy();
        let mut b = VolumeBaseline::open(Some(dir.path().to_path_buf()));
        // Learning: four windows of ~4 KB; nothing is judged.
        for w in 0..4 {
            assert_eq!(b.add("srv", "api:443", 4_000, w * S, &p), None);
        }
        // Usual traffic after learning: silent.
        assert_eq!(b.add("srv", "api:443", 4_000, 4 * S, &p), None);
        // A jump: 2 MB in one window.
        let a = b.add("srv", "api:443", 2_000_000, 5 * S, &p).expect("anomaly");
        assert_eq!(a.baseline.windows, 5);
        assert!((a.baseline.mean_bytes - 4_000.0).abs() < 1.0, "{a:?}");
        assert_eq!(a.threshold, 40_000);
        // Once per window, and the anomalous window is not learned.
        assert_eq!(b.add("srv", "api:443", 2_000_000, 5 * S + 1, &p), None);
        assert_eq!(b.add("srv", "api:443", 4_000, 7 * S, &p), None);
        // The baseline survives a restart.
        let mut again = VolumeBaseline::open(Some(dir.path().to_path_buf()));
        assert!(again.add("srv", "api:443", 5_000_000, 20 * S, &p).is_some());
        // Another destination learns on its own.
        assert_eq!(again.add("srv", "other:443", 5_000_000, 20 * S, &p), None);
    }

    #[test]
    fn small_windows_never_alert_below_the_floor() {
        let p = policy();
        let mut b = VolumeBaseline::open(None);
        for w in 0..4 {
            b.add("srv", "d", 10, w * S, &p);
        }
        // 100 × the mean, but under min_window_bytes.
        assert_eq!(b.add("srv", "d", 1_000, 4 * S, &p), None);
    }
}
