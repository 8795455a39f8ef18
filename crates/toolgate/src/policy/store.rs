//! Hot reload: the current policy set behind an atomic pointer, replaced only by
//! a set that loaded and validated.
//!
//! Readers call [`PolicyStore::current`] (a lock-free load) and keep the `Arc`
//! for the whole request, so one request never mixes two generations. A reload
//! builds the new set beside the old one; a bad file is reported and the old
//! set keeps deciding.

use super::{Policies, PolicyError};
use arc_swap::ArcSwap;
use notify::RecursiveMode;
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The current policies and where they come from.
pub struct PolicyStore {
    path: PathBuf,
    current: ArcSwap<Policies>,
    /// Serialises reloads (the control plane only; readers never take it).
    reloading: Mutex<()>,
}

/// What a reload did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reloaded {
    /// The files changed and the new set is in force.
    Swapped { generation: u64 },
    /// The files read the same as the set in force: nothing was swapped.
    Unchanged { generation: u64 },
}

impl PolicyStore {
    /// Load `path` (a `.cedar` file or a directory) for the first time.
    pub fn open(path: &Path) -> Result<PolicyStore, PolicyError> {
        let policies = Policies::load(path)?;
        Ok(PolicyStore {
            path: path.to_owned(),
            current: ArcSwap::from_pointee(policies),
            reloading: Mutex::new(()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The set in force. Keep the `Arc` for the whole request.
    pub fn current(&self) -> Arc<Policies> {
        self.current.load_full()
    }

    /// Read the files again and swap the new set in if it loads and validates.
    /// On error the set in force stays, and the error says why (for the log).
    pub fn reload(&self) -> Result<Reloaded, PolicyError> {
        let _guard = self
            .reloading
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let old = self.current.load();
        let mut new = Policies::load(&self.path)?;
        if new.digest == old.digest {
            return Ok(Reloaded::Unchanged {
                generation: old.generation,
            });
        }
        new.generation = old.generation + 1;
        let generation = new.generation;
        self.current.store(Arc::new(new));
        Ok(Reloaded::Swapped { generation })
    }

    /// Reload whenever the policy directory (or the directory of the policy
    /// file) changes, after a quiet period of `debounce`. The directory is
    /// watched, not the files: editors replace files, and Kubernetes swaps a
    /// ConfigMap's `..data` symlink. `report` hears every reload's outcome.
    /// Watching stops when the returned [`Watcher`] is dropped.
    pub fn watch(
        self: &Arc<Self>,
        debounce: Duration,
        report: impl Fn(Result<Reloaded, PolicyError>) + Send + 'static,
    ) -> Result<Watcher, notify::Error> {
        let dir = if self.path.is_dir() {
            self.path.clone()
        } else {
            match self.path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
                _ => PathBuf::from("."),
            }
        };
        let store = Arc::clone(self);
        let mut debouncer = new_debouncer(debounce, None, move |events: DebounceEventResult| {
            if let Ok(events) = events
                && events.iter().all(|e| e.kind.is_access())
            {
                return;
            }
            report(store.reload());
        })?;
        debouncer.watch(&dir, RecursiveMode::NonRecursive)?;
        Ok(Watcher {
            _debouncer: debouncer,
        })
    }

    /// [`PolicyStore::watch`] with outcomes written to the log and the audit
    /// trail.
    pub fn watch_and_log(
        self: &Arc<Self>,
        audit: crate::audit::Auditor,
    ) -> Result<Watcher, notify::Error> {
        use crate::audit::{Event, EventKind, Outcome};
        let path = self.path.clone();
        self.watch(Duration::from_millis(250), move |r| {
            let mut e = Event::new(EventKind::Reload);
            e.target = Some(path.display().to_string());
            e.method = Some("policy".into());
            match r {
                Ok(Reloaded::Swapped { generation }) => {
                    tracing::info!(path = %path.display(), generation, "policies reloaded");
                    e.outcome = Some(Outcome::Ok);
                    e.detail = Some(serde_json::json!({ "generation": generation }));
                }
                Ok(Reloaded::Unchanged { .. }) => return,
                Err(err) => {
                    tracing::error!(
                        path = %path.display(),
                        "policies not reloaded, the previous ones stay in force: {err}"
                    );
                    e.outcome = Some(Outcome::Error);
                    e.reason = Some(err.to_string());
                }
            }
            audit.emit(e);
        })
    }
}

/// Keeps a policy directory watched; dropping it stops the watching.
pub struct Watcher {
    _debouncer: Debouncer<notify::RecommendedWatcher, RecommendedCache>,
}
