//! The result cache through the real binary, counted at the upstream (a logging shell in front
//! of the stdio fixture): a cacheable tool's result and a resource are reused for the same
//! caller and the same arguments, never for another caller, never after they expire, and tools
//! nobody marked are always forwarded.

mod support;

use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};
use support::{Client, Gateway, Options, first_text, within};

const TEST_TIMEOUT: Duration = Duration::from_secs(90);

async fn client(gw: &Gateway, key: &str) -> Client {
    let options = Options {
        bearer: Some(key.to_owned()),
        ..Options::default()
    };
    Client::http(&gw.base, options).await
}

/// Every request the upstream received (tools/call and resources/read), in order.
fn upstream_requests(log: &Path) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|m| m["method"] == "tools/call" || m["method"] == "resources/read")
        .collect()
}

/// Make a call nobody caches and wait until the upstream has logged it: everything sent
/// upstream before it is in the log too.
async fn barrier(c: &Client, log: &Path, n: u32) {
    let text = format!("barrier {n}");
    c.call_tool("fx__test_simple_text", json!({})).await;
    let r = c.call_tool("fx__echo", json!({ "text": text })).await;
    assert_eq!(first_text(&r), text);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !upstream_requests(log)
        .iter()
        .any(|m| m["params"]["arguments"]["text"] == text)
    {
        assert!(
            Instant::now() < deadline,
            "the barrier never reached the upstream"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How many times the upstream was asked `method` for `name` (a tool) or `uri`.
fn asked(log: &Path, what: &str) -> usize {
    upstream_requests(log)
        .iter()
        .filter(|m| m["params"]["name"] == what || m["params"]["uri"] == what)
        .count()
}

#[tokio::test]
async fn cached_results_are_reused_only_for_the_same_caller_and_arguments() {
    within(TEST_TIMEOUT, "the test", async {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("upstream.log");
        let mut fx = support::logged_stdio_fixture(&log);
        fx["cache"] = json!({
            "tools": { "test_image_content": "60s", "test_audio_content": "2s" },
            "resources": "60s",
        });
        let gw = Gateway::serve(json!({
            "auth": { "api_keys": {} },
            "policy": support::allow_everyone(),
            "servers": { "fx": fx },
        }))
        .await;
        let alice = client(
            &gw,
            &support::api_key(&gw.config.path, &["--principal", "alice"]).await,
        )
        .await;
        let bob = client(
            &gw,
            &support::api_key(&gw.config.path, &["--principal", "bob"]).await,
        )
        .await;

        // Alice twice, the same call: the upstream answers once, she gets the same result.
        let first = alice.call_tool("fx__test_image_content", json!({})).await;
        let second = alice.call_tool("fx__test_image_content", json!({})).await;
        assert_eq!(first, second);
        let read = json!({ "uri": "test://static-text" });
        let r1 = alice.result("resources/read", read.clone()).await;
        let r2 = alice.result("resources/read", read.clone()).await;
        assert_eq!(r1, r2);
        barrier(&alice, &log, 1).await;
        assert_eq!(asked(&log, "test_image_content"), 1);
        assert_eq!(asked(&log, "test://static-text"), 1);

        // Bob is another caller: his calls reach the server.
        let bobs = bob.call_tool("fx__test_image_content", json!({})).await;
        assert_eq!(bobs, first);
        bob.result("resources/read", read.clone()).await;
        barrier(&bob, &log, 2).await;
        assert_eq!(asked(&log, "test_image_content"), 2);
        assert_eq!(asked(&log, "test://static-text"), 2);

        // A tool nobody marked is always forwarded; other arguments are another entry.
        alice.call_tool("fx__echo", json!({ "text": "same" })).await;
        alice.call_tool("fx__echo", json!({ "text": "same" })).await;
        barrier(&alice, &log, 3).await;
        let echoes = upstream_requests(&log)
            .iter()
            .filter(|m| m["params"]["arguments"]["text"] == "same")
            .count();
        assert_eq!(echoes, 2);

        // An entry expires: after its 2 s the tool is asked again.
        alice.call_tool("fx__test_audio_content", json!({})).await;
        alice.call_tool("fx__test_audio_content", json!({})).await;
        barrier(&alice, &log, 4).await;
        assert_eq!(asked(&log, "test_audio_content"), 1);
        tokio::time::sleep(Duration::from_millis(2200)).await;
        alice.call_tool("fx__test_audio_content", json!({})).await;
        barrier(&alice, &log, 5).await;
        assert_eq!(asked(&log, "test_audio_content"), 2);

        // The trail tells answers from the cache apart: one hit for Alice's second image call,
        // none for Bob's.
        let config = gw.config.path.to_str().unwrap();
        let (code, out, err) = support::run_toolgate(
            &[
                "audit",
                "query",
                "--config",
                config,
                "--tool",
                "fx__test_image_content",
                "--json",
            ],
            Duration::from_secs(30),
        )
        .await;
        assert_eq!(code, Some(0), "{err}");
        let events: Vec<Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(events.len(), 3, "{out}");
        let hits: Vec<&str> = events
            .iter()
            .filter(|e| e["detail"]["cache"] == "hit")
            .map(|e| e["user"].as_str().unwrap())
            .collect();
        assert_eq!(hits, ["alice"], "{out}");
        assert!(
            events
                .iter()
                .all(|e| e["detail"]["cache"] == "hit" || e.get("upstream_us").is_some()),
            "{out}"
        );
    })
    .await;
}

/// How many `method` requests the upstream received.
fn upstream_count(log: &Path, method: &str) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|m| m["method"] == method)
        .count()
}

/// A typical agent loop lists the tools before every step. The gateway serves every such list
/// from its catalog: the upstream hears `tools/list` only when the gateway itself reads it (at
/// start, and after the server says its list changed), however many clients loop.
#[tokio::test]
async fn an_agent_loop_lists_from_the_catalog_and_never_from_the_upstream() {
    within(TEST_TIMEOUT, "the test", async {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("upstream.log");
        let gw = Gateway::serve(json!({
            "servers": { "fx": support::logged_stdio_fixture(&log) },
        }))
        .await;
        let at_start = upstream_count(&log, "tools/list");
        assert!(at_start >= 1, "the gateway read the list at start");

        const CLIENTS: usize = 3;
        const STEPS: usize = 10;
        let mut clients = Vec::new();
        for _ in 0..CLIENTS {
            clients.push(Client::http(&gw.base, Options::default()).await);
        }
        for step in 0..STEPS {
            for c in &clients {
                let tools = c.list_all("tools/list", "tools").await;
                assert!(!tools.is_empty());
                c.list_all("prompts/list", "prompts").await;
                c.list_all("resources/list", "resources").await;
                let text = format!("step {step}");
                assert_eq!(
                    first_text(&c.call_tool("fx__echo", json!({ "text": text })).await),
                    text
                );
            }
        }
        let calls = upstream_count(&log, "tools/call");
        assert_eq!(calls, CLIENTS * STEPS, "every call reached the upstream");
        assert_eq!(
            upstream_count(&log, "tools/list"),
            at_start,
            "{} client tools/list requests, none of them upstream",
            CLIENTS * STEPS
        );

        // The server's list changes: the gateway reads it once, for everyone.
        let c = &clients[0];
        c.call_tool("fx__test_trigger_tool_change", json!({})).await;
        c.wait_notification("tools/list_changed", |n| {
            n["method"] == "notifications/tools/list_changed"
        })
        .await;
        for c in &clients {
            c.list_all("tools/list", "tools").await;
        }
        assert_eq!(upstream_count(&log, "tools/list"), at_start + 1);
    })
    .await;
}
