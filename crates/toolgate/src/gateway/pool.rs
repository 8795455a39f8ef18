//! Upstream connections kept per key (a server for a session, a principal for a
//! server), created on first use.
//!
//! Each key has its own slot lock, so connecting to one slow server never holds
//! up calls to another; the map lock is held only to find a slot.

use crate::upstream::{Connection, UpstreamError};
use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

type Slot = Arc<tokio::sync::Mutex<Option<Arc<Connection>>>>;

pub struct ConnectionPool<K> {
    slots: Mutex<HashMap<K, Slot>>,
}

impl<K> Default for ConnectionPool<K> {
    fn default() -> Self {
        ConnectionPool {
            slots: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash + Clone> ConnectionPool<K> {
    fn slot(&self, key: &K) -> Slot {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.entry(key.clone()).or_default().clone()
    }

    /// The live connection for `key`, or a new one from `connect`. Concurrent
    /// callers for the same key wait for one connection instead of opening several.
    pub async fn get_or_connect<F>(
        &self,
        key: &K,
        connect: impl FnOnce() -> F,
    ) -> Result<Arc<Connection>, UpstreamError>
    where
        F: Future<Output = Result<Arc<Connection>, UpstreamError>>,
    {
        let slot = self.slot(key);
        let mut current = slot.lock().await;
        if let Some(c) = current.as_ref()
            && c.closed().is_none()
        {
            return Ok(c.clone());
        }
        // Made only when needed, and boxed: connecting is a large future that a
        // call on a live connection would otherwise carry.
        let conn = Box::pin(connect()).await?;
        *current = Some(conn.clone());
        Ok(conn)
    }

    /// Forget `conn` if it is still the one held for `key`.
    pub async fn remove(&self, key: &K, conn: &Arc<Connection>) {
        let slot = self.slot(key);
        let mut current = slot.lock().await;
        if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn)) {
            *current = None;
        }
    }

    /// Every live connection (for fan-out such as `logging/setLevel`).
    pub fn live(&self) -> Vec<Arc<Connection>> {
        let slots: Vec<Slot> = self
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        slots
            .iter()
            .filter_map(|s| s.try_lock().ok().and_then(|c| c.clone()))
            .filter(|c| c.closed().is_none())
            .collect()
    }

    /// Drop every connection (ending their transports).
    pub fn clear(&self) {
        self.slots.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Drop connections (and so stop their children) that `reapable` accepts and
    /// that have had no call for longer than `idle`. A slot being connected or
    /// used is skipped; the next call for a reaped key connects anew. Returns how
    /// many were dropped.
    pub fn reap_idle(&self, idle: std::time::Duration, reapable: impl Fn(&K) -> bool) -> usize {
        let mut reaped = 0;
        self.slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|k, s| {
                if !reapable(k) {
                    return true;
                }
                let Ok(mut current) = s.try_lock() else {
                    return true;
                };
                let stale = current
                    .as_ref()
                    .is_some_and(|c| c.idle_for().is_some_and(|d| d > idle));
                if stale {
                    *current = None;
                    reaped += 1;
                }
                !stale
            });
        reaped
    }

    /// Forget connections that have ended.
    pub fn prune(&self) {
        self.slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, s| match s.try_lock() {
                Ok(c) => c.as_ref().is_some_and(|c| c.closed().is_none()),
                Err(_) => true,
            });
    }
}
