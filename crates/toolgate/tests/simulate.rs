//! `toolgate policy simulate` as an operator uses it before changing policies:
//! a real gateway records allowed and denied calls of two principals, then
//! the command replays them against a candidate policy directory and lists
//! exactly the calls whose decision would change.

mod support;

use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;
use support::{Client, Gateway, Options, first_text, run_toolgate, stdio_server, within};

const TEST_TIMEOUT: Duration = Duration::from_secs(120);
const CLI_TIMEOUT: Duration = Duration::from_secs(30);

/// What the gateway runs with: alice may do everything, bob may call `fx`'s
/// echo only.
const CURRENT: &str = r#"@id("alice-all")
permit (principal == Toolgate::User::"alice", action, resource);

@id("bob-echo")
permit (principal == Toolgate::User::"bob", action == Toolgate::Action::"call_tool",
        resource == Toolgate::Tool::"fx/echo");
"#;

/// The change under review: bob's echo only for short texts (`fx` records
/// arguments in full, so this is decided), bob gets `gx`'s echo, and alice may
/// not send `drop` to `gx` (which records only a digest: undetermined).
const CANDIDATE: &str = r#"@id("alice-all")
permit (principal == Toolgate::User::"alice", action, resource);

@id("no-drop-on-gx")
forbid (principal == Toolgate::User::"alice", action, resource in Toolgate::Server::"gx")
when { context.args has text && context.args.text == "drop" };

@id("bob-echo-small")
permit (principal == Toolgate::User::"bob", action == Toolgate::Action::"call_tool",
        resource == Toolgate::Tool::"fx/echo")
when { context.args has text && context.args.text like "small*" };

@id("bob-gx-echo")
permit (principal == Toolgate::User::"bob", action == Toolgate::Action::"call_tool",
        resource == Toolgate::Tool::"gx/echo");
"#;

const ARGS: &str = r#"namespace Toolgate { type Args = { "text"?: String }; }"#;

fn policy_dir(root: &Path, name: &str, policies: &str) -> std::path::PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).expect("a policy directory");
    std::fs::write(dir.join("policies.cedar"), policies).expect("write the policies");
    std::fs::write(dir.join("args.cedarschema"), ARGS).expect("write the declarations");
    dir
}

fn bearer(key: &str) -> Options {
    Options {
        bearer: Some(key.to_owned()),
        ..Options::default()
    }
}

async fn simulate(config: &Path, policies: &Path, json: bool) -> (Option<i32>, String, String) {
    let mut args = vec![
        "policy",
        "simulate",
        "--config",
        config.to_str().expect("a UTF-8 path"),
        "--policies",
        policies.to_str().expect("a UTF-8 path"),
        "--since",
        "1h",
    ];
    if json {
        args.push("--json");
    }
    run_toolgate(&args, CLI_TIMEOUT).await
}

#[tokio::test]
async fn simulate_lists_exactly_the_recorded_calls_a_change_would_decide_differently() {
    within(TEST_TIMEOUT, "simulate against a recorded trail", async {
        let dir = tempfile::tempdir().expect("a temp dir");
        let current = policy_dir(dir.path(), "current", CURRENT);
        let candidate = policy_dir(dir.path(), "candidate", CANDIDATE);
        // `fx` records arguments in full, `gx` only their digest (the default).
        let mut fx = stdio_server(&[]);
        fx["audit"] = json!({ "arguments": "full" });
        let config = json!({
            "storage": format!("sqlite://{}", dir.path().join("trail.db").display()),
            "auth": { "api_keys": {} },
            "policy": { "path": current },
            "servers": { "fx": fx, "gx": stdio_server(&[]) },
        });
        let config_path = dir.path().join("config.json");
        std::fs::write(&config_path, config.to_string()).expect("write the config");

        let gw = Gateway::serve(config).await;
        let alice = support::api_key(&gw.config.path, &["--principal", "alice"]).await;
        let bob = support::api_key(&gw.config.path, &["--principal", "bob"]).await;
        let alice = Client::http(&gw.base, bearer(&alice)).await;
        let bob = Client::http(&gw.base, bearer(&bob)).await;

        let echo = |text: &str| json!({ "text": text });
        // Allowed now and under the candidate: not listed.
        let r = alice.call_tool("fx__echo", echo("hello")).await;
        assert_eq!(first_text(&r), "hello");
        let r = bob.call_tool("fx__echo", echo("small talk")).await;
        assert_eq!(first_text(&r), "small talk");
        // Allowed now; the candidate denies it (its text is recorded).
        let r = bob.call_tool("fx__echo", echo("large refund")).await;
        assert_eq!(first_text(&r), "large refund");
        // Allowed now; whether the candidate forbids it depends on a text the
        // trail holds only the digest of.
        let r = alice.call_tool("gx__echo", echo("keep")).await;
        assert_eq!(first_text(&r), "keep");
        // Denied now (bob cannot see it); the candidate allows it.
        let e = bob
            .request("tools/call", json!({ "name": "gx__echo", "arguments": echo("x") }))
            .await;
        assert!(e.get("error").is_some(), "bob called gx__echo: {e}");
        // Denied now and under the candidate: not listed.
        let e = bob
            .request("tools/call", json!({ "name": "fx__sleep", "arguments": { "ms": 1 } }))
            .await;
        assert!(e.get("error").is_some(), "bob called fx__sleep: {e}");
        alice.close().await;
        bob.close().await;
        // SIGKILL: the newest events are still in the audit journal, not the store; `simulate`
        // hands what the ended gateway left there to the store before it reads.
        gw.stop().await;

        let (code, out, err) = simulate(&config_path, &candidate, true).await;
        assert_eq!(code, Some(1), "{out}\n{err}");
        let report: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
        assert_eq!(report["replayed"], 6, "{report:#}");
        assert_eq!(report["changed"], 2, "{report:#}");
        assert_eq!(report["allow_to_deny"], 1, "{report:#}");
        assert_eq!(report["deny_to_allow"], 1, "{report:#}");
        assert_eq!(report["undetermined"], 1, "{report:#}");
        assert_eq!(report["limit_reached"], false);
        let calls = report["calls"].as_array().expect("calls");
        let listed: Vec<(&str, &str, &str, &str)> = calls
            .iter()
            .map(|c| {
                (
                    c["principal"].as_str().unwrap_or_default(),
                    c["target"].as_str().unwrap_or_default(),
                    c["recorded"]["decision"].as_str().unwrap_or_default(),
                    c["new"]["decision"].as_str().unwrap_or_default(),
                )
            })
            .collect();
        assert_eq!(
            listed,
            [
                ("bob", "fx__echo", "allow", "deny"),
                ("alice", "gx__echo", "allow", "undetermined"),
                ("bob", "gx__echo", "deny", "allow"),
            ],
            "{report:#}"
        );
        // Each with its reasons, old and new.
        assert_eq!(calls[0]["recorded"]["reason_code"], "allowed");
        assert_eq!(calls[0]["recorded"]["policies"], json!(["bob-echo"]));
        assert_eq!(calls[0]["new"]["reason_code"], "no_permit");
        assert_eq!(calls[0]["arguments"], "recorded");
        assert_eq!(calls[0]["method"], "tools/call");
        assert_eq!(calls[1]["new"]["policies"], json!(["no-drop-on-gx"]));
        assert_eq!(calls[1]["arguments"], "not_recorded");
        assert_eq!(calls[2]["recorded"]["reason_code"], "not_visible");
        assert_eq!(calls[2]["new"]["reason_code"], "allowed");
        assert_eq!(calls[2]["new"]["policies"], json!(["bob-gx-echo"]));

        // The same as text, for people.
        let (code, out, _) = simulate(&config_path, &candidate, false).await;
        assert_eq!(code, Some(1));
        assert!(
            out.contains("bob  tools/call  fx__echo  allow (allowed: bob-echo) → deny (no_permit)"),
            "{out}"
        );
        assert!(
            out.contains("alice  tools/call  gx__echo  allow (allowed: alice-all) → undetermined (depends on: no-drop-on-gx)"),
            "{out}"
        );
        assert!(
            out.contains("6 replayed, 2 would change (allow→deny 1, deny→allow 1), 1 undetermined"),
            "{out}"
        );

        // The policies in force change nothing.
        let (code, out, err) = simulate(&config_path, &current, false).await;
        assert_eq!(code, Some(0), "{out}\n{err}");
        assert_eq!(
            out,
            "6 replayed, 0 would change (allow→deny 0, deny→allow 0), 0 undetermined\n"
        );

        // Policies that do not validate: exit 2, every problem located.
        let broken = policy_dir(
            dir.path(),
            "broken",
            "permit (principal, action, resource) when { resource.risc == \"high\" };\n",
        );
        let (code, out, err) = simulate(&config_path, &broken, false).await;
        assert_eq!(code, Some(2), "{out}\n{err}");
        assert!(err.starts_with("error: "), "{err}");
        assert!(err.contains("policies.cedar:1:"), "{err}");
        assert!(out.is_empty(), "{out}");
    })
    .await;
}
