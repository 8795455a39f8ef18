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
