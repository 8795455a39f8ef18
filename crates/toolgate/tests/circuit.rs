//! The circuit breaker through the real binary, counted at the upstream (a logging shell in
//! front of the stdio fixture): calls that keep timing out open the circuit, calls then fail at
//! once without reaching the server, and after the cooldown one probe that succeeds closes it.

mod support;

use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};
use support::{Client, Gateway, Options, Transport, first_text, upstream_calls, within};

const TEST_TIMEOUT: Duration = Duration::from_secs(90);

fn reached(log: &Path, text: &str) -> bool {
    upstream_calls(log)
        .iter()
        .any(|m| m["params"]["arguments"]["text"] == text)
}

async fn echo(c: &Client, text: &str) -> Value {
    c.request(
        "tools/call",
        json!({ "name": "fx__echo", "arguments": { "text": text } }),
    )
    .await
}

#[tokio::test]
async fn a_failing_server_opens_its_circuit_and_a_probe_closes_it() {
    within(TEST_TIMEOUT, "the test", async {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("upstream.log");
        let mut fx = support::logged_stdio_fixture(&log);
        fx["tools"] = json!({ "timeouts": { "sleep": "200ms" } });
        fx["circuit"] = json!({ "failures": 3, "cooldown": "1s" });
        let gw = Gateway::serve(json!({ "servers": { "fx": fx } })).await;
        let c = gw
            .client(Transport::StreamableHttp, Options::default())
            .await;

        // Three timeouts in a row.
        for _ in 0..3 {
            let e = c
                .error(
                    "tools/call",
                    json!({ "name": "fx__sleep", "arguments": { "ms": 5000 } }),
                )
                .await;
            assert_eq!(e["code"], -32051, "{e}");
        }
        // Open: the next call fails at once and never reaches the server.
        let started = Instant::now();
        let r = echo(&c, "while open").await;
        assert_eq!(r["error"]["code"], -32050, "{r}");
        assert_eq!(r["error"]["data"]["code"], "circuit_open", "{r}");
        assert!(
            r["error"]["data"]["retryAfterMs"].as_u64().unwrap() <= 1000,
            "{r}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));

        // After the cooldown a probe goes through; its success closes the circuit.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let r = echo(&c, "probe").await;
        assert_eq!(first_text(&r["result"]), "probe", "{r}");
        let r = echo(&c, "after").await;
        assert_eq!(first_text(&r["result"]), "after", "{r}");

        // The log is in order: "after" is there, so "while open" would be too.
        let deadline = Instant::now() + Duration::from_secs(20);
        while !reached(&log, "after") {
            assert!(
                Instant::now() < deadline,
                "the upstream never saw the calls"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(reached(&log, "probe"));
        assert!(
            !reached(&log, "while open"),
            "a call reached the server while open"
        );
        assert!(gw.stderr().contains("circuit open"), "{}", gw.stderr());
        assert!(gw.stderr().contains("circuit closed"), "{}", gw.stderr());
    })
    .await;
}
