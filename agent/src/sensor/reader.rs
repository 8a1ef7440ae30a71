//! Draining the ring buffers: woken by the kernel (epoll through tokio's `AsyncFd`)
//! once enough data is waiting in any of them, and otherwise on a short timer, because
//! producers submit with `BPF_RB_NO_WAKEUP` to keep per-event cost low.
//!
//! One task drains every ring and merges each round by kernel timestamp, so the next
//! stage sees a process's fork and exec before the connections it makes right after:
//! separate readers would race and attribute those to the pre-exec image, or to no
//! process at all. Rings are drained in the order given, the process ring last, so
//! every process record older than the newest drained network record is in the round.

use std::{os::fd::AsRawFd, sync::Arc, time::Duration};

use anyhow::Result;
use aya::maps::{MapData, RingBuf};
use futures::future::select_all;
use tokio::{io::unix::AsyncFd, sync::mpsc};

use super::{decode, Recorder, SensorEvent};
use crate::{clock, metrics::Metrics, shutdown::Shutdown};

/// Upper bound on records taken from one ring per round before handing the batch on,
/// so one busy buffer cannot starve the runtime.
const MAX_BATCH: usize = 4096;

/// `recorder` gets every decoded event, in the order handed on (`--record`); it is
/// closed, its queue written out, when the reader returns.
pub async fn run_ring_reader(
    rings: Vec<RingBuf<MapData>>,
    tx: mpsc::Sender<SensorEvent>,
    recorder: Option<Recorder>,
    metrics: Arc<Metrics>,
    poll_interval: Duration,
    mut shutdown: Shutdown,
) -> Result<()> {
    let mut fds = Vec::with_capacity(rings.len());
    for ring in rings {
        tracing::debug!(fd = ring.as_raw_fd(), "ring buffer reader started");
        // SAFETY: the RingBuf owns its map fd and keeps it open, unchanged, until it is
        // dropped together with this AsyncFd.
        fds.push(unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE)? });
    }
    let mut tick = tokio::time::interval(poll_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        let stopping = {
            let readable = select_all(fds.iter().map(|fd| Box::pin(fd.readable())));
            tokio::select! {
                (guard, _, _) = readable => {
                    guard?.clear_ready();
                    false
                }
                _ = tick.tick() => false,
                _ = shutdown.wait() => true,
            }
        };
        loop {
            let mut full = false;
            for fd in fds.iter_mut() {
                full |= drain(fd.get_mut(), &mut batch, &metrics);
            }
            // Stable: records of one ring keep their order when timestamps tie.
            batch.sort_by_key(SensorEvent::ts_ns);
            for ev in batch.drain(..) {
                if let Some(r) = &recorder {
                    r.record(&ev);
                }
                // Backpressure: if the pipeline is slow the rings fill and the kernel
                // counts what it cannot reserve, so nothing is lost silently.
                if tx.send(ev).await.is_err() {
                    return Ok(());
                }
            }
            if !full {
                break;
            }
        }
        if stopping {
            return Ok(());
        }
    }
}

/// Takes up to [`MAX_BATCH`] records; true when it stopped at the limit.
fn drain(ring: &mut RingBuf<MapData>, batch: &mut Vec<SensorEvent>, metrics: &Metrics) -> bool {
    let now = clock::boottime_ns();
    let mut taken = 0;
    while taken < MAX_BATCH {
        let Some(item) = ring.next() else { return false };
        taken += 1;
        match decode(&item) {
            Ok(ev) => {
                metrics.event_decoded(ev.kind());
                metrics.observe_lag(now.saturating_sub(ev.ts_ns()));
                batch.push(ev);
            }
            Err(err) => {
                metrics.decode_error(err.reason());
                tracing::debug!(%err, "undecodable ring buffer record");
            }
        }
    }
    true
}
