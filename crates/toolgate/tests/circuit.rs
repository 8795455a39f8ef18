//! The circuit breaker and health checks through the real binary, counted at the upstream (a
//! logging shell in front of the stdio fixture): calls that keep timing out open the circuit,
//! calls then fail at once without reaching the server (or, with `failure: open`, its tools leave
//! discovery), and after the cooldown one probe that succeeds closes it. A server that stops
//! answering altogether (a stopped process) fails its health probes and is restarted.

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
    // The probe after the cooldown may be the next call or the gateway's own health probe,
    // whichever comes first; either closes the circuit.
    within(TEST_TIMEOUT, "the test", async {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("upstream.log");
        let mut fx = support::logged_stdio_fixture(&log);
        fx["tools"] = json!({ "timeouts": { "sleep": "200ms" } });
        fx["circuit"] = json!({ "failures": 3, "cooldown": "1s" });
        // `failure: closed`: the tools stay listed and fail fast while open.
        fx["failure"] = json!("closed");
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

/// Poll `GET /admin/v1/servers` until server `name` matches `check`; returns it.
async fn admin_server(gw: &Gateway, name: &str, check: impl Fn(&Value) -> bool) -> Value {
    let url = format!("{}/admin/v1/servers", gw.admin_base());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = reqwest::get(&url).await.unwrap().text().await.unwrap();
        let body: Value = serde_json::from_str(&text).unwrap();
        let server = body["servers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no server {name} in {body}"));
        if check(&server) {
            return server;
        }
        assert!(
            Instant::now() < deadline,
            "server {name} never got there: {server}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn tool_names(tools: &[Value]) -> Vec<String> {
    support::names(tools)
}

#[tokio::test]
async fn with_failure_open_a_tripped_servers_tools_leave_discovery_until_a_probe_brings_them_back()
{
    within(TEST_TIMEOUT, "the test", async {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("upstream.log");
        let mut fx = support::logged_stdio_fixture(&log);
        fx["tools"] = json!({ "timeouts": { "sleep": "200ms" } });
        // A cooldown long enough to look at the withdrawn state before the probe ends it.
        fx["circuit"] = json!({ "failures": 2, "cooldown": "3s" });
        let gw = Gateway::serve(json!({
            "servers": { "fx": fx, "other": support::stdio_server(&[]) },
            "admin": { "listen": "127.0.0.1:0" },
        }))
        .await;
        let c = gw
            .client(Transport::StreamableHttp, Options::default())
            .await;
        let before = tool_names(&c.list_all("tools/list", "tools").await);
        assert!(before.contains(&"fx__echo".to_owned()), "{before:?}");
        let closed = admin_server(&gw, "fx", |s| s["circuit"]["state"] == "closed").await;
        assert_eq!(closed["withdrawn"], false, "{closed}");
        assert_eq!(closed["failure"], "open", "{closed}");

        for _ in 0..2 {
            let e = c
                .error(
                    "tools/call",
                    json!({ "name": "fx__sleep", "arguments": { "ms": 5000 } }),
                )
                .await;
            assert_eq!(e["code"], -32051, "{e}");
        }
        // Tripped: the client hears the list changed, and fx's tools are gone from it.
        c.wait_notification("tools/list_changed", |n| {
            n["method"] == "notifications/tools/list_changed"
        })
        .await;
        let open = admin_server(&gw, "fx", |s| s["withdrawn"] == true).await;
        assert!(
            ["open", "half_open"].contains(&open["circuit"]["state"].as_str().unwrap()),
            "{open}"
        );
        assert_eq!(open["circuit"]["opened"], 1, "{open}");
        let during = tool_names(&c.list_all("tools/list", "tools").await);
        let unknown = c
            .request(
                "tools/call",
                json!({ "name": "fx__echo", "arguments": { "text": "withdrawn" } }),
            )
            .await;
        // Still withdrawn after both (it only ever comes back): both saw it withdrawn.
        assert_eq!(
            admin_server(&gw, "fx", |_| true).await["withdrawn"],
            true,
            "the 3 s cooldown ended before the checks: too slow a machine to tell"
        );
        assert!(!during.iter().any(|n| n.starts_with("fx__")), "{during:?}");
        assert_eq!(unknown["error"]["code"], -32602, "{unknown}");
        assert!(during.contains(&"other__echo".to_owned()), "{during:?}");
        let r = c
            .request(
                "tools/call",
                json!({ "name": "other__echo", "arguments": { "text": "unaffected" } }),
            )
            .await;
        assert_eq!(first_text(&r["result"]), "unaffected", "{r}");

        // After the cooldown the gateway probes the server itself: it answers, the circuit
        // closes and the tools return, announced again.
        let back = admin_server(&gw, "fx", |s| s["circuit"]["state"] == "closed").await;
        assert_eq!(back["withdrawn"], false, "{back}");
        c.wait_notifications("a second tools/list_changed", 2, |n| {
            n["method"] == "notifications/tools/list_changed"
        })
        .await;
        let after = tool_names(&c.list_all("tools/list", "tools").await);
        assert_eq!(after, before);
        let r = echo(&c, "back").await;
        assert_eq!(first_text(&r["result"]), "back", "{r}");

        // The log tells the same story.
        let audit = gw.stderr();
        assert!(audit.contains("circuit open"), "{audit}");
        assert!(audit.contains("circuit closed"), "{audit}");
    })
    .await;
}

#[tokio::test]
async fn a_server_that_stops_answering_fails_its_health_checks_and_is_restarted() {
    within(TEST_TIMEOUT, "the test", async {
        let dir = tempfile::tempdir().unwrap();
        let pids = dir.path().join("pids");
        let script = format!(
            "echo $$ >> '{}'; exec '{}' stdio",
            pids.display(),
            support::fixture_bin().display()
        );
        let fx = json!({
            "command": "/bin/sh", "args": ["-c", script], "isolation": "shared",
            "health": { "interval": "300ms", "timeout": "300ms", "failures": 2 },
        });
        let gw = Gateway::serve(json!({
            "servers": { "fx": fx },
            "admin": { "listen": "127.0.0.1:0" },
        }))
        .await;
        let c = gw
            .client(Transport::StreamableHttp, Options::default())
            .await;
        let r = echo(&c, "first").await;
        assert_eq!(first_text(&r["result"]), "first", "{r}");
        let healthy = admin_server(&gw, "fx", |s| s["health"]["ok"] == true).await;
        assert!(
            healthy["health"]["latencyMs"].as_f64().is_some(),
            "{healthy}"
        );
        let first: Vec<String> = std::fs::read_to_string(&pids)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect();
        assert_eq!(first.len(), 1, "{first:?}");

        // The server hangs: its process is stopped, so nothing it was asked is answered.
        let stopped = std::process::Command::new("kill")
            .args(["-STOP", &first[0]])
            .status()
            .unwrap();
        assert!(stopped.success());
        let failing = admin_server(&gw, "fx", |s| s["health"]["ok"] == false).await;
        assert!(
            failing["health"]["error"]
                .as_str()
                .unwrap()
                .contains("health probe"),
            "{failing}"
        );

        // After two unanswered probes the gateway gives up on it and starts another.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let now = std::fs::read_to_string(&pids).unwrap();
            if now.lines().count() >= 2 {
                break;
            }
            assert!(Instant::now() < deadline, "never restarted: {now}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        let r = loop {
            let r = echo(&c, "second").await;
            if r.get("result").is_some() || Instant::now() > deadline {
                break r;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(first_text(&r["result"]), "second", "{r}");
        admin_server(&gw, "fx", |s| {
            s["health"]["ok"] == true && s["status"] == "ready"
        })
        .await;
        // The hung process was not left behind.
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::path::Path::new(&format!("/proc/{}", first[0])).exists()
            && !std::fs::read_to_string(format!("/proc/{}/stat", first[0]))
                .unwrap_or_default()
                .contains(") Z")
        {
            assert!(
                Instant::now() < deadline,
                "the stopped child was never killed"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            gw.stderr().contains("health check failed"),
            "{}",
            gw.stderr()
        );
    })
    .await;
}
