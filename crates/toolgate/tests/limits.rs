//! Limits through the real binary: a flood held to its rate (counted at the upstream) while
//! another caller passes, a quota shared per tenant, concurrency slots that come back when a
//! call is cancelled, request and result sizes, GET streams per session, HTTP 429 with
//! `Retry-After` for 2026-07-28 requests, and every refusal in `/metrics` and the audit trail.

mod support;

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use support::{Client, Gateway, Options, run_toolgate, upstream_calls, within};

const TEST_TIMEOUT: Duration = Duration::from_secs(120);

struct Setup {
    gw: Gateway,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

/// A gateway with API keys, a policy that allows everything, the logged fixture as `fx`, an
/// admin listener, and `limits`; `edit` adjusts the config further.
async fn setup(limits: Value, edit: impl FnOnce(&mut Value)) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("upstream.log");
    let mut config = json!({
        "auth": { "api_keys": {} },
        "policy": support::allow_everyone(),
        "servers": { "fx": support::logged_stdio_fixture(&log) },
        "admin": { "listen": "127.0.0.1:0" },
        "limits": limits,
    });
    edit(&mut config);
    let gw = Gateway::serve(config).await;
    Setup { gw, log, _dir: dir }
}

async fn key(gw: &Gateway, args: &[&str]) -> String {
    support::api_key(&gw.config.path, args).await
}

async fn client(gw: &Gateway, key: &str) -> Client {
    let options = Options {
        bearer: Some(key.to_owned()),
        ..Options::default()
    };
    Client::http(&gw.base, options).await
}

/// The upstream's `tools/call` requests of `tool` whose `text` argument starts with `prefix`.
fn reached(log: &Path, tool: &str, prefix: &str) -> usize {
    upstream_calls(log)
        .iter()
        .filter(|m| m["params"]["name"] == tool)
        .filter(|m| {
            m["params"]["arguments"]["text"]
                .as_str()
                .unwrap_or("")
                .starts_with(prefix)
        })
        .count()
}

/// Wait until `count` of the upstream's requests match (the log is written beside the
/// upstream's own read of each request, so it may trail the answer by a moment).
async fn wait_reached(log: &Path, tool: &str, prefix: &str, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let n = reached(log, tool, prefix);
        if n >= count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the upstream saw {n} {tool} calls ({prefix}), not {count}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Assert `e` is the limit error `code` of `limit`; returns its `retryAfterMs`.
fn limit_error(e: &Value, code: &str, limit: &str) -> Option<u64> {
    assert_eq!(e["code"], -32042, "{e}");
    assert_eq!(e["data"]["code"], code, "{e}");
    assert_eq!(e["data"]["limit"], limit, "{e}");
    e["data"]["retryAfterMs"].as_u64()
}

async fn metrics(gw: &Gateway) -> String {
    let url = format!("{}/metrics", gw.admin_base());
    let resp = within(Duration::from_secs(20), "GET /metrics", reqwest::get(&url))
        .await
        .expect("the admin listener answers");
    resp.text().await.unwrap_or_default()
}

fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.trim().parse().expect("a number"))
}

/// The audit trail's denials of `principal`, read with `toolgate audit query`.
async fn denials(gw: &Gateway, principal: &str) -> Vec<Value> {
    let config = gw.config.path.to_str().unwrap();
    let (code, out, err) = run_toolgate(
        &[
            "audit",
            "query",
            "--config",
            config,
            "--principal",
            principal,
            "--decision",
            "deny",
            "--json",
        ],
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(code, Some(0), "{err}");
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_is_held_to_its_rate_while_other_callers_pass() {
    within(TEST_TIMEOUT, "the flood", async {
        // 5 calls a second, 5 at once, per caller.
        let (rate, burst) = (5.0, 5.0);
        let s = setup(
            json!([{
                "id": "echo-rate",
                "match": { "tools": ["fx__echo"] },
                "per": ["principal"],
                "rate": "5/s",
                "burst": 5,
            }]),
            |_| {},
        )
        .await;
        let alice = client(&s.gw, &key(&s.gw, &["--principal", "alice"]).await).await;
        let bob = client(&s.gw, &key(&s.gw, &["--principal", "bob"]).await).await;

        // Alice floods from four workers for at least a second and a half, and until the limit
        // has refused her a few times (a slow machine still floods); meanwhile Bob makes as
        // many calls as his own budget holds, and every one of them must go through.
        let started = Instant::now();
        let flood_for = Duration::from_millis(1500);
        let refusals = std::sync::atomic::AtomicUsize::new(0);
        let worker = |w: usize| {
            let (alice, refusals) = (&alice, &refusals);
            async move {
                let (mut ok, mut refused) = (0usize, Vec::new());
                let mut i = 0;
                while started.elapsed() < flood_for || refusals.load(Ordering::Relaxed) < 3 {
                    i += 1;
                    let text = format!("flood-{w}-{i}");
                    let args = json!({ "name": "fx__echo", "arguments": { "text": text } });
                    let resp = alice.request("tools/call", args).await;
                    match resp.get("error") {
                        Some(e) => {
                            refusals.fetch_add(1, Ordering::Relaxed);
                            refused.push(e.clone());
                        }
                        None => ok += 1,
                    }
                }
                (ok, refused)
            }
        };
        let bobs = async {
            let mut answers = Vec::new();
            for i in 0..5 {
                let args =
                    json!({ "name": "fx__echo", "arguments": { "text": format!("bob-{i}") } });
                answers.push(bob.request("tools/call", args).await);
            }
            answers
        };
        let (workers, bob_answers) =
            tokio::join!(futures::future::join_all((0..4).map(worker)), bobs);
        let elapsed = started.elapsed().as_secs_f64();

        let ok: usize = workers.iter().map(|(ok, _)| ok).sum();
        let refused: Vec<&Value> = workers.iter().flat_map(|(_, r)| r).collect();
        for answer in &bob_answers {
            assert!(
                answer.get("error").is_none(),
                "Bob is not limited by Alice: {answer}"
            );
        }
        assert!(
            !refused.is_empty(),
            "a flood of {ok} calls in {elapsed:.2} s was refused"
        );
        for e in &refused {
            let wait = limit_error(e, "rate_limited", "echo-rate").expect("a retry hint");
            assert!(
                (1..=1000).contains(&wait),
                "5/s never asks to wait a second: {e}"
            );
        }

        // Counted where it matters: what reached the upstream.
        wait_reached(&s.log, "echo", "flood-", ok).await;
        wait_reached(&s.log, "echo", "bob-", 5).await;
        let upstream = reached(&s.log, "echo", "flood-");
        assert_eq!(upstream, ok, "refused calls never reach the upstream");
        let allowed = burst + rate * elapsed + 1.0;
        assert!(
            (upstream as f64) <= allowed,
            "{upstream} calls reached the upstream in {elapsed:.2} s; the limit allows {allowed:.1}"
        );
        assert!(
            upstream >= burst as usize,
            "the burst is served: {upstream}"
        );
        assert_eq!(reached(&s.log, "echo", "bob-"), 5);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_quota_is_per_tenant_counted_in_metrics_and_audited() {
    within(TEST_TIMEOUT, "the quota", async {
        let s = setup(
            json!([{
                "id": "daily-echo",
                "match": { "tools": ["fx__echo"] },
                "per": ["tenant"],
                "quota": "3/day",
            }]),
            |_| {},
        )
        .await;
        let alice = client(
            &s.gw,
            &key(&s.gw, &["--principal", "alice", "--tenant", "acme"]).await,
        )
        .await;
        let carol = client(
            &s.gw,
            &key(&s.gw, &["--principal", "carol", "--tenant", "acme"]).await,
        )
        .await;
        let dave = client(
            &s.gw,
            &key(&s.gw, &["--principal", "dave", "--tenant", "globex"]).await,
        )
        .await;

        // Alice and Carol share acme's three calls a day.
        alice
            .call_tool("fx__echo", json!({ "text": "q-alice-1" }))
            .await;
        alice
            .call_tool("fx__echo", json!({ "text": "q-alice-2" }))
            .await;
        carol
            .call_tool("fx__echo", json!({ "text": "q-carol-1" }))
            .await;
        let e = carol
            .error(
                "tools/call",
                json!({ "name": "fx__echo", "arguments": { "text": "q-carol-2" } }),
            )
            .await;
        let wait = limit_error(&e, "quota_exceeded", "daily-echo").expect("a retry hint");
        assert!(
            (1000..=86_400_000).contains(&wait),
            "until the UTC day ends: {e}"
        );
        // Another tenant has a quota of its own.
        dave.call_tool("fx__echo", json!({ "text": "q-dave-1" }))
            .await;
        wait_reached(&s.log, "echo", "q-", 4).await;
        assert_eq!(
            reached(&s.log, "echo", "q-carol-2"),
            0,
            "the refused call never left"
        );
        assert_eq!(reached(&s.log, "echo", "q-"), 4);

        // Counted by rule, kind and server, and as a denial by its reason.
        let text = metrics(&s.gw).await;
        let series = r#"toolgate_limited_total{rule="daily-echo",kind="quota",server="fx"}"#;
        assert_eq!(sample(&text, series), Some(1.0), "{text}");
        assert_eq!(
            sample(&text, r#"toolgate_denials_total{reason="quota_exceeded"}"#),
            Some(1.0),
            "{text}"
        );

        let keys = sample(&text, "toolgate_limiter_keys").expect("the limiter's size");
        assert!(keys >= 2.0, "acme's and globex's budgets: {keys}");

        // Audited: a denial whose reason is the refusal's code.
        // (The store has it within `commit_every` of the answer.)
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let rows = loop {
            let rows = denials(&s.gw, "carol").await;
            if !rows.is_empty() || std::time::Instant::now() > deadline {
                break rows;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(rows.len(), 1, "{rows:#?}");
        let row = &rows[0];
        assert_eq!(row["reason_code"], "quota_exceeded", "{row}");
        assert_eq!(row["target"], "fx__echo", "{row}");
        assert_eq!(row["error_code"], -32042, "{row}");
        assert!(
            row["reason"].as_str().unwrap_or("").contains("daily-echo"),
            "{row}"
        );
        assert!(denials(&s.gw, "alice").await.is_empty());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrency_refuses_one_call_too_many_and_a_cancelled_call_frees_its_slot() {
    within(TEST_TIMEOUT, "concurrency", async {
        let s = setup(
            json!([{
                "id": "sleep-slots",
                "match": { "tools": ["fx__sleep"] },
                "per": ["server"],
                "concurrency": 2,
            }]),
            |_| {},
        )
        .await;
        let alice = client(&s.gw, &key(&s.gw, &["--principal", "alice"]).await).await;
        let bob = client(&s.gw, &key(&s.gw, &["--principal", "bob"]).await).await;
        let slow = json!({ "name": "fx__sleep", "arguments": { "ms": 60_000 } });
        let (first, _first_answer) = alice.start_request("tools/call", slow.clone());
        let (second, _second_answer) = alice.start_request("tools/call", slow.clone());
        // Both are in flight once the upstream has them.
        let deadline = Instant::now() + Duration::from_secs(20);
        while upstream_calls(&s.log)
            .iter()
            .filter(|m| m["params"]["name"] == "sleep")
            .count()
            < 2
        {
            assert!(
                Instant::now() < deadline,
                "the slow calls never reached the upstream"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        // The server's two slots are taken, for every caller: refused, not queued.
        let e = bob
            .error(
                "tools/call",
                json!({ "name": "fx__sleep", "arguments": { "ms": 1 } }),
            )
            .await;
        limit_error(&e, "concurrency_limited", "sleep-slots");
        let sleeps = || {
            upstream_calls(&s.log)
                .iter()
                .filter(|m| m["params"]["name"] == "sleep")
                .count()
        };
        assert_eq!(sleeps(), 2, "the refused call never left");
        // Other tools are not limited.
        bob.call_tool("fx__echo", json!({ "text": "still here" }))
            .await;

        // A cancelled call gives its slot back.
        alice
            .notify(
                "notifications/cancelled",
                Some(json!({ "requestId": first })),
            )
            .await;
        alice.wait_stream_ended(&first).await;
        let done = bob.call_tool("fx__sleep", json!({ "ms": 1 })).await;
        assert_ne!(done["isError"], true, "{done}");
        alice
            .notify(
                "notifications/cancelled",
                Some(json!({ "requestId": second })),
            )
            .await;
        alice.wait_stream_ended(&second).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_and_results_over_a_servers_sizes_are_refused() {
    within(TEST_TIMEOUT, "sizes", async {
        let s = setup(json!([]), |c| {
            c["servers"]["fx"]["max_request_bytes"] = json!(1000);
            c["servers"]["fx"]["max_result_bytes"] = json!(400);
        })
        .await;
        let alice_key = key(&s.gw, &["--principal", "alice"]).await;
        let alice = client(&s.gw, &alice_key).await;
        let small = alice
            .call_tool("fx__echo", json!({ "text": "size-small" }))
            .await;
        assert_eq!(support::first_text(&small), "size-small");

        // Too large to send: refused before the upstream sees it.
        let big = format!("size-big-{}", "x".repeat(2000));
        let e = alice
            .error(
                "tools/call",
                json!({ "name": "fx__echo", "arguments": { "text": big } }),
            )
            .await;
        assert_eq!(
            limit_error(&e, "request_too_large", "max_request_bytes"),
            None,
            "{e}"
        );
        // A 2026-07-28 request says it in HTTP too.
        let big = format!("size-big-{}", "x".repeat(2000));
        let modern = modern_echo(&s.gw, &alice_key, &big).await;
        assert_eq!(modern.status(), 413);
        assert!(modern.headers().get("retry-after").is_none());

        // Small enough to send, too large to return: the client gets a clear error.
        let medium = format!("size-medium-{}", "y".repeat(600));
        let e = alice
            .error(
                "tools/call",
                json!({ "name": "fx__echo", "arguments": { "text": medium } }),
            )
            .await;
        assert_eq!(
            limit_error(&e, "result_too_large", "max_result_bytes"),
            None,
            "{e}"
        );
        wait_reached(&s.log, "echo", "size-medium", 1).await;
        assert_eq!(reached(&s.log, "echo", "size-big"), 0);
        // The gateway goes on serving.
        alice
            .call_tool("fx__echo", json!({ "text": "size-after" }))
            .await;
    })
    .await;
}

/// A 2026-07-28 `tools/call` of `fx__echo` as `key`.
async fn modern_echo(gw: &Gateway, key: &str, text: &str) -> reqwest::Response {
    let body = json!({
        "jsonrpc": "2.0", "id": 7, "method": "tools/call",
        "params": {
            "name": "fx__echo",
            "arguments": { "text": text },
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {},
                "io.modelcontextprotocol/clientInfo": { "name": "limits-test", "version": "1" },
            },
        },
    });
    let req = reqwest::Client::new()
        .post(gw.mcp_url())
        .bearer_auth(key)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", "fx__echo")
        .body(body.to_string());
    within(Duration::from_secs(20), "a modern request", req.send())
        .await
        .expect("the gateway answers")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_modern_request_over_a_limit_gets_429_with_retry_after() {
    within(TEST_TIMEOUT, "429", async {
        let s = setup(
            json!([{ "id": "one-a-minute", "per": ["principal"], "rate": "1/min", "burst": 1 }]),
            |_| {},
        )
        .await;
        let alice = key(&s.gw, &["--principal", "alice"]).await;
        let first = modern_echo(&s.gw, &alice, "modern-1").await;
        assert_eq!(first.status(), 200);
        let second = modern_echo(&s.gw, &alice, "modern-2").await;
        assert_eq!(second.status(), 429);
        let after: u64 = second
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .expect("a Retry-After in seconds");
        let body: Value = serde_json::from_str(&second.text().await.unwrap()).expect("JSON-RPC");
        let wait = limit_error(&body["error"], "rate_limited", "one-a-minute").unwrap();
        assert_eq!(after, wait.div_ceil(1000), "{body}");
        assert!((1..=60).contains(&after), "{after}");
        assert_eq!(body["id"], 7);

        // A legacy session gets the same error with HTTP 200: its clients read no other status.
        let bob = key(&s.gw, &["--principal", "bob"]).await;
        let legacy = client(&s.gw, &bob).await;
        legacy
            .call_tool("fx__echo", json!({ "text": "legacy-1" }))
            .await;
        let e = legacy
            .error(
                "tools/call",
                json!({ "name": "fx__echo", "arguments": { "text": "legacy-2" } }),
            )
            .await;
        limit_error(&e, "rate_limited", "one-a-minute");
        assert_eq!(
            reached(&s.log, "echo", "modern-2") + reached(&s.log, "echo", "legacy-2"),
            0
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_holds_at_most_max_session_streams_get_streams() {
    within(TEST_TIMEOUT, "streams", async {
        let s = setup(json!([]), |c| c["max_session_streams"] = json!(1)).await;
        let alice = key(&s.gw, &["--principal", "alice"]).await;
        let http = reqwest::Client::new();
        let init = http
            .post(s.gw.mcp_url())
            .bearer_auth(&alice)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(support::initialize_body())
            .send();
        let init = within(Duration::from_secs(20), "initialize", init)
            .await
            .unwrap();
        assert_eq!(init.status(), 200);
        let session = init.headers()["mcp-session-id"]
            .to_str()
            .unwrap()
            .to_owned();
        let get = || {
            http.get(s.gw.mcp_url())
                .bearer_auth(&alice)
                .header("accept", "text/event-stream")
                .header("mcp-session-id", &session)
                .header("mcp-protocol-version", "2025-11-25")
                .send()
        };
        let first = within(Duration::from_secs(20), "a GET", get())
            .await
            .unwrap();
        assert_eq!(first.status(), 200);
        let second = within(Duration::from_secs(20), "a second GET", get())
            .await
            .unwrap();
        assert_eq!(second.status(), 429);
        assert!(second.headers().get("retry-after").is_some());
        let body: Value = serde_json::from_str(&second.text().await.unwrap()).unwrap();
        limit_error(&body["error"], "too_many_streams", "max_session_streams");
        let text = metrics(&s.gw).await;
        let series =
            r#"toolgate_limited_total{rule="max_session_streams",kind="streams",server=""}"#;
        assert_eq!(sample(&text, series), Some(1.0), "{text}");
        drop(first);
    })
    .await;
}

/// The Redis (or Valkey) server the shared-limiter tests use: `TOOLGATE_TEST_REDIS`, or the
/// machine's own.
fn test_redis() -> String {
    if let Ok(url) = std::env::var("TOOLGATE_TEST_REDIS") {
        return url;
    }
    assert!(
        std::net::TcpStream::connect("127.0.0.1:6379").is_ok(),
        "no Redis on 127.0.0.1:6379: run scripts/setup-services, or set TOOLGATE_TEST_REDIS"
    );
    "redis://127.0.0.1:6379".into()
}

#[tokio::test(flavor = "multi_thread")]
async fn replicas_with_redis_share_their_budgets() {
    within(TEST_TIMEOUT, "two replicas, one budget", async {
        // Ids of their own, so budgets left in the server by an earlier run never count.
        let run = format!("{:x}", rand_suffix());
        let (rate_id, slots_id, quota_id) = (
            format!("shared-rate-{run}"),
            format!("shared-slots-{run}"),
            format!("shared-quota-{run}"),
        );
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("upstream.log");
        let config = json!({
            "redis": test_redis(),
            "servers": { "fx": support::logged_stdio_fixture(&log) },
            "limits": [
                { "id": rate_id, "match": { "tools": ["fx__echo"] }, "rate": "5/s", "burst": 5 },
                { "id": slots_id, "match": { "tools": ["fx__sleep"] }, "concurrency": 1 },
                { "id": quota_id, "match": { "tools": ["fx__test_simple_text"] }, "quota": "2/day" },
            ],
        });
        // Two replicas; each starts its own fixture, and both log to the same file.
        let (a, b) = tokio::join!(Gateway::serve(config.clone()), Gateway::serve(config));
        let (ca, cb) = tokio::join!(
            Client::http(&a.base, Options::default()),
            Client::http(&b.base, Options::default())
        );

        // Both replicas flood one budget of 5/s, burst 5: without the shared store each would
        // admit that much on its own.
        let started = Instant::now();
        let refusals = std::sync::atomic::AtomicUsize::new(0);
        let flood = |c, w| shared_flood(c, w, started, &refusals, &rate_id);
        let oks =
            futures::future::join_all([flood(&ca, 0), flood(&ca, 1), flood(&cb, 2), flood(&cb, 3)])
                .await;
        let elapsed = started.elapsed().as_secs_f64();
        let ok: usize = oks.iter().sum();
        wait_reached(&log, "echo", "shared-", ok).await;
        let upstream = reached(&log, "echo", "shared-");
        assert_eq!(upstream, ok);
        let allowed = 5.0 + 5.0 * elapsed + 1.0;
        assert!(
            (upstream as f64) <= allowed,
            "{upstream} calls through two replicas in {elapsed:.2} s; one shared budget allows {allowed:.1}"
        );

        // One quota for both replicas.
        let simple = json!({ "name": "fx__test_simple_text", "arguments": {} });
        ca.result("tools/call", simple.clone()).await;
        cb.result("tools/call", simple.clone()).await;
        let e = ca.error("tools/call", simple).await;
        let wait = limit_error(&e, "quota_exceeded", &quota_id).expect("a retry hint");
        assert!((1000..=86_400_000).contains(&wait), "{e}");

        // One slot for both replicas: a call held on A refuses B's until A's ends.
        let (held, _answer) = ca.start_request(
            "tools/call",
            json!({ "name": "fx__sleep", "arguments": { "ms": 60_000 } }),
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while !upstream_calls(&log)
            .iter()
            .any(|m| m["params"]["name"] == "sleep")
        {
            assert!(Instant::now() < deadline, "the held call never reached the upstream");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let e = cb
            .error("tools/call", json!({ "name": "fx__sleep", "arguments": { "ms": 1 } }))
            .await;
        limit_error(&e, "concurrency_limited", &slots_id);
        ca.notify("notifications/cancelled", Some(json!({ "requestId": held })))
            .await;
        ca.wait_stream_ended(&held).await;
        // The slot is given back in the background: B gets it within moments.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let args = json!({ "name": "fx__sleep", "arguments": { "ms": 1 } });
            let resp = cb.request("tools/call", args).await;
            if resp.get("error").is_none() {
                break;
            }
            assert!(Instant::now() < deadline, "the slot never came back: {resp}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

/// One worker of the shared flood: calls until the flood has lasted 1.5 s and the limit
/// refused a few calls; returns how many went through.
async fn shared_flood(
    c: &Client,
    w: usize,
    started: Instant,
    refusals: &std::sync::atomic::AtomicUsize,
    rate_id: &str,
) -> usize {
    let mut ok = 0;
    let mut i = 0;
    while started.elapsed() < Duration::from_millis(1500) || refusals.load(Ordering::Relaxed) < 3 {
        i += 1;
        let text = format!("shared-{w}-{i}");
        let args = json!({ "name": "fx__echo", "arguments": { "text": text } });
        let resp = c.request("tools/call", args).await;
        match resp.get("error") {
            Some(e) => {
                let wait = limit_error(e, "rate_limited", rate_id);
                assert!(wait.is_some_and(|w| w <= 1000), "{e}");
                refusals.fetch_add(1, Ordering::Relaxed);
            }
            None => ok += 1,
        }
    }
    ok
}

/// A value unlikely to repeat across runs.
fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::process::id())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_redis_refuses_calls_instead_of_not_limiting() {
    within(TEST_TIMEOUT, "fail closed", async {
        let port = support::free_port();
        let s = setup(json!([{ "id": "any", "rate": "100/s" }]), |c| {
            c["redis"] = json!(format!("redis://127.0.0.1:{port}"));
        })
        .await;
        let alice_key = key(&s.gw, &["--principal", "alice"]).await;
        let alice = client(&s.gw, &alice_key).await;
        let e = alice
            .error(
                "tools/call",
                json!({ "name": "fx__echo", "arguments": { "text": "down-1" } }),
            )
            .await;
        let wait = limit_error(&e, "limiter_unavailable", "any");
        assert_eq!(wait, Some(1000), "{e}");
        let modern = modern_echo(&s.gw, &alice_key, "down-2").await;
        assert_eq!(
            modern.status(),
            503,
            "the gateway's trouble, not the caller's rate"
        );
        assert_eq!(modern.headers()["retry-after"], "1");
        assert_eq!(reached(&s.log, "echo", "down-"), 0);
    })
    .await;
}
