//! The audit stage of the pipeline: what the gateway core writes down about
//! each request, session and server (see `crate::audit` for where it goes).

use super::Session;
use super::session::Era;
use crate::audit::{Event, EventKind, Facts, Outcome, Record, Verdict};
use crate::jsonrpc::{ErrorObject, Message};
use serde_json::Value;
use serde_json::value::RawValue;
use std::sync::Arc;
use std::time::Instant;

/// A request being audited: taken when it arrives, written when it ends.
pub(crate) struct Audited {
    slot: crate::audit::Slot,
    record: Arc<Record>,
    started: Instant,
    bytes_in: i64,
}

impl super::Gateway {
    /// Admit a request to the trail, or refuse it when it could not be audited.
    pub(crate) async fn audit_begin(&self, msg: &Message) -> Result<Audited, ErrorObject> {
        let started = Instant::now();
        let slot = self.audit.admit().await?;
        Ok(Audited {
            slot,
            record: Record::new(),
            started,
            bytes_in: msg.params.as_ref().map_or(0, json_len),
        })
    }

    /// Note what a call is about and what of its arguments may be recorded.
    pub(crate) fn audit_call(
        &self,
        server: usize,
        exposed: &str,
        original: &str,
        args: Option<&Value>,
    ) {
        let name = self.servers.get(server).map(|s| s.name.clone());
        let redactor = self.redactor.load();
        let rule = redactor.rule(name.as_deref(), Some(original));
        let recorded = args.map(|a| redactor.record(a, rule.arguments, rule));
        crate::audit::note(|f| {
            f.server = name;
            f.target = Some(exposed.to_owned());
            f.original = Some(original.to_owned());
            if let Some((value, digest)) = recorded {
                f.arguments = value;
                f.arguments_digest = digest;
            }
        });
    }

    /// Write the event of a request that ended with `answer` (`None`:
    /// cancelled). Returns the answer to send: with `overflow: fail_closed`
    /// an answer whose event could not be written becomes an error.
    pub(crate) async fn audit_end(
        &self,
        audited: Audited,
        who: Caller<'_>,
        method: &str,
        answer: Option<&Result<Box<RawValue>, ErrorObject>>,
    ) -> Result<(), ErrorObject> {
        let facts = audited.record.take();
        let original = facts.original.clone();
        let mut e = self.request_event(who, method, facts);
        e.latency_us = Some(micros(audited.started.elapsed()));
        e.bytes_in = Some(audited.bytes_in);
        match answer {
            None => e.outcome = Some(Outcome::Cancelled),
            Some(Ok(result)) => {
                let text = result.get();
                e.bytes_out = Some(text.len() as i64);
                e.outcome = Some(if is_tool_error(text) {
                    Outcome::ToolError
                } else {
                    Outcome::Ok
                });
                let redactor = self.redactor.load();
                let rule = redactor.rule(e.server.as_deref(), original.as_deref());
                if rule.results != crate::config::Recording::None
                    && let Ok(v) = serde_json::from_str::<Value>(text)
                {
                    let (value, digest) = redactor.record(&v, rule.results, rule);
                    e.result = value;
                    e.result_digest = digest;
                }
            }
            Some(Err(err)) => {
                e.outcome = Some(Outcome::Error);
                e.error_code = Some(err.code);
            }
        }
        // From the finished event, so the metrics count what the trail says.
        crate::metrics::record(&e);
        crate::telemetry::finish_request(&e);
        self.audit.commit(audited.slot, e).await
    }

    fn request_event(&self, who: Caller<'_>, method: &str, f: Facts) -> Event {
        let mut e = Event::new(EventKind::Request).by(who.principal);
        e.session = who.session.map(str::to_owned);
        e.source = who.source.map(crate::audit::address);
        e.endpoint = Some(who.endpoint.to_owned());
        e.era = Some(who.era.into());
        e.method = Some(method.to_owned());
        e.server = f.server.map(|s| s.to_string());
        e.target = f.target;
        e.original = f.original;
        e.arguments = f.arguments;
        e.arguments_digest = f.arguments_digest;
        e.decision = f.decision;
        e.reason_code = f.reason_code;
        e.policies = f.policies;
        e.reason = f.reason;
        if !f.upstream.is_zero() {
            e.upstream_us = Some(micros(f.upstream));
        }
        if f.cache_hit {
            e.detail = Some(serde_json::json!({ "cache": "hit" }));
        }
        e.trace_id = crate::telemetry::current_trace_id();
        e
    }

    /// A legacy session opened or ended.
    pub(crate) fn audit_session(&self, session: &Session, what: &str) {
        let mut e = Event::new(EventKind::Session).by(&session.identity);
        e.session = Some(session.id.clone());
        e.source = session.source.get().copied().map(crate::audit::address);
        e.endpoint = Some(session.endpoint.to_string());
        e.era = Some(era(session).into());
        e.method = Some(what.to_owned());
        e.detail = Some(serde_json::json!({
            "protocolVersion": session.protocol_version,
            "clientInfo": session.client_info,
        }));
        self.audit.emit(e);
    }

    /// A request refused before the core saw it: no valid credential, a
    /// foreign origin, another principal's session id, an endpoint's rules.
    /// `status` is the HTTP status the client got, `code` the stable reason.
    pub fn audit_refusal(&self, r: Refusal<'_>) {
        let mut e = match r.principal {
            Some(p) => Event::new(EventKind::Auth).by(p),
            None => Event::new(EventKind::Auth),
        };
        e.source = r.source.map(crate::audit::address);
        e.endpoint = Some(r.path.to_owned());
        e.decision = Some(Verdict::Deny);
        e.reason_code = Some(r.code.to_owned());
        e.reason = Some(self.redactor.load().scrub(r.reason).into_owned());
        e.outcome = Some(Outcome::Refused);
        e.error_code = Some(i64::from(r.status));
        self.audit.emit(e);
    }

    /// An upstream server's status changed.
    pub(crate) fn audit_upstream(&self, server: &str, status: &str, reason: Option<&str>) {
        let mut e = Event::new(EventKind::Upstream);
        e.server = Some(server.to_owned());
        e.method = Some(status.to_owned());
        e.reason = reason.map(|r| self.redactor.load().scrub(r).into_owned());
        self.audit.emit(e);
    }
}

/// A refused request, for [`Gateway::audit_refusal`](super::Gateway::audit_refusal).
pub struct Refusal<'a> {
    pub principal: Option<&'a crate::auth::Principal>,
    pub source: Option<std::net::IpAddr>,
    pub path: &'a str,
    pub status: u16,
    pub code: &'a str,
    pub reason: &'a str,
}

/// Who made a request, as the trail records it.
#[derive(Clone, Copy)]
pub(crate) struct Caller<'a> {
    pub principal: &'a crate::auth::Principal,
    /// A legacy session's id.
    pub session: Option<&'a str>,
    pub source: Option<std::net::IpAddr>,
    pub endpoint: &'a str,
    pub era: &'static str,
}

impl<'a> From<&'a Session> for Caller<'a> {
    fn from(s: &'a Session) -> Caller<'a> {
        Caller {
            principal: &s.identity,
            session: (s.era == Era::Legacy).then_some(s.id.as_str()),
            source: s.source.get().copied(),
            endpoint: &s.endpoint,
            era: era(s),
        }
    }
}

/// Record the authorization decision of the current request.
pub(crate) fn note_decision(
    allowed: bool,
    code: Option<&str>,
    policies: &[String],
    reason: Option<&str>,
) {
    crate::audit::note(|f| {
        f.decision = Some(if allowed {
            Verdict::Allow
        } else {
            Verdict::Deny
        });
        f.reason_code = code.map(str::to_owned);
        f.policies = policies.to_vec();
        f.reason = reason.map(str::to_owned);
    });
}

fn era(session: &Session) -> &'static str {
    match session.era {
        Era::Legacy => "legacy",
        Era::Modern => "modern",
    }
}

fn micros(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// A tool result that reports the tool failed (`isError: true`).
fn is_tool_error(result: &str) -> bool {
    if !result.contains("\"isError\"") {
        return false;
    }
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(rename = "isError", default)]
        is_error: bool,
    }
    serde_json::from_str::<Probe>(result).is_ok_and(|p| p.is_error)
}

/// The length of `v` as JSON, without building the text.
pub(super) fn json_len(v: &Value) -> i64 {
    struct Count(i64);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len() as i64;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    let _ = serde_json::to_writer(&mut c, v);
    c.0
}

impl Audited {
    /// Run the request's dispatch with its record current.
    pub(crate) fn scope<F: std::future::Future>(
        &self,
        fut: F,
    ) -> impl std::future::Future<Output = F::Output> + use<F> {
        self.record.scope(fut)
    }
}
