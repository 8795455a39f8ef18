//! Legacy HTTP+SSE transport (MCP 2024-11-05): a GET event stream that first names
//! the endpoint to POST messages to, then carries every server→client message.

use super::streamable::{configured_headers, describe, http_client, redact};
use super::{Transport, TransportEvent, UpstreamError};
use crate::config::ServerConfig;
use crate::jsonrpc::{self, Id, Kind, Message};
use crate::sse;
use futures::StreamExt;
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub async fn open(
    name: &Arc<str>,
    cfg: &ServerConfig,
    max_message: usize,
) -> Result<Transport, UpstreamError> {
    let url = cfg.url.clone().unwrap_or_default();
    let headers = configured_headers(name, cfg)?;
    let unavailable = |reason: String| UpstreamError::Unavailable {
        server: name.clone(),
        reason,
    };
    let resp = http_client()
        .get(&url)
        .headers(headers.clone())
        .header(ACCEPT, "text/event-stream")
        .send()
        .await
        .map_err(|e| unavailable(describe(e)))?;
    if !resp.status().is_success() {
        return Err(unavailable(format!("GET answered HTTP {}", resp.status())));
    }
    let mut events = Box::pin(sse::events(resp.bytes_stream(), max_message));
    // The first event must be `endpoint`; give the server a bounded time to send it.
    let first = tokio::time::timeout(Duration::from_secs(15), events.next())
        .await
        .map_err(|_| unavailable("no `endpoint` event within 15s".into()))?;
    let endpoint = match first {
        Some(Ok(ev)) if ev.event.as_deref() == Some("endpoint") => ev.data,
        Some(Ok(ev)) => {
            return Err(unavailable(format!(
                "expected an `endpoint` event first, got {:?}",
                ev.event.unwrap_or_else(|| "message".into())
            )));
        }
        Some(Err(e)) => return Err(unavailable(e.to_string())),
        None => return Err(unavailable("the event stream ended at once".into())),
    };
    let post_url = url::Url::parse(&url)
        .and_then(|base| base.join(endpoint.trim()))
        .map_err(|e| unavailable(format!("the server sent a bad endpoint: {e}")))?;
    // The endpoint must stay on the configured origin: a server must not be able to
    // redirect the gateway's messages (and configured credentials) elsewhere.
    let base = url::Url::parse(&url).map_err(|e| unavailable(e.to_string()))?;
    if post_url.origin() != base.origin() {
        return Err(unavailable(format!(
            "the server's endpoint {} is not on its own origin",
            redact(&post_url)
        )));
    }

    let (out_tx, mut out_rx) = mpsc::channel::<Message>(256);
    let (in_tx, in_rx) = mpsc::channel(256);
    let shutdown = CancellationToken::new();

    let server = name.clone();
    let inbound = in_tx.clone();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let end = loop {
            let ev = tokio::select! {
                ev = events.next() => ev,
                _ = stop.cancelled() => return,
            };
            match ev {
                Some(Ok(ev)) if ev.event.as_deref().unwrap_or("message") == "message" => {
                    match jsonrpc::parse(ev.data.as_bytes()) {
                        Ok(msg) => {
                            let ev = TransportEvent::Message { msg, origin: None };
                            if inbound.send(ev).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            tracing::warn!(server = %server, "ignored a malformed SSE message: {e}")
                        }
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => break e.to_string(),
                None => break "the event stream ended".to_owned(),
            }
        };
        let _ = inbound
            .send(TransportEvent::Closed(UpstreamError::Closed {
                server,
                reason: end,
            }))
            .await;
    });

    let server = name.clone();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        loop {
            let msg = tokio::select! {
                m = out_rx.recv() => m,
                _ = stop.cancelled() => None,
            };
            let Some(msg) = msg else { break };
            let request_id = match (&msg.id, msg.kind()) {
                (Some(Id::Num(n)), Kind::Request) => Some(*n),
                _ => None,
            };
            let mut post = http_client()
                .post(post_url.clone())
                .headers(headers.clone())
                .header(CONTENT_TYPE, "application/json");
            for (k, v) in msg.trace.iter().flat_map(|t| t.pairs()) {
                post = post.header(k, v);
            }
            let sent = post.body(msg.to_json()).send().await;
            let error = match sent {
                Ok(r) if r.status().is_success() => continue,
                Ok(r) => UpstreamError::Http {
                    server: server.clone(),
                    status: r.status().as_u16(),
                    body: r
                        .text()
                        .await
                        .unwrap_or_default()
                        .chars()
                        .take(300)
                        .collect(),
                },
                Err(e) => UpstreamError::Unavailable {
                    server: server.clone(),
                    reason: describe(e),
                },
            };
            match request_id {
                Some(id) => {
                    let _ = in_tx
                        .send(TransportEvent::RequestFailed { id, error })
                        .await;
                }
                None => tracing::warn!(server = %server, "{error}"),
            }
        }
    });

    Ok(Transport {
        outbound: out_tx,
        inbound: in_rx,
        shutdown,
    })
}
