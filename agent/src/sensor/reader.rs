//! Draining a ring buffer: woken by the kernel (epoll through tokio's `AsyncFd`) once
//! enough data is waiting, and otherwise on a short timer, because producers submit
//! with `BPF_RB_NO_WAKEUP` to keep per-event cost low.

use std::{os::fd::AsRawFd, sync::Arc, time::Duration};

use anyhow::Result;
use aya::maps::{MapData, RingBuf};
use tokio::{io::unix::AsyncFd, sync::mpsc};

use super::{decode, SensorEvent};
use crate::{clock, metrics::Metrics, shutdown::Shutdown};

/// Upper bound on records taken per drain before handing the batch on, so one busy
/// buffer cannot starve the runtime.
const MAX_BATCH: usize = 4096;

pub async fn run_ring_reader(
    ring: RingBuf<MapData>,
    tx: mpsc::Sender<SensorEvent>,
    metrics: Arc<Metrics>,
    poll_interval: Duration,
    mut shutdown: Shutdown,
) -> Result<()> {
    tracing::debug!(fd = ring.as_raw_fd(), "ring buffer reader started");
    // SAFETY: the RingBuf owns its map fd and keeps it open, unchanged, until it is
    // dropped together with this AsyncFd.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE)? };
    let mut tick = tokio::time::interval(poll_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        let stopping = tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard?;
                guard.clear_ready();
                false
            }
            _ = tick.tick() => false,
            _ = shutdown.wait() => true,
        };
        loop {
            drain(ring.get_mut(), &mut batch, &metrics);
            let full = batch.len() == MAX_BATCH;
            for ev in batch.drain(..) {
                // Backpressure: if the pipeline is slow the ring fills and the kernel
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

fn drain(ring: &mut RingBuf<MapData>, batch: &mut Vec<SensorEvent>, metrics: &Metrics) {
    let now = clock::boottime_ns();
    while batch.len() < MAX_BATCH {
        let Some(item) = ring.next() else { break };
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
}
