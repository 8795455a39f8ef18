//! bench-echo: the smallest fast MCP server we could write, the upstream of toolgate's benchmark.
//!
//! It answers `initialize`, `ping`, `tools/list` (N generated tools, serialised once at start)
//! and `tools/call` (every tool returns its `text` argument as text content) with plain JSON,
//! over Streamable HTTP at `/mcp` or over stdio. It is written on raw serde_json and axum, not on
//! an MCP SDK, so that its own cost is as small as we can make it: the benchmark measures the
//! gateway, and a heavy upstream would hide what the gateway adds. `--delay-ms` makes every
//! `tools/call` slow, to test that one slow upstream does not hold up calls to another.

use anyhow::Context as _;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::serve::ListenerExt as _;
use clap::{Parser, Subcommand};
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::collections::HashSet;
use std::io::{BufRead as _, BufReader, BufWriter, Stdout, Write as _};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

const SESSION_HEADER: &str = "mcp-session-id";
/// Protocol revisions of the session era; the first is offered when the client's is unknown.
const VERSIONS: &[&str] = &["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];

#[derive(Parser)]
#[command(
    name = "bench-echo",
    version,
    about = "A minimal, fast MCP echo server: the upstream of toolgate's benchmark"
)]
struct Cli {
    /// Tools in `tools/list`: `echo` and N-1 generated ones `tool_1` … `tool_{N-1}`; all echo.
    #[arg(long, global = true, default_value_t = 1, value_name = "N")]
    tools: usize,
    /// Answer every `tools/call` only after this many milliseconds (a slow upstream).
    #[arg(long, global = true, default_value_t = 0, value_name = "D")]
    delay_ms: u64,
    /// Run only on this CPU (the benchmark keeps upstreams off the gateway's CPU, also when the
    /// gateway is the one starting them).
    #[arg(long, global = true, value_name = "N")]
    cpu: Option<usize>,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Streamable HTTP at /mcp; the first line on stdout is `listening on http://ADDR/mcp`.
    Http {
        /// Port 0 picks a free port.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
    },
    /// One session over stdin/stdout, one JSON-RPC message per line.
    Stdio,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(cpu) = cli.cpu {
        pin(cpu).with_context(|| format!("cannot pin to CPU {cpu}"))?;
    }
    let echo = Arc::new(Echo::new(
        cli.tools.max(1),
        Duration::from_millis(cli.delay_ms),
    ));
    match cli.mode {
        Mode::Stdio => serve_stdio(&echo),
        Mode::Http { listen } => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?
            .block_on(serve_http(echo, listen)),
    }
}

/// Pin this process (its threads are not started yet) to one CPU.
fn pin(cpu: usize) -> std::io::Result<()> {
    // SAFETY: sched_setaffinity on the calling thread with a bit set we own.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The server's whole behaviour, shared by both transports.
struct Echo {
    tools: usize,
    delay: Duration,
    /// The `tools/list` result, serialised once.
    tools_list: String,
}

/// An incoming JSON-RPC message: only what routing needs is read, the rest stays raw.
#[derive(Deserialize)]
struct Incoming<'a> {
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    method: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    params: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct InitializeParams<'a> {
    #[serde(borrow, default, rename = "protocolVersion")]
    protocol_version: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct CallParams<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(borrow, default)]
    arguments: Option<CallArguments<'a>>,
}

#[derive(Deserialize)]
struct CallArguments<'a> {
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
}

/// What to do with one incoming message.
enum Outcome {
    /// A notification or a response: nothing to answer (HTTP 202).
    Nothing,
    /// Answer with this JSON-RPC message.
    Reply {
        json: Vec<u8>,
        /// It answers `initialize`: an HTTP session starts.
        initialize: bool,
        /// It answers `tools/call`: wait `--delay-ms` first.
        slow: bool,
    },
    /// Not a JSON-RPC message: answer with this parse error.
    Malformed(Vec<u8>),
}

impl Echo {
    fn new(tools: usize, delay: Duration) -> Echo {
        let schema = json!({
            "type": "object",
            "properties": { "text": { "type": "string", "description": "Text to send back" } },
            "required": ["text"],
        });
        let list: Vec<_> = (0..tools)
            .map(|i| {
                let name = if i == 0 {
                    "echo".to_owned()
                } else {
                    format!("tool_{i}")
                };
                json!({
                    "name": name,
                    "description": format!("Returns its text argument unchanged (tool {i} of {tools}, generated for the benchmark)."),
                    "inputSchema": schema,
                })
            })
            .collect();
        Echo {
            tools,
            delay,
            tools_list: json!({ "tools": list }).to_string(),
        }
    }

    fn has_tool(&self, name: &str) -> bool {
        name == "echo"
            || name
                .strip_prefix("tool_")
                .and_then(|n| n.parse::<usize>().ok())
                .is_some_and(|k| k >= 1 && k < self.tools)
    }

    fn respond(&self, body: &[u8]) -> Outcome {
        let Ok(msg) = serde_json::from_slice::<Incoming>(body) else {
            return Outcome::Malformed(error(None, -32700, "Parse error"));
        };
        let (Some(id), Some(method)) = (msg.id, msg.method.as_deref()) else {
            return Outcome::Nothing;
        };
        let reply = |json| Outcome::Reply {
            json,
            initialize: false,
            slow: false,
        };
        match method {
            "initialize" => {
                let requested = msg
                    .params
                    .and_then(|p| serde_json::from_str::<InitializeParams>(p.get()).ok())
                    .and_then(|p| p.protocol_version.map(Cow::into_owned));
                let version = VERSIONS
                    .iter()
                    .find(|v| Some(**v) == requested.as_deref())
                    .unwrap_or(&VERSIONS[0]);
                let result = json!({
                    "protocolVersion": version,
                    "capabilities": { "tools": {} },
                    "serverInfo": { "name": "bench-echo", "version": env!("CARGO_PKG_VERSION") },
                });
                Outcome::Reply {
                    json: response(id, result.to_string().as_bytes()),
                    initialize: true,
                    slow: false,
                }
            }
            "ping" => reply(response(id, b"{}")),
            "tools/list" => reply(response(id, self.tools_list.as_bytes())),
            "tools/call" => {
                let params = msg
                    .params
                    .and_then(|p| serde_json::from_str::<CallParams>(p.get()).ok());
                let Some(params) = params else {
                    return reply(error(Some(id), -32602, "params.name must be a string"));
                };
                if !self.has_tool(&params.name) {
                    let message = format!("Unknown tool: {}", params.name);
                    return reply(error(Some(id), -32602, &message));
                }
                let text = params.arguments.and_then(|a| a.text).unwrap_or_default();
                Outcome::Reply {
                    json: text_result(id, &text),
                    initialize: false,
                    slow: !self.delay.is_zero(),
                }
            }
            other => reply(error(
                Some(id),
                -32601,
                &format!("Method not found: {other}"),
            )),
        }
    }
}

/// `{"jsonrpc":"2.0","id":ID,"result":RESULT}`, written without building a tree.
fn response(id: &RawValue, result: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(result.len() + 48);
    out.extend_from_slice(b"{\"jsonrpc\":\"2.0\",\"id\":");
    out.extend_from_slice(id.get().as_bytes());
    out.extend_from_slice(b",\"result\":");
    out.extend_from_slice(result);
    out.push(b'}');
    out
}

/// A `tools/call` result with `text` as its one text content.
fn text_result(id: &RawValue, text: &str) -> Vec<u8> {
    let mut result = Vec::with_capacity(text.len() + 48);
    result.extend_from_slice(b"{\"content\":[{\"type\":\"text\",\"text\":");
    // Writing a string into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut result, text);
    result.extend_from_slice(b"}]}");
    response(id, &result)
}

fn error(id: Option<&RawValue>, code: i64, message: &str) -> Vec<u8> {
    let msg = json!({ "jsonrpc": "2.0", "id": id, "error": { "code": code, "message": message } });
    msg.to_string().into_bytes()
}

// ---- Streamable HTTP ----

#[derive(Clone)]
struct Http {
    echo: Arc<Echo>,
    sessions: Arc<RwLock<HashSet<String>>>,
    next_session: Arc<AtomicU64>,
}

async fn serve_http(echo: Arc<Echo>, listen: SocketAddr) -> anyhow::Result<()> {
    let state = Http {
        echo,
        sessions: Arc::default(),
        next_session: Arc::default(),
    };
    let app = Router::new()
        .route(
            "/mcp",
            post(mcp_post).delete(mcp_delete).get(|| async {
                (
                    StatusCode::METHOD_NOT_ALLOWED,
                    [(header::ALLOW, "POST, DELETE")],
                )
            }),
        )
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let local = listener.local_addr().context("no local address")?;
    // The one line on stdout: the benchmark reads the URL from it (port 0 picks a free port).
    println!("listening on http://{local}/mcp");
    std::io::stdout().flush().context("stdout")?;
    // Small request/response messages: never let Nagle hold one back.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app).await.context("serving HTTP")
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

impl Http {
    fn new_session(&self) -> String {
        let n = self.next_session.fetch_add(1, Ordering::Relaxed);
        let id = format!("echo-{}-{n}", std::process::id());
        self.sessions
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone());
        id
    }

    /// 400 without a session header, 404 for a session this server does not know.
    fn check_session(&self, headers: &HeaderMap) -> Result<String, Box<Response>> {
        let Some(id) = headers.get(SESSION_HEADER).and_then(|v| v.to_str().ok()) else {
            let body = error(
                None,
                -32600,
                "Bad Request: Mcp-Session-Id header is required",
            );
            return Err(Box::new(json_response(StatusCode::BAD_REQUEST, body)));
        };
        let known = self
            .sessions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(id);
        if !known {
            let body = error(None, -32001, "Session not found");
            return Err(Box::new(json_response(StatusCode::NOT_FOUND, body)));
        }
        Ok(id.to_owned())
    }
}

async fn mcp_post(State(http): State<Http>, headers: HeaderMap, body: Bytes) -> Response {
    match http.echo.respond(&body) {
        Outcome::Malformed(json) => json_response(StatusCode::BAD_REQUEST, json),
        Outcome::Reply {
            json,
            initialize: true,
            ..
        } => {
            let id = http.new_session();
            let mut resp = json_response(StatusCode::OK, json);
            if let Ok(v) = HeaderValue::from_str(&id) {
                resp.headers_mut().insert(SESSION_HEADER, v);
            }
            resp
        }
        other => {
            if let Err(resp) = http.check_session(&headers) {
                return *resp;
            }
            match other {
                Outcome::Reply { json, slow, .. } => {
                    if slow {
                        tokio::time::sleep(http.echo.delay).await;
                    }
                    json_response(StatusCode::OK, json)
                }
                _ => StatusCode::ACCEPTED.into_response(),
            }
        }
    }
}

async fn mcp_delete(State(http): State<Http>, headers: HeaderMap) -> Response {
    match http.check_session(&headers) {
        Ok(id) => {
            http.sessions
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
            StatusCode::OK.into_response()
        }
        Err(resp) => *resp,
    }
}

// ---- stdio ----

type Output = Arc<Mutex<BufWriter<Stdout>>>;

/// Read lines synchronously and answer in order; output is flushed only when no further
/// complete line is already buffered, so a pipelining client gets batched writes.
fn serve_stdio(echo: &Echo) -> anyhow::Result<()> {
    let mut input = BufReader::with_capacity(64 * 1024, std::io::stdin().lock());
    let out: Output = Arc::new(Mutex::new(BufWriter::new(std::io::stdout())));
    let mut line = Vec::with_capacity(4096);
    loop {
        line.clear();
        if input
            .read_until(b'\n', &mut line)
            .context("reading stdin")?
            == 0
        {
            return Ok(());
        }
        let text = line.trim_ascii();
        if text.is_empty() {
            continue;
        }
        let more_waiting = input.buffer().contains(&b'\n');
        match echo.respond(text) {
            Outcome::Nothing => {}
            Outcome::Reply {
                json, slow: true, ..
            } => {
                // A slow call must not hold up the ones behind it.
                let (out, delay) = (out.clone(), echo.delay);
                std::thread::spawn(move || {
                    std::thread::sleep(delay);
                    let _ = write_line(&out, &json, true);
                });
            }
            Outcome::Reply { json, .. } | Outcome::Malformed(json) => {
                write_line(&out, &json, !more_waiting).context("writing stdout")?;
            }
        }
    }
}

fn write_line(out: &Output, json: &[u8], flush: bool) -> std::io::Result<()> {
    let mut w = out.lock().unwrap_or_else(|p| p.into_inner());
    w.write_all(json)?;
    w.write_all(b"\n")?;
    if flush {
        w.flush()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(echo: &Echo, msg: &str) -> serde_json::Value {
        match echo.respond(msg.as_bytes()) {
            Outcome::Reply { json, .. } | Outcome::Malformed(json) => {
                serde_json::from_slice(&json).unwrap()
            }
            Outcome::Nothing => serde_json::Value::Null,
        }
    }

    #[test]
    fn initialize_negotiates_and_lists_n_tools() {
        let echo = Echo::new(3, Duration::ZERO);
        let init = reply(
            &echo,
            r#"{"jsonrpc":"2.0","id":"a","method":"initialize","params":{"protocolVersion":"2025-06-18"}}"#,
        );
        assert_eq!(init["id"], "a");
        assert_eq!(init["result"]["protocolVersion"], "2025-06-18");
        let list = reply(&echo, r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#);
        let names: Vec<_> = list["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(names, ["echo", "tool_1", "tool_2"]);
    }

    #[test]
    fn every_tool_echoes_its_text_and_unknown_ones_are_refused() {
        let echo = Echo::new(2, Duration::from_millis(5));
        let text = "a \"quoted\" line\nand more";
        let call = serde_json::json!({
            "jsonrpc": "2.0", "id": 7, "method": "tools/call",
            "params": { "name": "tool_1", "arguments": { "text": text } },
        });
        let Outcome::Reply { json, slow, .. } = echo.respond(call.to_string().as_bytes()) else {
            panic!("no reply");
        };
        assert!(slow, "--delay-ms applies to tools/call");
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["result"]["content"][0]["text"], text);
        let unknown = reply(
            &echo,
            r#"{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"tool_2"}}"#,
        );
        assert_eq!(unknown["error"]["code"], -32602);
    }

    #[test]
    fn notifications_get_no_answer_and_garbage_a_parse_error() {
        let echo = Echo::new(1, Duration::ZERO);
        assert!(matches!(
            echo.respond(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#),
            Outcome::Nothing
        ));
        assert_eq!(reply(&echo, "{not json")["error"]["code"], -32700);
    }
}
