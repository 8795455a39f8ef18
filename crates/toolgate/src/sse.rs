//! Server-Sent Events framing (the WHATWG `text/event-stream` format), both ways.
//!
//! Parsing is incremental over a byte stream so a long-lived stream is never
//! buffered whole; a single event larger than the limit ends the stream with an error.

use bytes::{Buf, BytesMut};
use futures::{Stream, StreamExt};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Event {
    pub event: Option<String>,
    pub data: String,
    pub id: Option<String>,
    pub retry_ms: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum SseError {
    #[error("event stream read failed: {0}")]
    Read(String),
    #[error("an event exceeded {0} bytes")]
    TooLarge(usize),
}

/// Incremental parser: feed bytes, take complete events.
#[derive(Default)]
pub struct Parser {
    buf: BytesMut,
    current: Event,
    has_data: bool,
    limit: usize,
}

impl Parser {
    pub fn new(limit: usize) -> Self {
        Parser {
            limit,
            ..Default::default()
        }
    }

    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<Event>, SseError> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(pos) = self.buf.iter().position(|&b| b == b'\n' || b == b'\r') {
            // A CR may be followed by LF in the next chunk; wait for it.
            if self.buf[pos] == b'\r' && pos + 1 == self.buf.len() {
                break;
            }
            let line = self.buf.split_to(pos);
            let skip = if self.buf[0] == b'\r' && self.buf.get(1) == Some(&b'\n') {
                2
            } else {
                1
            };
            self.buf.advance(skip);
            let line = String::from_utf8_lossy(&line);
            if let Some(ev) = self.line(&line) {
                out.push(ev);
            }
        }
        if self.buf.len() + self.current.data.len() > self.limit {
            return Err(SseError::TooLarge(self.limit));
        }
        Ok(out)
    }

    fn line(&mut self, line: &str) -> Option<Event> {
        if line.is_empty() {
            let ev = std::mem::take(&mut self.current);
            let had = std::mem::take(&mut self.has_data);
            // An event with no data is only a carrier of id/retry: keep those.
            if !had {
                self.current.id = ev.id;
                return None;
            }
            return Some(ev);
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "data" => {
                if self.has_data {
                    self.current.data.push('\n');
                }
                self.current.data.push_str(value);
                self.has_data = true;
            }
            "event" => self.current.event = Some(value.to_owned()),
            "id" if !value.contains('\0') => self.current.id = Some(value.to_owned()),
            "retry" => self.current.retry_ms = value.parse().ok(),
            _ => {}
        }
        None
    }
}

/// Turn a byte stream (e.g. a reqwest body) into a stream of events.
pub fn events<S, B, E>(body: S, limit: usize) -> impl Stream<Item = Result<Event, SseError>>
where
    S: Stream<Item = Result<B, E>> + Unpin,
    B: AsRef<[u8]>,
    E: std::fmt::Display,
{
    futures::stream::unfold(
        (
            body,
            Parser::new(limit),
            std::collections::VecDeque::new(),
            false,
        ),
        |(mut body, mut parser, mut ready, mut done)| async move {
            loop {
                if let Some(ev) = ready.pop_front() {
                    return Some((Ok(ev), (body, parser, ready, done)));
                }
                if done {
                    return None;
                }
                match body.next().await {
                    Some(Ok(chunk)) => match parser.feed(chunk.as_ref()) {
                        Ok(evs) => ready.extend(evs),
                        Err(e) => {
                            done = true;
                            return Some((Err(e), (body, parser, ready, done)));
                        }
                    },
                    Some(Err(e)) => {
                        done = true;
                        let err = SseError::Read(e.to_string());
                        return Some((Err(err), (body, parser, ready, done)));
                    }
                    None => done = true,
                }
            }
        },
    )
}

/// Write one event in wire form. `data` may contain newlines.
pub fn format_event(id: Option<&str>, event: Option<&str>, data: &str) -> String {
    let mut out = String::with_capacity(data.len() + 32);
    if let Some(ev) = event {
        out.push_str("event: ");
        out.push_str(ev);
        out.push('\n');
    }
    if let Some(id) = id {
        out.push_str("id: ");
        out.push_str(id);
        out.push('\n');
    }
    for line in data.split('\n') {
        out.push_str("data: ");
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_split_chunks_and_multiline_data() {
        let mut p = Parser::new(1 << 20);
        let mut all = p.feed(b"event: endpoint\r\ndata: /mess").unwrap();
        all.extend(p.feed(b"age?x=1\r").unwrap());
        all.extend(
            p.feed(b"\n\r\n: keep-alive\n\nid: 7\ndata: a\ndata: b\n\n")
                .unwrap(),
        );
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].event.as_deref(), Some("endpoint"));
        assert_eq!(all[0].data, "/message?x=1");
        assert_eq!(all[1].id.as_deref(), Some("7"));
        assert_eq!(all[1].data, "a\nb");
    }

    #[test]
    fn priming_event_without_data_is_not_delivered() {
        let mut p = Parser::new(1 << 20);
        let evs = p.feed(b"id: 1-0\ndata:\n\n").unwrap();
        // `data:` with an empty value is still data (an empty string).
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0].data, "");
        let evs = p.feed(b"id: 9\nretry: 100\n\n").unwrap();
        assert!(evs.is_empty());
    }

    #[test]
    fn round_trip() {
        let text = format_event(Some("3"), Some("message"), "{\"a\":\n1}");
        let evs = Parser::new(1 << 20).feed(text.as_bytes()).unwrap();
        assert_eq!(evs[0].data, "{\"a\":\n1}");
        assert_eq!(evs[0].id.as_deref(), Some("3"));
    }

    #[test]
    fn limit_is_enforced() {
        let mut p = Parser::new(8);
        assert!(p.feed(b"data: 0123456789").is_err());
    }
}
