//! Tracing: the process's subscriber (logs to stderr; spans to OTLP when the
//! config has `telemetry`), W3C trace context in and out, and the trace of the
//! current request.
//!
//! Spans follow the OpenTelemetry conventions for MCP: one `SERVER` span per
//! client request, named `{mcp.method.name} {target}`, and one `CLIENT` span per
//! request sent upstream. They are `tracing` spans at debug level under the
//! target [`SPANS`]; the OTLP layer takes only those, so ordinary log events
//! never become span events. Without `telemetry` (and at the default log
//! level) no layer wants them and creating one is a cached "disabled" check.
//!
//! Trace context arrives in a request's `params._meta` (`traceparent`,
//! `tracestate`) and in the HTTP headers of the POST that carried it. `_meta`
//! wins, as the MCP conventions ask, since one HTTP request is not one MCP
//! request; a different header context becomes a link. What never goes on a
//! span: arguments, results, credentials, headers other than trace context.

use crate::audit::{Event, Outcome, Verdict};
use crate::config::{Config, TelemetryConfig};
use crate::jsonrpc::{Id, Message};
use anyhow::Context as _;
use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tracing::Span;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// The `tracing` target of the spans that are exported.
pub const SPANS: &str = "toolgate::trace";

const TRACEPARENT: &str = "traceparent";
const TRACESTATE: &str = "tracestate";

/// Set once the OTLP layer is installed: every helper here checks it first, so
/// a gateway without `telemetry` pays one relaxed load.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported.
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// Log to stderr only (commands other than `serve` and `stdio`).
pub fn init_logging(filter: &str, json: bool) {
    install(filter, json, None);
}

/// What `telemetry` started: flushed and stopped by [`Telemetry::shutdown`].
#[derive(Default)]
pub struct Telemetry {
    traces: Option<SdkTracerProvider>,
    logs: Option<SdkLoggerProvider>,
}

impl Telemetry {
    /// Install the subscriber for `serve` and `stdio`: logs to stderr as
    /// always, and with `telemetry` configured, spans to its OTLP endpoint (and
    /// a log exporter for the `otlp` audit sink, when that is configured).
    pub fn start(filter: &str, json: bool, config: &Config) -> anyhow::Result<Telemetry> {
        let Some(t) = &config.telemetry else {
            install(filter, json, None);
            return Ok(Telemetry::default());
        };
        let traces = tracer_provider(t)?;
        let logs = config
            .audit
            .sinks
            .contains(&crate::config::AuditSink::Otlp)
            .then(|| logger_provider(t))
            .transpose()?;
        install(filter, json, Some(traces.tracer("toolgate")));
        EXPORTING.store(true, Ordering::Relaxed);
        tracing::info!(
            endpoint = %t.otlp_endpoint,
            sample_ratio = t.sample_ratio,
            audit_logs = logs.is_some(),
            "exporting traces over OTLP/HTTP"
        );
        Ok(Telemetry {
            traces: Some(traces),
            logs,
        })
    }

    /// The `otlp` audit sink, if `audit.sinks` names it.
    pub fn audit_sink(&self) -> Option<Box<dyn crate::audit::sink::Sink>> {
        let provider = self.logs.clone()?;
        Some(Box::new(crate::audit::sink::Otlp::new(provider)))
    }

    /// Export what is buffered and stop the exporters' threads. Blocks (up
    /// to the export timeout): call it off the async runtime.
    pub fn shutdown(self) {
        if let Some(p) = self.traces
            && let Err(e) = p.shutdown()
        {
            eprintln!("warning: exporting the last spans failed: {e}");
        }
        if let Some(p) = self.logs
            && let Err(e) = p.shutdown()
        {
            eprintln!("warning: exporting the last audit log records failed: {e}");
        }
    }
}

fn resource(t: &TelemetryConfig) -> opentelemetry_sdk::Resource {
    opentelemetry_sdk::Resource::builder()
        .with_service_name(t.service_name.clone())
        .build()
}

fn headers(t: &TelemetryConfig) -> std::collections::HashMap<String, String> {
    t.headers
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Spans go through the SDK's batch processor, which exports on a thread of
/// its own with a blocking HTTP client: nothing here needs (or may block) the
/// async runtime.
fn tracer_provider(t: &TelemetryConfig) -> anyhow::Result<SdkTracerProvider> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(t.traces_url())
        .with_headers(headers(t))
        .build()
        .context("cannot set up the OTLP span exporter")?;
    let sampler = Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(t.sample_ratio)));
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(sampler)
        .with_resource(resource(t))
        .build())
}

fn logger_provider(t: &TelemetryConfig) -> anyhow::Result<SdkLoggerProvider> {
    let exporter = opentelemetry_otlp::LogExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(t.logs_url())
        .with_headers(headers(t))
        .build()
        .context("cannot set up the OTLP log exporter")?;
    Ok(SdkLoggerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource(t))
        .build())
}

fn install(filter: &str, json: bool, tracer: Option<opentelemetry_sdk::trace::SdkTracer>) {
    let env = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(filter))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Always stderr: stdout belongs to the MCP stream in stdio mode.
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = if json {
        fmt.json().boxed()
    } else {
        fmt.boxed()
    };
    let otel = tracer.map(|tracer| {
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            .with_tracked_inactivity(false)
            .with_filter(tracing_subscriber::filter::filter_fn(|m| {
                m.is_span() && m.target() == SPANS
            }))
    });
    let _ = tracing_subscriber::registry()
        .with(fmt.with_filter(env))
        .with(otel)
        .try_init();
}

/// W3C trace context as it travels beside a message: in HTTP headers, not in
/// the JSON-RPC body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceHeaders {
    pub traceparent: String,
    pub tracestate: Option<String>,
}

impl TraceHeaders {
    /// The trace context of an HTTP request (only read while exporting).
    pub fn from_http(headers: &http::HeaderMap) -> Option<Box<TraceHeaders>> {
        if !exporting() {
            return None;
        }
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        Some(Box::new(TraceHeaders {
            traceparent: text(TRACEPARENT)?.to_owned(),
            tracestate: text(TRACESTATE).map(str::to_owned),
        }))
    }

    /// `_meta.traceparent` / `_meta.tracestate` of a request's params.
    fn from_meta(params: Option<&Value>) -> Option<TraceHeaders> {
        let meta = params?.get("_meta")?;
        Some(TraceHeaders {
            traceparent: meta.get(TRACEPARENT)?.as_str()?.to_owned(),
            tracestate: meta
                .get(TRACESTATE)
                .and_then(Value::as_str)
                .map(str::to_owned),
        })
    }

    /// The context of `span`, to send on (`None` when it has none).
    fn of(span: &Span) -> Option<TraceHeaders> {
        let mut out = Carrier::default();
        TraceContextPropagator::new().inject_context(&span.context(), &mut out);
        Some(TraceHeaders {
            traceparent: out.traceparent?,
            tracestate: out.tracestate.filter(|s| !s.is_empty()),
        })
    }

    /// The remote context these headers name; `None` if they are malformed.
    fn remote(&self) -> Option<Context> {
        let cx = TraceContextPropagator::new().extract(self);
        cx.span().span_context().is_valid().then_some(cx)
    }

    /// As HTTP header pairs.
    pub fn pairs(&self) -> impl Iterator<Item = (&'static str, &str)> {
        std::iter::once((TRACEPARENT, self.traceparent.as_str()))
            .chain(self.tracestate.as_deref().map(|s| (TRACESTATE, s)))
    }
}

impl Extractor for TraceHeaders {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            TRACEPARENT => Some(&self.traceparent),
            TRACESTATE => self.tracestate.as_deref(),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT, TRACESTATE]
    }
}

#[derive(Default)]
struct Carrier {
    traceparent: Option<String>,
    tracestate: Option<String>,
}

impl Injector for Carrier {
    fn set(&mut self, key: &str, value: String) {
        match key {
            TRACEPARENT => self.traceparent = Some(value),
            TRACESTATE => self.tracestate = Some(value),
            _ => {}
        }
    }
}

/// Who sent a request and how, as the server span records it.
pub struct Request<'a> {
    /// A legacy session's id.
    pub session: Option<&'a str>,
    pub protocol_version: &'a str,
    pub user: &'a str,
    pub tenant: Option<&'a str>,
    pub client: Option<std::net::IpAddr>,
}

/// The `SERVER` span of one client request. Its parent is the trace context
/// in `params._meta`, else the one of the HTTP request that carried it.
/// Attributes learned later are recorded by [`finish_request`].
pub fn server_span(msg: &Message, who: &Request<'_>) -> Span {
    let method = msg.method();
    let span = tracing::debug_span!(
        target: SPANS,
        "mcp.server",
        otel.name = method,
        otel.kind = "server",
        otel.status_description = Empty,
        mcp.method.name = method,
        mcp.protocol.version = who.protocol_version,
        mcp.session.id = who.session,
        jsonrpc.request.id = msg.id.as_ref().map(id_text).as_deref(),
        user.id = who.user,
        toolgate.tenant = who.tenant,
        client.address = who.client.map(tracing::field::display),
        gen_ai.operation.name = Empty,
        gen_ai.tool.name = Empty,
        gen_ai.prompt.name = Empty,
        mcp.resource.uri = Empty,
        toolgate.server = Empty,
        toolgate.decision = Empty,
        toolgate.outcome = Empty,
        "error.type" = Empty,
        rpc.response.status_code = Empty,
    );
    if !exporting() || span.is_disabled() {
        return span;
    }
    let from_meta = TraceHeaders::from_meta(msg.params.as_ref()).and_then(|t| t.remote());
    let from_http = msg.trace.as_deref().and_then(TraceHeaders::remote);
    let parent = match (from_meta, from_http) {
        (Some(meta), http) => {
            if let Some(http) = http {
                let link = http.span().span_context().clone();
                if link != *meta.span().span_context() {
                    span.add_link(link);
                }
            }
            Some(meta)
        }
        (None, http) => http,
    };
    if let Some(parent) = parent {
        let _ = span.set_parent(parent);
    }
    span
}

fn id_text(id: &Id) -> Cow<'_, str> {
    match id {
        Id::Num(n) => Cow::Owned(n.to_string()),
        Id::Str(s) => Cow::Borrowed(s),
    }
}

/// Record on the current (server) span what the request's audit event says:
/// the exposed tool, prompt or resource, the server, the decision and how it
/// ended. The span is named `{method} {tool or prompt}` only now, once the
/// name is known to exist: a client cannot mint span names.
pub fn finish_request(e: &Event) {
    if !exporting() {
        return;
    }
    let span = Span::current();
    if span.is_disabled() || span.metadata().is_none_or(|m| m.name() != "mcp.server") {
        return;
    }
    let method = e.method.as_deref().unwrap_or_default();
    if let Some(target) = e.target.as_deref() {
        match method {
            "tools/call" => {
                span.record("gen_ai.operation.name", "execute_tool");
                span.record("gen_ai.tool.name", target);
                span.context()
                    .span()
                    .update_name(format!("{method} {target}"));
            }
            "prompts/get" => {
                span.record("gen_ai.prompt.name", target);
                span.context()
                    .span()
                    .update_name(format!("{method} {target}"));
            }
            m if m.starts_with("resources/") => {
                span.record("mcp.resource.uri", target);
            }
            _ => {}
        }
    }
    if let Some(server) = e.server.as_deref() {
        span.record("toolgate.server", server);
    }
    if let Some(d) = e.decision {
        span.record("toolgate.decision", d.as_str());
    }
    if let Some(o) = e.outcome {
        span.record("toolgate.outcome", o.as_str());
    }
    match e.outcome {
        Some(Outcome::Error) => {
            let code = e.error_code.unwrap_or_default().to_string();
            span.record("error.type", code.as_str());
            span.record("rpc.response.status_code", code.as_str());
            let why = match (e.decision, e.reason_code.as_deref()) {
                (Some(Verdict::Deny), Some(reason)) => format!("denied: {reason}"),
                _ => format!("JSON-RPC error {code}"),
            };
            span.record("otel.status_description", why.as_str());
        }
        Some(Outcome::ToolError) => {
            span.record("error.type", "tool_error");
            span.record("otel.status_description", "tool_error");
        }
        _ => {}
    }
}

/// The `CLIENT` span of one request to an upstream server, a child of the
/// current span. `method` and `params` are as sent (the server's own names).
pub fn upstream_span(server: &str, method: &str, params: Option<&Value>, stdio: bool) -> Span {
    let span = tracing::debug_span!(
        target: SPANS,
        "mcp.client",
        otel.name = Empty,
        otel.kind = "client",
        otel.status_description = Empty,
        mcp.method.name = method,
        gen_ai.operation.name = Empty,
        gen_ai.tool.name = Empty,
        gen_ai.prompt.name = Empty,
        network.transport = if stdio { "pipe" } else { "tcp" },
        toolgate.server = server,
        toolgate.upstream.latency_ms = Empty,
        "error.type" = Empty,
        rpc.response.status_code = Empty,
    );
    if !exporting() || span.is_disabled() {
        return span;
    }
    let name = params.and_then(|p| p.get("name")).and_then(Value::as_str);
    match (method, name) {
        ("tools/call", Some(tool)) => {
            span.record("gen_ai.operation.name", "execute_tool");
            span.record("gen_ai.tool.name", tool);
            span.record("otel.name", format!("{method} {tool}").as_str());
        }
        ("prompts/get", Some(prompt)) => {
            span.record("gen_ai.prompt.name", prompt);
            span.record("otel.name", format!("{method} {prompt}").as_str());
        }
        _ => {
            span.record("otel.name", method);
        }
    }
    span
}

/// Record how an upstream request went: how long the server took and, if it
/// failed, the JSON-RPC error code (`error` is only asked while exporting).
pub fn upstream_done(span: &Span, waited: Duration, error: impl FnOnce() -> Option<i64>) {
    if !exporting() || span.is_disabled() {
        return;
    }
    span.record(
        "toolgate.upstream.latency_ms",
        waited.as_secs_f64() * 1000.0,
    );
    if let Some(code) = error() {
        let code = code.to_string();
        span.record("error.type", code.as_str());
        span.record("rpc.response.status_code", code.as_str());
        span.record(
            "otel.status_description",
            format!("JSON-RPC error {code}").as_str(),
        );
    }
}

/// Put `span`'s trace context in a request's `params._meta` for the server:
/// always for a 2026-07-28 server (whose spec reserves these keys), and in
/// place of a client's own for any server, so the server's parent is the
/// gateway's span rather than one it never saw.
pub fn inject_meta(span: &Span, params: &mut Option<Value>, modern: bool) {
    if !exporting() || span.is_disabled() {
        return;
    }
    let client_sent = params
        .as_ref()
        .and_then(|p| p.get("_meta"))
        .is_some_and(|m| m.get(TRACEPARENT).is_some() || m.get(TRACESTATE).is_some());
    if !modern && !client_sent {
        return;
    }
    let Some(ours) = TraceHeaders::of(span) else {
        return;
    };
    let params = params.get_or_insert_with(|| Value::Object(Map::new()));
    let Some(obj) = params.as_object_mut() else {
        return;
    };
    let meta = obj
        .entry("_meta")
        .or_insert_with(|| Value::Object(Map::new()));
    let Some(meta) = meta.as_object_mut() else {
        return;
    };
    meta.insert(TRACEPARENT.into(), Value::String(ours.traceparent));
    match ours.tracestate {
        Some(s) => meta.insert(TRACESTATE.into(), Value::String(s)),
        None => meta.remove(TRACESTATE),
    };
}

/// The trace context of the current span, for the transport to send in
/// headers (HTTP upstreams).
pub fn outgoing() -> Option<Box<TraceHeaders>> {
    if !exporting() {
        return None;
    }
    let span = Span::current();
    if span.is_disabled() {
        return None;
    }
    TraceHeaders::of(&span).map(Box::new)
}

/// The W3C trace id (32 hex digits) of the current span, when tracing exports
/// spans: audit events carry it. Also when the trace was not sampled, since a
/// caller's trace id still ties the event to the caller's own trace.
pub fn current_trace_id() -> Option<String> {
    if !exporting() {
        return None;
    }
    let cx = Span::current().context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_headers_come_from_meta_and_go_out_as_pairs() {
        let params = serde_json::json!({ "_meta": {
            "traceparent": "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01",
            "tracestate": "a=1",
        }});
        let t = TraceHeaders::from_meta(Some(&params)).unwrap();
        let cx = t.remote().unwrap();
        assert_eq!(
            cx.span().span_context().trace_id().to_string(),
            "0af7651916cd43dd8448eb211c80319c"
        );
        assert!(cx.span().span_context().is_remote());
        let pairs: Vec<_> = t.pairs().collect();
        assert_eq!(pairs[1], ("tracestate", "a=1"));
        let bad = TraceHeaders {
            traceparent: "00-zz-yy-01".into(),
            tracestate: None,
        };
        assert!(bad.remote().is_none());
        assert!(TraceHeaders::from_meta(Some(&serde_json::json!({ "_meta": {} }))).is_none());
    }

    #[test]
    fn nothing_is_done_without_an_exporter() {
        assert!(!exporting());
        let mut params = Some(serde_json::json!({ "name": "x" }));
        inject_meta(&Span::none(), &mut params, true);
        assert_eq!(params, Some(serde_json::json!({ "name": "x" })));
        assert!(outgoing().is_none());
        assert!(current_trace_id().is_none());
    }
}
