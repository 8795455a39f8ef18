//! The 2024-11-05 HTTP+SSE transport: `GET /sse` opens an event stream whose
//! first event names the `/message?sessionId=…` URL the client then POSTs its
//! messages to; answers and notifications go out on the stream. The session
//! ends when the stream does.

use super::{
    AppState, Peer, Reading, SseBody, accepts, bad_request, incoming, rpc_error, source, sse_body,
};
use crate::auth::Principal;
use crate::gateway::audit::Refusal;
use crate::gateway::stream::StreamKind;
use crate::gateway::{EventStream, Session};
use crate::jsonrpc::{self, ErrorObject, Kind, Message, code};
use crate::sse::format_event;
use axum::body::Bytes;
use axum::extract::{Extension, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// One 2024-11-05 SSE connection: its stream exists before `initialize` makes a session.
pub(super) struct LegacyConn {
    /// The principal that opened the stream: only it may post to it.
    owner: String,
    stream: Arc<EventStream>,
    session: Mutex<Option<Arc<Session>>>,
}

/// Ends a legacy connection's session when its event stream is dropped.
struct LegacyGuard {
    id: String,
    state: AppState,
}

impl Drop for LegacyGuard {
    fn drop(&mut self) {
        let conn = self
            .state
            .legacy
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
        let session = conn.and_then(|c| c.session.lock().unwrap_or_else(|p| p.into_inner()).take());
        if let Some(s) = session {
            let gw = self.state.gw.clone();
            tokio::spawn(async move { gw.close_session(&s.id).await });
        }
    }
}

pub(super) async fn sse(
    State(state): State<AppState>,
    Extension(principal): Extension<Arc<Principal>>,
    headers: HeaderMap,
) -> Response {
    if !accepts(&headers, "text/event-stream") {
        return StatusCode::NOT_ACCEPTABLE.into_response();
    }
    let bytes: [u8; 16] = rand::random();
    let id = crate::seal::hex(&bytes);
    let conn = Arc::new(LegacyConn {
        owner: principal.key(),
        stream: EventStream::new(0),
        session: Mutex::new(None),
    });
    state
        .legacy
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(id.clone(), conn.clone());
    let endpoint = format_event(None, Some("endpoint"), &format!("/message?sessionId={id}"));
    let guard = LegacyGuard {
        id,
        state: state.clone(),
    };
    sse_body(SseBody {
        stream: conn.stream.clone(),
        reading: Reading::Claim,
        closed: state.gw.stop.clone(),
        keep_alive: state.keep_alive,
        ids: false,
        first: Some(endpoint),
        _guard: guard,
        _open: state.gw.streams.open(StreamKind::Legacy),
    })
}

pub(super) async fn message(
    State(state): State<AppState>,
    Extension(principal): Extension<Arc<Principal>>,
    peer: Peer,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(id) = query.get("sessionId") else {
        return bad_request("Bad Request: sessionId query parameter is required");
    };
    let conn = state
        .legacy
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(id)
        .cloned()
        .filter(|c| {
            let own = c.owner == principal.key();
            if !own {
                tracing::warn!(principal = %principal.key(), owner = %c.owner, "refused a session id presented by another principal");
                state.gw.audit_refusal(Refusal {
                    principal: Some(&principal),
                    source: source(&peer),
                    path: "/message",
                    status: 404,
                    code: "foreign_session",
                    reason: "a session id of another principal",
                });
            }
            own
        });
    let Some(conn) = conn else {
        return rpc_error(
            StatusCode::NOT_FOUND,
            None,
            ErrorObject::new(-32001, "Session not found"),
        );
    };
    let msg = match incoming(&state, &body, &headers) {
        Ok(m) => m,
        Err(r) => return *r,
    };
    let session = conn
        .session
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    match (session, msg.kind()) {
        (None, Kind::Request) if msg.method() == "initialize" => {
            let params = msg.params.clone().unwrap_or(Value::Null);
            let (session, result) = state.gw.initialize(
                &params,
                principal,
                "/sse",
                Some(conn.stream.clone()),
                source(&peer),
            );
            *conn.session.lock().unwrap_or_else(|p| p.into_inner()) = Some(session);
            let id = msg.id.clone().unwrap_or(jsonrpc::Id::Num(0));
            conn.stream.push(&Message::response_value(id, &result));
        }
        (None, Kind::Request) => {
            let error = ErrorObject::new(code::INVALID_REQUEST, "send initialize first");
            conn.stream
                .push(&Message::error_response(msg.id.clone(), error));
        }
        (None, _) => {}
        (Some(session), Kind::Request) => {
            let gw = state.gw.clone();
            tokio::spawn(async move {
                let out = session.standalone.clone();
                if let Some(resp) = gw.handle_request(&session, msg, &out).await {
                    out.push(&resp);
                }
            });
        }
        (Some(session), _) => state.gw.handle_client_message(&session, msg).await,
    }
    StatusCode::ACCEPTED.into_response()
}
