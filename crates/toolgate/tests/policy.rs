//! Cedar policies in the data plane, through the real binary: each caller sees exactly the
//! tools and prompts it could use and can call exactly those; per-argument rules hold, including
//! against values of the wrong type; denied calls never reach the upstream; policies reload
//! while serving, and a broken file never replaces a good one.

mod support;

use serde_json::{Value, json};
use std::time::{Duration, Instant};
use support::{Client, Gateway, Options, first_text, names, run_toolgate, within};

const TEST_TIMEOUT: Duration = Duration::from_secs(90);

const ARGS: &str = r#"namespace Toolgate {
  type Args = { "ms"?: Long, "text"?: String };
  type Attrs = {};
}
"#;

const POLICIES: &str = r#"
@id("everyone-echo")
permit (principal, action == Toolgate::Action::"call_tool", resource == Toolgate::Tool::"fx/echo");

@id("no-secret-echo")
forbid (principal, action == Toolgate::Action::"call_tool", resource == Toolgate::Tool::"fx/echo")
when { context.args has text && context.args.text == "secret" };

@id("ops-short-sleep")
permit (principal in Toolgate::Group::"ops", action == Toolgate::Action::"call_tool", resource == Toolgate::Tool::"fx/sleep")
when { context.args has ms && context.args.ms < 100 };

@id("ops-prompts")
permit (principal in Toolgate::Group::"ops", action == Toolgate::Action::"get_prompt", resource in Toolgate::Server::"fx");
"#;

struct Setup {
    gw: Gateway,
    log: std::path::PathBuf,
    policies: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    std::fs::write(policies.join("args.cedarschema"), ARGS).unwrap();
    std::fs::write(policies.join("main.cedar"), POLICIES).unwrap();
    let log = dir.path().join("upstream.log");
    let gw = Gateway::serve(json!({
        "auth": { "api_keys": {} },
        "policy": { "path": policies, "reveal_reasons": true },
        "servers": { "fx": support::logged_stdio_fixture(&log) },
    }))
    .await;
    Setup {
        gw,
        log,
        policies,
        _dir: dir,
    }
}

use support::api_key as key;

async fn client(gw: &Gateway, key: &str) -> Client {
    let options = Options {
        bearer: Some(key.to_owned()),
        ..Options::default()
    };
    Client::http(&gw.base, options).await
}

async fn tool_names(c: &Client) -> Vec<String> {
    sorted(names(&c.list_all("tools/list", "tools").await))
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[tokio::test]
async fn each_caller_sees_and_calls_exactly_what_policy_allows() {
    within(TEST_TIMEOUT, "the policy matrix", async {
        let s = setup().await;
        let alice = client(
            &s.gw,
            &key(
                &s.gw.config.path,
                &["--principal", "alice", "--group", "ops"],
            )
            .await,
        )
        .await;
        let bob = client(
            &s.gw,
            &key(&s.gw.config.path, &["--principal", "bob"]).await,
        )
        .await;

        // Discovery: exactly what each could use.
        assert_eq!(tool_names(&alice).await, ["fx__echo", "fx__sleep"]);
        assert_eq!(tool_names(&bob).await, ["fx__echo"]);
        let prompts = alice.list_all("prompts/list", "prompts").await;
        assert!(!prompts.is_empty(), "ops sees the prompts");
        assert!(bob.list_all("prompts/list", "prompts").await.is_empty());

        // A tool bob may not see is, for him, a tool that does not exist.
        let hidden = bob
            .error(
                "tools/call",
                json!({"name": "fx__sleep", "arguments": {"ms": 1}}),
            )
            .await;
        let missing = bob
            .error("tools/call", json!({"name": "fx__nope", "arguments": {}}))
            .await;
        assert_eq!(hidden["code"], missing["code"]);
        assert_eq!(hidden["message"], "Unknown tool: fx__sleep");
        assert!(hidden.get("data").is_none(), "{hidden}");
        let prompt = prompts[0]["name"].as_str().unwrap();
        let e = bob.error("prompts/get", json!({"name": prompt})).await;
        assert_eq!(e["message"], format!("Unknown prompt: {prompt}"));

        // Allowed calls go through.
        assert_eq!(
            first_text(&bob.call_tool("fx__echo", json!({"text": "hi"})).await),
            "hi"
        );
        alice.call_tool("fx__sleep", json!({"ms": 10})).await;

        // Per-argument rules: over the limit, the forbidden value, and values of the wrong
        // type, which must not slip past a rule that reads them.
        let denied = [
            (&alice, "fx__sleep", json!({"ms": 5000}), "no_permit"),
            (&alice, "fx__sleep", json!({"ms": "10"}), ""),
            (&alice, "fx__sleep", json!({}), "no_permit"),
            (&bob, "fx__echo", json!({"text": "secret"}), "forbidden"),
            (
                &bob,
                "fx__echo",
                json!({"text": ["secret"]}),
                "policy_error",
            ),
            (&bob, "fx__echo", json!({"text": 5}), "policy_error"),
        ];
        for (c, tool, args, reason) in denied {
            let e = c
                .error("tools/call", json!({"name": tool, "arguments": args}))
                .await;
            assert_eq!(e["code"], -32040, "{tool} {args}: {e}");
            if !reason.is_empty() {
                assert_eq!(e["data"]["code"], reason, "{tool} {args}: {e}");
            }
            if reason == "forbidden" {
                assert_eq!(e["data"]["policies"], json!(["no-secret-echo"]), "{e}");
            }
        }

        // Nothing denied reached the upstream.
        let calls: Vec<Value> = support::upstream_calls(&s.log)
            .into_iter()
            .map(|m| m["params"]["arguments"].clone())
            .collect();
        assert_eq!(
            calls,
            [json!({"text": "hi"}), json!({"ms": 10})],
            "upstream saw: {calls:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn policies_reload_and_a_broken_file_keeps_the_good_set() {
    within(TEST_TIMEOUT, "policy reload", async {
        let s = setup().await;
        let bob = client(&s.gw, &key(&s.gw.config.path, &["--principal", "bob"]).await).await;
        assert_eq!(tool_names(&bob).await, ["fx__echo"]);

        // A broken file: the set in force stays.
        std::fs::write(s.policies.join("broken.cedar"), "permit (principal, action == Toolgate::Action::\"nonsense\", resource);").unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !s.gw.stderr().contains("broken.cedar") {
            assert!(Instant::now() < deadline, "the broken file was never reported:\n{}", s.gw.stderr());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(tool_names(&bob).await, ["fx__echo"]);
        assert_eq!(first_text(&bob.call_tool("fx__echo", json!({"text": "still"})).await), "still");

        // Fixed, with a new permit: bob's view changes while he stays connected.
        std::fs::remove_file(s.policies.join("broken.cedar")).unwrap();
        std::fs::write(
            s.policies.join("bob.cedar"),
            "@id(\"bob-sleeps\")\npermit (principal == Toolgate::User::\"bob\", action == Toolgate::Action::\"call_tool\", resource == Toolgate::Tool::\"fx/sleep\");\n",
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while tool_names(&bob).await != ["fx__echo", "fx__sleep"] {
            assert!(Instant::now() < deadline, "the new policy never took effect:\n{}", s.gw.stderr());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        bob.call_tool("fx__sleep", json!({"ms": 1})).await;
    })
    .await;
}

#[tokio::test]
async fn authentication_without_policy_denies_everything() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("upstream.log");
    let gw = Gateway::serve(json!({
        "auth": { "api_keys": {} },
        "servers": { "fx": support::logged_stdio_fixture(&log) },
    }))
    .await;
    let c = client(&gw, &key(&gw.config.path, &["--principal", "carol"]).await).await;
    assert!(c.list_all("tools/list", "tools").await.is_empty());
    let e = c
        .error(
            "tools/call",
            json!({"name": "fx__echo", "arguments": {"text": "x"}}),
        )
        .await;
    assert_eq!(e["message"], "Unknown tool: fx__echo");
    assert!(support::upstream_calls(&log).is_empty());
    assert!(gw.stderr().contains("no policy"), "the operator is warned");
}

/// The caller's address reaches the policies (`context.source`), in both eras and
/// over the 2024-11-05 HTTP+SSE transport.
#[tokio::test]
async fn policies_see_the_callers_address() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("p.cedar"),
        r#"@id("echo") permit (principal, action == Toolgate::Action::"call_tool", resource == Toolgate::Tool::"fx/echo");
@id("sleep-from-afar") permit (principal, action == Toolgate::Action::"call_tool", resource == Toolgate::Tool::"fx/sleep")
when { context has source && !context.source.isLoopback() };
@id("no-local-x") forbid (principal, action == Toolgate::Action::"call_tool", resource == Toolgate::Tool::"fx/echo")
when { context has source && context.source.isInRange(ip("127.0.0.0/8")) && context.args has text && context.args.text == "x" };
"#,
    )
    .unwrap();
    std::fs::write(
        dir.path().join("args.cedarschema"),
        "namespace Toolgate {\n  type Args = { \"text\"?: String };\n  type Attrs = {};\n}\n",
    )
    .unwrap();
    let gw = Gateway::serve(json!({
        "auth": { "api_keys": {} },
        "policy": { "path": dir.path(), "reveal_reasons": true },
        "servers": { "fx": support::stdio_server(&[]) },
    }))
    .await;
    let k = key(&gw.config.path, &["--principal", "dana"]).await;
    let c = client(&gw, &k).await;
    // `sleep` is only for callers from elsewhere: hidden from this loopback caller. `echo` is
    // listed (most arguments are fine from here), but "x" from a loopback address is not.
    assert_eq!(tool_names(&c).await, ["fx__echo"]);
    let ok = c
        .result(
            "tools/call",
            json!({"name": "fx__echo", "arguments": {"text": "y"}}),
        )
        .await;
    assert_eq!(first_text(&ok), "y");
    let e = c
        .error(
            "tools/call",
            json!({"name": "fx__echo", "arguments": {"text": "x"}}),
        )
        .await;
    assert_eq!(e["code"], -32040, "{e}");
    assert_eq!(e["data"]["policies"], json!(["no-local-x"]), "{e}");
    let modern = Client::http(
        &gw.base,
        Options {
            bearer: Some(k.clone()),
            protocol_version: "2026-07-28".into(),
            ..Options::default()
        },
    )
    .await;
    let e = modern
        .error(
            "tools/call",
            json!({"name": "fx__echo", "arguments": {"text": "x"}}),
        )
        .await;
    assert_eq!(e["data"]["policies"], json!(["no-local-x"]), "{e}");
    let legacy = Client::sse(
        &gw.base,
        Options {
            bearer: Some(k.clone()),
            ..Options::default()
        },
    )
    .await;
    let e = legacy
        .error(
            "tools/call",
            json!({"name": "fx__echo", "arguments": {"text": "x"}}),
        )
        .await;
    assert_eq!(e["data"]["policies"], json!(["no-local-x"]), "{e}");
}

#[tokio::test]
async fn a_bad_policy_stops_startup_and_check() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("p.cedar"),
        "permit (principal, action == Toolgate::Action::\"call_tol\", resource);\n",
    )
    .unwrap();
    let config = dir.path().join("toolgate.yaml");
    std::fs::write(&config, "policy:\n  path: p.cedar\nservers: {}\n").unwrap();
    let cfg = config.to_str().unwrap();
    let (code, _, err) = run_toolgate(&["check", "--config", cfg], Duration::from_secs(30)).await;
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("p.cedar"), "{err}");
    let (code, _, err) = run_toolgate(
        &["serve", "--config", cfg, "--listen", "127.0.0.1:0"],
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("policies cannot be loaded"), "{err}");
}
