//! One audit event: who did what, through what, with which decision and result.
//!
//! The same shape goes to every sink (the store's columns, JSON Lines, stdout,
//! OTLP log attributes) and comes back from queries.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// What an event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A client request (call, read, list, …), allowed or denied.
    Request,
    /// A request refused before it had a principal (bad or missing credential,
    /// foreign origin, another principal's session id).
    Auth,
    /// A legacy session opened or ended.
    Session,
    /// An upstream server started, went down, came back.
    Upstream,
    /// Policies or config reloaded (or a reload rejected).
    Reload,
    /// An operator action (API key created or revoked, …).
    Admin,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Request => "request",
            EventKind::Auth => "auth",
            EventKind::Session => "session",
            EventKind::Upstream => "upstream",
            EventKind::Reload => "reload",
            EventKind::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<EventKind> {
        [
            EventKind::Request,
            EventKind::Auth,
            EventKind::Session,
            EventKind::Upstream,
            EventKind::Reload,
            EventKind::Admin,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// The authorization decision of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Allow,
    Deny,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
        }
    }
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A result.
    Ok,
    /// A result with `isError: true` (the tool failed, the call did not).
    ToolError,
    /// A JSON-RPC error (including denials).
    Error,
    /// The client cancelled it or went away.
    Cancelled,
    /// Refused before it reached the gateway core (authentication, origin).
    Refused,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::ToolError => "tool_error",
            Outcome::Error => "error",
            Outcome::Cancelled => "cancelled",
            Outcome::Refused => "refused",
        }
    }
}

/// A principal as an event records it: its JSON text, made once per principal
/// and shared by all of its events.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PrincipalJson(pub Arc<RawValue>);

impl PrincipalJson {
    pub fn get(&self) -> &str {
        self.0.get()
    }
}

impl PartialEq for PrincipalJson {
    fn eq(&self, other: &PrincipalJson) -> bool {
        self.get() == other.get()
    }
}

/// One audit event. Fields that do not apply are absent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Unique and ordered by time within one gateway (`{µs:016x}{n:08x}`).
    pub id: String,
    /// When it happened, in microseconds since the Unix epoch.
    pub time_us: i64,
    pub kind: EventKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// The whole principal as policies saw it (groups, scopes, attributes, how
    /// it authenticated), so decisions can be replayed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<PrincipalJson>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// The client's IP address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// `/mcp`, an endpoint's path, `/sse`, `stdio`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// `legacy` or `modern`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub era: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// The tool or prompt (as exposed) or the resource URI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// What the server itself calls the target (its own tool or prompt name,
    /// its own URI): the name policies know it by, so decisions can be replayed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original: Option<String>,
    /// Arguments as the redaction setting allows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<Value>,
    /// `sha256:` of the arguments' JSON, when recorded as a digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments_digest: Option<String>,
    /// The result as the redaction setting allows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_digest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<Verdict>,
    /// The machine-readable reason of a denial (`no_permit`, `forbidden`,
    /// `not_visible`, `invalid_token`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason_code: Option<String>,
    /// The policies that decided (permits for an allow, forbids for a deny).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    /// The JSON-RPC error code, or the HTTP status of a refusal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<i64>,
    /// From the request's arrival to its answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_us: Option<i64>,
    /// Time spent waiting for upstream servers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_us: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_in: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_out: Option<i64>,
    /// The W3C trace id of the request, when tracing is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// What else belongs to this kind of event (an upstream's status, a reload's
    /// error, an admin action's subject).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<Value>,
}

impl Event {
    /// A new event of `kind`, stamped now.
    pub fn new(kind: EventKind) -> Event {
        let time_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
        Event {
            id: next_id(time_us),
            time_us,
            kind,
            user: None,
            agent: None,
            tenant: None,
            principal: None,
            session: None,
            source: None,
            endpoint: None,
            era: None,
            method: None,
            server: None,
            target: None,
            original: None,
            arguments: None,
            arguments_digest: None,
            result: None,
            result_digest: None,
            decision: None,
            reason_code: None,
            policies: Vec::new(),
            reason: None,
            outcome: None,
            error_code: None,
            latency_us: None,
            upstream_us: None,
            bytes_in: None,
            bytes_out: None,
            trace_id: None,
            detail: None,
        }
    }

    /// Who: the principal's user, agent, tenant and the whole principal.
    pub fn by(mut self, p: &crate::auth::Principal) -> Event {
        self.user = Some(p.user.clone());
        self.agent = p.agent.clone();
        self.tenant = p.tenant.clone();
        self.principal = Some(PrincipalJson(p.json()));
        self
    }

    pub fn with_detail(mut self, detail: Value) -> Event {
        self.detail = Some(detail);
        self
    }
}

/// An event as its JSON text (one line of JSON Lines, without the newline):
/// what waits for the sinks and what they are given. Serialised once, when the
/// event is recorded, it takes a few hundred bytes where the event's fields
/// take kilobytes of the heap, and every sink uses the same text (shared: the
/// SQLite store binds it without a copy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line(Arc<str>);

impl Line {
    /// `event` serialised.
    pub fn of(event: &Event) -> Line {
        let mut buf = Vec::with_capacity(1024);
        Line::write(event, &mut buf);
        Line::from_json(buf)
    }

    /// Serialise `event` into `buf` (for a caller that adds to it first).
    pub fn write(event: &Event, buf: &mut Vec<u8>) {
        // An event is strings, numbers and JSON values with string keys: it
        // always serialises.
        if let Err(e) = serde_json::to_writer(&mut *buf, event) {
            unreachable!("an audit event always serialises: {e}");
        }
    }

    /// A line from JSON text [`Line::write`] produced.
    pub fn from_json(buf: Vec<u8>) -> Line {
        match String::from_utf8(buf) {
            Ok(text) => Line(text.into()),
            Err(e) => Line(String::from_utf8_lossy(e.as_bytes()).into()),
        }
    }

    /// A line read back (from a journal file): `None` unless it is an event.
    pub fn parse(text: &[u8]) -> Option<Line> {
        let text = std::str::from_utf8(text).ok()?;
        serde_json::from_str::<Columns>(text).ok()?;
        Some(Line(text.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The text, shared.
    pub fn shared(&self) -> Arc<str> {
        self.0.clone()
    }

    /// The whole event.
    pub fn event(&self) -> serde_json::Result<Event> {
        serde_json::from_str(&self.0)
    }

    /// The fields the store indexes, read without building the rest.
    pub fn columns(&self) -> serde_json::Result<Columns<'_>> {
        serde_json::from_str(&self.0)
    }
}

/// The fields of a [`Line`] the store keeps in columns of their own, borrowed
/// from its text where they need no unescaping.
#[derive(Debug, Deserialize)]
pub struct Columns<'a> {
    #[serde(borrow)]
    pub id: Cow<'a, str>,
    pub time_us: i64,
    pub kind: EventKind,
    #[serde(borrow, default, deserialize_with = "borrowed")]
    pub user: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "borrowed")]
    pub agent: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "borrowed")]
    pub tenant: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "borrowed")]
    pub session: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "borrowed")]
    pub method: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "borrowed")]
    pub server: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "borrowed")]
    pub target: Option<Cow<'a, str>>,
    #[serde(default)]
    pub decision: Option<Verdict>,
    #[serde(default)]
    pub outcome: Option<Outcome>,
}

/// An optional string borrowed from the text when it needs no unescaping:
/// serde borrows a `Cow<str>` field, but copies one inside an `Option`.
fn borrowed<'de: 'a, 'a, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Cow<'a, str>>, D::Error> {
    #[derive(Deserialize)]
    struct Borrowed<'a>(#[serde(borrow)] Cow<'a, str>);
    Ok(Option::<Borrowed<'a>>::deserialize(d)?.map(|b| b.0))
}

/// An IP address as text, in one allocation (`to_string` grows its string as
/// it writes).
pub fn address(ip: std::net::IpAddr) -> String {
    use std::fmt::Write as _;
    // Room for the longest IPv6 address.
    let mut text = String::with_capacity(39);
    let _ = write!(text, "{ip}");
    text
}

/// Time-ordered ids: the microsecond, then a per-process counter, so events of
/// one gateway sort as they happened and two replicas rarely collide (a random
/// start for the counter).
fn next_id(time_us: i64) -> String {
    static COUNTER: std::sync::LazyLock<AtomicU32> =
        std::sync::LazyLock::new(|| AtomicU32::new(rand::random()));
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    // Written into its final size at once: one allocation per event.
    let mut id = String::with_capacity(24);
    let _ = write!(id, "{:016x}{n:08x}", time_us.max(0));
    id
}

/// The least id of an event at `time_us` or later: `id >= id_at(t)` is
/// `time_us >= t`, and `id < id_at(t)` is `time_us < t`, so time ranges are
/// ranges of the primary key and need no index of their own.
pub fn id_at(time_us: i64) -> String {
    format!("{:016x}", time_us.max(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_by_time() {
        let a = Event::new(EventKind::Request);
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = Event::new(EventKind::Request);
        assert!(a.id < b.id, "{} < {}", a.id, b.id);
        assert_eq!(a.id.len(), 24);
        assert!(id_at(a.time_us) <= a.id && a.id < id_at(a.time_us + 1));
        assert!(a.id < id_at(b.time_us) && id_at(b.time_us) <= b.id);
    }

    #[test]
    fn absent_fields_are_not_written_and_round_trip() {
        let mut e = Event::new(EventKind::Auth);
        e.outcome = Some(Outcome::Refused);
        e.error_code = Some(401);
        let text = serde_json::to_string(&e).unwrap();
        assert!(!text.contains("user"), "{text}");
        let back: Event = serde_json::from_str(&text).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn a_line_is_the_event_and_its_columns() {
        let mut e = Event::new(EventKind::Request);
        e.user = Some("ada \"the\" admin".into());
        e.server = Some("alpha".into());
        e.decision = Some(Verdict::Allow);
        e.arguments = Some(serde_json::json!({"user": "not the column", "n": 1}));
        let line = Line::of(&e);
        assert_eq!(line.event().unwrap(), e);
        let c = line.columns().unwrap();
        assert_eq!(c.id, e.id);
        assert_eq!(c.user.as_deref(), Some("ada \"the\" admin"));
        assert_eq!(c.server.as_deref(), Some("alpha"));
        // Read in place where the text needs no unescaping.
        assert!(matches!(c.server, Some(Cow::Borrowed(_))), "{c:?}");
        assert!(matches!(c.user, Some(Cow::Owned(_))), "{c:?}");
        assert_eq!(c.target, None);
        assert_eq!(c.decision, Some(Verdict::Allow));
        assert_eq!(Line::parse(line.as_str().as_bytes()), Some(line.clone()));
        assert_eq!(Line::parse(&line.as_str().as_bytes()[..20]), None);
        assert_eq!(Line::parse(b"{\"not\": \"an event\"}"), None);
    }
}
