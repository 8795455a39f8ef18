//! Tracing: the process's subscriber (logs to stderr; spans to OTLP when the
//! config has `telemetry`), W3C trace context in and out, and the trace of the
//! current request.
//!
//! Spans follow the OpenTelemetry conventions for MCP: one `SERVER` span per
//! client request, named `{mcp.method.name} {target}`, and one `CLIENT` span per
//! request sent upstream. They are made with the OpenTelemetry SDK directly
//! (not through `tracing`: a bridge would build each span twice) and carried
//! as the OpenTelemetry context of the future that serves the request
//! ([`Traced::wrap`]); log events stay with `tracing` and never become span
//! events. Without `telemetry` no span is made: each helper is one relaxed load.
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
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{
    FutureExt as _, Link, SpanKind, Status, TraceContextExt as _, TraceFlags, Tracer as _,
    TracerProvider as _, WithContext,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, OTEL_BSP_MAX_EXPORT_BATCH_SIZE,
    OTEL_BSP_MAX_QUEUE_SIZE, Sampler, SdkTracer, SdkTracerProvider,
};
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

const TRACEPARENT: &str = "traceparent";
const TRACESTATE: &str = "tracestate";

/// What makes the spans, set once `telemetry` is configured: every helper
/// here checks it first, so a gateway without `telemetry` pays one load.
static TRACER: OnceLock<SdkTracer> = OnceLock::new();

/// Whether spans are exported.
pub fn exporting() -> bool {
    TRACER.get().is_some()
}

/// Log to stderr only (commands other than `serve` and `stdio`).
pub fn init_logging(filter: &str, json: bool) {
    install(filter, json);
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
            install(filter, json);
            return Ok(Telemetry::default());
        };
        let traces = tracer_provider(t)?;
        let logs = config
            .audit
            .sinks
            .contains(&crate::config::AuditSink::Otlp)
            .then(|| logger_provider(t))
            .transpose()?;
        install(filter, json);
        let _ = TRACER.set(traces.tracer("toolgate"));
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

/// Spans exported at a time, unless `OTEL_BSP_MAX_EXPORT_BATCH_SIZE` says
/// otherwise. The SDK's 512 makes each export a run of about 2 ms on the
/// exporter's thread, and a request thread woken meanwhile on the same CPU
/// waits for it: at a moderate rate those waits were most of the gateway's
/// added p99 (docs/performance.md). A smaller batch is a shorter run; more
/// POSTs cost about the same CPU per span at saturation.
const EXPORT_BATCH: usize = 64;
/// Spans waiting for the exporter at most (beyond them, new ones are dropped
/// and counted), unless `OTEL_BSP_MAX_QUEUE_SIZE` says otherwise. The queue is
/// allocated and touched whole at start: the SDK's 2,048 are 0.75 MB of
/// resident memory for bursts that, exported 64 at a time, never come near it
/// (1,024 spans are 25 ms of the benchmark's saturation rate).
const EXPORT_QUEUE: usize = 1024;

/// The exporters' HTTP client. The SDK's batch processors export from threads
/// of their own, blocking on each export. reqwest's blocking client would hand
/// every POST to a runtime on yet another thread and sleep until it answers:
/// two threads woken per export, about a tenth of the exporting CPU at
/// saturation (docs/performance.md). This one drives reqwest's async client on
/// a single-threaded runtime owned by the exporter, on the exporting thread
/// itself; the gateway's runtime is never involved.
#[derive(Debug)]
struct InThread {
    client: reqwest::Client,
    /// Always `Some` until dropped.
    runtime: Option<tokio::runtime::Runtime>,
}

impl InThread {
    /// A client whose requests time out as the OTLP exporters' would: the
    /// signal's `OTEL_EXPORTER_OTLP_*_TIMEOUT`, else
    /// `OTEL_EXPORTER_OTLP_TIMEOUT` (milliseconds), else 10 s.
    fn new(signal_timeout: &str) -> anyhow::Result<InThread> {
        let millis = |var: &str| std::env::var(var).ok()?.parse().ok();
        let timeout = millis(signal_timeout)
            .or_else(|| millis(opentelemetry_otlp::OTEL_EXPORTER_OTLP_TIMEOUT))
            .map_or(
                opentelemetry_otlp::OTEL_EXPORTER_OTLP_TIMEOUT_DEFAULT,
                Duration::from_millis,
            );
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the OTLP exporter's runtime")?;
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .context("cannot set up the OTLP exporter's HTTP client")?;
        Ok(InThread {
            client,
            runtime: Some(runtime),
        })
    }
}

impl opentelemetry_http::HttpClient for InThread {
    fn send_bytes<'s, 'f>(
        &'s self,
        request: http::Request<bytes::Bytes>,
    ) -> std::pin::Pin<
        Box<
            dyn Future<Output = Result<http::Response<bytes::Bytes>, opentelemetry_http::HttpError>>
                + Send
                + 'f,
        >,
    >
    where
        's: 'f,
        Self: 'f,
    {
        Box::pin(async move {
            let send = self.client.send_bytes(request);
            match &self.runtime {
                // The SDK's export threads: no runtime is entered there.
                Some(runtime) if tokio::runtime::Handle::try_current().is_err() => {
                    runtime.block_on(send)
                }
                // Polled by some runtime after all (the SDK does not): it
                // drives the request, without panicking, though a connection
                // the exporter's own runtime pooled waits for that runtime.
                _ => send.await,
            }
        })
    }
}

impl Drop for InThread {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which a runtime's thread must not do.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Spans go through the SDK's batch processor, which exports on a thread of
/// its own ([`InThread`]): nothing here needs (or may block) the async
/// runtime.
fn tracer_provider(t: &TelemetryConfig) -> anyhow::Result<SdkTracerProvider> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(t.traces_url())
        .with_headers(headers(t))
        .with_http_client(InThread::new(
            opentelemetry_otlp::OTEL_EXPORTER_OTLP_TRACES_TIMEOUT,
        )?)
        .build()
        .context("cannot set up the OTLP span exporter")?;
    let sampler = Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(t.sample_ratio)));
    // The builder's defaults read the `OTEL_BSP_*` variables; a value set
    // here would override the variable.
    let mut batch = BatchConfigBuilder::default();
    if std::env::var_os(OTEL_BSP_MAX_EXPORT_BATCH_SIZE).is_none() {
        batch = batch.with_max_export_batch_size(EXPORT_BATCH);
    }
    if std::env::var_os(OTEL_BSP_MAX_QUEUE_SIZE).is_none() {
        batch = batch.with_max_queue_size(EXPORT_QUEUE);
    }
    let processor = BatchSpanProcessor::builder(exporter)
        .with_batch_config(batch.build())
        .build();
    Ok(SdkTracerProvider::builder()
        .with_span_processor(processor)
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
        .with_http_client(InThread::new(
            opentelemetry_otlp::OTEL_EXPORTER_OTLP_LOGS_TIMEOUT,
        )?)
        .build()
        .context("cannot set up the OTLP log exporter")?;
    Ok(SdkLoggerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource(t))
        .build())
}

fn install(filter: &str, json: bool) {
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
    let _ = tracing_subscriber::registry()
        .with(fmt.with_filter(env))
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

    /// The trace context of `cx`, to send on (`None` when it has none): what
    /// the W3C propagator writes, each header written once at its final size.
    fn of(cx: &Context) -> Option<TraceHeaders> {
        use std::fmt::Write as _;
        let span = cx.span();
        let sc = span.span_context();
        if !sc.is_valid() {
            return None;
        }
        let mut traceparent = String::with_capacity(55);
        let _ = write!(
            traceparent,
            "00-{}-{}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags() & TraceFlags::SAMPLED
        );
        let tracestate = sc.trace_state().header();
        Some(TraceHeaders {
            traceparent,
            tracestate: (!tracestate.is_empty()).then_some(tracestate),
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

/// Who sent a request and how, as the server span records it.
pub struct Request<'a> {
    /// A legacy session's id.
    pub session: Option<&'a str>,
    pub protocol_version: &'a str,
    pub user: &'a str,
    pub tenant: Option<&'a str>,
    pub client: Option<std::net::IpAddr>,
}

/// A span being recorded: the OpenTelemetry context that holds it, or
/// nothing when spans are not exported.
#[derive(Clone)]
pub struct Traced(Option<Context>);

impl Traced {
    pub fn none() -> Traced {
        Traced(None)
    }

    /// `fut`, with this span the current one while it runs.
    pub fn wrap<F: Future>(&self, fut: F) -> futures::future::Either<WithContext<F>, F> {
        match &self.0 {
            Some(cx) => futures::future::Either::Left(fut.with_context(cx.clone())),
            None => futures::future::Either::Right(fut),
        }
    }
}

/// The `SERVER` span of one client request. Its parent is the trace context
/// in `params._meta`, else the one of the HTTP request that carried it.
/// Attributes learned later are recorded by [`finish_request`].
pub fn server_span(msg: &Message, who: &Request<'_>) -> Traced {
    let Some(tracer) = TRACER.get() else {
        return Traced::none();
    };
    let method = known(msg.method(), KNOWN_METHODS);
    let mut attrs = Vec::with_capacity(10);
    attrs.push(KeyValue::new("mcp.method.name", method.clone()));
    attrs.push(KeyValue::new(
        "mcp.protocol.version",
        known(
            who.protocol_version,
            crate::gateway::modern::MODERN_VERSIONS
                .iter()
                .chain(crate::jsonrpc::LEGACY_VERSIONS),
        ),
    ));
    if let Some(s) = who.session {
        attrs.push(KeyValue::new("mcp.session.id", s.to_owned()));
    }
    if let Some(id) = msg.id.as_ref() {
        attrs.push(KeyValue::new(
            "jsonrpc.request.id",
            id_text(id).into_owned(),
        ));
    }
    attrs.push(KeyValue::new("user.id", who.user.to_owned()));
    if let Some(t) = who.tenant {
        attrs.push(KeyValue::new("toolgate.tenant", t.to_owned()));
    }
    if let Some(ip) = who.client {
        attrs.push(KeyValue::new("client.address", crate::audit::address(ip)));
    }
    let from_meta = TraceHeaders::from_meta(msg.params.as_ref()).and_then(|t| t.remote());
    let from_http = msg.trace.as_deref().and_then(TraceHeaders::remote);
    let mut links = Vec::new();
    let parent = match (from_meta, from_http) {
        (Some(meta), http) => {
            if let Some(http) = http {
                let link = http.span().span_context().clone();
                if link != *meta.span().span_context() {
                    links.push(Link::with_context(link));
                }
            }
            meta
        }
        (None, Some(http)) => http,
        (None, None) => Context::new(),
    };
    let span = tracer
        .span_builder(method)
        .with_kind(SpanKind::Server)
        .with_attributes(attrs)
        .with_links(links)
        .start_with_context(tracer, &parent);
    Traced(Some(parent.with_span(span)))
}

/// Methods most requests carry: their attribute values and span names need
/// no copy (nor do the protocol versions the gateway speaks).
const KNOWN_METHODS: &[&str] = &[
    "tools/call",
    "tools/list",
    "prompts/get",
    "prompts/list",
    "resources/read",
    "resources/list",
    "resources/templates/list",
    "completion/complete",
    "initialize",
    "ping",
];

/// `text` as a `'static` string where it is one of `known`, a copy otherwise.
fn known(text: &str, known: impl IntoIterator<Item = &'static &'static str>) -> Cow<'static, str> {
    match known.into_iter().find(|k| **k == text) {
        Some(k) => Cow::Borrowed(k),
        None => Cow::Owned(text.to_owned()),
    }
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
/// name is known to exist: a client cannot mint span names. Called where the
/// request's own span is current (an upstream call's span is current only
/// while that call is in flight).
pub fn finish_request(e: &Event) {
    if !exporting() {
        return;
    }
    let cx = Context::current();
    let span = cx.span();
    if !span.is_recording() {
        return;
    }
    let method = e.method.as_deref().unwrap_or_default();
    if let Some(target) = e.target.as_deref() {
        match method {
            "tools/call" => {
                span.set_attribute(KeyValue::new("gen_ai.operation.name", "execute_tool"));
                span.set_attribute(KeyValue::new("gen_ai.tool.name", target.to_owned()));
                span.update_name(spaced(method, target));
            }
            "prompts/get" => {
                span.set_attribute(KeyValue::new("gen_ai.prompt.name", target.to_owned()));
                span.update_name(spaced(method, target));
            }
            m if m.starts_with("resources/") => {
                span.set_attribute(KeyValue::new("mcp.resource.uri", target.to_owned()));
            }
            _ => {}
        }
    }
    if let Some(server) = e.server.as_deref() {
        span.set_attribute(KeyValue::new("toolgate.server", server.to_owned()));
    }
    if let Some(d) = e.decision {
        span.set_attribute(KeyValue::new("toolgate.decision", d.as_str()));
    }
    if let Some(o) = e.outcome {
        span.set_attribute(KeyValue::new("toolgate.outcome", o.as_str()));
    }
    match e.outcome {
        Some(Outcome::Error) => {
            let code = e.error_code.unwrap_or_default().to_string();
            span.set_attribute(KeyValue::new("error.type", code.clone()));
            span.set_attribute(KeyValue::new("rpc.response.status_code", code.clone()));
            let why = match (e.decision, e.reason_code.as_deref()) {
                (Some(Verdict::Deny), Some(reason)) => format!("denied: {reason}"),
                _ => format!("JSON-RPC error {code}"),
            };
            span.set_status(Status::error(why));
        }
        Some(Outcome::ToolError) => {
            span.set_attribute(KeyValue::new("error.type", "tool_error"));
            span.set_status(Status::error("tool_error"));
        }
        _ => {}
    }
}

/// The `CLIENT` span of one request to an upstream server, a child of the
/// current span. `method` and `params` are as sent (the server's own names).
pub fn upstream_span(
    server: &Arc<str>,
    method: &str,
    params: Option<&Value>,
    stdio: bool,
) -> Traced {
    let Some(tracer) = TRACER.get() else {
        return Traced::none();
    };
    let mut attrs = Vec::with_capacity(6);
    attrs.push(KeyValue::new(
        "mcp.method.name",
        known(method, KNOWN_METHODS),
    ));
    attrs.push(KeyValue::new(
        "network.transport",
        if stdio { "pipe" } else { "tcp" },
    ));
    attrs.push(KeyValue::new("toolgate.server", server.clone()));
    let name = params.and_then(|p| p.get("name")).and_then(Value::as_str);
    let span_name = match (method, name) {
        ("tools/call", Some(tool)) => {
            attrs.push(KeyValue::new("gen_ai.operation.name", "execute_tool"));
            attrs.push(KeyValue::new("gen_ai.tool.name", tool.to_owned()));
            Cow::Owned(spaced(method, tool))
        }
        ("prompts/get", Some(prompt)) => {
            attrs.push(KeyValue::new("gen_ai.prompt.name", prompt.to_owned()));
            Cow::Owned(spaced(method, prompt))
        }
        _ => known(method, KNOWN_METHODS),
    };
    let parent = Context::current();
    let span = tracer
        .span_builder(span_name)
        .with_kind(SpanKind::Client)
        .with_attributes(attrs)
        .start_with_context(tracer, &parent);
    Traced(Some(parent.with_span(span)))
}

/// Record how an upstream request went: how long the server took and, if it
/// failed, the JSON-RPC error code (`error` is only asked while exporting).
pub fn upstream_done(traced: &Traced, waited: Duration, error: impl FnOnce() -> Option<i64>) {
    let Some(cx) = &traced.0 else {
        return;
    };
    let span = cx.span();
    if !span.is_recording() {
        return;
    }
    span.set_attribute(KeyValue::new(
        "toolgate.upstream.latency_ms",
        waited.as_secs_f64() * 1000.0,
    ));
    if let Some(code) = error() {
        let code = code.to_string();
        span.set_attribute(KeyValue::new("error.type", code.clone()));
        span.set_attribute(KeyValue::new("rpc.response.status_code", code.clone()));
        span.set_status(Status::error(format!("JSON-RPC error {code}")));
    }
}

/// Put `traced`'s trace context in a request's `params._meta` for the server:
/// always for a 2026-07-28 server (whose spec reserves these keys), and in
/// place of a client's own for any server, so the server's parent is the
/// gateway's span rather than one it never saw.
pub fn inject_meta(traced: &Traced, params: &mut Option<Value>, modern: bool) {
    let Some(cx) = &traced.0 else {
        return;
    };
    let client_sent = params
        .as_ref()
        .and_then(|p| p.get("_meta"))
        .is_some_and(|m| m.get(TRACEPARENT).is_some() || m.get(TRACESTATE).is_some());
    if !modern && !client_sent {
        return;
    }
    let Some(ours) = TraceHeaders::of(cx) else {
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
    TraceHeaders::of(&Context::current()).map(Box::new)
}

/// The W3C trace id (32 hex digits) of the current span, when tracing exports
/// spans: audit events carry it. Also when the trace was not sampled, since a
/// caller's trace id still ties the event to the caller's own trace.
pub fn current_trace_id() -> Option<String> {
    if !exporting() {
        return None;
    }
    let cx = Context::current();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| {
        use std::fmt::Write as _;
        let mut id = String::with_capacity(32);
        let _ = write!(id, "{}", sc.trace_id());
        id
    })
}

/// `a b`, made at its final size (`format!` grows its string as it goes).
fn spaced(a: &str, b: &str) -> String {
    let mut s = String::with_capacity(a.len() + 1 + b.len());
    s.push_str(a);
    s.push(' ');
    s.push_str(b);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What goes upstream is exactly what the W3C propagator would write.
    #[test]
    fn trace_headers_of_a_context_are_the_propagators() {
        use opentelemetry::trace::{SpanContext, SpanId, TraceId, TraceState};
        let state = TraceState::from_key_value([("a", "1"), ("b", "2")]).unwrap();
        for (flags, state) in [
            (TraceFlags::SAMPLED, TraceState::NONE),
            (TraceFlags::default(), state.clone()),
            (TraceFlags::new(0xff), state),
        ] {
            let sc = SpanContext::new(
                TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap(),
                SpanId::from_hex("00f067aa0ba902b7").unwrap(),
                flags,
                true,
                state,
            );
            let cx = Context::new().with_remote_span_context(sc);
            let mut expected = std::collections::HashMap::new();
            TraceContextPropagator::new().inject_context(&cx, &mut expected);
            let ours = TraceHeaders::of(&cx).unwrap();
            assert_eq!(Some(&ours.traceparent), expected.get(TRACEPARENT));
            let tracestate = expected.get(TRACESTATE).filter(|s| !s.is_empty());
            assert_eq!(ours.tracestate.as_ref(), tracestate);
        }
        assert!(TraceHeaders::of(&Context::new()).is_none());
    }

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
        inject_meta(&Traced::none(), &mut params, true);
        assert_eq!(params, Some(serde_json::json!({ "name": "x" })));
        assert!(outgoing().is_none());
        assert!(current_trace_id().is_none());
    }
}
