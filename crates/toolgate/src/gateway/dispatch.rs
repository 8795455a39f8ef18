//! What happens to each client message, in order:
//! resolve (catalog: which server owns the name or URI) → connect (the upstream
//! connection this session uses for that server) → forward (`forward.rs`: remapped ids, tokens
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
use std::sync::Arc;
use std::sync::atomic::Ordering;

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
        let work = async move {
            // Nothing happens that cannot be audited: a full trail refuses the call.
            let audited = match self.audit_begin(&msg).await {
                Ok(a) => a,
                Err(e) => return Some(Message::error_response(Some(id), e)),
            };
            let method = msg.method().to_owned();
            let cancel = session.begin_request(&id);
            let outcome = {
                // Pinned in place before the select: a future handed to
                // `select!` by value is kept twice in this state.
                let dispatch = audited.scope(self.dispatch(session, msg, out));
                tokio::pin!(dispatch);
                tokio::select! {
                    r = &mut dispatch => Some(r),
                    _ = cancel.cancelled() => None,
                }
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
        };
        span.wrap(work).await
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
                self.config().page_size,
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
                        let shared = self.servers[server].cfg().isolation != Isolation::PerSession;
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
    pub(super) async fn connection(
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
                let connect = || {
                    let caps = match session.era {
                        Era::Modern => {
                            client_capabilities_for_upstream(&session.client_capabilities)
                        }
                        Era::Legacy => super::upstreams::relay_capabilities(),
                    };
                    up.connect(
                        crate::jsonrpc::LATEST_LEGACY,
                        caps,
                        super::upstreams::gateway_client_info(),
                        None,
                    )
                };
                up.principals
                    .get_or_connect(&principal_key(session), connect)
                    .await
            }
            Isolation::PerSession => {
                let connect = || {
                    up.connect(
                        &session.protocol_version,
                        client_capabilities_for_upstream(&session.client_capabilities),
                        session.client_info.clone(),
                        Some(session.sink.clone()),
                    )
                };
                session.upstreams.get_or_connect(&up.idx, connect).await
            }
        }
    }

    pub(super) async fn drop_connection(
        &self,
        session: &Session,
        up: &Upstream,
        conn: &Arc<Connection>,
    ) {
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
fn effective_isolation(up: &Upstream, session: &Session) -> Isolation {
    // A modern server keeps no session: one connection serves every caller.
    if up.is_modern() {
        return Isolation::Shared;
    }
    match (up.cfg().isolation, session.era) {
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
pub(super) fn client_capabilities_for_upstream(client: &Value) -> Value {
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
pub(super) fn to_legacy_result(v: &mut Value) {
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
pub(super) const MAX_INPUT_ROUNDS: usize = 16;

/// A modern server's `input_required` result, for a legacy client: ask each input
/// request of the client as a real request on the call's stream, and build the
/// retry (`inputResponses`, the server's `requestState` echoed untouched).
/// `None` if the result is not `input_required`.
pub(super) async fn answer_input_required(
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
                up.cfg().timeout(),
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
pub(super) fn ask_client(
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
