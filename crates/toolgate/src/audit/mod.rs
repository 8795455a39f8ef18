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
use std::sync::atomic::{AtomicU64, Ordering};
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

/// The handle the gateway audits through.
pub struct Auditor {
    tx: Option<mpsc::Sender<Entry>>,
    overflow: Overflow,
    wait: Duration,
    pub stats: Arc<Stats>,
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
        }
    }

    /// Start the writer over `sinks`.
    pub fn start(config: &AuditConfig, sinks: Vec<Box<dyn sink::Sink>>) -> Auditor {
        let (tx, rx) = mpsc::channel(config.buffer.max(1));
        let stats = Arc::new(Stats::default());
        tokio::spawn(write_loop(rx, sinks, stats.clone()));
        Auditor {
            tx: Some(tx),
            overflow: config.overflow,
            wait: config.wait.0,
            stats,
        }
    }

    /// Reserve room for a request's event. With `fail_closed`, a buffer that
    /// stays full for `wait` refuses the request.
    pub async fn admit(&self) -> Result<Slot, ErrorObject> {
        let Some(tx) = &self.tx else {
            return Ok(Slot(None));
        };
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

async fn write_loop(
    mut rx: mpsc::Receiver<Entry>,
    mut sinks: Vec<Box<dyn sink::Sink>>,
    stats: Arc<Stats>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        if rx.recv_many(&mut batch, BATCH).await == 0 {
            break;
        }
        stats
            .queued
            .fetch_sub(batch.len() as u64, Ordering::Relaxed);
        let events: Vec<Event> = batch.iter().map(|e| e.event.clone()).collect();
        let mut ok = true;
        for s in sinks.iter_mut() {
            if let Err(e) = write_with_retry(s.as_mut(), &events).await {
                ok = false;
                stats.sink_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(sink = s.name(), error = %e, events = events.len(), "audit sink failed");
            }
        }
        let n = events.len() as u64;
        if ok {
            stats.written.fetch_add(n, Ordering::Relaxed);
        } else {
            stats.dropped.fetch_add(n, Ordering::Relaxed);
        }
        for entry in batch.drain(..) {
            if let Some(ack) = entry.ack {
                let _ = ack.send(ok);
            }
        }
    }
    for s in sinks.iter_mut() {
        let _ = s.flush().await;
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
