//! Streamable HTTP transport (MCP 2025-03-26 and later): one POST per message,
//! answered with JSON or an SSE stream; a GET stream for what the server sends on
//! its own; `Mcp-Session-Id` and `MCP-Protocol-Version` on every request after
//! `initialize`; resumption of a broken response stream with `Last-Event-ID`.

use super::{Transport, TransportEvent, UpstreamError};
use crate::config::ServerConfig;
use crate::jsonrpc::{self, Id, Kind, Message};
use crate::sse;
use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use http_body_util::{BodyDataStream, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::proxy::matcher::Matcher;
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const SESSION_HEADER: HeaderName = HeaderName::from_static("mcp-session-id");
const VERSION_NAME: &str = "mcp-protocol-version";
const VERSION_HEADER: HeaderName = HeaderName::from_static(VERSION_NAME);
const JSON: HeaderValue = HeaderValue::from_static("application/json");
const JSON_OR_SSE: HeaderValue = HeaderValue::from_static("application/json, text/event-stream");
const MAX_RESUMES: u32 = 5;

/// One HTTP client for every upstream: connection pools are shared.
pub(crate) fn http_client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .expect("the HTTP client configuration is static")
    })
}

/// The client for POSTs to a plain-HTTP upstream that no proxy stands in front
/// of: hyper's own, pooled the same way. reqwest turns a request's URL into a
/// `Uri` and back into a `Url` for its redirect policy, two parses per call; a
/// POST here is sent to a `Uri` parsed once, when the upstream is opened.
/// HTTPS upstreams and proxied ones stay on [`http_client`], with its TLS and
/// proxy settings.
fn direct_client() -> &'static HyperClient<HttpConnector, Full<Bytes>> {
    static CLIENT: OnceLock<HyperClient<HttpConnector, Full<Bytes>>> = OnceLock::new();
    CLIENT.get_or_init(|| {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(10)));
        connector.set_nodelay(true);
        HyperClient::builder(hyper_util::rt::TokioExecutor::new())
            // Idle connections closed after 90 s, as reqwest's are.
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(connector)
    })
}

/// Where a POST to `url` can go on [`direct_client`]: a plain-HTTP URL without
/// credentials in it (reqwest would turn those into an `Authorization` header)
/// that none of the proxies in `proxies` takes (the environment's
/// `HTTP_PROXY`/`NO_PROXY`, which reqwest honours too).
fn direct_uri(url: &url::Url, proxies: &Matcher) -> Option<http::Uri> {
    if url.scheme() != "http" || !url.username().is_empty() || url.password().is_some() {
        return None;
    }
    let uri = http::Uri::try_from(url.as_str()).ok()?;
    proxies.intercept(&uri).is_none().then_some(uri)
}

pub(crate) fn configured_headers(
    name: &Arc<str>,
    cfg: &ServerConfig,
) -> Result<HeaderMap, UpstreamError> {
    let mut map = HeaderMap::new();
    for (k, v) in &cfg.headers {
        let bad = |what: &str| UpstreamError::Unavailable {
            server: name.clone(),
            reason: format!("configured header {k:?} has an invalid {what}"),
        };
        let key = HeaderName::from_bytes(k.as_bytes()).map_err(|_| bad("name"))?;
        let mut value = HeaderValue::from_str(v).map_err(|_| bad("value"))?;
        value.set_sensitive(true);
        map.insert(key, value);
    }
    Ok(map)
}

struct Http {
    name: Arc<str>,
    /// Parsed once: every POST would otherwise parse it again.
    url: url::Url,
    /// `url` for [`direct_client`], where POSTs can go there.
    direct: Option<http::Uri>,
    headers: HeaderMap,
    /// Header values, made once: each request clones them without copying.
    session: Mutex<Option<HeaderValue>>,
    version: Mutex<Option<HeaderValue>>,
    inbound: mpsc::Sender<TransportEvent>,
    max_message: usize,
    shutdown: CancellationToken,
    tool_headers: Arc<super::ToolHeaders>,
    /// Modern requests in flight: aborting one closes its response stream.
    modern_calls: Mutex<std::collections::HashMap<i64, tokio::task::AbortHandle>>,
}

pub fn open(
    name: &Arc<str>,
    cfg: &ServerConfig,
    max_message: usize,
    tool_headers: Arc<super::ToolHeaders>,
) -> Result<Transport, UpstreamError> {
    let url = url::Url::parse(cfg.url.as_deref().unwrap_or_default()).map_err(|e| {
        UpstreamError::Unavailable {
            server: name.clone(),
            reason: format!("invalid url: {e}"),
        }
    })?;
    let headers = configured_headers(name, cfg)?;
    let (out_tx, mut out_rx) = mpsc::channel::<Message>(256);
    let (in_tx, in_rx) = mpsc::channel(256);
    let shutdown = CancellationToken::new();
    let direct = direct_uri(&url, &Matcher::from_env());
    let http = Arc::new(Http {
        name: name.clone(),
        url,
        direct,
        headers,
        session: Mutex::new(None),
        version: Mutex::new(None),
        inbound: in_tx,
        max_message,
        shutdown: shutdown.clone(),
        tool_headers,
        modern_calls: Mutex::default(),
    });
    tokio::spawn(async move {
        loop {
            tokio::select! {
                msg = out_rx.recv() => {
                    let Some(msg) = msg else { break };
                    // 2026-07-28: closing a request's response stream is its
                    // cancellation; no notification is sent.
                    if msg.method() == "notifications/cancelled"
                        && let Some(id) = msg.param("requestId").and_then(serde_json::Value::as_i64)
                        && let Some(call) = lock(&http.modern_calls).remove(&id)
                    {
                        call.abort();
                        continue;
                    }
                    // The server must hear `initialized` before any request that
                    // follows it: separate POSTs can arrive in any order, so this
                    // one is sent in line, and what follows waits for its answer.
                    if msg.method() == "notifications/initialized" {
                        http.clone().post(msg).await;
                        continue;
                    }
                    let modern_id = match (&msg.id, is_modern(&msg)) {
                        (Some(Id::Num(n)), true) => Some(*n),
                        _ => None,
                    };
                    let task = http.clone();
                    let handle = tokio::spawn(async move {
                        task.clone().post(msg).await;
                        if let Some(id) = modern_id {
                            lock(&task.modern_calls).remove(&id);
                        }
                    });
                    if let Some(id) = modern_id
                        && !handle.is_finished()
                    {
                        lock(&http.modern_calls).insert(id, handle.abort_handle());
                    }
                }
                _ = http.shutdown.cancelled() => break,
            }
        }
        http.shutdown.cancel();
        http.end_session().await;
    });
    Ok(Transport {
        outbound: out_tx,
        inbound: in_rx,
        shutdown,
    })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Http {
    fn request(&self, method: reqwest::Method) -> reqwest::RequestBuilder {
        http_client()
            .request(method, self.url.clone())
            .headers(self.headers())
    }

    /// What every request carries: the configured headers, the session and the
    /// protocol version.
    fn headers(&self) -> HeaderMap {
        let mut headers = self.headers.clone();
        if let Some(s) = lock(&self.session).clone() {
            headers.insert(SESSION_HEADER, s);
        }
        if let Some(v) = lock(&self.version).clone() {
            headers.insert(VERSION_HEADER, v);
        }
        headers
    }

    async fn emit(&self, ev: TransportEvent) {
        let _ = self.inbound.send(ev).await;
    }

    async fn fail(&self, id: Option<i64>, error: UpstreamError) {
        match id {
            Some(id) => self.emit(TransportEvent::RequestFailed { id, error }).await,
            None => tracing::warn!(server = %self.name, "{error}"),
        }
    }

    async fn post(self: Arc<Self>, msg: Message) {
        let request_id = match (&msg.id, msg.kind()) {
            (Some(Id::Num(n)), Kind::Request) => Some(*n),
            _ => None,
        };
        let is_init = msg.method() == "initialize";
        let is_initialized = msg.method() == "notifications/initialized";
        let had_session = lock(&self.session).is_some();
        if is_initialized {
            // Open the GET stream before the server hears `initialized`: servers
            // often announce list changes right then, and with no stream open that
            // notification would be lost.
            let (ready, connected) = tokio::sync::oneshot::channel();
            tokio::spawn(self.clone().listen(ready));
            let _ = tokio::time::timeout(Duration::from_secs(2), connected).await;
        }
        // `Bytes`: the stale-connection retry below shares the body, not a copy.
        let body = bytes::Bytes::from(msg.to_json());
        let headers = || {
            let mut headers = self.modern_headers(&msg);
            if let Some(t) = &msg.trace {
                for (k, v) in t.pairs() {
                    if let Ok(v) = HeaderValue::from_str(v) {
                        headers.append(HeaderName::from_static(k), v);
                    }
                }
            }
            headers
        };
        let mut sent = self.send_post(&body, headers()).await;
        if let Err(e) = &sent
            && e.stale
        {
            // A pooled connection the server had already closed (it restarted, or
            // dropped an idle connection): nothing reached a live server, so one
            // retry on a fresh connection is safe — the rule Go's net/http applies.
            sent = self.send_post(&body, headers()).await;
        }
        let resp = match sent {
            Ok(r) => r,
            Err(e) => {
                let error = UpstreamError::Unavailable {
                    server: self.name.clone(),
                    reason: e.reason,
                };
                return self.fail(request_id, error).await;
            }
        };
        let status = resp.status();
        if status.as_u16() == 404 && had_session {
            let error = UpstreamError::SessionExpired {
                server: self.name.clone(),
            };
            return self.fail(request_id, error).await;
        }
        if !status.is_success() {
            let body = collect_limited(resp.chunks(), self.max_message).await;
            let body = String::from_utf8_lossy(body.as_deref().unwrap_or_default());
            // A 2026-07-28 server answers some errors (-32020…-32022, -32601) with
            // a 4xx status and a JSON-RPC error: that error is the answer.
            if let (Some(id), Ok(answer)) = (request_id, jsonrpc::parse(body.as_bytes()))
                && answer.error.is_some()
                && answer.id == Some(Id::Num(id))
            {
                return self.deliver(answer, request_id, is_init).await;
            }
            let error = UpstreamError::Http {
                server: self.name.clone(),
                status: status.as_u16(),
                body: body.chars().take(300).collect(),
            };
            return self.fail(request_id, error).await;
        }
        if is_init
            && let Some(sid) = resp
                .headers()
                .get(SESSION_HEADER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| HeaderValue::from_str(v).ok())
        {
            // A copy: the response's own value would keep its whole read buffer.
            *lock(&self.session) = Some(sid);
        }
        if status.as_u16() == 202 || request_id.is_none() {
            return;
        }
        let content_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        if content_type.starts_with("text/event-stream") {
            self.read_stream(resp, request_id, is_init).await;
        } else {
            match collect_limited(resp.chunks(), self.max_message).await {
                Ok(body) => self.deliver_body(&body, request_id, is_init).await,
                Err(reason) => {
                    let error = UpstreamError::Protocol {
                        server: self.name.clone(),
                        reason,
                    };
                    self.fail(request_id, error).await
                }
            }
        }
    }

    async fn send_post(&self, body: &Bytes, extra: HeaderMap) -> Result<Answer, PostError> {
        let mut headers = self.headers();
        headers.insert(CONTENT_TYPE, JSON);
        headers.insert(ACCEPT, JSON_OR_SSE);
        // Replaces what it names (a configured header included), as reqwest's
        // `headers` does.
        headers.extend(extra);
        let Some(uri) = &self.direct else {
            return http_client()
                .post(self.url.clone())
                .headers(headers)
                .body(body.clone())
                .send()
                .await
                .map(Answer::Reqwest)
                .map_err(|e| PostError {
                    stale: stale_connection(&e),
                    reason: describe(e),
                });
        };
        let mut req = http::Request::new(Full::new(body.clone()));
        *req.method_mut() = http::Method::POST;
        *req.uri_mut() = uri.clone();
        *req.headers_mut() = headers;
        direct_client()
            .request(req)
            .await
            .map(Answer::Direct)
            .map_err(|e| {
                let reason = error_chain(&e);
                PostError {
                    // Connecting failed, or a pooled connection the server had
                    // closed took the request (hyper's own retry covers the
                    // cases it can tell apart).
                    stale: e.is_connect() || reason.contains(CLOSED_EARLY),
                    reason,
                }
            })
    }

    /// A 2026-07-28 request mirrors its body into headers (version, method, name,
    /// the tool's `x-mcp-header` parameters); a legacy one gets none.
    fn modern_headers(&self, msg: &Message) -> HeaderMap {
        let mut out = HeaderMap::new();
        let Some(version) = msg
            .param("_meta")
            .and_then(|m| m.get("io.modelcontextprotocol/protocolVersion"))
            .and_then(serde_json::Value::as_str)
        else {
            return out;
        };
        let tools = self.tool_headers.read().unwrap_or_else(|p| p.into_inner());
        let tool = (msg.method() == "tools/call")
            .then(|| msg.param("name").and_then(serde_json::Value::as_str))
            .flatten()
            .and_then(|n| tools.get(n));
        let mirrored = crate::headers::mirror(msg.method(), msg.params.as_ref(), tool);
        let pairs = mirrored
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain([(VERSION_NAME, version)]);
        for (name, value) in pairs {
            match (HeaderName::try_from(name), HeaderValue::try_from(value)) {
                (Ok(name), Ok(value)) => {
                    out.append(name, value);
                }
                _ => {
                    tracing::warn!(server = %self.name, header = name, "not a valid HTTP header; not sent")
                }
            }
        }
        out
    }

    /// A JSON response body: one message, or (2025-03-26) an array of them.
    async fn deliver_body(&self, body: &[u8], origin: Option<i64>, is_init: bool) {
        let trimmed = body.trim_ascii_start();
        let messages: Vec<Message> = if trimmed.starts_with(b"[") {
            match serde_json::from_slice::<Vec<Box<serde_json::value::RawValue>>>(trimmed) {
                Ok(items) => items
                    .iter()
                    .filter_map(|raw| jsonrpc::parse(raw.get().as_bytes()).ok())
                    .collect(),
                Err(_) => Vec::new(),
            }
        } else {
            match jsonrpc::parse(trimmed) {
                Ok(m) => vec![m],
                Err(e) => {
                    let error = UpstreamError::Protocol {
                        server: self.name.clone(),
                        reason: format!("response body is not JSON-RPC: {e}"),
                    };
                    return self.fail(origin, error).await;
                }
            }
        };
        for msg in messages {
            self.deliver(msg, origin, is_init).await;
        }
    }

    async fn deliver(&self, msg: Message, origin: Option<i64>, is_init: bool) {
        if is_init
            && msg.kind() == Kind::Response
            && let Some(v) = msg
                .result
                .as_deref()
                .and_then(|r| serde_json::from_str::<serde_json::Value>(r.get()).ok())
                .and_then(|r| r.get("protocolVersion")?.as_str().map(str::to_owned))
        {
            *lock(&self.version) = HeaderValue::from_str(&v).ok();
        }
        self.emit(TransportEvent::Message { msg, origin }).await;
    }

    /// Read a response stream until the response to `origin` arrives, resuming with
    /// `Last-Event-ID` if the server closes it early.
    async fn read_stream(&self, resp: Answer, origin: Option<i64>, is_init: bool) {
        let mut resp = resp;
        let mut last_id: Option<String> = None;
        let mut retry = Duration::from_millis(200);
        for attempt in 0..=MAX_RESUMES {
            let mut events = Box::pin(sse::events(resp.chunks(), self.max_message));
            loop {
                let ev = tokio::select! {
                    ev = events.next() => ev,
                    _ = self.shutdown.cancelled() => return,
                };
                let Some(Ok(ev)) = ev else { break };
                if let Some(id) = ev.id {
                    last_id = Some(id);
                }
                if let Some(ms) = ev.retry_ms {
                    retry = Duration::from_millis(ms.min(30_000));
                }
                if ev.data.is_empty() {
                    continue;
                }
                match jsonrpc::parse(ev.data.as_bytes()) {
                    Ok(msg) => {
                        let done = msg.kind() == Kind::Response && msg.id == origin.map(Id::Num);
                        self.deliver(msg, origin, is_init).await;
                        if done {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(server = %self.name, "ignored a malformed SSE message: {e}")
                    }
                }
            }
            // The stream ended without the response.
            let Some(resume_from) = last_id.clone() else {
                break;
            };
            if attempt == MAX_RESUMES {
                break;
            }
            tokio::time::sleep(retry).await;
            let get = self
                .request(reqwest::Method::GET)
                .header(ACCEPT, "text/event-stream")
                .header("last-event-id", resume_from)
                .send()
                .await;
            match get {
                Ok(r) if r.status().is_success() => resp = Answer::Reqwest(r),
                _ => break,
            }
        }
        let error = UpstreamError::Closed {
            server: self.name.clone(),
            reason: "the response stream ended before the response".into(),
        };
        self.fail(origin, error).await;
    }

    /// The GET stream: server-initiated messages outside any request.
    async fn listen(self: Arc<Self>, ready: tokio::sync::oneshot::Sender<()>) {
        let mut ready = Some(ready);
        let mut last_id: Option<String> = None;
        let mut failures = 0u32;
        while !self.shutdown.is_cancelled() {
            let mut req = self
                .request(reqwest::Method::GET)
                .header(ACCEPT, "text/event-stream");
            if let Some(id) = &last_id {
                req = req.header("last-event-id", id);
            }
            let resp = tokio::select! {
                r = req.send() => r,
                _ = self.shutdown.cancelled() => return,
            };
            if let Some(r) = ready.take() {
                let _ = r.send(());
            }
            match resp {
                // 405: the server offers no GET stream; that is allowed.
                Ok(r) if r.status().as_u16() == 405 => return,
                Ok(r) if r.status().is_success() => {
                    failures = 0;
                    let mut events = Box::pin(sse::events(r.bytes_stream(), self.max_message));
                    loop {
                        let ev = tokio::select! {
                            ev = events.next() => ev,
                            _ = self.shutdown.cancelled() => return,
                        };
                        let Some(Ok(ev)) = ev else { break };
                        if ev.id.is_some() {
                            last_id = ev.id;
                        }
                        if ev.data.is_empty() {
                            continue;
                        }
                        if let Ok(msg) = jsonrpc::parse(ev.data.as_bytes()) {
                            self.deliver(msg, None, false).await;
                        }
                    }
                }
                Ok(r) if r.status().as_u16() == 404 => return,
                _ => failures += 1,
            }
            if failures > 5 {
                return;
            }
            let backoff = Duration::from_millis(250 * 2u64.pow(failures.min(6)));
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = self.shutdown.cancelled() => return,
            }
        }
    }

    async fn end_session(&self) {
        if lock(&self.session).is_none() {
            return;
        }
        let req = self.request(reqwest::Method::DELETE).send();
        let _ = tokio::time::timeout(Duration::from_secs(2), req).await;
    }
}

fn is_modern(msg: &Message) -> bool {
    msg.param("_meta")
        .and_then(|m| m.get("io.modelcontextprotocol/protocolVersion"))
        .is_some()
}

/// hyper's error for a connection that closed before its answer began.
const CLOSED_EARLY: &str = "connection closed before message completed";

/// Did the request fail on a connection that was already dead before it was used?
fn stale_connection(e: &reqwest::Error) -> bool {
    e.is_connect() || error_chain(e).contains(CLOSED_EARLY)
}

/// A POST that got no answer.
struct PostError {
    /// Nothing reached a live server: one retry is safe.
    stale: bool,
    /// For messages and logs (no URL in it).
    reason: String,
}

/// A POST's answer, from whichever client sent it.
enum Answer {
    Direct(http::Response<hyper::body::Incoming>),
    Reqwest(reqwest::Response),
}

impl Answer {
    fn status(&self) -> StatusCode {
        match self {
            Answer::Direct(r) => r.status(),
            Answer::Reqwest(r) => r.status(),
        }
    }

    fn headers(&self) -> &HeaderMap {
        match self {
            Answer::Direct(r) => r.headers(),
            Answer::Reqwest(r) => r.headers(),
        }
    }

    /// The body as it arrives.
    fn chunks(self) -> impl Stream<Item = Result<Bytes, String>> + Unpin {
        match self {
            Answer::Direct(r) => futures::future::Either::Left(
                BodyDataStream::new(r.into_body()).map_err(|e| error_chain(&e)),
            ),
            Answer::Reqwest(r) => {
                futures::future::Either::Right(r.bytes_stream().map_err(describe))
            }
        }
    }
}

/// A body of at most `max` bytes.
async fn collect_limited(
    mut stream: impl Stream<Item = Result<Bytes, String>> + Unpin,
    max: usize,
) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| format!("reading the response failed: {e}"))?;
        if body.len() + chunk.len() > max {
            return Err(format!("response larger than {max} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A request error for messages and logs. reqwest puts the URL in its errors, and
/// a configured URL may carry a credential in its query: leave it out.
pub(crate) fn describe(e: reqwest::Error) -> String {
    error_chain(&e.without_url())
}

/// A URL for messages and logs: no user info, no query, no fragment.
pub(crate) fn redact(url: &url::Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_query(None);
    shown.set_fragment(None);
    shown.to_string()
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> url::Url {
        url::Url::parse(s).unwrap()
    }

    #[test]
    fn only_plain_http_without_a_proxy_or_credentials_goes_direct() {
        let none = Matcher::builder().build();
        let uri = direct_uri(&url("http://127.0.0.1:8080/mcp?x=1"), &none).unwrap();
        assert_eq!(uri.to_string(), "http://127.0.0.1:8080/mcp?x=1");
        assert_eq!(direct_uri(&url("https://example.com/mcp"), &none), None);
        assert_eq!(direct_uri(&url("http://u:p@example.com/mcp"), &none), None);
        assert_eq!(direct_uri(&url("http://u@example.com/mcp"), &none), None);

        let proxied = Matcher::builder()
            .http("http://proxy.internal:3128")
            .no("localhost,10.0.0.0/8")
            .build();
        assert_eq!(direct_uri(&url("http://example.com/mcp"), &proxied), None);
        assert!(direct_uri(&url("http://localhost:9/mcp"), &proxied).is_some());
        assert!(direct_uri(&url("http://10.1.2.3/mcp"), &proxied).is_some());
    }
}
