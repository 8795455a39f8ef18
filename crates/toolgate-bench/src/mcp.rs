//! The benchmark's MCP client: just enough of the protocol to drive a server properly —
//! `initialize`, `notifications/initialized`, `Mcp-Session-Id`, `MCP-Protocol-Version`, JSON or
//! SSE responses — over Streamable HTTP, and a pipelining client for a stdio server.
//!
//! The load path (`Session::send`) sends a prepared body and checks the answer is a result
//! without parsing it into a tree, so the client costs the same whichever server it measures.

use anyhow::{Context as _, anyhow, bail};
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::sync::{mpsc, oneshot};

/// The revision the benchmark asks for: the latest of the session era.
pub const PROTOCOL_VERSION: &str = "2025-11-25";
const SESSION_HEADER: &str = "mcp-session-id";
const VERSION_HEADER: &str = "mcp-protocol-version";
const ACCEPT_BOTH: &str = "application/json, text/event-stream";

/// One HTTP client for a measurement: a small pool of keep-alive connections that every
/// session reuses (sessions are ids, not connections). `headers` go on every request.
pub fn http_client(headers: &[(&'static str, String)]) -> anyhow::Result<reqwest::Client> {
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        map.insert(HeaderName::from_static(k), HeaderValue::from_str(v)?);
    }
    reqwest::Client::builder()
        .no_proxy()
        .default_headers(map)
        .tcp_nodelay(true)
        .pool_max_idle_per_host(256)
        .build()
        .context("building the HTTP client")
}

fn next_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A legacy-era (session) MCP session over Streamable HTTP.
#[derive(Clone)]
pub struct Session {
    client: reqwest::Client,
    url: Arc<str>,
    id: HeaderValue,
    version: HeaderValue,
}

impl Session {
    /// `initialize`, then `notifications/initialized`.
    pub async fn open(client: &reqwest::Client, url: &str) -> anyhow::Result<Session> {
        let init = json!({
            "jsonrpc": "2.0",
            "id": next_id(),
            "method": "initialize",
            "params": {
                "protocolVersion": PROTOCOL_VERSION,
                "capabilities": {},
                "clientInfo": { "name": "toolgate-bench", "version": env!("CARGO_PKG_VERSION") },
            },
        });
        let resp = client
            .post(url)
            .header(ACCEPT, ACCEPT_BOTH)
            .header(CONTENT_TYPE, "application/json")
            .body(init.to_string())
            .send()
            .await
            .with_context(|| format!("initialize at {url}"))?;
        let id = resp
            .headers()
            .get(SESSION_HEADER)
            .cloned()
            .context("initialize: no Mcp-Session-Id in the answer")?;
        let result = result_of(&read_message(resp).await?)?;
        let version = result
            .get("protocolVersion")
            .and_then(Value::as_str)
            .context("initialize: no protocolVersion")?;
        let session = Session {
            client: client.clone(),
            url: url.into(),
            id,
            version: HeaderValue::from_str(version)?,
        };
        session.notify("notifications/initialized").await?;
        Ok(session)
    }

    fn post(&self, body: String) -> reqwest::RequestBuilder {
        self.client
            .post(&*self.url)
            .header(ACCEPT, ACCEPT_BOTH)
            .header(CONTENT_TYPE, "application/json")
            .header(SESSION_HEADER, self.id.clone())
            .header(VERSION_HEADER, self.version.clone())
            .body(body)
    }

    pub async fn notify(&self, method: &str) -> anyhow::Result<()> {
        let body = json!({ "jsonrpc": "2.0", "method": method }).to_string();
        let resp = self.post(body).send().await?;
        let status = resp.status();
        if !status.is_success() {
            bail!("{method}: HTTP {status}");
        }
        Ok(())
    }

    /// A request; its result, or an error saying what came back instead.
    pub async fn request(&self, method: &str, params: Value) -> anyhow::Result<Value> {
        let body = json!({ "jsonrpc": "2.0", "id": next_id(), "method": method, "params": params });
        let resp = self.post(body.to_string()).send().await?;
        result_of(&read_message(resp).await.context(method.to_owned())?)
    }

    /// Every tool, following `nextCursor` through all pages.
    pub async fn list_tools(&self) -> anyhow::Result<Vec<Value>> {
        let mut tools = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let params = match &cursor {
                Some(c) => json!({ "cursor": c }),
                None => json!({}),
            };
            let page = self.request("tools/list", params).await?;
            if let Some(items) = page.get("tools").and_then(Value::as_array) {
                tools.extend(items.iter().cloned());
            }
            match page.get("nextCursor").and_then(Value::as_str) {
                Some(c) => cursor = Some(c.to_owned()),
                None => return Ok(tools),
            }
        }
    }

    /// Send a prepared request body; Ok only if the answer is a result. The load path.
    pub async fn send(&self, body: String) -> anyhow::Result<()> {
        let resp = self.post(body).send().await?;
        let is_sse = is_sse(resp.headers());
        let status = resp.status();
        let bytes = resp.bytes().await?;
        if !status.is_success() {
            bail!("HTTP {status}: {}", snippet(&bytes));
        }
        let message = if is_sse {
            last_sse_message(&bytes).context("SSE answer without a response")?
        } else {
            &bytes[..]
        };
        // A response with a result, not an error (the echoed text never holds this key).
        if message.windows(9).any(|w| w == b"\"result\":") {
            Ok(())
        } else {
            Err(anyhow!("not a result: {}", snippet(message)))
        }
    }
}

fn is_sse(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("text/event-stream"))
}

fn snippet(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).into_owned()
}

/// The JSON-RPC response in an answer: the body itself, or the last response event of an SSE
/// body (notifications and priming events before it are skipped).
async fn read_message(resp: reqwest::Response) -> anyhow::Result<Value> {
    let status = resp.status();
    let is_sse = is_sse(resp.headers());
    let bytes = resp.bytes().await?;
    if !status.is_success() {
        bail!("HTTP {status}: {}", snippet(&bytes));
    }
    let message = if is_sse {
        last_sse_message(&bytes).context("SSE answer without a response")?
    } else {
        &bytes[..]
    };
    serde_json::from_slice(message).with_context(|| format!("not JSON: {}", snippet(message)))
}

/// The data of the last SSE event that is a JSON-RPC response (has a result or an error).
fn last_sse_message(body: &[u8]) -> Option<&[u8]> {
    body.split(|&b| b == b'\n')
        .filter_map(|line| line.strip_prefix(b"data:"))
        .map(|d| d.trim_ascii())
        .rfind(|d| {
            d.windows(9).any(|w| w == b"\"result\":") || d.windows(8).any(|w| w == b"\"error\":")
        })
}

fn result_of(message: &Value) -> anyhow::Result<Value> {
    if let Some(e) = message.get("error") {
        bail!("error response: {e}");
    }
    message
        .get("result")
        .cloned()
        .with_context(|| format!("no result in {message}"))
}

/// A `tools/call` body for `tool` with a `text` argument, with JSON-RPC id `id`.
pub fn call_body(id: u64, tool: &str, text: &str) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"{tool}","arguments":{{"text":"{text}"}}}}}}"#
    )
}

/// A stdio MCP server the benchmark starts itself, with any number of requests in flight.
pub struct StdioPeer {
    outbound: mpsc::Sender<String>,
    pending: Arc<Mutex<HashMap<u64, oneshot::Sender<Vec<u8>>>>>,
    pub pid: u32,
    _child: tokio::process::Child,
}

#[derive(Deserialize)]
struct IdOnly {
    #[serde(default)]
    id: Option<u64>,
}

impl StdioPeer {
    /// Start `bench-echo stdio` and initialize it.
    pub async fn start(echo: &Path, cpu: Option<usize>) -> anyhow::Result<StdioPeer> {
        // A plain spawn, as the gateway does it (no pre-exec hook, which would force a slower
        // fork): its start-up time is a baseline. It ends with its stdin, so it cannot outlive
        // the benchmark.
        let mut cmd = tokio::process::Command::new(echo);
        cmd.kill_on_drop(true);
        if let Some(cpu) = cpu {
            cmd.arg("--cpu").arg(cpu.to_string());
        }
        let mut child = cmd
            .arg("stdio")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("cannot start {} stdio", echo.display()))?;
        let pid = child.id().context("bench-echo exited at once")?;
        let mut stdin = child.stdin.take().context("stdin is piped")?;
        let stdout = child.stdout.take().context("stdout is piped")?;
        let (outbound, mut rx) = mpsc::channel::<String>(1024);
        // Writer: batches whatever is queued into one flush.
        tokio::spawn(async move {
            while let Some(line) = rx.recv().await {
                let mut ok = stdin.write_all(line.as_bytes()).await.is_ok();
                while let (true, Ok(more)) = (ok, rx.try_recv()) {
                    ok = stdin.write_all(more.as_bytes()).await.is_ok();
                }
                if !ok || stdin.flush().await.is_err() {
                    break;
                }
            }
        });
        let pending: Arc<Mutex<HashMap<u64, oneshot::Sender<Vec<u8>>>>> = Arc::default();
        let waiting = pending.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout);
            let mut line = Vec::new();
            loop {
                line.clear();
                match reader.read_until(b'\n', &mut line).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let Ok(IdOnly { id: Some(id) }) = serde_json::from_slice(&line) else {
                    continue;
                };
                let tx = waiting
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&id);
                if let Some(tx) = tx {
                    let _ = tx.send(std::mem::take(&mut line));
                }
            }
            // The server is gone: every waiting caller fails now.
            waiting.lock().unwrap_or_else(|p| p.into_inner()).clear();
        });
        let peer = StdioPeer {
            outbound,
            pending,
            pid,
            _child: child,
        };
        let init = json!({
            "protocolVersion": PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": { "name": "toolgate-bench", "version": env!("CARGO_PKG_VERSION") },
        });
        peer.request("initialize", init).await?;
        let note = json!({ "jsonrpc": "2.0", "method": "notifications/initialized" });
        peer.outbound
            .send(format!("{note}\n"))
            .await
            .map_err(|_| anyhow!("the stdio server closed its input"))?;
        Ok(peer)
    }

    /// Send the line `make(id)` builds and wait for the response with that id.
    pub async fn exchange(&self, make: impl FnOnce(u64) -> String) -> anyhow::Result<Vec<u8>> {
        let id = next_id();
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, tx);
        let mut line = make(id);
        line.push('\n');
        self.outbound
            .send(line)
            .await
            .map_err(|_| anyhow!("the stdio server closed its input"))?;
        rx.await
            .map_err(|_| anyhow!("the stdio server ended before answering"))
    }

    pub async fn request(&self, method: &str, params: Value) -> anyhow::Result<Value> {
        let answer = self
            .exchange(|id| {
                json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params })
                    .to_string()
            })
            .await?;
        result_of(&serde_json::from_slice(&answer)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_response_is_found_after_priming_and_notification_events() {
        let body = b"id: 1-0\ndata: \n\n\
event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{}}\n\n\
id: 1-2\nevent: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":7,\"result\":{}}\n\n";
        assert_eq!(
            last_sse_message(body),
            Some(&b"{\"jsonrpc\":\"2.0\",\"id\":7,\"result\":{}}"[..])
        );
        assert_eq!(last_sse_message(b": keep-alive\n\n"), None);
    }

    #[test]
    fn a_call_body_is_valid_json_rpc() {
        let body: Value = serde_json::from_str(&call_body(9, "echo__echo", "hi")).unwrap();
        assert_eq!(body["id"], 9);
        assert_eq!(body["params"]["name"], "echo__echo");
        assert_eq!(body["params"]["arguments"]["text"], "hi");
    }
}
