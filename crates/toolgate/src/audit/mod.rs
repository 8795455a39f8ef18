//! The audit trail: an event for every request (allowed or denied), session,
//! upstream change, reload and operator action, with who asked.
//!
//! The data plane never writes to a sink itself. A request takes a slot in a
//! bounded buffer before it does anything (`admit`): with `overflow: fail_closed`
//! a full buffer refuses the call, so nothing happens that cannot be audited;
//! with `drop` the call goes on and the lost event is counted. One writer task
//! drains the buffer in batches into every sink and acknowledges each event once
//! all of them took it; with `fail_closed` the call's answer waits for that, so
//! an answered call has its event (the SQLite store keeps what it committed
//! through a crash of the process).
//!
//! `event.rs` is the event, `record.rs` the facts a request gathers on its way
//! through the pipeline, `redact.rs` what may be recorded of arguments and
//! results, `sink/` the destinations, `query.rs` reading events back, `cli.rs`
//! the `toolgate audit` commands.

pub mod cli;
mod event;
pub mod query;
mod record;
pub mod redact;
pub mod sink;

pub use event::{Event, EventKind, Outcome, Verdict};
pub use record::{Facts, Record, note, recording};

use crate::config::{AuditConfig, Overflow};
use crate::jsonrpc::ErrorObject;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// The JSON-RPC error of a call refused because it could not be audited.
pub const AUDIT_UNAVAILABLE: i64 = -32041;

/// Events taken from the buffer per write.
const BATCH: usize = 512;

struct Entry {
    event: Event,
    ack: Option<oneshot::Sender<bool>>,
}

/// Counters about the trail itself (exported as metrics).
#[derive(Debug, Default)]
pub struct Stats {
    /// Events written to every sink.
    pub written: AtomicU64,
    /// Events lost: buffer full with `overflow: drop`, or a sink failed.
    pub dropped: AtomicU64,
    /// Calls refused because the buffer stayed full (`fail_closed`).
    pub refused: AtomicU64,
    /// Write failures of any sink.
    pub sink_errors: AtomicU64,
    /// Events waiting for the writer.
    pub queued: AtomicU64,
}

/// The handle the gateway audits through (clones share the writer).
#[derive(Clone)]
pub struct Auditor {
    tx: Option<mpsc::Sender<Entry>>,
    overflow: Overflow,
    wait: Duration,
    pub stats: Arc<Stats>,
    /// False while the last write to a sink failed (until a retry succeeds).
    healthy: Arc<AtomicBool>,
}

/// A request's place in the buffer, taken before the request does anything.
pub struct Slot(Option<mpsc::OwnedPermit<Entry>>);

impl Auditor {
    /// No trail at all (tools that do not audit, like `catalog`).
    pub fn disabled() -> Auditor {
        Auditor {
            tx: None,
            overflow: Overflow::Drop,
            wait: Duration::ZERO,
            stats: Arc::default(),
            healthy: Arc::new(AtomicBool::new(true)),
        }
    }

    /// Start the writer over `sinks`.
    pub fn start(config: &AuditConfig, sinks: Vec<Box<dyn sink::Sink>>) -> Auditor {
        let (tx, rx) = mpsc::channel(config.buffer.max(1));
        let stats = Arc::new(Stats::default());
        let healthy = Arc::new(AtomicBool::new(true));
        let writer = Writer {
            sinks,
            stats: stats.clone(),
            healthy: healthy.clone(),
            backlog: Vec::new(),
            backlog_limit: config.buffer.max(BATCH),
        };
        tokio::spawn(writer.run(rx));
        Auditor {
            tx: Some(tx),
            overflow: config.overflow,
            wait: config.wait.0,
            stats,
            healthy,
        }
    }

    /// Whether the sinks are taking events (false after a failed write, until
    /// a retry succeeds).
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Reserve room for a request's event. With `fail_closed`, a buffer that
    /// stays full for `wait` refuses the request.
    pub async fn admit(&self) -> Result<Slot, ErrorObject> {
        let Some(tx) = &self.tx else {
            return Ok(Slot(None));
        };
        // A sink that is failing would lose this call's event: with
        // `fail_closed` the call must not happen at all.
        if !self.is_healthy() {
            return match self.overflow {
                Overflow::Drop => Ok(Slot(None)),
                Overflow::FailClosed => {
                    self.stats.refused.fetch_add(1, Ordering::Relaxed);
                    Err(unavailable())
                }
            };
        }
        let permit = match tx.clone().try_reserve_owned() {
            Ok(p) => Some(p),
            Err(mpsc::error::TrySendError::Closed(_)) => None,
            Err(mpsc::error::TrySendError::Full(tx)) => {
                match tokio::time::timeout(self.wait, tx.reserve_owned()).await {
                    Ok(Ok(p)) => Some(p),
                    _ => None,
                }
            }
        };
        match (permit, self.overflow) {
            (Some(p), _) => Ok(Slot(Some(p))),
            (None, Overflow::Drop) => Ok(Slot(None)),
            (None, Overflow::FailClosed) => {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                tracing::error!("audit buffer full: call refused");
                Err(unavailable())
            }
        }
    }

    /// Write a request's event in its slot. With `fail_closed` this returns once
    /// the event is in every sink, and `Err` if it could not be written (the
    /// caller must then not report success).
    pub async fn commit(&self, slot: Slot, event: Event) -> Result<(), ErrorObject> {
        let Some(permit) = slot.0 else {
            if self.tx.is_some() {
                self.lost(&event);
            }
            return Ok(());
        };
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        if self.overflow == Overflow::Drop {
            permit.send(Entry { event, ack: None });
            return Ok(());
        }
        let (ack, done) = oneshot::channel();
        permit.send(Entry {
            event,
            ack: Some(ack),
        });
        match done.await {
            Ok(true) => Ok(()),
            _ => Err(unavailable()),
        }
    }

    /// Record an event that answers no caller (sessions, upstreams, reloads,
    /// refusals): never waits; a full buffer loses it (counted).
    pub fn emit(&self, event: Event) {
        let Some(tx) = &self.tx else { return };
        match tx.try_send(Entry { event, ack: None }) {
            Ok(()) => {
                self.stats.queued.fetch_add(1, Ordering::Relaxed);
            }
            Err(mpsc::error::TrySendError::Full(e) | mpsc::error::TrySendError::Closed(e)) => {
                self.lost(&e.event);
            }
        }
    }

    fn lost(&self, event: &Event) {
        self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(id = %event.id, kind = event.kind.as_str(), "audit event dropped: buffer full");
    }
}

fn unavailable() -> ErrorObject {
    ErrorObject::new(
        AUDIT_UNAVAILABLE,
        "the call cannot be audited right now; try again later",
    )
    .with_data(serde_json::json!({ "code": "audit_unavailable" }))
}

/// The one task that writes to the sinks.
struct Writer {
    sinks: Vec<Box<dyn sink::Sink>>,
    stats: Arc<Stats>,
    healthy: Arc<AtomicBool>,
    /// Events a failed write could not place, retried every second (bounded:
    /// beyond `backlog_limit` the oldest are dropped and counted).
    backlog: Vec<Event>,
    backlog_limit: usize,
}

const RETRY_EVERY: Duration = Duration::from_secs(1);

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<Entry>) {
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            let received = if self.backlog.is_empty() {
                rx.recv_many(&mut batch, BATCH).await
            } else {
                match tokio::time::timeout(RETRY_EVERY, rx.recv_many(&mut batch, BATCH)).await {
                    Ok(n) => n,
                    Err(_) => {
                        self.retry_backlog().await;
                        continue;
                    }
                }
            };
            if received == 0 {
                break;
            }
            self.stats
                .queued
                .fetch_sub(batch.len() as u64, Ordering::Relaxed);
            if !self.backlog.is_empty() {
                self.retry_backlog().await;
            }
            let (events, acks): (Vec<Event>, Vec<_>) =
                batch.drain(..).map(|e| (e.event, e.ack)).unzip();
            let ok = self.backlog.is_empty() && self.write(&events).await;
            if ok {
                self.stats
                    .written
                    .fetch_add(events.len() as u64, Ordering::Relaxed);
            } else {
                self.keep(events);
            }
            for ack in acks.into_iter().flatten() {
                let _ = ack.send(ok);
            }
        }
        if !self.backlog.is_empty() {
            self.retry_backlog().await;
        }
        for s in self.sinks.iter_mut() {
            let _ = s.flush().await;
        }
    }

    /// Write to every sink; false (and unhealthy) if any failed.
    async fn write(&mut self, events: &[Event]) -> bool {
        let mut ok = true;
        for s in self.sinks.iter_mut() {
            if let Err(e) = write_with_retry(s.as_mut(), events).await {
                ok = false;
                self.stats.sink_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(sink = s.name(), error = %e, events = events.len(), "audit sink failed");
            }
        }
        if self.healthy.swap(ok, Ordering::Relaxed) != ok {
            if ok {
                tracing::info!("audit sinks are writable again");
            } else {
                tracing::error!(
                    "audit sinks failing: calls are refused (overflow: fail_closed) or their events dropped (overflow: drop) until a write succeeds"
                );
            }
        }
        ok
    }

    async fn retry_backlog(&mut self) {
        let events = std::mem::take(&mut self.backlog);
        if self.write(&events).await {
            self.stats
                .written
                .fetch_add(events.len() as u64, Ordering::Relaxed);
        } else {
            self.backlog = events;
        }
    }

    fn keep(&mut self, events: Vec<Event>) {
        self.backlog.extend(events);
        let excess = self.backlog.len().saturating_sub(self.backlog_limit);
        if excess > 0 {
            self.backlog.drain(..excess);
            self.stats
                .dropped
                .fetch_add(excess as u64, Ordering::Relaxed);
        }
    }
}

async fn write_with_retry(s: &mut dyn sink::Sink, events: &[Event]) -> anyhow::Result<()> {
    match s.write(events).await {
        Ok(()) => Ok(()),
        Err(first) => {
            tracing::warn!(sink = s.name(), error = %first, "audit sink write failed; retrying once");
            tokio::time::sleep(Duration::from_millis(100)).await;
            s.write(events).await
        }
    }
}
