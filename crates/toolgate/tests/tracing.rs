//! OpenTelemetry through the real binary: a gateway with `telemetry` exports
//! its spans and audit log records to an OTLP/HTTP receiver this test runs,
//! continues the caller's trace (HTTP `traceparent`, or `_meta.traceparent`,
//! which wins), and hands its own context to the upstream.

mod support;

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post as route_post;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message as _;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::{FixtureServer, Gateway, first_text, stdio_server, within};

/// How long exported data may take to arrive (the test sets 100 ms batches).
const ARRIVAL: Duration = Duration::from_secs(20);

/// What the receiver got, decoded.
#[derive(Default)]
struct Received {
    spans: Vec<Span>,
    logs: Vec<LogRecord>,
}

/// An OTLP/HTTP receiver (protobuf) on a free loopback port.
struct Collector {
    url: String,
    got: Arc<Mutex<Received>>,
    _server: tokio::task::JoinHandle<()>,
}

impl Collector {
    async fn start() -> Collector {
        let got = Arc::new(Mutex::new(Received::default()));
        let app = axum::Router::new()
            .route("/v1/traces", route_post(traces))
            .route("/v1/logs", route_post(logs))
            .with_state(got.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the receiver");
        let url = format!("http://{}", listener.local_addr().expect("an address"));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Collector {
            url,
            got,
            _server: server,
        }
    }

    /// Wait until `find` finds something in what arrived.
    async fn wait<T>(&self, what: &str, find: impl Fn(&Received) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + ARRIVAL;
        loop {
            if let Some(t) = find(&self.got.lock().unwrap()) {
                return t;
            }
            if tokio::time::Instant::now() > deadline {
                let got = self.got.lock().unwrap();
                let names: Vec<_> = got.spans.iter().map(|s| s.name.clone()).collect();
                panic!(
                    "{what}: not received within {ARRIVAL:?} (spans: {names:?}, log records: {})",
                    got.logs.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

async fn traces(State(got): State<Arc<Mutex<Received>>>, body: Bytes) -> &'static [u8] {
    let req = ExportTraceServiceRequest::decode(body).expect("a protobuf trace export");
    let spans = req
        .resource_spans
        .into_iter()
        .flat_map(|r| r.scope_spans)
        .flat_map(|s| s.spans);
    got.lock().unwrap().spans.extend(spans);
    // An empty ExportTraceServiceResponse.
    b""
}

async fn logs(State(got): State<Arc<Mutex<Received>>>, body: Bytes) -> &'static [u8] {
    let req = ExportLogsServiceRequest::decode(body).expect("a protobuf logs export");
    let records = req
        .resource_logs
        .into_iter()
        .flat_map(|r| r.scope_logs)
        .flat_map(|s| s.log_records);
    got.lock().unwrap().logs.extend(records);
    b""
}

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v: &AnyValue| v.value.as_ref())
}

fn attr_str<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    match attr(attrs, key)? {
        any_value::Value::StringValue(s) => Some(s),
        _ => None,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Every string anywhere in a span's attributes, links and events.
fn strings(span: &Span) -> String {
    format!("{:?} {:?} {:?}", span.attributes, span.links, span.events)
}

const T1: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const P1: &str = "00f067aa0ba902b7";
const T2: &str = "0af7651916cd43dd8448eb211c80319c";
const P2: &str = "b7ad6b7169203331";
const T3: &str = "11111111111111111111111111111111";

/// A gateway with a stdio and a Streamable HTTP fixture, exporting to
/// `collector`, its audit trail in the OTLP logs and a JSON Lines file.
async fn gateway(collector: &Collector, web: &FixtureServer, audit: &std::path::Path) -> Gateway {
    let config = json!({
        "servers": { "alpha": stdio_server(&[]), "web": web.entry() },
        "telemetry": {
            "otlp_endpoint": collector.url,
            "service_name": "toolgate-test",
            "headers": { "x-collector-key": "k" },
        },
        "audit": { "sinks": ["otlp", { "jsonl": { "path": audit } }] },
    });
    Gateway::serve_with_env(
        config,
        &[
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("OTEL_BLRP_SCHEDULE_DELAY", "100"),
        ],
    )
    .await
}

/// POST one JSON-RPC message; the final message of the answer (JSON or SSE).
async fn post(
    http: &reqwest::Client,
    url: &str,
    headers: &[(&str, &str)],
    body: Value,
) -> (reqwest::header::HeaderMap, Value) {
    let mut req = http
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(body.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = within(Duration::from_secs(30), "a POST", req.send())
        .await
        .expect("the gateway answers");
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap_or_default();
    let last = text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .chain(std::iter::once(text.as_str()))
        .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
        .find(|m| m.get("result").is_some() || m.get("error").is_some())
        .unwrap_or(Value::Null);
    (headers, last)
}

/// Audit events of the JSON Lines file.
fn audit_events(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_traced_call_is_exported_with_its_upstream_span_and_audit_event() {
    let collector = Collector::start().await;
    let web = FixtureServer::http(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let gw = gateway(&collector, &web, &audit).await;
    let http = reqwest::Client::new();
    let url = gw.mcp_url();

    // A legacy session over Streamable HTTP, the caller's trace in the header.
    let (headers, init) = post(
        &http,
        &url,
        &[],
        json!({ "jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": { "name": "tracing-test", "version": "0" } } }),
    )
    .await;
    assert!(init.get("result").is_some(), "{init}");
    let session = headers["mcp-session-id"].to_str().unwrap().to_owned();
    let in_session = [
        ("mcp-session-id", session.as_str()),
        ("mcp-protocol-version", "2025-11-25"),
    ];
    post(
        &http,
        &url,
        &in_session,
        json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }),
    )
    .await;
    let traceparent = format!("00-{T1}-{P1}-01");
    let mut with_trace = in_session.to_vec();
    with_trace.push(("traceparent", &traceparent));
    with_trace.push(("tracestate", "caller=1"));
    let (_, answer) = post(
        &http,
        &url,
        &with_trace,
        json!({ "jsonrpc": "2.0", "id": 2, "method": "tools/call",
            "params": { "name": "alpha__echo", "arguments": { "text": "s3cret-argument" } } }),
    )
    .await;
    assert_eq!(first_text(&answer["result"]), "s3cret-argument", "{answer}");

    // The server span continues the caller's trace, under the caller's span.
    let server = collector
        .wait("the tools/call server span", |r| {
            r.spans
                .iter()
                .find(|s| hex(&s.trace_id) == T1 && s.kind == SpanKind::Server as i32)
                .cloned()
        })
        .await;
    assert_eq!(server.name, "tools/call alpha__echo");
    assert_eq!(hex(&server.parent_span_id), P1);
    let a = &server.attributes;
    assert_eq!(attr_str(a, "mcp.method.name"), Some("tools/call"));
    assert_eq!(attr_str(a, "gen_ai.tool.name"), Some("alpha__echo"));
    assert_eq!(attr_str(a, "gen_ai.operation.name"), Some("execute_tool"));
    assert_eq!(attr_str(a, "mcp.session.id"), Some(session.as_str()));
    assert_eq!(attr_str(a, "mcp.protocol.version"), Some("2025-11-25"));
    assert_eq!(attr_str(a, "jsonrpc.request.id"), Some("2"));
    assert_eq!(attr_str(a, "user.id"), Some("local"));
    assert_eq!(attr_str(a, "toolgate.server"), Some("alpha"));
    assert_eq!(attr_str(a, "toolgate.outcome"), Some("ok"));
    assert_eq!(attr_str(a, "client.address"), Some("127.0.0.1"));
    assert!(attr(a, "error.type").is_none());
    assert!(!strings(&server).contains("s3cret"), "{server:?}");

    // The upstream call is its child, named with the server's own tool name.
    let client = collector
        .wait("the upstream client span", |r| {
            r.spans
                .iter()
                .find(|s| s.parent_span_id == server.span_id && s.kind == SpanKind::Client as i32)
                .cloned()
        })
        .await;
    assert_eq!(hex(&client.trace_id), T1);
    assert_eq!(client.name, "tools/call echo");
    assert_eq!(
        attr_str(&client.attributes, "toolgate.server"),
        Some("alpha")
    );
    assert_eq!(
        attr_str(&client.attributes, "network.transport"),
        Some("pipe")
    );
    assert!(
        matches!(
            attr(&client.attributes, "toolgate.upstream.latency_ms"),
            Some(any_value::Value::DoubleValue(ms)) if *ms > 0.0
        ),
        "{:?}",
        client.attributes
    );
    assert!(!strings(&client).contains("s3cret"), "{client:?}");

    // The audit event carries the trace id, in the file and as an OTLP log record.
    // (The sinks get it within `commit_every` of the answer.)
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let event = loop {
        let found = audit_events(&audit)
            .into_iter()
            .find(|e| e["method"] == "tools/call");
        match found {
            Some(e) => break e,
            None if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            None => panic!("the call's audit event never reached the JSON Lines file"),
        }
    };
    assert_eq!(event["trace_id"], T1, "{event}");
    let record = collector
        .wait("the call's audit log record", |r| {
            r.logs
                .iter()
                .find(|l| attr_str(&l.attributes, "method") == Some("tools/call"))
                .cloned()
        })
        .await;
    assert_eq!(hex(&record.trace_id), T1);
    assert_eq!(record.event_name, "toolgate.audit.request");
    assert_eq!(attr_str(&record.attributes, "id"), event["id"].as_str());
    assert_eq!(attr_str(&record.attributes, "target"), Some("alpha__echo"));
    assert_eq!(attr_str(&record.attributes, "outcome"), Some("ok"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_modern_requests_meta_trace_wins_and_reaches_an_http_upstream() {
    let collector = Collector::start().await;
    let web = FixtureServer::http(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(&collector, &web, &dir.path().join("audit.jsonl")).await;
    let http = reqwest::Client::new();

    // `_meta` names one trace, the HTTP header another: `_meta` is the parent.
    let meta_parent = format!("00-{T2}-{P2}-01");
    let header_parent = format!("00-{T3}-{P1}-01");
    let (_, answer) = post(
        &http,
        &gw.mcp_url(),
        &[
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/call"),
            ("mcp-name", "web__trace_context"),
            ("traceparent", &header_parent),
        ],
        json!({ "jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {
            "name": "web__trace_context", "arguments": {},
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {},
                "traceparent": meta_parent,
                "tracestate": "caller=2",
            } } }),
    )
    .await;
    let seen: Value =
        serde_json::from_str(first_text(&answer["result"])).expect("the fixture's JSON");

    let server = collector
        .wait("the modern server span", |r| {
            r.spans
                .iter()
                .find(|s| hex(&s.trace_id) == T2 && s.kind == SpanKind::Server as i32)
                .cloned()
        })
        .await;
    assert_eq!(server.name, "tools/call web__trace_context");
    assert_eq!(hex(&server.parent_span_id), P2);
    assert!(attr(&server.attributes, "mcp.session.id").is_none());
    // The transport's context is kept as a link.
    assert!(
        server
            .links
            .iter()
            .any(|l| hex(&l.trace_id) == T3 && hex(&l.span_id) == P1),
        "{:?}",
        server.links
    );
    let client = collector
        .wait("the upstream client span", |r| {
            r.spans
                .iter()
                .find(|s| s.parent_span_id == server.span_id && s.kind == SpanKind::Client as i32)
                .cloned()
        })
        .await;
    assert_eq!(
        attr_str(&client.attributes, "network.transport"),
        Some("tcp")
    );

    // The upstream heard the gateway's client span, in the header and in `_meta`
    // (the fixture speaks 2026-07-28), never the caller's own span.
    let ours = format!("00-{T2}-{}-01", hex(&client.span_id));
    assert_eq!(seen["header"]["traceparent"], ours, "{seen}");
    assert_eq!(seen["meta"]["traceparent"], ours, "{seen}");
    assert_eq!(seen["meta"]["tracestate"], "caller=2", "{seen}");
    // The headers that mirror the body went with it, the name as the upstream knows it.
    assert_eq!(seen["header"]["mcp-method"], "tools/call", "{seen}");
    assert_eq!(seen["header"]["mcp-name"], "trace_context", "{seen}");
    assert_eq!(
        seen["header"]["mcp-protocol-version"], "2026-07-28",
        "{seen}"
    );
}
