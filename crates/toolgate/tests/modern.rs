//! MCP 2026-07-28 clients on the wire, through the real binary, in front of the
//! legacy-era fixture: discovery, header/body validation, cacheable results,
//! MRTR bridged to a legacy server's mid-call requests, sealed `requestState`,
//! progress, cancellation by closing the stream, and `subscriptions/listen`;
//! and, in front of two modern-era fixtures, the Tasks extension's sealed ids, which
//! only the principal that created a task can use.

mod support;

use serde_json::{Value, json};
use std::time::Duration;
use support::{Gateway, stdio_server, within};
use toolgate::sse::Parser;

const VERSION: &str = "2026-07-28";

fn meta(capabilities: Value) -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": VERSION,
        "io.modelcontextprotocol/clientCapabilities": capabilities,
        "io.modelcontextprotocol/clientInfo": { "name": "modern-test", "version": "1" },
    })
}

/// A modern client: every request carries `_meta` and the mirrored headers.
struct Modern {
    http: reqwest::Client,
    url: String,
    capabilities: Value,
}

/// What one POST returned: the status, the final JSON-RPC message, and the
/// notifications that came before it.
struct Reply {
    status: u16,
    last: Value,
    notes: Vec<Value>,
}

impl Modern {
    fn new(gw: &Gateway, capabilities: Value) -> Modern {
        Modern {
            http: reqwest::Client::new(),
            url: gw.mcp_url(),
            capabilities,
        }
    }

    /// The same client presenting `key` as its bearer credential.
    fn with_bearer(mut self, key: &str) -> Modern {
        let mut headers = reqwest::header::HeaderMap::new();
        let value = format!("Bearer {key}").parse().expect("a header value");
        headers.insert(reqwest::header::AUTHORIZATION, value);
        self.http = reqwest::Client::builder()
            .default_headers(headers)
            .build()
            .expect("a client");
        self
    }

    /// A request with correct headers and `_meta` merged into `params`.
    fn request(&self, id: Value, method: &str, params: Value) -> reqwest::RequestBuilder {
        self.request_with(id, method, params, &[])
    }

    /// The same with some headers replaced.
    fn request_with(
        &self,
        id: Value,
        method: &str,
        mut params: Value,
        replace: &[(&str, &str)],
    ) -> reqwest::RequestBuilder {
        let mut m = meta(self.capabilities.clone());
        if let Some(extra) = params.get("_meta").and_then(Value::as_object) {
            for (k, v) in extra {
                m[k] = v.clone();
            }
        }
        params["_meta"] = m;
        let mut req = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", VERSION)
            .header("mcp-method", method);
        let name = params
            .get("name")
            .or_else(|| params.get("uri"))
            .or_else(|| params.get("taskId"))
            .and_then(Value::as_str);
        if let (
            Some(n),
            "tools/call" | "prompts/get" | "resources/read" | "tasks/get" | "tasks/update"
            | "tasks/cancel",
        ) = (name, method)
        {
            req = req.header("mcp-name", n);
        }
        let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let mut built = req.body(body.to_string()).build().expect("a valid request");
        for (k, v) in replace {
            built.headers_mut().insert(
                reqwest::header::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                reqwest::header::HeaderValue::from_bytes(v.as_bytes()).expect("value"),
            );
        }
        reqwest::RequestBuilder::from_parts(self.http.clone(), built)
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Reply {
        let resp = within(Duration::from_secs(20), "a response", req.send())
            .await
            .expect("the gateway answers");
        read_reply(resp).await
    }

    async fn call(&self, id: i64, method: &str, params: Value) -> Reply {
        self.send(self.request(json!(id), method, params)).await
    }
}

async fn read_reply(mut resp: reqwest::Response) -> Reply {
    let status = resp.status().as_u16();
    let sse = resp
        .headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if !sse {
        let text = resp.text().await.unwrap_or_default();
        let last = serde_json::from_str(&text).unwrap_or(Value::String(text));
        return Reply {
            status,
            last,
            notes: Vec::new(),
        };
    }
    let mut parser = Parser::new(1 << 20);
    let mut notes = Vec::new();
    loop {
        let chunk = within(Duration::from_secs(20), "the next event", resp.chunk())
            .await
            .expect("the stream reads")
            .expect("the stream ends only after the response");
        for ev in parser.feed(&chunk).expect("valid SSE") {
            assert!(ev.id.is_none(), "modern streams carry no event ids");
            let msg: Value = serde_json::from_str(&ev.data).expect("JSON event");
            if msg.get("id").is_some() {
                return Reply {
                    status,
                    last: msg,
                    notes,
                };
            }
            notes.push(msg);
        }
    }
}

/// The fixture as a legacy-era server: these tests are about the bridge.
fn legacy_fixture() -> Value {
    let mut server = stdio_server(&[]);
    server["era"] = json!("legacy");
    server
}

async fn gateway(extra: Value) -> Gateway {
    let mut config = json!({ "servers": { "fx": legacy_fixture() } });
    if let Value::Object(extra) = extra {
        for (k, v) in extra {
            config[k] = v;
        }
    }
    Gateway::serve(config).await
}

#[tokio::test]
async fn discover_and_lists_speak_the_modern_shape() {
    let gw = gateway(json!({})).await;
    let c = Modern::new(&gw, json!({}));
    let r = c.call(1, "server/discover", json!({})).await;
    assert_eq!(r.status, 200);
    let result = &r.last["result"];
    assert_eq!(result["resultType"], "complete");
    let versions = result["supportedVersions"].as_array().expect("versions");
    assert!(versions.contains(&json!("2026-07-28")) && versions.contains(&json!("2025-11-25")));
    assert!(result["capabilities"]["tools"].is_object());
    assert_eq!(
        result["_meta"]["io.modelcontextprotocol/serverInfo"]["name"],
        "toolgate"
    );

    let r = c.call(2, "tools/list", json!({})).await;
    let list = &r.last["result"];
    assert_eq!(list["resultType"], "complete");
    assert_eq!(list["cacheScope"], "public");
    assert!(list["ttlMs"].as_u64().is_some());
    assert!(
        list["tools"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t["name"] == "fx__echo"))
    );

    let r = c
        .call(
            3,
            "tools/call",
            json!({"name": "fx__echo", "arguments": {"text": "hi"}}),
        )
        .await;
    assert_eq!(r.last["result"]["resultType"], "complete");
    assert_eq!(r.last["result"]["content"][0]["text"], "hi");

    let r = c
        .call(4, "resources/read", json!({"uri": "test://static-text"}))
        .await;
    assert_eq!(r.last["result"]["resultType"], "complete");
    assert_eq!(r.last["result"]["cacheScope"], "private");
    assert!(r.last["result"]["contents"].is_array());

    // Methods the modern era removed are unknown to a modern client.
    for (i, m) in ["ping", "logging/setLevel", "resources/subscribe", "no/such"]
        .into_iter()
        .enumerate()
    {
        let r = c.call(10 + i as i64, m, json!({})).await;
        assert_eq!(r.status, 404, "{m}");
        assert_eq!(r.last["error"]["code"], -32601, "{m}");
    }
}

#[tokio::test]
async fn headers_must_agree_with_the_body() {
    let gw = gateway(json!({})).await;
    let c = Modern::new(&gw, json!({}));
    let call = json!({"name": "fx__echo", "arguments": {"text": "x"}});
    let with =
        |replace: &[(&str, &str)]| c.request_with(json!(1), "tools/call", call.clone(), replace);
    let mismatches: Vec<(&str, reqwest::RequestBuilder)> = vec![
        ("method differs", with(&[("mcp-method", "tools/list")])),
        ("method case", with(&[("mcp-method", "TOOLS/CALL")])),
        ("name differs", with(&[("mcp-name", "fx__other")])),
        (
            "version differs",
            with(&[("mcp-protocol-version", "2025-11-25")]),
        ),
        ("bad characters", with(&[("mcp-name", "fx__\u{e9}cho")])),
        (
            "twice",
            c.request(json!(1), "tools/call", call.clone())
                .header("mcp-name", "fx__echo"),
        ),
    ];
    for (what, req) in mismatches {
        let r = c.send(req).await;
        assert_eq!(r.status, 400, "{what}");
        assert_eq!(r.last["error"]["code"], -32020, "{what}: {}", r.last);
    }
    // Missing headers: build requests without them.
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "fx__echo", "arguments": {}, "_meta": meta(json!({}))}});
    for missing in ["mcp-method", "mcp-name", "mcp-protocol-version"] {
        let mut req = c
            .http
            .post(&c.url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream");
        for (k, v) in [
            ("mcp-method", "tools/call"),
            ("mcp-name", "fx__echo"),
            ("mcp-protocol-version", VERSION),
        ] {
            if k != missing {
                req = req.header(k, v);
            }
        }
        let r = c.send(req.body(body.to_string())).await;
        assert_eq!(r.status, 400, "without {missing}");
        assert_eq!(r.last["error"]["code"], -32020, "without {missing}");
    }
    // Whitespace around a value and the base64 sentinel are accepted.
    let r = c
        .send(c.request_with(
            json!(2),
            "tools/call",
            call.clone(),
            &[("mcp-name", "  fx__echo  ")],
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.last);
    let r = c
        .send(c.request_with(
            json!(3),
            "tools/call",
            call,
            &[("mcp-name", "=?base64?ZnhfX2VjaG8=?=")],
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.last);
}

#[tokio::test]
async fn versions_and_required_meta_are_checked() {
    let gw = gateway(json!({})).await;
    let http = reqwest::Client::new();
    let post = |params: Value, version: &str| {
        http.post(gw.mcp_url())
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", version)
            .header("mcp-method", "tools/list")
            .body(
                json!({"jsonrpc": "2.0", "id": 7, "method": "tools/list", "params": params})
                    .to_string(),
            )
    };
    let old = json!({"_meta": {"io.modelcontextprotocol/protocolVersion": "1900-01-01",
        "io.modelcontextprotocol/clientCapabilities": {}}});
    let r = read_reply(post(old, "1900-01-01").send().await.expect("answered")).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.last["error"]["code"], -32022);
    assert_eq!(r.last["error"]["data"]["requested"], "1900-01-01");
    assert!(
        r.last["error"]["data"]["supported"]
            .as_array()
            .is_some_and(|v| v.contains(&json!(VERSION)))
    );

    let no_caps = json!({"_meta": {"io.modelcontextprotocol/protocolVersion": VERSION}});
    let r = read_reply(post(no_caps, VERSION).send().await.expect("answered")).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.last["error"]["code"], -32602);

    for method in [reqwest::Method::GET, reqwest::Method::DELETE] {
        let r = http
            .request(method.clone(), gw.mcp_url())
            .header("accept", "text/event-stream")
            .header("mcp-protocol-version", VERSION)
            .send()
            .await
            .expect("answered");
        assert_eq!(r.status().as_u16(), 405, "{method}");
    }
    // A method the endpoint does not take at all: 405, and `Allow` names POST.
    let r = http.put(gw.mcp_url()).send().await.expect("answered");
    assert_eq!(r.status().as_u16(), 405);
    let allow = r
        .headers()
        .get("allow")
        .expect("a 405 names the allowed methods")
        .to_str()
        .expect("Allow is text")
        .to_owned();
    assert!(allow.split(',').any(|m| m.trim() == "POST"), "{allow}");
}

/// Round 1 ends with input_required; the retry answers and gets the result.
async fn two_rounds(c: &Modern, tool: &str, args: Value, answer: Value) -> (Value, Value) {
    let first = c
        .call(1, "tools/call", json!({"name": tool, "arguments": args}))
        .await;
    let result = first.last["result"].clone();
    assert_eq!(result["resultType"], "input_required", "{}", first.last);
    let requests = result["inputRequests"].as_object().expect("inputRequests");
    assert_eq!(requests.len(), 1);
    let (key, request) = requests.iter().next().expect("one request");
    let state = result["requestState"]
        .as_str()
        .expect("requestState")
        .to_owned();
    let retry = c
        .call(
            2,
            "tools/call",
            json!({"name": tool, "arguments": args, "requestState": state,
                   "inputResponses": { key.clone(): answer }}),
        )
        .await;
    (request.clone(), retry.last)
}

#[tokio::test]
async fn mrtr_bridges_a_legacy_servers_elicitation_and_sampling() {
    let gw = gateway(json!({})).await;
    let c = Modern::new(&gw, json!({"elicitation": {}, "sampling": {}}));

    let (asked, done) = two_rounds(
        &c,
        "fx__test_elicitation",
        json!({"message": "Who are you?"}),
        json!({"action": "accept", "content": {"username": "octo", "email": "o@example.com"}}),
    )
    .await;
    assert_eq!(asked["method"], "elicitation/create");
    assert_eq!(asked["params"]["message"], "Who are you?");
    assert_eq!(done["result"]["resultType"], "complete", "{done}");
    assert!(
        done["result"]["content"][0]["text"]
            .as_str()
            .is_some_and(|t| t.contains("octo")),
        "{done}"
    );

    let (asked, done) = two_rounds(
        &c,
        "fx__test_sampling",
        json!({"prompt": "Capital of France?"}),
        json!({"role": "assistant", "content": {"type": "text", "text": "Paris, says the client"},
               "model": "test-model", "stopReason": "endTurn"}),
    )
    .await;
    assert_eq!(asked["method"], "sampling/createMessage");
    assert!(
        done["result"]["content"][0]["text"]
            .as_str()
            .is_some_and(|t| t.contains("Paris, says the client")),
        "{done}"
    );
}

#[tokio::test]
async fn a_request_state_is_refused_when_forged_replayed_foreign_or_expired() {
    let gw = gateway(json!({"input_required_ttl": "1s"})).await;
    let c = Modern::new(&gw, json!({"elicitation": {}}));
    let start = |id: i64| {
        c.call(
            id,
            "tools/call",
            json!({"name": "fx__test_elicitation", "arguments": {"message": "m"}}),
        )
    };
    let state_of = |r: &Reply| {
        r.last["result"]["requestState"]
            .as_str()
            .expect("requestState")
            .to_owned()
    };
    let answer = json!({"toolgate-1": {"action": "decline"}});
    let retry = |id: i64, args: Value, state: String| {
        c.call(
            id,
            "tools/call",
            json!({"name": "fx__test_elicitation", "arguments": args,
            "requestState": state, "inputResponses": answer.clone()}),
        )
    };
    let refused = |r: &Reply, why: &str| {
        assert_eq!(r.last["error"]["code"], -32602, "{why}: {}", r.last);
        assert!(
            r.last["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("requestState")),
            "{why}: {}",
            r.last
        );
    };

    let state = state_of(&start(1).await);
    let mut forged = state.clone().into_bytes();
    forged[5] = if forged[5] == b'A' { b'B' } else { b'A' };
    refused(
        &retry(
            2,
            json!({"message": "m"}),
            String::from_utf8(forged).expect("ascii"),
        )
        .await,
        "forged",
    );
    refused(
        &retry(3, json!({"message": "other"}), state.clone()).await,
        "another request",
    );
    let ok = retry(4, json!({"message": "m"}), state.clone()).await;
    assert_eq!(ok.last["result"]["resultType"], "complete", "{}", ok.last);
    refused(&retry(5, json!({"message": "m"}), state).await, "replayed");

    let state = state_of(&start(6).await);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let late = retry(7, json!({"message": "m"}), state).await;
    refused(&late, "expired");
    assert!(
        late.last["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("expired"))
    );
}

#[tokio::test]
async fn a_client_is_never_asked_for_a_capability_it_lacks() {
    let mut shared = legacy_fixture();
    shared["isolation"] = json!("shared");
    let gw =
        Gateway::serve(json!({ "servers": { "own": legacy_fixture(), "shared": shared } })).await;
    let c = Modern::new(&gw, json!({}));
    let call = |tool: &str| json!({"name": tool, "arguments": {"message": "m"}});
    // A server with an upstream session per capability set is told the truth and
    // does not ask.
    let r = c.call(1, "tools/call", call("own__test_elicitation")).await;
    assert_eq!(r.status, 200, "{}", r.last);
    assert_ne!(
        r.last["result"]["resultType"], "input_required",
        "{}",
        r.last
    );
    // A shared upstream session was told every capability the gateway can relay;
    // when it asks for one this client lacks, the request fails with -32021.
    let r = c
        .call(2, "tools/call", call("shared__test_elicitation"))
        .await;
    assert_eq!(r.status, 400, "{}", r.last);
    assert_eq!(r.last["error"]["code"], -32021);
    assert!(r.last["error"]["data"]["requiredCapabilities"]["elicitation"].is_object());
}

#[tokio::test]
async fn progress_flows_on_the_response_stream_and_closing_it_cancels_the_call() {
    let gw = gateway(json!({})).await;
    let c = Modern::new(&gw, json!({}));
    let r = c
        .call(
            1,
            "tools/call",
            json!({"name": "fx__test_tool_with_progress", "arguments": {},
            "_meta": {"progressToken": "mine"}}),
        )
        .await;
    assert_eq!(r.last["result"]["resultType"], "complete");
    let progress: Vec<_> = r
        .notes
        .iter()
        .filter(|n| n["method"] == "notifications/progress")
        .collect();
    assert!(!progress.is_empty(), "no progress before the result");
    assert!(
        progress
            .iter()
            .all(|p| p["params"]["progressToken"] == "mine")
    );

    // A long call, abandoned once it is running.
    let mut resp = c
        .request(
            json!(2),
            "tools/call",
            json!({"name": "fx__sleep", "arguments": {"ms": 20000},
            "_meta": {"progressToken": "p"}}),
        )
        .send()
        .await
        .expect("answered");
    let mut parser = Parser::new(1 << 20);
    loop {
        let chunk = within(
            Duration::from_secs(10),
            "progress of the sleep",
            resp.chunk(),
        )
        .await
        .expect("reads")
        .expect("open");
        if !parser.feed(&chunk).expect("SSE").is_empty() {
            break;
        }
    }
    drop(resp);
    within(
        Duration::from_secs(10),
        "the upstream cancellation",
        async {
            loop {
                let r = c
                    .call(
                        3,
                        "tools/call",
                        json!({"name": "fx__sleep_cancellations", "arguments": {}}),
                    )
                    .await;
                if r.last["result"]["content"][0]["text"] == "1" {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        },
    )
    .await;
}

/// An open `subscriptions/listen` stream, read event by event.
struct Listen {
    resp: reqwest::Response,
    parser: Parser,
    queue: std::collections::VecDeque<Value>,
}

impl Listen {
    async fn open(c: &Modern, id: &str, filter: Value) -> Listen {
        let resp = c
            .request(
                json!(id),
                "subscriptions/listen",
                json!({ "notifications": filter }),
            )
            .send()
            .await
            .expect("listen is answered");
        assert_eq!(resp.status().as_u16(), 200);
        Listen {
            resp,
            parser: Parser::new(1 << 20),
            queue: Default::default(),
        }
    }

    async fn next(&mut self) -> Value {
        loop {
            if let Some(v) = self.queue.pop_front() {
                return v;
            }
            let chunk = self.resp.chunk().await.expect("reads").expect("still open");
            for ev in self.parser.feed(&chunk).expect("SSE") {
                self.queue
                    .push_back(serde_json::from_str(&ev.data).expect("JSON"));
            }
        }
    }
}

#[tokio::test]
async fn listen_streams_only_what_each_listener_asked_for() {
    let mut shared = legacy_fixture();
    shared["isolation"] = json!("shared");
    let gw = Gateway::serve(json!({ "servers": { "fx": shared } })).await;
    let c = Modern::new(&gw, json!({}));
    let mut watcher = Listen::open(
        &c,
        "watch-1",
        json!({"resourceSubscriptions": ["test://watched-resource"]}),
    )
    .await;
    let mut other = Listen::open(&c, "other-1", json!({"toolsListChanged": true})).await;

    let ack = within(Duration::from_secs(10), "the watcher's ack", watcher.next()).await;
    assert_eq!(ack["method"], "notifications/subscriptions/acknowledged");
    assert_eq!(
        ack["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"],
        "watch-1"
    );
    assert_eq!(
        ack["params"]["notifications"]["resourceSubscriptions"],
        json!(["test://watched-resource"])
    );
    let ack = within(Duration::from_secs(10), "the other ack", other.next()).await;
    assert_eq!(ack["params"]["notifications"]["toolsListChanged"], true);
    assert!(
        ack["params"]["notifications"]
            .get("resourceSubscriptions")
            .is_none()
    );

    // The upstream subscription is made when the listen opens; touch until it has taken.
    let update = within(Duration::from_secs(10), "the update", async {
        loop {
            c.call(
                9,
                "tools/call",
                json!({"name": "fx__touch_resource",
                "arguments": {"uri": "test://watched-resource"}}),
            )
            .await;
            if let Ok(v) = tokio::time::timeout(Duration::from_millis(300), watcher.next()).await {
                return v;
            }
        }
    })
    .await;
    assert_eq!(update["method"], "notifications/resources/updated");
    assert_eq!(update["params"]["uri"], "test://watched-resource");
    assert_eq!(
        update["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"],
        "watch-1"
    );
    // The other listener never asked for it and hears nothing.
    let quiet = tokio::time::timeout(Duration::from_millis(500), other.next()).await;
    assert!(quiet.is_err(), "another listener received {:?}", quiet.ok());
}

#[tokio::test]
async fn a_modern_client_over_stdio_needs_no_initialize() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let config = support::ConfigFile::json(&json!({ "servers": { "fx": legacy_fixture() } }));
    let mut child = tokio::process::Command::new(support::toolgate_bin())
        .args(["stdio", "--log", "warn", "--config"])
        .arg(&config.path)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("toolgate stdio starts");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut send = async |msg: Value| {
        let mut line = msg.to_string();
        line.push('\n');
        stdin.write_all(line.as_bytes()).await.expect("write");
    };
    let caps = json!({"elicitation": {}});
    let call = |id: i64, extra: Value| {
        let mut params = json!({"name": "fx__test_elicitation", "arguments": {"message": "m"}, "_meta": meta(caps.clone())});
        if let Value::Object(extra) = extra {
            for (k, v) in extra {
                params[k] = v;
            }
        }
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params})
    };
    send(call(1, json!({}))).await;
    let first: Value = within(Duration::from_secs(20), "round 1", async {
        serde_json::from_str(&lines.next_line().await.expect("read").expect("a line"))
            .expect("JSON")
    })
    .await;
    assert_eq!(first["id"], 1);
    assert_eq!(first["result"]["resultType"], "input_required", "{first}");
    let state = first["result"]["requestState"].clone();
    let key = first["result"]["inputRequests"]
        .as_object()
        .expect("requests")
        .keys()
        .next()
        .cloned()
        .expect("a key");
    send(call(
        2,
        json!({"requestState": state, "inputResponses": {key: {"action": "accept",
        "content": {"username": "stdio-user", "email": "s@example.com"}}}}),
    ))
    .await;
    let second: Value = within(Duration::from_secs(20), "round 2", async {
        serde_json::from_str(&lines.next_line().await.expect("read").expect("a line"))
            .expect("JSON")
    })
    .await;
    assert_eq!(second["id"], 2);
    assert!(
        second["result"]["content"][0]["text"]
            .as_str()
            .is_some_and(|t| t.contains("stdio-user")),
        "{second}"
    );
}

const TASKS: &str = "io.modelcontextprotocol/tasks";

/// `tasks/get` until the task settles; returns the last answer.
async fn settled(c: &Modern, id: &str) -> Value {
    within(Duration::from_secs(20), "the task settling", async {
        for n in 1000.. {
            let got = c.call(n, "tasks/get", json!({ "taskId": id })).await;
            let status = got.last["result"]["status"].as_str().unwrap_or_default();
            if ["completed", "failed", "cancelled"].contains(&status) {
                return got.last["result"].clone();
            }
            assert!(
                got.last.get("error").is_none(),
                "tasks/get failed: {}",
                got.last
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        unreachable!()
    })
    .await
}

#[tokio::test]
async fn tasks_of_two_servers_keep_apart_and_ids_cannot_be_forged() {
    // One server over Streamable HTTP (task requests carry Mcp-Name upstream), one over stdio.
    let http = support::FixtureServer::http(&[]).await;
    let gw = Gateway::serve(json!({
        "servers": { "a": http.entry(), "b": stdio_server(&[]) },
    }))
    .await;
    let c = Modern::new(&gw, json!({ "extensions": { TASKS: {} } }));
    let discovered = c.call(1, "server/discover", json!({})).await;
    assert!(
        discovered.last["result"]["capabilities"]["extensions"][TASKS].is_object(),
        "{}",
        discovered.last
    );

    // A short task on each server and a long one on b.
    let create = |id: i64, server: &'static str, seconds: f64| {
        let c = &c;
        async move {
            let created = c
                .call(
                    id,
                    "tools/call",
                    json!({"name": format!("{server}__slow_compute"),
                        "arguments": {"seconds": seconds, "label": server}}),
                )
                .await;
            let result = &created.last["result"];
            assert_eq!(result["resultType"], "task", "{}", created.last);
            let task = result["taskId"].as_str().expect("a taskId").to_owned();
            assert!(
                task.starts_with("tgt1."),
                "the server's own id leaked: {task}"
            );
            task
        }
    };
    let a = create(2, "a", 0.2).await;
    let b = create(3, "b", 0.2).await;
    let long = create(4, "b", 60.0).await;
    assert!(a != b && b != long && a != long);

    // Each id reaches the server that made the task: the other one does not know it.
    for (id, server) in [(&a, "a"), (&b, "b")] {
        let done = settled(&c, id).await;
        assert_eq!(
            done["taskId"],
            *id.as_str(),
            "answered under the client's id"
        );
        assert_eq!(done["status"], "completed", "{done}");
        let text = done["result"]["content"][0]["text"]
            .as_str()
            .unwrap_or_default();
        assert!(text.starts_with(&format!("{server}:")), "{done}");
    }
    let ack = c.call(5, "tasks/cancel", json!({ "taskId": long })).await;
    assert_eq!(
        ack.last["result"],
        json!({"resultType": "complete"}),
        "{}",
        ack.last
    );
    assert_eq!(settled(&c, &long).await["status"], "cancelled");

    // Ids the gateway did not hand out are unknown tasks, whatever they name.
    let (payload, tag) = a
        .strip_prefix("tgt1.")
        .and_then(|t| t.split_once('.'))
        .expect("tgt1.<payload>.<tag>");
    let mut other_tag = tag.to_owned().into_bytes();
    other_tag[0] = if other_tag[0] == b'A' { b'B' } else { b'A' };
    let other_tag = String::from_utf8(other_tag).expect("ascii");
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut named: Value =
        serde_json::from_slice(&b64.decode(payload).expect("base64url")).expect("JSON");
    named["s"] = json!("b");
    let moved = format!("tgt1.{}.{tag}", b64.encode(named.to_string()));
    for (n, forged) in [
        format!("tgt1.{payload}.{other_tag}"),
        moved,
        "task-1".to_owned(),
    ]
    .into_iter()
    .enumerate()
    {
        let got = c
            .call(10 + n as i64, "tasks/get", json!({ "taskId": forged }))
            .await;
        assert_eq!(got.last["error"]["code"], -32602, "{forged}: {}", got.last);
        assert!(
            got.last["error"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("Unknown task")),
            "{}",
            got.last
        );
    }

    // A client that did not declare the extension is told so before any id is read.
    let plain = Modern::new(&gw, json!({}));
    let refused = plain.call(20, "tasks/get", json!({ "taskId": a })).await;
    assert_eq!(refused.status, 400);
    assert_eq!(refused.last["error"]["code"], -32021, "{}", refused.last);
    assert!(refused.last["error"]["data"]["requiredCapabilities"]["extensions"][TASKS].is_object());
    // The Mcp-Name header must name the task the body names.
    let mismatch = c
        .send(c.request_with(
            json!(21),
            "tasks/get",
            json!({ "taskId": a }),
            &[("mcp-name", b.as_str())],
        ))
        .await;
    assert_eq!(mismatch.status, 400);
    assert_eq!(mismatch.last["error"]["code"], -32020, "{}", mismatch.last);
}

#[tokio::test]
async fn a_task_id_is_worthless_to_another_principal() {
    let gw = Gateway::serve(json!({
        "policy": support::allow_everyone(),
        "auth": { "api_keys": {} },
        "servers": { "a": stdio_server(&[]) },
    }))
    .await;
    let caps = json!({ "extensions": { TASKS: {} } });
    let alice = Modern::new(&gw, caps.clone())
        .with_bearer(&support::api_key(&gw.config.path, &["--principal", "alice"]).await);
    let bob = Modern::new(&gw, caps)
        .with_bearer(&support::api_key(&gw.config.path, &["--principal", "bob"]).await);

    let created = alice
        .call(
            1,
            "tools/call",
            json!({"name": "a__slow_compute", "arguments": {"seconds": 60, "label": "x"}}),
        )
        .await;
    let task = created.last["result"]["taskId"]
        .as_str()
        .unwrap_or_else(|| panic!("no task: {}", created.last))
        .to_owned();
    // Bob holds the exact id, yet to him it is an unknown task, for every method.
    for (n, method) in [(2, "tasks/get"), (3, "tasks/cancel")] {
        let got = bob.call(n, method, json!({ "taskId": task })).await;
        assert_eq!(got.last["error"]["code"], -32602, "{method}: {}", got.last);
        let message = got.last["error"]["message"].as_str().unwrap_or_default();
        assert!(message.starts_with("Unknown task"), "{method}: {message}");
    }
    // Alice's task is untouched by Bob's attempts.
    let got = alice.call(4, "tasks/get", json!({ "taskId": task })).await;
    assert_eq!(got.last["result"]["status"], "working", "{}", got.last);
    let ack = alice
        .call(5, "tasks/cancel", json!({ "taskId": task }))
        .await;
    assert_eq!(
        ack.last["result"],
        json!({"resultType": "complete"}),
        "{}",
        ack.last
    );
}

#[tokio::test]
async fn listen_and_lists_honour_policy_per_caller() {
    let dir = tempfile::tempdir().expect("a temp dir");
    std::fs::write(
        dir.path().join("p.cedar"),
        r#"@id("ops-resources")
permit (principal in Toolgate::Group::"ops", action in [Toolgate::Action::"read_resource", Toolgate::Action::"subscribe"], resource in Toolgate::Server::"fx");
"#,
    )
    .expect("write the policy");
    let gw = Gateway::serve(json!({
        "auth": { "api_keys": {} },
        "policy": { "path": dir.path().join("p.cedar") },
        "servers": { "fx": legacy_fixture() },
    }))
    .await;
    let alice_key =
        support::api_key(&gw.config.path, &["--principal", "alice", "--group", "ops"]).await;
    let bob_key = support::api_key(&gw.config.path, &["--principal", "bob"]).await;
    let alice = Modern::new(&gw, json!({})).with_bearer(&alice_key);
    let bob = Modern::new(&gw, json!({})).with_bearer(&bob_key);
    let watched = "test://watched-resource";

    for (who, c, expected) in [
        ("alice", &alice, json!([watched])),
        ("bob", &bob, json!([])),
    ] {
        let mut l = Listen::open(c, who, json!({"resourceSubscriptions": [watched]})).await;
        let ack = within(Duration::from_secs(10), "the ack", l.next()).await;
        assert_eq!(
            ack["params"]["notifications"]["resourceSubscriptions"], expected,
            "{who}: {ack}"
        );
        let listed = c.call(2, "resources/list", json!({})).await;
        let uris: Vec<&str> = listed.last["result"]["resources"]
            .as_array()
            .expect("resources")
            .iter()
            .filter_map(|r| r["uri"].as_str())
            .collect();
        assert_eq!(uris.contains(&watched), who == "alice", "{who}: {uris:?}");
        // A list filtered per caller is never public.
        assert_eq!(listed.last["result"]["cacheScope"], "private");
    }
    // A resource bob cannot see does not exist for him.
    let read = bob
        .call(3, "resources/read", json!({"uri": "test://static-text"}))
        .await;
    assert!(read.last.get("error").is_some(), "{}", read.last);
}
