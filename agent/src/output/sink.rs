//! The one interface every sink implements. A sink sends a batch of rendered records
//! and says how much of it the receiver acknowledged; retrying, backoff, cursors and
//! metrics are the delivery loop's job, not the sink's.

use std::time::Duration;

use futures::future::BoxFuture;

use super::record::Record;

/// Why a batch was not (fully) acknowledged.
#[derive(Debug)]
pub struct SendError {
    /// Leading records of the batch that were acknowledged anyway.
    pub acked: usize,
    /// The record after the acknowledged ones was refused for good (a 4xx on its
    /// content): it is counted as rejected and skipped, not retried forever.
    pub rejected: bool,
    /// The receiver refused the batch's content without saying which record: resend
    /// one record at a time to find it.
    pub shrink: bool,
    /// The receiver asked to wait this long (`Retry-After`).
    pub retry_after: Option<Duration>,
    pub reason: String,
}

impl SendError {
    pub fn retry(reason: impl Into<String>) -> Self {
        Self {
            acked: 0,
            rejected: false,
            shrink: false,
            retry_after: None,
            reason: reason.into(),
        }
    }

    pub fn after(mut self, acked: usize) -> Self {
        self.acked = acked;
        self
    }
}

pub trait Sink: Send {
    /// Metric label and log name.
    fn label(&self) -> &str;

    /// Most records per `send`.
    fn max_batch(&self) -> usize;

    /// How many bytes the JSON of `r` may take for a record budget of `max` (> 0):
    /// less when the sink's framing of this record exceeds what the budget leaves
    /// room for (a syslog header longer than usual).
    fn body_budget(&self, _r: &Record, max: usize) -> usize {
        max
    }

    /// Sends `batch` (never empty); Ok means every record was acknowledged.
    fn send<'a>(&'a mut self, batch: &'a [Record]) -> BoxFuture<'a, Result<(), SendError>>;

    /// Pushes buffered bytes out (in-line sinks buffer between sends).
    fn flush(&mut self) -> BoxFuture<'_, Result<(), SendError>> {
        Box::pin(async { Ok(()) })
    }
}
