//! The agent's HTTP listener (loopback by default): health, readiness, Prometheus
//! metrics and the process table.

pub mod client;

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};

use anyhow::{Context as _, Result};
use axum::{
    extract::{Query, State},
    http::{header, StatusCode},
    response::IntoResponse,
    routing::get,
    Json, Router,
};
use serde::Deserialize;

use crate::{
    mcp::inventory::SharedInventory,
    metrics::Metrics,
    shutdown::Shutdown,
    state::{exe_hash::ExeHasher, view::ProcessView, SharedTable},
};

/// Default listen address: loopback only; port chosen for mcpwatch.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9477";

#[derive(Clone)]
pub struct ApiState {
    pub metrics: Arc<Metrics>,
    /// Set once every program is attached and the `/proc` seed is done.
    pub ready: Arc<AtomicBool>,
    pub table: SharedTable,
    pub hasher: ExeHasher,
    pub inventory: SharedInventory,
}

pub async fn serve(addr: SocketAddr, state: ApiState, mut shutdown: Shutdown) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the HTTP listener to {addr}"))?;
    tracing::info!(%addr, "HTTP listener up (/healthz /readyz /metrics /v1/processes /v1/mcp-servers)");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { shutdown.wait().await })
        .await
        .context("HTTP listener failed")
}

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/processes", get(processes))
        .route("/v1/mcp-servers", get(mcp_servers))
        .with_state(state)
}

async fn readyz(State(s): State<ApiState>) -> impl IntoResponse {
    if s.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "starting: sensors attaching or /proc seed running\n",
        )
    }
}

async fn metrics(State(s): State<ApiState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
}

#[derive(Deserialize)]
struct ProcessQuery {
    pid: Option<u32>,
    /// Only live processes (default: live and recently exited).
    #[serde(default)]
    live: bool,
}

async fn processes(State(s): State<ApiState>, Query(q): Query<ProcessQuery>) -> impl IntoResponse {
    let table = s.table.read().expect("table lock");
    let mut out: Vec<ProcessView> = match q.pid {
        Some(pid) => table.by_pid(pid),
        None => table.iter().collect(),
    }
    .into_iter()
    .filter(|p| !q.live || p.is_alive())
    .map(|p| ProcessView::of(p, p.exe_file.and_then(|id| s.hasher.known(&id))))
    .collect();
    out.sort_by(|a, b| (a.pid, &a.start_time).cmp(&(b.pid, &b.start_time)));
    Json(out)
}

async fn mcp_servers(State(s): State<ApiState>) -> impl IntoResponse {
    Json(s.inventory.read().expect("inventory lock").list())
}
