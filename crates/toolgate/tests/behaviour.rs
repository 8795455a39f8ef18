//! Gateway behaviours a user relies on, one focused test each, through the real `toolgate` binary
//! with `toolgate-fixture` behind it: pass-through of what no spec defines, the HTTP edge's
//! errors, pagination, config rules (hide, rename, prefix modes), servers that misbehave or crash,
//! failure modes, `toolgate check`, cancellation, and resource subscriptions.

mod support;

use reqwest::Method;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use support::{
    Client, ConfigFile, FixtureServer, Gateway, Options, Transport, first_text, names, raw_mcp,
    within,
};

/// Every test here finishes well within this, or fails instead of hanging.
const TEST_TIMEOUT: Duration = Duration::from_secs(90);
/// A failing upstream must be reported much faster than its configured call timeout.
const FAST_FAILURE: Duration = Duration::from_secs(10);

/// A gateway whose only server is the stdio fixture `fx`, with `fx_extra` merged into its entry
/// and `extra` into the top level of the config.
async fn gateway_with_fx(fixture_args: &[&str], fx_extra: Value, extra: Value) -> Gateway {
    let mut fx = support::stdio_server(fixture_args);
    merge(&mut fx, fx_extra);
    let mut config = json!({ "servers": { "fx": fx } });
    merge(&mut config, extra);
    Gateway::serve(config).await
}

fn merge(into: &mut Value, from: Value) {
    if let (Some(into), Value::Object(from)) = (into.as_object_mut(), from) {
        into.extend(from);
    }
}

async fn http_client(gw: &Gateway) -> Client {
    gw.client(Transport::StreamableHttp, Options::default())
        .await
}

fn parse(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body:?}"))
}

fn error_naming(error: &Value, server: &str) {
    let message = error["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!("'{server}'")),
        "the error should name server {server}: {error}"
    );
    assert_eq!(error["data"]["server"], server, "{error}");
}

/// Wait for the progress notification a `sleep` call with this token sends as it starts: the
/// call is then running upstream.
async fn wait_running(client: &Client, token: &str) {
    client
        .wait_notification(&format!("progress for {token}"), |n| {
            n["method"] == "notifications/progress" && n["params"]["progressToken"] == token
        })
        .await;
}

/// Start `tool` = `sleep` for `ms` with a progress token and wait until it runs upstream.
async fn start_sleeping(
    client: &Client,
    tool: &str,
    ms: u64,
) -> (Value, tokio::sync::oneshot::Receiver<Value>) {
    let token = format!("sleeping-in-{tool}");
    let started = client.start_request(
        "tools/call",
        json!({
            "name": tool,
            "arguments": { "ms": ms },
            "_meta": { "progressToken": token },
        }),
    );
    wait_running(client, &token).await;
    started
}

async fn response_of(rx: tokio::sync::oneshot::Receiver<Value>, what: &str) -> Value {
    within(FAST_FAILURE, what, rx)
        .await
        .unwrap_or_else(|_| panic!("{what}: the client went away"))
}

// ---------------------------------------------------------------------------------------------
// Pass-through

#[tokio::test]
async fn unknown_fields_pass_through_unchanged() {
    within(TEST_TIMEOUT, "test", async {
        let gw = gateway_with_fx(&[], json!({}), json!({})).await;
        let client = http_client(&gw).await;
        let direct = support::direct_fixture_client(&[]).await;

        let listed = client.list_all("tools/list", "tools").await;
        let through = listed
            .iter()
            .find(|t| t["name"] == "fx__test_unknown_fields")
            .expect("listed by the gateway")
            .clone();
        let mut original = direct
            .list_all("tools/list", "tools")
            .await
            .into_iter()
            .find(|t| t["name"] == "test_unknown_fields")
            .expect("listed by the fixture");
        assert!(original.get("x_unknown_field").is_some(), "{original}");
        original["name"] = json!("fx__test_unknown_fields");
        // Same members, values, and order: only the name changed.
        assert_eq!(through.to_string(), original.to_string());

        let through = client.call_tool("fx__test_unknown_fields", json!({})).await;
        let original = direct.call_tool("test_unknown_fields", json!({})).await;
        assert_eq!(original["content"][1]["type"], "x_unknown_content");
        assert_eq!(through.to_string(), original.to_string());
        direct.close().await;
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// The HTTP edge

#[tokio::test]
async fn malformed_json_is_a_400_parse_error() {
    within(TEST_TIMEOUT, "test", async {
        let gw = gateway_with_fx(&[], json!({}), json!({})).await;
        let (status, body) = raw_mcp(&gw.base, Method::POST, None, &[], "{nope").await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(parse(&body)["error"]["code"], -32700, "{body}");

        let client = http_client(&gw).await;
        let session = client.session_id();
        let (status, body) = raw_mcp(
            &gw.base,
            Method::POST,
            session.as_deref(),
            &[],
            "{\"jsonrpc\":",
        )
        .await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(parse(&body)["error"]["code"], -32700, "{body}");
        // The session survives a bad message.
        assert_eq!(client.result("ping", Value::Null).await, json!({}));
    })
    .await;
}

#[tokio::test]
async fn unknown_method_is_method_not_found() {
    within(TEST_TIMEOUT, "test", async {
        let gw = gateway_with_fx(&[], json!({}), json!({})).await;
        let client = http_client(&gw).await;
        let error = client.error("no/such/method", json!({})).await;
        assert_eq!(error["code"], -32601, "{error}");
    })
    .await;
}

#[tokio::test]
async fn hidden_and_unknown_tools_get_the_same_error() {
    within(TEST_TIMEOUT, "test", async {
        let gw = gateway_with_fx(&[], json!({ "tools": { "hide": ["echo"] } }), json!({})).await;
        let client = http_client(&gw).await;
        let listed = names(&client.list_all("tools/list", "tools").await);
        assert!(!listed.iter().any(|n| n.ends_with("echo")), "{listed:?}");

        let hidden = client
            .error(
                "tools/call",
                json!({ "name": "fx__echo", "arguments": { "text": "hi" } }),
            )
            .await;
        let unknown = client
            .error(
                "tools/call",
                json!({ "name": "fx__nope", "arguments": { "text": "hi" } }),
            )
            .await;
        assert_eq!(hidden["code"], -32602);
        assert_eq!(hidden["message"], "Unknown tool: fx__echo");
        assert_eq!(unknown["message"], "Unknown tool: fx__nope");
        assert_eq!(hidden.get("data"), unknown.get("data"));
        assert_eq!(hidden["code"], unknown["code"]);
    })
    .await;
}

#[tokio::test]
async fn a_post_is_json_by_its_content_type_in_any_case() {
    within(TEST_TIMEOUT, "test", async {
        let gw = gateway_with_fx(&[], json!({}), json!({})).await;
        let client = http_client(&gw).await;
        let session = client.session_id().expect("a legacy session");
        let post = |content_type: &'static str| {
            reqwest::Client::new()
                .post(format!("{}/mcp", gw.base))
                .header("content-type", content_type)
                .header("accept", "application/json, text/event-stream")
                .header("mcp-session-id", session.clone())
                .body(r#"{"jsonrpc":"2.0","id":5,"method":"ping"}"#)
                .send()
        };
        for content_type in ["Application/JSON; charset=utf-8", "  application/json"] {
            let resp = post(content_type).await.unwrap();
            assert_eq!(resp.status(), 200, "{content_type}");
            let body: Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
            assert_eq!(body["id"], 5, "{content_type}: {body}");
            assert_eq!(body["result"], json!({}), "{content_type}: {body}");
        }
        for content_type in ["text/plain", "application/jso", "json"] {
            let resp = post(content_type).await.unwrap();
            assert_eq!(resp.status(), 415, "{content_type}");
            let body: Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
            assert_eq!(body["error"]["code"], -32600, "{content_type}: {body}");
        }
    })
    .await;
}

#[tokio::test]
async fn a_body_over_max_message_bytes_is_413() {
    within(TEST_TIMEOUT, "test", async {
        // The limit also applies to what upstreams send (the fixture's tools/list is several KiB),
        // so it cannot be tiny here.
        let limit = 64 * 1024;
        let gw = gateway_with_fx(&[], json!({}), json!({ "max_message_bytes": limit })).await;
        let client = http_client(&gw).await;
        let session = client.session_id();
        let big = json!({
            "jsonrpc": "2.0", "id": 9, "method": "tools/call",
            "params": { "name": "fx__echo", "arguments": { "text": "x".repeat(limit + 1) } },
        });
        let (status, body) = raw_mcp(
            &gw.base,
            Method::POST,
            session.as_deref(),
            &[],
            big.to_string(),
        )
        .await;
        assert_eq!(status, 413, "{body}");
        let error: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(error["error"]["code"], -32600, "{body}");
        assert!(
            error["error"]["message"]
                .as_str()
                .unwrap()
                .contains(&limit.to_string()),
            "{body}"
        );
        // Under the limit still works, on the same session.
        let result = client
            .call_tool("fx__echo", json!({ "text": "y".repeat(limit / 2) }))
            .await;
        assert_eq!(first_text(&result).len(), limit / 2);
    })
    .await;
}

#[tokio::test]
async fn requests_need_a_live_session() {
    within(TEST_TIMEOUT, "test", async {
        let gw = gateway_with_fx(&[], json!({}), json!({})).await;
        let list = json!({ "jsonrpc": "2.0", "id": 2, "method": "tools/list" }).to_string();

        let (status, body) = raw_mcp(&gw.base, Method::POST, None, &[], list.clone()).await;
        assert_eq!(status, 400, "without Mcp-Session-Id: {body}");
        let (status, body) = raw_mcp(
            &gw.base,
            Method::POST,
            Some("0123456789abcdef0123456789abcdef"),
            &[],
            list.clone(),
        )
        .await;
        assert_eq!(status, 404, "an unknown session: {body}");

        let client = http_client(&gw).await;
        let session = client.session_id().expect("a session id");
        let (status, _) = raw_mcp(&gw.base, Method::POST, Some(&session), &[], list.clone()).await;
        assert_eq!(status, 200, "the live session");
        let (status, _) = raw_mcp(&gw.base, Method::DELETE, Some(&session), &[], "").await;
        assert!((200..300).contains(&status), "DELETE answered {status}");
        let (status, body) = raw_mcp(&gw.base, Method::POST, Some(&session), &[], list).await;
        assert_eq!(status, 404, "after DELETE: {body}");
    })
    .await;
}

#[tokio::test]
async fn a_foreign_origin_is_403() {
    within(TEST_TIMEOUT, "test", async {
        let gw = gateway_with_fx(&[], json!({}), json!({})).await;
        let init = support::initialize_body();
        let (status, body) = raw_mcp(
            &gw.base,
            Method::POST,
            None,
            &[("origin", "http://evil.example")],
            init.clone(),
        )
        .await;
        assert_eq!(status, 403, "{body}");
        let (status, body) = raw_mcp(
            &gw.base,
            Method::POST,
            None,
            &[("origin", "http://localhost:5173")],
            init,
        )
        .await;
        assert_eq!(status, 200, "a loopback origin: {body}");
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Pagination

#[tokio::test]
async fn pagination_yields_every_tool_exactly_once() {
    within(TEST_TIMEOUT, "test", async {
        let gw = gateway_with_fx(
            &["--extra-tools", "7"],
            json!({}),
            json!({ "page_size": 2 }),
        )
        .await;
        let client = http_client(&gw).await;
        let mut seen = Vec::new();
        let mut cursor: Option<Value> = None;
        let mut pages = 0;
        loop {
            let params = cursor
                .as_ref()
                .map_or(json!({}), |c| json!({ "cursor": c }));
            let page = client.result("tools/list", params).await;
            let tools = page["tools"].as_array().expect("tools");
            assert!(tools.len() <= 2, "page_size 2: {page}");
            seen.extend(names(tools));
            pages += 1;
            assert!(pages < 100, "pagination does not end");
            match page.get("nextCursor") {
                Some(c) => cursor = Some(c.clone()),
                None => break,
            }
        }
        let direct = support::direct_fixture_client(&["--extra-tools", "7"]).await;
        let mut expected: Vec<String> = names(&direct.list_all("tools/list", "tools").await)
            .into_iter()
            .map(|n| format!("fx__{n}"))
            .collect();
        direct.close().await;
        let mut sorted = seen.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), seen.len(), "a tool came twice: {seen:?}");
        expected.sort();
        assert_eq!(sorted, expected);
        assert!(expected.contains(&"fx__tool_6".to_owned()));
    })
    .await;
}

#[tokio::test]
async fn a_forged_cursor_is_invalid_params() {
    within(TEST_TIMEOUT, "test", async {
        let gw = gateway_with_fx(&[], json!({}), json!({ "page_size": 2 })).await;
        let client = http_client(&gw).await;
        let first = client.result("tools/list", json!({})).await;
        let real = first["nextCursor"]
            .as_str()
            .expect("a second page")
            .to_owned();
        // Flip the last character of the tag.
        let mut forged = real.clone();
        let last = forged.pop().expect("not empty");
        forged.push(if last == '0' { '1' } else { '0' });
        for cursor in [forged.as_str(), "garbage", ""] {
            let error = client
                .error("tools/list", json!({ "cursor": cursor }))
                .await;
            assert_eq!(error["code"], -32602, "cursor {cursor:?}: {error}");
        }
        // A tools cursor is no prompts cursor.
        let error = client
            .error("prompts/list", json!({ "cursor": real }))
            .await;
        assert_eq!(error["code"], -32602, "{error}");
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Config rules

#[tokio::test]
async fn rename_and_hide_take_effect() {
    within(TEST_TIMEOUT, "test", async {
        let rules = json!({
            "tools": { "hide": ["echo"], "rename": { "test_simple_text": "simple" } },
            "prompts": {
                "hide": ["test_prompt_with_image"],
                "rename": { "test_simple_prompt": "greeting" },
            },
        });
        let gw = gateway_with_fx(&[], rules, json!({})).await;
        let client = http_client(&gw).await;
        let tools = names(&client.list_all("tools/list", "tools").await);
        assert!(tools.contains(&"simple".to_owned()), "{tools:?}");
        assert!(
            !tools.iter().any(|n| n.contains("test_simple_text")),
            "{tools:?}"
        );
        assert!(!tools.iter().any(|n| n.contains("echo")), "{tools:?}");
        assert!(
            tools.contains(&"fx__sleep".to_owned()),
            "others keep the prefix"
        );
        let result = client.call_tool("simple", json!({})).await;
        assert_eq!(
            first_text(&result),
            "This is a simple text response for testing."
        );
        let error = client
            .error("tools/call", json!({ "name": "fx__test_simple_text" }))
            .await;
        assert_eq!(error["message"], "Unknown tool: fx__test_simple_text");

        let prompts = names(&client.list_all("prompts/list", "prompts").await);
        assert!(prompts.contains(&"greeting".to_owned()), "{prompts:?}");
        assert!(!prompts.iter().any(|n| n.contains("image")), "{prompts:?}");
        let got = client
            .result("prompts/get", json!({ "name": "greeting" }))
            .await;
        assert_eq!(
            got.pointer("/messages/0/content/text"),
            Some(&json!("This is a simple prompt for testing."))
        );
        let error = client
            .error(
                "prompts/get",
                json!({ "name": "fx__test_prompt_with_image" }),
            )
            .await;
        assert_eq!(
            error["message"],
            "Unknown prompt: fx__test_prompt_with_image"
        );
    })
    .await;
}

/// Two fixtures, `a` and `b`, behind `toolgate stdio` in `mode`; only `b` has `tool_0` and
/// `tool_1`, so a call of `tool_0` under its exposed name shows it is routed to `b`. Returns the
/// client and the tool names it lists.
async fn names_in_prefix_mode(mode: &str) -> (Client, Vec<String>) {
    let config = ConfigFile::json(&json!({
        "prefix_mode": mode,
        "servers": {
            "a": support::stdio_server(&[]),
            "b": support::stdio_server(&["--extra-tools", "2"]),
        },
    }));
    let client = support::stdio_gateway_client(&config, Options::default()).await;
    let listed = names(&client.list_all("tools/list", "tools").await);
    // The client's child (toolgate stdio) reads the config once at start; the file can go.
    drop(config);
    (client, listed)
}

fn has(names: &[String], name: &str) -> bool {
    names.iter().any(|n| n == name)
}

#[tokio::test]
async fn prefix_mode_always_prefixes_every_name() {
    within(TEST_TIMEOUT, "test", async {
        let (client, listed) = names_in_prefix_mode("always").await;
        for name in ["a__echo", "b__echo", "b__tool_0", "a__test_simple_text"] {
            assert!(has(&listed, name), "{name} in {listed:?}");
        }
        assert!(
            listed
                .iter()
                .all(|n| n.starts_with("a__") || n.starts_with("b__")),
            "{listed:?}"
        );
        let result = client
            .call_tool("b__tool_0", json!({ "text": "to b" }))
            .await;
        assert_eq!(first_text(&result), "to b");
    })
    .await;
}

#[tokio::test]
async fn prefix_mode_conditional_prefixes_only_shared_names() {
    within(TEST_TIMEOUT, "test", async {
        let (client, listed) = names_in_prefix_mode("conditional").await;
        for name in ["a__echo", "b__echo", "tool_0", "tool_1"] {
            assert!(has(&listed, name), "{name} in {listed:?}");
        }
        assert!(
            !has(&listed, "echo") && !has(&listed, "b__tool_0"),
            "{listed:?}"
        );
        let result = client.call_tool("tool_0", json!({ "text": "to b" })).await;
        assert_eq!(first_text(&result), "to b");
        let result = client.call_tool("a__echo", json!({ "text": "to a" })).await;
        assert_eq!(first_text(&result), "to a");
    })
    .await;
}

#[tokio::test]
async fn prefix_mode_never_keeps_names_and_prefixes_only_the_later_clash() {
    within(TEST_TIMEOUT, "test", async {
        let (client, listed) = names_in_prefix_mode("never").await;
        for name in [
            "echo",
            "b__echo",
            "tool_0",
            "test_simple_text",
            "b__test_simple_text",
        ] {
            assert!(has(&listed, name), "{name} in {listed:?}");
        }
        assert!(!has(&listed, "a__echo"), "{listed:?}");
        let result = client.call_tool("tool_0", json!({ "text": "to b" })).await;
        assert_eq!(first_text(&result), "to b");
        let result = client.call_tool("echo", json!({ "text": "to a" })).await;
        assert_eq!(first_text(&result), "to a");
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Servers that misbehave

#[tokio::test]
async fn garbage_on_stdout_fails_the_calls_in_flight_and_nothing_else() {
    within(TEST_TIMEOUT, "test", async {
        let gw = Gateway::serve(json!({
            "servers": {
                "bad": fixture_entry(&["--fault-tools"], json!({ "timeout": "30s" })),
                "good": support::stdio_server(&[]),
            },
        }))
        .await;
        let client = http_client(&gw).await;
        let (_, sleeping) = start_sleeping(&client, "bad__sleep", 20_000).await;
        let (_, bystander) = start_sleeping(&client, "good__sleep", 1_000).await;

        let started = Instant::now();
        let error = client
            .error("tools/call", json!({ "name": "bad__corrupt_stdout" }))
            .await;
        assert!(
            started.elapsed() < FAST_FAILURE,
            "took {:?}",
            started.elapsed()
        );
        error_naming(&error, "bad");
        assert_eq!(error["code"], -32052, "a protocol violation: {error}");
        let other = response_of(sleeping, "the sleep in flight").await;
        error_naming(&other["error"], "bad");

        // Everything else keeps serving, including the call in flight on the other server.
        let other = response_of(bystander, "the other server's sleep").await;
        assert_eq!(first_text(&other["result"]), "slept 1000 ms", "{other}");
        let result = client.call_tool("good__test_simple_text", json!({})).await;
        assert_eq!(
            first_text(&result),
            "This is a simple text response for testing."
        );
        assert_eq!(client.result("ping", Value::Null).await, json!({}));
        // And the broken server gets a new child for the next call.
        let result = client.call_tool("bad__test_simple_text", json!({})).await;
        assert_eq!(
            first_text(&result),
            "This is a simple text response for testing."
        );
    })
    .await;
}

/// A stdio fixture entry with more members.
fn with(mut entry: Value, extra: Value) -> Value {
    merge(&mut entry, extra);
    entry
}

fn fixture_entry(args: &[&str], extra: Value) -> Value {
    let mut entry = support::stdio_server(args);
    merge(&mut entry, extra);
    entry
}

#[tokio::test]
async fn a_crash_fails_the_call_at_once_and_the_server_comes_back() {
    within(TEST_TIMEOUT, "test", async {
        let gw = Gateway::serve(json!({
            "servers": {
                "mine": fixture_entry(&["--fault-tools"], json!({ "timeout": "30s" })),
                "ours": fixture_entry(
                    &["--fault-tools"],
                    json!({ "timeout": "30s", "isolation": "shared" }),
                ),
            },
        }))
        .await;
        let client = http_client(&gw).await;
        for server in ["mine", "ours"] {
            let (_, sleeping) = start_sleeping(&client, &format!("{server}__sleep"), 20_000).await;
            let started = Instant::now();
            let error = client
                .error("tools/call", json!({ "name": format!("{server}__crash") }))
                .await;
            assert!(
                started.elapsed() < FAST_FAILURE,
                "{server}: the crash was reported after {:?}",
                started.elapsed()
            );
            error_naming(&error, server);
            let other = response_of(sleeping, "the sleep in flight").await;
            error_naming(&other["error"], server);
        }

        // per_session: the next call starts a new child.
        let result = client.call_tool("mine__test_simple_text", json!({})).await;
        assert_eq!(
            first_text(&result),
            "This is a simple text response for testing."
        );

        // shared: the supervisor restarts the child; calls work again once it is back.
        let deadline = Instant::now() + FAST_FAILURE;
        loop {
            let resp = client
                .request(
                    "tools/call",
                    json!({ "name": "ours__test_simple_text", "arguments": {} }),
                )
                .await;
            if let Some(result) = resp.get("result") {
                assert_eq!(
                    first_text(result),
                    "This is a simple text response for testing."
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the shared server did not come back: {resp}"
            );
            // Polling for the restart: nothing tells a client that the server is back.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Failure modes

const MISSING: &str = "/nonexistent/toolgate-test-missing-server";

#[tokio::test]
async fn failure_open_leaves_the_others_serving_and_catalog_says_why() {
    within(TEST_TIMEOUT, "test", async {
        let config = json!({
            "servers": {
                "missing": { "command": MISSING, "failure": "open" },
                "good": support::stdio_server(&[]),
            },
        });
        let gw = Gateway::serve(config).await;
        let client = http_client(&gw).await;
        let result = client.call_tool("good__test_simple_text", json!({})).await;
        assert_eq!(
            first_text(&result),
            "This is a simple text response for testing."
        );
        let listed = names(&client.list_all("tools/list", "tools").await);
        assert!(
            !listed.iter().any(|n| n.starts_with("missing__")),
            "{listed:?}"
        );

        let path = gw.config.path.to_string_lossy().into_owned();
        let (code, stdout, stderr) =
            support::run_toolgate(&["catalog", "--json", "--config", &path], TEST_TIMEOUT).await;
        assert_eq!(code, Some(0), "{stderr}");
        let catalog = parse(&stdout);
        let servers = catalog["servers"].as_array().expect("servers");
        let missing = servers
            .iter()
            .find(|s| s["name"] == "missing")
            .expect("listed");
        assert_eq!(missing["status"], "down", "{missing}");
        let reason = missing["reason"].as_str().unwrap_or_default();
        assert!(
            reason.contains("cannot start") && reason.contains(MISSING),
            "{reason}"
        );
        let good = servers
            .iter()
            .find(|s| s["name"] == "good")
            .expect("listed");
        assert_eq!(good["status"], "ready", "{good}");
    })
    .await;
}

#[tokio::test]
async fn failure_closed_makes_serve_exit_non_zero() {
    within(TEST_TIMEOUT, "test", async {
        let config = ConfigFile::json(&json!({
            "servers": {
                "missing": { "command": MISSING, "failure": "closed" },
                "good": support::stdio_server(&[]),
            },
        }));
        let path = config.path.to_string_lossy().into_owned();
        let (code, _, stderr) = support::run_toolgate(
            &["serve", "--config", &path, "--listen", "127.0.0.1:0"],
            Duration::from_secs(60),
        )
        .await;
        assert!(
            code.is_some_and(|c| c != 0),
            "exit {code:?}; stderr:\n{stderr}"
        );
        assert!(stderr.contains("'missing'"), "{stderr}");
    })
    .await;
}

#[tokio::test]
async fn check_reports_an_unknown_key_with_file_line_and_key() {
    within(TEST_TIMEOUT, "test", async {
        let config = ConfigFile::text(
            "gateway.yaml",
            "prefix_mode: always\nservers:\n  fx:\n    command: /bin/true\n    bogus_key: 1\n",
        );
        let path = config.path.to_string_lossy().into_owned();
        let (code, stdout, stderr) =
            support::run_toolgate(&["check", "--config", &path], TEST_TIMEOUT).await;
        assert_eq!(code, Some(1), "stdout: {stdout}\nstderr: {stderr}");
        assert!(stderr.contains(&format!("{path}:5")), "{stderr}");
        assert!(stderr.contains("bogus_key"), "{stderr}");

        let good = ConfigFile::text("gateway.yaml", "servers:\n  fx:\n    command: /bin/true\n");
        let path = good.path.to_string_lossy().into_owned();
        let (code, _, stderr) =
            support::run_toolgate(&["check", "--config", &path], TEST_TIMEOUT).await;
        assert_eq!(code, Some(0), "{stderr}");
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Cancellation and subscriptions

#[tokio::test]
async fn cancelling_a_call_cancels_it_upstream_and_it_gets_no_response() {
    within(TEST_TIMEOUT, "test", async {
        // Legacy-era upstreams: a cancel is a notifications/cancelled message.
        let http = FixtureServer::http(&[]).await;
        let gw = Gateway::serve(json!({
            "servers": {
                "a": fixture_entry(&[], json!({ "era": "legacy" })),
                "b": with(http.entry(), json!({ "era": "legacy" })),
            },
        }))
        .await;
        let client = http_client(&gw).await;
        for server in ["a", "b"] {
            let started = Instant::now();
            let (id, mut response) =
                start_sleeping(&client, &format!("{server}__sleep"), 20_000).await;
            client
                .notify(
                    "notifications/cancelled",
                    Some(json!({ "requestId": id, "reason": "the user gave up" })),
                )
                .await;
            // The server's own count of cancelled sleeps is the only sign it saw the cancel.
            let deadline = Instant::now() + FAST_FAILURE;
            loop {
                let count = client
                    .call_tool(&format!("{server}__sleep_cancellations"), json!({}))
                    .await;
                if first_text(&count) == "1" {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{server} never saw the cancel: {count}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            assert!(
                started.elapsed() < FAST_FAILURE,
                "{server}: the 20 s sleep ran on"
            );
            // The call's response stream ends without a response.
            client.wait_stream_ended(&id).await;
            assert!(
                matches!(
                    response.try_recv(),
                    Err(tokio::sync::oneshot::error::TryRecvError::Empty)
                ),
                "{server}: a cancelled request got a response"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn resource_updates_reach_only_subscribed_sessions() {
    within(TEST_TIMEOUT, "test", async {
        // Legacy-era upstreams: subscriptions live in upstream sessions.
        let gw = Gateway::serve(json!({
            "servers": {
                "a": fixture_entry(&[], json!({ "era": "legacy" })),
                "s": fixture_entry(&[], json!({ "isolation": "shared", "era": "legacy" })),
            },
        }))
        .await;
        let c1 = http_client(&gw).await;
        let c2 = http_client(&gw).await;
        let watched: Vec<String> = c1
            .list_all("resources/list", "resources")
            .await
            .into_iter()
            .filter(|r| r["name"] == "watched-resource")
            .filter_map(|r| r["uri"].as_str().map(str::to_owned))
            .collect();
        // The first server keeps the URI; the second's is rewritten to route back to it.
        let (a_uri, s_uri) = (
            "test://watched-resource",
            "toolgate://s/test://watched-resource",
        );
        assert_eq!(watched, [a_uri, s_uri]);
        let updated = |uri: &'static str| {
            move |n: &Value| {
                n["method"] == "notifications/resources/updated" && n["params"]["uri"] == uri
            }
        };
        let touch = json!({ "uri": "test://watched-resource" });

        // a is per_session: c1's subscription lives in c1's own upstream session.
        assert_eq!(
            c1.result("resources/subscribe", json!({ "uri": a_uri }))
                .await,
            json!({})
        );
        c1.call_tool("a__touch_resource", touch.clone()).await;
        c1.wait_notification("c1's update from a", updated(a_uri))
            .await;
        let result = c2.call_tool("a__touch_resource", touch.clone()).await;
        assert!(first_text(&result).contains("no subscription"), "{result}");

        // s is shared: c2's touch reaches the upstream c1 subscribed through.
        c1.result("resources/subscribe", json!({ "uri": s_uri }))
            .await;
        let result = c2.call_tool("s__touch_resource", touch.clone()).await;
        assert!(first_text(&result).contains("notified"), "{result}");
        c1.wait_notification("c1's update from s", updated(s_uri))
            .await;

        // c2 sees its own update, and it is the first it ever got: none of c1's came before it.
        c2.result("resources/subscribe", json!({ "uri": a_uri }))
            .await;
        c2.call_tool("a__touch_resource", touch).await;
        c2.wait_notification("c2's update from a", updated(a_uri))
            .await;
        let is_update = |n: &&Value| n["method"] == "notifications/resources/updated";
        let c2_updates: Vec<Value> = c2
            .notifications()
            .iter()
            .filter(is_update)
            .cloned()
            .collect();
        assert_eq!(
            c2_updates.len(),
            1,
            "c2 got others' updates: {c2_updates:?}"
        );
        let c1_updates: Vec<Value> = c1
            .notifications()
            .iter()
            .filter(is_update)
            .cloned()
            .collect();
        assert_eq!(c1_updates.len(), 2, "c1: {c1_updates:?}");
    })
    .await;
}

/// `/readyz`: ready while every required server is up and the key store answers; 503 naming
/// the server once a required one is down. No credential is needed to ask.
#[tokio::test]
async fn readyz_names_what_is_not_ready() {
    within(TEST_TIMEOUT, "readiness", async {
        // A required stdio server that starts once: after `broken` exists, every restart fails.
        let dir = tempfile::tempdir().expect("a temp dir");
        let broken = dir.path().join("broken");
        let script = format!(
            "[ -e '{}' ] && exit 1; '{}' stdio",
            broken.display(),
            support::fixture_bin().display()
        );
        let gw = Gateway::serve(json!({
            "auth": { "api_keys": {} },
            "policy": support::allow_everyone(),
            "servers": {
                "fx": { "command": "/bin/sh", "args": ["-c", script], "failure": "closed", "isolation": "shared" },
                "spare": support::stdio_server(&[]),
            },
        }))
        .await;
        let get = || async {
            let resp = reqwest::get(format!("{}/readyz", gw.base)).await.expect("answers");
            let status = resp.status().as_u16();
            let text = resp.text().await.expect("a body");
            let body: Value = serde_json::from_str(&text).expect("JSON");
            (status, body)
        };
        let (status, body) = get().await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["ready"], true);
        assert_eq!(body["checks"]["server:fx"]["ok"], true);
        assert_eq!(body["checks"]["store"]["ok"], true);
        assert!(body["checks"].get("server:spare").is_none(), "only required servers count");

        std::fs::write(&broken, "").expect("mark broken");
        // Kill the server (the shell and the fixture it started); its restart then fails.
        let found = std::process::Command::new("pgrep")
            .args(["-f", &broken.display().to_string()])
            .output()
            .expect("pgrep runs");
        let shells = String::from_utf8_lossy(&found.stdout).into_owned();
        assert!(!shells.trim().is_empty(), "the server's shell was not found");
        for pid in shells.split_whitespace() {
            let _ = std::process::Command::new("pkill")
                .args(["-KILL", "-P", pid])
                .status();
            let _ = std::process::Command::new("kill")
                .args(["-KILL", pid])
                .status();
        }
        let deadline = Instant::now() + FAST_FAILURE;
        loop {
            let (status, body) = get().await;
            if status == 503 {
                assert_eq!(body["ready"], false);
                assert_eq!(body["checks"]["server:fx"]["ok"], false, "{body}");
                break;
            }
            assert!(Instant::now() < deadline, "still ready with fx down: {body}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
}
