//! The transport matrix, end to end through the real `toolgate` binary: every downstream transport
//! (Streamable HTTP, legacy HTTP+SSE, stdio) against every upstream transport (the fixture over
//! stdio, Streamable HTTP and legacy HTTP+SSE), one upstream at a time and all three at once.
//!
//! Each test is one upstream configuration: one `toolgate serve` serves the HTTP and SSE clients
//! and a `toolgate stdio` on the same config serves the stdio client, all three concurrently.
//! Every combination runs to its end even when another fails, and the test names each failing
//! combination. The checks are what a user sees: the merged tool list, a call's text, progress
//! with the client's own token, sampling and elicitation round trips, resources, prompts,
//! completion, ping, and members no spec defines passing through untouched.

mod support;

use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use support::client::sampled;
use support::{FixtureServer, Gateway, Options, Transport, first_text, names, within};

/// How long one configuration's whole matrix row may take.
const ROW_TIMEOUT: Duration = Duration::from_secs(120);

/// The fixture tools every upstream must expose, prefixed with its server name.
const FIXTURE_TOOLS: &[&str] = &[
    "test_simple_text",
    "test_tool_with_progress",
    "test_sampling",
    "test_elicitation",
    "test_unknown_fields",
    "echo",
    "sleep",
    "touch_resource",
];

const STATIC_TEXT: &str = "This is the content of the static text resource.";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Upstream {
    Stdio,
    Http,
    Sse,
}

impl Upstream {
    /// Also the server's name in the config, so tools are `stdio__…`, `http__…`, `sse__…`.
    fn name(self) -> &'static str {
        match self {
            Upstream::Stdio => "stdio",
            Upstream::Http => "http",
            Upstream::Sse => "sse",
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdio_upstream() {
    run_row(&[Upstream::Stdio]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamable_http_upstream() {
    run_row(&[Upstream::Http]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_sse_upstream() {
    run_row(&[Upstream::Sse]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_three_upstreams_at_once() {
    run_row(&[Upstream::Stdio, Upstream::Http, Upstream::Sse]).await;
}

/// One gateway for these upstreams; every client transport against it.
async fn run_row(upstreams: &[Upstream]) {
    let row = upstreams
        .iter()
        .map(|u| format!("{} upstream", u.name()))
        .collect::<Vec<_>>()
        .join(" + ");
    let failures = within(ROW_TIMEOUT, &row, async {
        let mut fixtures = Vec::new();
        let mut servers = serde_json::Map::new();
        for &u in upstreams {
            let entry = match u {
                Upstream::Stdio => support::stdio_server(&[]),
                Upstream::Http => {
                    fixtures.push(FixtureServer::http(&[]).await);
                    fixtures[fixtures.len() - 1].entry()
                }
                Upstream::Sse => {
                    fixtures.push(FixtureServer::sse(&[]).await);
                    fixtures[fixtures.len() - 1].entry()
                }
            };
            servers.insert(u.name().to_owned(), entry);
        }
        let config = json!({ "prefix_mode": "always", "servers": servers });
        let gw = Arc::new(Gateway::serve(config).await);
        let names: Vec<&'static str> = upstreams.iter().map(|u| u.name()).collect();
        let runs: Vec<_> = Transport::ALL
            .into_iter()
            .map(|t| {
                let (gw, names) = (gw.clone(), names.clone());
                (
                    t,
                    tokio::spawn(async move { user_view(&gw, t, &names).await }),
                )
            })
            .collect();
        let mut failures = Vec::new();
        for (t, run) in runs {
            if let Err(e) = run.await {
                failures.push(format!("{t} × {row}: {}", panic_text(e)));
            }
        }
        if !failures.is_empty() {
            eprintln!(
                "--- toolgate serve stderr ---\n{}",
                support::client::tail(&gw.stderr(), 80)
            );
        }
        drop(fixtures);
        failures
    })
    .await;
    assert!(
        failures.is_empty(),
        "{} of {} combinations failed:\n{}",
        failures.len(),
        Transport::ALL.len(),
        failures.join("\n")
    );
}

fn panic_text(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(p) => p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "(a panic without a message)".into()),
        Err(e) => e.to_string(),
    }
}

/// Everything one user checks through one client transport.
async fn user_view(gw: &Gateway, transport: Transport, servers: &[&str]) {
    let options = match transport {
        // Legacy SSE clients are the 2024-11-05 generation.
        Transport::LegacySse => Options {
            protocol_version: "2024-11-05".into(),
            ..Options::default()
        },
        _ => Options::default(),
    };
    let client = gw.client(transport, options).await;
    assert_eq!(client.init["serverInfo"]["name"], "toolgate");
    assert_eq!(client.result("ping", Value::Null).await, json!({}), "ping");

    let tools = client.list_all("tools/list", "tools").await;
    let listed = names(&tools);
    for s in servers {
        for t in FIXTURE_TOOLS {
            let name = format!("{s}__{t}");
            assert!(
                listed.contains(&name),
                "tools/list lacks {name}: {listed:?}"
            );
        }
    }
    assert!(
        listed
            .iter()
            .all(|n| servers.iter().any(|s| n.starts_with(&format!("{s}__")))),
        "prefix_mode always: every tool is prefixed: {listed:?}"
    );

    for s in servers {
        tools_of(&client, s, &tools).await;
        prompts_of(&client, s).await;
    }
    resources(&client, servers).await;
    assert!(
        client.garbage().is_empty(),
        "non-JSON on the gateway's stdout: {:?}",
        client.garbage()
    );
    client.close().await;
}

async fn tools_of(client: &support::Client, s: &str, listing: &[Value]) {
    let result = client
        .call_tool(&format!("{s}__test_simple_text"), json!({}))
        .await;
    assert_eq!(
        result["content"],
        json!([{ "type": "text", "text": "This is a simple text response for testing." }]),
        "{s}__test_simple_text"
    );

    // Progress comes with the client's own token, before the result.
    let token = format!("progress-via-{s}");
    let result = client
        .result(
            "tools/call",
            json!({
                "name": format!("{s}__test_tool_with_progress"),
                "arguments": {},
                "_meta": { "progressToken": token },
            }),
        )
        .await;
    assert_eq!(
        first_text(&result),
        "Progress test completed: reported 0, 50, 100 of 100"
    );
    let progress: Vec<Value> = client
        .notifications()
        .into_iter()
        .filter(|n| n["method"] == "notifications/progress")
        .filter(|n| n["params"]["progressToken"] == token.as_str())
        .map(|n| n["params"]["progress"].clone())
        .collect();
    assert_eq!(
        progress,
        [json!(0.0), json!(50.0), json!(100.0)],
        "progress for {token} before the result; all notifications: {:?}",
        client.notifications()
    );

    // Sampling: the server asks the client's LLM; the answer comes back in the result.
    let prompt = format!("hello from {} via {s}", client.label());
    let result = client
        .call_tool(&format!("{s}__test_sampling"), json!({ "prompt": prompt }))
        .await;
    assert_eq!(
        first_text(&result),
        format!("LLM response: {}", sampled(&prompt))
    );
    let asked = client.server_requests().into_iter().any(|r| {
        r["method"] == "sampling/createMessage"
            && r.pointer("/params/messages/0/content/text") == Some(&json!(prompt))
    });
    assert!(asked, "no sampling/createMessage reached the client");

    let result = client
        .call_tool(
            &format!("{s}__test_elicitation"),
            json!({ "message": "who?" }),
        )
        .await;
    let text = first_text(&result);
    assert!(
        text.contains("action=accept") && text.contains("tester@example.com"),
        "elicitation via {s}: {text}"
    );

    // Members no spec defines pass through, in the result and in the listing.
    let result = client
        .call_tool(&format!("{s}__test_unknown_fields"), json!({}))
        .await;
    assert_eq!(
        result,
        json!({
            "content": [
                { "type": "text", "text": "unknown fields follow" },
                { "type": "x_unknown_content", "payload": { "a": 1, "b": [true, false] } },
            ],
            "isError": false,
            "x_unknown_field": { "kept": "as is", "n": 42 },
        }),
        "{s}__test_unknown_fields"
    );
    let listed = listing
        .iter()
        .find(|t| t["name"] == format!("{s}__test_unknown_fields"))
        .expect("listed");
    assert_eq!(
        listed["x_unknown_field"],
        json!({ "nested": [1, 2.5, "three", null, { "deep": true }] })
    );
}

async fn prompts_of(client: &support::Client, s: &str) {
    let result = client
        .result(
            "prompts/get",
            json!({ "name": format!("{s}__test_simple_prompt") }),
        )
        .await;
    assert_eq!(
        result.pointer("/messages/0/content/text"),
        Some(&json!("This is a simple prompt for testing.")),
        "{s}__test_simple_prompt: {result}"
    );
    let result = client
        .result(
            "prompts/get",
            json!({
                "name": format!("{s}__test_prompt_with_arguments"),
                "arguments": { "arg1": "one", "arg2": "two" },
            }),
        )
        .await;
    assert_eq!(
        result.pointer("/messages/0/content/text"),
        Some(&json!("Prompt with arguments: arg1='one', arg2='two'")),
    );
    let result = client
        .result(
            "completion/complete",
            json!({
                "ref": { "type": "ref/prompt", "name": format!("{s}__test_prompt_with_arguments") },
                "argument": { "name": "arg1", "value": "pa" },
            }),
        )
        .await;
    assert_eq!(
        result["completion"]["values"],
        json!(["paris", "park", "party"]),
        "completion via {s}"
    );
}

async fn resources(client: &support::Client, servers: &[&str]) {
    // Every server has test://static-text; the first keeps the URI, the others are rewritten so
    // each still routes to its owner. Reading each gives its text under the URI that was listed.
    let listed = client.list_all("resources/list", "resources").await;
    let statics: Vec<&Value> = listed
        .iter()
        .filter(|r| r["name"] == "static-text")
        .collect();
    assert_eq!(statics.len(), servers.len(), "resources/list: {listed:?}");
    assert_eq!(statics[0]["uri"], "test://static-text");
    for r in statics {
        let uri = r["uri"].as_str().expect("a uri");
        let read = client.result("resources/read", json!({ "uri": uri })).await;
        assert_eq!(
            read["contents"],
            json!([{ "uri": uri, "mimeType": "text/plain", "text": STATIC_TEXT }]),
            "resources/read {uri}"
        );
    }

    let templates = client
        .list_all("resources/templates/list", "resourceTemplates")
        .await;
    assert_eq!(templates.len(), servers.len(), "{templates:?}");
    let read = client
        .result("resources/read", json!({ "uri": "test://template/7/data" }))
        .await;
    let text = read
        .pointer("/contents/0/text")
        .and_then(Value::as_str)
        .unwrap_or_default();
    assert!(text.contains("Data for ID: 7"), "template read: {read}");
    let result = client
        .result(
            "completion/complete",
            json!({
                "ref": { "type": "ref/resource", "uri": "test://template/{id}/data" },
                "argument": { "name": "id", "value": "1" },
            }),
        )
        .await;
    assert_eq!(result["completion"]["values"], json!(["1", "123"]));
}
