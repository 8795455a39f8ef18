//! Call timeouts through the real binary with `toolgate-fixture` behind it: a tool's own
//! timeout, progress that keeps a long call alive up to `max_timeout`, and what the client and
//! the server see when a call runs out of time (a clear error; the call cancelled upstream).

mod support;

use serde_json::{Value, json};
use std::time::{Duration, Instant};
use support::{Client, Gateway, Options, Transport, first_text, within};

/// Every test here finishes well within this, or fails instead of hanging.
const TEST_TIMEOUT: Duration = Duration::from_secs(90);
/// A timed-out call is answered long before its tool would have finished.
const WELL_BEFORE: Duration = Duration::from_secs(15);

async fn gateway(servers: Value) -> (Gateway, Client) {
    let gw = Gateway::serve(json!({ "servers": servers })).await;
    let client = gw
        .client(Transport::StreamableHttp, Options::default())
        .await;
    (gw, client)
}

fn fixture(extra: Value) -> Value {
    let mut fx = support::stdio_server(&[]);
    if let (Some(fx), Value::Object(extra)) = (fx.as_object_mut(), extra) {
        fx.extend(extra);
    }
    fx
}

/// The JSON-RPC error of a `tools/call`, and how long it took.
async fn call_error(client: &Client, tool: &str, arguments: Value) -> (Value, Duration) {
    let started = Instant::now();
    let e = client
        .error(
            "tools/call",
            json!({ "name": tool, "arguments": arguments }),
        )
        .await;
    (e, started.elapsed())
}

/// Wait until the fixture `server` has seen `n` cancelled sleeps in this session: the only
/// sign that the gateway cancelled the call upstream.
async fn wait_cancelled(client: &Client, server: &str, n: u64) {
    let deadline = Instant::now() + WELL_BEFORE;
    loop {
        let count = client
            .call_tool(&format!("{server}__sleep_cancellations"), json!({}))
            .await;
        if first_text(&count) == n.to_string() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{server} never saw the cancel: {count}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_tools_own_timeout_ends_it_with_a_clear_error_and_cancels_it_upstream() {
    within(TEST_TIMEOUT, "the test", async {
        let (_gw, client) = gateway(json!({
            "fx": fixture(json!({ "timeout": "30s", "tools": { "timeouts": { "sleep": "500ms" } } })),
        }))
        .await;
        let (e, took) = call_error(&client, "fx__sleep", json!({ "ms": 20_000 })).await;
        assert_eq!(e["code"], -32051, "{e}");
        assert_eq!(e["data"]["server"], "fx", "{e}");
        assert!(
            e["message"].as_str().unwrap_or("").contains("within 0.5s"),
            "the error says how long the call had: {e}"
        );
        assert!(took < WELL_BEFORE, "answered after {took:?}");
        wait_cancelled(&client, "fx", 1).await;
        // The server's other tools keep the server's own timeout.
        let r = client
            .call_tool("fx__sleep_cancellations", json!({}))
            .await;
        assert_eq!(first_text(&r), "1");
    })
    .await;
}

#[tokio::test]
async fn progress_keeps_a_call_alive_up_to_max_timeout() {
    within(TEST_TIMEOUT, "the test", async {
        let (_gw, client) = gateway(json!({
            // Progress restarts the 1 s timeout, for 30 s at most.
            "long": fixture(json!({ "timeout": "1s", "max_timeout": "30s" })),
            // The same, but never longer than 2 s in all.
            "capped": fixture(json!({ "timeout": "1s", "max_timeout": "2s" })),
            // No max_timeout: progress does not extend a call.
            "plain": fixture(json!({ "timeout": "1s" })),
        }))
        .await;

        // Three times the timeout, reporting progress every 100 ms: it finishes.
        let r = client
            .call_tool("long__sleep", json!({ "ms": 3000, "every_ms": 100 }))
            .await;
        assert_eq!(first_text(&r), "slept 3000 ms", "{r}");

        // Silent after its first progress: the timeout ends it.
        let (e, took) = call_error(&client, "long__sleep", json!({ "ms": 20_000 })).await;
        assert_eq!(e["code"], -32051, "{e}");
        assert!(took < WELL_BEFORE, "answered after {took:?}");
        wait_cancelled(&client, "long", 1).await;

        // Reporting progress, but past max_timeout: ended at 2 s.
        let (e, took) = call_error(
            &client,
            "capped__sleep",
            json!({ "ms": 20_000, "every_ms": 100 }),
        )
        .await;
        assert_eq!(e["code"], -32051, "{e}");
        assert!(
            e["message"].as_str().unwrap_or("").contains("within 2s"),
            "{e}"
        );
        assert!(took < WELL_BEFORE, "answered after {took:?}");
        wait_cancelled(&client, "capped", 1).await;

        // Without max_timeout, progress changes nothing.
        let (e, _) = call_error(
            &client,
            "plain__sleep",
            json!({ "ms": 20_000, "every_ms": 100 }),
        )
        .await;
        assert_eq!(e["code"], -32051, "{e}");
        assert!(
            e["message"].as_str().unwrap_or("").contains("within 1s"),
            "{e}"
        );
        wait_cancelled(&client, "plain", 1).await;
    })
    .await;
}
