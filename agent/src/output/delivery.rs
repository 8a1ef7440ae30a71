//! One delivery loop per remote sink: read from the spool at the sink's cursor, send,
//! advance the cursor on acknowledgement, otherwise back off (exponentially, with
//! jitter, or as long as `Retry-After` says) and send the same records again.

use std::{sync::Arc, time::Duration};

use tokio::sync::watch;

use super::{
    budget::{self, Fit},
    record::{now_ms, Record},
    sink::Sink,
    spec::{Format, Selection},
    spool::{Reader, Spool},
};
use crate::metrics::Metrics;

#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    pub base: Duration,
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(500),
            max: Duration::from_secs(60),
        }
    }
}

/// Exponential backoff with "equal jitter": half the step fixed, half random, so
/// agents that lost the same receiver do not come back in lockstep.
pub struct Backoff {
    policy: RetryPolicy,
    attempt: u32,
}

impl Backoff {
    pub fn new(policy: RetryPolicy) -> Self {
        Self { policy, attempt: 0 }
    }

    pub fn next_delay(&mut self) -> Duration {
        let step = self
            .policy
            .base
            .saturating_mul(1u32 << self.attempt.min(20))
            .min(self.policy.max);
        self.attempt += 1;
        let half = step / 2;
        half + half.mul_f64(fastrand::f64())
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

pub struct Worker {
    pub id: String,
    pub sink: Box<dyn Sink>,
    pub spool: Spool,
    pub events: Selection,
    /// The sink's format: the rendering the budget applies to.
    pub format: Format,
    /// The record budget (0: none), see `budget.rs`.
    pub record_max_bytes: usize,
    pub metrics: Arc<Metrics>,
    pub retry: RetryPolicy,
}

impl Worker {
    fn publish(&self, oldest_accepted_ms: Option<u64>) {
        let (backlog, bytes) = self.spool.backlog(&self.id);
        let age = oldest_accepted_ms.map_or(0.0, |t| now_ms().saturating_sub(t) as f64 / 1000.0);
        self.metrics.sink_progress(self.sink.label(), backlog, age);
        self.metrics.set_spool_bytes(bytes);
    }

    fn ack(&self, upto: u64) {
        if let Err(e) = self.spool.ack(&self.id, upto) {
            // The cursor file could not be written: records will be sent again after a
            // restart (a duplicate, not a loss).
            tracing::warn!(sink = self.sink.label(), error = %format!("{e:#}"), "saving delivery cursor");
        }
    }

    /// Runs until `stop` turns true. Whatever is unsent stays in the spool.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let label = self.sink.label().to_string();
        let mut reader = Reader::default();
        let mut head = self.spool.subscribe();
        let mut backoff = Backoff::new(self.retry);
        // After a content refusal of a whole batch: one record per send up to here.
        let mut single_until = 0u64;
        loop {
            if *stop.borrow() {
                break;
            }
            let max = if self.spool.cursor(&self.id) < single_until {
                1
            } else {
                self.sink.max_batch()
            };
            let read = tokio::task::block_in_place(|| self.spool.read(&self.id, &mut reader, max));
            let (raw, next) = match read {
                Ok(r) => r,
                Err(e) => {
                    // A record that cannot be read back is skipped and counted.
                    tracing::error!(sink = %label, error = %format!("{e:#}"), "unreadable spool record skipped");
                    self.metrics.spool_dropped("write_error", 1);
                    let cur = self.spool.cursor(&self.id);
                    self.ack(cur + 1);
                    reader = Reader::default();
                    continue;
                }
            };
            let mut batch = Vec::with_capacity(raw.len());
            let mut seqs = Vec::with_capacity(raw.len());
            let mut fits = Vec::with_capacity(raw.len());
            for (seq, bytes) in raw {
                match serde_json::from_slice::<Record>(&bytes) {
                    Ok(mut r) if r.class.selected_by(self.events) => {
                        fits.push(self.fit(&mut r));
                        batch.push(r);
                        seqs.push(seq);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::error!(sink = %label, seq, error = %e, "undecodable spool record skipped");
                        self.metrics.spool_dropped("write_error", 1);
                    }
                }
            }
            if batch.is_empty() {
                if next > self.spool.cursor(&self.id) {
                    self.ack(next); // only records this sink does not take
                    continue;
                }
                self.publish(None);
                tokio::select! {
                    _ = head.changed() => {}
                    _ = stop.changed() => {}
                }
                continue;
            }
            self.publish(Some(batch[0].accepted_ms));
            let result = tokio::select! {
                r = self.sink.send(&batch) => r,
                _ = stop.changed() => break,
            };
            match result {
                Ok(()) => {
                    self.ack(next);
                    self.delivered(&batch, &fits);
                    backoff.reset();
                }
                Err(e) => {
                    if e.acked > 0 {
                        self.ack(seqs[e.acked - 1] + 1);
                        self.delivered(&batch[..e.acked], &fits[..e.acked]);
                    }
                    if e.rejected && e.acked < batch.len() {
                        tracing::error!(sink = %label, uid = %batch[e.acked].uid, reason = %e.reason,
                            "receiver refused a record for good; skipped");
                        self.metrics.sink_rejected(&label);
                        self.ack(seqs[e.acked] + 1);
                        continue;
                    }
                    if e.shrink {
                        single_until = next;
                    }
                    self.metrics.sink_retry(&label);
                    let delay = match e.retry_after {
                        Some(d) => d.min(self.retry.max.max(Duration::from_secs(300))),
                        None => backoff.next_delay(),
                    };
                    tracing::warn!(sink = %label, reason = %e.reason, retry_in = ?delay, "delivery failed; will retry");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = stop.changed() => break,
                    }
                }
            }
        }
        let _ = self.sink.flush().await;
        self.publish(None);
    }

    /// Trims `r` into the sink's record budget (`budget.rs`) when it is over it.
    /// Only an oversized record is parsed; what the spool holds stays whole (a replay
    /// trims the same way).
    fn fit(&self, r: &mut Record) -> Fit {
        if self.record_max_bytes == 0 {
            return Fit::Whole;
        }
        let max = self.sink.body_budget(r, self.record_max_bytes);
        let body = r.body(self.format);
        if body.len() <= max {
            return Fit::Whole;
        }
        let format = r.body_format(self.format);
        let mut v: serde_json::Value = match serde_json::from_str(body) {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(sink = self.sink.label(), uid = %r.uid, error = %e, "record body is not JSON; sent as it is");
                return Fit::OverBudget;
            }
        };
        let fit = budget::fit(&mut v, format, max);
        match serde_json::value::to_raw_value(&v) {
            Ok(raw) => r.set_body(self.format, raw),
            Err(e) => {
                tracing::error!(sink = self.sink.label(), uid = %r.uid, error = %e, "trimmed record not serializable; sent untrimmed");
                return Fit::OverBudget;
            }
        }
        if fit == Fit::OverBudget {
            tracing::warn!(sink = self.sink.label(), uid = %r.uid, kind = %r.kind,
                bytes = r.body(self.format).len(), budget = max,
                "record over the budget even trimmed; sent whole (a receiver may cut it)");
        }
        fit
    }

    fn delivered(&self, batch: &[Record], fits: &[Fit]) {
        let label = self.sink.label();
        self.metrics.sink_sent(label, batch.len() as u64);
        for fit in fits {
            match fit {
                Fit::Whole => {}
                Fit::Trimmed => self.metrics.record_trimmed(label),
                Fit::OverBudget => self.metrics.record_over_budget(label),
            }
        }
        let now = now_ms();
        for r in batch {
            self.metrics
                .observe_delivery(label, now.saturating_sub(r.accepted_ms) as f64 / 1000.0);
        }
    }
}

/// The delivery loops, each on a task of its own.
pub struct Running {
    stop: watch::Sender<bool>,
    loops: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    pub fn start(workers: Vec<Worker>) -> Self {
        let (stop, stop_rx) = watch::channel(false);
        let loops = workers
            .into_iter()
            .map(|w| tokio::spawn(w.run(stop_rx.clone())))
            .collect();
        Self { stop, loops }
    }

    /// Lets the loops send what is spooled for up to `grace` (less once every sink has
    /// caught up with the spool's head), then stops them: the rest waits in the spool
    /// for the next start.
    pub async fn stop(self, spool: Option<&Spool>, grace: Duration) {
        if let Some(spool) = spool {
            let deadline = tokio::time::Instant::now() + grace;
            while tokio::time::Instant::now() < deadline && !self.loops.iter().all(|l| l.is_finished()) {
                let head = spool.head();
                if spool.min_cursor() >= head {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let _ = self.stop.send(true);
        for l in self.loops {
            let _ = l.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let mut b = Backoff::new(RetryPolicy {
            base: Duration::from_millis(100),
            max: Duration::from_secs(2),
        });
        let d: Vec<Duration> = (0..10).map(|_| b.next_delay()).collect();
        assert!(d[0] >= Duration::from_millis(50) && d[0] <= Duration::from_millis(100));
        assert!(d[3] >= Duration::from_millis(400) && d[3] <= Duration::from_millis(800));
        assert!(d.iter().all(|x| *x <= Duration::from_secs(2)));
        assert!(d[9] >= Duration::from_secs(1));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
