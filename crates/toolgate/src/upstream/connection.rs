//! One live MCP session with an upstream server, over any transport.
//!
//! The gateway mints every id it sends upstream (so callers sharing a connection
//! can never collide) and a fresh progress token per call. Messages the server
//! sends on its own go to the `Sink` of the call that caused them — known exactly
//! on Streamable HTTP (the response stream they came on), inferred on stdio and
//! HTTP+SSE only when a single call with a sink is in flight — and otherwise to
//! the connection's own sink, whose owner decides (a downstream session for
//! `per_session`, the server's supervisor for shared connections).

use super::{Transport, TransportEvent, UpstreamError};
use crate::jsonrpc::{ErrorObject, Id, Kind, Message, code};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::DropGuard;

/// Where server-initiated traffic for one call (or one connection) is delivered.
pub type Sink = mpsc::Sender<ServerEvent>;

/// Something the server sent on its own initiative.
#[derive(Debug)]
pub enum ServerEvent {
    /// A notification, and the server it came from.
    Notification(Message, Arc<str>),
    /// A server→client request; answer it through the responder.
    Request(Message, Responder),
    /// The connection ended; sent to the connection's own sink only.
    Closed(UpstreamError),
}

/// What `initialize` told us about the server.
#[derive(Debug, Clone)]
pub struct InitInfo {
    pub protocol_version: String,
    pub capabilities: Value,
    pub server_info: Value,
    pub instructions: Option<String>,
    /// The server speaks 2026-07-28: no session; every request carries `_meta`.
    pub modern: bool,
}

struct Pending {
    reply: oneshot::Sender<Result<Message, UpstreamError>>,
    sink: Option<Sink>,
    token: Option<String>,
    /// A `subscriptions/listen`: open for as long as the connection, and
    /// addressed by its subscription id, so never the "only call in flight".
    listen: bool,
}

#[derive(Default)]
struct State {
    pending: HashMap<i64, Pending>,
    by_token: HashMap<String, i64>,
    /// Open server→client requests and where they were delivered, so a
    /// `notifications/cancelled` for one follows it.
    server_requests: HashMap<Id, Option<Sink>>,
    closed: Option<UpstreamError>,
}

struct Shared {
    server: Arc<str>,
    state: Mutex<State>,
    /// Streamable HTTP tells us which call a message belongs to; other transports don't.
    exact_origin: bool,
    own_sink: Option<Sink>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the maps inconsistent in a
        // way that matters more than losing the connection; keep serving.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub struct Connection {
    pub server: Arc<str>,
    tx: mpsc::Sender<Message>,
    shared: Arc<Shared>,
    next_id: AtomicI64,
    info: OnceLock<InitInfo>,
    /// When a request was last sent or answered, for reaping idle children.
    last_active: Mutex<std::time::Instant>,
    _shutdown: DropGuard,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("server", &self.server)
            .finish()
    }
}

/// Answers one server→client request.
#[derive(Debug)]
pub struct Responder {
    id: Id,
    tx: mpsc::Sender<Message>,
    shared: std::sync::Weak<Shared>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.server)
    }
}

impl Responder {
    pub fn id(&self) -> &Id {
        &self.id
    }

    pub async fn respond(self, outcome: Result<Box<RawValue>, ErrorObject>) {
        if let Some(shared) = self.shared.upgrade() {
            shared.lock().server_requests.remove(&self.id);
        }
        let msg = match outcome {
            Ok(result) => Message::response(self.id, result),
            Err(e) => Message::error_response(Some(self.id), e),
        };
        let _ = self.tx.send(msg).await;
    }
}

/// Removes a pending call if its future is dropped (timeout, client cancel) and
/// tells the server to stop working on it.
struct PendingGuard<'a> {
    conn: &'a Connection,
    id: i64,
    armed: bool,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let removed = {
            let mut st = self.conn.shared.lock();
            let p = st.pending.remove(&self.id);
            if let Some(t) = p.as_ref().and_then(|p| p.token.as_ref()) {
                st.by_token.remove(t);
            }
            p.is_some()
        };
        if removed {
            let note = Message::notification(
                "notifications/cancelled",
                Some(json!({ "requestId": self.id, "reason": "cancelled by the gateway" })),
            );
            let _ = self.conn.tx.try_send(note);
        }
    }
}

impl Connection {
    /// Wrap a running transport. `own_sink` receives what cannot be attributed to a call.
    pub fn start(
        server: Arc<str>,
        transport: Transport,
        exact_origin: bool,
        own_sink: Option<Sink>,
    ) -> Arc<Connection> {
        let shared = Arc::new(Shared {
            server: server.clone(),
            state: Mutex::new(State::default()),
            exact_origin,
            own_sink,
        });
        let Transport {
            outbound,
            inbound,
            shutdown,
        } = transport;
        tokio::spawn(read_loop(shared.clone(), inbound, outbound.clone()));
        Arc::new(Connection {
            server,
            tx: outbound,
            shared,
            next_id: AtomicI64::new(1),
            info: OnceLock::new(),
            last_active: Mutex::new(std::time::Instant::now()),
            _shutdown: shutdown.drop_guard(),
        })
    }

    pub fn info(&self) -> Option<&InitInfo> {
        self.info.get()
    }

    /// How long nothing has been asked of the server; `None` while a call is
    /// in flight.
    pub fn idle_for(&self) -> Option<std::time::Duration> {
        if !self.shared.lock().pending.is_empty() {
            return None;
        }
        Some(self.touched().elapsed())
    }

    fn touched(&self) -> std::sync::MutexGuard<'_, std::time::Instant> {
        self.last_active.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Why the connection ended, if it has.
    pub fn closed(&self) -> Option<UpstreamError> {
        self.shared.lock().closed.clone()
    }

    /// End the connection from our side (e.g. the server forgot the session): every
    /// pending call fails with `reason` and the owner's sink hears `Closed`.
    pub fn abandon(&self, reason: UpstreamError) {
        let pending = {
            let mut st = self.shared.lock();
            if st.closed.is_some() {
                return;
            }
            st.closed = Some(reason.clone());
            st.by_token.clear();
            std::mem::take(&mut st.pending)
        };
        for (_, p) in pending {
            let _ = p.reply.send(Err(reason.clone()));
        }
        if let Some(sink) = &self.shared.own_sink {
            let _ = sink.try_send(ServerEvent::Closed(reason));
        }
    }

    fn closed_error(&self) -> UpstreamError {
        self.closed().unwrap_or_else(|| UpstreamError::Closed {
            server: self.server.clone(),
            reason: "the connection ended".into(),
        })
    }

    /// Send a request and wait for its response message (result or error).
    /// A `_meta.progressToken` in `params` is replaced by one minted here; progress
    /// notifications for it are delivered to `sink` with the minted token, which the
    /// caller maps back. Dropping the future cancels the call upstream.
    pub async fn request(
        &self,
        method: &str,
        mut params: Option<Value>,
        sink: Option<Sink>,
    ) -> Result<Message, UpstreamError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        *self.touched() = std::time::Instant::now();
        let mut token = None;
        if let Some(meta) = params
            .as_mut()
            .and_then(|p| p.get_mut("_meta"))
            .and_then(Value::as_object_mut)
            && meta.contains_key("progressToken")
        {
            let t = format!("tg-{id}");
            meta.insert("progressToken".into(), Value::String(t.clone()));
            token = Some(t);
        }
        let (reply, rx) = oneshot::channel();
        {
            let mut st = self.shared.lock();
            if let Some(e) = &st.closed {
                return Err(e.clone());
            }
            if let Some(t) = &token {
                st.by_token.insert(t.clone(), id);
            }
            let listen = method == "subscriptions/listen";
            st.pending.insert(
                id,
                Pending {
                    reply,
                    sink,
                    token,
                    listen,
                },
            );
        }
        let mut guard = PendingGuard {
            conn: self,
            id,
            armed: true,
        };
        let mut msg = Message::request(Id::Num(id), method, params);
        // HTTP transports send it as `traceparent`/`tracestate` headers.
        msg.trace = crate::telemetry::outgoing();
        if self.tx.send(msg).await.is_err() {
            guard.armed = false;
            self.shared.lock().pending.remove(&id);
            return Err(self.closed_error());
        }
        let outcome = rx.await;
        guard.armed = false;
        *self.touched() = std::time::Instant::now();
        outcome.unwrap_or_else(|_| Err(self.closed_error()))
    }

    pub async fn notify(&self, method: &str, params: Option<Value>) -> Result<(), UpstreamError> {
        self.tx
            .send(Message::notification(method, params))
            .await
            .map_err(|_| self.closed_error())
    }

    /// The MCP handshake. Sends `notifications/initialized` on success.
    pub async fn initialize(
        &self,
        protocol_version: &str,
        capabilities: Value,
        client_info: Value,
    ) -> Result<InitInfo, UpstreamError> {
        let params = json!({
            "protocolVersion": protocol_version,
            "capabilities": capabilities,
            "clientInfo": client_info,
        });
        let resp = self.request("initialize", Some(params), None).await?;
        let protocol = |reason: String| UpstreamError::Protocol {
            server: self.server.clone(),
            reason,
        };
        if let Some(e) = resp.error {
            return Err(protocol(format!("initialize failed: {}", e.message)));
        }
        let result: Value = resp
            .result
            .as_deref()
            .map(|r| serde_json::from_str(r.get()))
            .transpose()
            .map_err(|e| protocol(format!("initialize result is not JSON: {e}")))?
            .unwrap_or(Value::Null);
        let Some(version) = result.get("protocolVersion").and_then(Value::as_str) else {
            return Err(protocol("initialize result has no protocolVersion".into()));
        };
        let info = InitInfo {
            protocol_version: version.to_owned(),
            capabilities: result.get("capabilities").cloned().unwrap_or(json!({})),
            server_info: result.get("serverInfo").cloned().unwrap_or(json!({})),
            instructions: result
                .get("instructions")
                .and_then(Value::as_str)
                .map(str::to_owned),
            modern: false,
        };
        self.notify("notifications/initialized", None).await?;
        let _ = self.info.set(info.clone());
        Ok(info)
    }
}

impl Connection {
    /// Does the server speak the stateless 2026-07-28 era?
    pub fn is_modern(&self) -> bool {
        self.info.get().is_some_and(|i| i.modern)
    }

    /// The 2026-07-28 era probe: `server/discover`. Any error means "not modern".
    pub async fn discover(
        &self,
        capabilities: &Value,
        client_info: &Value,
    ) -> Result<InitInfo, UpstreamError> {
        let params = super::with_request_meta(None, capabilities, client_info, None);
        let resp = self.request("server/discover", Some(params), None).await?;
        let not_modern = |reason: String| UpstreamError::Protocol {
            server: self.server.clone(),
            reason,
        };
        if let Some(e) = resp.error {
            return Err(not_modern(format!("server/discover failed: {}", e.message)));
        }
        let result: Value = resp
            .result
            .as_deref()
            .and_then(|r| serde_json::from_str(r.get()).ok())
            .unwrap_or(Value::Null);
        let speaks = result
            .get("supportedVersions")
            .and_then(Value::as_array)
            .is_some_and(|v| v.iter().any(|x| x.as_str() == Some(super::MODERN_VERSION)));
        if !speaks {
            return Err(not_modern(format!(
                "server/discover does not offer {}",
                super::MODERN_VERSION
            )));
        }
        let info = InitInfo {
            protocol_version: super::MODERN_VERSION.to_owned(),
            capabilities: result.get("capabilities").cloned().unwrap_or(json!({})),
            server_info: result
                .pointer("/_meta/io.modelcontextprotocol~1serverInfo")
                .cloned()
                .unwrap_or(json!({})),
            instructions: result
                .get("instructions")
                .and_then(Value::as_str)
                .map(str::to_owned),
            modern: true,
        };
        let _ = self.info.set(info.clone());
        Ok(info)
    }
}

async fn read_loop(
    shared: Arc<Shared>,
    mut inbound: mpsc::Receiver<TransportEvent>,
    tx: mpsc::Sender<Message>,
) {
    let end = loop {
        match inbound.recv().await {
            Some(TransportEvent::Message { msg, origin }) => dispatch(&shared, &tx, msg, origin),
            Some(TransportEvent::RequestFailed { id, error }) => {
                let p = shared.lock().pending.remove(&id);
                if let Some(p) = p {
                    let _ = p.reply.send(Err(error));
                }
            }
            Some(TransportEvent::Closed(e)) => break e,
            None => {
                break UpstreamError::Closed {
                    server: shared.server.clone(),
                    reason: "the transport ended".into(),
                };
            }
        }
    };
    tracing::debug!(server = %shared.server, reason = %end, "upstream connection closed");
    let pending = {
        let mut st = shared.lock();
        st.closed = Some(end.clone());
        st.by_token.clear();
        st.server_requests.clear();
        std::mem::take(&mut st.pending)
    };
    // Fail every in-flight call at once: a dead server must never leave callers waiting.
    for (_, p) in pending {
        let _ = p.reply.send(Err(end.clone()));
    }
    if let Some(sink) = &shared.own_sink {
        let _ = sink.try_send(ServerEvent::Closed(end));
    }
}

fn dispatch(shared: &Arc<Shared>, tx: &mpsc::Sender<Message>, msg: Message, origin: Option<i64>) {
    match msg.kind() {
        Kind::Response => {
            let Some(Id::Num(id)) = msg.id else {
                tracing::debug!(server = %shared.server, "response with an id the gateway never sent");
                return;
            };
            let p = {
                let mut st = shared.lock();
                let p = st.pending.remove(&id);
                if let Some(t) = p.as_ref().and_then(|p| p.token.as_ref()) {
                    st.by_token.remove(t);
                }
                p
            };
            if let Some(p) = p {
                let _ = p.reply.send(Ok(msg));
            }
        }
        Kind::Notification => {
            let target = match msg.method() {
                "notifications/progress" => {
                    let token = msg.param("progressToken").and_then(Value::as_str);
                    let st = shared.lock();
                    // Progress for a call that is already over has nowhere to go.
                    let Some(sink) = token
                        .and_then(|t| st.by_token.get(t))
                        .and_then(|id| st.pending.get(id))
                        .and_then(|p| p.sink.clone())
                    else {
                        return;
                    };
                    Some(sink)
                }
                "notifications/cancelled" => {
                    let id = msg
                        .param("requestId")
                        .and_then(|v| serde_json::from_value::<Id>(v.clone()).ok());
                    let mut st = shared.lock();
                    id.and_then(|id| st.server_requests.remove(&id)).flatten()
                }
                m if m.ends_with("/list_changed") || m == "notifications/resources/updated" => None,
                _ => match subscription_of(&msg) {
                    // A listen stream's notification names its subscription: the
                    // id of the gateway's listen request.
                    Some(id) => shared.lock().pending.get(&id).and_then(|p| p.sink.clone()),
                    None => attribute(shared, origin),
                },
            };
            deliver(
                shared,
                target,
                ServerEvent::Notification(msg, shared.server.clone()),
            );
        }
        Kind::Request => {
            let Some(id) = msg.id.clone() else { return };
            let target = attribute(shared, origin);
            let responder = Responder {
                id: id.clone(),
                tx: tx.clone(),
                shared: Arc::downgrade(shared),
            };
            let sink = target.or_else(|| shared.own_sink.clone());
            shared
                .lock()
                .server_requests
                .insert(id.clone(), sink.clone());
            let refused = match sink {
                Some(s) => s.try_send(ServerEvent::Request(msg, responder)).err(),
                None => Some(mpsc::error::TrySendError::Closed(ServerEvent::Request(
                    msg, responder,
                ))),
            };
            if let Some(err) = refused
                && let ServerEvent::Request(msg, responder) = err.into_inner()
            {
                let error = ErrorObject::new(
                    code::UNATTRIBUTED,
                    format!(
                        "toolgate cannot deliver {} from server '{}': no client request it belongs to is waiting",
                        msg.method(),
                        shared.server
                    ),
                );
                tokio::spawn(responder.respond(Err(error)));
            }
        }
        Kind::Invalid => {}
    }
}

/// The sink of the call a message belongs to, when that is known for certain.
fn attribute(shared: &Shared, origin: Option<i64>) -> Option<Sink> {
    let st = shared.lock();
    if let Some(o) = origin {
        return st.pending.get(&o).and_then(|p| p.sink.clone());
    }
    if shared.exact_origin {
        return None;
    }
    let calls: Vec<&Sink> = st
        .pending
        .values()
        .filter(|p| !p.listen)
        .filter_map(|p| p.sink.as_ref())
        .collect();
    // A call whose server is waiting on our answer to an earlier question (e.g. a
    // call held between MRTR rounds) is not the one asking now...
    let waiting = |sink: &Sink| {
        st.server_requests
            .values()
            .flatten()
            .any(|s| s.same_channel(sink))
    };
    let mut free = calls.iter().filter(|s| !waiting(s));
    match (free.next(), free.next()) {
        (Some(only), None) => Some((*only).clone()),
        // ...unless it is the only call at all: a server may ask several
        // things of one call at once.
        (None, _) if calls.len() == 1 => Some(calls[0].clone()),
        _ => None,
    }
}

/// The subscription a 2026-07-28 notification belongs to, if it names one of ours.
fn subscription_of(msg: &Message) -> Option<i64> {
    msg.param("_meta")?
        .get("io.modelcontextprotocol/subscriptionId")?
        .as_i64()
}

fn deliver(shared: &Shared, target: Option<Sink>, ev: ServerEvent) {
    let Some(sink) = target.or_else(|| shared.own_sink.clone()) else {
        return;
    };
    if sink.try_send(ev).is_err() {
        tracing::debug!(server = %shared.server, "dropped a server notification: receiver full or gone");
    }
}
