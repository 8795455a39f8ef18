//! Forwarding one call to the server that owns it: the result cache in front
//! (`forward_cached`), the rounds of a call (`forward`), and one request upstream
//! under its timeouts and circuit breaker, relaying what the server sends for it
//! back to the client (`call_upstream`, `relay`).

use super::dispatch::{MAX_INPUT_ROUNDS, answer_input_required, ask_client, to_legacy_result};
use super::session::{Era, Session};
use super::stream::EventStream;
use super::{Gateway, Upstream};
use crate::catalog::Catalog;
use crate::jsonrpc::{ErrorObject, Id, Message, code, empty_object, to_raw};
use crate::upstream::{ServerEvent, UpstreamError};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::mpsc;

type Outcome = Result<Box<RawValue>, ErrorObject>;

impl Gateway {
    /// The result cache's key for this call and how long its result is kept,
    /// when the server's `cache:` covers it.
    pub(super) fn cache_slot(
        &self,
        session: &Session,
        server: usize,
        method: &str,
        item: &str,
        params: &Value,
    ) -> Option<(String, std::time::Duration)> {
        let up = self.servers.get(server)?;
        let ttl = match method {
            "tools/call" => up.cfg().cache.tools.get(item)?.0,
            "resources/read" => up.cfg().cache.resources?.0,
            _ => return None,
        };
        // The era too: a legacy and a modern client get differently shaped results.
        let method = format!("{method} {:?}", session.era);
        let key = super::cache::ResultCache::key(
            &up.name,
            &method,
            item,
            params.get("arguments"),
            &session.identity,
            &session.endpoint,
        )?;
        Some((key, ttl))
    }

    /// [`Gateway::forward`], answered from the result cache when `cached`
    /// names a live entry, and filling it otherwise.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn forward_cached(
        self: &Arc<Self>,
        session: &Arc<Session>,
        server: usize,
        method: &str,
        params: Value,
        out: &Arc<EventStream>,
        cat: &Catalog,
        cached: Option<(String, std::time::Duration)>,
    ) -> Outcome {
        let Some((key, ttl)) = cached else {
            return self
                .forward(session, server, method, params, out, cat)
                .await;
        };
        if let Some(hit) = self.results.get(&key) {
            crate::metrics::result_cache(true);
            crate::audit::note(|f| f.cache_hit = true);
            return Ok(hit);
        }
        crate::metrics::result_cache(false);
        let result = self
            .forward(session, server, method, params, out, cat)
            .await;
        if let Ok(r) = &result {
            self.results.put(key, r, ttl);
        }
        result
    }

    /// Send a request to the owning server and relay everything that comes back
    /// for it until its response arrives.
    pub(super) async fn forward(
        self: &Arc<Self>,
        session: &Arc<Session>,
        server: usize,
        method: &str,
        params: Value,
        out: &Arc<EventStream>,
        cat: &Catalog,
    ) -> Outcome {
        let up = self.servers[server].clone();
        let client_token = params
            .get("_meta")
            .and_then(|m| m.get("progressToken"))
            .cloned();
        let mut params = (!params.is_null()).then_some(params);
        let mut rounds = 0;
        loop {
            // The arguments are kept for the retry a legacy client's call may
            // need (below), and copied only where it may: a server known to be
            // legacy never asks for input (a result of one that merely names
            // `input_required` passes as it is).
            let mrtr = session.era == Era::Legacy && !up.is_legacy();
            let sent = if mrtr { params.clone() } else { params.take() };
            let (result, modern) = self
                .call_upstream(session, &up, method, sent, out, client_token.as_ref())
                .await?;
            // A modern server asking for input, and a legacy client that cannot
            // read MRTR: ask the client for real, then retry with its answers.
            if mrtr && result.get().contains("\"input_required\"") {
                let retry =
                    answer_input_required(session, out, &up, &result, params.as_ref()).await?;
                if let Some(retry) = retry {
                    rounds += 1;
                    if rounds > MAX_INPUT_ROUNDS {
                        return Err(ErrorObject::new(
                            code::UPSTREAM_PROTOCOL,
                            format!(
                                "server '{}' kept asking for input after {MAX_INPUT_ROUNDS} rounds",
                                up.name
                            ),
                        ));
                    }
                    params = Some(retry);
                    continue;
                }
            }
            // A modern server's result, for a legacy client: drop what only the
            // modern era defines, so the client sees what a legacy server would send.
            let legacy_shape = modern && session.era == Era::Legacy;
            let text = result.get();
            let task_ids = text.contains("\"taskId\"");
            // Only results that name URIs or tasks (or need reshaping) get a second
            // look; the rest pass untouched.
            if !legacy_shape && !task_ids && !text.contains("\"uri\"") {
                return Ok(result);
            }
            let mut v: Value = serde_json::from_str(result.get())
                .map_err(|e| ErrorObject::new(code::UPSTREAM_PROTOCOL, e.to_string()))?;
            if legacy_shape {
                to_legacy_result(&mut v);
            }
            if task_ids {
                self.task_ids
                    .expose_all(&up.name, &session.principal, &mut v);
            }
            cat.expose_uris(server, &mut v, &mut |u| session.learn_uri(u, server));
            return Ok(to_raw(&v));
        }
    }

    /// One request to the owning server, relaying what it sends for the call
    /// until its response arrives. An expired upstream session is re-established
    /// and the request sent once more.
    pub(super) async fn call_upstream(
        self: &Arc<Self>,
        session: &Arc<Session>,
        up: &Arc<Upstream>,
        method: &str,
        mut params: Option<Value>,
        out: &Arc<EventStream>,
        client_token: Option<&Value>,
    ) -> Result<(Box<RawValue>, bool), ErrorObject> {
        let stdio = up.cfg().transport() == crate::config::TransportKind::Stdio;
        for attempt in 0..2 {
            let pass = up.circuit.admit().map_err(|wait| circuit_open(up, wait))?;
            let conn = match self.connection(session, up).await {
                Ok(c) => c,
                Err(e) => {
                    pass.failed(&up.name);
                    return Err(e.to_error());
                }
            };
            let (sink, mut events) = mpsc::channel(64);
            let span = crate::telemetry::upstream_span(&up.name, method, params.as_ref(), stdio);
            let limits = up.cfg().call_timeouts(
                method,
                params
                    .as_ref()
                    .and_then(|p| p.get("name"))
                    .and_then(Value::as_str),
            );
            // Only a legacy HTTP server keeps a session that can expire under a
            // call, which is then sent again on a new session: the arguments are
            // copied for that, and only there.
            let retry = attempt == 0 && !stdio && !conn.is_modern();
            let params_now = if retry { params.clone() } else { params.take() };
            let mut sent = if conn.is_modern() {
                // A modern server learns who is asking from every request.
                Some(crate::upstream::with_request_meta(
                    params_now,
                    &session.client_capabilities,
                    &session.client_info,
                    // A legacy client that never set a level gets every log message
                    // a legacy server would send; the gateway filters if it did.
                    session
                        .log_level()
                        .or((session.era == Era::Legacy).then_some("debug")),
                ))
            } else {
                params_now
            };
            crate::telemetry::inject_meta(&span, &mut sent, conn.is_modern());
            if limits.extended_by_progress() {
                ask_for_progress(&mut sent);
            }
            let asked_at = std::time::Instant::now();
            // Inside the span, the request picks up its trace context for HTTP headers.
            let call = span.wrap(conn.request(method, sent, Some(sink)));
            tokio::pin!(call);
            // Dropping `call` on a timeout cancels it upstream.
            let quiet = tokio::time::sleep(limits.idle);
            let over = tokio::time::sleep(limits.total);
            tokio::pin!(quiet, over);
            // Upstream ids of server→client requests relayed for this call → ours.
            let mut asked: HashMap<Id, Id> = HashMap::new();
            let outcome = loop {
                tokio::select! {
                    // Events queued before the response are relayed before it.
                    biased;
                    Some(ev) = events.recv() => {
                        let progress = matches!(
                            &ev,
                            ServerEvent::Notification(m, _) if m.method() == "notifications/progress"
                        );
                        self.relay(session, out, ev, client_token, up, &mut asked);
                        if progress && limits.extended_by_progress() {
                            quiet.as_mut().reset(tokio::time::Instant::now() + limits.idle);
                        }
                    }
                    r = &mut call => break Ok(r),
                    () = &mut quiet => break Err(limits.idle),
                    () = &mut over => break Err(limits.total),
                }
            };
            let waited = asked_at.elapsed();
            crate::telemetry::upstream_done(&span, waited, || match &outcome {
                Err(_) => Some(code::UPSTREAM_TIMEOUT),
                Ok(Err(e)) => Some(e.to_error().code),
                Ok(Ok(resp)) => resp.error.as_ref().map(|e| e.code),
            });
            crate::audit::note(|f| {
                f.upstream += waited;
                f.server.get_or_insert_with(|| up.name.clone());
            });
            let resp = match outcome {
                Err(after) => {
                    pass.failed(&up.name);
                    let e = UpstreamError::Timeout {
                        server: up.name.clone(),
                        after,
                    };
                    return Err(e.to_error());
                }
                Ok(Err(UpstreamError::SessionExpired { .. })) if retry => {
                    // The server forgot our session (restart, expiry): start a new one
                    // and try once more, invisibly to the client.
                    tracing::info!(server = %up.name, "upstream session expired; re-initialising");
                    self.drop_connection(session, up, &conn).await;
                    continue;
                }
                Ok(Err(e)) => {
                    pass.failed(&up.name);
                    if conn.closed().is_some() {
                        self.drop_connection(session, up, &conn).await;
                    }
                    return Err(e.to_error());
                }
                Ok(Ok(resp)) => {
                    pass.ok(&up.name);
                    resp
                }
            };
            if let Some(e) = resp.error {
                return Err(e);
            }
            return Ok((resp.result.unwrap_or_else(empty_object), conn.is_modern()));
        }
        Err(UpstreamError::SessionExpired {
            server: up.name.clone(),
        }
        .to_error())
    }

    /// Relay one server-initiated message that belongs to a call in flight.
    pub(super) fn relay(
        self: &Arc<Self>,
        session: &Arc<Session>,
        out: &Arc<EventStream>,
        ev: ServerEvent,
        client_token: Option<&Value>,
        up: &Arc<Upstream>,
        asked: &mut HashMap<Id, Id>,
    ) {
        match ev {
            ServerEvent::Notification(mut msg, _) => match msg.method() {
                "notifications/progress" => {
                    // The client only knows its own token.
                    let Some(token) = client_token else { return };
                    if let Some(p) = msg.params.as_mut() {
                        p["progressToken"] = token.clone();
                    }
                    out.push(&msg);
                }
                "notifications/cancelled" => {
                    let upstream_id = msg
                        .param("requestId")
                        .and_then(|v| serde_json::from_value::<Id>(v.clone()).ok());
                    if let Some(ours) = upstream_id.and_then(|u| asked.remove(&u)) {
                        session.forget_client_request(&ours);
                        if let Some(p) = msg.params.as_mut() {
                            p["requestId"] = serde_json::to_value(&ours).unwrap_or(Value::Null);
                        }
                        out.push(&msg);
                    }
                }
                "notifications/message" if !session.wants_log(&msg) => {}
                _ => {
                    self.rewrite_notification(session, up.idx, &mut msg);
                    out.push(&msg);
                }
            },
            ServerEvent::Request(msg, responder) => {
                let upstream_id = responder.id().clone();
                let ours = ask_client(
                    session.clone(),
                    out.clone(),
                    msg,
                    responder,
                    up.cfg().timeout(),
                );
                if let Some(ours) = ours {
                    asked.insert(upstream_id, ours);
                }
            }
            ServerEvent::Closed(_) => {}
        }
    }

    pub(super) fn rewrite_notification(&self, session: &Session, server: usize, msg: &mut Message) {
        if let Some(p) = msg.params.as_mut() {
            self.catalog().expose_uris(server, p, &mut |_| {});
            if let Some(up) = self.servers.get(server) {
                self.task_ids.expose_all(&up.name, &session.principal, p);
            }
        }
    }
}

/// The answer while `up`'s circuit is open: at once, with when to retry.
fn circuit_open(up: &Upstream, wait: std::time::Duration) -> ErrorObject {
    let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
    ErrorObject::new(
        code::UPSTREAM_UNAVAILABLE,
        format!(
            "server '{}' keeps failing: its circuit is open; retry in {:.1}s",
            up.name,
            wait.as_secs_f64()
        ),
    )
    .with_data(json!({ "server": &*up.name, "code": "circuit_open", "retryAfterMs": ms }))
}

/// Ask the server for progress on a call whose client did not: progress is
/// what extends the call's timeout (the connection mints the token, and
/// progress nobody asked for never reaches the client).
fn ask_for_progress(params: &mut Option<Value>) {
    let Some(Value::Object(p)) = params else {
        return;
    };
    let meta = p
        .entry("_meta")
        .or_insert_with(|| Value::Object(serde_json::Map::new()));
    if let Value::Object(meta) = meta {
        meta.entry("progressToken")
            .or_insert_with(|| Value::String("toolgate".into()));
    }
}
