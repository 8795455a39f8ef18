//! The audit trail through the real binary: every request — allowed, denied, refused at the
//! door — is in the store with who, what, the decision and the outcome; an answered call has
//! its event even when the gateway is killed with SIGKILL; a trail that cannot be written
//! stops calls (or, when configured, lets them through and counts the loss); planted secrets
//! appear nowhere the gateway writes.

mod support;

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use support::{Client, Gateway, Options, first_text, within};
use toolgate::audit::query::{Filter, events};
use toolgate::audit::{Event, EventKind, Outcome, Verdict};
use toolgate::store::Store;

const TEST_TIMEOUT: Duration = Duration::from_secs(120);

const POLICIES: &str = r#"
@id("echo-for-all")
permit (principal, action == Toolgate::Action::"call_tool", resource == Toolgate::Tool::"fx/echo");

@id("no-shouting")
forbid (principal, action == Toolgate::Action::"call_tool", resource == Toolgate::Tool::"fx/echo")
when { context.args has text && context.args.text == "STOP" };

@id("ops-sleep")
permit (principal in Toolgate::Group::"ops", action == Toolgate::Action::"call_tool", resource == Toolgate::Tool::"fx/sleep");
"#;

const ARGS: &str = r#"namespace Toolgate {
  type Args = { "text"?: String, "ms"?: Long };
  type Attrs = {};
}
"#;

/// A `tools/call` and its whole response (`result` or `error`).
trait RequestTool {
    async fn request_tool(&self, name: &str, arguments: serde_json::Value) -> serde_json::Value;
}

impl RequestTool for Client {
    async fn request_tool(&self, name: &str, arguments: serde_json::Value) -> serde_json::Value {
        self.request(
            "tools/call",
            json!({ "name": name, "arguments": arguments }),
        )
        .await
    }
}

async fn client(gw: &Gateway, key: &str) -> Client {
    let options = Options {
        bearer: Some(key.to_owned()),
        ..Options::default()
    };
    Client::http(&gw.base, options).await
}

/// The store next to a config file (the default `storage: sqlite://toolgate.db`).
async fn store_of(config: &Path) -> Store {
    let dir = config.parent().unwrap();
    Store::open("sqlite://toolgate.db", Some(dir))
        .await
        .unwrap()
}

async fn all_events(store: &Store) -> Vec<Event> {
    let f = Filter {
        limit: Some(10_000),
        ascending: true,
        ..Filter::default()
    };
    events(store, &f).await.unwrap()
}

/// Poll until `done` holds for the stored events, and return them: the store is filled from
/// the journal in batches (every `commit_every`, 1 s by default), after the answers.
async fn stored(store: &Store, what: &str, done: impl Fn(&[Event]) -> bool) -> Vec<Event> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let all = all_events(store).await;
        if done(&all) {
            return all;
        }
        assert!(
            Instant::now() < deadline,
            "the store never had {what}: {all:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Poll until `pick` finds what it looks for among the stored events.
async fn wait_for(store: &Store, what: &str, pick: impl Fn(&Event) -> bool) -> Event {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let all = all_events(store).await;
        if let Some(e) = all.iter().find(|e| pick(e)) {
            return e.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no audit event {what} among {all:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_request_is_recorded_with_who_what_decision_and_outcome() {
    within(TEST_TIMEOUT, "the test", async {
        let dir = tempfile::tempdir().unwrap();
        let policies = dir.path().join("policies");
        std::fs::create_dir(&policies).unwrap();
        std::fs::write(policies.join("args.cedarschema"), ARGS).unwrap();
        std::fs::write(policies.join("main.cedar"), POLICIES).unwrap();
        let mut fx = support::stdio_server(&[]);
        fx["audit"] = json!({ "arguments": "full", "results": "digest" });
        let gw = Gateway::serve(json!({
            "auth": { "api_keys": {} },
            "policy": { "path": policies },
            "servers": { "fx": fx },
        }))
        .await;
        let alice = support::api_key(
            &gw.config.path,
            &[
                "--principal",
                "alice",
                "--tenant",
                "acme",
                "--agent",
                "copilot",
            ],
        )
        .await;
        let bob =
            support::api_key(&gw.config.path, &["--principal", "bob", "--group", "ops"]).await;
        let a = client(&gw, &alice).await;
        let b = client(&gw, &bob).await;
        let store = store_of(&gw.config.path).await;

        // Allowed, with its arguments in full.
        let r = a.request_tool("fx__echo", json!({ "text": "hello" })).await;
        assert_eq!(first_text(&r["result"]), "hello", "{r}");
        // Denied by a forbid on an argument.
        let r = a.request_tool("fx__echo", json!({ "text": "STOP" })).await;
        assert_eq!(r["error"]["code"], -32040, "{r}");
        // Hidden from alice: unknown to her, recorded as not visible.
        let r = a.request_tool("fx__sleep", json!({ "ms": 1 })).await;
        assert_eq!(r["error"]["code"], -32602, "{r}");
        // Allowed for bob's group.
        let r = b.request_tool("fx__sleep", json!({ "ms": 1 })).await;
        assert!(r.get("result").is_some(), "{r}");
        let listed = a.list_all("tools/list", "tools").await;
        assert_eq!(listed.len(), 1, "{listed:?}");

        // Calls are answered once their events are in the journal; the store has them within
        // `commit_every`.
        let is_call =
            |e: &Event| e.kind == EventKind::Request && e.method.as_deref() == Some("tools/call");
        let calls: Vec<Event> = stored(&store, "the four calls", |all| {
            all.iter().filter(|e| is_call(e)).count() >= 4
        })
        .await
        .into_iter()
        .filter(is_call)
        .collect();
        assert_eq!(calls.len(), 4, "{calls:#?}");
        let ok = &calls[0];
        assert_eq!(ok.user.as_deref(), Some("alice"));
        assert_eq!(ok.tenant.as_deref(), Some("acme"));
        assert_eq!(ok.agent.as_deref(), Some("copilot"));
        let principal: Value = serde_json::from_str(ok.principal.as_ref().unwrap().get()).unwrap();
        assert_eq!(principal["method"], "api_key");
        assert_eq!(ok.server.as_deref(), Some("fx"));
        assert_eq!(ok.target.as_deref(), Some("fx__echo"));
        assert_eq!(ok.arguments, Some(json!({ "text": "hello" })));
        assert!(ok.result_digest.as_deref().unwrap().starts_with("sha256:"));
        assert_eq!(ok.decision, Some(Verdict::Allow));
        assert_eq!(ok.policies, ["echo-for-all"]);
        assert_eq!(ok.outcome, Some(Outcome::Ok));
        assert_eq!(ok.source.as_deref(), Some("127.0.0.1"));
        assert_eq!(ok.endpoint.as_deref(), Some("/mcp"));
        assert_eq!(ok.era.as_deref(), Some("legacy"));
        assert!(ok.session.is_some());
        let (total, upstream) = (ok.latency_us.unwrap(), ok.upstream_us.unwrap());
        assert!(
            upstream > 0 && upstream <= total,
            "{upstream} within {total}"
        );
        assert!(ok.bytes_in.unwrap() > 0 && ok.bytes_out.unwrap() > 0);

        let denied = &calls[1];
        assert_eq!(denied.decision, Some(Verdict::Deny));
        assert_eq!(denied.reason_code.as_deref(), Some("forbidden"));
        assert_eq!(denied.policies, ["no-shouting"]);
        assert_eq!(denied.outcome, Some(Outcome::Error));
        assert_eq!(denied.error_code, Some(-32040));
        assert_eq!(
            denied.upstream_us, None,
            "a denied call never reaches the server"
        );

        let hidden = &calls[2];
        assert_eq!(hidden.decision, Some(Verdict::Deny));
        assert_eq!(hidden.reason_code.as_deref(), Some("not_visible"));
        assert_eq!(hidden.target.as_deref(), Some("fx__sleep"));

        assert_eq!(calls[3].user.as_deref(), Some("bob"));
        assert_eq!(calls[3].decision, Some(Verdict::Allow));
        assert_eq!(calls[3].policies, ["ops-sleep"]);

        // A 2026-07-28 client's requests are recorded too, with their era.
        let discovered = modern_post(&gw, &alice, "server/discover", json!({})).await;
        assert!(
            discovered["result"]["supportedVersions"].is_array(),
            "{discovered}"
        );
        let r = modern_post(
            &gw,
            &alice,
            "tools/call",
            json!({ "name": "fx__echo", "arguments": { "text": "modern" } }),
        )
        .await;
        assert_eq!(first_text(&r["result"]), "modern", "{r}");
        let events_now = stored(&store, "the modern call", |all| {
            all.iter()
                .any(|e| e.arguments == Some(json!({ "text": "modern" })))
        })
        .await;
        let discover = events_now
            .iter()
            .find(|e| e.method.as_deref() == Some("server/discover"))
            .expect("server/discover is recorded");
        assert_eq!(discover.era.as_deref(), Some("modern"));
        assert_eq!(discover.user.as_deref(), Some("alice"));
        let modern_call = events_now
            .iter()
            .find(|e| e.arguments == Some(json!({ "text": "modern" })))
            .expect("the modern call is recorded");
        assert_eq!(modern_call.era.as_deref(), Some("modern"));
        assert_eq!(modern_call.session, None);
        assert_eq!(modern_call.decision, Some(Verdict::Allow));

        let list = all_events(&store)
            .await
            .into_iter()
            .find(|e| e.method.as_deref() == Some("tools/list"))
            .expect("the list is recorded");
        assert_eq!(list.user.as_deref(), Some("alice"));
        assert_eq!(list.outcome, Some(Outcome::Ok));

        // Refused at the door: no credential, a wrong one.
        let resp = reqwest::Client::new()
            .post(gw.mcp_url())
            .header("Accept", "application/json, text/event-stream")
            .header("Content-Type", "application/json")
            .bearer_auth("tgk_nokey_notasecret")
            .body(support::initialize_body())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401);
        let refused = wait_for(&store, "for the refused request", |e| {
            e.kind == EventKind::Auth
        })
        .await;
        assert_eq!(refused.outcome, Some(Outcome::Refused));
        assert_eq!(refused.error_code, Some(401));
        assert_eq!(refused.source.as_deref(), Some("127.0.0.1"));
        assert!(refused.reason_code.is_some());
        let text = serde_json::to_string(&refused).unwrap();
        assert!(!text.contains("notasecret"), "{text}");

        // Sessions and the server's start are there too.
        let session = ok.session.clone().unwrap();
        wait_for(&store, "for the session start", |e| {
            e.kind == EventKind::Session
                && e.session.as_deref() == Some(&session)
                && e.method.as_deref() == Some("start")
        })
        .await;
        wait_for(&store, "for the server becoming ready", |e| {
            e.kind == EventKind::Upstream
                && e.server.as_deref() == Some("fx")
                && e.method.as_deref() == Some("ready")
        })
        .await;
        // And an operator's key creation (by the CLI).
        let created = wait_for(&store, "for the key creation", |e| {
            e.kind == EventKind::Admin && e.method.as_deref() == Some("keys.create")
        })
        .await;
        assert_eq!(created.detail.as_ref().unwrap()["principal"], "alice");
        assert!(
            !serde_json::to_string(&created)
                .unwrap()
                .contains(&alice[12..])
        );
    })
    .await;
}

/// `toolgate serve` on `config`, as a child the test can kill; stdout and stderr go to files.
async fn spawn_gateway(
    config: &Path,
    stdout: &Path,
    stderr: &Path,
) -> (tokio::process::Child, String) {
    let mut child = tokio::process::Command::new(support::toolgate_bin())
        .args(["serve", "--log", "toolgate=debug,info", "--config"])
        .arg(config)
        .args(["--listen", "127.0.0.1:0"])
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(stdout).unwrap())
        .stderr(std::fs::File::create(stderr).unwrap())
        .kill_on_drop(true)
        .spawn()
        .expect("toolgate serve starts");
    match support::wait_serving(&mut child, stderr).await {
        Ok(base) => (child, base),
        Err(log) => panic!("toolgate serve did not start:\n{log}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_answered_call_survives_a_sigkill_of_the_gateway() {
    within(TEST_TIMEOUT, "the test", async {
        // The default: answers wait for the journal, the store is filled from it, and the next
        // start hands the store what the killed gateway had not.
        answered_calls_survive_a_sigkill(None).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_journal_every_answered_call_is_in_the_store_at_once() {
    within(TEST_TIMEOUT, "the test", async {
        answered_calls_survive_a_sigkill(Some("off")).await;
    })
    .await;
}

/// Eight clients call as fast as they can; the gateway is killed with SIGKILL; every call that
/// was answered must be in the store — at once without a journal, after the next start with.
async fn answered_calls_survive_a_sigkill(journal: Option<&str>) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.json");
    let mut fx = support::stdio_server(&[]);
    fx["audit"] = json!({ "arguments": "full" });
    let mut cfg = json!({ "servers": { "fx": fx } });
    if let Some(j) = journal {
        cfg["audit"] = json!({ "journal": j });
    }
    std::fs::write(&config, cfg.to_string()).unwrap();
    let (mut child, base) =
        spawn_gateway(&config, &dir.path().join("out"), &dir.path().join("err")).await;
    // Each client remembers the calls it saw answered.
    let stop = tokio_util::sync::CancellationToken::new();
    let mut workers = Vec::new();
    for w in 0..8 {
        let base = base.clone();
        let stop = stop.clone();
        workers.push(tokio::spawn(async move {
            let c = Client::http(&base, Options::default()).await;
            let mut answered = Vec::new();
            for n in 0.. {
                let text = format!("w{w}-call{n}");
                let (_, rx) = c.start_request(
                    "tools/call",
                    json!({ "name": "fx__echo", "arguments": { "text": text } }),
                );
                let resp = tokio::select! {
                    r = rx => r,
                    _ = stop.cancelled() => break,
                };
                match resp {
                    Ok(r) if r.get("result").is_some() => answered.push(text),
                    _ => break,
                }
            }
            answered
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // SIGKILL: no shutdown, no flush.
    child.start_kill().unwrap();
    let _ = child.wait().await;
    stop.cancel();
    let mut answered = Vec::new();
    for w in workers {
        answered.extend(w.await.unwrap());
    }
    assert!(
        answered.len() > 50,
        "too little traffic to prove anything: {}",
        answered.len()
    );
    let store = store_of(&config).await;
    let recorded = |events: &[Event]| -> std::collections::HashSet<String> {
        events
            .iter()
            .filter_map(|e| Some(e.arguments.as_ref()?["text"].as_str()?.to_owned()))
            .collect()
    };
    let journal_dir = dir.path().join("toolgate.db.audit-journal");
    if journal.is_none() {
        // Killed within a batch: the store lacks the newest answered calls, the journal has them.
        let in_store = recorded(&all_events(&store).await);
        assert!(
            answered.iter().any(|t| !in_store.contains(t)),
            "every answered call was already in the store: the journal was not exercised"
        );
        let journal_files: Vec<PathBuf> = std::fs::read_dir(&journal_dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert!(
            !journal_files.is_empty(),
            "the journal is kept at a SIGKILL"
        );
        // The next start hands the store what the killed gateway had not.
        let (_child, _base) =
            spawn_gateway(&config, &dir.path().join("out2"), &dir.path().join("err2")).await;
        stored(&store, "every answered call after the restart", |all| {
            let in_store = recorded(all);
            answered.iter().all(|t| in_store.contains(t))
        })
        .await;
        let left: Vec<PathBuf> = std::fs::read_dir(&journal_dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| journal_files.contains(p))
            .collect();
        assert!(
            left.is_empty(),
            "taken-over journal files are deleted: {left:?}"
        );
    } else {
        assert!(!journal_dir.exists(), "no journal with `journal: off`");
    }
    let all = all_events(&store).await;
    let in_store = recorded(&all);
    let missing: Vec<&String> = answered.iter().filter(|t| !in_store.contains(*t)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} answered calls are not in the audit store: {:?}",
        missing.len(),
        answered.len(),
        &missing[..missing.len().min(10)]
    );
    let calls = all
        .iter()
        .filter(|e| e.method.as_deref() == Some("tools/call"))
        .count();
    assert_eq!(calls, in_store.len(), "each call is stored once");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trail_that_cannot_be_written_stops_calls_unless_told_to_drop() {
    within(TEST_TIMEOUT, "the test", async {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("upstream.log");
        // /dev/full takes the file open and fails every write.
        let failing = json!(["store", { "jsonl": { "path": "/dev/full" } }]);
        // Without a journal, no answer is given for a call whose event could not be written.
        let gw = Gateway::serve(json!({
            "audit": { "sinks": failing, "journal": "off" },
            "servers": { "fx": support::logged_stdio_fixture(&log) },
        }))
        .await;
        let c = Client::http(&gw.base, Options::default()).await;
        let r = c.request_tool("fx__echo", json!({ "text": "one" })).await;
        assert_eq!(r["error"]["code"], -32041, "{r}");
        assert_eq!(r["error"]["data"]["code"], "audit_unavailable", "{r}");
        // The first call may have run (admitted before the failure was known); once the
        // trail is known to fail, no call reaches the server.
        let before = support::upstream_calls(&log).len();
        assert!(before <= 1, "{before}");
        refused_while_failing(&gw, &c, &log, before).await;
        drop(c);
        drop(gw);

        // With the journal (the default), the first call's event is in the journal when it is
        // answered; once the sinks are known to fail, calls are refused all the same.
        let _ = std::fs::remove_file(&log);
        let gw = Gateway::serve(json!({
            "audit": { "sinks": failing, "commit_every": "200ms" },
            "servers": { "fx": support::logged_stdio_fixture(&log) },
        }))
        .await;
        let c = Client::http(&gw.base, Options::default()).await;
        let r = c
            .request_tool("fx__echo", json!({ "text": "journaled" }))
            .await;
        assert_eq!(first_text(&r["result"]), "journaled", "{r}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while reqwest::get(format!("{}/readyz", gw.base))
            .await
            .unwrap()
            .status()
            != 503
        {
            assert!(
                Instant::now() < deadline,
                "the failing sink is never noticed"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        refused_while_failing(&gw, &c, &log, 1).await;
        // The answered call's event stays in the journal until every sink took it.
        let journal = gw
            .config
            .path
            .parent()
            .unwrap()
            .join("toolgate.db.audit-journal");
        let kept: String = std::fs::read_dir(&journal)
            .unwrap()
            .map(|e| read_lossy(&e.unwrap().path()))
            .collect();
        let call = kept
            .lines()
            .filter_map(|l| serde_json::from_str::<Event>(l).ok())
            .find(|e| e.method.as_deref() == Some("tools/call"));
        assert!(
            call.is_some_and(|e| e.outcome == Some(Outcome::Ok)),
            "{kept}"
        );
        drop(c);
        drop(gw);

        let gw = Gateway::serve(json!({
            "audit": {
                "sinks": [{ "jsonl": { "path": "/dev/full" } }],
                "overflow": "drop",
            },
            "servers": { "fx": support::stdio_server(&[]) },
        }))
        .await;
        let c = Client::http(&gw.base, Options::default()).await;
        for text in ["one", "two", "three"] {
            let r = c.request_tool("fx__echo", json!({ "text": text })).await;
            assert_eq!(first_text(&r["result"]), text, "{r}");
        }
    })
    .await;
}

/// Calls are refused and reach no server, and the gateway says it is not ready, while the
/// trail cannot be written.
async fn refused_while_failing(gw: &Gateway, c: &Client, log: &Path, calls_before: usize) {
    for text in ["two", "three"] {
        let r = c.request_tool("fx__echo", json!({ "text": text })).await;
        assert_eq!(r["error"]["code"], -32041, "{r}");
    }
    assert_eq!(support::upstream_calls(log).len(), calls_before);
    let ready = reqwest::get(format!("{}/readyz", gw.base)).await.unwrap();
    assert_eq!(ready.status(), 503);
    let body: serde_json::Value = serde_json::from_str(&ready.text().await.unwrap()).unwrap();
    assert_eq!(body["checks"]["audit"]["ok"], false, "{body}");
    assert!(gw.stderr().contains("audit sink failed"), "{}", gw.stderr());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_journal_that_cannot_be_made_stops_serve_with_the_reason() {
    within(TEST_TIMEOUT, "the test", async {
        let config = support::ConfigFile::json(&json!({
            "audit": { "journal": "/proc/toolgate-audit-journal" },
            "servers": { "fx": support::stdio_server(&[]) },
        }));
        let path = config.path.to_str().unwrap();
        let (code, _, stderr) = support::run_toolgate(
            &["serve", "--config", path, "--listen", "127.0.0.1:0"],
            Duration::from_secs(30),
        )
        .await;
        assert_ne!(code, Some(0), "{stderr}");
        assert!(stderr.contains("cannot open the audit journal"), "{stderr}");
        assert!(stderr.contains("/proc/toolgate-audit-journal"), "{stderr}");
    })
    .await;
}

fn read_lossy(path: &Path) -> String {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// Every file in `dir` (the store, its WAL, the JSON Lines trail, the logs), as text.
fn everything_written(dir: &Path) -> Vec<(PathBuf, String)> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .map(|p| {
            let text = read_lossy(&p);
            (p, text)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn planted_secrets_appear_nowhere_the_gateway_writes() {
    within(TEST_TIMEOUT, "the test", async {
        let dir = tempfile::tempdir().unwrap();
        let policy = dir.path().join("allow.cedar");
        std::fs::write(&policy, "@id(\"all\")\npermit (principal, action, resource);\n").unwrap();
        let upstream = support::FixtureServer::http(&[]).await;
        let mut http = upstream.entry();
        // A credential the gateway hands to a server: configured, never logged.
        http["headers"] = json!({ "Authorization": "Bearer planted-upstream-credential-7f3a" });
        http["audit"] = json!({ "arguments": "full", "results": "full" });
        let mut stdio = support::stdio_server(&[]);
        stdio["env"] = json!({ "FIXTURE_TOKEN": "planted-env-credential-91bc" });
        stdio["audit"] = json!({ "arguments": "full", "results": "full" });
        let config = dir.path().join("config.json");
        std::fs::write(
            &config,
            json!({
                "auth": { "api_keys": {} },
                "policy": { "path": policy },
                "audit": { "sinks": ["store", "stdout", { "jsonl": { "path": "audit.jsonl" } }] },
                "servers": { "web": http, "local": stdio },
            })
            .to_string(),
        )
        .unwrap();
        let key = support::api_key(&config, &["--principal", "carol"]).await;
        let (mut child, base) =
            spawn_gateway(&config, &dir.path().join("stdout.log"), &dir.path().join("stderr.log"))
                .await;
        let c = Client::http(&base, Options { bearer: Some(key.clone()), ..Options::default() }).await;
        // Secrets in arguments — by field name and by shape — and echoed back in results.
        for tool in ["web__echo", "local__echo"] {
            let r = c
                .request_tool(
                    tool,
                    json!({ "text": "token Bearer planted-bearer-in-text-55aa and ghp_plantedgithubtoken0123456789", "password": "planted-password-field" }),
                )
                .await;
            assert!(r.get("result").is_some(), "{r}");
        }
        // A wrong key is refused (and audited) without being written anywhere.
        let resp = reqwest::Client::new()
            .post(format!("{base}/mcp"))
            .header("Accept", "application/json, text/event-stream")
            .header("Content-Type", "application/json")
            .bearer_auth("tgk_someid_planted-wrong-key-secret")
            .body(support::initialize_body())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401);
        // Stop normally so every sink is flushed; then look at everything on disk.
        let store = store_of(&config).await;
        wait_for(&store, "for the refusal", |e| e.kind == EventKind::Auth).await;
        let calls = all_events(&store)
            .await
            .into_iter()
            .filter(|e| e.method.as_deref() == Some("tools/call"))
            .count();
        assert_eq!(calls, 2);
        sigterm(&child);
        let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
        // `tgk_<id>_<secret>`: the secret may itself contain `_`.
        let secret_of_key = key.splitn(3, '_').nth(2).unwrap().to_owned();
        let planted = [
            secret_of_key.as_str(),
            "planted-upstream-credential",
            "planted-env-credential",
            "planted-bearer-in-text",
            "ghp_plantedgithubtoken",
            "planted-password-field",
            "planted-wrong-key-secret",
        ];
        let written = everything_written(dir.path());
        let names: Vec<_> = written.iter().map(|(p, _)| p.file_name().unwrap().to_owned()).collect();
        for expected in ["stdout.log", "stderr.log", "audit.jsonl", "toolgate.db"] {
            assert!(names.iter().any(|n| n == expected), "{expected} missing among {names:?}");
        }
        // The trail does hold the calls (so the grep is not vacuous).
        let jsonl = read_lossy(&dir.path().join("audit.jsonl"));
        let stdout = read_lossy(&dir.path().join("stdout.log"));
        assert!(jsonl.contains("web__echo") && stdout.contains("local__echo"), "{jsonl}\n{stdout}");
        assert!(jsonl.contains("\"password\":\"***\""), "{jsonl}");
        for (path, text) in &written {
            if path.ends_with("config.json") || path.ends_with("allow.cedar") {
                continue;
            }
            for secret in planted {
                assert!(
                    !text.contains(secret),
                    "{secret} written to {}",
                    path.display()
                );
            }
        }
    })
    .await;
}

/// Ask the gateway to stop as an operator would.
fn sigterm(child: &tokio::process::Child) {
    if let Some(pid) = child.id() {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
    }
}

/// One 2026-07-28 request (no session; the context in `_meta`, the mirrored
/// headers) with `key` as its bearer credential; the final JSON-RPC message.
async fn modern_post(gw: &Gateway, key: &str, method: &str, mut params: Value) -> Value {
    const VERSION: &str = "2026-07-28";
    params["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": VERSION,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": { "name": "audit-test", "version": "1" },
    });
    let mut req = reqwest::Client::new()
        .post(gw.mcp_url())
        .header("Accept", "application/json, text/event-stream")
        .header("Content-Type", "application/json")
        .header("MCP-Protocol-Version", VERSION)
        .header("Mcp-Method", method)
        .bearer_auth(key);
    if let Some(name) = params.get("name").and_then(Value::as_str) {
        req = req.header("Mcp-Name", name);
    }
    let body = json!({ "jsonrpc": "2.0", "id": 1, "method": method, "params": params });
    let text = req
        .body(body.to_string())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // A JSON body, or an SSE stream whose last event is the answer.
    let last = text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .next_back()
        .unwrap_or(&text);
    serde_json::from_str(last.trim()).unwrap_or_else(|e| panic!("{method}: {e}: {text}"))
}
