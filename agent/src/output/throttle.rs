//! Dedup and throttling per rule + identity: a flapping server raises one alert per
//! window, not one per flap. Repeats inside the window are counted (metric) and
//! folded into the next alert's OCSF `count`.

use std::{num::NonZeroUsize, time::Duration};

use lru::LruCache;
use tokio::time::Instant;

use crate::{alert::Alert, metrics::Metrics};

/// Keys remembered at once; the least recently seen is forgotten first.
const MAX_KEYS: usize = 65_536;

pub struct Throttle {
    window: Duration,
    seen: LruCache<String, Entry>,
}

struct Entry {
    emitted_at: Instant,
    suppressed: u64,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Send it; `count` is this alert plus the repeats folded into it.
    Emit {
        count: u64,
    },
    Suppress,
}

impl Throttle {
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            seen: LruCache::new(NonZeroUsize::new(MAX_KEYS).expect("non-zero")),
        }
    }

    /// Whether `alert` goes out now, counted in the metrics either way: with the OCSF
    /// `count` it carries (itself plus the repeats folded into it), or `None` when
    /// it is suppressed.
    pub fn admit(&mut self, alert: &Alert, metrics: &Metrics) -> Option<u64> {
        match self.check_with(&alert.dedup_key(), Instant::now(), alert.throttle) {
            Verdict::Suppress => {
                metrics.alert_suppressed(&alert.rule_id);
                None
            }
            Verdict::Emit { count } => {
                metrics.alert_raised(&alert.rule_id, alert.severity);
                Some(count)
            }
        }
    }

    #[cfg(test)]
    pub fn check(&mut self, key: &str, now: Instant) -> Verdict {
        self.check_with(key, now, None)
    }

    /// As [`Self::check`], with the rule's own window (`throttle:` in rules.yaml)
    /// instead of the default when it has one.
    pub fn check_with(&mut self, key: &str, now: Instant, window: Option<Duration>) -> Verdict {
        let window = window.unwrap_or(self.window);
        if window.is_zero() {
            return Verdict::Emit { count: 1 };
        }
        match self.seen.get_mut(key) {
            Some(e) if now.duration_since(e.emitted_at) < window => {
                e.suppressed += 1;
                Verdict::Suppress
            }
            Some(e) => {
                let count = e.suppressed + 1;
                e.suppressed = 0;
                e.emitted_at = now;
                Verdict::Emit { count }
            }
            None => {
                self.seen.put(
                    key.to_string(),
                    Entry {
                        emitted_at: now,
                        suppressed: 0,
                    },
                );
                Verdict::Emit { count: 1 }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_alert_per_window_with_repeats_folded() {
        let mut t = Throttle::new(Duration::from_secs(60));
        let t0 = Instant::now();
        assert_eq!(t.check("r\u{1f}a", t0), Verdict::Emit { count: 1 });
        assert_eq!(
            t.check("r\u{1f}b", t0),
            Verdict::Emit { count: 1 },
            "other identity"
        );
        for s in 1..=5 {
            assert_eq!(
                t.check("r\u{1f}a", t0 + Duration::from_secs(s)),
                Verdict::Suppress
            );
        }
        assert_eq!(
            t.check("r\u{1f}a", t0 + Duration::from_secs(61)),
            Verdict::Emit { count: 6 }
        );
        assert_eq!(
            t.check("r\u{1f}a", t0 + Duration::from_secs(62)),
            Verdict::Suppress
        );
        let mut off = Throttle::new(Duration::ZERO);
        assert_eq!(off.check("k", t0), Verdict::Emit { count: 1 });
        assert_eq!(off.check("k", t0), Verdict::Emit { count: 1 });
    }
}
