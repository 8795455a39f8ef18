//! Config reload through the real binary: `POST /admin/v1/reload` and SIGHUP put limits and
//! per-server tool rules in force while a session stays open and a call is in flight; a file that
//! does not load changes nothing; changes that need a restart are reported and left alone.

mod support;

use serde_json::{Value, json};
use std::time::{Duration, Instant};
use support::{Client, Gateway, Options, Transport, first_text, names, within};

const TEST_TIMEOUT: Duration = Duration::from_secs(90);

fn config(fx: Value, limits: Value) -> Value {
    json!({
        "servers": { "fx": fx },
        "limits": limits,
        "admin": { "listen": "127.0.0.1:0" },
    })
}

fn fixture() -> Value {
    let mut fx = support::stdio_server(&[]);
    fx["isolation"] = json!("shared");
    fx
}

async fn reload(gw: &Gateway) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(format!("{}/admin/v1/reload", gw.admin_base()))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (
        status,
        serde_json::from_str(&resp.text().await.unwrap()).unwrap(),
    )
}

async fn tools(c: &Client) -> Vec<String> {
    names(&c.list_all("tools/list", "tools").await)
}

async fn reload_events(gw: &Gateway) -> Vec<Value> {
    let url = format!("{}/admin/v1/audit?kind=reload", gw.admin_base());
    let body: Value =
        serde_json::from_str(&reqwest::get(url).await.unwrap().text().await.unwrap()).unwrap();
    body["events"].as_array().unwrap().clone()
}

#[tokio::test]
async fn a_reload_puts_limits_and_tool_rules_in_force_without_dropping_a_session_or_a_call() {
    within(TEST_TIMEOUT, "the test", async {
        let gw = Gateway::serve(config(fixture(), json!([]))).await;
        let c = gw
            .client(Transport::StreamableHttp, Options::default())
            .await;
        let session = c.session_id();
        let before = tools(&c).await;
        assert!(before.contains(&"fx__echo".to_owned()), "{before:?}");
        let (_, in_flight) = c.start_request(
            "tools/call",
            json!({ "name": "fx__sleep", "arguments": { "ms": 1500 } }),
        );

        // The new file hides a tool and limits another to one call a minute.
        let mut fx = fixture();
        fx["tools"] = json!({ "hide": ["echo"] });
        let limits = json!([{
            "id": "once",
            "match": { "tools": ["fx__test_simple_text"] },
            "rate": "1/m",
            "burst": 1,
        }]);
        gw.config.write(&config(fx, limits));
        let (status, report) = reload(&gw).await;
        assert_eq!(status, 200, "{report}");
        assert_eq!(
            report["applied"],
            json!(["limits", "servers.fx.tools"]),
            "{report}"
        );
        assert_eq!(report["restartRequired"], json!([]), "{report}");

        // The call in flight finishes; the session is the same one and hears the change.
        let answer = tokio::time::timeout(Duration::from_secs(30), in_flight)
            .await
            .expect("the call in flight is answered")
            .unwrap();
        assert_eq!(first_text(&answer["result"]), "slept 1500 ms", "{answer}");
        c.wait_notification("tools/list_changed", |n| {
            n["method"] == "notifications/tools/list_changed"
        })
        .await;
        assert_eq!(c.session_id(), session);
        let after = tools(&c).await;
        assert!(!after.contains(&"fx__echo".to_owned()), "{after:?}");
        assert_eq!(after.len(), before.len() - 1);
        let e = c
            .error(
                "tools/call",
                json!({ "name": "fx__echo", "arguments": { "text": "x" } }),
            )
            .await;
        assert_eq!(e["code"], -32602, "{e}");

        // The limit holds from the reload on.
        let r = c.call_tool("fx__test_simple_text", json!({})).await;
        assert!(r.get("content").is_some(), "{r}");
        let e = c
            .error(
                "tools/call",
                json!({ "name": "fx__test_simple_text", "arguments": {} }),
            )
            .await;
        assert_eq!(e["code"], -32042, "{e}");
        assert_eq!(e["data"]["code"], "rate_limited", "{e}");

        let events = reload_events(&gw).await;
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0]["method"], "config", "{events:?}");
        assert_eq!(events[0]["outcome"], "ok", "{events:?}");
    })
    .await;
}

#[tokio::test]
async fn a_broken_file_changes_nothing_and_restart_only_changes_wait_for_a_restart() {
    within(TEST_TIMEOUT, "the test", async {
        let mut fx = fixture();
        fx["tools"] = json!({ "hide": ["echo"] });
        let gw = Gateway::serve(config(fx.clone(), json!([]))).await;
        let c = gw
            .client(Transport::StreamableHttp, Options::default())
            .await;
        let before = tools(&c).await;

        // A mistake: rejected whole, with where it is.
        let mut broken = config(fixture(), json!([]));
        broken["page_size"] = json!(0);
        gw.config.write(&broken);
        let (status, body) = reload(&gw).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"], "invalid_config", "{body}");
        assert!(
            body["error_description"]
                .as_str()
                .unwrap()
                .contains("page_size"),
            "{body}"
        );
        assert_eq!(tools(&c).await, before, "the hidden tool stays hidden");

        // SIGHUP: a new server and a new command wait for a restart; the tool rule applies.
        let mut changed = config(fixture(), json!([]));
        changed["servers"]["fx"]["args"] = json!(["--extra-tools", "1", "stdio"]);
        changed["servers"]["extra"] = support::stdio_server(&[]);
        gw.config.write(&changed);
        gw.signal("HUP");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !gw.stderr().contains("config reloaded") {
            assert!(Instant::now() < deadline, "no reload: {}", gw.stderr());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let log = gw.stderr();
        assert!(log.contains("take effect at the next restart"), "{log}");
        c.wait_notification("tools/list_changed", |n| {
            n["method"] == "notifications/tools/list_changed"
        })
        .await;
        let after = tools(&c).await;
        assert!(after.contains(&"fx__echo".to_owned()), "{after:?}");
        assert!(!after.iter().any(|t| t.starts_with("extra__")), "{after:?}");
        assert_eq!(
            after.len(),
            before.len() + 1,
            "no generated tool: the command stayed"
        );

        let events = reload_events(&gw).await;
        assert_eq!(events.len(), 2, "{events:?}");
        // Newest first.
        assert_eq!(events[0]["outcome"], "ok", "{events:?}");
        let pending = &events[0]["detail"]["restartRequired"];
        assert_eq!(
            pending,
            &json!(["servers.fx.args", "servers.extra (added)"]),
            "{events:?}"
        );
        assert_eq!(events[1]["outcome"], "error", "{events:?}");
    })
    .await;
}
