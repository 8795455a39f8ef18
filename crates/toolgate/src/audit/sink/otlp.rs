//! OpenTelemetry log records over OTLP/HTTP: one record per event, its fields
//! as attributes (the names of the JSON Lines output), linked to the request's
//! trace by the event's trace id. The exporter is the one `telemetry` set up.
//!
//! A write hands the batch to the SDK's log processor, which exports on its own
//! thread: `Ok` means queued, not received. A collector that is down loses
//! events (the processor logs it); keep the `store` sink beside this one where
//! the trail must be complete.

use super::{Event, Line, Sink};
use crate::audit::{EventKind, Outcome, Verdict};
use futures::future::BoxFuture;
use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _, LoggerProvider as _, Severity};
use opentelemetry::trace::{SpanId, TraceFlags, TraceId};
use opentelemetry::{Key, StringValue};
use opentelemetry_sdk::logs::{SdkLogger, SdkLoggerProvider};
use serde_json::Value;
use std::collections::HashMap;
use std::time::{Duration, UNIX_EPOCH};

pub struct Otlp {
    provider: SdkLoggerProvider,
    logger: SdkLogger,
}

impl Otlp {
    pub fn new(provider: SdkLoggerProvider) -> Otlp {
        let logger = provider.logger("toolgate.audit");
        Otlp { provider, logger }
    }

    fn emit(&self, e: &Event) {
        let mut record = self.logger.create_log_record();
        record.set_event_name(event_name(e.kind));
        record.set_timestamp(UNIX_EPOCH + Duration::from_micros(e.time_us.max(0) as u64));
        let (severity, text) = severity(e);
        record.set_severity_number(severity);
        record.set_severity_text(text);
        record.set_body(AnyValue::from(summary(e)));
        if let Ok(Value::Object(fields)) = serde_json::to_value(e) {
            record.add_attributes(fields.into_iter().map(|(k, v)| (k, any(v))));
        }
        if let Some(trace) = e
            .trace_id
            .as_deref()
            .and_then(|t| TraceId::from_hex(t).ok())
            && trace != TraceId::INVALID
        {
            // The event knows its trace, not the span it was written in.
            record.set_trace_context(trace, SpanId::INVALID, Some(TraceFlags::default()));
        }
        self.logger.emit(record);
    }
}

fn event_name(kind: EventKind) -> &'static str {
    match kind {
        EventKind::Request => "toolgate.audit.request",
        EventKind::Auth => "toolgate.audit.auth",
        EventKind::Session => "toolgate.audit.session",
        EventKind::Upstream => "toolgate.audit.upstream",
        EventKind::Reload => "toolgate.audit.reload",
        EventKind::Admin => "toolgate.audit.admin",
    }
}

/// Denials, refusals and failures stand out as warnings.
fn severity(e: &Event) -> (Severity, &'static str) {
    let bad = e.decision == Some(Verdict::Deny)
        || matches!(e.outcome, Some(Outcome::Error | Outcome::Refused));
    if bad {
        (Severity::Warn, "WARN")
    } else {
        (Severity::Info, "INFO")
    }
}

/// A line a person reads first: `request tools/call alpha__echo: ok`.
fn summary(e: &Event) -> String {
    let mut s = e.kind.as_str().to_owned();
    for part in [e.method.as_deref(), e.target.as_deref()]
        .into_iter()
        .flatten()
    {
        s.push(' ');
        s.push_str(part);
    }
    if let Some(o) = e.outcome {
        s.push_str(": ");
        s.push_str(o.as_str());
    }
    s
}

fn any(v: Value) -> AnyValue {
    match v {
        Value::Null => AnyValue::String(StringValue::from("")),
        Value::Bool(b) => AnyValue::Boolean(b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => AnyValue::Int(i),
            None => AnyValue::Double(n.as_f64().unwrap_or_default()),
        },
        Value::String(s) => AnyValue::String(s.into()),
        Value::Array(items) => AnyValue::ListAny(Box::new(items.into_iter().map(any).collect())),
        Value::Object(m) => AnyValue::Map(Box::new(
            m.into_iter()
                .map(|(k, v)| (Key::new(k), any(v)))
                .collect::<HashMap<_, _>>(),
        )),
    }
}

impl Sink for Otlp {
    fn name(&self) -> &'static str {
        "otlp"
    }

    fn write<'a>(&'a mut self, events: &'a [Line]) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            for line in events {
                self.emit(&line.event()?);
            }
            Ok(())
        })
    }

    fn flush(&mut self) -> BoxFuture<'_, anyhow::Result<()>> {
        let provider = self.provider.clone();
        Box::pin(async move {
            // Exporting blocks on HTTP: not on a runtime thread.
            tokio::task::spawn_blocking(move || provider.force_flush()).await??;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_values_become_otlp_values() {
        let v = serde_json::json!({ "a": [1, 2.5, "x", true], "b": null });
        let AnyValue::Map(m) = any(v) else { panic!() };
        assert_eq!(
            m[&Key::new("a")],
            AnyValue::ListAny(Box::new(vec![
                AnyValue::Int(1),
                AnyValue::Double(2.5),
                AnyValue::String("x".into()),
                AnyValue::Boolean(true),
            ]))
        );
    }

    #[test]
    fn summaries_and_severity() {
        let mut e = Event::new(EventKind::Request);
        e.method = Some("tools/call".into());
        e.target = Some("alpha__echo".into());
        e.outcome = Some(Outcome::Ok);
        assert_eq!(summary(&e), "request tools/call alpha__echo: ok");
        assert_eq!(severity(&e).0, Severity::Info);
        e.decision = Some(Verdict::Deny);
        assert_eq!(severity(&e).0, Severity::Warn);
    }
}
