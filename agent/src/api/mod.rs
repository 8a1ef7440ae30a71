//! The agent's HTTP listener (loopback by default): health, readiness, Prometheus
//! metrics, the process table, the MCP inventory and the recent audit records. Optional TLS and basic auth: `web_config.rs`.

pub mod web_config;

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
    output::recent_audit::{AuditFilter, RecentAudit},
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
    pub audit: RecentAudit,
}

pub async fn serve(
    addr: SocketAddr,
    state: ApiState,
    web: Option<web_config::WebConfig>,
    mut shutdown: Shutdown,
) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the HTTP listener to {addr}"))?;
    let mut app = router(state);
    if let Some(users) = web.as_ref().and_then(|w| w.users.clone()) {
        app = app.layer(axum::middleware::from_fn_with_state(
            users,
            web_config::require_basic_auth,
        ));
    }
    let tls = web.as_ref().and_then(|w| w.tls.clone());
    tracing::info!(%addr, tls = tls.is_some(), "HTTP listener up (/healthz /readyz /metrics /v1/processes /v1/mcp-servers)");
    if let Some(tls) = tls {
        return serve_tls(listener, app, tls, shutdown).await;
    }
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.wait().await })
        .await
        .context("HTTP listener failed")
}

/// HTTPS: TLS handshake per connection, then HTTP/1.1 on the same router.
async fn serve_tls(
    listener: tokio::net::TcpListener,
    app: Router,
    tls: Arc<rustls::ServerConfig>,
    mut shutdown: Shutdown,
) -> Result<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let (sock, peer) = tokio::select! {
            _ = shutdown.wait() => return Ok(()),
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting an HTTPS connection");
                    continue;
                }
            },
        };
        let (acceptor, app) = (acceptor.clone(), app.clone());
        tokio::spawn(async move {
            let handshake =
                tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(sock)).await;
            let stream = match handshake {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
            };
            let service = hyper_util::service::TowerToHyperService::new(app);
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%peer, error = %e, "HTTPS connection");
            }
        });
    }
}

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/processes", get(processes))
        .route("/v1/mcp-servers", get(mcp_servers))
        .route("/v1/audit", get(audit))
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

#[derive(Deserialize)]
struct AuditQuery {
    /// Records numbered above this (the `next` of the previous page).
    #[serde(default)]
    after: u64,
    server: Option<String>,
    tool: Option<String>,
    method: Option<String>,
    outcome: Option<String>,
    limit: Option<usize>,
}

/// The largest page `/v1/audit` returns.
const AUDIT_PAGE: usize = 1000;

async fn audit(State(s): State<ApiState>, Query(q): Query<AuditQuery>) -> impl IntoResponse {
    let filter = AuditFilter {
        server: q.server,
        tool: q.tool,
        method: q.method,
        outcome: q.outcome,
    };
    let limit = q.limit.unwrap_or(AUDIT_PAGE).min(AUDIT_PAGE);
    Json(s.audit.page(q.after, &filter, limit))
}
