//! Streamable HTTP streams as a client meets them on the wire: keep-alive comments
//! on idle streams, and resuming a broken response stream with `Last-Event-ID`.

mod support;

use serde_json::{Value, json};
use std::time::Duration;
use support::{Gateway, stdio_server, within};
use toolgate::sse::{Event, Parser};

const ACCEPT: &str = "application/json, text/event-stream";

/// Open a session with raw requests; returns its id.
async fn open_session(http: &reqwest::Client, url: &str) -> String {
    let resp = http
        .post(url)
        .header("accept", ACCEPT)
        .header("content-type", "application/json")
        .body(
            json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                "protocolVersion": "2025-11-25", "capabilities": {},
                "clientInfo": {"name": "streams-test", "version": "1"}}})
            .to_string(),
        )
        .send()
        .await
        .expect("initialize is answered");
    assert!(resp.status().is_success());
    let sid = resp.headers()["mcp-session-id"]
        .to_str()
        .expect("ascii session id")
        .to_owned();
    let ack = http
        .post(url)
        .header("accept", ACCEPT)
        .header("content-type", "application/json")
        .header("mcp-session-id", &sid)
        .body(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string())
        .send()
        .await
        .expect("initialized is accepted");
    assert_eq!(ack.status().as_u16(), 202);
    sid
}

/// Read raw chunks of an event stream until `enough` says so, returning the text
/// and the events parsed so far.
async fn read_until(
    resp: &mut reqwest::Response,
    enough: impl Fn(&str, &[Event]) -> bool,
) -> (String, Vec<Event>) {
    let mut parser = Parser::new(1 << 20);
    let (mut raw, mut events) = (String::new(), Vec::new());
    while !enough(&raw, &events) {
        let chunk = resp
            .chunk()
            .await
            .expect("the stream reads")
            .expect("the stream is still open");
        raw.push_str(&String::from_utf8_lossy(&chunk));
        events.extend(parser.feed(&chunk).expect("valid SSE"));
    }
    (raw, events)
}

fn json_of(ev: &Event) -> Value {
    serde_json::from_str(&ev.data).unwrap_or(Value::Null)
}

#[tokio::test]
async fn an_idle_get_stream_gets_keep_alive_comments() {
    let gw = Gateway::serve(json!({ "sse_keep_alive": "200ms", "servers": {} })).await;
    let http = reqwest::Client::new();
    let url = gw.mcp_url();
    let sid = open_session(&http, &url).await;
    let mut stream = http
        .get(&url)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", &sid)
        .send()
        .await
        .expect("GET is answered");
    assert_eq!(stream.status().as_u16(), 200);
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    let (raw, _) = within(Duration::from_secs(10), "a keep-alive comment", async {
        read_until(&mut stream, |raw, _| raw.contains(": keep-alive\n\n")).await
    })
    .await;
    assert!(raw.starts_with(": keep-alive"), "{raw:?}");
}

#[tokio::test]
async fn a_broken_response_stream_resumes_with_last_event_id() {
    let gw = Gateway::serve(json!({ "servers": { "fx": stdio_server(&[]) } })).await;
    let http = reqwest::Client::new();
    let url = gw.mcp_url();
    let sid = open_session(&http, &url).await;
    // `sleep` reports progress as it starts, then answers after the pause: the
    // response arrives on an event stream, and only after we have hung up.
    let call = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {
        "name": "fx__sleep", "arguments": {"ms": 1500}, "_meta": {"progressToken": "p-1"}}});
    let mut first = http
        .post(&url)
        .header("accept", ACCEPT)
        .header("content-type", "application/json")
        .header("mcp-session-id", &sid)
        .body(call.to_string())
        .send()
        .await
        .expect("the call is answered");
    assert_eq!(first.headers()["content-type"], "text/event-stream");
    let (_, events) = within(Duration::from_secs(10), "the progress event", async {
        read_until(&mut first, |_, evs| {
            evs.iter()
                .any(|e| json_of(e)["method"] == "notifications/progress")
        })
        .await
    })
    .await;
    let progress = events
        .iter()
        .find(|e| json_of(e)["method"] == "notifications/progress")
        .expect("progress arrived");
    assert_eq!(json_of(progress)["params"]["progressToken"], "p-1");
    let last_id = progress.id.clone().expect("events carry ids");
    drop(first); // the connection breaks before the response

    let mut resumed = http
        .get(&url)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", &sid)
        .header("last-event-id", &last_id)
        .send()
        .await
        .expect("the resumption is answered");
    assert_eq!(resumed.status().as_u16(), 200);
    let (_, events) = within(Duration::from_secs(10), "the resumed response", async {
        read_until(&mut resumed, |_, evs| {
            evs.iter().any(|e| json_of(e)["id"] == 7)
        })
        .await
    })
    .await;
    let response = json_of(events.last().expect("an event"));
    assert_eq!(response["id"], 7);
    assert!(response["result"]["content"].is_array(), "{response}");
    // Nothing is delivered twice: the progress event came before the resume point.
    assert!(
        events
            .iter()
            .all(|e| json_of(e)["method"] != "notifications/progress"),
        "replayed an event the client had already seen"
    );

    let unknown = http
        .get(&url)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", &sid)
        .header("last-event-id", "999-0")
        .send()
        .await
        .expect("answered");
    assert_eq!(unknown.status().as_u16(), 400);
}

/// A message POSTed in session `sid`.
fn in_session(
    http: &reqwest::Client,
    url: &str,
    sid: &str,
    message: &Value,
) -> reqwest::RequestBuilder {
    http.post(url)
        .header("accept", ACCEPT)
        .header("content-type", "application/json")
        .header("mcp-session-id", sid)
        .body(message.to_string())
}

/// The JSON body a request is answered with.
async fn json_answer(req: reqwest::RequestBuilder) -> Value {
    let text = req
        .send()
        .await
        .expect("answered")
        .text()
        .await
        .expect("a body");
    serde_json::from_str(&text).expect("a JSON answer")
}

#[tokio::test]
async fn a_client_that_hangs_up_before_the_answer_does_not_cancel_the_call() {
    let gw = Gateway::serve(json!({ "servers": { "fx": stdio_server(&[]) } })).await;
    let http = reqwest::Client::new();
    let url = gw.mcp_url();
    let sid = open_session(&http, &url).await;
    let call = |id: u64, tool: &str, arguments: Value| {
        let message = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": tool, "arguments": arguments}});
        in_session(&http, &url, &sid, &message)
    };
    let cancellations = |id: u64| json_answer(call(id, "fx__sleep_cancellations", json!({})));
    // No progress token: nothing is sent before the answer, and the client
    // gives up while the tool still sleeps.
    let hung_up = call(1, "fx__sleep", json!({"ms": 800}))
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(
        hung_up.as_ref().is_err_and(reqwest::Error::is_timeout),
        "{hung_up:?}"
    );
    // A dropped connection is not a cancellation: the server never hears one,
    // not even once the call is over.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let count = cancellations(2).await;
    assert_eq!(count["result"]["content"][0]["text"], "0", "{count}");
    // The same call, cancelled by the client, is cancelled upstream.
    let cancel = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
        "params": {"requestId": 3}});
    let cancel_later = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        in_session(&http, &url, &sid, &cancel)
            .send()
            .await
            .expect("the cancellation is accepted")
    };
    let (_, cancelled) = tokio::join!(
        call(3, "fx__sleep", json!({"ms": 20_000}))
            .timeout(Duration::from_millis(800))
            .send(),
        cancel_later
    );
    assert_eq!(cancelled.status().as_u16(), 202);
    within(
        Duration::from_secs(10),
        "the upstream cancellation",
        async {
            while cancellations(4).await["result"]["content"][0]["text"] != "1" {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        },
    )
    .await;
}
