//! A small MCP client for the end-to-end tests, speaking raw JSON-RPC over each downstream
//! transport toolgate serves: Streamable HTTP, legacy HTTP+SSE, and stdio.
//!
//! It is deliberately independent of toolgate's own code (its SSE parsing, its message types), so
//! a bug there cannot hide itself. It answers server→client requests (sampling, elicitation,
//! roots, ping) from a callback, keeps every notification it receives in order, and never waits
//! without a deadline.

use futures::StreamExt as _;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

/// How long one request may take before the test fails.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a test waits for a notification or server→client request it expects.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

/// The downstream transports toolgate serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    StreamableHttp,
    LegacySse,
    Stdio,
}

impl Transport {
    pub const ALL: [Transport; 3] = [
        Transport::StreamableHttp,
        Transport::LegacySse,
        Transport::Stdio,
    ];
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::StreamableHttp => "streamable-http client",
            Transport::LegacySse => "legacy-sse client",
            Transport::Stdio => "stdio client",
        })
    }
}

/// Answers a server→client request: `Ok(result)` or `Err(error object)`.
pub type Handler = Arc<dyn Fn(&str, &Value) -> Result<Value, Value> + Send + Sync>;

/// Adds to the HTTP client's setup, e.g. the roots and identity of a TLS client.
pub type HttpSetup = Arc<dyn Fn(reqwest::ClientBuilder) -> reqwest::ClientBuilder + Send + Sync>;

/// What a test client declares and how it answers the server.
#[derive(Clone)]
pub struct Options {
    pub protocol_version: String,
    pub capabilities: Value,
    pub handler: Handler,
    /// Sent as `Authorization: Bearer …` on every HTTP request.
    pub bearer: Option<String>,
    /// Applied to the HTTP client before it is built.
    pub http: Option<HttpSetup>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            protocol_version: "2025-11-25".into(),
            capabilities: json!({
                "sampling": {},
                "elicitation": {},
                "roots": { "listChanged": true },
            }),
            handler: Arc::new(default_handler),
            bearer: None,
            http: None,
        }
    }
}

/// The text a sampling request from [`default_handler`] answers for a prompt.
pub fn sampled(prompt: &str) -> String {
    format!("sampled: {prompt}")
}

/// A client that says yes: sampling echoes the prompt (see [`sampled`]), elicitation accepts
/// with a fixed user, roots are empty.
pub fn default_handler(method: &str, params: &Value) -> Result<Value, Value> {
    match method {
        "sampling/createMessage" => {
            let prompt = params
                .pointer("/messages/0/content/text")
                .and_then(Value::as_str)
                .unwrap_or("");
            Ok(json!({
                "role": "assistant",
                "content": { "type": "text", "text": sampled(prompt) },
                "model": "test-model",
                "stopReason": "endTurn",
            }))
        }
        "elicitation/create" => Ok(json!({
            "action": "accept",
            "content": { "username": "tester", "email": "tester@example.com" },
        })),
        "roots/list" => Ok(json!({ "roots": [] })),
        "ping" => Ok(json!({})),
        other => Err(json!({ "code": -32601, "message": format!("test client: no {other}") })),
    }
}

/// What the reader tasks hand the dispatcher, in arrival order.
enum Incoming {
    Message(Value),
    /// A Streamable HTTP POST response for this request id was read to its end.
    StreamEnded(String),
}

/// How messages leave the client.
enum Link {
    Http {
        url: String,
        session: Mutex<Option<String>>,
        version: Mutex<Option<String>>,
    },
    Sse {
        endpoint: String,
    },
    Stdio {
        lines: mpsc::Sender<String>,
    },
}

#[derive(Default)]
struct Seen {
    notifications: Vec<Value>,
    server_requests: Vec<Value>,
    ended_streams: HashSet<String>,
    /// Lines on a stdio server's stdout that are not JSON.
    garbage: Vec<String>,
}

struct Conn {
    label: String,
    http: reqwest::Client,
    link: Link,
    incoming: mpsc::UnboundedSender<Incoming>,
    pending: Mutex<HashMap<String, oneshot::Sender<Value>>>,
    seen: Mutex<Seen>,
    /// Bumped whenever `seen` changes.
    changed: watch::Sender<u64>,
    handler: Handler,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The key a JSON-RPC id is matched by (its JSON text, so `1` and `"1"` differ).
fn id_key(id: &Value) -> String {
    id.to_string()
}

pub struct Client {
    conn: Arc<Conn>,
    next_id: AtomicI64,
    /// The `initialize` result.
    pub init: Value,
    child: Option<tokio::process::Child>,
    stderr: Option<tempfile::NamedTempFile>,
}

impl Drop for Client {
    fn drop(&mut self) {
        for t in lock(&self.conn.tasks).drain(..) {
            t.abort();
        }
        if let Some(child) = &mut self.child {
            let _ = child.start_kill();
        }
        if std::thread::panicking()
            && let Some(f) = &self.stderr
        {
            let text = std::fs::read_to_string(f.path()).unwrap_or_default();
            eprintln!("--- stderr of {} ---\n{}", self.conn.label, tail(&text, 60));
        }
    }
}

/// The last `n` lines of a text.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn http_client(options: &Options) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = &options.bearer {
        let value = format!("Bearer {token}").parse().expect("a header value");
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    let builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .default_headers(headers);
    let builder = match &options.http {
        Some(setup) => setup(builder),
        None => builder,
    };
    builder.build().expect("the HTTP client builds")
}

impl Client {
    fn new(label: String, link: Link, options: &Options) -> (Arc<Conn>, Self) {
        let (tx, rx) = mpsc::unbounded_channel();
        let handler = options.handler.clone();
        let conn = Arc::new(Conn {
            label,
            http: http_client(options),
            link,
            incoming: tx,
            pending: Mutex::default(),
            seen: Mutex::default(),
            changed: watch::Sender::new(0),
            handler,
            tasks: Mutex::default(),
        });
        let dispatcher = tokio::spawn(dispatch(Arc::downgrade(&conn), rx));
        lock(&conn.tasks).push(dispatcher);
        let client = Client {
            conn: conn.clone(),
            next_id: AtomicI64::new(1),
            init: Value::Null,
            child: None,
            stderr: None,
        };
        (conn, client)
    }

    /// A Streamable HTTP session with the gateway at `base` (`http://host:port`).
    pub async fn http(base: &str, options: Options) -> Client {
        Client::http_at(&format!("{base}/mcp"), options).await
    }

    /// A Streamable HTTP session with the MCP endpoint at `url` (a full URL).
    pub async fn http_at(url: &str, options: Options) -> Client {
        let link = Link::Http {
            url: url.to_owned(),
            session: Mutex::default(),
            version: Mutex::default(),
        };
        let (conn, mut client) = Client::new(Transport::StreamableHttp.to_string(), link, &options);
        client.handshake(&options).await;
        // The session's own stream: notifications outside any request arrive here.
        let resp = conn
            .get_stream()
            .await
            .unwrap_or_else(|e| panic!("{}: GET /mcp failed: {e}", conn.label));
        let reader = tokio::spawn(read_events(conn.clone(), resp, None));
        lock(&conn.tasks).push(reader);
        client
    }

    /// A legacy HTTP+SSE session with the gateway at `base`.
    pub async fn sse(base: &str, options: Options) -> Client {
        let label = Transport::LegacySse.to_string();
        let resp = http_client(&options)
            .get(format!("{base}/sse"))
            .header("accept", "text/event-stream")
            .send()
            .await
            .unwrap_or_else(|e| panic!("{label}: GET /sse failed: {e}"));
        assert!(
            resp.status().is_success(),
            "{label}: GET /sse answered {}",
            resp.status()
        );
        let mut events = Box::pin(sse_events(resp));
        let first = tokio::time::timeout(EVENT_TIMEOUT, events.next())
            .await
            .unwrap_or_else(|_| panic!("{label}: no endpoint event"));
        let Some(Ok((Some(name), data))) = first else {
            panic!("{label}: the stream did not start with an event: {first:?}");
        };
        assert_eq!(name, "endpoint", "{label}: first event");
        let endpoint = reqwest::Url::parse(base)
            .and_then(|b| b.join(data.trim()))
            .unwrap_or_else(|e| panic!("{label}: bad endpoint {data:?}: {e}"))
            .to_string();
        let (conn, mut client) = Client::new(label, Link::Sse { endpoint }, &options);
        let reader = {
            let conn = conn.clone();
            tokio::spawn(async move {
                while let Some(Ok((name, data))) = events.next().await {
                    if name.as_deref().unwrap_or("message") == "message" {
                        conn.receive(&data);
                    }
                }
            })
        };
        lock(&conn.tasks).push(reader);
        client.handshake(&options).await;
        client
    }

    /// Start `program args…` and speak MCP over its stdin/stdout.
    pub async fn stdio(program: &Path, args: &[&str], options: Options) -> Client {
        let label = Transport::Stdio.to_string();
        let stderr = tempfile::NamedTempFile::new().expect("a temp file for stderr");
        let mut child = tokio::process::Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr.reopen().expect("reopen the stderr file"))
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("{label}: cannot start {}: {e}", program.display()));
        let (Some(mut stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            panic!("{label}: no pipes");
        };
        let (lines, mut rx) = mpsc::channel::<String>(64);
        let (conn, mut client) = Client::new(label, Link::Stdio { lines }, &options);
        client.child = Some(child);
        client.stderr = Some(stderr);
        let writer = tokio::spawn(async move {
            while let Some(mut line) = rx.recv().await {
                line.push('\n');
                if stdin.write_all(line.as_bytes()).await.is_err() {
                    return;
                }
                let _ = stdin.flush().await;
            }
        });
        let reader = {
            let conn = conn.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if !line.trim().is_empty() {
                        conn.receive(&line);
                    }
                }
            })
        };
        lock(&conn.tasks).extend([writer, reader]);
        client.handshake(&options).await;
        client
    }

    async fn handshake(&mut self, options: &Options) {
        let params = json!({
            "protocolVersion": options.protocol_version,
            "capabilities": options.capabilities,
            "clientInfo": { "name": "toolgate-e2e", "version": "0" },
        });
        let resp = self.request("initialize", params).await;
        let Some(result) = resp.get("result") else {
            panic!("{}: initialize failed: {resp}", self.label());
        };
        if let Link::Http { version, .. } = &self.conn.link {
            *lock(version) = result["protocolVersion"].as_str().map(str::to_owned);
        }
        self.init = result.clone();
        self.notify("notifications/initialized", None).await;
    }

    pub fn label(&self) -> &str {
        &self.conn.label
    }

    /// The `Mcp-Session-Id` of a Streamable HTTP client.
    pub fn session_id(&self) -> Option<String> {
        match &self.conn.link {
            Link::Http { session, .. } => lock(session).clone(),
            _ => None,
        }
    }

    fn mint_id(&self) -> Value {
        json!(self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    /// Send a request and return its id and a receiver for its whole response message.
    pub fn start_request(&self, method: &str, params: Value) -> (Value, oneshot::Receiver<Value>) {
        let id = self.mint_id();
        let (tx, rx) = oneshot::channel();
        lock(&self.conn.pending).insert(id_key(&id), tx);
        let mut msg = json!({ "jsonrpc": "2.0", "id": id, "method": method });
        if !params.is_null() {
            msg["params"] = params;
        }
        let conn = self.conn.clone();
        let key = id.clone();
        // Sending may take as long as the call (a POST whose body is the answer): never wait here.
        let sender = tokio::spawn(async move {
            if let Err(e) = conn.send(msg).await {
                let error =
                    json!({ "code": 0, "message": format!("test client could not send: {e}") });
                let resp = json!({ "jsonrpc": "2.0", "id": key, "error": error });
                let _ = conn.incoming.send(Incoming::Message(resp));
            }
        });
        lock(&self.conn.tasks).push(sender);
        (id, rx)
    }

    /// Send a request and wait for its response message (`result` or `error`).
    pub async fn request(&self, method: &str, params: Value) -> Value {
        let (id, rx) = self.start_request(method, params);
        match tokio::time::timeout(REQUEST_TIMEOUT, rx).await {
            Ok(Ok(resp)) => resp,
            Ok(Err(_)) => panic!("{}: {method} (id {id}): the client closed", self.label()),
            Err(_) => panic!(
                "{}: {method} (id {id}): no response within {REQUEST_TIMEOUT:?}",
                self.label()
            ),
        }
    }

    /// The `result` of a request; fails the test on an error response.
    pub async fn result(&self, method: &str, params: Value) -> Value {
        let resp = self.request(method, params).await;
        match resp.get("result") {
            Some(r) => r.clone(),
            None => panic!("{}: {method} failed: {resp}", self.label()),
        }
    }

    /// The `error` of a request; fails the test on a result.
    pub async fn error(&self, method: &str, params: Value) -> Value {
        let resp = self.request(method, params).await;
        match resp.get("error") {
            Some(e) => e.clone(),
            None => panic!("{}: {method} should have failed: {resp}", self.label()),
        }
    }

    pub async fn call_tool(&self, name: &str, arguments: Value) -> Value {
        self.result(
            "tools/call",
            json!({ "name": name, "arguments": arguments }),
        )
        .await
    }

    /// Every item of a list method, following `nextCursor` to the end.
    pub async fn list_all(&self, method: &str, field: &str) -> Vec<Value> {
        let mut items = Vec::new();
        let mut cursor: Option<Value> = None;
        for _ in 0..10_000 {
            let params = match &cursor {
                Some(c) => json!({ "cursor": c }),
                None => json!({}),
            };
            let page = self.result(method, params).await;
            items.extend(page[field].as_array().cloned().unwrap_or_default());
            match page.get("nextCursor") {
                Some(c) if !c.is_null() => cursor = Some(c.clone()),
                _ => return items,
            }
        }
        panic!("{}: {method} never ended", self.label());
    }

    pub async fn notify(&self, method: &str, params: Option<Value>) {
        let mut msg = json!({ "jsonrpc": "2.0", "method": method });
        if let Some(p) = params {
            msg["params"] = p;
        }
        if let Err(e) = self.conn.send(msg).await {
            panic!("{}: sending {method}: {e}", self.label());
        }
    }

    /// Every notification received so far, in order.
    pub fn notifications(&self) -> Vec<Value> {
        lock(&self.conn.seen).notifications.clone()
    }

    /// Every server→client request received so far, in order.
    pub fn server_requests(&self) -> Vec<Value> {
        lock(&self.conn.seen).server_requests.clone()
    }

    /// Lines a stdio server wrote to stdout that were not JSON.
    pub fn garbage(&self) -> Vec<String> {
        lock(&self.conn.seen).garbage.clone()
    }

    /// Wait until `ready` holds for what was seen; fail the test after [`EVENT_TIMEOUT`].
    async fn wait_seen<T>(&self, what: &str, ready: impl Fn(&Seen) -> Option<T>) -> T {
        let mut rx = self.conn.changed.subscribe();
        let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
        loop {
            if let Some(t) = ready(&lock(&self.conn.seen)) {
                return t;
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                let seen = lock(&self.conn.seen);
                panic!(
                    "{}: waited {EVENT_TIMEOUT:?} for {what}; notifications so far: {:?}",
                    self.label(),
                    seen.notifications
                );
            }
        }
    }

    /// The first notification (in arrival order) that matches.
    pub async fn wait_notification(&self, what: &str, matches: impl Fn(&Value) -> bool) -> Value {
        self.wait_seen(what, |s| {
            s.notifications.iter().find(|n| matches(n)).cloned()
        })
        .await
    }

    /// Wait until `count` notifications match; returns them in order.
    pub async fn wait_notifications(
        &self,
        what: &str,
        count: usize,
        matches: impl Fn(&Value) -> bool,
    ) -> Vec<Value> {
        self.wait_seen(what, |s| {
            let found: Vec<Value> = s
                .notifications
                .iter()
                .filter(|n| matches(n))
                .cloned()
                .collect();
            (found.len() >= count).then_some(found)
        })
        .await
    }

    /// Streamable HTTP: wait until the POST response stream of request `id` has ended.
    pub async fn wait_stream_ended(&self, id: &Value) {
        let key = id_key(id);
        self.wait_seen(
            &format!("the response stream of request {id} to end"),
            |s| s.ended_streams.contains(&key).then_some(()),
        )
        .await
    }

    /// End the session the way the transport does: DELETE, closing the stream, or closing stdin.
    pub async fn close(mut self) {
        let http_session = match &self.conn.link {
            Link::Http { url, session, .. } => lock(session).clone().map(|id| (url.clone(), id)),
            _ => None,
        };
        if let Some((url, id)) = http_session {
            let _ = tokio::time::timeout(
                REQUEST_TIMEOUT,
                self.conn
                    .http
                    .delete(&url)
                    .header("mcp-session-id", id)
                    .send(),
            )
            .await;
        }
        for t in lock(&self.conn.tasks).drain(..) {
            t.abort();
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, child.wait()).await;
        }
    }
}

impl Conn {
    fn bump(&self) {
        self.changed.send_modify(|v| *v += 1);
    }

    /// A message arrived on any stream of this client.
    fn receive(&self, text: &str) {
        match serde_json::from_str::<Value>(text) {
            Ok(v) => {
                let _ = self.incoming.send(Incoming::Message(v));
            }
            Err(_) => {
                lock(&self.seen).garbage.push(text.to_owned());
                self.bump();
            }
        }
    }

    async fn get_stream(&self) -> Result<reqwest::Response, String> {
        let Link::Http {
            url,
            session,
            version,
        } = &self.link
        else {
            return Err("not a Streamable HTTP client".into());
        };
        let mut req = self.http.get(url).header("accept", "text/event-stream");
        if let Some(s) = lock(session).clone() {
            req = req.header("mcp-session-id", s);
        }
        if let Some(v) = lock(version).clone() {
            req = req.header("mcp-protocol-version", v);
        }
        let resp = tokio::time::timeout(REQUEST_TIMEOUT, req.send())
            .await
            .map_err(|_| "timed out".to_owned())?
            .map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("HTTP {}", resp.status()));
        }
        Ok(resp)
    }

    /// Put one message on the wire. For Streamable HTTP this also reads what the POST answers.
    async fn send(self: &Arc<Self>, msg: Value) -> Result<(), String> {
        let text = msg.to_string();
        let request_id = msg
            .get("method")
            .and(msg.get("id"))
            .filter(|id| !id.is_null())
            .cloned();
        match &self.link {
            Link::Stdio { lines } => lines
                .send(text)
                .await
                .map_err(|_| "the stdio server is gone".to_owned()),
            Link::Sse { endpoint } => {
                let resp = tokio::time::timeout(
                    REQUEST_TIMEOUT,
                    self.http
                        .post(endpoint)
                        .header("content-type", "application/json")
                        .body(text)
                        .send(),
                )
                .await
                .map_err(|_| "POST timed out".to_owned())?
                .map_err(|e| e.to_string())?;
                let status = resp.status().as_u16();
                if status == 202 || resp.status().is_success() {
                    return Ok(());
                }
                let body = resp.text().await.unwrap_or_default();
                self.fail_request(request_id, status, &body)
            }
            Link::Http {
                url,
                session,
                version,
            } => {
                let mut req = self
                    .http
                    .post(url)
                    .header("content-type", "application/json")
                    .header("accept", "application/json, text/event-stream")
                    .body(text);
                if let Some(s) = lock(session).clone() {
                    req = req.header("mcp-session-id", s);
                }
                if let Some(v) = lock(version).clone() {
                    req = req.header("mcp-protocol-version", v);
                }
                let resp = tokio::time::timeout(REQUEST_TIMEOUT, req.send())
                    .await
                    .map_err(|_| "POST timed out".to_owned())?
                    .map_err(|e| e.to_string())?;
                let status = resp.status().as_u16();
                if let Some(s) = resp
                    .headers()
                    .get("mcp-session-id")
                    .and_then(|v| v.to_str().ok())
                {
                    *lock(session) = Some(s.to_owned());
                }
                if !resp.status().is_success() {
                    let body = resp.text().await.unwrap_or_default();
                    return self.fail_request(request_id, status, &body);
                }
                if status == 202 || request_id.is_none() {
                    if let Some(id) = request_id {
                        let _ = self.incoming.send(Incoming::StreamEnded(id_key(&id)));
                    }
                    return Ok(());
                }
                let content_type = resp
                    .headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                if content_type.starts_with("text/event-stream") {
                    read_events(self.clone(), resp, request_id).await;
                } else {
                    let body = resp.text().await.map_err(|e| e.to_string())?;
                    self.receive(&body);
                    if let Some(id) = request_id {
                        let _ = self.incoming.send(Incoming::StreamEnded(id_key(&id)));
                    }
                }
                Ok(())
            }
        }
    }

    /// An HTTP error for a request becomes its response, so the caller sees it at once.
    fn fail_request(&self, id: Option<Value>, status: u16, body: &str) -> Result<(), String> {
        let Some(id) = id else {
            return Err(format!("HTTP {status}: {body}"));
        };
        let parsed: Value = serde_json::from_str(body).unwrap_or(Value::String(body.into()));
        let error = parsed
            .get("error")
            .cloned()
            .unwrap_or_else(|| json!({ "code": 0, "message": format!("HTTP {status}: {body}") }));
        let resp = json!({ "jsonrpc": "2.0", "id": id, "error": error, "httpStatus": status });
        let _ = self.incoming.send(Incoming::Message(resp));
        Ok(())
    }
}

/// Read an SSE response to its end, handing each message to the dispatcher. `request` is the id of
/// the request whose POST this answers (Streamable HTTP), reported when the stream ends.
async fn read_events(conn: Arc<Conn>, resp: reqwest::Response, request: Option<Value>) {
    let mut events = Box::pin(sse_events(resp));
    while let Some(Ok((name, data))) = events.next().await {
        if name.as_deref().unwrap_or("message") == "message" && !data.trim().is_empty() {
            conn.receive(&data);
        }
    }
    if let Some(id) = request {
        let _ = conn.incoming.send(Incoming::StreamEnded(id_key(&id)));
    }
}

/// The events of an SSE body as (event name, data); comments and id-only events are skipped.
pub fn sse_events(
    resp: reqwest::Response,
) -> impl futures::Stream<Item = Result<(Option<String>, String), String>> {
    let state = (
        Box::pin(resp.bytes_stream()),
        Vec::<u8>::new(),
        None::<String>,
        Vec::<String>::new(),
    );
    futures::stream::unfold(
        state,
        |(mut body, mut buf, mut name, mut data)| async move {
            loop {
                if let Some(nl) = buf.iter().position(|&b| b == b'\n') {
                    let raw: Vec<u8> = buf.drain(..=nl).collect();
                    let line = String::from_utf8_lossy(&raw);
                    let line = line.trim_end_matches(['\n', '\r']);
                    if line.is_empty() {
                        let event = name.take();
                        if data.is_empty() {
                            continue;
                        }
                        let joined = std::mem::take(&mut data).join("\n");
                        return Some((Ok((event, joined)), (body, buf, name, data)));
                    }
                    let (field, value) = line.split_once(':').unwrap_or((line, ""));
                    let value = value.strip_prefix(' ').unwrap_or(value);
                    match field {
                        "event" => name = Some(value.to_owned()),
                        "data" => data.push(value.to_owned()),
                        _ => {}
                    }
                    continue;
                }
                match body.next().await {
                    Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
                    Some(Err(e)) => return Some((Err(e.to_string()), (body, buf, name, data))),
                    None => return None,
                }
            }
        },
    )
}

/// Route what arrives: responses to their callers, notifications to the log, server→client
/// requests to the handler (whose answer is sent back).
async fn dispatch(conn: std::sync::Weak<Conn>, mut rx: mpsc::UnboundedReceiver<Incoming>) {
    while let Some(item) = rx.recv().await {
        let Some(conn) = conn.upgrade() else { return };
        let msg = match item {
            Incoming::StreamEnded(key) => {
                lock(&conn.seen).ended_streams.insert(key);
                conn.bump();
                continue;
            }
            Incoming::Message(msg) => msg,
        };
        let id = msg.get("id").filter(|id| !id.is_null()).cloned();
        let method = msg.get("method").and_then(Value::as_str).map(str::to_owned);
        match (method, id) {
            (Some(method), Some(id)) => {
                lock(&conn.seen).server_requests.push(msg.clone());
                conn.bump();
                let params = msg.get("params").cloned().unwrap_or(Value::Null);
                let answer = match (conn.handler)(&method, &params) {
                    Ok(result) => json!({ "jsonrpc": "2.0", "id": id, "result": result }),
                    Err(error) => json!({ "jsonrpc": "2.0", "id": id, "error": error }),
                };
                let c = conn.clone();
                let task = tokio::spawn(async move {
                    if let Err(e) = c.send(answer).await {
                        eprintln!("{}: answering {method}: {e}", c.label);
                    }
                });
                lock(&conn.tasks).push(task);
            }
            (Some(_), None) => {
                lock(&conn.seen).notifications.push(msg);
                conn.bump();
            }
            (None, Some(id)) => {
                let waiter = lock(&conn.pending).remove(&id_key(&id));
                match waiter {
                    Some(tx) => {
                        let _ = tx.send(msg);
                    }
                    None => eprintln!("{}: a response nobody waits for: {msg}", conn.label),
                }
            }
            (None, None) => eprintln!(
                "{}: a message with neither id nor method: {msg}",
                conn.label
            ),
        }
    }
}
