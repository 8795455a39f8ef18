//! Graceful shutdown through the real binary: on SIGTERM the gateway takes no new connections
//! or requests, lets the calls in flight finish (up to `shutdown_grace`), then stops its
//! servers and exits cleanly.

mod support;

use serde_json::{Value, json};
use std::time::{Duration, Instant};
use support::{Client, Gateway, Options, Transport, first_text, within};

/// Every test here finishes well within this, or fails instead of hanging.
const TEST_TIMEOUT: Duration = Duration::from_secs(90);

async fn gateway(grace: &str) -> (Gateway, Client) {
    let gw = Gateway::serve(json!({
        "shutdown_grace": grace,
        "servers": { "fx": support::stdio_server(&[]) },
    }))
    .await;
    let client = gw
        .client(Transport::StreamableHttp, Options::default())
        .await;
    (gw, client)
}

/// Start `fx__sleep` for `ms` with a progress token; returns once it runs upstream.
async fn start_sleep(client: &Client, ms: u64) -> tokio::sync::oneshot::Receiver<Value> {
    let token = format!("sleep-{ms}");
    let (_, answer) = client.start_request(
        "tools/call",
        json!({ "name": "fx__sleep", "arguments": { "ms": ms }, "_meta": { "progressToken": token } }),
    );
    client
        .wait_notification("the sleep's first progress", |n| {
            n["method"] == "notifications/progress" && n["params"]["progressToken"] == token
        })
        .await;
    answer
}

/// A new client's `initialize`: the HTTP status, or `None` when no connection was accepted.
async fn try_initialize(gw: &Gateway) -> Option<u16> {
    let resp = reqwest::Client::new()
        .post(gw.mcp_url())
        .header("Accept", "application/json, text/event-stream")
        .header("Content-Type", "application/json")
        .body(support::initialize_body())
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    Some(resp.status().as_u16())
}

#[tokio::test]
async fn sigterm_lets_calls_in_flight_finish_and_takes_no_new_ones() {
    within(TEST_TIMEOUT, "the test", async {
        let (mut gw, client) = gateway("30s").await;
        let answer = start_sleep(&client, 2000).await;
        gw.terminate();
        // The gateway no longer takes new clients: the connection is refused, or a request
        // that got in answers 503.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match try_initialize(&gw).await {
                None | Some(503) => break,
                Some(other) => assert!(
                    Instant::now() < deadline,
                    "still initializing sessions after SIGTERM ({other})"
                ),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The call in flight finishes with its real answer.
        let r = answer.await.expect("the call is answered");
        assert_eq!(first_text(&r["result"]), "slept 2000 ms", "{r}");
        // Then the gateway stops, cleanly.
        let status = gw
            .wait_exit(Duration::from_secs(20))
            .await
            .expect("the gateway exits after its calls");
        assert!(status.success(), "{status:?}\n{}", gw.stderr());
        let log = gw.stderr();
        assert!(log.contains("waiting for calls in flight"), "{log}");
        assert!(!log.contains("grace ran out"), "{log}");
    })
    .await;
}

#[tokio::test]
async fn a_call_longer_than_the_grace_does_not_hold_the_shutdown() {
    within(TEST_TIMEOUT, "the test", async {
        let (mut gw, client) = gateway("1s").await;
        let _answer = start_sleep(&client, 60_000).await;
        gw.terminate();
        // Well before the 60 s call could end: the 1 s grace, then the children's.
        let status = gw
            .wait_exit(Duration::from_secs(30))
            .await
            .expect("the 60 s call held the shutdown past its grace");
        assert!(status.success(), "{status:?}\n{}", gw.stderr());
        assert!(gw.stderr().contains("grace ran out"), "{}", gw.stderr());
    })
    .await;
}

#[tokio::test]
async fn the_admin_listener_says_not_ready_while_draining() {
    within(TEST_TIMEOUT, "the test", async {
        let mut gw = Gateway::serve(json!({
            "admin": { "listen": "127.0.0.1:0" },
            "servers": { "fx": support::stdio_server(&[]) },
        }))
        .await;
        let client = gw
            .client(Transport::StreamableHttp, Options::default())
            .await;
        let admin = gw.admin_base();
        let readyz = || async {
            let r = reqwest::get(format!("{admin}/readyz")).await.unwrap();
            let status = r.status().as_u16();
            let body: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
            (status, body)
        };
        assert_eq!(readyz().await.0, 200);
        let answer = start_sleep(&client, 1500).await;
        gw.terminate();
        // While the call finishes, load balancers are told to send traffic elsewhere.
        let deadline = Instant::now() + Duration::from_secs(10);
        let body = loop {
            let (status, body) = readyz().await;
            if status == 503 {
                break body;
            }
            assert!(
                Instant::now() < deadline,
                "still ready after SIGTERM: {body}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(body["checks"]["draining"]["ok"], false, "{body}");
        let r = answer.await.expect("the call is answered");
        assert_eq!(first_text(&r["result"]), "slept 1500 ms", "{r}");
        assert!(gw.wait_exit(Duration::from_secs(20)).await.is_some());
    })
    .await;
}
