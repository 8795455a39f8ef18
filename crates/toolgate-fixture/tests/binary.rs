//! End-to-end checks of the real binary: stdio hygiene, and the HTTP edge (session lifecycle, DNS-rebinding guard, SSE resumption).
//!
//! HTTP is spoken by hand over HTTP/1.0, so a response body simply ends when the server closes
//! the connection and no HTTP client crate is needed.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    process::{Child, Command, Stdio},
    time::Duration,
};

use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_toolgate-fixture");

/// A fixture serving HTTP on a free port; killed when dropped.
struct HttpFixture {
    child: Child,
    /// `127.0.0.1:PORT`
    authority: String,
}

impl HttpFixture {
    fn start() -> Self {
        let mut child = Command::new(BIN)
            .args(["http", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the fixture starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout is piped"))
            .read_line(&mut line)
            .expect("the fixture prints its URL");
        let authority = line
            .trim()
            .strip_prefix("listening on http://")
            .and_then(|rest| rest.strip_suffix("/mcp"))
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .to_owned();
        Self { child, authority }
    }

    /// Sends one request to `/mcp` and returns (status, lower-cased head, body).
    fn send(&self, method: &str, headers: &[(&str, &str)], body: &str) -> (u16, String, String) {
        let mut stream = TcpStream::connect(&self.authority).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(15)))
            .expect("timeout");
        let has_host = headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host"));
        let mut request = format!("{method} /mcp HTTP/1.0\r\n");
        if !has_host {
            request.push_str(&format!("Host: {}\r\n", self.authority));
        }
        for (k, v) in headers {
            request.push_str(&format!("{k}: {v}\r\n"));
        }
        request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        stream.write_all(request.as_bytes()).expect("write");
        let mut raw = String::new();
        stream
            .read_to_string(&mut raw)
            .expect("read the whole response");
        let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        (status, head.to_ascii_lowercase(), body.to_owned())
    }

    fn post(&self, session: Option<&str>, message: &Value) -> (u16, String, String) {
        let mut headers = vec![
            ("Content-Type", "application/json"),
            ("Accept", "application/json, text/event-stream"),
            ("MCP-Protocol-Version", "2025-11-25"),
        ];
        if let Some(id) = session {
            headers.push(("Mcp-Session-Id", id));
        }
        self.send("POST", &headers, &message.to_string())
    }

    /// Runs the handshake and returns the session id.
    fn session(&self) -> String {
        let (status, head, _) = self.post(None, &initialize());
        assert_eq!(status, 200);
        let id = head
            .lines()
            .find_map(|l| l.strip_prefix("mcp-session-id:"))
            .expect("a session id")
            .trim()
            .to_owned();
        let initialized = json!({ "jsonrpc": "2.0", "method": "notifications/initialized" });
        assert_eq!(self.post(Some(&id), &initialized).0, 202);
        id
    }
}

impl Drop for HttpFixture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn initialize() -> Value {
    json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": { "name": "binary-test", "version": "0" },
        },
    })
}

/// The SSE events of a body: (id, data) pairs.
fn events(body: &str) -> Vec<(String, String)> {
    body.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|event| {
            let field = |name: &str| {
                event
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(|v| v.trim().to_owned())
                    .unwrap_or_default()
            };
            (field("id:"), field("data:"))
        })
        .collect()
}

#[test]
fn stdio_writes_only_mcp_messages_on_stdout() {
    let mut child = Command::new(BIN)
        .args(["--name", "alpha", "--extra-tools", "2", "stdio"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the fixture starts");
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
    let mut next = || {
        let mut line = String::new();
        stdout.read_line(&mut line).expect("a line");
        serde_json::from_str::<Value>(&line).unwrap_or_else(|_| panic!("not JSON: {line:?}"))
    };
    writeln!(stdin, "{}", initialize()).unwrap();
    let init = next();
    assert_eq!(init["result"]["serverInfo"]["name"], "alpha");
    assert_eq!(init["result"]["protocolVersion"], "2025-11-25");
    writeln!(
        stdin,
        r#"{{"jsonrpc":"2.0","method":"notifications/initialized"}}"#
    )
    .unwrap();
    writeln!(stdin, r#"{{"jsonrpc":"2.0","id":2,"method":"tools/list"}}"#).unwrap();
    let names: Vec<String> = next()["result"]["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .map(|t| t["name"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(names.contains(&"tool_1".to_owned()) && !names.contains(&"tool_2".to_owned()));
    drop(stdin);
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "", "nothing but MCP messages on stdout");
    assert!(child.wait().unwrap().success());
}

#[test]
fn http_session_lifecycle() {
    let fixture = HttpFixture::start();
    let list = json!({ "jsonrpc": "2.0", "id": 2, "method": "tools/list" });
    assert_eq!(
        fixture.post(None, &list).0,
        400,
        "a request without a session id"
    );
    assert_eq!(fixture.post(Some("no-such-session"), &list).0, 404);
    assert_eq!(
        fixture
            .send("DELETE", &[("Mcp-Session-Id", "no-such-session")], "")
            .0,
        404
    );

    let id = fixture.session();
    let (status, _, body) = fixture.post(Some(&id), &list);
    assert_eq!(status, 200);
    assert!(body.contains("test_simple_text"));
    let delete = fixture.send("DELETE", &[("Mcp-Session-Id", &id)], "").0;
    assert!((200..300).contains(&delete), "DELETE answered {delete}");
    assert_eq!(fixture.post(Some(&id), &list).0, 404, "after DELETE");
    assert_eq!(
        fixture.send("DELETE", &[("Mcp-Session-Id", &id)], "").0,
        404
    );
}

#[test]
fn http_refuses_foreign_host_and_origin() {
    let fixture = HttpFixture::start();
    let body = initialize().to_string();
    let base = [
        ("Content-Type", "application/json"),
        ("Accept", "application/json, text/event-stream"),
    ];
    let with = |extra: (&'static str, &'static str)| {
        let mut headers = base.to_vec();
        headers.push(extra);
        fixture.send("POST", &headers, &body).0
    };
    assert_eq!(with(("Host", "evil.example.com")), 403);
    assert_eq!(with(("Origin", "http://evil.example.com")), 403);
    assert_eq!(with(("Origin", "http://localhost:5173")), 200);
}

#[test]
fn test_reconnection_answers_on_the_resumed_stream() {
    let fixture = HttpFixture::start();
    let id = fixture.session();
    let call = json!({
        "jsonrpc": "2.0", "id": 7, "method": "tools/call",
        "params": { "name": "test_reconnection", "arguments": {} },
    });
    let (status, _, body) = fixture.post(Some(&id), &call);
    assert_eq!(status, 200);
    let first = events(&body);
    assert_eq!(
        first.len(),
        1,
        "only the priming event before the stream closes: {body:?}"
    );
    let (last_event_id, data) = &first[0];
    assert!(last_event_id.contains('/') && data.is_empty());
    assert!(body.contains("retry:"));

    let (status, _, body) = fixture.send(
        "GET",
        &[
            ("Accept", "text/event-stream"),
            ("Mcp-Session-Id", &id),
            ("MCP-Protocol-Version", "2025-11-25"),
            ("Last-Event-ID", last_event_id),
        ],
        "",
    );
    assert_eq!(status, 200);
    let answer = events(&body)
        .into_iter()
        .filter_map(|(_, data)| serde_json::from_str::<Value>(&data).ok())
        .find(|m| m["id"] == 7)
        .unwrap_or_else(|| panic!("no answer on the resumed stream: {body:?}"));
    let text = answer["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default();
    assert!(text.contains("after the client resumed"), "{text}");
}

/// A fixture serving the legacy HTTP+SSE transport on a free port; killed when dropped.
struct SseFixture {
    child: Child,
    authority: String,
}

impl SseFixture {
    fn start() -> Self {
        let mut child = Command::new(BIN)
            .args(["sse", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the fixture starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout is piped"))
            .read_line(&mut line)
            .expect("the fixture prints its URL");
        let authority = line
            .trim()
            .strip_prefix("listening on http://")
            .and_then(|rest| rest.strip_suffix("/sse"))
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .to_owned();
        Self { child, authority }
    }

    fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(&self.authority).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(15)))
            .expect("timeout");
        stream
    }

    /// Opens the event stream; returns its reader and the endpoint it named.
    fn open(&self) -> (BufReader<TcpStream>, String) {
        let mut stream = self.connect();
        write!(
            stream,
            "GET /sse HTTP/1.0\r\nHost: {}\r\nAccept: text/event-stream\r\n\r\n",
            self.authority
        )
        .expect("write");
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line).expect("status line");
        assert!(line.contains(" 200 "), "GET /sse answered {line:?}");
        while line.trim() != "" {
            line.clear();
            reader.read_line(&mut line).expect("header");
        }
        let (name, data) = next_event(&mut reader);
        assert_eq!(name, "endpoint");
        (reader, data)
    }

    /// POSTs `body` to `path`; returns the status.
    fn post(&self, path: &str, body: &str) -> u16 {
        let mut stream = self.connect();
        write!(
            stream,
            "POST {path} HTTP/1.0\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.authority,
            body.len()
        )
        .expect("write");
        let mut raw = String::new();
        stream.read_to_string(&mut raw).expect("read");
        raw.split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for SseFixture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The next SSE event on a stream (comments skipped): (event name, data).
fn next_event(reader: &mut impl BufRead) -> (String, String) {
    let (mut name, mut data) = (String::from("message"), String::new());
    loop {
        let mut line = String::new();
        assert!(
            reader.read_line(&mut line).expect("read") > 0,
            "stream ended"
        );
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            if !data.is_empty() {
                return (name, data);
            }
            continue;
        }
        if let Some(v) = line.strip_prefix("event:") {
            name = v.trim().to_owned();
        } else if let Some(v) = line.strip_prefix("data:") {
            data.push_str(v.trim_start());
        }
    }
}

fn next_message(reader: &mut impl BufRead) -> Value {
    let (name, data) = next_event(reader);
    assert_eq!(name, "message");
    serde_json::from_str(&data).unwrap_or_else(|_| panic!("not JSON: {data:?}"))
}

#[test]
fn sse_serves_a_session_on_its_event_stream() {
    let fixture = SseFixture::start();
    let (mut events, endpoint) = fixture.open();
    assert!(
        endpoint.starts_with("/message?sessionId="),
        "endpoint {endpoint:?}"
    );
    assert_eq!(fixture.post(&endpoint, &initialize().to_string()), 202);
    let init = next_message(&mut events);
    assert_eq!(init["id"], 1);
    assert_eq!(init["result"]["serverInfo"]["name"], "toolgate-fixture");
    let initialized = json!({ "jsonrpc": "2.0", "method": "notifications/initialized" });
    assert_eq!(fixture.post(&endpoint, &initialized.to_string()), 202);

    // Progress notifications and the answer come on the event stream, in order.
    let call = json!({
        "jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": { "name": "test_tool_with_progress", "arguments": {}, "_meta": { "progressToken": "p" } },
    });
    assert_eq!(fixture.post(&endpoint, &call.to_string()), 202);
    for expected in [0.0, 50.0, 100.0] {
        let note = next_message(&mut events);
        assert_eq!(note["method"], "notifications/progress");
        assert_eq!(note["params"]["progressToken"], "p");
        assert_eq!(note["params"]["progress"], expected);
    }
    assert_eq!(next_message(&mut events)["id"], 2);

    assert_eq!(fixture.post(&endpoint, "not json"), 400);
    assert_eq!(
        fixture.post("/message?sessionId=nope", &initialized.to_string()),
        404
    );
    // The session ends with its stream.
    drop(events);
    let ping = json!({ "jsonrpc": "2.0", "id": 3, "method": "ping" }).to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while fixture.post(&endpoint, &ping) != 404 {
        assert!(
            std::time::Instant::now() < deadline,
            "the session outlived its stream"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn unknown_fields_are_served_on_every_transport() {
    let call = json!({
        "jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": { "name": "test_unknown_fields", "arguments": {} },
    });
    let list = json!({ "jsonrpc": "2.0", "id": 3, "method": "tools/list" });
    let check = |result: &Value, listing: &Value, transport: &str| {
        assert_eq!(
            result["x_unknown_field"],
            json!({ "kept": "as is", "n": 42 }),
            "{transport}: {result}"
        );
        assert_eq!(
            result["content"][1]["type"], "x_unknown_content",
            "{transport}"
        );
        let tool = listing["tools"]
            .as_array()
            .and_then(|t| t.iter().find(|t| t["name"] == "test_unknown_fields"))
            .unwrap_or_else(|| panic!("{transport}: not listed"));
        assert!(tool["x_unknown_field"].is_object(), "{transport}: {tool}");
    };

    // stdio
    let mut child = Command::new(BIN)
        .arg("stdio")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the fixture starts");
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
    let mut next = || {
        let mut line = String::new();
        stdout.read_line(&mut line).expect("a line");
        serde_json::from_str::<Value>(&line).unwrap_or_else(|_| panic!("not JSON: {line:?}"))
    };
    writeln!(stdin, "{}", initialize()).unwrap();
    next();
    writeln!(
        stdin,
        r#"{{"jsonrpc":"2.0","method":"notifications/initialized"}}"#
    )
    .unwrap();
    writeln!(stdin, "{call}").unwrap();
    let result = next()["result"].clone();
    writeln!(stdin, "{list}").unwrap();
    check(&result, &next()["result"], "stdio");
    drop(stdin);
    let _ = child.wait();

    // Streamable HTTP: JSON or SSE bodies.
    let fixture = HttpFixture::start();
    let id = fixture.session();
    let answer = |body: &str| -> Value {
        serde_json::from_str(body).unwrap_or_else(|_| {
            events(body)
                .into_iter()
                .filter_map(|(_, data)| serde_json::from_str::<Value>(&data).ok())
                .find(|m| m.get("result").is_some())
                .unwrap_or_else(|| panic!("no answer in {body:?}"))
        })
    };
    let result = answer(&fixture.post(Some(&id), &call).2)["result"].clone();
    let listing = answer(&fixture.post(Some(&id), &list).2)["result"].clone();
    check(&result, &listing, "http");

    // Legacy SSE
    let fixture = SseFixture::start();
    let (mut events, endpoint) = fixture.open();
    fixture.post(&endpoint, &initialize().to_string());
    next_message(&mut events);
    fixture.post(
        &endpoint,
        &json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }).to_string(),
    );
    fixture.post(&endpoint, &call.to_string());
    let result = next_message(&mut events)["result"].clone();
    fixture.post(&endpoint, &list.to_string());
    check(&result, &next_message(&mut events)["result"], "sse");
}

/// The `_meta` every 2026-07-28 request carries.
fn modern_meta(capabilities: Value) -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": capabilities,
        "io.modelcontextprotocol/clientInfo": { "name": "binary-test", "version": "0" },
    })
}

impl HttpFixture {
    fn start_with(eras: &str) -> Self {
        let mut child = Command::new(BIN)
            .args(["--eras", eras, "http", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the fixture starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout is piped"))
            .read_line(&mut line)
            .expect("the fixture prints its URL");
        let authority = line
            .trim()
            .strip_prefix("listening on http://")
            .and_then(|rest| rest.strip_suffix("/mcp"))
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .to_owned();
        Self { child, authority }
    }

    /// One sessionless 2026-07-28 request with its standard headers; returns (status, JSON-RPC message).
    fn modern(&self, method: &str, mut params: Value) -> (u16, Value) {
        params["_meta"] = params.get("_meta").cloned().unwrap_or_else(|| {
            modern_meta(json!({ "elicitation": {}, "sampling": {}, "roots": {} }))
        });
        let name = params
            .get("name")
            .or_else(|| params.get("uri"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let mut headers = vec![
            ("Content-Type", "application/json"),
            ("Accept", "application/json, text/event-stream"),
            ("MCP-Protocol-Version", "2026-07-28"),
            ("Mcp-Method", method),
        ];
        if let Some(name) = &name {
            headers.push(("Mcp-Name", name));
        }
        let body = json!({ "jsonrpc": "2.0", "id": 7, "method": method, "params": params });
        let (status, _, body) = self.send("POST", &headers, &body.to_string());
        let message = serde_json::from_str(&body).unwrap_or_else(|_| {
            events(&body)
                .into_iter()
                .filter_map(|(_, data)| serde_json::from_str::<Value>(&data).ok())
                .find(|m| m.get("id") == Some(&json!(7)))
                .unwrap_or_else(|| panic!("no answer in {body:?}"))
        });
        (status, message)
    }
}

#[test]
fn modern_era_discover_and_mrtr_rounds() {
    let fixture = HttpFixture::start();
    let (status, discover) = fixture.modern("server/discover", json!({}));
    assert_eq!(status, 200, "{discover}");
    let result = &discover["result"];
    assert!(
        result["supportedVersions"]
            .as_array()
            .is_some_and(|v| v.contains(&json!("2026-07-28")) && v.contains(&json!("2025-11-25"))),
        "{discover}"
    );
    assert_eq!(result["capabilities"]["tools"]["listChanged"], json!(true));

    // Round 1 asks, with a sealed requestState; a changed state is refused; round 2 asks again
    // with a new state; round 3 completes.
    let tool = "test_input_required_result_multi_round";
    let (_, first) = fixture.modern("tools/call", json!({ "name": tool, "arguments": {} }));
    let first = &first["result"];
    assert_eq!(first["resultType"], "input_required", "{first}");
    assert_eq!(
        first["inputRequests"]["step1"]["method"],
        "elicitation/create"
    );
    let state1 = first["requestState"].as_str().expect("a requestState");
    let accept = |content: Value| json!({ "action": "accept", "content": content });
    let (status, tampered) = fixture.modern(
        "tools/call",
        json!({
            "name": tool, "arguments": {},
            "inputResponses": { "step1": accept(json!({ "name": "Ada" })) },
            "requestState": format!("{state1}x"),
        }),
    );
    assert_eq!(status, 200);
    assert_eq!(tampered["error"]["code"], -32602, "{tampered}");
    let (_, second) = fixture.modern(
        "tools/call",
        json!({
            "name": tool, "arguments": {},
            "inputResponses": { "step1": accept(json!({ "name": "Ada" })) },
            "requestState": state1,
        }),
    );
    let second = &second["result"];
    assert_eq!(second["resultType"], "input_required", "{second}");
    let state2 = second["requestState"].as_str().expect("a requestState");
    assert_ne!(state1, state2);
    let (_, done) = fixture.modern(
        "tools/call",
        json!({
            "name": tool, "arguments": {},
            "inputResponses": { "step2": accept(json!({ "color": "green" })) },
            "requestState": state2,
        }),
    );
    assert_eq!(done["result"]["resultType"], "complete", "{done}");
    assert_eq!(
        done["result"]["content"][0]["text"],
        "name=Ada; color=green"
    );

    // Without the capability the tool needs: -32021 and HTTP 400.
    let (status, missing) = fixture.modern(
        "tools/call",
        json!({ "name": "test_missing_capability", "arguments": {}, "_meta": modern_meta(json!({})) }),
    );
    assert_eq!(
        (status, &missing["error"]["code"]),
        (400, &json!(-32021)),
        "{missing}"
    );
}

#[test]
fn modern_era_listen_hears_list_changes() {
    let fixture = HttpFixture::start();
    let body = json!({
        "jsonrpc": "2.0", "id": 9, "method": "subscriptions/listen",
        "params": { "_meta": modern_meta(json!({})), "notifications": { "toolsListChanged": true } },
    })
    .to_string();
    let mut stream = TcpStream::connect(&fixture.authority).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "POST /mcp HTTP/1.0\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nMCP-Protocol-Version: 2026-07-28\r\n\
         Mcp-Method: subscriptions/listen\r\nContent-Length: {}\r\n\r\n{body}",
        fixture.authority,
        body.len()
    )
    .expect("write");
    let mut reader = BufReader::new(stream);
    let mut next_data = || loop {
        let mut line = String::new();
        assert!(
            reader.read_line(&mut line).expect("a line") > 0,
            "stream ended"
        );
        if let Some(data) = line.strip_prefix("data:")
            && let Ok(message) = serde_json::from_str::<Value>(data.trim())
        {
            return message;
        }
    };
    let ack = next_data();
    assert_eq!(
        ack["method"], "notifications/subscriptions/acknowledged",
        "{ack}"
    );
    // rmcp acknowledges the subscription before the server's `listen` has
    // subscribed to changes: a change made in between is not this stream's.
    // So: change, and change again while nothing arrives (at most 5 times).
    reader
        .get_ref()
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let mut note = Value::Null;
    for _ in 0..5 {
        let (_, changed) = fixture.modern(
            "tools/call",
            json!({ "name": "test_trigger_tool_change", "arguments": {} }),
        );
        assert_eq!(changed["result"]["resultType"], "complete", "{changed}");
        let mut line = String::new();
        let heard = loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) => panic!("stream ended"),
                Ok(_) => {
                    if let Some(data) = line.strip_prefix("data:")
                        && let Ok(message) = serde_json::from_str::<Value>(data.trim())
                    {
                        break Some(message);
                    }
                }
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    break None;
                }
                Err(e) => panic!("a line: {e}"),
            }
        };
        if let Some(message) = heard {
            note = message;
            break;
        }
    }
    assert_eq!(note["method"], "notifications/tools/list_changed", "{note}");
    assert_eq!(
        note["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"], 9,
        "{note}"
    );
}

#[test]
fn eras_flag_limits_the_protocol_versions() {
    let legacy = HttpFixture::start_with("legacy");
    let (status, refused) = legacy.modern("server/discover", json!({}));
    assert_eq!(
        (status, &refused["error"]["code"]),
        (400, &json!(-32022)),
        "{refused}"
    );
    legacy.session();

    let modern = HttpFixture::start_with("modern");
    let (status, discover) = modern.modern("server/discover", json!({}));
    assert_eq!(status, 200);
    assert_eq!(
        discover["result"]["supportedVersions"],
        json!(["2026-07-28"])
    );
    let (_, _, body) = modern.post(None, &initialize());
    assert!(body.contains("-32022"), "initialize must fail: {body}");
}
