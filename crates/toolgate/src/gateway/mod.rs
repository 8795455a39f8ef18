//! The gateway core: one internal shape for every call, whatever transport it came on.
//!
//! Downstream adapters (`downstream::http`, `downstream::stdio`) parse what arrives
//! and hand each message here with the session it belongs to and the stream its
//! answers go to. The core routes it through the catalog to the owning server and
//! relays everything the server sends back. The order of work for a call is visible
//! in `dispatch.rs`.

mod admit;
pub mod audit;
pub(crate) mod authz;
mod cache;
pub(crate) mod circuit;
mod dispatch;
pub(crate) mod endpoints;
mod forward;
mod listen;
pub mod modern;
pub mod pool;
pub mod reload;
pub mod session;
pub mod stream;
pub mod tasks;
pub mod upstreams;

pub use session::{Session, Sessions};
pub use stream::EventStream;
pub use upstreams::{Status, Upstream};

use crate::catalog::{Catalog, Cursors, ListKind, ServerView};
use crate::config::{Config, FailureMode};
use crate::jsonrpc::{LATEST_LEGACY, LEGACY_VERSIONS, Message};
use arc_swap::ArcSwap;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use upstreams::SupervisorEvent;

pub struct Gateway {
    /// The settings in force; a reload swaps in new ones (`crate::reload`).
    config: ArcSwap<Config>,
    rebuilding: std::sync::Mutex<()>,
    pub servers: Vec<Arc<Upstream>>,
    catalog: ArcSwap<Catalog>,
    generation: AtomicU64,
    pub cursors: Cursors,
    pub sessions: Sessions,
    /// Response streams open to clients, for metrics.
    pub streams: stream::OpenStreams,
    pub stop: CancellationToken,
    /// Results reused for the same caller (`cache:` per server).
    pub(crate) results: cache::ResultCache,
    /// Cancelled when shutdown begins: no new connections or requests.
    pub draining: CancellationToken,
    /// Requests being handled, which a shutdown waits for.
    in_flight: InFlight,
    /// Modern calls held between MRTR rounds.
    pub(crate) mrtr: modern::Mrtr,
    /// Open `subscriptions/listen` streams.
    pub(crate) listeners: listen::Listeners,
    /// Task ids as clients see them.
    pub(crate) task_ids: tasks::TaskIds,
    /// Who may see and use what.
    pub(crate) authz: authz::Authz,
    /// What each extra endpoint exposes.
    pub(crate) endpoints: endpoints::Endpoints,
    /// Where the audit trail goes.
    pub audit: crate::audit::Auditor,
    /// What the trail may record of arguments and results.
    pub(crate) redactor: ArcSwap<crate::audit::redact::Redactor>,
    /// Rate limits, quotas, concurrency and sizes (the admit stage).
    pub limits: crate::limits::Limits,
    /// Why the policies could not be loaded (the gateway then denies everything
    /// and `wait_started` fails).
    policy_error: Option<String>,
    /// Every stdio child, against `max_children`.
    pub children: Arc<crate::upstream::process::Children>,
}

/// Give memory the allocator holds but nothing uses back to the system: the
/// start-up (policies compiled, lists read, the catalog built) frees far more
/// than it keeps, and neither glibc nor jemalloc returns freed pages at once.
/// Cheap enough to run every housekeeping round; elsewhere it does nothing.
fn release_free_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu", feature = "jemalloc"))]
    // SAFETY: both controls take and return nothing (null pointers, zero
    // length); they only touch the allocator's own state, from any thread.
    unsafe {
        use std::ptr::null_mut;
        // This thread's cache of freed blocks, then every arena's free pages
        // (4096 is jemalloc's "all arenas").
        for name in [c"thread.tcache.flush", c"arena.4096.purge"] {
            tikv_jemalloc_sys::mallctl(name.as_ptr(), null_mut(), null_mut(), null_mut(), 0);
        }
    }
    #[cfg(all(target_os = "linux", target_env = "gnu", not(feature = "jemalloc")))]
    // SAFETY: malloc_trim only walks the allocator's own free lists; it takes
    // no pointer and is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// toolgate's own `Implementation` description.
pub(crate) fn server_info() -> Value {
    json!({
        "name": "toolgate",
        "title": "toolgate MCP gateway",
        "version": env!("CARGO_PKG_VERSION"),
    })
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("required server '{server}' is unavailable: {reason}")]
    Server { server: String, reason: String },
    #[error("policies cannot be loaded: {0}")]
    Policy(String),
}

impl Gateway {
    /// Start supervising every enabled server. Returns at once; use `wait_started`
    /// to wait for each server's first connection attempt.
    pub fn start(config: Config) -> Arc<Gateway> {
        Gateway::start_audited(config, crate::audit::Auditor::disabled())
    }

    /// [`Gateway::start`], writing the audit trail through `audit`.
    pub fn start_audited(config: Config, audit: crate::audit::Auditor) -> Arc<Gateway> {
        let config = Arc::new(config);
        let (authz, policy_error) = match authz::Authz::new(&config, &audit) {
            Ok(a) => (a, None),
            Err(e) => (authz::Authz::deny_all(), Some(e)),
        };
        let children = crate::upstream::process::Children::new(config.max_children);
        let servers = config
            .enabled_servers()
            .enumerate()
            .map(|(i, (name, cfg))| {
                Upstream::new(
                    i,
                    name,
                    cfg.clone(),
                    config.max_message_bytes,
                    children.clone(),
                )
            })
            .collect::<Vec<_>>();
        let gw = Arc::new(Gateway {
            config: ArcSwap::new(config.clone()),
            rebuilding: std::sync::Mutex::default(),
            servers,
            catalog: ArcSwap::from_pointee(Catalog::default()),
            generation: AtomicU64::new(0),
            cursors: Cursors::new(crate::seal::Sealer::new()),
            sessions: Sessions::default(),
            streams: stream::OpenStreams::default(),
            stop: CancellationToken::new(),
            draining: CancellationToken::new(),
            results: cache::ResultCache::new(config.result_cache_bytes),
            in_flight: InFlight::default(),
            mrtr: modern::Mrtr::new(config.input_required_ttl.0),
            listeners: listen::Listeners::default(),
            task_ids: tasks::TaskIds::new(),
            authz,
            endpoints: endpoints::Endpoints::new(&config),
            redactor: ArcSwap::from_pointee(crate::audit::redact::Redactor::new(&config)),
            limits: crate::limits::Limits::new(&config, crate::limits::limiter_for(&config)),
            audit,
            policy_error,
            children,
        });
        let (tx, mut rx) = mpsc::channel(256);
        for up in &gw.servers {
            tokio::spawn(upstreams::supervise(
                up.clone(),
                config.catalog_ttl.0,
                tx.clone(),
                gw.stop.clone(),
            ));
        }
        let weak = Arc::downgrade(&gw);
        tokio::spawn(async move {
            while let Some(ev) = rx.recv().await {
                let Some(gw) = weak.upgrade() else { return };
                match ev {
                    SupervisorEvent::CatalogChanged => gw.rebuild_catalog(),
                    SupervisorEvent::ResourceUpdated(server, msg) => {
                        gw.resource_updated(server, *msg)
                    }
                    SupervisorEvent::Lifecycle(server, status, reason) => {
                        let name = gw.servers.get(server).map_or("", |s| &*s.name);
                        gw.audit_upstream(name, status, reason.as_deref());
                    }
                }
            }
        });
        let weak = Arc::downgrade(&gw);
        let idle = config.session_idle_timeout.0;
        let child_idle = config.child_idle_timeout.0;
        tokio::spawn(async move {
            let every = Duration::from_secs(30).min(idle).min(child_idle);
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let Some(gw) = weak.upgrade() else { return };
                gw.reap_idle_sessions(idle).await;
                gw.reap_idle_children(child_idle);
                gw.mrtr.reap();
                gw.limits.limiter().sweep();
                release_free_heap();
            }
        });
        gw
    }

    /// Wait until every server has been tried once. Fails if a `failure: closed`
    /// server could not be reached: the gateway must not serve half-configured.
    pub async fn wait_started(&self) -> Result<(), StartError> {
        if let Some(e) = &self.policy_error {
            return Err(StartError::Policy(e.clone()));
        }
        futures::future::join_all(self.servers.iter().map(|s| s.wait_attempted())).await;
        self.rebuild_catalog();
        release_free_heap();
        for s in &self.servers {
            if s.cfg().failure == FailureMode::Closed
                && let Status::Down { reason } = s.status()
            {
                return Err(StartError::Server {
                    server: s.name.to_string(),
                    reason,
                });
            }
        }
        Ok(())
    }

    /// The settings in force now.
    pub fn config(&self) -> Arc<Config> {
        self.config.load_full()
    }

    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog.load_full()
    }

    /// Build a new catalog from every server's current lists and swap it in; tell
    /// every session about the lists that changed.
    pub fn rebuild_catalog(&self) {
        // A `failure: open` server whose circuit tripped leaves discovery until
        // it answers again.
        // One rebuild at a time: the last catalog swapped in is built from the
        // newest lists and settings (the supervisors and a reload both rebuild).
        let _one = self.rebuilding.lock().unwrap_or_else(|p| p.into_inner());
        let config = self.config();
        let lists: Vec<_> = self
            .servers
            .iter()
            .map(|s| if s.withdrawn() { None } else { s.lists() })
            .collect();
        let cfgs: Vec<_> = self.servers.iter().map(|s| s.cfg()).collect();
        let views: Vec<_> = self
            .servers
            .iter()
            .zip(&lists)
            .zip(&cfgs)
            .map(|((s, l), cfg)| ServerView {
                name: &s.name,
                prefix: &s.prefix,
                tools: &cfg.tools,
                prompts: &cfg.prompts,
                lists: l.as_deref(),
            })
            .collect();
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let new = Catalog::build(&config, &views, generation);
        let old = self.catalog.swap(Arc::new(new));
        let new = self.catalog.load();
        let mut changed = Vec::new();
        for (kind, note) in [
            (ListKind::Tools, "notifications/tools/list_changed"),
            (ListKind::Prompts, "notifications/prompts/list_changed"),
            (ListKind::Resources, "notifications/resources/list_changed"),
            (ListKind::Templates, "notifications/resources/list_changed"),
        ] {
            let same = old.items(kind).len() == new.items(kind).len()
                && old
                    .items(kind)
                    .iter()
                    .zip(new.items(kind))
                    .all(|(a, b)| a.json.get() == b.json.get());
            if !same && !changed.contains(&note) {
                changed.push(note);
            }
        }
        if changed.is_empty() {
            return;
        }
        for note in &changed {
            self.listeners.list_changed(note);
        }
        for session in self.sessions.all() {
            if !session.initialized.load(Ordering::Relaxed) {
                continue;
            }
            for note in &changed {
                session.standalone.push(&Message::notification(*note, None));
            }
        }
    }

    /// `notifications/resources/updated` from a shared connection: only to the
    /// sessions subscribed to that resource.
    fn resource_updated(&self, server: usize, mut msg: Message) {
        let cat = self.catalog();
        let Some(uri) = msg.param("uri").and_then(Value::as_str) else {
            return;
        };
        let exposed = cat.expose_uri(server, uri).to_owned();
        if let Some(p) = msg.params.as_mut() {
            p["uri"] = Value::String(exposed.clone());
        }
        for session in self.sessions.all() {
            if session.is_subscribed(&exposed) {
                session.standalone.push(&msg);
            }
        }
        if let Some(p) = &msg.params {
            self.listeners.resource_updated(&exposed, p);
        }
    }

    /// Who a stdio client is. The transport carries no credentials: the client is
    /// whoever started toolgate, the configured anonymous user or `local`.
    pub fn local_principal(&self) -> Arc<crate::auth::Principal> {
        let config = self.config();
        let anonymous = config.auth.as_ref().and_then(|a| a.anonymous.as_ref());
        Arc::new(anonymous.map_or_else(
            || crate::auth::Principal::anonymous("local"),
            crate::auth::Principal::configured_anonymous,
        ))
    }

    /// Why the policies are not in force, if they are not.
    pub fn policy_problem(&self) -> Option<String> {
        self.policy_error.clone()
    }

    /// Answer `initialize`: negotiate, create the session, describe the merged server.
    /// `standalone` is the stream the transport already has for this client (legacy
    /// SSE, stdio); Streamable HTTP sessions get a new one.
    pub fn initialize(
        self: &Arc<Self>,
        params: &Value,
        principal: Arc<crate::auth::Principal>,
        endpoint: &str,
        standalone: Option<Arc<EventStream>>,
        source: Option<std::net::IpAddr>,
    ) -> (Arc<Session>, Value) {
        let requested = params
            .get("protocolVersion")
            .and_then(Value::as_str)
            .unwrap_or(LATEST_LEGACY);
        let version = if LEGACY_VERSIONS.contains(&requested) {
            requested
        } else {
            LATEST_LEGACY
        };
        let session = Session::new(
            principal,
            endpoint.into(),
            version.to_owned(),
            params.get("capabilities").cloned().unwrap_or(json!({})),
            params.get("clientInfo").cloned().unwrap_or(json!({})),
            standalone,
        );
        if let Some(ip) = source {
            let _ = session.source.set(ip);
        }
        self.sessions.insert(session.clone());
        self.audit_session(&session, "start");
        tokio::spawn(dispatch::session_events(self.clone(), session.clone()));
        let mut result = json!({
            "protocolVersion": version,
            "capabilities": self.capabilities(),
            "serverInfo": server_info(),
        });
        if let Some(text) = self.instructions() {
            result["instructions"] = Value::String(text);
        }
        (session, result)
    }

    /// What the merged server offers. Lists can change as servers come and go, so
    /// list-changed notifications are always offered.
    fn capabilities(&self) -> Value {
        let mut caps = json!({
            "tools": { "listChanged": true },
            "prompts": { "listChanged": true },
            "resources": { "subscribe": true, "listChanged": true },
            "logging": {},
            "completions": {},
        });
        // Maps of optional features are merged; the first server to offer
        // tasks describes them (their ids are the gateway's, see tasks.rs).
        for key in ["experimental", "extensions"] {
            let mut merged = serde_json::Map::new();
            for s in &self.servers {
                if let Some(Value::Object(m)) =
                    s.info().and_then(|i| i.capabilities.get(key).cloned())
                {
                    for (k, v) in m {
                        merged.entry(k).or_insert(v);
                    }
                }
            }
            if !merged.is_empty() {
                caps[key] = Value::Object(merged);
            }
        }
        if let Some(tasks) = self
            .servers
            .iter()
            .find_map(|s| s.info().and_then(|i| i.capabilities.get("tasks").cloned()))
        {
            caps["tasks"] = tasks;
        }
        caps
    }

    /// Does a server offer the 2026-07-28 Tasks extension (which `capabilities`
    /// then offers too)?
    pub(crate) fn offers_tasks_extension(&self) -> bool {
        self.servers.iter().any(|s| {
            s.info().is_some_and(|i| {
                i.capabilities
                    .get("extensions")
                    .and_then(|e| e.get(tasks::EXTENSION))
                    .is_some()
            })
        })
    }

    fn instructions(&self) -> Option<String> {
        let parts: Vec<String> = self
            .servers
            .iter()
            .filter_map(|s| {
                let text = s.info()?.instructions?;
                Some(format!(
                    "## {} (tools prefixed `{}{}`)\n{}",
                    s.name,
                    s.prefix,
                    self.config().separator,
                    text.trim()
                ))
            })
            .collect();
        (!parts.is_empty()).then(|| parts.join("\n\n"))
    }

    pub async fn close_session(&self, id: &str) -> bool {
        match self.sessions.remove(id) {
            Some(s) => {
                // What it watched on modern servers is no longer wanted by it.
                let cat = self.catalog();
                for uri in s.subscriptions() {
                    if let Some((server, original)) = cat.route_uri(&uri)
                        && self.servers[server].is_modern()
                    {
                        self.legacy_subscription(server, &original, false);
                    }
                }
                s.close().await;
                self.audit_session(&s, "end");
                true
            }
            None => false,
        }
    }

    async fn reap_idle_sessions(&self, idle: Duration) {
        for s in self.sessions.all() {
            if s.readers.load(Ordering::Relaxed) == 0 && s.idle_for() > idle {
                tracing::info!(session = %s.id, "closing idle session");
                self.close_session(&s.id).await;
            }
        }
    }

    /// Begin a graceful shutdown: new connections and requests are refused
    /// from now on; wait up to `grace` for the requests in flight to finish.
    /// Returns how many were still running when the grace ran out.
    pub async fn drain(&self, grace: std::time::Duration) -> usize {
        self.draining.cancel();
        let busy = self.in_flight.count();
        if busy > 0 {
            tracing::info!(in_flight = busy, grace = ?grace, "draining: waiting for calls in flight");
        }
        let streams = &self.streams;
        let _ = tokio::time::timeout(grace, async {
            self.in_flight.idle().await;
            // An answer is delivered when its response stream has sent it and
            // ended; closing sessions any earlier could cut it off.
            while streams.count(stream::StreamKind::Request) > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        })
        .await;
        let left = self.in_flight.count() + streams.count(stream::StreamKind::Request);
        if left > 0 {
            tracing::warn!(
                in_flight = left,
                "the shutdown grace ran out: ending calls still in flight"
            );
        }
        left
    }

    /// A request being handled until the guard drops (see [`Gateway::drain`]).
    pub(crate) fn busy(&self) -> Busy<'_> {
        self.in_flight.enter()
    }

    /// Stop every supervisor and session (children are killed as connections drop).
    /// Stop the `per_session` and `per_principal` stdio children that had no call
    /// for `idle`; their sessions stay, and a later call starts a new child.
    fn reap_idle_children(&self, idle: Duration) {
        let stdio = |idx: &usize| {
            self.servers
                .get(*idx)
                .is_some_and(|s| s.cfg().transport() == crate::config::TransportKind::Stdio)
        };
        let mut reaped = 0;
        for s in self.sessions.all() {
            reaped += s.upstreams.reap_idle(idle, stdio);
        }
        for up in self
            .servers
            .iter()
            .filter(|s| s.cfg().transport() == crate::config::TransportKind::Stdio)
        {
            reaped += up.principals.reap_idle(idle, |_| true);
        }
        if reaped > 0 {
            tracing::info!(children = reaped, "stopped idle stdio children");
        }
    }

    /// Stop every supervisor and session (children are stopped as connections
    /// drop), and give the children their grace to exit before returning: once
    /// the process exits, what is left is killed outright.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        for s in self.sessions.all() {
            self.close_session(&s.id).await;
        }
        let deadline = tokio::time::Instant::now()
            + crate::upstream::process::STOP_GRACE
            + Duration::from_secs(1);
        // Polled: a child's end is a task's business; the count is all there is.
        while self.children.live() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // What the journal holds goes to the sinks now, not at the next start.
        if tokio::time::timeout(Duration::from_secs(5), self.audit.sync())
            .await
            .is_err()
        {
            tracing::warn!(
                "the audit sinks did not take the last events in time; the journal keeps them for the next start"
            );
        }
    }
}

/// Requests in flight, and a way to wait until there are none.
#[derive(Default)]
struct InFlight {
    count: std::sync::atomic::AtomicUsize,
    changed: tokio::sync::Notify,
}

impl InFlight {
    fn enter(&self) -> Busy<'_> {
        self.count.fetch_add(1, Ordering::AcqRel);
        Busy(self)
    }

    fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    async fn idle(&self) {
        loop {
            // Registered before the check, so a release in between is not missed.
            let notified = self.changed.notified();
            if self.count() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// One request in flight.
pub(crate) struct Busy<'a>(&'a InFlight);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.changed.notify_waiters();
        }
    }
}
