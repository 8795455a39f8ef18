//! `test_unknown_fields` over Streamable HTTP. rmcp's HTTP service only takes a typed handler, whose
//! model drops members no revision defines, so they are added here at the edge: the tool's call is
//! answered here with the raw result, and its `tools/list` entry gets the extra member on the way out.
//! (stdio and SSE wrap the handler instead: `crate::unknown_fields`.)

use axum::{
    body::{Body, Bytes},
    response::{IntoResponse, Response},
};
use futures::StreamExt as _;
use http::{StatusCode, header};
use rmcp::transport::streamable_http_server::session::{
    SessionManager as _, local::LocalSessionManager,
};
use serde_json::{Value, json};

use crate::unknown_fields::{TOOL, add_to_listing, call_result};

/// What the edge does with a POSTed message.
pub enum Plan {
    /// Not ours: pass through untouched.
    PassOn,
    /// A `tools/list`: add the member to the answer.
    RewriteListing,
    /// The tool's call, with its request id: answered here.
    Answer(Value),
}

pub fn plan(message: &Value) -> Plan {
    let (Some(id), Some(method)) = (
        message.get("id"),
        message.get("method").and_then(Value::as_str),
    ) else {
        return Plan::PassOn;
    };
    match method {
        "tools/list" => Plan::RewriteListing,
        "tools/call" if message.pointer("/params/name").and_then(Value::as_str) == Some(TOOL) => {
            Plan::Answer(id.clone())
        }
        _ => Plan::PassOn,
    }
}

/// The tool's answer, as a plain JSON response (clients must accept JSON as well as SSE). `None`
/// for an unknown session, so rmcp gives its own 404.
pub async fn answer(sessions: &LocalSessionManager, session: &str, id: Value) -> Option<Response> {
    let known = sessions.has_session(&session.into()).await.unwrap_or(false);
    if !known {
        return None;
    }
    let body = json!({ "jsonrpc": "2.0", "id": id, "result": call_result() }).to_string();
    Some(
        (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response(),
    )
}

/// Whether a message is a 2026-07-28 (or later) request: its `_meta` names the version.
pub fn is_modern(message: &Value) -> bool {
    message
        .pointer("/params/_meta/io.modelcontextprotocol~1protocolVersion")
        .and_then(Value::as_str)
        .is_some_and(|version| version >= "2026-07-28")
}

/// The tool's answer to a 2026-07-28 request, which also says `resultType`.
pub fn answer_modern(id: Value) -> Response {
    let mut result = call_result();
    result["resultType"] = json!("complete");
    let body = json!({ "jsonrpc": "2.0", "id": id, "result": result }).to_string();
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

/// Add the member to a `tools/list` answer, JSON or SSE. SSE is rewritten event by event as it
/// streams, so nothing waits for the stream to end.
pub async fn rewrite_listing(response: Response) -> Response {
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let (mut parts, body) = response.into_parts();
    // The length changes.
    parts.headers.remove(header::CONTENT_LENGTH);
    if content_type.starts_with("application/json") {
        let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
            return StatusCode::BAD_GATEWAY.into_response();
        };
        return Response::from_parts(parts, Body::from(rewrite_message(&bytes)));
    }
    if !content_type.starts_with("text/event-stream") {
        return Response::from_parts(parts, body);
    }
    let start = (body.into_data_stream(), Vec::<u8>::new(), false);
    let events = futures::stream::unfold(start, |(mut inner, mut buf, ended)| async move {
        loop {
            if let Some(end) = find_event_end(&buf) {
                let event: Vec<u8> = buf.drain(..end).collect();
                let out = Bytes::from(rewrite_event(&event));
                return Some((Ok::<_, axum::Error>(out), (inner, buf, ended)));
            }
            if ended {
                if buf.is_empty() {
                    return None;
                }
                let rest = Bytes::from(std::mem::take(&mut buf));
                return Some((Ok(rest), (inner, buf, true)));
            }
            match inner.next().await {
                Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
                Some(Err(error)) => return Some((Err(error), (inner, buf, true))),
                None => return Some((Ok(Bytes::new()), (inner, buf, true))),
            }
        }
    });
    Response::from_parts(parts, Body::from_stream(events))
}

/// Just past the blank line that ends the first complete event in `buf`.
fn find_event_end(buf: &[u8]) -> Option<usize> {
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|at| at + 2);
    let crlf = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| at + 4);
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// One SSE event with its `data:` line rewritten when it is a `tools/list` result.
fn rewrite_event(event: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(event);
    let mut out = String::with_capacity(text.len() + 128);
    for line in text.split_inclusive('\n') {
        match line.strip_prefix("data:") {
            Some(data) if !data.trim().is_empty() => {
                let eol = &data[data.trim_end().len()..];
                let json =
                    String::from_utf8_lossy(&rewrite_message(data.trim().as_bytes())).into_owned();
                out.push_str("data: ");
                out.push_str(&json);
                out.push_str(eol);
            }
            _ => out.push_str(line),
        }
    }
    out.into_bytes()
}

/// A JSON-RPC response carrying tools gets the member; anything else is returned as it was.
fn rewrite_message(bytes: &[u8]) -> Vec<u8> {
    let Ok(mut message) = serde_json::from_slice::<Value>(bytes) else {
        return bytes.to_vec();
    };
    let Some(result) = message
        .get_mut("result")
        .filter(|r| r.get("tools").is_some())
    else {
        return bytes.to_vec();
    };
    add_to_listing(result);
    message.to_string().into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_listing_events_get_the_member_and_others_pass() {
        let listing = json!({ "jsonrpc": "2.0", "id": 2, "result": { "tools": [{ "name": TOOL }, { "name": "echo" }] } });
        let event = format!("id: 1/2\ndata: {listing}\n\n");
        let out: Value = String::from_utf8(rewrite_event(event.as_bytes()))
            .unwrap()
            .strip_prefix("id: 1/2\ndata: ")
            .and_then(|rest| serde_json::from_str(rest.trim_end()).ok())
            .unwrap();
        assert!(out["result"]["tools"][0]["x_unknown_field"].is_object());
        assert!(out["result"]["tools"][1].get("x_unknown_field").is_none());
        let priming = b"id: 0/2\nretry: 1000\ndata: \n\n";
        assert_eq!(rewrite_event(priming), priming);
        assert_eq!(find_event_end(b"a\n\nb"), Some(3));
    }

    #[test]
    fn only_the_tool_call_and_listings_are_planned() {
        let call = json!({ "jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": { "name": TOOL } });
        assert!(matches!(plan(&call), Plan::Answer(id) if id == 7));
        let other = json!({ "jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": { "name": "echo" } });
        assert!(matches!(plan(&other), Plan::PassOn));
        let list = json!({ "jsonrpc": "2.0", "id": 8, "method": "tools/list" });
        assert!(matches!(plan(&list), Plan::RewriteListing));
    }
}
