//! The runtime side of each configured server: its supervisor, its shared
//! connection (also used to discover its lists), and its current status.
//!
//! The supervisor keeps one connection per server alive — restarting a crashed
//! child or a lost HTTP session with exponential backoff — and re-reads the
//! server's lists on start, on `list_changed`, and every `catalog_ttl`. A stdio
//! server restarted more than `restart.max` times within `restart.window` is held
//! down for `restart.cooldown`: no child of it is started meanwhile, by the
//! supervisor or for a session, and its callers fail at once.

use crate::catalog::{ListKind, ServerLists};
use crate::config::{ServerConfig, TransportKind, UpstreamEra};
use crate::jsonrpc::{ErrorObject, code, empty_object};
use crate::upstream::process::Children;
use crate::upstream::{self, Connection, InitInfo, ServerEvent, Sink, UpstreamError};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, mpsc, watch};

/// What a modern server's list results say about caching them.
#[derive(Default)]
struct CacheHints {
    ttl_ms: Option<u64>,
    private: bool,
}

impl CacheHints {
    fn note(&mut self, result: &Value) {
        if let Some(ttl) = result.get("ttlMs").and_then(Value::as_u64) {
            self.ttl_ms = Some(self.ttl_ms.map_or(ttl, |t| t.min(ttl)));
        }
        if result.get("cacheScope").and_then(Value::as_str) == Some("private") {
            self.private = true;
        }
    }
}

/// How long the era probe waits for `server/discover`.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// The most pages read from one upstream list: a server that paginates forever
/// must not hold the gateway.
const MAX_PAGES: usize = 1000;

#[derive(Debug, Clone)]
pub enum Status {
    Starting,
    Ready,
    Down { reason: String },
}

pub struct Upstream {
    pub idx: usize,
    pub name: Arc<str>,
    /// The server's settings; a config reload may swap in new ones (see
    /// [`Upstream::reconfigure`]).
    cfg: arc_swap::ArcSwap<ServerConfig>,
    pub prefix: String,
    pub max_message: usize,
    state: Mutex<State>,
    /// Bumped whenever `state` changes; callers waiting for a connection watch it.
    changed: watch::Sender<u64>,
    pub(crate) refresh: Notify,
    /// Connections of the `per_principal` isolation mode, by principal.
    pub(crate) principals: super::pool::ConnectionPool<String>,
    /// Mirrored tool parameters, for the `Mcp-Param-*` headers of modern calls.
    pub(crate) tool_headers: Arc<upstream::ToolHeaders>,
    /// What the probe found (true: modern), remembered until a connect fails.
    era: Mutex<Option<bool>>,
    /// Resources (as the server names them) someone watches; a modern server
    /// hears this set on the supervisor's `subscriptions/listen`.
    watched: watch::Sender<std::collections::BTreeSet<String>>,
    /// Every stdio child of the gateway, against `max_children`.
    children: Arc<Children>,
    /// A crash-looping stdio server: no child until then, and why.
    held: Mutex<Option<(Instant, String)>>,
    /// Calls fail at once while the server keeps failing (`circuit:`).
    pub(crate) circuit: super::circuit::Circuit,
    /// What the last health probes found.
    health: Mutex<Health>,
}

/// What the health probes of a server's shared connection found.
#[derive(Debug, Clone, Default)]
pub struct Health {
    /// When the last probe ended (µs since the epoch).
    pub checked: Option<i64>,
    /// Whether it was answered, and how fast.
    pub ok: bool,
    pub latency: Option<Duration>,
    /// Probes in a row without an answer.
    pub failures: u32,
    pub error: Option<String>,
}

struct State {
    status: Status,
    shared: Option<Arc<Connection>>,
    lists: Option<Arc<ServerLists>>,
    info: Option<InitInfo>,
    attempts: u64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What the gateway declares to upstreams on connections not tied to one client:
/// everything it can relay, so servers that gate tools on client capabilities
/// list them all.
pub fn relay_capabilities() -> Value {
    json!({
        "sampling": {},
        "elicitation": { "form": {}, "url": {} },
        "roots": { "listChanged": true },
    })
}

pub fn gateway_client_info() -> Value {
    json!({ "name": "toolgate", "version": env!("CARGO_PKG_VERSION") })
}

impl Upstream {
    pub fn new(
        idx: usize,
        name: &str,
        cfg: ServerConfig,
        max_message: usize,
        children: Arc<Children>,
    ) -> Arc<Upstream> {
        let prefix = cfg.prefix.clone().unwrap_or_else(|| name.to_owned());
        let circuit = cfg.circuit;
        Arc::new(Upstream {
            idx,
            name: name.into(),
            cfg: arc_swap::ArcSwap::from_pointee(cfg),
            prefix,
            max_message,
            state: Mutex::new(State {
                status: Status::Starting,
                shared: None,
                lists: None,
                info: None,
                attempts: 0,
            }),
            changed: watch::Sender::new(0),
            refresh: Notify::new(),
            principals: Default::default(),
            tool_headers: Arc::default(),
            era: Mutex::new(None),
            watched: watch::Sender::new(Default::default()),
            children,
            held: Mutex::new(None),
            circuit: super::circuit::Circuit::new(circuit),
            health: Mutex::default(),
        })
    }

    fn update(&self, f: impl FnOnce(&mut State)) {
        f(&mut lock(&self.state));
        self.changed.send_modify(|v| *v += 1);
    }

    pub fn cfg(&self) -> Arc<ServerConfig> {
        self.cfg.load_full()
    }

    /// Settings a reload may change while the server runs: everything but how
    /// it is reached, started, shared and named (see `crate::reload`).
    pub fn reconfigure(&self, cfg: ServerConfig) {
        self.circuit.reconfigure(cfg.circuit);
        self.cfg.store(Arc::new(cfg));
    }

    pub fn status(&self) -> Status {
        lock(&self.state).status.clone()
    }

    pub fn lists(&self) -> Option<Arc<ServerLists>> {
        lock(&self.state).lists.clone()
    }

    pub fn info(&self) -> Option<InitInfo> {
        lock(&self.state).info.clone()
    }

    pub fn health(&self) -> Health {
        lock(&self.health).clone()
    }

    /// Remember a health probe's verdict; returns the probes in a row that failed.
    fn note_health(&self, verdict: Result<Duration, &str>) -> u32 {
        let mut h = lock(&self.health);
        h.checked = Some(crate::audit::cli::now_us());
        h.ok = verdict.is_ok();
        match verdict {
            Ok(latency) => {
                h.latency = Some(latency);
                h.failures = 0;
                h.error = None;
            }
            Err(e) => {
                h.latency = None;
                h.failures += 1;
                h.error = Some(e.to_owned());
                tracing::warn!(server = %self.name, failures = h.failures, "health check failed: {e}");
            }
        }
        h.failures
    }

    /// Whether the server's items are out of discovery now: a `failure: open`
    /// server whose circuit tripped.
    pub fn withdrawn(&self) -> bool {
        self.cfg().failure == crate::config::FailureMode::Open && self.circuit.is_tripped()
    }

    /// The server as `toolgate catalog --json` and `GET /admin/v1/servers`
    /// describe it.
    pub fn describe(&self) -> Value {
        let (status, reason) = match self.status() {
            Status::Ready => ("ready", None),
            Status::Starting => ("starting", None),
            Status::Down { reason } => ("down", Some(reason)),
        };
        let lists = self.lists();
        let info = self.info();
        let mut v = json!({
            "name": &*self.name,
            "transport": match self.cfg().transport() {
                TransportKind::Stdio => "stdio",
                TransportKind::StreamableHttp => "streamable-http",
                TransportKind::Sse => "sse",
            },
            "status": status,
            "reason": reason,
            "era": info.as_ref().map(|i| if i.modern { "modern" } else { "legacy" }),
            "serverInfo": info.map(|i| i.server_info),
            "failure": match self.cfg().failure {
                crate::config::FailureMode::Open => "open",
                crate::config::FailureMode::Closed => "closed",
            },
            "tools": lists.as_ref().map(|l| l.tools.len()),
            "prompts": lists.as_ref().map(|l| l.prompts.len()),
            "resources": lists.as_ref().map(|l| l.resources.len()),
            "withdrawn": self.withdrawn(),
        });
        if self.circuit.is_configured() {
            let c = self.circuit.snapshot();
            v["circuit"] = json!({
                "state": c.state.as_str(),
                "failures": c.failures,
                "retryAfterMs": c.retry_after.map(|d| d.as_millis() as u64),
                "windowCalls": c.window_calls,
                "windowFailed": c.window_failed,
                "opened": c.opened,
            });
        }
        if !self.cfg().health.interval.0.is_zero() {
            let h = self.health();
            v["health"] = json!({
                "ok": h.checked.map(|_| h.ok),
                "checkedAt": h.checked.map(crate::audit::query::format_time),
                "latencyMs": h.latency.map(|d| d.as_secs_f64() * 1000.0),
                "failures": h.failures,
                "error": h.error,
            });
        }
        v
    }

    /// Has the supervisor finished at least one attempt to connect?
    pub fn attempted(&self) -> bool {
        lock(&self.state).attempts > 0
    }

    pub async fn wait_attempted(&self) {
        let mut rx = self.changed.subscribe();
        while !self.attempted() {
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// Remember which tool parameters the server wants mirrored into headers.
    fn note_tool_headers(&self, lists: &ServerLists) {
        let map = lists
            .tools
            .iter()
            .filter_map(|t| {
                let name = t.get("name")?.as_str()?;
                let annotated = crate::headers::annotated_params(t.get("inputSchema")?);
                (!annotated.is_empty()).then(|| (name.to_owned(), annotated))
            })
            .collect();
        *self.tool_headers.write().unwrap_or_else(|p| p.into_inner()) = map;
    }

    /// Add or remove a resource from the set watched on a modern server.
    pub fn set_watched(&self, uri: &str, watch: bool) {
        self.watched.send_if_modified(|set| {
            if watch {
                set.insert(uri.to_owned())
            } else {
                set.remove(uri)
            }
        });
    }

    /// Is the server known to speak the stateless 2026-07-28 era?
    pub fn is_modern(&self) -> bool {
        *lock(&self.era) == Some(true)
    }

    /// Is the server known to speak a legacy era (so it never asks for input
    /// inside a call's result)?
    pub fn is_legacy(&self) -> bool {
        *lock(&self.era) == Some(false)
    }

    /// Open a new connection to this server in its era for a session or a
    /// principal: a modern server needs only `server/discover`; a legacy one the
    /// `initialize` handshake. A stdio child for it counts against `max_children`.
    pub async fn connect(
        &self,
        protocol_version: &str,
        capabilities: Value,
        client_info: Value,
        sink: Option<Sink>,
    ) -> Result<Arc<Connection>, UpstreamError> {
        self.connect_as(false, protocol_version, capabilities, client_info, sink)
            .await
    }

    /// [`Upstream::connect`]; `supervisor`: for the supervisor's own connection,
    /// whose child is never refused by the cap.
    async fn connect_as(
        &self,
        supervisor: bool,
        protocol_version: &str,
        capabilities: Value,
        client_info: Value,
        sink: Option<Sink>,
    ) -> Result<Arc<Connection>, UpstreamError> {
        let limit = self.cfg().timeout().min(Duration::from_secs(30));
        let attempt = async {
            let known = match self.cfg().era {
                UpstreamEra::Legacy => Some(false),
                UpstreamEra::Modern => Some(true),
                UpstreamEra::Auto if self.cfg().transport() == TransportKind::Sse => Some(false),
                UpstreamEra::Auto => *lock(&self.era),
            };
            if known != Some(false) {
                let conn = self.start(sink.clone(), supervisor).await?;
                let probe = conn.discover(&capabilities, &client_info);
                match tokio::time::timeout(PROBE_TIMEOUT.min(limit), probe).await {
                    Ok(Ok(_)) => {
                        *lock(&self.era) = Some(true);
                        return Ok(conn);
                    }
                    Ok(Err(e)) if self.cfg().era == UpstreamEra::Modern => return Err(e),
                    _ if self.cfg().era == UpstreamEra::Modern => {
                        return Err(UpstreamError::Timeout {
                            server: self.name.clone(),
                            after: PROBE_TIMEOUT.min(limit),
                        });
                    }
                    // Not modern (or it changed since the last probe): legacy below.
                    _ => {
                        tracing::debug!(server = %self.name, "no server/discover; trying initialize")
                    }
                }
            }
            // A fresh transport: a stdio server may not survive a request before
            // `initialize`, and an HTTP one has nothing to lose.
            let conn = self.start(sink, supervisor).await?;
            conn.initialize(protocol_version, capabilities, client_info)
                .await?;
            *lock(&self.era) = Some(false);
            Ok(conn)
        };
        let result = match tokio::time::timeout(limit, attempt).await {
            Ok(r) => r,
            Err(_) => Err(UpstreamError::Timeout {
                server: self.name.clone(),
                after: limit,
            }),
        };
        if result.is_err() {
            // Probe again next time: the server may have been replaced.
            *lock(&self.era) = None;
        }
        result
    }

    async fn start(
        &self,
        sink: Option<Sink>,
        supervisor: bool,
    ) -> Result<Arc<Connection>, UpstreamError> {
        let child = if self.cfg().transport() == TransportKind::Stdio {
            if let Some((until, reason)) = &*lock(&self.held)
                && Instant::now() < *until
            {
                return Err(UpstreamError::Unavailable {
                    server: self.name.clone(),
                    reason: reason.clone(),
                });
            }
            let Some(permit) = self.children.admit(supervisor) else {
                return Err(UpstreamError::Unavailable {
                    server: self.name.clone(),
                    reason: format!(
                        "max_children ({}) child processes are running; try again when a session ends",
                        self.children.max()
                    ),
                });
            };
            Some(permit)
        } else {
            None
        };
        let transport = upstream::open(
            &self.name,
            &self.cfg(),
            self.max_message,
            self.tool_headers.clone(),
            child,
        )
        .await?;
        let exact = self.cfg().transport() == TransportKind::StreamableHttp;
        Ok(Connection::start(self.name.clone(), transport, exact, sink))
    }

    /// The shared connection, waiting (up to the server's timeout) while it starts.
    pub async fn shared_connection(&self) -> Result<Arc<Connection>, UpstreamError> {
        let mut rx = self.changed.subscribe();
        let deadline = tokio::time::Instant::now() + self.cfg().timeout();
        loop {
            {
                let st = lock(&self.state);
                if let Some(c) = &st.shared
                    && c.closed().is_none()
                {
                    return Ok(c.clone());
                }
                if let Status::Down { reason } = &st.status {
                    return Err(UpstreamError::Unavailable {
                        server: self.name.clone(),
                        reason: reason.clone(),
                    });
                }
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => continue,
                _ => {
                    return Err(UpstreamError::Unavailable {
                        server: self.name.clone(),
                        reason: "still starting".into(),
                    });
                }
            }
        }
    }

    /// Read every page of one list.
    async fn read_list(
        &self,
        conn: &Connection,
        kind: ListKind,
        hints: &mut CacheHints,
    ) -> Result<Vec<Value>, UpstreamError> {
        let mut items = Vec::new();
        let mut cursor: Option<Value> = None;
        for _ in 0..MAX_PAGES {
            let mut params = cursor.take().map(|c| json!({ "cursor": c }));
            if conn.is_modern() {
                params = Some(upstream::with_request_meta(
                    params,
                    &relay_capabilities(),
                    &gateway_client_info(),
                    None,
                ));
            }
            let resp = tokio::time::timeout(
                self.cfg().timeout(),
                conn.request(kind.method(), params, None),
            )
            .await
            .map_err(|_| UpstreamError::Timeout {
                server: self.name.clone(),
                after: self.cfg().timeout(),
            })??;
            if let Some(e) = resp.error {
                // A server without this list is not broken; it just has none.
                if e.code == code::METHOD_NOT_FOUND {
                    return Ok(items);
                }
                return Err(UpstreamError::Protocol {
                    server: self.name.clone(),
                    reason: format!("{} failed: {}", kind.method(), e.message),
                });
            }
            let result: Value = resp
                .result
                .as_deref()
                .and_then(|r| serde_json::from_str(r.get()).ok())
                .unwrap_or(Value::Null);
            if let Some(Value::Array(page)) = result.get(kind.field()) {
                items.extend(page.iter().cloned());
            }
            hints.note(&result);
            match result.get("nextCursor") {
                Some(c) if !c.is_null() && c.as_str() != Some("") => cursor = Some(c.clone()),
                _ => return Ok(items),
            }
        }
        Ok(items)
    }

    pub async fn read_lists(&self, conn: &Connection) -> Result<ServerLists, UpstreamError> {
        let caps = conn
            .info()
            .map(|i| i.capabilities.clone())
            .unwrap_or(Value::Null);
        let has = |k: &str| caps.get(k).is_some();
        let mut lists = ServerLists::default();
        let mut hints = CacheHints::default();
        if has("tools") {
            lists.tools = self.read_list(conn, ListKind::Tools, &mut hints).await?;
        }
        if has("prompts") {
            lists.prompts = self.read_list(conn, ListKind::Prompts, &mut hints).await?;
        }
        if has("resources") {
            lists.resources = self
                .read_list(conn, ListKind::Resources, &mut hints)
                .await?;
            lists.templates = self
                .read_list(conn, ListKind::Templates, &mut hints)
                .await?;
        }
        lists.ttl_ms = hints.ttl_ms;
        lists.private = hints.private;
        Ok(lists)
    }
}

/// Something the supervisor tells the gateway about.
pub enum SupervisorEvent {
    /// The server's lists or availability changed: rebuild the catalog.
    CatalogChanged,
    /// `notifications/resources/updated` on a shared connection.
    ResourceUpdated(usize, Box<crate::jsonrpc::Message>),
    /// The server's shared connection changed state (for the audit trail):
    /// `ready`, `lost` (reconnecting at once) or `down` (with backoff).
    Lifecycle(usize, &'static str, Option<String>),
}

/// Keep one server's shared connection alive for as long as the gateway runs.
///
/// A connection that was up for a while and then ends (server restart, expired
/// session) is re-established at once, with callers waiting for it and the
/// server's items kept listed; only when connecting fails is the server marked
/// down, and retried with exponential backoff (250 ms doubling to 30 s).
pub async fn supervise(
    up: Arc<Upstream>,
    catalog_ttl: Duration,
    events: mpsc::Sender<SupervisorEvent>,
    stop: tokio_util::sync::CancellationToken,
) {
    const MIN_BACKOFF: Duration = Duration::from_millis(250);
    let mut backoff = MIN_BACKOFF;
    // Connections in a row that ended within a second of starting: a crash loop
    // is reconnected with backoff, a one-off loss at once.
    let mut quick_losses = 0u32;
    // When the recent restarts of a stdio server happened (`restart.window`).
    let mut restarts = VecDeque::new();
    let mut last_reason: Option<String> = None;
    while !stop.is_cancelled() {
        if let Some(last) = &last_reason
            && up.cfg().transport() == TransportKind::Stdio
            && crash_loop(&up.cfg().restart, &mut restarts, Instant::now())
        {
            if !hold_down(&up, last, &events, &stop).await {
                return;
            }
            restarts.clear();
            backoff = MIN_BACKOFF;
        }
        let (sink, mut sink_rx) = mpsc::channel(256);
        let started = Instant::now();
        let connected = tokio::select! {
            c = up.connect_as(true, crate::jsonrpc::LATEST_LEGACY, relay_capabilities(), gateway_client_info(), Some(sink)) => c,
            _ = stop.cancelled() => return,
        };
        let result = match connected {
            Ok(conn) => match up.read_lists(&conn).await {
                Ok(lists) => Ok((conn, lists)),
                Err(e) => Err(e.to_string()),
            },
            Err(e) => Err(e.to_string()),
        };
        let reason = match result {
            Ok((conn, lists)) => {
                tracing::info!(
                    server = %up.name,
                    tools = lists.tools.len(),
                    prompts = lists.prompts.len(),
                    resources = lists.resources.len(),
                    "server ready"
                );
                up.note_tool_headers(&lists);
                up.update(|s| {
                    s.status = Status::Ready;
                    s.shared = Some(conn.clone());
                    s.info = conn.info().cloned();
                    s.lists = Some(Arc::new(lists));
                    s.attempts += 1;
                });
                let _ = events.send(SupervisorEvent::CatalogChanged).await;
                let _ = events
                    .send(SupervisorEvent::Lifecycle(up.idx, "ready", None))
                    .await;
                let reason = serve(&up, &conn, &mut sink_rx, catalog_ttl, &events, &stop).await;
                if stop.is_cancelled() {
                    return;
                }
                quick_losses = if started.elapsed() < Duration::from_secs(1) {
                    quick_losses + 1
                } else {
                    0
                };
                if quick_losses <= 1 {
                    // It was working: reconnect now, callers wait for the new connection.
                    tracing::info!(server = %up.name, "connection lost ({reason}); reconnecting");
                    let _ = events
                        .send(SupervisorEvent::Lifecycle(
                            up.idx,
                            "lost",
                            Some(reason.clone()),
                        ))
                        .await;
                    up.update(|s| {
                        s.status = Status::Starting;
                        s.shared = None;
                    });
                    backoff = MIN_BACKOFF;
                    last_reason = Some(reason);
                    continue;
                }
                reason
            }
            Err(reason) => reason,
        };
        tracing::warn!(server = %up.name, "server down: {reason}");
        last_reason = Some(reason.clone());
        mark_down(&up, reason, &events).await;
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.cancelled() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

/// Mark the server down for `reason`: audited, its shared connection gone, the
/// catalog rebuilt. With `failure: open` its items vanish; with `closed` they
/// stay listed and calls fail with a clear error until it is back.
async fn mark_down(up: &Arc<Upstream>, reason: String, events: &mpsc::Sender<SupervisorEvent>) {
    let _ = events
        .send(SupervisorEvent::Lifecycle(
            up.idx,
            "down",
            Some(reason.clone()),
        ))
        .await;
    let keep_items = up.cfg().failure == crate::config::FailureMode::Closed;
    up.update(|s| {
        s.status = Status::Down { reason };
        s.shared = None;
        s.attempts += 1;
        if !keep_items {
            s.lists = None;
        }
    });
    let _ = events.send(SupervisorEvent::CatalogChanged).await;
}

/// Note a restart now, unless it would be one too many within the window: then
/// the server is crash-looping.
fn crash_loop(
    policy: &crate::config::RestartPolicy,
    restarts: &mut VecDeque<Instant>,
    now: Instant,
) -> bool {
    while restarts
        .front()
        .is_some_and(|t| now.duration_since(*t) > policy.window.0)
    {
        restarts.pop_front();
    }
    if restarts.len() >= policy.max as usize {
        return true;
    }
    restarts.push_back(now);
    false
}

/// Hold a crash-looping server down for its cool-down: marked down with the
/// reason, no child started for anyone. False if the gateway stopped meanwhile.
async fn hold_down(
    up: &Arc<Upstream>,
    last: &str,
    events: &mpsc::Sender<SupervisorEvent>,
    stop: &tokio_util::sync::CancellationToken,
) -> bool {
    let policy = up.cfg().restart;
    let reason = format!(
        "crash loop: restarted {} times within {}s; not started again for {}s (restart.cooldown); last failure: {last}",
        policy.max,
        policy.window.0.as_secs_f64(),
        policy.cooldown.0.as_secs_f64(),
    );
    tracing::error!(server = %up.name, "{reason}");
    *lock(&up.held) = Some((Instant::now() + policy.cooldown.0, reason.clone()));
    mark_down(up, reason, events).await;
    let held = tokio::select! {
        _ = tokio::time::sleep(policy.cooldown.0) => true,
        _ = stop.cancelled() => false,
    };
    *lock(&up.held) = None;
    if held {
        tracing::info!(server = %up.name, "cool-down over; starting again");
    }
    held
}

/// Keep a `subscriptions/listen` open on a modern server for list changes and the
/// watched resources, reopening it whenever the watched set changes.
async fn listen_upstream(
    up: Arc<Upstream>,
    conn: Arc<Connection>,
    events: mpsc::Sender<SupervisorEvent>,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut watched = up.watched.subscribe();
    while !stop.is_cancelled() && conn.closed().is_none() {
        let uris: Vec<String> = watched.borrow_and_update().iter().cloned().collect();
        let params = json!({ "notifications": {
            "toolsListChanged": true,
            "promptsListChanged": true,
            "resourcesListChanged": true,
            "resourceSubscriptions": uris,
        }});
        let params = upstream::with_request_meta(
            Some(params),
            &relay_capabilities(),
            &gateway_client_info(),
            None,
        );
        let (sink, mut notes) = mpsc::channel(64);
        let listen = conn.request("subscriptions/listen", Some(params), Some(sink));
        tokio::pin!(listen);
        let restart = loop {
            tokio::select! {
                Some(ev) = notes.recv() => {
                    if let ServerEvent::Notification(msg, _) = ev {
                        match msg.method() {
                            m if m.ends_with("/list_changed") => up.refresh.notify_one(),
                            "notifications/resources/updated" => {
                                let _ = events.send(SupervisorEvent::ResourceUpdated(up.idx, Box::new(msg))).await;
                            }
                            _ => {}
                        }
                    }
                }
                // The watched set changed: dropping the request cancels it upstream.
                changed = watched.changed() => break changed.is_ok(),
                // The server ended the stream (or refused it): try again shortly.
                _ = &mut listen => {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    break true;
                }
                _ = stop.cancelled() => break false,
            }
        };
        if !restart {
            return;
        }
    }
}

/// Serve one live shared connection until it ends; returns why it ended.
async fn serve(
    up: &Arc<Upstream>,
    conn: &Arc<Connection>,
    sink_rx: &mut mpsc::Receiver<ServerEvent>,
    ttl: Duration,
    events: &mpsc::Sender<SupervisorEvent>,
    stop: &tokio_util::sync::CancellationToken,
) -> String {
    let mut refresh_at = tokio::time::Instant::now() + ttl;
    // A modern server sends change notifications only on a listen stream.
    let listening = conn.is_modern().then(|| {
        let guard = tokio_util::sync::CancellationToken::new();
        tokio::spawn(listen_upstream(
            up.clone(),
            conn.clone(),
            events.clone(),
            guard.clone(),
        ));
        guard.drop_guard()
    });
    let _listening = listening;
    let mut last_probe = tokio::time::Instant::now();
    let mut probe: Option<futures::future::BoxFuture<'static, Result<Duration, String>>> = None;
    let mut tripped = up.circuit.watch();
    loop {
        // Read each time round: a reload may change them.
        let health = up.cfg().health;
        let probing = !health.interval.0.is_zero();
        let next_probe = probing.then(|| last_probe + health.interval.0);
        // A tripped circuit is probed as soon as its cooldown ends (at most
        // twice a second): with `failure: open` no call can reach the server
        // to probe it while its items are out of discovery.
        let circuit_due = up.circuit.open_until().map(|t| {
            tokio::time::Instant::from_std(t).max(last_probe + Duration::from_millis(500))
        });
        let due = match (next_probe, circuit_due) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let refresh = tokio::select! {
            _ = tokio::time::sleep_until(due.unwrap_or_else(far_future)), if probe.is_none() && due.is_some() => {
                probe = Some(Box::pin(probe_once(conn.clone(), health.timeout.0)));
                false
            }
            verdict = async { probe.as_mut().expect("a probe in flight").await }, if probe.is_some() => {
                probe = None;
                last_probe = tokio::time::Instant::now();
                up.circuit.probed(verdict.is_ok(), &up.name);
                let failures = up.note_health(verdict.as_ref().map(|d| *d).map_err(String::as_str));
                if let Err(e) = verdict
                    && probing
                    && failures >= health.failures
                {
                    let reason = format!("health check failed {failures} times in a row: {e}");
                    conn.abandon(UpstreamError::Closed { server: up.name.clone(), reason: reason.clone() });
                    return reason;
                }
                false
            }
            changed = tripped.changed() => {
                if changed.is_ok() {
                    let open = *tripped.borrow_and_update();
                    let status = if open { "circuit_open" } else { "circuit_closed" };
                    let _ = events.send(SupervisorEvent::Lifecycle(up.idx, status, None)).await;
                    let _ = events.send(SupervisorEvent::CatalogChanged).await;
                }
                false
            }
            ev = sink_rx.recv() => match ev {
                // Only the end of *this* connection matters: a probe connection
                // that shared the sink and was dropped also reports its end.
                Some(ServerEvent::Closed(e)) if conn.closed().is_some() => return e.to_string(),
                Some(ServerEvent::Closed(_)) => false,
                None => return "connection ended".to_owned(),
                Some(ServerEvent::Notification(msg, _)) => {
                    match msg.method() {
                        m if m.ends_with("/list_changed") => true,
                        "notifications/resources/updated" => {
                            let _ = events.send(SupervisorEvent::ResourceUpdated(up.idx, Box::new(msg))).await;
                            false
                        }
                        m => {
                            // Not attributable to any client: never broadcast it.
                            tracing::debug!(server = %up.name, method = m, "unattributed notification dropped");
                            false
                        }
                    }
                }
                Some(ServerEvent::Request(msg, responder)) => {
                    // Only what the gateway can answer for everyone is answered here.
                    let outcome = match msg.method() {
                        "ping" => Ok(empty_object()),
                        "roots/list" => Ok(crate::jsonrpc::to_raw(&json!({ "roots": [] }))),
                        m => Err(ErrorObject::new(
                            code::UNATTRIBUTED,
                            format!("toolgate cannot attribute {m} from server '{}' to a client request; use isolation: per_session for servers that make requests outside tool calls", up.name),
                        )),
                    };
                    tokio::spawn(responder.respond(outcome));
                    false
                }
            },
            _ = up.refresh.notified() => true,
            _ = tokio::time::sleep_until(refresh_at) => true,
            _ = stop.cancelled() => return "gateway stopping".into(),
        };
        if refresh {
            refresh_at = tokio::time::Instant::now() + ttl;
            match up.read_lists(conn).await {
                Ok(lists) => {
                    up.note_tool_headers(&lists);
                    up.update(|s| s.lists = Some(Arc::new(lists)));
                    let _ = events.send(SupervisorEvent::CatalogChanged).await;
                }
                Err(e) => tracing::warn!(server = %up.name, "re-reading lists failed: {e}"),
            }
        }
    }
}

fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(86_400 * 365)
}

/// One health probe of a live connection: `ping`, or `server/discover` for a
/// 2026-07-28 server (which has no `ping`). Any answer, an error included,
/// means the server is there.
async fn probe_once(conn: Arc<Connection>, timeout: Duration) -> Result<Duration, String> {
    let started = Instant::now();
    let params = conn.is_modern().then(|| {
        upstream::with_request_meta(None, &relay_capabilities(), &gateway_client_info(), None)
    });
    let method = if conn.is_modern() {
        "server/discover"
    } else {
        "ping"
    };
    match tokio::time::timeout(timeout, conn.request(method, params, None)).await {
        Ok(Ok(_)) => Ok(started.elapsed()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "no answer to a health probe within {}s",
            timeout.as_secs_f64()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{RestartPolicy, Seconds};

    #[test]
    fn one_restart_too_many_within_the_window_is_a_crash_loop() {
        let policy = RestartPolicy {
            max: 2,
            window: Seconds(Duration::from_secs(60)),
            cooldown: Seconds(Duration::from_secs(300)),
        };
        let t0 = Instant::now();
        let mut restarts = VecDeque::new();
        assert!(!crash_loop(&policy, &mut restarts, t0));
        assert!(!crash_loop(
            &policy,
            &mut restarts,
            t0 + Duration::from_secs(10)
        ));
        assert!(crash_loop(
            &policy,
            &mut restarts,
            t0 + Duration::from_secs(20)
        ));
        // Once the oldest restart has left the window, one more is allowed.
        assert!(!crash_loop(
            &policy,
            &mut restarts,
            t0 + Duration::from_secs(61)
        ));
        assert!(crash_loop(
            &policy,
            &mut restarts,
            t0 + Duration::from_secs(62)
        ));
    }
}
