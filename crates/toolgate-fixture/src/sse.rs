//! Legacy HTTP+SSE serving (MCP 2024-11-05): `GET /sse` opens a session and its event stream,
//! whose first event (`endpoint`) names where to POST messages (`/message?sessionId=…`); every
//! server→client message then follows on the stream as an `event: message`.
//!
//! rmcp no longer ships this server transport, but an rmcp service runs over any Sink/Stream pair
//! of messages. So each session is the same `Fixture` as on stdio and Streamable HTTP, wired to
//! two channels: POST bodies go into one, the event stream is read from the other. The stream
//! belongs to the session: when the client drops it, the session ends.

use std::{
    collections::HashMap,
    convert::Infallible,
    hash::{BuildHasher as _, RandomState},
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Context as _;
use axum::{
    Router,
    body::{Body, Bytes},
    extract::{Request, State},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use clap::Args;
use futures::{SinkExt as _, StreamExt as _, channel::mpsc};
use http::{StatusCode, header};
use rmcp::{
    ServiceExt as _,
    model::{ClientJsonRpcMessage, ServerJsonRpcMessage},
};
use tokio_util::sync::CancellationToken;

use crate::{
    server::{Fixture, FixtureConfig},
    unknown_fields::WithUnknownFields,
};

/// Keep-alive comments on idle streams, so proxies do not cut them.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Messages queued per direction before a writer waits.
const QUEUE: usize = 64;

#[derive(Debug, Args)]
pub struct SseArgs {
    /// Address to listen on. Port 0 picks a free port; the chosen URL is printed on stdout.
    #[arg(long, default_value = "127.0.0.1:3002")]
    listen: SocketAddr,
}

type Inbox = mpsc::Sender<ClientJsonRpcMessage>;

#[derive(Clone)]
struct AppState {
    config: Arc<FixtureConfig>,
    /// Open sessions by id: where their POSTed messages go.
    sessions: Arc<Mutex<HashMap<String, Inbox>>>,
    shutdown: CancellationToken,
}

impl AppState {
    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, Inbox>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub async fn serve(config: FixtureConfig, args: SseArgs) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let local = listener.local_addr().context("no local address")?;
    let shutdown = CancellationToken::new();
    let state = AppState {
        config: Arc::new(config),
        sessions: Arc::default(),
        shutdown: shutdown.clone(),
    };
    let app = Router::new()
        .route("/sse", get(open_session))
        .route("/message", post(receive))
        .with_state(state);

    // The one line on stdout in SSE mode: scripts read the URL from it (useful with port 0).
    println!("listening on http://{local}/sse");
    tracing::info!(url = %format!("http://{local}/sse"), "serving MCP over HTTP+SSE (2024-11-05)");

    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            crate::http::stop_signal().await;
            tracing::info!("shutting down");
            // Ends the open event streams; graceful shutdown would wait for them forever.
            shutdown.cancel();
        })
        .await
        .context("HTTP server failed")
}

/// 128 random bits as hex: a session id is the only credential a POST carries.
fn new_session_id() -> String {
    let half = || RandomState::new().hash_one(std::time::Instant::now());
    format!("{:016x}{:016x}", half(), half())
}

/// Removes a session when its event stream is dropped, which ends the service (its inbox closes).
struct SessionGuard {
    id: String,
    state: AppState,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.state.sessions().remove(&self.id);
        tracing::debug!(session = %self.id, "SSE stream closed; session ended");
    }
}

fn event(name: &str, data: &str) -> Bytes {
    // `data` is one line: JSON from serde_json never contains a raw newline.
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

async fn open_session(State(state): State<AppState>) -> Response {
    let id = new_session_id();
    let (inbox, from_client) = mpsc::channel::<ClientJsonRpcMessage>(QUEUE);
    let (to_client, outbox) = mpsc::channel::<ServerJsonRpcMessage>(QUEUE);
    state.sessions().insert(id.clone(), inbox);

    let service = WithUnknownFields(Fixture::new(state.config.clone(), None));
    let session = id.clone();
    tokio::spawn(async move {
        match service.serve((to_client, from_client)).await {
            Ok(running) => {
                if let Err(error) = running.waiting().await {
                    tracing::warn!(%session, %error, "session ended abnormally");
                }
            }
            Err(error) => tracing::info!(%session, %error, "session ended before initialize"),
        }
    });

    let endpoint = event("endpoint", &format!("/message?sessionId={id}"));
    let guard = SessionGuard {
        id,
        state: state.clone(),
    };
    let shutdown = state.shutdown.clone();
    let messages = futures::stream::unfold(
        (outbox, guard, shutdown),
        |(mut outbox, guard, shutdown)| async move {
            let next = tokio::select! {
                next = tokio::time::timeout(KEEP_ALIVE, outbox.next()) => next,
                () = shutdown.cancelled() => return None,
            };
            let chunk = match next {
                Err(_) => Bytes::from_static(b": keep-alive\n\n"),
                Ok(None) => return None,
                Ok(Some(message)) => match serde_json::to_string(&message) {
                    Ok(json) => event("message", &json),
                    Err(error) => {
                        tracing::warn!(%error, "cannot serialise a message; ending the stream");
                        return None;
                    }
                },
            };
            Some((Ok::<_, Infallible>(chunk), (outbox, guard, shutdown)))
        },
    );
    let body = futures::stream::once(async move { Ok(endpoint) }).chain(messages);
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// The `sessionId` query parameter (hex, so no percent-decoding is needed).
fn session_param(request: &Request) -> Option<String> {
    request
        .uri()
        .query()?
        .split('&')
        .find_map(|pair| pair.strip_prefix("sessionId="))
        .map(str::to_owned)
}

async fn receive(State(state): State<AppState>, request: Request) -> Response {
    let Some(id) = session_param(&request) else {
        return (
            StatusCode::BAD_REQUEST,
            "sessionId query parameter required",
        )
            .into_response();
    };
    let Some(mut inbox) = state.sessions().get(&id).cloned() else {
        return (StatusCode::NOT_FOUND, "unknown session").into_response();
    };
    let body = match axum::body::to_bytes(request.into_body(), 4 * 1024 * 1024).await {
        Ok(b) => b,
        Err(error) => return (StatusCode::BAD_REQUEST, error.to_string()).into_response(),
    };
    let message: ClientJsonRpcMessage = match serde_json::from_slice(&body) {
        Ok(m) => m,
        Err(error) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("not a JSON-RPC message: {error}"),
            )
                .into_response();
        }
    };
    if inbox.send(message).await.is_err() {
        return (StatusCode::NOT_FOUND, "the session has ended").into_response();
    }
    StatusCode::ACCEPTED.into_response()
}
