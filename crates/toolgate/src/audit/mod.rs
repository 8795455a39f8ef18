//! The audit trail: an event for every request (allowed or denied), session,
//! upstream change, reload and operator action, with who asked.
//!
//! The data plane never writes to a sink itself. A request takes a slot in a
//! bounded buffer before it does anything (`admit`): with `overflow: fail_closed`
//! a full buffer refuses the call, so nothing happens that cannot be audited;
//! with `drop` the call goes on and the lost event is counted. One writer task
//! drains the buffer in batches into every sink.
//!
//! With a journal (`journal.rs`, the default beside a SQLite store) a call's
//! event is appended to it by the call itself, and the answer waits for that
//! one write only; the writer fills the sinks every `commit_every` in large
//! batches (most of the store's cost is per commit, not per event), then lets
//! the journal forget what they took. Without one, the writer acknowledges each
//! event once every sink took it, and with `fail_closed` the answer waits for
//! that. Either way an answered call has its event through a crash of the
//! process.
//!
//! `event.rs` is the event, `record.rs` the facts a request gathers on its way
//! through the pipeline, `redact.rs` what may be recorded of arguments and
//! results, `sink/` the destinations, `query.rs` reading events back, `cli.rs`
//! the `toolgate audit` commands.

pub mod cli;
mod event;
pub mod journal;
pub mod query;
mod record;
pub mod redact;
pub mod sink;

pub use event::{Columns, Event, EventKind, Line, Outcome, Verdict, address};
pub use record::{Facts, Record, note, recording};

use crate::config::{AuditConfig, Overflow};
use crate::jsonrpc::ErrorObject;
use journal::Journal;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// The JSON-RPC error of a call refused because it could not be audited.
pub const AUDIT_UNAVAILABLE: i64 = -32041;

/// Events taken from the buffer at a time.
const BATCH: usize = 512;
/// With a journal: the sinks are written at once when this many wait (which
/// also bounds the memory events take while they wait).
const FLUSH_AT: usize = 512;
/// With a journal: how often the writer empties the buffer while it waits to
/// write (so the buffer never fills between writes).
const DRAIN_EVERY: Duration = Duration::from_millis(50);

struct Entry {
    line: Line,
    ack: Option<oneshot::Sender<bool>>,
    /// The event's number in the journal (0 without one).
    seq: u64,
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
    /// Events not yet in the sinks (in the buffer, or held for the next batch).
    pub queued: AtomicU64,
}

/// The handle the gateway audits through (clones share the writer).
#[derive(Clone)]
pub struct Auditor {
    tx: Option<mpsc::Sender<Entry>>,
    journal: Option<Arc<Mutex<Journal>>>,
    /// Asks the writer to write what waits now, and answers once it did.
    syncs: Option<mpsc::UnboundedSender<oneshot::Sender<()>>>,
    overflow: Overflow,
    wait: Duration,
    pub stats: Arc<Stats>,
    /// False while the last write to a sink failed (until a retry succeeds).
    healthy: Arc<AtomicBool>,
    /// False while the journal cannot be written.
    journal_ok: Arc<AtomicBool>,
}

/// A request's place in the buffer, taken before the request does anything.
pub struct Slot(Option<mpsc::OwnedPermit<Entry>>);

impl Auditor {
    /// No trail at all (tools that do not audit, like `catalog`).
    pub fn disabled() -> Auditor {
        Auditor {
            tx: None,
            journal: None,
            syncs: None,
            overflow: Overflow::Drop,
            wait: Duration::ZERO,
            stats: Arc::default(),
            healthy: Arc::new(AtomicBool::new(true)),
            journal_ok: Arc::new(AtomicBool::new(true)),
        }
    }

    /// Start the writer over `sinks`, with a journal in `journal` if given
    /// (what an ended gateway left there goes to the sinks first).
    pub fn start(
        config: &AuditConfig,
        sinks: Vec<Box<dyn sink::Sink>>,
        journal: Option<&Path>,
    ) -> anyhow::Result<Auditor> {
        let (tx, rx) = mpsc::channel(config.buffer.max(1));
        let (syncs, sync_rx) = mpsc::unbounded_channel();
        let stats = Arc::new(Stats::default());
        let healthy = Arc::new(AtomicBool::new(true));
        let (journal, leftover, every) = match journal {
            Some(dir) => {
                let (j, left) = Journal::open(dir)?;
                if !left.events.is_empty() || left.unreadable > 0 {
                    tracing::info!(
                        events = left.events.len(),
                        files = left.files,
                        unreadable_lines = left.unreadable,
                        journal = %dir.display(),
                        "audit events an earlier run left in the journal go to the sinks"
                    );
                }
                let through = j.appended();
                (
                    Some(Arc::new(Mutex::new(j))),
                    (left.events, through),
                    config.commit_every.0,
                )
            }
            None => (None, (Vec::new(), 0), Duration::ZERO),
        };
        let writer = Writer {
            sinks,
            stats: stats.clone(),
            healthy: healthy.clone(),
            backlog: Vec::new(),
            backlog_through: 0,
            backlog_limit: config.buffer.max(BATCH),
            journal: journal.clone(),
            every,
        };
        tokio::spawn(writer.run(rx, sync_rx, leftover));
        Ok(Auditor {
            tx: Some(tx),
            journal,
            syncs: Some(syncs),
            overflow: config.overflow,
            wait: config.wait.0,
            stats,
            healthy,
            journal_ok: Arc::new(AtomicBool::new(true)),
        })
    }

    /// Whether the trail is taking events (false after a failed write to a
    /// sink or the journal, until a retry succeeds).
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed) && self.journal_ok.load(Ordering::Relaxed)
    }

    /// Write to the sinks what waits for them now (before the trail is read
    /// back, and at shutdown); returns once they took it or failed.
    pub async fn sync(&self) {
        let Some(syncs) = &self.syncs else { return };
        let (tx, rx) = oneshot::channel();
        if syncs.send(tx).is_ok() {
            let _ = rx.await;
        }
    }

    /// Append `event` to the journal and hand it to the writer in the same
    /// order (so that the writer never releases an event it has not seen).
    /// `false` if the journal could not be written (the writer gets the event
    /// all the same).
    fn journaled(&self, journal: &Mutex<Journal>, event: Event, send: impl FnOnce(Entry)) -> bool {
        let mut text = Vec::with_capacity(1024);
        Line::write(&event, &mut text);
        drop(event);
        text.push(b'\n');
        let mut j = journal.lock().unwrap_or_else(|p| p.into_inner());
        let written = j.append_lines(&text, 1);
        let (ok, seq) = match written {
            Ok(seq) => (true, seq),
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "audit journal write failed");
                (false, j.appended())
            }
        };
        text.pop();
        send(Entry {
            line: Line::from_json(text),
            ack: None,
            seq,
        });
        drop(j);
        if self.journal_ok.swap(ok, Ordering::Relaxed) != ok {
            if ok {
                tracing::info!("the audit journal is writable again");
            } else {
                self.stats.sink_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        ok
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
    /// the event is in the journal (without one: in every sink), and `Err` if it
    /// could not be written (the caller must then not report success).
    pub async fn commit(&self, slot: Slot, event: Event) -> Result<(), ErrorObject> {
        let Some(permit) = slot.0 else {
            if self.tx.is_some() {
                self.lost(&event);
            }
            return Ok(());
        };
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        if let Some(journal) = &self.journal {
            return match self.journaled(journal, event, |e| {
                permit.send(e);
            }) {
                true => Ok(()),
                false if self.overflow == Overflow::Drop => Ok(()),
                false => Err(unavailable()),
            };
        }
        let line = Line::of(&event);
        drop(event);
        if self.overflow == Overflow::Drop {
            permit.send(Entry {
                line,
                ack: None,
                seq: 0,
            });
            return Ok(());
        }
        let (ack, done) = oneshot::channel();
        permit.send(Entry {
            line,
            ack: Some(ack),
            seq: 0,
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
        let permit = match tx.try_reserve() {
            Ok(p) => p,
            Err(_) => return self.lost(&event),
        };
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        match &self.journal {
            Some(journal) => {
                self.journaled(journal, event, |e| permit.send(e));
            }
            None => permit.send(Entry {
                line: Line::of(&event),
                ack: None,
                seq: 0,
            }),
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
    backlog: Vec<Line>,
    /// The journal number of the backlog's last event.
    backlog_through: u64,
    backlog_limit: usize,
    journal: Option<Arc<Mutex<Journal>>>,
    /// How long events wait to be written together (zero without a journal).
    every: Duration,
}

const RETRY_EVERY: Duration = Duration::from_secs(1);

/// What waits for the sinks.
#[derive(Default)]
struct Pending {
    events: Vec<Line>,
    acks: Vec<oneshot::Sender<bool>>,
    /// The journal number of the last event.
    through: u64,
    /// When they are written at the latest.
    due: Option<Instant>,
}

impl Pending {
    fn take(&mut self, entries: &mut Vec<Entry>, every: Duration) {
        for e in entries.drain(..) {
            self.events.push(e.line);
            self.acks.extend(e.ack);
            self.through = self.through.max(e.seq);
        }
        if !self.events.is_empty() {
            self.due.get_or_insert_with(|| Instant::now() + every);
        }
    }
}

impl Writer {
    async fn run(
        mut self,
        mut rx: mpsc::Receiver<Entry>,
        mut syncs: mpsc::UnboundedReceiver<oneshot::Sender<()>>,
        (leftover, through): (Vec<Line>, u64),
    ) {
        let mut incoming = Vec::with_capacity(BATCH);
        self.stats
            .queued
            .fetch_add(leftover.len() as u64, Ordering::Relaxed);
        let mut pending = Pending {
            due: (!leftover.is_empty()).then(Instant::now),
            events: leftover,
            acks: Vec::new(),
            through,
        };
        let mut waiting: Vec<oneshot::Sender<()>> = Vec::new();
        let mut open = true;
        while open || !pending.events.is_empty() {
            let wake = pending.due.map(|due| due.min(Instant::now() + DRAIN_EVERY));
            tokio::select! {
                biased;
                Some(reply) = syncs.recv() => waiting.push(reply),
                n = rx.recv_many(&mut incoming, BATCH), if open && wake.is_none() => {
                    if n == 0 {
                        open = false;
                    }
                }
                // Empty the buffer every `DRAIN_EVERY` meanwhile, so that it never fills.
                _ = tokio::time::sleep_until(wake.unwrap_or_else(Instant::now)), if wake.is_some() => {}
                _ = tokio::time::sleep(RETRY_EVERY), if !self.backlog.is_empty() && wake.is_none() => {
                    self.retry_backlog().await;
                }
            }
            // Whatever is in the buffer now, without waiting (a sync must see
            // every event appended before it was asked for).
            while open && incoming.len() < FLUSH_AT {
                match rx.try_recv() {
                    Ok(e) => incoming.push(e),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => open = false,
                }
            }
            pending.take(&mut incoming, self.every);
            let now = pending.due.is_some_and(|due| due <= Instant::now())
                || pending.events.len() >= FLUSH_AT
                || !waiting.is_empty()
                || !open;
            if now && !pending.events.is_empty() {
                self.flush(std::mem::take(&mut pending)).await;
            }
            if pending.events.is_empty() {
                for reply in waiting.drain(..) {
                    let _ = reply.send(());
                }
            }
        }
        if !self.backlog.is_empty() {
            self.retry_backlog().await;
        }
        for s in self.sinks.iter_mut() {
            let _ = s.flush().await;
        }
    }

    /// Write what waits to every sink, acknowledge it, and let the journal
    /// forget what is now in all of them.
    async fn flush(&mut self, pending: Pending) {
        if !self.backlog.is_empty() {
            self.retry_backlog().await;
        }
        let Pending {
            events,
            acks,
            through,
            ..
        } = pending;
        self.stats
            .queued
            .fetch_sub(events.len() as u64, Ordering::Relaxed);
        let ok = self.backlog.is_empty() && self.write(&events).await;
        if ok {
            self.stats
                .written
                .fetch_add(events.len() as u64, Ordering::Relaxed);
            self.release(through);
        } else {
            self.keep(events, through);
        }
        for ack in acks {
            let _ = ack.send(ok);
        }
    }

    fn release(&self, through: u64) {
        if let Some(j) = &self.journal {
            j.lock().unwrap_or_else(|p| p.into_inner()).release(through);
        }
    }

    /// Write to every sink; false (and unhealthy) if any failed.
    async fn write(&mut self, events: &[Line]) -> bool {
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
            self.release(self.backlog_through);
        } else {
            self.backlog = events;
        }
    }

    fn keep(&mut self, events: Vec<Line>, through: u64) {
        self.backlog.extend(events);
        self.backlog_through = self.backlog_through.max(through);
        let excess = self.backlog.len().saturating_sub(self.backlog_limit);
        if excess > 0 {
            self.backlog.drain(..excess);
            self.stats
                .dropped
                .fetch_add(excess as u64, Ordering::Relaxed);
        }
    }
}

async fn write_with_retry(s: &mut dyn sink::Sink, events: &[Line]) -> anyhow::Result<()> {
    match s.write(events).await {
        Ok(()) => Ok(()),
        Err(first) => {
            tracing::warn!(sink = s.name(), error = %first, "audit sink write failed; retrying once");
            tokio::time::sleep(Duration::from_millis(100)).await;
            s.write(events).await
        }
    }
}
