//! stdio supervision with real processes (fault injection, not mocks): servers that crash
//! mid-call, that exit at start-up over and over, that come back after a while; children that
//! must die with a SIGKILLed gateway; the cap on children; idle children; resource limits and
//! the scrubbed environment. Wrapper shell scripts record what the gateway started (pids, the
//! limits and environment a child saw) in files the tests read.

mod support;

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::{
    Client, Gateway, Options, Transport, first_text, start_sleeping, until_it_answers, within,
};

/// Every test here finishes well within this, or fails instead of hanging.
const TEST_TIMEOUT: Duration = Duration::from_secs(120);
/// What a client may wait for a failing server's error: far below the calls' timeout.
const FAST_FAILURE: Duration = Duration::from_secs(10);
/// How long something the gateway does in the background may take on a loaded machine.
const EVENTUALLY: Duration = Duration::from_secs(30);
const SIMPLE_TEXT: &str = "This is a simple text response for testing.";

/// A stdio server entry: `/bin/sh -c SCRIPT`, where `$FIXTURE` in the script is the fixture
/// binary. The server speaks the legacy era only, so `per_session` means a child per session.
fn scripted(script: &str, extra: Value) -> Value {
    let script = script.replace(
        "$FIXTURE",
        &format!("'{}'", support::fixture_bin().display()),
    );
    let mut entry = json!({ "command": "/bin/sh", "args": ["-c", script], "era": "legacy" });
    if let (Some(entry), Value::Object(extra)) = (entry.as_object_mut(), extra) {
        entry.extend(extra);
    }
    entry
}

/// Lines of a file a wrapper script appends to (none yet: empty).
fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
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

/// Is process `pid` gone (exited; a zombie no one reaped yet counts as gone)?
fn gone(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // `pid (comm) S …`: the state follows the last parenthesis.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
    }
}

async fn http_client(gw: &Gateway) -> Client {
    gw.client(Transport::StreamableHttp, Options::default())
        .await
}

async fn readyz(gw: &Gateway) -> Value {
    let resp = reqwest::get(format!("{}/readyz", gw.base))
        .await
        .expect("readyz answers");
    serde_json::from_str(&resp.text().await.expect("a body")).expect("JSON")
}

#[tokio::test]
async fn a_crash_mid_call_fails_that_call_at_once_others_are_unaffected_and_it_recovers() {
    within(TEST_TIMEOUT, "test", async {
        let gw = Gateway::serve(json!({
            "servers": {
                "bad": scripted("exec $FIXTURE --fault-tools stdio", json!({ "isolation": "shared", "timeout": "60s" })),
                "good": scripted("exec $FIXTURE stdio", json!({ "isolation": "shared" })),
            },
        }))
        .await;
        let victim = http_client(&gw).await;
        let bystander = http_client(&gw).await;
        let (_, other_call) = start_sleeping(&bystander, "good__sleep", 1500).await;
        let (_, in_flight) = start_sleeping(&victim, "bad__sleep", 60_000).await;

        let started = Instant::now();
        let error = victim
            .error("tools/call", json!({ "name": "bad__crash" }))
            .await;
        assert!(started.elapsed() < FAST_FAILURE, "took {:?}", started.elapsed());
        assert_eq!(error["code"], -32050, "{error}");
        assert_eq!(error["data"]["server"], "bad", "{error}");
        let lost = within(FAST_FAILURE, "the call in flight", in_flight)
            .await
            .expect("an answer");
        assert_eq!(lost["error"]["data"]["server"], "bad", "{lost}");

        // The other client's call to the other server finishes as if nothing happened.
        let other = within(FAST_FAILURE, "the other client's call", other_call)
            .await
            .expect("an answer");
        assert_eq!(first_text(&other["result"]), "slept 1500 ms", "{other}");

        // The supervisor restarts the child; the victim's session keeps working.
        let back = until_it_answers(&victim, "bad__test_simple_text", json!({})).await;
        assert_eq!(first_text(&back), SIMPLE_TEXT);
    })
    .await;
}

/// A server that worked, then exits at start-up every time (`broken` exists): it is restarted
/// `restart.max` times, then held down with a reason, and calls fail at once with -32050.
#[tokio::test]
async fn a_server_that_keeps_exiting_at_start_up_is_held_down_and_fails_fast() {
    within(TEST_TIMEOUT, "test", async {
        let dir = tempfile::tempdir().expect("a temp dir");
        let (starts, broken) = (dir.path().join("starts"), dir.path().join("broken"));
        let script = format!(
            "echo start >> '{}'; [ -e '{}' ] && exit 1; exec $FIXTURE --fault-tools stdio",
            starts.display(),
            broken.display()
        );
        let admin = support::free_port();
        let gw = Gateway::serve(json!({
            "admin": { "listen": format!("127.0.0.1:{admin}") },
            "servers": {
                "flaky": scripted(&script, json!({
                    "isolation": "shared",
                    "failure": "closed",
                    "restart": { "max": 3, "window": "10m", "cooldown": "1h" },
                })),
                "good": scripted("exec $FIXTURE stdio", json!({ "isolation": "shared" })),
            },
        }))
        .await;
        let client = http_client(&gw).await;
        assert_eq!(lines(&starts).len(), 1);

        std::fs::write(&broken, "").expect("mark broken");
        let error = client
            .error("tools/call", json!({ "name": "flaky__crash" }))
            .await;
        assert_eq!(error["code"], -32050, "{error}");

        let mut detail;
        let deadline = Instant::now() + EVENTUALLY;
        loop {
            let ready = readyz(&gw).await;
            detail = ready["checks"]["server:flaky"]["detail"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if detail.contains("crash loop") {
                break;
            }
            assert!(Instant::now() < deadline, "no crash loop reported: {ready}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(detail.contains("restart.cooldown"), "{detail}");
        // The first start, then exactly `max` restarts: no more while it is held down.
        assert_eq!(lines(&starts).len(), 4, "{:?}", lines(&starts));

        let started = Instant::now();
        let error = client
            .error(
                "tools/call",
                json!({ "name": "flaky__test_simple_text", "arguments": {} }),
            )
            .await;
        assert!(
            started.elapsed() < FAST_FAILURE,
            "took {:?}",
            started.elapsed()
        );
        assert_eq!(error["code"], -32050, "{error}");
        assert_eq!(error["data"]["server"], "flaky", "{error}");
        assert!(
            error["message"]
                .as_str()
                .unwrap_or_default()
                .contains("crash loop"),
            "{error}"
        );
        let metrics = reqwest::get(format!("http://127.0.0.1:{admin}/metrics"))
            .await
            .expect("metrics answer")
            .text()
            .await
            .expect("a body");
        assert!(
            metrics.contains("toolgate_upstream_up{server=\"flaky\"} 0"),
            "{metrics}"
        );
        assert!(metrics.contains("\ntoolgate_stdio_children "), "{metrics}");
        // The other server is not affected.
        let result = client.call_tool("good__test_simple_text", json!({})).await;
        assert_eq!(first_text(&result), SIMPLE_TEXT);
        assert_eq!(lines(&starts).len(), 4, "restarted while held down");
    })
    .await;
}

/// A command that exits at start-up every time, from the first: started once and restarted
/// `restart.max` times, then held down (logged, `toolgate_upstream_up` 0), never restarted
/// endlessly; the other server serves throughout.
#[tokio::test]
async fn a_command_that_always_exits_at_start_up_is_started_a_bounded_number_of_times() {
    within(TEST_TIMEOUT, "test", async {
        let dir = tempfile::tempdir().expect("a temp dir");
        let starts = dir.path().join("starts");
        let script = format!("echo start >> '{}'; exit 1", starts.display());
        let gw = Gateway::serve(json!({
            "servers": {
                "dead": scripted(&script, json!({
                    "isolation": "shared",
                    "restart": { "max": 2, "window": "10m", "cooldown": "1h" },
                })),
                "good": scripted("exec $FIXTURE stdio", json!({ "isolation": "shared" })),
            },
        }))
        .await;
        until("the crash loop is logged", || {
            gw.stderr().contains("crash loop")
        })
        .await;
        assert_eq!(
            lines(&starts).len(),
            3,
            "the first start and `max` restarts"
        );
        let log = gw.stderr();
        assert!(log.contains("restart.cooldown"), "{log}");
        let client = http_client(&gw).await;
        let result = client.call_tool("good__test_simple_text", json!({})).await;
        assert_eq!(first_text(&result), SIMPLE_TEXT);
        assert_eq!(lines(&starts).len(), 3, "restarted while held down");
    })
    .await;
}

/// The same server with a short cool-down: once the cause is gone it is started again and
/// calls succeed, without a gateway restart.
#[tokio::test]
async fn a_crash_looping_server_comes_back_after_its_cool_down() {
    within(TEST_TIMEOUT, "test", async {
        let dir = tempfile::tempdir().expect("a temp dir");
        let broken = dir.path().join("broken");
        let script = format!(
            "[ -e '{}' ] && exit 1; exec $FIXTURE --fault-tools stdio",
            broken.display()
        );
        let gw = Gateway::serve(json!({
            "servers": {
                "flaky": scripted(&script, json!({
                    "isolation": "shared",
                    "failure": "closed",
                    "restart": { "max": 1, "window": "10m", "cooldown": "2s" },
                })),
            },
        }))
        .await;
        let client = http_client(&gw).await;
        std::fs::write(&broken, "").expect("mark broken");
        client
            .error("tools/call", json!({ "name": "flaky__crash" }))
            .await;
        let deadline = Instant::now() + EVENTUALLY;
        loop {
            let detail = readyz(&gw).await["checks"]["server:flaky"]["detail"].clone();
            if detail.as_str().unwrap_or_default().contains("crash loop") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no crash loop reported: {detail}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        std::fs::remove_file(&broken).expect("repaired");
        let back = until_it_answers(&client, "flaky__test_simple_text", json!({})).await;
        assert_eq!(first_text(&back), SIMPLE_TEXT);
        assert_eq!(readyz(&gw).await["ready"], true);
    })
    .await;
}

/// A wrapper that records its pid and, like servers that ignore stdin EOF, outlives the MCP
/// program it runs unless it is killed: only the parent-death signal can end it.
fn stubborn(pids: &Path) -> String {
    format!(
        "echo $$ >> '{}'; $FIXTURE stdio; exec sleep 300",
        pids.display()
    )
}

#[tokio::test]
async fn a_sigkilled_gateway_leaves_no_child_behind() {
    within(TEST_TIMEOUT, "test", async {
        let dir = tempfile::tempdir().expect("a temp dir");
        let pids = dir.path().join("pids");
        let gw = Gateway::serve(json!({
            "servers": { "fx": scripted(&stubborn(&pids), json!({})) },
        }))
        .await;
        // The supervisor's child, and one for this session.
        let client = http_client(&gw).await;
        let result = client.call_tool("fx__test_simple_text", json!({})).await;
        assert_eq!(first_text(&result), SIMPLE_TEXT);
        let started = lines(&pids);
        assert_eq!(started.len(), 2, "{started:?}");
        assert!(
            started.iter().all(|p| !gone(p)),
            "children run: {started:?}"
        );

        gw.stop().await; // SIGKILL: the gateway runs no cleanup at all.
        until("every child is gone", || started.iter().all(|p| gone(p))).await;
    })
    .await;
}

#[tokio::test]
async fn the_child_cap_refuses_a_new_sessions_child_with_a_clear_error() {
    within(TEST_TIMEOUT, "test", async {
        let dir = tempfile::tempdir().expect("a temp dir");
        let pids = dir.path().join("pids");
        let script = format!("echo $$ >> '{}'; exec $FIXTURE stdio", pids.display());
        let gw = Gateway::serve(json!({
            "max_children": 2,
            "servers": { "fx": scripted(&script, json!({})) },
        }))
        .await;
        let first = http_client(&gw).await;
        let result = first.call_tool("fx__test_simple_text", json!({})).await;
        assert_eq!(first_text(&result), SIMPLE_TEXT);

        let second = http_client(&gw).await;
        let started = Instant::now();
        let error = second
            .error(
                "tools/call",
                json!({ "name": "fx__test_simple_text", "arguments": {} }),
            )
            .await;
        assert!(
            started.elapsed() < FAST_FAILURE,
            "took {:?}",
            started.elapsed()
        );
        assert_eq!(error["code"], -32050, "{error}");
        assert!(
            error["message"]
                .as_str()
                .unwrap_or_default()
                .contains("max_children (2)"),
            "{error}"
        );
        assert_eq!(lines(&pids).len(), 2, "no child was forked beyond the cap");

        // The first session ends: its child goes, and the second session gets one.
        first.close().await;
        let back = until_it_answers(&second, "fx__test_simple_text", json!({})).await;
        assert_eq!(first_text(&back), SIMPLE_TEXT);
    })
    .await;
}

#[tokio::test]
async fn an_idle_session_child_is_stopped_and_the_next_call_starts_another() {
    within(TEST_TIMEOUT, "test", async {
        let dir = tempfile::tempdir().expect("a temp dir");
        let pids = dir.path().join("pids");
        let script = format!("echo $$ >> '{}'; exec $FIXTURE stdio", pids.display());
        let gw = Gateway::serve(json!({
            "child_idle_timeout": "1s",
            "servers": { "fx": scripted(&script, json!({})) },
        }))
        .await;
        let client = http_client(&gw).await;
        let result = client.call_tool("fx__test_simple_text", json!({})).await;
        assert_eq!(first_text(&result), SIMPLE_TEXT);
        let started = lines(&pids);
        assert_eq!(started.len(), 2, "{started:?}");
        let session_child = started[1].clone();

        until("the idle child is stopped", || gone(&session_child)).await;
        assert!(!gone(&started[0]), "the supervisor's child is never reaped");

        // The session is intact: the next call starts a new child.
        let result = client.call_tool("fx__test_simple_text", json!({})).await;
        assert_eq!(first_text(&result), SIMPLE_TEXT);
        let now = lines(&pids);
        assert_eq!(now.len(), 3, "{now:?}");
    })
    .await;
}

#[tokio::test]
async fn a_child_gets_its_rlimits_and_only_the_configured_environment() {
    within(TEST_TIMEOUT, "test", async {
        let dir = tempfile::tempdir().expect("a temp dir");
        let seen: PathBuf = dir.path().join("seen");
        let script = format!(
            "{{ echo \"nofile=$(ulimit -n)\"; echo \"as=$(ulimit -v)\"; echo \"cpu=$(ulimit -t)\"; env; }} > '{}'; exec $FIXTURE stdio",
            seen.display()
        );
        let _gw = Gateway::serve_with_env(
            json!({
                "servers": { "fx": scripted(&script, json!({
                    "isolation": "shared",
                    "env": { "CONFIGURED_FOR_CHILD": "yes" },
                    "rlimits": { "open_files": 123, "memory": "2GiB", "cpu_seconds": 600 },
                })) },
            }),
            &[("TOOLGATE_PLANTED_SECRET", "planted-s3cret")],
        )
        .await;
        // `serve` answers only after the supervisor's first start: the file is written.
        let text = std::fs::read_to_string(&seen).expect("the wrapper wrote what it saw");
        assert!(text.contains("nofile=123\n"), "{text}");
        assert!(text.contains(&format!("as={}\n", 2 * 1024 * 1024)), "{text}");
        assert!(text.contains("cpu=600\n"), "{text}");
        assert!(text.contains("CONFIGURED_FOR_CHILD=yes"), "{text}");
        assert!(!text.contains("planted-s3cret"), "a gateway secret reached the child: {text}");
        assert!(!text.contains("TOOLGATE_PLANTED_SECRET"), "{text}");
    })
    .await;
}

/// `sandbox:` (Landlock): the child writes only below `write`, and reads nothing outside the
/// system directories, its command and `read`. Skipped, saying so, where the kernel lacks
/// Landlock (the gateway then logs that the sandbox is not enforced).
#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_sandboxed_child_writes_only_where_allowed_and_reads_no_secrets() {
    within(TEST_TIMEOUT, "test", async {
        let dir = tempfile::tempdir().expect("a temp dir");
        let (writable, forbidden) = (dir.path().join("w"), dir.path().join("f"));
        std::fs::create_dir_all(&writable).expect("mkdir");
        std::fs::create_dir_all(&forbidden).expect("mkdir");
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "top-secret").expect("write the secret");
        let script = format!(
            "echo ok > '{w}/allowed'; {{ echo leaked > '{f}/forbidden'; }} 2>/dev/null; \
             cat '{s}' > '{w}/read' 2>/dev/null; exec $FIXTURE stdio",
            w = writable.display(),
            f = forbidden.display(),
            s = secret.display()
        );
        let fixture_dir = support::fixture_bin().parent().expect("a directory");
        let gw = Gateway::serve(json!({
            "servers": { "fx": scripted(&script, json!({
                "isolation": "shared",
                "sandbox": { "read": [fixture_dir], "write": [writable] },
            })) },
        }))
        .await;
        if gw.stderr().contains("sandbox NOT enforced") {
            eprintln!("skipped: this kernel has no Landlock");
            return;
        }
        let client = http_client(&gw).await;
        let result = client.call_tool("fx__test_simple_text", json!({})).await;
        assert_eq!(
            first_text(&result),
            SIMPLE_TEXT,
            "the sandboxed server runs"
        );
        assert_eq!(
            std::fs::read_to_string(writable.join("allowed")).expect("written"),
            "ok\n"
        );
        assert!(
            !forbidden.join("forbidden").exists(),
            "wrote outside `write`"
        );
        let read = std::fs::read_to_string(writable.join("read")).unwrap_or_default();
        assert!(read.is_empty(), "read a file outside `read`: {read:?}");
    })
    .await;
}

/// What a child started goes with it: its process group is killed when the child dies, even
/// when the child itself exited first.
#[tokio::test]
async fn what_a_crashed_child_started_is_killed_with_it() {
    within(TEST_TIMEOUT, "test", async {
        let dir = tempfile::tempdir().expect("a temp dir");
        let helpers = dir.path().join("helpers");
        let script = format!(
            "sleep 300 & echo $! >> '{}'; exec $FIXTURE --fault-tools stdio",
            helpers.display()
        );
        let gw = Gateway::serve(json!({
            "servers": { "fx": scripted(&script, json!({})) },
        }))
        .await;
        let client = http_client(&gw).await;
        let result = client.call_tool("fx__test_simple_text", json!({})).await;
        assert_eq!(first_text(&result), SIMPLE_TEXT);
        let started = lines(&helpers);
        assert_eq!(started.len(), 2, "{started:?}");

        let error = client
            .error("tools/call", json!({ "name": "fx__crash" }))
            .await;
        assert_eq!(error["code"], -32050, "{error}");
        until("the crashed child's helper is gone", || gone(&started[1])).await;
        assert!(!gone(&started[0]), "another child's helper was killed");
        // A SIGKILLed gateway's death reaches only its children themselves, not what they
        // started (docs/stdio.md): end the other helper here.
        gw.stop().await;
        let _ = std::process::Command::new("kill").arg(&started[0]).status();
    })
    .await;
}
