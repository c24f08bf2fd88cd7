//! The admin endpoint: a small HTTP server for operators and scrapers.
//!
//! It binds to loopback only (the config refuses anything else) and every
//! request must carry `Authorization: Bearer <token>`; without it the answer
//! is 401 and nothing else. Routes:
//! - `GET /metrics` — Prometheus text: per-node counters, checkpoint progress,
//!   Kinesis lag per shard (see [`metrics`]);
//! - `GET /status`  — the same as JSON, in the shape of the run summary.

pub mod metrics;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;

use crate::config::model::AdminSpec;
use crate::pipeline::stats::Registry;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("admin endpoint: cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("admin endpoint: {0}")]
    Metrics(String),
}

struct AppState {
    pipeline: String,
    started: Instant,
    stats: Registry,
    prometheus: metrics::Prometheus,
    /// SHA-256 of the token: comparing digests takes the same time wherever
    /// a guess differs, and the token itself is not kept around.
    token_digest: [u8; 32],
}

/// A running admin server; stops when dropped.
pub struct AdminServer {
    /// Where it listens (port 0 resolved); start-up logs it, tests dial it.
    #[cfg_attr(not(test), allow(dead_code))]
    pub addr: SocketAddr,
    _stop: oneshot::Sender<()>,
}

/// Binds and serves in the background. Failing to bind is an error: a
/// pipeline that asked for an admin endpoint does not start without one.
pub async fn start(spec: &AdminSpec, pipeline: &str, stats: Registry) -> Result<AdminServer, AdminError> {
    let prometheus = metrics::Prometheus::install().map_err(AdminError::Metrics)?;
    let listener = tokio::net::TcpListener::bind(spec.listen.0)
        .await
        .map_err(|source| AdminError::Bind { addr: spec.listen.0, source })?;
    let addr = listener.local_addr().map_err(|source| AdminError::Bind { addr: spec.listen.0, source })?;
    let state = Arc::new(AppState {
        pipeline: pipeline.to_string(),
        started: Instant::now(),
        stats,
        prometheus,
        token_digest: Sha256::digest(spec.token.expose().as_bytes()).into(),
    });
    let app = router(state);
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
            let _ = stopped.await;
        });
        if let Err(e) = serve.await {
            tracing::warn!(error = %e, "admin endpoint stopped");
        }
    });
    // On stderr for people and scripts (port 0 picks a free port).
    eprintln!("admin endpoint: http://{addr} (GET /metrics, /status; bearer token required)");
    Ok(AdminServer { addr, _stop: stop })
}

fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_text))
        .route("/status", get(status))
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .with_state(state)
}

async fn authorize(State(s): State<Arc<AppState>>, headers: HeaderMap, req: Request, next: Next) -> Response {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| <[u8; 32]>::from(Sha256::digest(t.trim().as_bytes())));
    if given == Some(s.token_digest) {
        next.run(req).await
    } else {
        (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")], "a valid bearer token is required\n").into_response()
    }
}

async fn metrics_text(State(s): State<Arc<AppState>>) -> impl IntoResponse {
    let body = s.prometheus.render(&s.pipeline, &s.stats);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body)
}

async fn status(State(s): State<Arc<AppState>>) -> Json<serde_json::Value> {
    use std::sync::atomic::Ordering::Relaxed;
    let p = &s.stats.progress;
    Json(serde_json::json!({
        "pipeline": s.pipeline,
        "uptime_ms": s.started.elapsed().as_millis() as u64,
        "checkpoint": {
            "epoch": p.epoch.load(Relaxed),
            "count": p.checkpoints.load(Relaxed),
            "last_unix_ms": p.last_unix_ms.load(Relaxed),
            "last_duration_ms": p.last_duration_ms.load(Relaxed),
        },
        "nodes": s.stats.snapshot(),
    }))
}

#[cfg(test)]
mod tests;
