//! Fault injection through the real binary: upstreams that never answer, that flood their
//! client with notifications, that answer with huge results, that exit at start-up, and that
//! come back after a while — real processes (the fixture's fault tools, shell wrappers) behind
//! `toolgate serve`. For each fault: what the client sees (a clear JSON-RPC error within the
//! configured time, never a hang), that other clients and other servers are served meanwhile,
//! that the gateway's memory stays bounded (its resident set, from /proc), and how it recovers
//! on its own.
//!
//! Covered elsewhere: crashes mid-call and garbage on stdout (`behaviour.rs`,
//! `supervision.rs`), slow answers and per-tool timeouts (`timeouts.rs`), crash loops held
//! down (`supervision.rs`).

mod support;

use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};
use support::{
    Client, Gateway, Options, Transport, first_text, names, start_sleeping, until_it_answers,
    within,
};

/// Every test here finishes well within this, or fails instead of hanging.
const TEST_TIMEOUT: Duration = Duration::from_secs(150);
/// How long something the gateway does on its own may take on a loaded machine.
const EVENTUALLY: Duration = Duration::from_secs(40);
/// What a client may wait for an error that must come at once (far below any timeout).
const FAST_FAILURE: Duration = Duration::from_secs(10);
/// How much the gateway's resident memory may grow while hundreds of MB pass through it.
/// Generous (allocator slack, a busy machine): a leak or an unbounded buffer goes far past it.
const RSS_GROWTH: u64 = 64 * 1024 * 1024;
const MIB: u64 = 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// Helpers

fn merge(into: &mut Value, from: Value) {
    if let (Some(into), Value::Object(from)) = (into.as_object_mut(), from) {
        into.extend(from);
    }
}

/// The stdio fixture with these arguments, and more members in its entry.
fn fixture(args: &[&str], extra: Value) -> Value {
    let mut entry = support::stdio_server(args);
    merge(&mut entry, extra);
    entry
}

/// A stdio server entry: `/bin/sh -c SCRIPT`, where `$FIXTURE` in the script is the fixture
/// binary.
fn scripted(script: &str, extra: Value) -> Value {
    let script = script.replace(
        "$FIXTURE",
        &format!("'{}'", support::fixture_bin().display()),
    );
    let mut entry = json!({ "command": "/bin/sh", "args": ["-c", script] });
    merge(&mut entry, extra);
    entry
}

async fn http_client(gw: &Gateway) -> Client {
    gw.client(Transport::StreamableHttp, Options::default())
        .await
}

/// The gateway process's resident memory, in bytes.
fn rss(gw: &Gateway) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", gw.pid()))
        .expect("the gateway's /proc status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in {status}"));
    kib * 1024
}

/// Fail unless the resident memory grew by less than [`RSS_GROWTH`] from `base`.
fn assert_bounded(what: &str, base: u64, now: u64) {
    let growth = now.saturating_sub(base);
    eprintln!("{what}: resident memory {} → {} MiB", base / MIB, now / MIB);
    assert!(
        growth < RSS_GROWTH,
        "{what}: the gateway's resident memory grew by {} MiB ({} → {} MiB)",
        growth / MIB,
        base / MIB,
        now / MIB
    );
}

/// Wait (polling, bounded) until `check` holds.
async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + EVENTUALLY;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "{what}: not within {EVENTUALLY:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A `tools/call` and its whole response message.
async fn call(client: &Client, tool: &str, arguments: Value) -> Value {
    client
        .request(
            "tools/call",
            json!({ "name": tool, "arguments": arguments }),
        )
        .await
}

/// The error of a `tools/call` that must fail.
async fn call_error(client: &Client, tool: &str, arguments: Value) -> Value {
    let resp = call(client, tool, arguments).await;
    resp.get("error")
        .cloned()
        .unwrap_or_else(|| panic!("{tool} should have failed: {resp}"))
}

/// Call `echo` on `server` and check that it answers with the text.
async fn echoes(client: &Client, server: &str, text: &str) {
    let result = client
        .call_tool(&format!("{server}__echo"), json!({ "text": text }))
        .await;
    assert_eq!(first_text(&result), text, "{server}: {result}");
}

async fn response_of(rx: tokio::sync::oneshot::Receiver<Value>, what: &str) -> Value {
    within(EVENTUALLY, what, rx)
        .await
        .unwrap_or_else(|_| panic!("{what}: the client went away"))
}

/// The names of the tools a client sees.
async fn tool_names(client: &Client) -> Vec<String> {
    names(&client.list_all("tools/list", "tools").await)
}

fn has_tools_of(listed: &[String], server: &str) -> bool {
    listed.iter().any(|n| n.starts_with(&format!("{server}__")))
}

/// `http://127.0.0.1:PORT` of an admin listener on a free port, and its config entry.
fn admin() -> (String, Value) {
    let addr = format!("127.0.0.1:{}", support::free_port());
    (format!("http://{addr}"), json!({ "listen": addr }))
}

async fn get_text(url: &str) -> (u16, String) {
    let resp = within(FAST_FAILURE, url, reqwest::get(url))
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

/// The sum of the Prometheus samples whose series line starts with `name{` and contains
/// every one of `labels`.
fn metric(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .count()
}

// ---------------------------------------------------------------------------------------------
// Hangs forever

/// A call the server never answers ends with -32051 at the tool's timeout, whether or not the
/// server heeds the cancellation; meanwhile other servers and the hung servers' other tools
/// answer, and afterwards the hung servers keep serving and time out cleanly again.
#[tokio::test]
async fn a_call_that_is_never_answered_times_out_and_nothing_else_waits_for_it() {
    within(TEST_TIMEOUT, "test", async {
        let timeouts = json!({ "isolation": "shared", "tools": { "timeouts": { "sleep": "5s" } } });
        let gw = Gateway::serve(json!({
            "servers": {
                "hung": fixture(&[], timeouts.clone()),
                // Never hears a cancellation: its abandoned calls go on (60 s each).
                "deaf": scripted(
                    "grep --line-buffered -v notifications/cancelled | exec $FIXTURE stdio",
                    timeouts,
                ),
                "good": fixture(&[], json!({ "isolation": "shared" })),
            },
        }))
        .await;
        let caller = http_client(&gw).await;
        let other = gw.client(Transport::LegacySse, Options::default()).await;

        let (hung_started, hung) = start_sleeping(&caller, "hung__sleep", 60_000).await;
        let (deaf_started, deaf) = start_sleeping(&caller, "deaf__sleep", 60_000).await;

        // Meanwhile: another client, another server, and the hung servers' other tools.
        for i in 0..10 {
            echoes(&other, "good", &format!("meanwhile {i}")).await;
        }
        echoes(&other, "hung", "the server itself answers").await;
        echoes(&other, "deaf", "so does this one").await;
        assert_eq!(other.result("ping", Value::Null).await, json!({}));
        let still_waiting = |rx: &mut tokio::sync::oneshot::Receiver<Value>| {
            matches!(
                rx.try_recv(),
                Err(tokio::sync::oneshot::error::TryRecvError::Empty)
            )
        };
        let (mut hung, mut deaf) = (hung, deaf);
        assert!(
            still_waiting(&mut hung) && still_waiting(&mut deaf),
            "the other calls were answered only after the hung ones"
        );

        for (server, started, rx) in [("hung", hung_started, hung), ("deaf", deaf_started, deaf)] {
            let resp = response_of(rx, &format!("the {server} call")).await;
            let took = started.elapsed();
            let error = &resp["error"];
            assert_eq!(error["code"], -32051, "{server}: {resp}");
            assert_eq!(error["data"]["server"], server, "{resp}");
            let message = error["message"].as_str().unwrap_or_default();
            assert!(
                message.contains(&format!("'{server}'")) && message.contains("within 5s"),
                "the error names the server and the time: {resp}"
            );
            assert!(
                took >= Duration::from_secs(5) && took < Duration::from_secs(5) + FAST_FAILURE,
                "{server}: answered after {took:?}, not at its 5 s timeout"
            );
        }

        // The gateway cancelled both upstream; only `hung` heard it.
        let deadline = Instant::now() + FAST_FAILURE;
        loop {
            let seen = caller
                .call_tool("hung__sleep_cancellations", json!({}))
                .await;
            if first_text(&seen) == "1" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "hung never saw the cancel: {seen}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let seen = caller
            .call_tool("deaf__sleep_cancellations", json!({}))
            .await;
        assert_eq!(first_text(&seen), "0", "the cancellation reached deaf");

        // Later calls: answered, or timed out as cleanly — a burst of them, with the
        // abandoned calls still running in the server.
        let base = rss(&gw);
        let started = Instant::now();
        let burst: Vec<_> = (0..50)
            .map(|_| {
                caller
                    .start_request(
                        "tools/call",
                        json!({ "name": "deaf__sleep", "arguments": { "ms": 60_000 } }),
                    )
                    .1
            })
            .collect();
        echoes(&other, "deaf", "still serving").await;
        echoes(&other, "hung", "still serving").await;
        for rx in burst {
            let resp = response_of(rx, "a call of the burst").await;
            assert_eq!(resp["error"]["code"], -32051, "{resp}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(5) + FAST_FAILURE,
            "the burst took {:?}",
            started.elapsed()
        );
        echoes(&caller, "deaf", "after the burst").await;
        echoes(&caller, "good", "after the burst").await;
        assert_bounded("50 hung calls", base, rss(&gw));
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Floods notifications

/// A legacy Streamable HTTP session driven by hand: for a client that stops reading, and for
/// reading floods without keeping them.
struct RawSession {
    http: reqwest::Client,
    url: String,
    id: String,
}

impl RawSession {
    async fn open(gw: &Gateway) -> RawSession {
        let http = reqwest::Client::new();
        let url = gw.mcp_url();
        let resp = within(
            FAST_FAILURE,
            "initialize",
            http.post(&url)
                .header("content-type", "application/json")
                .header("accept", "application/json, text/event-stream")
                .body(support::initialize_body())
                .send(),
        )
        .await
        .expect("initialize answers");
        let id = resp
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .expect("a session id")
            .to_owned();
        let session = RawSession { http, url, id };
        let resp = session
            .post(json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }))
            .await;
        assert_eq!(resp.status().as_u16(), 202);
        session
    }

    /// POST one message; returns once the response's headers arrived (its body unread).
    async fn post(&self, msg: Value) -> reqwest::Response {
        let send = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-session-id", &self.id)
            .header("mcp-protocol-version", "2025-11-25")
            .body(msg.to_string())
            .send();
        within(FAST_FAILURE, "a POST's headers", send)
            .await
            .expect("the gateway answers")
    }

    /// The session's GET stream; returns once its headers arrived (its body unread).
    async fn get_stream(&self) -> reqwest::Response {
        let send = self
            .http
            .get(&self.url)
            .header("accept", "text/event-stream")
            .header("mcp-session-id", &self.id)
            .header("mcp-protocol-version", "2025-11-25")
            .send();
        let resp = within(FAST_FAILURE, "the GET stream's headers", send)
            .await
            .expect("the gateway answers");
        assert_eq!(resp.status().as_u16(), 200);
        resp
    }
}

/// A `tools/call` of the fixture's `flood` on server `flood`.
fn flood_call(id: u64, arguments: Value, token: Option<&str>) -> Value {
    let mut call = json!({
        "jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": { "name": "flood__flood", "arguments": arguments },
    });
    if let Some(token) = token {
        call["params"]["_meta"] = json!({ "progressToken": token });
    }
    call
}

/// What an SSE body (or a plain JSON one) carried, counted as it is read rather than kept:
/// floods are large.
#[derive(Default)]
struct Tally {
    /// `notifications/message` from the flood, and the highest `n` among them.
    logs: usize,
    last_n: Option<u64>,
    /// The progress tokens seen, with how many notifications each.
    progress: std::collections::BTreeMap<String, usize>,
    /// Responses (they are small here) and any other message.
    responses: Vec<Value>,
    others: Vec<Value>,
}

impl Tally {
    fn add(&mut self, data: &str) {
        if data.contains("\"notifications/message\"") && data.contains("\"logger\":\"flood\"") {
            // Only the padding is large; `"n":` is the one number in the message.
            self.logs += 1;
            let n = data
                .split_once("\"n\":")
                .map(|(_, rest)| {
                    rest.chars()
                        .take_while(char::is_ascii_digit)
                        .collect::<String>()
                })
                .and_then(|digits| digits.parse().ok());
            self.last_n = self.last_n.max(n);
            return;
        }
        let msg: Value = serde_json::from_str(data).unwrap_or_else(|_| json!({ "unparsed": data }));
        if msg["method"] == "notifications/progress" {
            let token = msg["params"]["progressToken"].as_str().unwrap_or("(none)");
            *self.progress.entry(token.to_owned()).or_default() += 1;
        } else if msg.get("id").is_some() && msg.get("method").is_none() {
            self.responses.push(msg);
        } else {
            self.others.push(msg);
        }
    }

    /// The text of the one response's result.
    fn answer(&self) -> String {
        assert_eq!(self.responses.len(), 1, "{:?}", self.responses);
        first_text(&self.responses[0]["result"]).to_owned()
    }
}

/// Read a response body to its end (bounded), tallying what it carried.
async fn read_all(resp: reqwest::Response) -> Tally {
    let tally = std::sync::Arc::new(std::sync::Mutex::new(Tally::default()));
    within(
        EVENTUALLY,
        "reading a response",
        read_into(resp, tally.clone()),
    )
    .await;
    std::sync::Arc::into_inner(tally)
        .expect("read")
        .into_inner()
        .expect("not poisoned")
}

/// Read a response body (SSE, or one JSON message) into `tally` until it ends.
async fn read_into(mut resp: reqwest::Response, tally: std::sync::Arc<std::sync::Mutex<Tally>>) {
    let sse = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("text/event-stream"));
    let mut buf: Vec<u8> = Vec::new();
    let mut scanned = 0;
    while let Ok(Some(chunk)) = resp.chunk().await {
        buf.extend_from_slice(&chunk);
        if !sse {
            continue;
        }
        // One `data:` line per message (the gateway writes no multi-line data).
        while let Some(nl) = buf[scanned..].iter().position(|&b| b == b'\n') {
            let line = String::from_utf8_lossy(&buf[..scanned + nl]).into_owned();
            buf.drain(..=scanned + nl);
            scanned = 0;
            if let Some(data) = line.strip_prefix("data:") {
                let data = data.trim();
                if !data.is_empty() {
                    tally.lock().expect("not poisoned").add(data);
                }
            }
        }
        scanned = buf.len();
    }
    if !sse && !buf.is_empty() {
        tally
            .lock()
            .expect("not poisoned")
            .add(&String::from_utf8_lossy(&buf));
    }
}

/// A server flooding its caller with log messages and progress, during calls and outside
/// them: the caller gets its answers and its own notifications (with its own progress token),
/// no other client sees any of them, other clients are served meanwhile, and the gateway's
/// memory stays bounded while well over a hundred MB pass through it.
#[tokio::test]
async fn a_notification_flood_reaches_only_its_caller_and_memory_stays_bounded() {
    within(TEST_TIMEOUT, "test", async {
        let gw = Gateway::serve(json!({
            "servers": {
                // A child per session, so what it sends outside a call belongs to the session.
                "flood": fixture(&["--fault-tools"], json!({ "era": "legacy" })),
                "good": fixture(&[], json!({ "isolation": "shared" })),
            },
        }))
        .await;
        let flooded = RawSession::open(&gw).await;
        let listening = std::sync::Arc::new(std::sync::Mutex::new(Tally::default()));
        let reader = tokio::spawn(read_into(flooded.get_stream().await, listening.clone()));
        let other = http_client(&gw).await;
        let (count, bytes) = (1200u64, 32 * 1024u64);

        // Warm up (the session's child, its kept streams, the allocator), then measure.
        let warm = flooded
            .post(flood_call(2, json!({ "count": 600, "bytes": bytes }), None))
            .await;
        assert!(read_all(warm).await.answer().starts_with("sent 600 log"));
        let base = rss(&gw);
        let mut peak = base;
        for round in 0..2u64 {
            let token = format!("flood-{round}");
            let arguments = json!({ "count": count, "bytes": bytes });
            let resp = flooded
                .post(flood_call(10 + round, arguments, Some(&token)))
                .await;
            // The other client is served while the flood runs.
            let (tally, ()) = tokio::join!(read_all(resp), async {
                for i in 0..10 {
                    echoes(&other, "good", &format!("round {round}, call {i}")).await;
                }
            });
            assert_eq!(
                tally.answer(),
                format!("sent {count} log message(s) and {count} progress notification(s)")
            );
            assert!(tally.logs > 0, "none of the flood's log messages arrived");
            assert_eq!(
                tally.progress.keys().collect::<Vec<_>>(),
                [&token],
                "progress carries the client's own token"
            );
            assert!(tally.others.is_empty(), "{:?}", tally.others.first());
            peak = peak.max(rss(&gw));
        }

        // Outside any call: the session's own stream gets them.
        let resp = flooded
            .post(flood_call(
                20,
                json!({ "count": count, "bytes": bytes, "detach": true }),
                None,
            ))
            .await;
        assert!(read_all(resp).await.answer().starts_with("flooding"));
        until("the last message of the flood outside a call", || {
            peak = peak.max(rss(&gw));
            listening.lock().expect("not poisoned").last_n == Some(count - 1)
        })
        .await;
        assert_bounded(
            &format!("3 floods of {count} log messages of 32 KiB"),
            base,
            peak.max(rss(&gw)),
        );
        reader.abort();

        let leaked: Vec<Value> = other
            .notifications()
            .into_iter()
            .filter(|n| n["method"] != "notifications/tools/list_changed")
            .collect();
        assert!(
            leaked.is_empty(),
            "another client got the flood: {:?}",
            leaked.first()
        );
        let ping = flooded
            .post(json!({ "jsonrpc": "2.0", "id": 30, "method": "ping" }))
            .await;
        assert_eq!(read_all(ping).await.responses[0]["result"], json!({}));
        echoes(&other, "flood", "after the floods").await;
    })
    .await;
}

/// A client that stops reading its response stream and its GET stream while its server floods
/// it: the gateway keeps only a bounded tail for it (its memory stays bounded while over a
/// hundred MB pass), other clients are served meanwhile, and the answer is still there when
/// the client reads again.
#[tokio::test]
async fn a_client_that_stops_reading_costs_the_gateway_bounded_memory() {
    within(TEST_TIMEOUT, "test", async {
        let (admin_base, admin) = admin();
        let gw = Gateway::serve(json!({
            "admin": admin,
            "servers": {
                "flood": fixture(&["--fault-tools"], json!({ "era": "legacy" })),
                "good": fixture(&[], json!({ "isolation": "shared" })),
            },
        }))
        .await;
        let other = http_client(&gw).await;
        let stalled = RawSession::open(&gw).await;
        let (count, bytes) = (2000u64, 64 * 1024u64);
        let finished = || async {
            let (_, text) = get_text(&format!("{admin_base}/metrics")).await;
            metric(&text, "toolgate_requests_total", &["tool=\"flood__flood\""])
        };
        // Warm up, reading everything.
        let warm = stalled
            .post(flood_call(2, json!({ "count": 200, "bytes": bytes }), None))
            .await;
        assert!(read_all(warm).await.answer().starts_with("sent 200 log"));
        assert_eq!(finished().await, 1.0, "the finished call is counted");

        let base = rss(&gw);
        let mut peak = base;
        let _unread_get = stalled.get_stream().await;
        let started = Instant::now();
        let unread = stalled
            .post(flood_call(
                3,
                json!({ "count": count, "bytes": bytes }),
                None,
            ))
            .await;
        // Until the gateway has answered the call (counted when it ends), nobody reading.
        let mut served = 0;
        while finished().await < 2.0 {
            assert!(started.elapsed() < EVENTUALLY * 2, "the flood did not end");
            peak = peak.max(rss(&gw));
            echoes(&other, "good", &format!("meanwhile {served}")).await;
            served += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(served > 0);
        assert_bounded(
            &format!("{count} log messages of 64 KiB nobody read"),
            base,
            peak.max(rss(&gw)),
        );

        // Reading again: what is left ends with the answer.
        let tally = read_all(unread).await;
        assert_eq!(
            tally.answer(),
            format!("sent {count} log message(s) and 0 progress notification(s)")
        );
        assert!(
            (tally.logs as u64) < count,
            "all {} messages were kept for a client that did not read",
            tally.logs
        );
        let ping = stalled
            .post(json!({ "jsonrpc": "2.0", "id": 4, "method": "ping" }))
            .await;
        assert_eq!(read_all(ping).await.responses[0]["result"], json!({}));
        echoes(&other, "flood", "after the flood").await;
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Huge results

/// Results over the server's `max_result_bytes` reach the client as -32042
/// `result_too_large` and the server keeps serving; a message over `max_message_bytes` is a
/// broken server (-32052 naming it), whose connection is re-established; many big but allowed
/// results pass to several clients at once while others are served, and the gateway's memory
/// stays bounded.
#[tokio::test]
async fn huge_results_get_a_clear_error_and_big_ones_pass_with_bounded_memory() {
    within(TEST_TIMEOUT, "test", async {
        let gw = Gateway::serve(json!({
            "max_message_bytes": 4 * MIB,
            "servers": {
                "capped": fixture(&["--fault-tools"], json!({ "isolation": "shared", "max_result_bytes": MIB })),
                "big": fixture(&["--fault-tools"], json!({ "isolation": "shared" })),
                "good": fixture(&[], json!({ "isolation": "shared" })),
            },
        }))
        .await;
        let http = http_client(&gw).await;
        let sse = gw.client(Transport::LegacySse, Options::default()).await;
        let bystander = http_client(&gw).await;

        // Over the server's own limit: withheld, with the limit named.
        let started = Instant::now();
        let error = call_error(&http, "capped__big", json!({ "bytes": 2 * MIB })).await;
        assert!(started.elapsed() < FAST_FAILURE, "took {:?}", started.elapsed());
        assert_eq!(error["code"], -32042, "{error}");
        assert_eq!(error["data"]["code"], "result_too_large", "{error}");
        assert_eq!(error["data"]["limit"], "max_result_bytes", "{error}");
        echoes(&http, "capped", "still connected").await;
        let allowed = http.call_tool("capped__big", json!({ "bytes": MIB / 2 })).await;
        assert_eq!(first_text(&allowed).len() as u64, MIB / 2);

        // Over the gateway's message limit: the server broke the protocol.
        let started = Instant::now();
        let error = call_error(&http, "big__big", json!({ "bytes": 5 * MIB })).await;
        assert!(started.elapsed() < FAST_FAILURE, "took {:?}", started.elapsed());
        assert_eq!(error["code"], -32052, "{error}");
        assert_eq!(error["data"]["server"], "big", "{error}");
        assert!(
            error["message"].as_str().unwrap_or_default().contains(&format!("larger than {} bytes", 4 * MIB)),
            "{error}"
        );
        echoes(&bystander, "good", "unaffected").await;
        let back = until_it_answers(&http, "big__echo", json!({ "text": "back" })).await;
        assert_eq!(first_text(&back), "back");

        // Big but allowed, over and over, to two clients at once.
        async fn fetch(client: &Client, n: usize) {
            let size = 3 * MIB;
            for _ in 0..n {
                let result = client.call_tool("big__big", json!({ "bytes": size })).await;
                assert_eq!(first_text(&result).len() as u64, size, "{}", client.label());
            }
        }
        // Warm up: the kept streams fill up to their bounds; then measure.
        tokio::join!(fetch(&http, 6), fetch(&sse, 6));
        let base = rss(&gw);
        let ((), (), ()) = tokio::join!(fetch(&http, 16), fetch(&sse, 16), async {
            for i in 0..16 {
                echoes(&bystander, "good", &format!("meanwhile {i}")).await;
            }
        });
        assert_bounded("32 more results of 3 MiB", base, rss(&gw));
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Exits at start-up

/// Servers whose command exits at once, or writes garbage and exits: with `failure: open` the
/// gateway starts and serves the others, their tools are absent, `catalog --json` and the
/// `toolgate_upstream_up` gauge say they are down and why, `/readyz` stays ready (they are
/// not required), and a client of `toolgate stdio` on the same config is served too.
#[tokio::test]
async fn servers_that_exit_at_start_up_are_reported_down_and_the_others_serve() {
    within(TEST_TIMEOUT, "test", async {
        let (admin_base, admin) = admin();
        let gw = Gateway::serve(json!({
            "admin": admin,
            "servers": {
                "exits": scripted("exit 3", json!({ "failure": "open" })),
                "garbage": scripted("echo 'this is not MCP'; exit 0", json!({ "failure": "open" })),
                "good": fixture(&[], json!({ "isolation": "shared" })),
            },
        }))
        .await;
        let client = http_client(&gw).await;
        let listed = tool_names(&client).await;
        assert!(has_tools_of(&listed, "good"), "{listed:?}");
        for down in ["exits", "garbage"] {
            assert!(
                !has_tools_of(&listed, down),
                "{down}'s tools are listed: {listed:?}"
            );
            let started = Instant::now();
            let error = call_error(&client, &format!("{down}__echo"), json!({ "text": "x" })).await;
            assert!(
                started.elapsed() < FAST_FAILURE,
                "took {:?}",
                started.elapsed()
            );
            assert_eq!(error["code"], -32602, "an unknown tool: {error}");
        }
        echoes(&client, "good", "served").await;

        let (status, body) = get_text(&format!("{}/readyz", gw.base)).await;
        assert_eq!(
            status, 200,
            "servers that are not required do not make it unready: {body}"
        );
        let (_, metrics) = get_text(&format!("{admin_base}/metrics")).await;
        for (server, up) in [("exits", 0.0), ("garbage", 0.0), ("good", 1.0)] {
            let label = format!("server=\"{server}\"");
            assert!(
                metrics.contains(&format!("toolgate_upstream_up{{{label}}}")),
                "no toolgate_upstream_up for {server}:\n{metrics}"
            );
            assert_eq!(
                metric(&metrics, "toolgate_upstream_up", &[&label]),
                up,
                "{server}"
            );
        }

        let path = gw.config.path.to_string_lossy().into_owned();
        let (code, stdout, stderr) =
            support::run_toolgate(&["catalog", "--json", "--config", &path], EVENTUALLY).await;
        assert_eq!(code, Some(0), "{stderr}");
        let catalog: Value = serde_json::from_str(&stdout).expect("JSON");
        let server = |name: &str| {
            catalog["servers"]
                .as_array()
                .and_then(|all| all.iter().find(|s| s["name"] == name))
                .cloned()
                .unwrap_or_else(|| panic!("{name} is not in the catalog: {catalog}"))
        };
        for (name, why) in [("exits", "exit status: 3"), ("garbage", "not JSON-RPC")] {
            let entry = server(name);
            assert_eq!(entry["status"], "down", "{entry}");
            let reason = entry["reason"].as_str().unwrap_or_default();
            assert!(
                reason.contains(why),
                "{name}: the reason should say {why:?}: {reason}"
            );
        }
        assert_eq!(server("good")["status"], "ready");

        let stdio = gw.client(Transport::Stdio, Options::default()).await;
        let listed = tool_names(&stdio).await;
        assert!(
            has_tools_of(&listed, "good") && !has_tools_of(&listed, "exits"),
            "{listed:?}"
        );
        echoes(&stdio, "good", "over stdio").await;
    })
    .await;
}

/// The same servers with `failure: closed`: `serve` does not start without them, and says
/// which server and why.
#[tokio::test]
async fn a_required_server_that_exits_at_start_up_stops_serve_with_the_reason() {
    within(TEST_TIMEOUT, "test", async {
        for (script, why) in [
            ("exit 3", "exit status: 3"),
            ("echo 'this is not MCP'; exit 0", "not JSON-RPC"),
        ] {
            let config = support::ConfigFile::json(&json!({
                "servers": {
                    "required": scripted(script, json!({ "failure": "closed" })),
                    "good": fixture(&[], json!({ "isolation": "shared" })),
                },
            }));
            let path = config.path.to_string_lossy().into_owned();
            let (code, _, stderr) = support::run_toolgate(
                &["serve", "--config", &path, "--listen", "127.0.0.1:0"],
                EVENTUALLY,
            )
            .await;
            assert!(
                code.is_some_and(|c| c != 0),
                "exit {code:?}; stderr:\n{stderr}"
            );
            assert!(
                stderr.contains("'required'") && stderr.contains(why),
                "serve should name the server and say {why:?}:\n{stderr}"
            );
        }
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Comes back after a while

/// How many `notifications/tools/list_changed` a client has received.
fn list_changes(client: &Client) -> usize {
    client
        .notifications()
        .iter()
        .filter(|n| n["method"] == "notifications/tools/list_changed")
        .count()
}

/// Wait until `client` has been told the tool list changed (more than `before` times).
async fn wait_list_changed(client: &Client, before: usize) {
    let what = format!("{}: notifications/tools/list_changed", client.label());
    until(&what, || list_changes(client) > before).await;
}

/// A stdio server that fails its first starts (a wrapper counting its starts, failing while
/// a file exists) comes back on its own: the gateway keeps retrying, and once a start
/// succeeds connected clients are told the tool list changed, its tools are listed and calls
/// succeed — no gateway restart.
#[tokio::test]
async fn a_server_that_fails_its_first_starts_comes_back_and_clients_are_told() {
    within(TEST_TIMEOUT, "test", async {
        let dir = tempfile::tempdir().expect("a temp dir");
        let (starts, down) = (dir.path().join("starts"), dir.path().join("down"));
        std::fs::write(&down, "").expect("mark down");
        let script = format!(
            "echo start >> '{}'; [ -e '{}' ] && {{ echo 'not yet' >&2; exit 1; }}; exec $FIXTURE stdio",
            starts.display(),
            down.display()
        );
        let gw = Gateway::serve(json!({
            "servers": {
                "late": scripted(&script, json!({
                    "isolation": "shared",
                    "restart": { "max": 100, "window": "10m" },
                })),
                "good": fixture(&[], json!({ "isolation": "shared" })),
            },
        }))
        .await;
        let http = http_client(&gw).await;
        let sse = gw.client(Transport::LegacySse, Options::default()).await;
        for client in [&http, &sse] {
            let listed = tool_names(client).await;
            assert!(!has_tools_of(&listed, "late"), "{listed:?}");
            assert!(has_tools_of(&listed, "good"), "{listed:?}");
        }
        let error = call_error(&http, "late__echo", json!({ "text": "too early" })).await;
        assert_eq!(error["code"], -32602, "{error}");
        // The gateway tries again on its own.
        until("a second failed start", || lines(&starts) >= 2).await;
        let before = (list_changes(&http), list_changes(&sse));

        std::fs::remove_file(&down).expect("repaired");
        wait_list_changed(&http, before.0).await;
        wait_list_changed(&sse, before.1).await;
        for client in [&http, &sse] {
            let listed = tool_names(client).await;
            assert!(has_tools_of(&listed, "late"), "{}: {listed:?}", client.label());
            echoes(client, "late", "back").await;
        }
        echoes(&http, "good", "still here").await;
        assert!(lines(&starts) >= 3, "{} starts", lines(&starts));
    })
    .await;
}

/// An HTTP server that is down when the gateway starts and is started later: the gateway
/// connects on its own, tells connected clients the tool list changed, reports it up, and
/// calls succeed.
#[tokio::test]
async fn an_http_server_started_after_the_gateway_is_picked_up_on_its_own() {
    within(TEST_TIMEOUT, "test", async {
        let port = support::free_port();
        let (admin_base, admin) = admin();
        let gw = Gateway::serve(json!({
            "admin": admin,
            "servers": {
                "later": { "url": format!("http://127.0.0.1:{port}/mcp"), "failure": "open" },
                "good": fixture(&[], json!({ "isolation": "shared" })),
            },
        }))
        .await;
        let client = http_client(&gw).await;
        let listed = tool_names(&client).await;
        assert!(
            !has_tools_of(&listed, "later") && has_tools_of(&listed, "good"),
            "{listed:?}"
        );
        let up = || async {
            let (_, metrics) = get_text(&format!("{admin_base}/metrics")).await;
            metric(&metrics, "toolgate_upstream_up", &["server=\"later\""])
        };
        assert_eq!(up().await, 0.0);
        let before = list_changes(&client);

        let _server = Fixture::http(port);
        wait_list_changed(&client, before).await;
        let listed = tool_names(&client).await;
        assert!(has_tools_of(&listed, "later"), "{listed:?}");
        echoes(&client, "later", "picked up").await;
        assert_eq!(up().await, 1.0);
        echoes(&client, "good", "still here").await;
    })
    .await;
}

/// `toolgate-fixture http` on a given port (the gateway's config names it before it runs);
/// killed when dropped.
struct Fixture(std::process::Child);

impl Fixture {
    fn http(port: u16) -> Fixture {
        let child = std::process::Command::new(support::fixture_bin())
            .args(["http", "--listen", &format!("127.0.0.1:{port}")])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("the fixture starts");
        Fixture(child)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
