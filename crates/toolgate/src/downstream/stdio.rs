//! The gateway over stdio, for desktop clients that launch their servers: one
//! client, one session, newline-delimited JSON-RPC on stdin/stdout. Logs go to stderr.

use crate::gateway::modern;
use crate::gateway::stream::Next;
use crate::gateway::{EventStream, Gateway, Session};
use crate::jsonrpc::{self, ErrorObject, Kind, Message, code};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio_util::sync::CancellationToken;

pub async fn serve(gw: Arc<Gateway>) -> std::io::Result<()> {
    serve_on(gw, tokio::io::stdin(), tokio::io::stdout()).await
}

pub async fn serve_on<R, W>(gw: Arc<Gateway>, input: R, mut output: W) -> std::io::Result<()>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let out = EventStream::new(0);
    let writer = {
        let out = out.clone();
        tokio::spawn(async move {
            let mut pos = 0;
            while let Next::Event(seq, text) = out.next(pos).await {
                pos = seq + 1;
                let mut line = text.to_string();
                line.push('\n');
                if output.write_all(line.as_bytes()).await.is_err() || output.flush().await.is_err()
                {
                    break;
                }
            }
        })
    };
    let limit = gw.config().max_message_bytes;
    let mut reader = BufReader::new(input);
    let mut session: Option<Arc<Session>> = None;
    let modern_calls: ModernCalls = Arc::default();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = read_line(&mut reader, &mut buf, limit).await?;
        if n == 0 {
            break;
        }
        let line = buf.trim_ascii();
        if line.is_empty() {
            continue;
        }
        if buf.len() > limit {
            let e = ErrorObject::new(
                code::INVALID_REQUEST,
                format!("message larger than {limit} bytes"),
            );
            out.push(&Message::error_response(None, e));
            continue;
        }
        let msg = match jsonrpc::parse(line) {
            Ok(m) => m,
            Err(e) => {
                out.push(&Message::error_response(None, e.to_error()));
                continue;
            }
        };
        // A 2026-07-28 request needs no session: it carries its own context.
        if msg.kind() == Kind::Request && msg.method() != "initialize" && modern::is_modern(&msg) {
            serve_modern(&gw, msg, &out, &modern_calls);
            continue;
        }
        if msg.method() == "notifications/cancelled"
            && let Some(id) = msg
                .param("requestId")
                .and_then(|v| serde_json::from_value::<jsonrpc::Id>(v.clone()).ok())
            && let Some(cancel) = lock(&modern_calls).remove(&id)
        {
            cancel.cancel();
            continue;
        }
        match (&session, msg.kind()) {
            (None, Kind::Request) if msg.method() == "initialize" => {
                let params = msg.params.clone().unwrap_or(Value::Null);
                let (s, result) = gw.initialize(
                    &params,
                    gw.local_principal(),
                    "stdio",
                    Some(out.clone()),
                    None,
                );
                session = Some(s);
                let id = msg.id.clone().unwrap_or(jsonrpc::Id::Num(0));
                out.push(&Message::response_value(id, &result));
            }
            (None, Kind::Request) if msg.method() == "ping" => {
                let id = msg.id.clone().unwrap_or(jsonrpc::Id::Num(0));
                out.push(&Message::response(id, jsonrpc::empty_object()));
            }
            (None, Kind::Request) => {
                let e = ErrorObject::new(code::INVALID_REQUEST, "send initialize first");
                out.push(&Message::error_response(msg.id.clone(), e));
            }
            (None, _) => {}
            (Some(s), Kind::Request) => {
                let (gw, s, out) = (gw.clone(), s.clone(), out.clone());
                tokio::spawn(async move {
                    if let Some(resp) = gw.handle_request(&s, msg, &out).await {
                        out.push(&resp);
                    }
                });
            }
            (Some(s), _) => gw.handle_client_message(s, msg).await,
        }
    }
    if let Some(s) = session {
        gw.close_session(&s.id).await;
    }
    out.close();
    let _ = writer.await;
    Ok(())
}

/// Modern requests in flight, by id, for `notifications/cancelled`.
type ModernCalls = Arc<Mutex<HashMap<jsonrpc::Id, CancellationToken>>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Serve one modern request: its round's messages go to stdout as they come.
fn serve_modern(gw: &Arc<Gateway>, msg: Message, out: &Arc<EventStream>, calls: &ModernCalls) {
    let meta = match modern::request_meta(&msg) {
        Ok(m) => m,
        Err(e) => {
            out.push(&Message::error_response(msg.id.clone(), e));
            return;
        }
    };
    let Some(id) = msg.id.clone() else { return };
    let cancel = CancellationToken::new();
    lock(calls).insert(id.clone(), cancel.clone());
    let round = gw.modern_request(msg, meta, gw.local_principal(), "stdio", None, cancel);
    let (out, calls) = (out.clone(), calls.clone());
    tokio::spawn(async move {
        let mut pos = 0;
        while let Next::Event(seq, text) = round.next(pos).await {
            pos = seq + 1;
            out.push_serialized(text);
        }
        lock(&calls).remove(&id);
    });
}

/// Read one line; a line over `limit` is consumed to its end but not kept whole.
async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    limit: usize,
) -> std::io::Result<usize> {
    let mut total = 0;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(total);
        }
        let (take, done) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (available.len(), false),
        };
        if buf.len() <= limit {
            buf.extend_from_slice(&available[..take]);
        }
        total += take;
        reader.consume(take);
        if done {
            return Ok(total);
        }
    }
}
