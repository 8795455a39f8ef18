//! `subscriptions/listen` (2026-07-28): a long-lived response stream carrying the
//! change notifications one client opted in to, each tagged with its
//! subscription id. A listener hears only what its own filter asked for.

use super::Gateway;
use super::stream::EventStream;
use crate::jsonrpc::{Id, Message};
use crate::policy::Action;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

pub struct Listener {
    subscription: Value,
    tools: bool,
    prompts: bool,
    resources: bool,
    /// Exposed URIs whose updates this listener asked for.
    uris: HashSet<String>,
    out: Arc<EventStream>,
}

impl Listener {
    fn send(&self, method: &str, params: Option<Value>) {
        let mut params = params.unwrap_or_else(|| json!({}));
        if let Some(p) = params.as_object_mut() {
            let meta = p.entry("_meta").or_insert_with(|| json!({}));
            if let Some(m) = meta.as_object_mut() {
                m.insert(
                    super::modern::META_SUBSCRIPTION.into(),
                    self.subscription.clone(),
                );
            }
        }
        self.out.push(&Message::notification(method, Some(params)));
    }
}

/// Every open listen stream, and the upstream subscriptions they hold.
#[derive(Default)]
pub struct Listeners {
    next: AtomicU64,
    open: Mutex<HashMap<u64, Arc<Listener>>>,
    /// (server, original URI) → how many listeners want its updates.
    upstream: Mutex<HashMap<(usize, String), usize>>,
}

impl Listeners {
    fn all(&self) -> Vec<Arc<Listener>> {
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// A list changed: tell the listeners that asked for it.
    pub fn list_changed(&self, method: &str) {
        for l in self.all() {
            let wanted = match method {
                "notifications/tools/list_changed" => l.tools,
                "notifications/prompts/list_changed" => l.prompts,
                "notifications/resources/list_changed" => l.resources,
                _ => false,
            };
            if wanted {
                l.send(method, None);
            }
        }
    }

    /// A resource changed (its exposed URI): tell the listeners subscribed to it.
    pub fn resource_updated(&self, uri: &str, params: &Value) {
        for l in self.all() {
            if l.uris.contains(uri) {
                l.send("notifications/resources/updated", Some(params.clone()));
            }
        }
    }

    /// Count a listener's interest in an upstream resource; true for the first.
    fn acquire(&self, key: &(usize, String)) -> bool {
        let mut map = self.upstream.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(key.clone()).or_insert(0);
        *n += 1;
        *n == 1
    }

    /// Drop a listener's interest; true when nobody wants it any more.
    fn release(&self, key: &(usize, String)) -> bool {
        let mut map = self.upstream.lock().unwrap_or_else(|p| p.into_inner());
        match map.get_mut(key) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            _ => {
                map.remove(key);
                true
            }
        }
    }
}

impl Gateway {
    /// Serve a `subscriptions/listen` request, posted to `endpoint`, until the
    /// client goes away.
    pub(super) async fn listen(
        self: &Arc<Self>,
        id: Id,
        params: &Value,
        origin: &super::authz::Origin<'_>,
        out: &Arc<EventStream>,
        cancel: CancellationToken,
    ) -> Option<Message> {
        let filter = params.get("notifications").cloned().unwrap_or(json!({}));
        let flag = |k: &str| filter.get(k).and_then(Value::as_bool).unwrap_or(false);
        let cat = self.catalog();
        let mut honoured = serde_json::Map::new();
        for k in [
            "toolsListChanged",
            "promptsListChanged",
            "resourcesListChanged",
        ] {
            if flag(k) {
                honoured.insert(k.into(), Value::Bool(true));
            }
        }
        // Only resources whose owner is known, that the endpoint exposes and that the
        // caller may subscribe to can be watched; the acknowledgement names them.
        let mut uris = HashSet::new();
        let mut upstream = Vec::new();
        if let Some(list) = filter
            .get("resourceSubscriptions")
            .and_then(Value::as_array)
        {
            for uri in list.iter().filter_map(Value::as_str) {
                if let Some((server, original)) = cat.route_uri(uri)
                    && self
                        .servers
                        .get(server)
                        .is_some_and(|up| self.endpoints.allows_server(origin.endpoint, &up.name))
                    && self
                        .authorize_uri(origin, &cat, Action::Subscribe, server, uri, &original)
                        .is_ok()
                    && uris.insert(uri.to_owned())
                {
                    upstream.push((server, original));
                }
            }
            honoured.insert(
                "resourceSubscriptions".into(),
                Value::Array(uris.iter().cloned().map(Value::String).collect()),
            );
        }
        let subscription = serde_json::to_value(&id).unwrap_or(Value::Null);
        let listener = Arc::new(Listener {
            subscription: subscription.clone(),
            tools: flag("toolsListChanged"),
            prompts: flag("promptsListChanged"),
            resources: flag("resourcesListChanged"),
            uris,
            out: out.clone(),
        });
        listener.send(
            "notifications/subscriptions/acknowledged",
            Some(json!({ "notifications": honoured })),
        );
        let key = self.listeners.next.fetch_add(1, Ordering::Relaxed);
        self.listeners
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, listener);
        for sub in &upstream {
            if self.listeners.acquire(sub) {
                self.upstream_subscription(sub, "resources/subscribe");
            }
        }
        let stopped = tokio::select! {
            _ = cancel.cancelled() => false,
            _ = self.stop.cancelled() => true,
        };
        self.listeners
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key);
        for sub in &upstream {
            if self.listeners.release(sub) {
                self.upstream_subscription(sub, "resources/unsubscribe");
            }
        }
        // The gateway ends the stream only when it stops; then it says so.
        stopped.then(|| {
            Message::response_value(
                id,
                &json!({
                    "resultType": "complete",
                    "_meta": { super::modern::META_SUBSCRIPTION: subscription },
                }),
            )
        })
    }

    /// Start or stop watching a resource upstream. A legacy server is asked on its
    /// shared connection (`resources/subscribe`); a modern one hears the new set on
    /// the supervisor's `subscriptions/listen`. Either way updates come back to
    /// `resource_updated`.
    fn upstream_subscription(&self, (server, uri): &(usize, String), method: &'static str) {
        let Some(up) = self.servers.get(*server).cloned() else {
            return;
        };
        if up.is_modern() {
            up.set_watched(uri, method == "resources/subscribe");
            return;
        }
        let uri = uri.clone();
        tokio::spawn(async move {
            let Ok(conn) = up.shared_connection().await else {
                return;
            };
            let call = conn.request(method, Some(json!({ "uri": uri })), None);
            if let Ok(Ok(resp)) = tokio::time::timeout(up.cfg().timeout(), call).await
                && let Some(e) = resp.error
            {
                tracing::debug!(server = %up.name, "{method} failed: {}", e.message);
            }
        });
    }

    /// A legacy client's `resources/subscribe` (or unsubscribe) for a resource of a
    /// modern server, which has no such method: counted with the listeners' interest.
    pub(super) fn legacy_subscription(&self, server: usize, uri: &str, subscribe: bool) {
        let key = (server, uri.to_owned());
        if subscribe {
            if self.listeners.acquire(&key) {
                self.upstream_subscription(&key, "resources/subscribe");
            }
        } else if self.listeners.release(&key) {
            self.upstream_subscription(&key, "resources/unsubscribe");
        }
    }
}
