//! What an operator watches, through the real binary: real traffic (allowed calls, a call a
//! policy denies, an unknown tool, a list) shows up exactly in the admin listener's `/metrics`,
//! in the admin API (for admins only), and in `toolgate audit query|tail` reading the same store
//! while the gateway runs.

mod support;

use serde_json::{Value, json};
use std::process::Stdio;
use std::time::Duration;
use support::{Client, Gateway, Options, run_toolgate, within};
use tokio::io::AsyncBufReadExt as _;

const TEST_TIMEOUT: Duration = Duration::from_secs(120);

const ARGS: &str = r#"namespace Toolgate {
  type Args = { "text"?: String };
  type Attrs = {};
}
"#;

const POLICIES: &str = r#"
@id("everyone-echo")
permit (principal, action == Toolgate::Action::"call_tool", resource == Toolgate::Tool::"fx/echo");

@id("no-secret-echo")
forbid (principal, action == Toolgate::Action::"call_tool", resource == Toolgate::Tool::"fx/echo")
when { context.args has text && context.args.text == "secret" };
"#;

async fn get(url: &str, bearer: Option<&str>) -> (u16, String) {
    let mut req = reqwest::Client::new().get(url);
    if let Some(b) = bearer {
        req = req.bearer_auth(b);
    }
    let resp = within(Duration::from_secs(20), url, req.send())
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

/// The value of the sample `series` (name and labels exactly as exposed), or `None`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.trim().parse().expect("a number"))
}

fn must(text: &str, series: &str) -> f64 {
    sample(text, series).unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

/// `/admin/v1/audit?query` as `who`: the events, after asserting a 200.
async fn audit_api(admin: &str, query: &str, who: &str) -> Vec<Value> {
    let (status, body) = get(&format!("{admin}/admin/v1/audit?{query}"), Some(who)).await;
    assert_eq!(status, 200, "{query}: {body}");
    let v: Value = serde_json::from_str(&body).expect("JSON");
    v["events"].as_array().expect("events").clone()
}

fn targets(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .map(|e| e["target"].as_str().unwrap_or(""))
        .collect()
}

fn json_lines(out: &str) -> Vec<Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[tokio::test]
async fn traffic_shows_in_metrics_the_admin_api_and_the_audit_commands() {
    within(TEST_TIMEOUT, "observability end to end", async {
        let dir = tempfile::tempdir().unwrap();
        let policies = dir.path().join("policies");
        std::fs::create_dir(&policies).unwrap();
        std::fs::write(policies.join("args.cedarschema"), ARGS).unwrap();
        std::fs::write(policies.join("main.cedar"), POLICIES).unwrap();
        let gw = Gateway::serve(json!({
            "auth": { "api_keys": {} },
            "policy": { "path": policies },
            "servers": { "fx": support::stdio_server(&[]) },
            "admin": { "listen": "127.0.0.1:0" },
        }))
        .await;
        let config = gw.config.path.to_str().unwrap().to_owned();
        let admin = gw.admin_base();
        let alice = support::api_key(&gw.config.path, &["--principal", "alice"]).await;
        let auditor = support::api_key(
            &gw.config.path,
            &["--principal", "carol", "--group", "toolgate-admins"],
        )
        .await;

        // Traffic: three calls, one the policy forbids, one of a tool nobody has, one list.
        let c = Client::http(
            &gw.base,
            Options {
                bearer: Some(alice.clone()),
                ..Options::default()
            },
        )
        .await;
        for i in 0..3 {
            c.call_tool("fx__echo", json!({ "text": format!("hi {i}") }))
                .await;
        }
        let denied = c
            .error(
                "tools/call",
                json!({ "name": "fx__echo", "arguments": { "text": "secret" } }),
            )
            .await;
        assert_eq!(denied["code"], -32040, "{denied}");
        let unknown = c
            .error(
                "tools/call",
                json!({ "name": "fx__no_such_tool_from_alice", "arguments": {} }),
            )
            .await;
        assert_eq!(unknown["code"], -32602, "{unknown}");
        let tools = c.list_all("tools/list", "tools").await;
        assert_eq!(support::names(&tools), ["fx__echo"]);

        // /metrics: no credential needed, exact counts for what was sent. The answered calls'
        // events were in the journal before their answers; the sinks have them within
        // `commit_every` (1 s).
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let (status, text) = loop {
            let (status, text) = get(&format!("{admin}/metrics"), None).await;
            let written = sample(&text, "toolgate_audit_events_written_total").unwrap_or(0.0);
            if written >= 6.0 || std::time::Instant::now() > deadline {
                break (status, text);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(status, 200, "{text}");
        let call = r#"method="tools/call",server="fx""#;
        assert_eq!(
            must(
                &text,
                &format!(r#"toolgate_requests_total{{{call},tool="fx__echo",outcome="ok"}}"#)
            ),
            3.0
        );
        assert_eq!(
            must(
                &text,
                &format!(r#"toolgate_requests_total{{{call},tool="fx__echo",outcome="error"}}"#)
            ),
            1.0
        );
        assert_eq!(
            must(
                &text,
                r#"toolgate_requests_total{method="tools/call",server="",tool="unknown",outcome="error"}"#
            ),
            1.0
        );
        assert_eq!(
            must(
                &text,
                r#"toolgate_requests_total{method="tools/list",server="",tool="",outcome="ok"}"#
            ),
            1.0
        );
        assert_eq!(
            must(&text, r#"toolgate_denials_total{reason="forbidden"}"#),
            1.0
        );
        // Four calls reached fx's part of the pipeline; three reached fx itself.
        assert_eq!(
            must(
                &text,
                &format!("toolgate_request_duration_seconds_count{{{call}}}")
            ),
            4.0
        );
        assert_eq!(
            must(
                &text,
                &format!("toolgate_gateway_overhead_seconds_count{{{call}}}")
            ),
            4.0
        );
        assert_eq!(
            must(
                &text,
                &format!("toolgate_upstream_duration_seconds_count{{{call}}}")
            ),
            3.0
        );
        assert!(
            must(
                &text,
                &format!(r#"toolgate_request_duration_seconds_bucket{{{call},le="+Inf"}}"#)
            ) == 4.0
        );
        assert_eq!(must(&text, r#"toolgate_upstream_up{server="fx"}"#), 1.0);
        assert_eq!(must(&text, "toolgate_sessions_active"), 1.0);
        // The client's session keeps its GET stream open; no request is streaming.
        assert_eq!(must(&text, r#"toolgate_streams_active{kind="listen"}"#), 1.0);
        assert_eq!(must(&text, r#"toolgate_streams_active{kind="request"}"#), 0.0);
        assert_eq!(must(&text, r#"toolgate_streams_active{kind="legacy"}"#), 0.0);
        assert!(must(&text, "toolgate_audit_events_written_total") >= 6.0, "{text}");
        assert_eq!(must(&text, "toolgate_audit_events_dropped_total"), 0.0);
        assert!(sample(&text, "toolgate_audit_queue_events").is_some(), "{text}");
        // Callers, their arguments and names they made up are never labels.
        for leak in ["alice", "secret", "hi 0", "no_such_tool", "tgk_"] {
            assert!(!text.contains(leak), "/metrics shows {leak}:\n{text}");
        }

        // Health on the admin listener too.
        assert_eq!(get(&format!("{admin}/healthz"), None).await, (200, "ok".into()));
        let (status, ready) = get(&format!("{admin}/readyz"), None).await;
        assert_eq!(status, 200, "{ready}");
        assert_eq!(serde_json::from_str::<Value>(&ready).unwrap()["ready"], true);

        // The admin API: an admin reads alice's calls, filtered.
        let echo = audit_api(
            &admin,
            "principal=alice&tool=fx__echo&kind=request",
            &auditor,
        )
        .await;
        assert_eq!(echo.len(), 4, "{echo:?}");
        assert!(echo.iter().all(|e| e["user"] == "alice" && e["method"] == "tools/call"));
        let denials = audit_api(&admin, "since=1h&principal=alice&decision=deny", &auditor).await;
        assert_eq!(denials.len(), 1, "{denials:?}");
        assert_eq!(denials[0]["reason_code"], "forbidden");
        assert_eq!(denials[0]["target"], "fx__echo");
        let allowed = audit_api(
            &admin,
            "principal=alice&tool=fx__echo&decision=allow&outcome=ok",
            &auditor,
        )
        .await;
        assert_eq!(targets(&allowed), ["fx__echo"; 3]);
        // Newest first; `after` pages forward, oldest first.
        let two = audit_api(&admin, "principal=alice&tool=fx__echo&limit=2", &auditor).await;
        assert_eq!(two.len(), 2);
        assert!(two[0]["id"].as_str() > two[1]["id"].as_str());
        let oldest = echo.last().unwrap()["id"].as_str().unwrap();
        let forward = audit_api(
            &admin,
            &format!("principal=alice&tool=fx__echo&after={oldest}"),
            &auditor,
        )
        .await;
        assert_eq!(forward.len(), 3);
        assert!(forward[0]["id"].as_str() < forward[2]["id"].as_str());

        // …and refuses everyone else, with a stable code.
        let (status, body) = get(&format!("{admin}/admin/v1/audit"), Some(&alice)).await;
        assert_eq!(status, 403, "{body}");
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap()["error"],
            "admin_group_required"
        );
        let (status, body) = get(&format!("{admin}/admin/v1/audit"), None).await;
        assert_eq!(status, 401, "{body}");
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap()["error"],
            "missing_token"
        );
        let (status, body) = get(
            &format!("{admin}/admin/v1/audit?decision=maybe"),
            Some(&auditor),
        )
        .await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap()["error"],
            "invalid_query"
        );

        // The CLI reads the same store while the gateway runs.
        let (code, out, err) = run_toolgate(
            &[
                "audit", "query", "--config", &config, "--principal", "alice", "--tool",
                "fx__echo", "--since", "1h", "--json",
            ],
            Duration::from_secs(30),
        )
        .await;
        assert_eq!(code, Some(0), "{err}");
        let rows = json_lines(&out);
        assert_eq!(rows.len(), 4, "{out}");
        assert_eq!(
            rows.iter().filter(|e| e["decision"] == "deny").count(),
            1,
            "{out}"
        );
        let (code, out, err) = run_toolgate(
            &[
                "audit", "query", "--config", &config, "--principal", "alice",
                "--decision", "deny",
            ],
            Duration::from_secs(30),
        )
        .await;
        assert_eq!(code, Some(0), "{err}");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "a header and the denial:\n{out}");
        assert!(lines[0].starts_with("TIME"), "{out}");
        for part in ["request", "alice", "tools/call", "fx__echo", "deny", "error", "ms"] {
            assert!(lines[1].contains(part), "{part} in {out}");
        }
        let (code, _, err) = run_toolgate(
            &["audit", "query", "--config", &config, "--outcome", "fine"],
            Duration::from_secs(30),
        )
        .await;
        assert_eq!(code, Some(1));
        assert!(err.contains("outcome: `fine`"), "{err}");

        let (code, out, err) = run_toolgate(
            &["audit", "tail", "--config", &config, "-n", "100"],
            Duration::from_secs(30),
        )
        .await;
        assert_eq!(code, Some(0), "{err}");
        let echoes = out.lines().filter(|l| l.contains("fx__echo")).count();
        assert_eq!(echoes, 4, "{out}");

        // tail --follow prints what is written after it started.
        let mut follow = tokio::process::Command::new(support::toolgate_bin())
            .args(["audit", "tail", "--config", &config, "-n", "1", "--follow", "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("toolgate audit tail starts");
        let mut lines = tokio::io::BufReader::new(follow.stdout.take().unwrap()).lines();
        let first = within(Duration::from_secs(20), "tail's first line", lines.next_line())
            .await
            .unwrap()
            .expect("tail printed the newest event");
        let first: Value = serde_json::from_str(&first).unwrap();
        c.call_tool("fx__echo", json!({ "text": "while following" }))
            .await;
        let followed = within(Duration::from_secs(20), "the followed call", async {
            loop {
                let line = lines.next_line().await.unwrap().expect("tail keeps running");
                let e: Value = serde_json::from_str(&line).unwrap();
                if e["user"] == "alice" && e["method"] == "tools/call" {
                    return e;
                }
            }
        })
        .await;
        assert!(followed["id"].as_str() > first["id"].as_str(), "{followed}");
        assert_eq!(followed["outcome"], "ok");
        let _ = follow.start_kill();
        let _ = follow.wait().await;
        c.close().await;
    })
    .await;
}

#[tokio::test]
async fn without_auth_the_admin_api_is_for_the_local_user_on_loopback_only() {
    within(TEST_TIMEOUT, "admin without auth", async {
        let gw = Gateway::serve(json!({
            "servers": { "fx": support::stdio_server(&[]) },
            "admin": { "listen": "127.0.0.1:0" },
        }))
        .await;
        let admin = gw.admin_base();
        let c = Client::http(&gw.base, Options::default()).await;
        c.call_tool("fx__echo", json!({ "text": "local" })).await;
        let (status, body) = get(&format!("{admin}/admin/v1/audit?kind=request"), None).await;
        assert_eq!(status, 200, "{body}");
        let events: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(events["events"][0]["user"], "local", "{body}");
        assert_eq!(events["events"][0]["target"], "fx__echo", "{body}");

        // A page that rebinds its own host name to 127.0.0.1 does not get in.
        let resp = reqwest::Client::new()
            .get(format!("{admin}/admin/v1/audit"))
            .header("host", "attacker.example")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 403);
        c.close().await;

        // And the admin listener never faces the network without credentials.
        let open = support::ConfigFile::json(&json!({
            "servers": {},
            "admin": { "listen": "0.0.0.0:0" },
        }));
        let (code, _, err) = run_toolgate(
            &[
                "serve",
                "--config",
                open.path.to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
            ],
            Duration::from_secs(30),
        )
        .await;
        assert_eq!(code, Some(1), "{err}");
        assert!(
            err.contains("refusing to serve admin.listen on 0.0.0.0:0"),
            "{err}"
        );
    })
    .await;
}
