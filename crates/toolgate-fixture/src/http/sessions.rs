//! Session lifecycle fix: DELETE of an unknown or already deleted session answers 404, as the spec requires.
//!
//! rmcp answers every DELETE that carries a session id with 202, known or not. Everything else
//! about the lifecycle is rmcp's own and already right: 400 for a non-initialize request without
//! `Mcp-Session-Id`, 404 for any request naming an unknown or deleted session.

use axum::{
    extract::Request,
    middleware::Next,
    response::{IntoResponse, Response},
};
use http::StatusCode;
use rmcp::transport::streamable_http_server::session::{
    SessionManager as _, local::LocalSessionManager,
};

use super::Reconnects;

pub async fn delete(
    sessions: &LocalSessionManager,
    reconnects: &Reconnects,
    request: Request,
    next: Next,
) -> Response {
    let Some(id) = super::session_id(&request) else {
        // rmcp answers 400: a DELETE must name a session.
        return next.run(request).await;
    };
    let known = sessions
        .has_session(&id.as_str().into())
        .await
        .unwrap_or(false);
    // rmcp still sees the request first, so its Host/Origin checks (403) and header checks (400)
    // keep priority over the 404.
    let response = next.run(request).await;
    if known {
        reconnects.forget(&id);
        return response;
    }
    if response.status().is_success() {
        return (StatusCode::NOT_FOUND, "Not Found: Session not found").into_response();
    }
    response
}
