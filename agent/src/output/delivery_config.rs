//! `delivery:` in the config file: how the spool, the alert throttle, retries and the
//! record budget of remote sinks are bounded.

use serde::Deserialize;

use super::{budget, spool::FullPolicy};

/// `delivery:` in the config file.
#[derive(Clone, Debug, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// Bound of the on-disk spool.
    pub spool_max_bytes: u64,
    /// What happens when it is full: `drop_oldest` or `drop_newest` (both counted in
    /// `mcpwatch_spool_dropped_total{reason="spool_full"}`).
    pub spool_full_policy: FullPolicy,
    /// One alert per rule + identity per this many seconds (0: no throttling).
    pub alert_throttle_secs: u64,
    /// Longest wait between two delivery attempts.
    pub retry_max_secs: u64,
    /// Largest JSON record a remote sink sends (0: no bound); larger ones are trimmed
    /// (`budget.rs`). A sink's `record_max_bytes=` option overrides it.
    pub record_max_bytes: usize,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            spool_max_bytes: 256 << 20,
            spool_full_policy: FullPolicy::DropOldest,
            alert_throttle_secs: 60,
            retry_max_secs: 60,
            record_max_bytes: budget::DEFAULT_RECORD_MAX_BYTES,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_config_parses_with_defaults_and_refuses_unknown_keys() {
        let c: DeliveryConfig =
            serde_saphyr::from_str("spool_full_policy: drop_newest\nalert_throttle_secs: 0\n").unwrap();
        assert_eq!(c.spool_full_policy, FullPolicy::DropNewest);
        assert_eq!(c.alert_throttle_secs, 0);
        assert_eq!(c.spool_max_bytes, DeliveryConfig::default().spool_max_bytes);
        assert!(serde_saphyr::from_str::<DeliveryConfig>("spool_max_byte: 1\n").is_err());
        assert!(serde_saphyr::from_str::<DeliveryConfig>("spool_full_policy: block\n").is_err());
    }
}
