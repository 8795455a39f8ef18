//! Upstreams that go away and come back, driven through the gateway core in
//! process (the real upstream is a separate toolgate-fixture process).

mod support;

use serde_json::{Value, json};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use toolgate::gateway::{EventStream, Gateway, Session};
use toolgate::jsonrpc::{Id, Message};

struct Fixture(Child);

impl Fixture {
    fn http(port: u16) -> Fixture {
        let child = Command::new(support::fixture_bin())
            .args(["http", "--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("fixture starts");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "fixture did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        Fixture(child)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn start(yaml: &str) -> (Arc<Gateway>, Arc<Session>) {
    let config = toolgate::config::load_str(yaml, "test.yaml", false).expect("valid config");
    let gw = Gateway::start(config);
    gw.wait_started().await.expect("servers start");
    let init = json!({
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": { "name": "recovery-test", "version": "1" }
    });
    let (session, _) = gw.initialize(&init, gw.local_principal(), "/mcp", None, None);
    (gw, session)
}

async fn call(gw: &Arc<Gateway>, session: &Arc<Session>, tool: &str, args: Value) -> Message {
    let msg = Message::request(
        Id::Num(1),
        "tools/call",
        Some(json!({ "name": tool, "arguments": args })),
    );
    let out = EventStream::new(99);
    tokio::time::timeout(
        Duration::from_secs(30),
        gw.handle_request(session, msg, &out),
    )
    .await
    .expect("the call completes")
    .expect("not cancelled")
}

fn text(resp: &Message) -> String {
    let result: Value = serde_json::from_str(
        resp.result
            .as_ref()
            .unwrap_or_else(|| panic!("expected a result, got {resp:?}"))
            .get(),
    )
    .expect("result is JSON");
    result["content"][0]["text"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

/// A Streamable HTTP server that restarts forgets every session; the next call
/// must re-initialise upstream and succeed without the client noticing.
async fn survives_upstream_restart(isolation: &str) {
    let port = support::free_port();
    let fx = Fixture::http(port);
    let (gw, session) = start(&format!(
        "servers:\n  fx:\n    url: http://127.0.0.1:{port}/mcp\n    isolation: {isolation}\n"
    ))
    .await;
    let first = call(&gw, &session, "fx__echo", json!({ "text": "before" })).await;
    assert_eq!(text(&first), "before");

    drop(fx);
    let _fx = Fixture::http(port);
    let again = call(&gw, &session, "fx__echo", json!({ "text": "after" })).await;
    assert_eq!(
        text(&again),
        "after",
        "the call after the server forgot our session failed: {again:?}"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn per_session_upstream_is_reinitialised_after_the_server_forgets_it() {
    survives_upstream_restart("per_session").await;
}

#[tokio::test]
async fn shared_upstream_is_reinitialised_after_the_server_forgets_it() {
    survives_upstream_restart("shared").await;
}

#[tokio::test]
async fn a_required_server_that_is_down_stops_the_start_and_says_why() {
    let port = support::free_port();
    let config = toolgate::config::load_str(
        &format!("servers:\n  gone:\n    url: http://127.0.0.1:{port}/mcp\n    failure: closed\n"),
        "t.yaml",
        false,
    )
    .expect("valid config");
    let gw = Gateway::start(config);
    let err = gw
        .wait_started()
        .await
        .expect_err("a required server is down");
    let toolgate::gateway::StartError::Server { server, reason } = err else {
        panic!("not a server failure: {err}");
    };
    assert_eq!(server, "gone");
    assert!(reason.contains("refused"), "{reason}");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_credential_in_a_server_url_never_shows_in_its_status() {
    let port = support::free_port();
    let config = toolgate::config::load_str(
        &format!(
            "servers:\n  a:\n    url: http://user:pw-SECRET1@127.0.0.1:{port}/mcp?token=SECRET2\n  b:\n    url: http://127.0.0.1:{port}/sse?key=SECRET3\n    transport: sse\n"
        ),
        "t.yaml",
        false,
    )
    .expect("valid config");
    let gw = Gateway::start(config);
    gw.wait_started()
        .await
        .expect("fail-open servers do not stop the start");
    for server in &gw.servers {
        let status = format!("{:?}", server.status());
        assert!(status.contains("Down"), "{status}");
        assert!(!status.contains("SECRET"), "a credential leaked: {status}");
    }
    gw.shutdown().await;
}
