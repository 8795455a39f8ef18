//! SSE polling (SEP-1699) for `test_reconnection`: end the call's SSE stream after its priming event, answer after the client resumes.
//!
//! rmcp can resume a request's stream from `Last-Event-ID`, but a tool handler cannot reach the
//! stream it answers on. So the HTTP edge does the closing: it spots the `tools/call` of
//! `test_reconnection`, lets the priming event (`id: 0/N`, empty data, `retry:`) through and then
//! ends the response body. rmcp keeps the call's channel and caches what the handler sends. When
//! the client comes back with `GET` + `Last-Event-ID: 0/N`, rmcp replays from there, and this
//! module wakes the handler, which then answers on the resumed stream.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    body::{Body, Bytes},
    extract::Request,
    middleware::Next,
    response::{IntoResponse, Response},
};
use futures::StreamExt as _;
use http::{StatusCode, header};
use serde_json::Value;
use tokio::sync::Notify;

/// Only small bodies are looked into; a `test_reconnection` call is a few hundred bytes.
pub(super) const PEEK_LIMIT: u64 = 64 * 1024;

/// Sessions with a `test_reconnection` call waiting for the client to resume its stream.
#[derive(Debug, Default)]
pub struct Reconnects {
    waiting: Mutex<HashMap<String, Arc<Notify>>>,
}

impl Reconnects {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Notify>>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A `test_reconnection` call is on its way in `session`.
    fn expect(&self, session: &str) {
        self.lock().entry(session.to_owned()).or_default();
    }

    /// The client resumed a request stream of `session`. A permit is stored if the handler is
    /// not waiting yet, so the order of the two does not matter.
    fn resumed(&self, session: &str) {
        if let Some(notify) = self.lock().get(session) {
            notify.notify_one();
        }
    }

    /// The session is gone: nothing will resume.
    pub fn forget(&self, session: &str) {
        self.lock().remove(session);
    }

    /// Called by `test_reconnection`: waits until the client resumed, at most `timeout`.
    /// Returns false at once when this call's stream was not closed by the edge.
    pub async fn wait_for_resume(&self, session: &str, timeout: Duration) -> bool {
        let Some(notify) = self.lock().get(session).cloned() else {
            return false;
        };
        let resumed = tokio::time::timeout(timeout, notify.notified())
            .await
            .is_ok();
        self.forget(session);
        resumed
    }
}

/// POST: if this is the `test_reconnection` call, cut its SSE response after the priming event.
pub async fn post(reconnects: &Reconnects, request: Request, next: Next) -> Response {
    let small = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|len| len <= PEEK_LIMIT);
    let Some(session) = super::session_id(&request).filter(|_| small) else {
        return next.run(request).await;
    };
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, PEEK_LIMIT as usize).await else {
        return (StatusCode::BAD_REQUEST, "Bad Request: unreadable body").into_response();
    };
    let is_reconnection_call = is_reconnection_call(&bytes);
    if is_reconnection_call {
        reconnects.expect(&session);
    }
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    let is_sse = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    if !is_reconnection_call || !response.status().is_success() || !is_sse {
        if is_reconnection_call {
            reconnects.forget(&session);
        }
        return response;
    }
    let (parts, body) = response.into_parts();
    Response::from_parts(parts, end_after_priming_event(body))
}

/// GET with `Last-Event-ID: <index>/<request>` resumes a request's stream (ids without a `/`
/// belong to the standalone GET stream). Wake the handler once rmcp has switched the stream over.
pub async fn get(reconnects: &Reconnects, request: Request, next: Next) -> Response {
    let resumes_a_request = request
        .headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|id| id.contains('/'));
    let session = super::session_id(&request).filter(|_| resumes_a_request);
    let response = next.run(request).await;
    if let Some(session) = session
        && response.status().is_success()
    {
        reconnects.resumed(&session);
    }
    response
}

fn is_reconnection_call(body: &[u8]) -> bool {
    let Ok(message) = serde_json::from_slice::<Value>(body) else {
        return false;
    };
    message.get("id").is_some()
        && message.get("method").and_then(Value::as_str) == Some("tools/call")
        && message.pointer("/params/name").and_then(Value::as_str) == Some("test_reconnection")
}

/// Passes the body through up to the end of its first SSE event that has an `id:`, then ends it.
fn end_after_priming_event(body: Body) -> Body {
    struct Cut {
        inner: axum::body::BodyDataStream,
        seen: Vec<u8>,
        done: bool,
    }
    let start = Cut {
        inner: body.into_data_stream(),
        seen: Vec::new(),
        done: false,
    };
    let stream = futures::stream::unfold(start, |mut cut| async move {
        if cut.done {
            return None;
        }
        let chunk = match cut.inner.next().await? {
            Ok(chunk) => chunk,
            Err(error) => return Some((Err(error), cut)),
        };
        let before = cut.seen.len();
        cut.seen.extend_from_slice(&chunk);
        let chunk = match end_of_first_event_with_id(&cut.seen) {
            Some(end) => {
                cut.done = true;
                chunk.slice(..end - before)
            }
            None => chunk,
        };
        Some((Ok::<Bytes, axum::Error>(chunk), cut))
    });
    Body::from_stream(stream)
}

/// Where the first complete SSE event with an `id:` field ends (just past its blank line).
fn end_of_first_event_with_id(buf: &[u8]) -> Option<usize> {
    let text = String::from_utf8_lossy(buf);
    let mut start = 0;
    loop {
        let rest = &text[start..];
        let (len, sep) = [("\n\n", 2), ("\r\n\r\n", 4)]
            .into_iter()
            .filter_map(|(s, n)| rest.find(s).map(|at| (at, n)))
            .min()?;
        let event = &rest[..len];
        let end = start + len + sep;
        if event.lines().any(|line| line.starts_with("id:")) {
            return Some(end);
        }
        start = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_priming_event() {
        let buf = b": keep-alive\n\nid: 0/3\nretry: 1000\ndata: \n\nid: 1/3\ndata: {}\n\n";
        let end = end_of_first_event_with_id(buf).unwrap();
        assert_eq!(
            &buf[..end],
            b": keep-alive\n\nid: 0/3\nretry: 1000\ndata: \n\n"
        );
        assert_eq!(end_of_first_event_with_id(b"id: 0/3\ndata:"), None);
    }

    #[test]
    fn spots_only_the_reconnection_call() {
        let call = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"test_reconnection","arguments":{}}}"#;
        assert!(is_reconnection_call(call));
        let other = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}"#;
        assert!(!is_reconnection_call(other));
        assert!(!is_reconnection_call(b"not json"));
    }

    #[tokio::test]
    async fn a_resume_before_the_wait_is_not_lost() {
        let reconnects = Reconnects::default();
        reconnects.expect("s");
        reconnects.resumed("s");
        assert!(
            reconnects
                .wait_for_resume("s", Duration::from_secs(1))
                .await
        );
        assert!(
            !reconnects
                .wait_for_resume("s", Duration::from_secs(1))
                .await
        );
    }
}
