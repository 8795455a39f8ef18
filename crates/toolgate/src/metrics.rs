//! Prometheus metrics: what the gateway counts and times, and the text the
//! admin listener serves at `/metrics`.
//!
//! Requests are recorded from their finished audit event (`record`), so the
//! numbers and the trail never disagree about what happened and the hot path
//! builds nothing new: the labels are borrowed from the event, and each
//! combination of labels resolves to its handles once, then costs a read lock
//! and a hash lookup. Gauges that describe state (sessions, upstream health,
//! the audit queue) are read when scraped instead of being kept up to date.
//!
//! Labels stay bounded: methods outside MCP's own are `other`, a tool or
//! prompt name comes from the catalog (a name no catalog item has is
//! `unknown`), and nothing a caller is or sent (principal, arguments, URIs)
//! becomes a label.

use crate::audit::{Event, Verdict};
use crate::gateway::stream::StreamKind;
use crate::gateway::{Gateway, Status};
use indexmap::{Equivalent, IndexMap};
use metrics::{Counter, Histogram, Key, KeyName, Label, Metadata, Recorder as _, Unit};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};
use std::hash::{Hash, Hasher};
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

pub const REQUESTS: &str = "toolgate_requests_total";
pub const REQUEST_DURATION: &str = "toolgate_request_duration_seconds";
pub const GATEWAY_OVERHEAD: &str = "toolgate_gateway_overhead_seconds";
pub const UPSTREAM_DURATION: &str = "toolgate_upstream_duration_seconds";
pub const DENIALS: &str = "toolgate_denials_total";
pub const SESSIONS: &str = "toolgate_sessions_active";
pub const STREAMS: &str = "toolgate_streams_active";
pub const RESULT_CACHE: &str = "toolgate_result_cache_total";
pub const CIRCUIT_OPEN: &str = "toolgate_upstream_circuit_open";
pub const UPSTREAM_UP: &str = "toolgate_upstream_up";
pub const HEALTH_FAILURES: &str = "toolgate_upstream_health_failures";
pub const STDIO_CHILDREN: &str = "toolgate_stdio_children";
pub const AUDIT_QUEUED: &str = "toolgate_audit_queue_events";
pub const AUDIT_WRITTEN: &str = "toolgate_audit_events_written_total";
pub const AUDIT_DROPPED: &str = "toolgate_audit_events_dropped_total";
pub const AUDIT_REFUSED: &str = "toolgate_audit_refused_calls_total";
pub const AUDIT_SINK_ERRORS: &str = "toolgate_audit_sink_errors_total";
pub const BUILD_INFO: &str = "toolgate_build_info";
pub const LIMITED: &str = "toolgate_limited_total";
pub const LIMITER_KEYS: &str = "toolgate_limiter_keys";

/// The label of a tool or prompt call whose name no catalog item has: the
/// name itself is the caller's text and must not become a series.
pub const UNKNOWN: &str = "unknown";

/// Request latency buckets, in seconds: from a cached list to a slow tool.
const LATENCY_BUCKETS: &[f64] = &[
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];
/// The gateway's own share is expected well under a millisecond: finer buckets
/// there, or every request would land in the first one.
const OVERHEAD_BUCKETS: &[f64] = &[
    0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 1.0,
];

static INSTALLED: OnceLock<Metrics> = OnceLock::new();

/// The process's metrics, created on first use. Idempotent, so tests and
/// several gateways in one process share one registry instead of failing.
pub fn install() -> &'static Metrics {
    INSTALLED.get_or_init(|| {
        let m = Metrics::new();
        // Also the `metrics` facade's global recorder, so `metrics::counter!`
        // anywhere (ours or a dependency's) lands on the same page. Another
        // recorder already installed keeps its place; ours still serves
        // everything recorded through `Metrics`.
        if metrics::set_global_recorder(m.recorder.clone()).is_err() {
            tracing::debug!("a global metrics recorder was already installed");
        }
        m
    })
}

/// Record a finished request from its audit event; nothing until [`install`]
/// (a gateway without an admin listener pays one atomic load).
pub fn record(e: &Event) {
    if let Some(m) = INSTALLED.get() {
        m.request(e);
    }
}

/// Count a call (or stream) a limit refused: `rule` is the rule's id or the
/// setting's name, `kind` what was exceeded, `server` the call's server (all
/// from the config, never from the caller).
pub fn limited(rule: &str, kind: &'static str, server: &str) {
    if let Some(m) = INSTALLED.get() {
        m.limited(rule, kind, server);
    }
}

/// Count a call the result cache answered (`hit`) or had to forward.
pub fn result_cache(hit: bool) {
    if let Some(m) = INSTALLED.get() {
        m.result_cache(hit);
    }
}

/// A registry and the handles of the series recorded so far.
pub struct Metrics {
    recorder: Arc<PrometheusRecorder>,
    handle: PrometheusHandle,
    requests: RwLock<IndexMap<SeriesKey, Series>>,
    denials: RwLock<IndexMap<Box<str>, Counter>>,
    limited: RwLock<IndexMap<String, Counter>>,
    /// The result cache's hit and miss counters, registered on first use.
    result_cache: OnceLock<[Counter; 2]>,
}

/// The handles one finished request updates.
struct Series {
    total: Counter,
    duration: Histogram,
    overhead: Histogram,
    upstream: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A registry of its own (tests use this; the process uses [`install`]).
    pub fn new() -> Metrics {
        let builder = PrometheusBuilder::new()
            .set_buckets(LATENCY_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full(GATEWAY_OVERHEAD.into()), OVERHEAD_BUCKETS)
            });
        let recorder = match builder {
            Ok(b) => b.build_recorder(),
            // Only empty bucket lists fail, and ours are constants.
            Err(e) => {
                tracing::error!(error = %e, "histogram buckets rejected; exporting summaries");
                PrometheusBuilder::new().build_recorder()
            }
        };
        let m = Metrics {
            handle: recorder.handle(),
            recorder: Arc::new(recorder),
            requests: RwLock::default(),
            denials: RwLock::default(),
            limited: RwLock::default(),
            result_cache: OnceLock::new(),
        };
        m.describe();
        m.build_info();
        m
    }

    fn describe(&self) {
        let counters = [
            (
                REQUESTS,
                "Requests answered, by method, server, tool (or prompt) and outcome",
            ),
            (DENIALS, "Requests denied, by reason code"),
            (
                LIMITED,
                "Calls and streams refused by a limit, by rule, kind and server",
            ),
            (AUDIT_WRITTEN, "Audit events written to every sink"),
            (
                AUDIT_DROPPED,
                "Audit events lost (buffer full with overflow: drop, or a sink failed)",
            ),
            (
                AUDIT_REFUSED,
                "Calls refused because the audit buffer stayed full (overflow: fail_closed)",
            ),
            (AUDIT_SINK_ERRORS, "Write failures of any audit sink"),
        ];
        for (name, help) in counters {
            self.recorder
                .describe_counter(KeyName::from_const_str(name), None, help.into());
        }
        let histograms = [
            (REQUEST_DURATION, "From a request's arrival to its answer"),
            (
                GATEWAY_OVERHEAD,
                "A request's duration less the time spent waiting for upstream servers",
            ),
            (
                UPSTREAM_DURATION,
                "Time a request spent waiting for upstream servers",
            ),
        ];
        for (name, help) in histograms {
            self.recorder.describe_histogram(
                KeyName::from_const_str(name),
                Some(Unit::Seconds),
                help.into(),
            );
        }
        let gauges = [
            (SESSIONS, "Open legacy (Mcp-Session-Id) sessions"),
            (
                STREAMS,
                "Response streams open to clients, by kind (request, listen, legacy)",
            ),
            (
                UPSTREAM_UP,
                "1 while an upstream server is ready, 0 otherwise",
            ),
            (
                STDIO_CHILDREN,
                "stdio child processes alive (the cap is max_children)",
            ),
            (
                AUDIT_QUEUED,
                "Audit events waiting for the writer (sink lag)",
            ),
            (BUILD_INFO, "Always 1; the version is a label"),
            (
                LIMITER_KEYS,
                "Rate-limit, quota and concurrency budgets remembered in this process",
            ),
        ];
        for (name, help) in gauges {
            self.recorder
                .describe_gauge(KeyName::from_const_str(name), None, help.into());
        }
    }

    fn build_info(&self) {
        let key = Key::from_parts(
            BUILD_INFO,
            vec![Label::from_static_parts(
                "version",
                env!("CARGO_PKG_VERSION"),
            )],
        );
        self.recorder.register_gauge(&key, &META).set(1.0);
    }

    /// Count and time one finished request (an event of kind `request`).
    pub fn request(&self, e: &Event) {
        let method = method_label(e.method.as_deref().unwrap_or(""));
        let server = e.server.as_deref().unwrap_or("");
        let tool = tool_label(method, e.target.as_deref());
        let outcome = e.outcome.map_or(UNKNOWN, |o| o.as_str());
        let wanted = SeriesRef {
            method,
            outcome,
            server,
            tool,
        };
        let total = seconds(e.latency_us);
        let upstream = e.upstream_us.map(|us| seconds(Some(us)));
        let observe = |s: &Series| {
            s.total.increment(1);
            s.duration.record(total);
            s.overhead
                .record((total - upstream.unwrap_or(0.0)).max(0.0));
            if let Some(u) = upstream {
                s.upstream.record(u);
            }
        };
        let hit = read(&self.requests).get(&wanted).map(observe);
        if hit.is_none() {
            let mut all = write(&self.requests);
            let s = match all.get_index_of(&wanted) {
                Some(i) => &all[i],
                None => {
                    let series = self.series(&wanted);
                    let (i, _) = all.insert_full(wanted.to_key(), series);
                    &all[i]
                }
            };
            observe(s);
        }
        if e.decision == Some(Verdict::Deny) {
            self.denial(e.reason_code.as_deref().unwrap_or(UNKNOWN));
        }
    }

    fn denial(&self, reason: &str) {
        if let Some(c) = read(&self.denials).get(reason) {
            c.increment(1);
            return;
        }
        let key = Key::from_parts(DENIALS, vec![Label::new("reason", reason.to_owned())]);
        let counter = self.recorder.register_counter(&key, &META);
        counter.increment(1);
        write(&self.denials).insert(reason.into(), counter);
    }

    /// Count one lookup of the result cache.
    pub fn result_cache(&self, hit: bool) {
        let [hits, misses] = self.result_cache.get_or_init(|| {
            ["hit", "miss"].map(|outcome| {
                let labels = vec![Label::from_static_parts("outcome", outcome)];
                self.recorder
                    .register_counter(&Key::from_parts(RESULT_CACHE, labels), &META)
            })
        });
        if hit { hits } else { misses }.increment(1);
    }

    /// Count one refusal by a limit.
    pub fn limited(&self, rule: &str, kind: &'static str, server: &str) {
        // The cache key joins the labels with a byte no config name contains.
        let id = format!("{rule}\u{0}{kind}\u{0}{server}");
        if let Some(c) = read(&self.limited).get(&id) {
            c.increment(1);
            return;
        }
        let labels = vec![
            Label::new("rule", rule.to_owned()),
            Label::from_static_parts("kind", kind),
            Label::new("server", server.to_owned()),
        ];
        let counter = self
            .recorder
            .register_counter(&Key::from_parts(LIMITED, labels), &META);
        counter.increment(1);
        write(&self.limited).insert(id, counter);
    }

    fn series(&self, s: &SeriesRef<'_>) -> Series {
        let by_call = || {
            vec![
                Label::from_static_parts("method", s.method),
                Label::new("server", s.server.to_owned()),
            ]
        };
        let mut labels = by_call();
        labels.push(Label::new("tool", s.tool.to_owned()));
        labels.push(Label::from_static_parts("outcome", s.outcome));
        let histogram = |name: &'static str| {
            self.recorder
                .register_histogram(&Key::from_parts(name, by_call()), &META)
        };
        Series {
            total: self
                .recorder
                .register_counter(&Key::from_parts(REQUESTS, labels), &META),
            duration: histogram(REQUEST_DURATION),
            overhead: histogram(GATEWAY_OVERHEAD),
            upstream: histogram(UPSTREAM_DURATION),
        }
    }

    /// The Prometheus text exposition of everything, with the gateway's
    /// current state read now.
    pub fn render(&self, gw: &Gateway) -> String {
        self.observe_state(gw);
        self.handle.render()
    }

    fn observe_state(&self, gw: &Gateway) {
        let gauge = |name: &'static str, labels: Vec<Label>, v: f64| {
            self.recorder
                .register_gauge(&Key::from_parts(name, labels), &META)
                .set(v);
        };
        gauge(SESSIONS, Vec::new(), gw.sessions.len() as f64);
        for kind in StreamKind::ALL {
            gauge(
                STREAMS,
                vec![Label::new("kind", kind.as_str())],
                gw.streams.count(kind) as f64,
            );
        }
        for up in gw.servers.iter().filter(|u| u.circuit.is_configured()) {
            gauge(
                CIRCUIT_OPEN,
                vec![Label::new("server", up.name.to_string())],
                if up.circuit.is_tripped() { 1.0 } else { 0.0 },
            );
        }
        for up in gw
            .servers
            .iter()
            .filter(|u| !u.cfg().health.interval.0.is_zero())
        {
            gauge(
                HEALTH_FAILURES,
                vec![Label::new("server", up.name.to_string())],
                f64::from(up.health().failures),
            );
        }
        for up in &gw.servers {
            let ready = matches!(up.status(), Status::Ready);
            gauge(
                UPSTREAM_UP,
                vec![Label::new("server", up.name.to_string())],
                if ready { 1.0 } else { 0.0 },
            );
        }
        gauge(LIMITER_KEYS, Vec::new(), gw.limits.limiter().keys() as f64);
        gauge(STDIO_CHILDREN, Vec::new(), gw.children.live() as f64);
        let stats = &gw.audit.stats;
        gauge(
            AUDIT_QUEUED,
            Vec::new(),
            stats.queued.load(Ordering::Relaxed) as f64,
        );
        // The trail keeps its own atomics (it works without metrics); they are
        // totals since start, which is what a Prometheus counter is.
        for (name, value) in [
            (AUDIT_WRITTEN, &stats.written),
            (AUDIT_DROPPED, &stats.dropped),
            (AUDIT_REFUSED, &stats.refused),
            (AUDIT_SINK_ERRORS, &stats.sink_errors),
        ] {
            self.recorder
                .register_counter(&Key::from_name(name), &META)
                .absolute(value.load(Ordering::Relaxed));
        }
    }

    /// Fold recorded histogram samples into their buckets. Without it samples
    /// pile up between scrapes (or forever, with no scraper): run it every few
    /// seconds.
    pub fn upkeep(&self) {
        self.handle.run_upkeep();
    }

    /// How often [`Metrics::upkeep`] should run.
    pub const UPKEEP_EVERY: Duration = Duration::from_secs(5);
}

static META: Metadata<'static> =
    Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

/// MCP's own methods as themselves; anything else a client sends is `other`,
/// so a caller cannot mint series.
fn method_label(method: &str) -> &'static str {
    match method {
        "initialize" => "initialize",
        "ping" => "ping",
        "tools/list" => "tools/list",
        "tools/call" => "tools/call",
        "prompts/list" => "prompts/list",
        "prompts/get" => "prompts/get",
        "resources/list" => "resources/list",
        "resources/templates/list" => "resources/templates/list",
        "resources/read" => "resources/read",
        "resources/subscribe" => "resources/subscribe",
        "resources/unsubscribe" => "resources/unsubscribe",
        "completion/complete" => "completion/complete",
        "logging/setLevel" => "logging/setLevel",
        "tasks/get" => "tasks/get",
        "tasks/result" => "tasks/result",
        "tasks/cancel" => "tasks/cancel",
        "tasks/update" => "tasks/update",
        "tasks/list" => "tasks/list",
        "server/discover" => "server/discover",
        "subscriptions/listen" => "subscriptions/listen",
        _ => "other",
    }
}

/// The tool or prompt of a call: the gateway notes a target only once the
/// catalog knows the name, so a call without one named something unknown.
/// Other methods' targets are resource URIs, unbounded: no label.
fn tool_label<'a>(method: &str, target: Option<&'a str>) -> &'a str {
    match method {
        "tools/call" | "prompts/get" => target.unwrap_or(UNKNOWN),
        _ => "",
    }
}

fn seconds(us: Option<i64>) -> f64 {
    us.unwrap_or(0).max(0) as f64 / 1e6
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|p| p.into_inner())
}

/// The labels of a request series, owned (the cache's key)…
#[derive(PartialEq, Eq)]
struct SeriesKey {
    method: &'static str,
    outcome: &'static str,
    server: Box<str>,
    tool: Box<str>,
}

/// …and borrowed from an event, to look one up without allocating.
struct SeriesRef<'a> {
    method: &'static str,
    outcome: &'static str,
    server: &'a str,
    tool: &'a str,
}

impl SeriesRef<'_> {
    fn to_key(&self) -> SeriesKey {
        SeriesKey {
            method: self.method,
            outcome: self.outcome,
            server: self.server.into(),
            tool: self.tool.into(),
        }
    }
}

// Both hash the same four strings in the same order, as `Equivalent` needs.
impl Hash for SeriesKey {
    fn hash<H: Hasher>(&self, h: &mut H) {
        (self.method, self.outcome, &*self.server, &*self.tool).hash(h);
    }
}

impl Hash for SeriesRef<'_> {
    fn hash<H: Hasher>(&self, h: &mut H) {
        (self.method, self.outcome, self.server, self.tool).hash(h);
    }
}

impl Equivalent<SeriesKey> for SeriesRef<'_> {
    fn equivalent(&self, k: &SeriesKey) -> bool {
        self.method == k.method
            && self.outcome == k.outcome
            && self.server == &*k.server
            && self.tool == &*k.tool
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{EventKind, Outcome};

    fn call(tool: Option<&str>, outcome: Outcome, latency_us: i64, upstream_us: i64) -> Event {
        let mut e = Event::new(EventKind::Request);
        e.method = Some("tools/call".into());
        e.server = tool.map(|_| "fx".into());
        e.target = tool.map(str::to_owned);
        e.outcome = Some(outcome);
        e.latency_us = Some(latency_us);
        e.upstream_us = (upstream_us > 0).then_some(upstream_us);
        e
    }

    /// The value of the one sample line that starts with `series`.
    fn sample(text: &str, series: &str) -> f64 {
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .collect();
        assert_eq!(lines.len(), 1, "one {series} in\n{text}");
        lines[0][series.len()..].trim().parse().unwrap()
    }

    #[test]
    fn requests_are_counted_and_timed_by_their_labels() {
        let m = Metrics::new();
        m.request(&call(Some("fx__echo"), Outcome::Ok, 3_000, 2_000));
        m.request(&call(Some("fx__echo"), Outcome::Ok, 5_000, 4_000));
        m.request(&call(Some("fx__echo"), Outcome::ToolError, 1_000, 900));
        let text = m.handle.render();
        let ok = r#"toolgate_requests_total{method="tools/call",server="fx",tool="fx__echo",outcome="ok"}"#;
        assert_eq!(sample(&text, ok), 2.0);
        let failed = r#"toolgate_requests_total{method="tools/call",server="fx",tool="fx__echo",outcome="tool_error"}"#;
        assert_eq!(sample(&text, failed), 1.0);
        let by = r#"{method="tools/call",server="fx"}"#;
        assert_eq!(sample(&text, &format!("{REQUEST_DURATION}_count{by}")), 3.0);
        assert!((sample(&text, &format!("{REQUEST_DURATION}_sum{by}")) - 0.009).abs() < 1e-9);
        assert!((sample(&text, &format!("{UPSTREAM_DURATION}_sum{by}")) - 0.0069).abs() < 1e-9);
        // 1 ms, 1 ms and 0.1 ms of the gateway's own.
        assert!((sample(&text, &format!("{GATEWAY_OVERHEAD}_sum{by}")) - 0.0021).abs() < 1e-9);
        let fine = r#"toolgate_gateway_overhead_seconds_bucket{method="tools/call",server="fx",le="0.00025"}"#;
        assert_eq!(sample(&text, fine), 1.0);
    }

    #[test]
    fn caller_text_never_becomes_a_label() {
        let m = Metrics::new();
        // An unknown tool: the gateway noted no target.
        m.request(&call(None, Outcome::Error, 100, 0));
        let mut odd = call(None, Outcome::Error, 100, 0);
        odd.method = Some("x/made-up-by-the-client".into());
        odd.target = Some("file:///etc/passwd".into());
        m.request(&odd);
        let mut read = call(Some("fx"), Outcome::Ok, 100, 50);
        read.method = Some("resources/read".into());
        read.target = Some("file:///secret/report.txt".into());
        m.request(&read);
        let text = m.handle.render();
        assert_eq!(
            sample(
                &text,
                r#"toolgate_requests_total{method="tools/call",server="",tool="unknown",outcome="error"}"#
            ),
            1.0
        );
        assert_eq!(
            sample(
                &text,
                r#"toolgate_requests_total{method="other",server="",tool="",outcome="error"}"#
            ),
            1.0
        );
        assert!(!text.contains("made-up"), "{text}");
        assert!(
            !text.contains("passwd") && !text.contains("secret"),
            "{text}"
        );
    }

    #[test]
    fn denials_count_by_reason() {
        let m = Metrics::new();
        for code in ["no_permit", "no_permit", "forbidden"] {
            let mut e = call(Some("fx__echo"), Outcome::Error, 100, 0);
            e.decision = Some(Verdict::Deny);
            e.reason_code = Some(code.into());
            m.request(&e);
        }
        m.request(&call(Some("fx__echo"), Outcome::Ok, 100, 50));
        let text = m.handle.render();
        assert_eq!(
            sample(&text, r#"toolgate_denials_total{reason="no_permit"}"#),
            2.0
        );
        assert_eq!(
            sample(&text, r#"toolgate_denials_total{reason="forbidden"}"#),
            1.0
        );
    }

    #[test]
    fn limit_refusals_count_by_rule_kind_and_server() {
        let m = Metrics::new();
        m.limited("refunds", "rate", "payments");
        m.limited("refunds", "rate", "payments");
        m.limited("max_result_bytes", "result_size", "fx");
        let text = m.handle.render();
        assert_eq!(
            sample(
                &text,
                r#"toolgate_limited_total{rule="refunds",kind="rate",server="payments"}"#
            ),
            2.0
        );
        assert_eq!(
            sample(
                &text,
                r#"toolgate_limited_total{rule="max_result_bytes",kind="result_size",server="fx"}"#
            ),
            1.0
        );
    }

    #[test]
    fn installing_twice_is_one_registry() {
        let a: *const Metrics = install();
        let b: *const Metrics = install();
        assert_eq!(a, b);
    }

    #[test]
    fn a_lookup_finds_what_was_inserted() {
        use std::collections::hash_map::DefaultHasher;
        let r = SeriesRef {
            method: "tools/call",
            outcome: "ok",
            server: "fx",
            tool: "fx__echo",
        };
        let hash = |v: &dyn Fn(&mut DefaultHasher)| {
            let mut h = DefaultHasher::new();
            v(&mut h);
            h.finish()
        };
        assert_eq!(hash(&|h| r.hash(h)), hash(&|h| r.to_key().hash(h)));
        assert!(r.equivalent(&r.to_key()));
    }
}
