//! The output stage's side of the spool: records for remote sinks are collected and
//! appended a batch at a time (one write, one fsync), with what was dropped counted.

use std::sync::Arc;

use super::{record::Record, spool::Spool};
use crate::metrics::Metrics;

/// Records appended to the spool in one fsync at most.
const SPOOL_BATCH: usize = 512;

pub struct SpoolWriter {
    spool: Spool,
    pending: Vec<Vec<u8>>,
    metrics: Arc<Metrics>,
}

impl SpoolWriter {
    pub fn new(spool: Spool, metrics: Arc<Metrics>) -> Self {
        Self {
            spool,
            pending: Vec::new(),
            metrics,
        }
    }

    pub fn spool(&self) -> &Spool {
        &self.spool
    }

    /// Queues `record` for the next append.
    pub fn push(&mut self, record: &Record) {
        match serde_json::to_vec(record) {
            Ok(bytes) => self.pending.push(bytes),
            Err(e) => {
                tracing::error!(error = %e, "record not serializable");
                self.metrics.spool_dropped("not_serializable", 1);
            }
        }
    }

    /// A full batch is waiting.
    pub fn is_full(&self) -> bool {
        self.pending.len() >= SPOOL_BATCH
    }

    /// Appends what is pending to the spool (one write, one fsync).
    pub fn commit(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.pending);
        match tokio::task::block_in_place(|| self.spool.append(&batch)) {
            Ok(r) => {
                if r.refused > 0 {
                    tracing::warn!(refused = r.refused, "spool full: new records refused");
                }
                self.metrics.spool_dropped("spool_full", r.refused + r.evicted);
            }
            Err(e) => {
                tracing::error!(error = %e, records = batch.len(), "spool write failed: records dropped");
                self.metrics.spool_dropped("write_error", batch.len() as u64);
            }
        }
        self.metrics.set_spool_bytes(self.spool.total_bytes());
    }
}
