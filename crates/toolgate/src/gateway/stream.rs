//! Outgoing message streams to a downstream client, with replay for resumption.
//!
//! Every message the gateway sends a client goes into an `EventStream`: the stream
//! of one request (its progress, server→client requests, and final response) or
//! the session's standalone stream (GET, legacy SSE, stdio). Writers never wait for
//! a reader; readers follow at their own pace from any position still buffered, so
//! a client that reconnects with `Last-Event-ID` gets what it missed. The buffer is
//! bounded, in events and in bytes: the oldest events are dropped first.

use crate::jsonrpc::Message;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// Events kept for replay per stream.
const REPLAY: usize = 1024;
/// Bytes of events kept for replay per stream: a reader this far behind (a
/// client that stopped reading) loses the oldest events rather than the gateway
/// its memory. The newest event is always kept, whatever its size.
const REPLAY_BYTES: usize = 16 * 1024 * 1024;

pub struct EventStream {
    pub id: u64,
    inner: Mutex<Inner>,
    /// Bumped on every push and on close; readers wait on it.
    changed: watch::Sender<u64>,
}

struct Inner {
    events: VecDeque<(u64, Arc<str>)>,
    /// The length of every event in `events`, together.
    bytes: usize,
    next_seq: u64,
    closed: bool,
    /// Highest sequence number handed to any reader; a new reader without a
    /// resume position starts after it, so nothing is delivered twice.
    delivered: Option<u64>,
}

/// What a reader gets next.
pub enum Next {
    Event(u64, Arc<str>),
    /// The stream is closed and everything was read.
    End,
}

impl EventStream {
    pub fn new(id: u64) -> Arc<Self> {
        Arc::new(EventStream {
            id,
            inner: Mutex::new(Inner {
                events: VecDeque::new(),
                bytes: 0,
                next_seq: 0,
                closed: false,
                delivered: None,
            }),
            changed: watch::Sender::new(0),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Append a message. Returns false if the stream is already closed.
    pub fn push(&self, msg: &Message) -> bool {
        self.push_text(msg.to_json().into(), false)
    }

    /// Append the final message and close the stream in one step, so a reader can
    /// tell "the response is the only event" apart from "more may follow".
    pub fn finish(&self, msg: &Message) -> bool {
        self.push_text(msg.to_json().into(), true)
    }

    /// Append a message that is already serialised (relaying another stream).
    pub fn push_serialized(&self, text: Arc<str>) -> bool {
        self.push_text(text, false)
    }

    fn push_text(&self, text: Arc<str>, close: bool) -> bool {
        let seq = {
            let mut st = self.lock();
            if st.closed {
                return false;
            }
            let seq = st.next_seq;
            st.next_seq += 1;
            st.bytes += text.len();
            st.events.push_back((seq, text));
            while st.events.len() > REPLAY || (st.bytes > REPLAY_BYTES && st.events.len() > 1) {
                if let Some((_, old)) = st.events.pop_front() {
                    st.bytes -= old.len();
                }
            }
            st.closed = close;
            seq
        };
        self.changed.send_replace(seq + 1);
        true
    }

    pub fn close(&self) {
        self.lock().closed = true;
        self.changed.send_modify(|v| *v += 1);
    }

    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Bytes of the events kept for replay.
    pub fn buffered_bytes(&self) -> usize {
        self.lock().bytes
    }

    /// Where a new reader without a resume position starts.
    pub fn fresh_position(&self) -> u64 {
        let st = self.lock();
        st.delivered.map_or(0, |d| d + 1)
    }

    /// The next event at or after `from`, waiting for one if needed.
    pub async fn next(&self, from: u64) -> Next {
        let mut rx = self.changed.subscribe();
        loop {
            {
                let mut st = self.lock();
                if let Some((seq, text)) = st.events.iter().find(|(s, _)| *s >= from).cloned() {
                    st.delivered = Some(st.delivered.map_or(seq, |d| d.max(seq)));
                    return Next::Event(seq, text);
                }
                if st.closed {
                    return Next::End;
                }
            }
            if rx.changed().await.is_err() {
                return Next::End;
            }
        }
    }

    /// The next event no reader has taken yet, waiting for one if needed. Readers
    /// of the session stream share it this way, so one message never goes out on
    /// two connections.
    pub async fn claim_next(&self) -> Next {
        let mut rx = self.changed.subscribe();
        loop {
            {
                let mut st = self.lock();
                let from = st.delivered.map_or(0, |d| d + 1);
                if let Some((seq, text)) = st.events.iter().find(|(s, _)| *s >= from).cloned() {
                    st.delivered = Some(seq);
                    return Next::Event(seq, text);
                }
                if st.closed {
                    return Next::End;
                }
            }
            if rx.changed().await.is_err() {
                return Next::End;
            }
        }
    }

    /// True if the stream is closed and its only event is at `seq`: the reader can
    /// answer with a plain JSON body instead of an event stream.
    pub fn is_single_final(&self, seq: u64) -> bool {
        let st = self.lock();
        st.closed && st.next_seq == seq + 1 && seq == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jsonrpc::{Id, Message};
    use serde_json::json;

    fn msg(n: i64) -> Message {
        Message::response_value(Id::Num(n), &json!({}))
    }

    #[tokio::test]
    async fn reader_sees_events_then_end_and_can_resume() {
        let s = EventStream::new(1);
        s.push(&msg(1));
        let reader = {
            let s = s.clone();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut pos = 0;
                while let Next::Event(seq, _) = s.next(pos).await {
                    seen.push(seq);
                    pos = seq + 1;
                }
                seen
            })
        };
        s.push(&msg(2));
        s.finish(&msg(3));
        assert_eq!(reader.await.unwrap(), vec![0, 1, 2]);
        // A resuming reader gets only what follows its last seen id.
        assert!(matches!(s.next(2).await, Next::Event(2, _)));
        assert!(matches!(s.next(3).await, Next::End));
        assert!(!s.push(&msg(4)), "closed streams refuse writes");
    }

    #[tokio::test]
    async fn replay_is_bounded_in_bytes_and_keeps_the_newest_event() {
        let s = EventStream::new(1);
        let big = Arc::<str>::from("x".repeat(REPLAY_BYTES / 4 + 1));
        for _ in 0..8 {
            s.push_serialized(big.clone());
        }
        assert!(s.buffered_bytes() <= REPLAY_BYTES, "{}", s.buffered_bytes());
        // A reader that fell behind skips what was dropped and gets the newest events.
        let Next::Event(first, _) = s.next(0).await else {
            panic!("no event kept")
        };
        assert_eq!(first, 5, "only the newest three fit");
        // One event larger than the budget is still kept, alone.
        let huge = Arc::<str>::from("x".repeat(REPLAY_BYTES + 1));
        s.push_serialized(huge.clone());
        assert_eq!(s.buffered_bytes(), huge.len());
        assert!(matches!(s.next(0).await, Next::Event(8, _)));
    }

    #[tokio::test]
    async fn single_final_is_detected() {
        let s = EventStream::new(1);
        s.finish(&msg(1));
        assert!(s.is_single_final(0));
        let s = EventStream::new(2);
        s.push(&msg(1));
        s.finish(&msg(2));
        assert!(!s.is_single_final(0));
    }
}

/// What a response stream open to a client is for (the label of
/// `toolgate_streams_active`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// A request answered as an SSE stream (progress, server requests, the answer).
    Request,
    /// A session's GET stream, or a resumed request stream.
    Listen,
    /// A 2024-11-05 HTTP+SSE connection (`/sse`).
    Legacy,
}

impl StreamKind {
    pub const ALL: [StreamKind; 3] = [StreamKind::Request, StreamKind::Listen, StreamKind::Legacy];

    pub fn as_str(self) -> &'static str {
        match self {
            StreamKind::Request => "request",
            StreamKind::Listen => "listen",
            StreamKind::Legacy => "legacy",
        }
    }
}

/// Counts of the response streams open to clients, by kind.
#[derive(Debug, Default)]
pub struct OpenStreams([Arc<std::sync::atomic::AtomicUsize>; 3]);

impl OpenStreams {
    /// Count one more open stream of `kind` until the returned guard drops.
    pub fn open(&self, kind: StreamKind) -> OpenStream {
        let counter = self.0[kind as usize].clone();
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        OpenStream(counter)
    }

    pub fn count(&self, kind: StreamKind) -> usize {
        self.0[kind as usize].load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// One open response stream; dropping it (the client went away, the stream
/// ended) stops counting it.
#[derive(Debug)]
pub struct OpenStream(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

#[cfg(test)]
mod open_stream_tests {
    use super::*;

    #[test]
    fn counts_streams_while_they_are_open() {
        let open = OpenStreams::default();
        let a = open.open(StreamKind::Listen);
        let b = open.open(StreamKind::Listen);
        let c = open.open(StreamKind::Request);
        assert_eq!(open.count(StreamKind::Listen), 2);
        assert_eq!(open.count(StreamKind::Request), 1);
        assert_eq!(open.count(StreamKind::Legacy), 0);
        drop((a, c));
        assert_eq!(open.count(StreamKind::Listen), 1);
        assert_eq!(open.count(StreamKind::Request), 0);
        drop(b);
        assert_eq!(open.count(StreamKind::Listen), 0);
    }
}
