//! A downstream (legacy-era) session: what `initialize` negotiated, the client's
//! streams, its in-flight requests, the requests the gateway has put to it, and —
//! for `per_session` servers — its own upstream connections.

use super::pool::ConnectionPool;
use super::stream::EventStream;
use crate::jsonrpc::{Id, Message};
use crate::upstream::{ServerEvent, Sink};
use serde_json::Value;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Closed request streams kept for `Last-Event-ID` resumption.
const KEEP_STREAMS: usize = 64;
/// Bytes those kept streams may hold together (big results would otherwise keep
/// up to 64 of them alive for as long as the session lasts).
const KEEP_BYTES: usize = 16 * 1024 * 1024;
/// URIs remembered per session from results, for routing reads of them.
const MAX_LEARNED: usize = 4096;

/// Request streams by id, and their ids oldest first (for eviction).
type RequestStreams = (HashMap<u64, Arc<EventStream>>, VecDeque<u64>);

/// Which protocol era a client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Era {
    /// 2024-11-05 … 2025-11-25: a session opened by `initialize`.
    Legacy,
    /// 2026-07-28: one stateless request; the "session" lives as long as its call.
    Modern,
}

/// A server→client request that a modern client must answer through MRTR: it
/// becomes an input request of an `input_required` result.
pub struct Ask {
    pub request: Message,
    pub responder: crate::upstream::Responder,
}

pub struct Session {
    pub id: String,
    pub era: Era,
    /// Who the session belongs to, as policies see it.
    pub identity: Arc<crate::auth::Principal>,
    /// The key of `identity` that scopes what the session owns (task ids,
    /// `requestState`, per-principal connections).
    pub principal: String,
    /// The endpoint the client came through (`/mcp`, `/sse`, `stdio`), for policies.
    pub endpoint: Arc<str>,
    /// The client's address, when it came over the network (for audit).
    pub source: std::sync::OnceLock<std::net::IpAddr>,
    pub protocol_version: String,
    pub client_capabilities: Value,
    pub client_info: Value,
    /// Stream 0: messages outside any request (GET stream, legacy SSE, stdio).
    pub standalone: Arc<EventStream>,
    /// Open GET/SSE readers of the standalone stream.
    pub readers: AtomicUsize,
    /// Open GET streams (standalone and resumed), against `max_session_streams`.
    pub open_streams: AtomicUsize,
    pub closed: CancellationToken,
    /// Where `per_session` upstream connections deliver what has no request to go to.
    pub(crate) sink: Sink,
    pub(crate) sink_rx: Mutex<Option<mpsc::Receiver<ServerEvent>>>,
    pub(crate) upstreams: ConnectionPool<usize>,
    log_level: Mutex<Option<u8>>,
    streams: Mutex<RequestStreams>,
    next_stream: AtomicU64,
    next_request: AtomicI64,
    client_requests: Mutex<HashMap<Id, oneshot::Sender<Message>>>,
    inflight: Mutex<HashMap<Id, CancellationToken>>,
    pub(crate) subscriptions: Mutex<HashSet<String>>,
    /// URIs seen in results that no listing or template claims, and their server.
    learned: Mutex<indexmap::IndexMap<String, usize>>,
    last_seen: Mutex<Instant>,
    pub initialized: std::sync::atomic::AtomicBool,
    /// Modern calls only: where server→client requests go to become input requests.
    pub(crate) asks: Option<mpsc::Sender<Ask>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// RFC 5424 severities as MCP names them, least severe first.
const LEVELS: [&str; 8] = [
    "debug",
    "info",
    "notice",
    "warning",
    "error",
    "critical",
    "alert",
    "emergency",
];

pub fn level_rank(level: &str) -> Option<u8> {
    LEVELS.iter().position(|l| *l == level).map(|p| p as u8)
}

impl Session {
    pub fn new(
        principal: Arc<crate::auth::Principal>,
        endpoint: Arc<str>,
        protocol_version: String,
        client_capabilities: Value,
        client_info: Value,
        standalone: Option<Arc<EventStream>>,
    ) -> Arc<Session> {
        Session::build(
            Era::Legacy,
            principal,
            endpoint,
            protocol_version,
            client_capabilities,
            client_info,
            standalone,
            None,
        )
    }

    /// The context of one modern (2026-07-28) call: never registered as a session.
    /// Returns the receiver of the call's server→client requests.
    pub fn modern(
        principal: Arc<crate::auth::Principal>,
        endpoint: Arc<str>,
        protocol_version: String,
        client_capabilities: Value,
        client_info: Value,
        log_level: Option<&str>,
    ) -> (Arc<Session>, mpsc::Receiver<Ask>) {
        let (tx, rx) = mpsc::channel(16);
        let s = Session::build(
            Era::Modern,
            principal,
            endpoint,
            protocol_version,
            client_capabilities,
            client_info,
            None,
            Some(tx),
        );
        if let Some(level) = log_level {
            s.set_log_level(level);
        }
        (s, rx)
    }

    #[allow(clippy::too_many_arguments)]
    fn build(
        era: Era,
        principal: Arc<crate::auth::Principal>,
        endpoint: Arc<str>,
        protocol_version: String,
        client_capabilities: Value,
        client_info: Value,
        standalone: Option<Arc<EventStream>>,
        asks: Option<mpsc::Sender<Ask>>,
    ) -> Arc<Session> {
        let (sink, sink_rx) = mpsc::channel(256);
        Arc::new(Session {
            id: new_session_id(),
            era,
            asks,
            principal: principal.key(),
            identity: principal,
            endpoint,
            source: std::sync::OnceLock::new(),
            protocol_version,
            client_capabilities,
            client_info,
            standalone: standalone.unwrap_or_else(|| EventStream::new(0)),
            readers: AtomicUsize::new(0),
            open_streams: AtomicUsize::new(0),
            closed: CancellationToken::new(),
            sink,
            sink_rx: Mutex::new(Some(sink_rx)),
            upstreams: ConnectionPool::default(),
            log_level: Mutex::new(None),
            streams: Mutex::new((HashMap::new(), VecDeque::new())),
            next_stream: AtomicU64::new(1),
            next_request: AtomicI64::new(1),
            client_requests: Mutex::new(HashMap::new()),
            inflight: Mutex::new(HashMap::new()),
            subscriptions: Mutex::new(HashSet::new()),
            learned: Mutex::new(indexmap::IndexMap::new()),
            last_seen: Mutex::new(Instant::now()),
            initialized: std::sync::atomic::AtomicBool::new(false),
        })
    }

    pub fn touch(&self) {
        *lock(&self.last_seen) = Instant::now();
    }

    pub fn idle_for(&self) -> std::time::Duration {
        lock(&self.last_seen).elapsed()
    }

    /// Does the client accept server→client requests of this method?
    pub fn supports(&self, method: &str) -> bool {
        let cap = match method {
            "sampling/createMessage" => "sampling",
            "elicitation/create" => "elicitation",
            "roots/list" => "roots",
            "ping" => return true,
            _ => return false,
        };
        self.client_capabilities.get(cap).is_some()
    }

    /// A new stream for one request's response, kept for resumption.
    pub fn open_stream(&self) -> Arc<EventStream> {
        let id = self.next_stream.fetch_add(1, Ordering::Relaxed);
        let stream = EventStream::new(id);
        let mut guard = lock(&self.streams);
        let (map, order) = &mut *guard;
        map.insert(id, stream.clone());
        order.push_back(id);
        let mut kept_bytes: usize = map
            .values()
            .filter(|s| s.is_closed())
            .map(|s| s.buffered_bytes())
            .sum();
        while order.len() > KEEP_STREAMS || kept_bytes > KEEP_BYTES {
            // Evict the oldest finished stream; open ones are never evicted.
            let Some(pos) = order
                .iter()
                .position(|sid| map.get(sid).is_none_or(|s| s.is_closed()))
            else {
                break;
            };
            if let Some(gone) = order.remove(pos).and_then(|sid| map.remove(&sid)) {
                kept_bytes = kept_bytes.saturating_sub(gone.buffered_bytes());
            }
        }
        stream
    }

    /// Let go of a request's stream no client can resume: one answered with a
    /// single JSON body, or closed with nothing sent (no event id was given out).
    pub fn forget_stream(&self, id: u64) {
        let mut guard = lock(&self.streams);
        let (map, order) = &mut *guard;
        if map.remove(&id).is_some()
            && let Some(pos) = order.iter().rposition(|sid| *sid == id)
        {
            order.remove(pos);
        }
    }

    pub fn stream(&self, id: u64) -> Option<Arc<EventStream>> {
        if id == 0 {
            return Some(self.standalone.clone());
        }
        lock(&self.streams).0.get(&id).cloned()
    }

    pub fn set_log_level(&self, level: &str) -> bool {
        match level_rank(level) {
            Some(r) => {
                *lock(&self.log_level) = Some(r);
                true
            }
            None => false,
        }
    }

    /// The log level the client asked for, by name.
    pub fn log_level(&self) -> Option<&'static str> {
        lock(&self.log_level).map(|r| LEVELS[r as usize])
    }

    /// Should a `notifications/message` at this level reach the client?
    pub fn wants_log(&self, msg: &Message) -> bool {
        let Some(min) = *lock(&self.log_level) else {
            // A modern request gets log messages only if it asked for a level.
            return self.era == Era::Legacy;
        };
        let level = msg.param("level").and_then(Value::as_str).unwrap_or("");
        level_rank(level).is_none_or(|r| r >= min)
    }

    /// Mint an id for a request the gateway sends the client, and await its answer.
    pub fn register_client_request(&self) -> (Id, oneshot::Receiver<Message>) {
        let id = Id::Str(format!(
            "tg-{}",
            self.next_request.fetch_add(1, Ordering::Relaxed)
        ));
        let (tx, rx) = oneshot::channel();
        lock(&self.client_requests).insert(id.clone(), tx);
        (id, rx)
    }

    pub fn forget_client_request(&self, id: &Id) {
        lock(&self.client_requests).remove(id);
    }

    /// The client answered one of our requests. False if we never asked it.
    pub fn complete_client_request(&self, msg: Message) -> bool {
        let Some(id) = msg.id.clone() else {
            return false;
        };
        match lock(&self.client_requests).remove(&id) {
            Some(tx) => {
                let _ = tx.send(msg);
                true
            }
            None => false,
        }
    }

    pub fn begin_request(&self, id: &Id) -> CancellationToken {
        let token = self.closed.child_token();
        lock(&self.inflight).insert(id.clone(), token.clone());
        token
    }

    pub fn end_request(&self, id: &Id) {
        lock(&self.inflight).remove(id);
    }

    /// `notifications/cancelled` from the client.
    pub fn cancel_request(&self, id: &Id) {
        if let Some(t) = lock(&self.inflight).remove(id) {
            t.cancel();
        }
    }

    /// Remember which server a URI came from (bounded: the oldest are forgotten).
    pub fn learn_uri(&self, uri: &str, server: usize) {
        let mut map = lock(&self.learned);
        map.insert(uri.to_owned(), server);
        if map.len() > MAX_LEARNED {
            map.shift_remove_index(0);
        }
    }

    pub fn learned_uri(&self, uri: &str) -> Option<usize> {
        lock(&self.learned).get(uri).copied()
    }

    pub fn subscribe(&self, uri: &str) {
        lock(&self.subscriptions).insert(uri.to_owned());
    }

    pub fn unsubscribe(&self, uri: &str) {
        lock(&self.subscriptions).remove(uri);
    }

    pub fn subscriptions(&self) -> Vec<String> {
        lock(&self.subscriptions).iter().cloned().collect()
    }

    pub fn is_subscribed(&self, uri: &str) -> bool {
        lock(&self.subscriptions).contains(uri)
    }

    /// End the session: cancel its requests, close its streams, drop its upstreams.
    pub async fn close(&self) {
        self.closed.cancel();
        self.standalone.close();
        for s in lock(&self.streams).0.values() {
            s.close();
        }
        lock(&self.client_requests).clear();
        self.upstreams.clear();
    }
}

fn new_session_id() -> String {
    // 128 bits from the OS-seeded CSPRNG: unguessable, so a session id is a capability.
    let bytes: [u8; 16] = rand::random();
    crate::seal::hex(&bytes)
}

/// All live sessions of this gateway process.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Arc<Session>>>,
}

impl Sessions {
    pub fn insert(&self, s: Arc<Session>) {
        lock(&self.map).insert(s.id.clone(), s);
    }

    pub fn get(&self, id: &str) -> Option<Arc<Session>> {
        lock(&self.map).get(id).cloned()
    }

    pub fn remove(&self, id: &str) -> Option<Arc<Session>> {
        lock(&self.map).remove(id)
    }

    pub fn all(&self) -> Vec<Arc<Session>> {
        lock(&self.map).values().cloned().collect()
    }

    pub fn len(&self) -> usize {
        lock(&self.map).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> Arc<Session> {
        let (session, _asks) = Session::modern(
            Arc::new(crate::auth::Principal::anonymous("local")),
            "/mcp".into(),
            "2025-11-25".into(),
            Value::Null,
            Value::Null,
            None,
        );
        session
    }

    #[test]
    fn a_forgotten_stream_is_no_longer_kept_and_the_others_are() {
        let session = session();
        let (a, b) = (session.open_stream(), session.open_stream());
        session.forget_stream(a.id);
        assert!(session.stream(a.id).is_none());
        assert!(session.stream(b.id).is_some());
        let (map, order) = &*lock(&session.streams);
        assert_eq!(order.iter().copied().collect::<Vec<_>>(), vec![b.id]);
        assert_eq!(map.len(), 1);
    }

    #[test]
    fn kept_request_streams_are_bounded_in_bytes_and_open_ones_are_kept() {
        let session = session();
        let big: Arc<str> = "x".repeat(KEEP_BYTES / 4).into();
        let open = session.open_stream();
        open.push_serialized(big.clone());
        let mut finished = Vec::new();
        for _ in 0..10 {
            let s = session.open_stream();
            s.push_serialized(big.clone());
            s.close();
            finished.push(s.id);
        }
        session.open_stream();
        let kept: usize = finished
            .iter()
            .filter_map(|id| session.stream(*id))
            .map(|s| s.buffered_bytes())
            .sum();
        assert!(kept <= KEEP_BYTES, "{kept} bytes kept");
        assert!(session.stream(finished[9]).is_some(), "the newest is kept");
        assert!(
            session.stream(finished[0]).is_none(),
            "the oldest went first"
        );
        assert!(
            session.stream(open.id).is_some(),
            "a stream in use is never evicted"
        );
    }
}
