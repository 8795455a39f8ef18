//! Streamable HTTP serving: rmcp's transport at `/mcp`, configured for DNS-rebinding protection, plus the edge fixes in this folder.
//!
//! rmcp's `StreamableHttpService` does the protocol work (sessions, SSE streams, priming events,
//! resumption with `Last-Event-ID`, Host and Origin checks). Two things it does not do are added
//! by one middleware in front of it:
//! - `sessions`: a DELETE for an unknown session id answers 404, not 202;
//! - `reconnect`: `test_reconnection` really closes its SSE stream mid-call (SEP-1699);
//! - `unknown_fields`: `test_unknown_fields` keeps the members rmcp's typed model would drop.

mod reconnect;
mod sessions;
mod unknown_fields;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context as _;
use axum::{
    Router,
    body::Body,
    extract::{Request, State},
    middleware::{self, Next},
    response::{IntoResponse as _, Response},
};
use clap::Args;
use http::{Method, StatusCode, header};
use rmcp::transport::{
    StreamableHttpServerConfig, StreamableHttpService,
    streamable_http_server::session::local::LocalSessionManager,
};
use tokio_util::sync::CancellationToken;

pub use reconnect::Reconnects;

use crate::server::{Fixture, FixtureConfig};

/// How long a client waits before reconnecting a closed SSE stream (the `retry:` field).
const SSE_RETRY: Duration = Duration::from_secs(1);
/// Keep-alive comments on idle SSE streams, so proxies do not cut them.
const SSE_KEEP_ALIVE: Duration = Duration::from_secs(15);

#[derive(Debug, Args)]
pub struct HttpArgs {
    /// Address to listen on. Port 0 picks a free port; the chosen URL is printed on stdout.
    #[arg(long, default_value = "127.0.0.1:3001")]
    listen: SocketAddr,
    /// Also accept this `Host` header (`name` or `name:port`). Loopback names are always accepted;
    /// anything else is refused with 403 to stop DNS-rebinding attacks.
    #[arg(long = "allow-host", value_name = "HOST")]
    allow_hosts: Vec<String>,
    /// Also accept browser requests from this `Origin` (`https://app.example.com:443`, `http://name:*`).
    /// Loopback origins are always accepted; a request with any other `Origin` is refused with 403.
    #[arg(long = "allow-origin", value_name = "ORIGIN")]
    allow_origins: Vec<String>,
}

/// What the edge middleware needs.
#[derive(Clone)]
struct Edge {
    sessions: Arc<LocalSessionManager>,
    reconnects: Arc<Reconnects>,
}

pub async fn serve(config: FixtureConfig, args: HttpArgs) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let local = listener.local_addr().context("no local address")?;
    let app = router(Arc::new(config), &args, local, shutdown.clone());

    // The one line on stdout in HTTP mode: scripts read the URL from it (useful with port 0).
    println!("listening on http://{local}/mcp");
    tracing::info!(url = %format!("http://{local}/mcp"), "serving MCP over Streamable HTTP");

    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            stop_signal().await;
            tracing::info!("shutting down");
            // Ends the open SSE streams; without this, graceful shutdown would wait for them forever.
            shutdown.cancel();
        })
        .await
        .context("HTTP server failed")
}

fn router(
    config: Arc<FixtureConfig>,
    args: &HttpArgs,
    local: SocketAddr,
    shutdown: CancellationToken,
) -> Router {
    let mut sessions = LocalSessionManager::default();
    sessions.session_config.sse_retry = Some(SSE_RETRY);
    let sessions = Arc::new(sessions);
    let reconnects = Arc::new(Reconnects::default());

    let transport = StreamableHttpServerConfig::default()
        .with_allowed_hosts(allowed_hosts(&args.allow_hosts, local))
        .with_allowed_origins(allowed_origins(&args.allow_origins))
        .with_sse_retry(Some(SSE_RETRY))
        .with_sse_keep_alive(Some(SSE_KEEP_ALIVE))
        .with_cancellation_token(shutdown);
    let per_session = {
        let reconnects = reconnects.clone();
        move || Ok(Fixture::new(config.clone(), Some(reconnects.clone())))
    };
    let mcp = StreamableHttpService::new(per_session, sessions.clone(), transport);

    let edge = Edge {
        sessions,
        reconnects,
    };
    Router::new()
        .route_service("/mcp", mcp)
        .layer(middleware::from_fn_with_state(edge, edge_fixes))
}

async fn edge_fixes(State(edge): State<Edge>, request: Request, next: Next) -> Response {
    match *request.method() {
        Method::DELETE => sessions::delete(&edge.sessions, &edge.reconnects, request, next).await,
        Method::POST => post(&edge, request, next).await,
        Method::GET => reconnect::get(&edge.reconnects, request, next).await,
        _ => next.run(request).await,
    }
}

async fn post(edge: &Edge, request: Request, next: Next) -> Response {
    let (request, message) = match peek(request).await {
        Ok(peeked) => peeked,
        Err(response) => return response,
    };
    let plan = message
        .as_ref()
        .map_or(unknown_fields::Plan::PassOn, unknown_fields::plan);
    match plan {
        unknown_fields::Plan::Answer(id) => {
            if let Some(session) = session_id(&request)
                && let Some(answer) =
                    unknown_fields::answer(&edge.sessions, &session, id.clone()).await
            {
                return answer;
            }
            // 2026-07-28 has no sessions: a request that is self-contained (its `_meta` names the
            // version) is answered as it is.
            if session_id(&request).is_none()
                && let Some(message) = &message
                && unknown_fields::is_modern(message)
            {
                return unknown_fields::answer_modern(id);
            }
            reconnect::post(&edge.reconnects, request, next).await
        }
        unknown_fields::Plan::RewriteListing => {
            let response = reconnect::post(&edge.reconnects, request, next).await;
            if !response.status().is_success() {
                return response;
            }
            unknown_fields::rewrite_listing(response).await
        }
        unknown_fields::Plan::PassOn => reconnect::post(&edge.reconnects, request, next).await,
    }
}

/// A small POST body as JSON, with the request rebuilt around the bytes read. Large bodies are
/// passed on unread: none of the edge fixes is about them.
async fn peek(request: Request) -> Result<(Request, Option<serde_json::Value>), Response> {
    let small = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|len| len <= reconnect::PEEK_LIMIT);
    if !small {
        return Ok((request, None));
    }
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, reconnect::PEEK_LIMIT as usize).await else {
        return Err((StatusCode::BAD_REQUEST, "Bad Request: unreadable body").into_response());
    };
    let message = serde_json::from_slice(&bytes).ok();
    Ok((Request::from_parts(parts, Body::from(bytes)), message))
}

/// Loopback names, the address we listen on when it is a specific one, and what the user added.
fn allowed_hosts(extra: &[String], local: SocketAddr) -> Vec<String> {
    let mut hosts: Vec<String> = ["localhost", "127.0.0.1", "::1"].map(String::from).into();
    if !local.ip().is_unspecified() && !local.ip().is_loopback() {
        hosts.push(local.ip().to_string());
    }
    hosts.extend(extra.iter().cloned());
    hosts
}

/// Browser origins on this machine, on any port, and what the user added.
fn allowed_origins(extra: &[String]) -> Vec<String> {
    let mut origins = Vec::new();
    for scheme in ["http", "https"] {
        for host in ["localhost", "127.0.0.1", "[::1]"] {
            origins.push(format!("{scheme}://{host}:*"));
        }
    }
    origins.extend(extra.iter().cloned());
    origins
}

pub(crate) async fn stop_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

/// The `Mcp-Session-Id` a request names, if it is readable.
fn session_id(request: &Request) -> Option<String> {
    request
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}
