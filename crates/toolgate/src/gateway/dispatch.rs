//! What happens to each client message, in order:
//! resolve (catalog: which server owns the name or URI) → connect (the upstream
//! connection this session uses for that server) → forward (remapped ids, tokens
//! and names; timeout) → relay (progress, logs, and server→client requests back to
//! the client on the request's own stream) → rewrite (URIs in the result).

use super::session::{Era, Session};
use super::stream::EventStream;
use super::{Gateway, Upstream};
use crate::catalog::{Catalog, ListKind};
use crate::config::Isolation;
use crate::jsonrpc::{ErrorObject, Id, Kind, Message, code, empty_object, to_raw};
use crate::policy::Action;
use crate::upstream::{Connection, ServerEvent, UpstreamError};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::sync::mpsc;
use tracing::Instrument as _;

type Outcome = Result<Box<RawValue>, ErrorObject>;

fn invalid_params(msg: impl Into<String>) -> ErrorObject {
    ErrorObject::new(code::INVALID_PARAMS, msg)
}

impl Gateway {
    /// Handle a request from a client. Returns its response, or `None` if the
    /// client cancelled it (a cancelled request gets no response).
    pub async fn handle_request(
        self: &Arc<Self>,
        session: &Arc<Session>,
        msg: Message,
        out: &Arc<EventStream>,
    ) -> Option<Message> {
        let id = msg.id.clone()?;
        session.touch();
        // A shutdown waits for this request (up to its grace).
        let _busy = self.busy();
        // The request's span covers its audit event too, which records the
        // span's trace id and fills in the span's outcome.
        let span = crate::telemetry::server_span(
            &msg,
            &crate::telemetry::Request {
                session: (session.era == Era::Legacy).then_some(session.id.as_str()),
                protocol_version: &session.protocol_version,
                user: &session.identity.user,
                tenant: session.identity.tenant.as_deref(),
                client: session.source.get().copied(),
            },
        );
        async move {
            // Nothing happens that cannot be audited: a full trail refuses the call.
            let audited = match self.audit_begin(&msg).await {
                Ok(a) => a,
                Err(e) => return Some(Message::error_response(Some(id), e)),
            };
            let method = msg.method().to_owned();
            let cancel = session.begin_request(&id);
            let outcome = tokio::select! {
                r = audited.scope(self.dispatch(session, msg, out)) => Some(r),
                _ = cancel.cancelled() => None,
            };
            session.end_request(&id);
            let written = self
                .audit_end(audited, session.as_ref().into(), &method, outcome.as_ref())
                .await;
            let outcome = match (outcome, written) {
                (Some(_), Err(e)) => Some(Err(e)),
                (o, _) => o,
            };
            outcome.map(|r| match r {
                Ok(result) => Message::response(id, result),
                Err(e) => Message::error_response(Some(id), e),
            })
        }
        .instrument(span)
        .await
    }

    /// A notification or a response from a client.
    pub async fn handle_client_message(self: &Arc<Self>, session: &Arc<Session>, msg: Message) {
        session.touch();
        match msg.kind() {
            Kind::Response => {
                let known = session.complete_client_request(msg);
                if !known {
                    tracing::debug!(session = %session.id, "response to a request the gateway never sent");
                }
            }
            Kind::Notification => match msg.method() {
                "notifications/initialized" => {
                    session.initialized.store(true, Ordering::Relaxed);
                }
                "notifications/cancelled" => {
                    if let Some(id) = msg
                        .param("requestId")
                        .and_then(|v| serde_json::from_value::<Id>(v.clone()).ok())
                    {
                        session.cancel_request(&id);
                    }
                }
                "notifications/roots/list_changed" => {
                    // Roots are per client: only this session's own upstreams hear it.
                    let conns = session.upstreams.live();
                    for c in conns {
                        let _ = c.notify("notifications/roots/list_changed", None).await;
                    }
                }
                other => tracing::debug!(method = other, "client notification ignored"),
            },
            _ => {}
        }
    }

    async fn dispatch(
        self: &Arc<Self>,
        session: &Arc<Session>,
        msg: Message,
        out: &Arc<EventStream>,
    ) -> Outcome {
        let method = msg.method().to_owned();
        let mut params = msg.params.unwrap_or(Value::Null);
        if let Some(kind) = ListKind::from_method(&method) {
            let cursor = params.get("cursor").and_then(Value::as_str);
            let cat = self.catalog();
            let view = self.view(session, &cat);
            let page = cat.page(
                kind,
                cursor,
                self.config.page_size,
                &self.cursors,
                view.as_deref().map(|v| v.of(kind)),
                &session.principal,
            )?;
            return RawValue::from_string(page)
                .map_err(|e| ErrorObject::new(code::INTERNAL_ERROR, e.to_string()));
        }
        let cat = self.catalog();
        match method.as_str() {
            "ping" => Ok(empty_object()),
            "tools/call" | "prompts/get" => {
                let name = params
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid_params("params.name must be a string"))?;
                let (kind, action, what) = if method == "tools/call" {
                    (ListKind::Tools, Action::CallTool, "tool")
                } else {
                    (ListKind::Prompts, Action::GetPrompt, "prompt")
                };
                // Hidden, unknown and forbidden-to-this-caller items get the same
                // answer: for this caller the item does not exist.
                let unknown = || invalid_params(format!("Unknown {what}: {name}"));
                let Some(index) = cat.position(kind, name) else {
                    return Err(unknown());
                };
                let item = &cat.items(kind)[index];
                self.audit_call(item.server, name, &item.original, params.get("arguments"));
                self.authorize_item(
                    session,
                    &cat,
                    action,
                    kind,
                    index,
                    params.get("arguments"),
                    unknown,
                )?;
                let server = item.server;
                let admitted = self
                    .admit(session, server, &method, Some(name), &params)
                    .await?;
                params["name"] = Value::String(item.original.clone());
                let cached = self.cache_slot(session, server, &method, &item.original, &params);
                admitted.finish(
                    self.forward_cached(session, server, &method, params, out, &cat, cached)
                        .await,
                )
            }
            "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
                let uri = params
                    .get("uri")
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid_params("params.uri must be a string"))?
                    .to_owned();
                let (server, original) = self.route_uri(session, &cat, &uri)?;
                self.audit_call(server, &uri, &original, None);
                let action = if method == "resources/read" {
                    Action::ReadResource
                } else {
                    Action::Subscribe
                };
                if method != "resources/unsubscribe" {
                    self.authorize_uri(
                        &self.origin(session),
                        &cat,
                        action,
                        server,
                        &uri,
                        &original,
                    )?;
                }
                params["uri"] = Value::String(original.clone());
                // A modern server has no subscribe methods: the gateway watches the
                // resource on its listen stream and tells subscribed sessions.
                if method != "resources/read" && self.servers[server].is_modern() {
                    let subscribe = method == "resources/subscribe";
                    let was = session.is_subscribed(&uri);
                    if subscribe {
                        session.subscribe(&uri);
                    } else {
                        session.unsubscribe(&uri);
                    }
                    if was != subscribe {
                        self.legacy_subscription(server, &original, subscribe);
                    }
                    return Ok(empty_object());
                }
                match method.as_str() {
                    "resources/subscribe" => session.subscribe(&uri),
                    "resources/unsubscribe" => {
                        session.unsubscribe(&uri);
                        // A shared upstream keeps the subscription while anyone holds it.
                        let shared = self.servers[server].cfg.isolation != Isolation::PerSession;
                        if shared && self.sessions.all().iter().any(|s| s.is_subscribed(&uri)) {
                            return Ok(empty_object());
                        }
                    }
                    _ => {}
                }
                if method == "resources/read" {
                    let admitted = self.admit(session, server, &method, None, &params).await?;
                    let cached = self.cache_slot(session, server, &method, &original, &params);
                    return admitted.finish(
                        self.forward_cached(session, server, &method, params, out, &cat, cached)
                            .await,
                    );
                }
                self.forward(session, server, &method, params, out, &cat)
                    .await
            }
            "completion/complete" => {
                let reference = params.get("ref").cloned().unwrap_or(Value::Null);
                let (server, admitted) = match reference.get("type").and_then(Value::as_str) {
                    Some("ref/prompt") => {
                        let name = reference.get("name").and_then(Value::as_str).unwrap_or("");
                        let unknown = || invalid_params(format!("Unknown prompt: {name}"));
                        let index = cat.position(ListKind::Prompts, name).ok_or_else(unknown)?;
                        let item = &cat.prompts[index];
                        let args = params.get("argument");
                        self.audit_call(item.server, name, &item.original, args);
                        self.authorize_item(
                            session,
                            &cat,
                            Action::Complete,
                            ListKind::Prompts,
                            index,
                            args,
                            unknown,
                        )?;
                        let admitted = self
                            .admit(session, item.server, &method, Some(name), &params)
                            .await?;
                        params["ref"]["name"] = Value::String(item.original.clone());
                        (item.server, admitted)
                    }
                    Some("ref/resource") => {
                        let uri = reference.get("uri").and_then(Value::as_str).unwrap_or("");
                        let (server, original) = self.route_uri(session, &cat, uri)?;
                        self.audit_call(server, uri, &original, None);
                        self.authorize_uri(
                            &self.origin(session),
                            &cat,
                            Action::Complete,
                            server,
                            uri,
                            &original,
                        )?;
                        let admitted = self.admit(session, server, &method, None, &params).await?;
                        params["ref"]["uri"] = Value::String(original);
                        (server, admitted)
                    }
                    _ => {
                        return Err(invalid_params(
                            "params.ref must be a ref/prompt or ref/resource",
                        ));
                    }
                };
                admitted.finish(
                    self.forward(session, server, &method, params, out, &cat)
                        .await,
                )
            }
            "tasks/get" | "tasks/result" | "tasks/cancel" | "tasks/update" => {
                let exposed = params
                    .get("taskId")
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid_params("params.taskId must be a string"))?;
                let (server_name, task) = self.task_ids.open(exposed, &session.principal)?;
                // A task of a server outside the session's endpoint is unknown there.
                let server = self
                    .servers
                    .iter()
                    .position(|s| *s.name == *server_name)
                    .filter(|_| {
                        self.endpoints
                            .allows_server(&session.endpoint, &server_name)
                    })
                    .ok_or_else(|| invalid_params(format!("Unknown task: {exposed}")))?;
                params["taskId"] = Value::String(task);
                self.forward(session, server, &method, params, out, &cat)
                    .await
            }
            "tasks/list" => self.list_tasks(session, params, out, &cat).await,
            "logging/setLevel" => {
                let level = params.get("level").and_then(Value::as_str).unwrap_or("");
                if !session.set_log_level(level) {
                    return Err(invalid_params(format!("unknown log level {level:?}")));
                }
                // Servers this session owns a connection to filter at the source; logs
                // from shared connections are filtered by the gateway.
                let conns = session.upstreams.live();
                let calls = conns.iter().map(|c| {
                    let p = json!({ "level": level });
                    async move {
                        let _ = tokio::time::timeout(
                            std::time::Duration::from_secs(5),
                            c.request("logging/setLevel", Some(p), None),
                        )
                        .await;
                    }
                });
                futures::future::join_all(calls).await;
                Ok(empty_object())
            }
            "initialize" => Err(ErrorObject::new(
                code::INVALID_REQUEST,
                "the session is already initialized",
            )),
            _ => Err(ErrorObject::new(
                code::METHOD_NOT_FOUND,
                format!("Method not found: {method}"),
            )),
        }
    }

    /// The owner of a URI: the catalog, then the URIs this session has seen in
    /// results (session resources a server never lists), then — with a single
    /// resource server — that server.
    fn route_uri(
        &self,
        session: &Session,
        cat: &Catalog,
        uri: &str,
    ) -> Result<(usize, String), ErrorObject> {
        if let Some(r) = cat.route_uri(uri) {
            return Ok(r);
        }
        if let Some(server) = session.learned_uri(uri) {
            return Ok((server, uri.to_owned()));
        }
        let mut owners = self.servers.iter().filter(|s| {
            s.info()
                .is_some_and(|i| i.capabilities.get("resources").is_some())
        });
        match (owners.next(), owners.next()) {
            (Some(only), None) => Ok((only.idx, uri.to_owned())),
            _ => Err(not_found(uri)),
        }
    }

    /// The connection this session uses for a server, per its isolation mode.
    async fn connection(
        &self,
        session: &Arc<Session>,
        up: &Upstream,
    ) -> Result<Arc<Connection>, UpstreamError> {
        match effective_isolation(up, session) {
            Isolation::Shared => up.shared_connection().await,
            Isolation::PerPrincipal => {
                // A modern client declares its capabilities per request, and a
                // legacy server learns them once, at `initialize`: keep one upstream
                // session per principal and capability set, so the server asks only
                // for what the caller can give.
                let caps = match session.era {
                    Era::Modern => client_capabilities_for_upstream(&session.client_capabilities),
                    Era::Legacy => super::upstreams::relay_capabilities(),
                };
                let connect = up.connect(
                    crate::jsonrpc::LATEST_LEGACY,
                    caps,
                    super::upstreams::gateway_client_info(),
                    None,
                );
                up.principals
                    .get_or_connect(&principal_key(session), connect)
                    .await
            }
            Isolation::PerSession => {
                let caps = client_capabilities_for_upstream(&session.client_capabilities);
                let connect = up.connect(
                    &session.protocol_version,
                    caps,
                    session.client_info.clone(),
                    Some(session.sink.clone()),
                );
                session.upstreams.get_or_connect(&up.idx, connect).await
            }
        }
    }

    async fn drop_connection(&self, session: &Session, up: &Upstream, conn: &Arc<Connection>) {
        match effective_isolation(up, session) {
            Isolation::PerSession => session.upstreams.remove(&up.idx, conn).await,
            Isolation::PerPrincipal => up.principals.remove(&principal_key(session), conn).await,
            // The supervisor owns the shared connection and re-establishes it
            // once it hears the connection is over.
            Isolation::Shared => conn.abandon(UpstreamError::SessionExpired {
                server: up.name.clone(),
            }),
        }
    }

    /// Send a request to the owning server and relay everything that comes back
    /// for it until its response arrives.
    /// The result cache's key for this call and how long its result is kept,
    /// when the server's `cache:` covers it.
    fn cache_slot(
        &self,
        session: &Session,
        server: usize,
        method: &str,
        item: &str,
        params: &Value,
    ) -> Option<(String, std::time::Duration)> {
        let up = self.servers.get(server)?;
        let ttl = match method {
            "tools/call" => up.cfg.cache.tools.get(item)?.0,
            "resources/read" => up.cfg.cache.resources?.0,
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
    async fn forward_cached(
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

    async fn forward(
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
            let (result, modern) = self
                .call_upstream(
                    session,
                    &up,
                    method,
                    params.clone(),
                    out,
                    client_token.as_ref(),
                )
                .await?;
            // A modern server asking for input, and a legacy client that cannot
            // read MRTR: ask the client for real, then retry with its answers.
            if session.era == Era::Legacy && result.get().contains("\"input_required\"") {
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
    async fn call_upstream(
        self: &Arc<Self>,
        session: &Arc<Session>,
        up: &Arc<Upstream>,
        method: &str,
        params: Option<Value>,
        out: &Arc<EventStream>,
        client_token: Option<&Value>,
    ) -> Result<(Box<RawValue>, bool), ErrorObject> {
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
            let span = crate::telemetry::upstream_span(
                &up.name,
                method,
                params.as_ref(),
                up.cfg.transport() == crate::config::TransportKind::Stdio,
            );
            let mut sent = if conn.is_modern() {
                // A modern server learns who is asking from every request.
                Some(crate::upstream::with_request_meta(
                    params.clone(),
                    &session.client_capabilities,
                    &session.client_info,
                    // A legacy client that never set a level gets every log message
                    // a legacy server would send; the gateway filters if it did.
                    session
                        .log_level()
                        .or((session.era == Era::Legacy).then_some("debug")),
                ))
            } else {
                params.clone()
            };
            crate::telemetry::inject_meta(&span, &mut sent, conn.is_modern());
            let limits = up.cfg.call_timeouts(
                method,
                params
                    .as_ref()
                    .and_then(|p| p.get("name"))
                    .and_then(Value::as_str),
            );
            if limits.extended_by_progress() {
                ask_for_progress(&mut sent);
            }
            let asked_at = std::time::Instant::now();
            // Inside the span, the request picks up its trace context for HTTP headers.
            let call = conn
                .request(method, sent, Some(sink))
                .instrument(span.clone());
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
                Ok(Err(UpstreamError::SessionExpired { .. })) if attempt == 0 => {
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
    fn relay(
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
                    up.cfg.timeout(),
                );
                if let Some(ours) = ours {
                    asked.insert(upstream_id, ours);
                }
            }
            ServerEvent::Closed(_) => {}
        }
    }

    fn rewrite_notification(&self, session: &Session, server: usize, msg: &mut Message) {
        if let Some(p) = msg.params.as_mut() {
            self.catalog().expose_uris(server, p, &mut |_| {});
            if let Some(up) = self.servers.get(server) {
                self.task_ids.expose_all(&up.name, &session.principal, p);
            }
        }
    }

    /// `tasks/list` (2025-11-25): every server that lists tasks, merged, each
    /// task under the id the client knows it by. Each server's list is read whole.
    async fn list_tasks(
        self: &Arc<Self>,
        session: &Arc<Session>,
        params: Value,
        out: &Arc<EventStream>,
        cat: &Catalog,
    ) -> Outcome {
        if params.get("cursor").is_some_and(|c| !c.is_null()) {
            return Err(invalid_params("Invalid cursor"));
        }
        let mut tasks = Vec::new();
        for up in &self.servers {
            // Servers outside the session's endpoint have no tasks there.
            if !self.endpoints.allows_server(&session.endpoint, &up.name) {
                continue;
            }
            let lists = up
                .info()
                .is_some_and(|i| i.capabilities.pointer("/tasks/list").is_some());
            if !lists {
                continue;
            }
            let mut cursor: Option<Value> = None;
            for _ in 0..100 {
                let page_params = match cursor.take() {
                    Some(c) => json!({ "cursor": c }),
                    None => json!({}),
                };
                let Ok(page) = self
                    .forward(session, up.idx, "tasks/list", page_params, out, cat)
                    .await
                else {
                    break;
                };
                let page: Value = serde_json::from_str(page.get()).unwrap_or(Value::Null);
                if let Some(Value::Array(items)) = page.get("tasks") {
                    tasks.extend(items.iter().cloned());
                }
                match page.get("nextCursor") {
                    Some(c) if !c.is_null() => cursor = Some(c.clone()),
                    _ => break,
                }
            }
        }
        Ok(to_raw(&json!({ "tasks": tasks })))
    }
}

/// The isolation a call gets. A modern client has no session to scope an
/// upstream session to, so `per_session` servers serve it per principal.
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

fn effective_isolation(up: &Upstream, session: &Session) -> Isolation {
    // A modern server keeps no session: one connection serves every caller.
    if up.is_modern() {
        return Isolation::Shared;
    }
    match (up.cfg.isolation, session.era) {
        (Isolation::PerSession, super::session::Era::Modern) => Isolation::PerPrincipal,
        (i, _) => i,
    }
}

/// Which `per_principal` connection a call uses: modern callers also by the
/// capabilities they declare.
fn principal_key(session: &Session) -> String {
    match session.era {
        Era::Modern => format!(
            "{}\n{}",
            session.principal,
            client_capabilities_for_upstream(&session.client_capabilities)
        ),
        Era::Legacy => session.principal.clone(),
    }
}

/// What a `per_session` upstream is told about the client: its own capabilities,
/// so servers that gate features on them see the truth.
fn client_capabilities_for_upstream(client: &Value) -> Value {
    let mut caps = serde_json::Map::new();
    for key in [
        "sampling",
        "elicitation",
        "roots",
        "tasks",
        "experimental",
        "extensions",
    ] {
        if let Some(v) = client.get(key) {
            caps.insert(key.to_owned(), v.clone());
        }
    }
    Value::Object(caps)
}

/// Remove from a modern result the members only the 2026-07-28 era defines.
fn to_legacy_result(v: &mut Value) {
    let Some(obj) = v.as_object_mut() else { return };
    for key in ["resultType", "ttlMs", "cacheScope"] {
        obj.remove(key);
    }
    if let Some(meta) = obj.get_mut("_meta").and_then(Value::as_object_mut) {
        meta.remove("io.modelcontextprotocol/serverInfo");
        if meta.is_empty() {
            obj.remove("_meta");
        }
    }
}

/// Rounds of input a server may ask for in one call before the gateway gives up.
const MAX_INPUT_ROUNDS: usize = 16;

/// A modern server's `input_required` result, for a legacy client: ask each input
/// request of the client as a real request on the call's stream, and build the
/// retry (`inputResponses`, the server's `requestState` echoed untouched).
/// `None` if the result is not `input_required`.
async fn answer_input_required(
    session: &Arc<Session>,
    out: &Arc<EventStream>,
    up: &Upstream,
    result: &RawValue,
    params: Option<&Value>,
) -> Result<Option<Value>, ErrorObject> {
    let Ok(result) = serde_json::from_str::<Value>(result.get()) else {
        return Ok(None);
    };
    if result.get("resultType").and_then(Value::as_str) != Some("input_required") {
        return Ok(None);
    }
    let mut responses = serde_json::Map::new();
    if let Some(requests) = result.get("inputRequests").and_then(Value::as_object) {
        for (key, request) in requests {
            let method = request.get("method").and_then(Value::as_str).unwrap_or("");
            let answer = ask_and_wait(
                session,
                out,
                method,
                request.get("params").cloned(),
                up.cfg.timeout(),
            )
            .await?;
            responses.insert(key.clone(), answer);
        }
    }
    let mut retry = params.cloned().unwrap_or_else(|| json!({}));
    retry["inputResponses"] = Value::Object(responses);
    match result.get("requestState") {
        Some(state) => retry["requestState"] = state.clone(),
        None => {
            if let Some(p) = retry.as_object_mut() {
                p.remove("requestState");
            }
        }
    }
    Ok(Some(retry))
}

/// Ask the client a question on `out` and wait for its answer.
async fn ask_and_wait(
    session: &Arc<Session>,
    out: &Arc<EventStream>,
    method: &str,
    params: Option<Value>,
    timeout: std::time::Duration,
) -> Result<Value, ErrorObject> {
    if !session.supports(method) {
        return Err(ErrorObject::new(
            code::METHOD_NOT_FOUND,
            format!("the server asked for {method}, which the client did not declare support for"),
        ));
    }
    let (id, answer) = session.register_client_request();
    let request = Message::request(id.clone(), method, params);
    if !out.push(&request) {
        session.standalone.push(&request);
    }
    let reply = match tokio::time::timeout(timeout, answer).await {
        Ok(Ok(reply)) => reply,
        _ => {
            session.forget_client_request(&id);
            return Err(ErrorObject::new(
                code::UPSTREAM_TIMEOUT,
                format!("the client did not answer {method} in time"),
            ));
        }
    };
    if let Some(e) = reply.error {
        return Err(e);
    }
    Ok(reply
        .result
        .and_then(|r| serde_json::from_str(r.get()).ok())
        .unwrap_or_else(|| json!({})))
}

/// Put a server→client request to the client on `out` and send its answer back
/// upstream. Returns the id the client sees, or None if it was refused here.
fn ask_client(
    session: Arc<Session>,
    out: Arc<EventStream>,
    msg: Message,
    responder: crate::upstream::Responder,
    timeout: std::time::Duration,
) -> Option<Id> {
    let method = msg.method().to_owned();
    if method == "ping" {
        tokio::spawn(responder.respond(Ok(empty_object())));
        return None;
    }
    if let Some(asks) = &session.asks {
        // A modern client: the request is handed to the round in progress, which
        // ends it with an input_required result (MRTR) and holds the call.
        let ask = super::session::Ask {
            request: msg,
            responder,
        };
        if let Err(refused) = asks.try_send(ask) {
            let ask = refused.into_inner();
            let e = ErrorObject::new(code::INTERNAL_ERROR, "too many pending input requests");
            tokio::spawn(ask.responder.respond(Err(e)));
        }
        return None;
    }
    if !session.supports(&method) {
        let e = ErrorObject::new(
            code::METHOD_NOT_FOUND,
            format!("the client did not declare support for {method}"),
        );
        tokio::spawn(responder.respond(Err(e)));
        return None;
    }
    let (id, answer) = session.register_client_request();
    let mut request = msg;
    request.id = Some(id.clone());
    if !out.push(&request) {
        // The request's stream already ended; use the session's own stream.
        session.standalone.push(&request);
    }
    let ours = id.clone();
    tokio::spawn(async move {
        let outcome = tokio::select! {
            r = tokio::time::timeout(timeout, answer) => r,
            _ = session.closed.cancelled() => return,
        };
        match outcome {
            Ok(Ok(reply)) => {
                let result = match reply.error {
                    Some(e) => Err(e),
                    None => Ok(reply.result.unwrap_or_else(empty_object)),
                };
                responder.respond(result).await;
            }
            // Cancelled by the server (the sender was dropped): no answer is due.
            Ok(Err(_)) => {}
            Err(_) => {
                session.forget_client_request(&id);
                let e = ErrorObject::new(
                    code::UPSTREAM_TIMEOUT,
                    format!("the client did not answer {method} in time"),
                );
                responder.respond(Err(e)).await;
            }
        }
    });
    Some(ours)
}

/// Deliver what a session's own upstream connections send outside any call.
pub(super) async fn session_events(gw: Arc<Gateway>, session: Arc<Session>) {
    let Some(mut rx) = session
        .sink_rx
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
    else {
        return;
    };
    loop {
        let ev = tokio::select! {
            ev = rx.recv() => ev,
            _ = session.closed.cancelled() => return,
        };
        let Some(ev) = ev else { return };
        match ev {
            ServerEvent::Notification(mut msg, name) => {
                let server = gw.servers.iter().position(|s| s.name == name);
                match msg.method() {
                    m if m.ends_with("/list_changed") => {
                        // The server's list changed: re-read it for the catalog, which
                        // tells every session once the merged list really differs.
                        if let Some(up) = server.and_then(|i| gw.servers.get(i)) {
                            up.refresh.notify_one();
                        }
                    }
                    "notifications/resources/updated" => {
                        let cat = gw.catalog();
                        let Some(uri) = msg.param("uri").and_then(Value::as_str) else {
                            continue;
                        };
                        let exposed = match server {
                            Some(s) => cat.expose_uri(s, uri).to_owned(),
                            None => uri.to_owned(),
                        };
                        if session.is_subscribed(&exposed) {
                            if let Some(p) = msg.params.as_mut() {
                                p["uri"] = Value::String(exposed);
                            }
                            session.standalone.push(&msg);
                        }
                    }
                    "notifications/message" if !session.wants_log(&msg) => {}
                    _ => {
                        if let Some(s) = server {
                            gw.rewrite_notification(&session, s, &mut msg);
                        }
                        session.standalone.push(&msg);
                    }
                }
            }
            ServerEvent::Request(msg, responder) => {
                let timeout = std::time::Duration::from_secs(300);
                ask_client(
                    session.clone(),
                    session.standalone.clone(),
                    msg,
                    responder,
                    timeout,
                );
            }
            // A per-session child died: forget it; the next call starts a new one.
            ServerEvent::Closed(_) => session.upstreams.prune(),
        }
    }
}

/// A resource that does not exist (for this caller).
pub(crate) fn not_found(uri: &str) -> ErrorObject {
    ErrorObject::new(
        code::RESOURCE_NOT_FOUND,
        format!("Resource not found: {uri}"),
    )
    .with_data(json!({ "uri": uri }))
}
