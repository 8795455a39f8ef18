//! Real MCP peers that toolgate did not write, driven through the real binary:
//! the official Python SDK against `@modelcontextprotocol/server-everything`
//! behind the gateway over stdio, Streamable HTTP and HTTP+SSE at once, and the
//! official conformance suite against the gateway fronting toolgate-fixture.
//!
//! The peers are installed by `scripts/setup-peers` (run by `scripts/test`). These
//! tests fail — they never skip — when a peer is missing.

mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A peer's path from the environment (`.peers/env`) or its default under `.peers/`.
fn peer(var: &str, default: &str) -> PathBuf {
    let path = std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".peers").join(default));
    assert!(
        path.exists(),
        "{var}: {} is missing; install the real MCP peers with scripts/setup-peers (scripts/test does this)",
        path.display()
    );
    path
}

fn node() -> PathBuf {
    peer("TOOLGATE_NODE", "bin/node")
}
fn everything() -> PathBuf {
    peer(
        "TOOLGATE_EVERYTHING",
        "npm/node_modules/@modelcontextprotocol/server-everything/dist/index.js",
    )
}
fn python() -> PathBuf {
    peer("TOOLGATE_PYTHON", "venv/bin/python")
}

fn toolgate() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_toolgate"))
}

/// A child process stopped with SIGTERM (so the gateway stops its own children)
/// and then killed when dropped.
struct Proc {
    child: Child,
    name: String,
}

impl Proc {
    fn spawn(name: &str, cmd: &mut Command) -> Proc {
        let child = cmd
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc {
            child,
            name: name.to_owned(),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("{} did not stop on SIGTERM; killing it", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Wait until `GET path` on the port answers 200 (or any HTTP status, if `any`).
fn wait_http(port: u16, path: &str, any: bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let req = format!(
                "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nAccept: application/json\r\n\r\n"
            );
            let mut head = [0u8; 12];
            if s.write_all(req.as_bytes()).is_ok()
                && s.read_exact(&mut head).is_ok()
                && (any || head.ends_with(b"200"))
            {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not come up on port {port}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn write_config(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write config");
    path
}

fn gateway(config: &Path, port: u16) -> Proc {
    let gw = Proc::spawn(
        "toolgate",
        Command::new(toolgate())
            .args(["--log", "warn", "serve", "--config"])
            .arg(config)
            .args(["--listen", &format!("127.0.0.1:{port}")]),
    );
    wait_http(port, "/healthz", false, "toolgate");
    gw
}

fn show(out: &Output) -> String {
    format!(
        "--- stdout\n{}\n--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `@modelcontextprotocol/server-everything` in one of its HTTP modes
/// (`streamableHttp` at /mcp, `sse` at /sse) on a free port.
fn everything_server(mode: &str) -> (Proc, u16) {
    let port = support::free_port();
    let proc = Proc::spawn(
        &format!("server-everything ({mode})"),
        Command::new(node())
            .arg(everything())
            .arg(mode)
            .env("PORT", port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let probe = if mode == "sse" { "/nothing" } else { "/mcp" };
    wait_http(port, probe, true, &format!("server-everything {mode}"));
    (proc, port)
}

#[test]
fn python_sdk_drives_server_everything_on_three_transports_through_the_gateway() {
    let (node, everything, python) = (node(), everything(), python());
    let (_http, http_port) = everything_server("streamableHttp");
    let (_sse, sse_port) = everything_server("sse");
    let gw_port = support::free_port();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(
        dir.path(),
        "toolgate.yaml",
        &format!(
            r#"
servers:
  everything_stdio:
    command: {node}
    args: ["{everything}", "stdio"]
  everything_http:
    url: http://127.0.0.1:{http_port}/mcp
  everything_sse:
    url: http://127.0.0.1:{sse_port}/sse
    transport: sse
"#,
            node = node.display(),
            everything = everything.display(),
        ),
    );
    let _gw = gateway(&config, gw_port);
    let script = repo_root().join("tests/interop/everything_client.py");
    for (url, transport) in [
        (format!("http://127.0.0.1:{gw_port}/mcp"), "streamable-http"),
        (format!("http://127.0.0.1:{gw_port}/sse"), "sse"),
    ] {
        let out = Command::new(&python)
            .arg(&script)
            .arg(&url)
            .args(["--transport", transport])
            .args(["--server", "stdio=everything_stdio__"])
            .args(["--server", "http=everything_http__"])
            .args(["--server", "sse=everything_sse__"])
            .output()
            .expect("python runs");
        assert!(
            out.status.success(),
            "the Python SDK client failed through the gateway's {transport} endpoint:\n{}",
            show(&out)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains(" 0 failed"), "{}", show(&out));
    }
}

/// Run the conformance suite against `url`; per-scenario PASS/FAIL.
fn conformance(url: &str, out_dir: &Path) -> BTreeMap<String, bool> {
    peer(
        "TOOLGATE_CONFORMANCE",
        "npm/node_modules/@modelcontextprotocol/conformance/dist/index.js",
    );
    run_conformance(&[], url, out_dir)
}

/// The pre-release suite, scored against the 2026-07-28 requirements.
fn conformance_2026(url: &str, out_dir: &Path) -> BTreeMap<String, bool> {
    peer(
        "TOOLGATE_CONFORMANCE_NEXT",
        "npm-next/node_modules/@modelcontextprotocol/conformance/dist/index.js",
    );
    run_conformance(&["--next", "--requirements", "2026-07-28"], url, out_dir)
        .into_iter()
        .filter(|(_, passed)| *passed)
        .collect()
}

/// The pre-release suite's ten `tasks-*` scenarios (the Tasks extension, SEP-2663),
/// forced: on no spec timeline, they are otherwise run only unscored.
fn conformance_tasks(url: &str, out_dir: &Path) -> BTreeMap<String, bool> {
    peer(
        "TOOLGATE_CONFORMANCE_NEXT",
        "npm-next/node_modules/@modelcontextprotocol/conformance/dist/index.js",
    );
    let flags = [
        "--next",
        "--spec-version",
        "2026-07-28",
        "--scenario",
        "tasks-*",
        "--force",
    ];
    run_conformance(&flags, url, out_dir)
}

fn run_conformance(flags: &[&str], url: &str, out_dir: &Path) -> BTreeMap<String, bool> {
    let out = Command::new(repo_root().join("tests/interop/conformance.sh"))
        .args(flags)
        .arg(url)
        .arg(out_dir)
        .output()
        .expect("conformance.sh runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let results: BTreeMap<String, bool> = text
        .lines()
        .filter_map(|l| {
            let (verdict, rest) = l.split_once(' ')?;
            let name = rest.split(':').next()?.trim().to_owned();
            match verdict {
                "PASS" => Some((name, true)),
                "FAIL" => Some((name, false)),
                _ => None,
            }
        })
        .collect();
    assert!(
        !results.is_empty(),
        "no scenario results from {url}:\n{}",
        show(&out)
    );
    results
}

/// toolgate-fixture serving `mode` (`http` at /mcp, `sse` at /sse) on a free port.
fn fixture_server(mode: &str) -> (Proc, u16) {
    let port = support::free_port();
    let proc = Proc::spawn(
        &format!("toolgate-fixture {mode}"),
        Command::new(support::fixture_bin())
            .args([mode, "--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null()),
    );
    let probe = if mode == "sse" { "/nothing" } else { "/mcp" };
    wait_http(port, probe, true, &format!("toolgate-fixture {mode}"));
    (proc, port)
}

#[test]
fn conformance_suite_passes_through_the_gateway_wherever_it_passes_directly() {
    let fixture = support::fixture_bin();
    let dir = tempfile::tempdir().expect("tempdir");
    let (_fx, fx_port) = fixture_server("http");
    let direct = conformance(
        &format!("http://127.0.0.1:{fx_port}/mcp"),
        &dir.path().join("direct"),
    );
    let (_fx_sse, sse_port) = fixture_server("sse");

    let upstreams = [
        (
            "stdio",
            format!("command: {}\n    args: [stdio]", fixture.display()),
        ),
        (
            "streamable-http",
            format!("url: http://127.0.0.1:{fx_port}/mcp"),
        ),
        (
            "http+sse",
            format!("url: http://127.0.0.1:{sse_port}/sse\n    transport: sse"),
        ),
    ];
    let mut table = String::from("| scenario | fixture directly |");
    let mut columns = Vec::new();
    for (label, server) in upstreams {
        let config = write_config(
            dir.path(),
            &format!("{label}.yaml"),
            &format!("prefix_mode: never\nservers:\n  fixture:\n    {server}\n"),
        );
        let port = support::free_port();
        let _gw = gateway(&config, port);
        let through = conformance(
            &format!("http://127.0.0.1:{port}/mcp"),
            &dir.path().join(label),
        );
        for (scenario, passed) in &direct {
            if *passed {
                assert_eq!(
                    through.get(scenario),
                    Some(&true),
                    "{scenario} passes against the fixture directly but not through the gateway (fixture over {label})"
                );
            }
        }
        table.push_str(&format!(" through toolgate (fixture over {label}) |"));
        columns.push(through);
    }
    // The table for docs/conformance.md, printed with --nocapture.
    table.push_str("\n|---|---|---|---|---|\n");
    for (scenario, passed) in &direct {
        let mark = |p: Option<&bool>| match p {
            Some(true) => "pass",
            Some(false) => "FAIL",
            None => "-",
        };
        table.push_str(&format!("| {scenario} | {} |", mark(Some(passed))));
        for c in &columns {
            table.push_str(&format!(" {} |", mark(c.get(scenario))));
        }
        table.push('\n');
    }
    println!("{table}");
}

#[test]
fn conformance_2026_passes_through_the_gateway_wherever_it_passes_directly() {
    let fixture = support::fixture_bin();
    let dir = tempfile::tempdir().expect("tempdir");
    let (_fx, fx_port) = fixture_server("http");
    let direct = conformance_2026(
        &format!("http://127.0.0.1:{fx_port}/mcp"),
        &dir.path().join("direct"),
    );
    assert!(
        direct.len() >= 30,
        "the fixture passes only {} scenarios directly: {direct:?}",
        direct.len()
    );
    for (label, server) in [
        (
            "stdio",
            format!("command: {}\n    args: [stdio]", fixture.display()),
        ),
        (
            "streamable-http",
            format!("url: http://127.0.0.1:{fx_port}/mcp"),
        ),
    ] {
        let config = write_config(
            dir.path(),
            &format!("{label}-2026.yaml"),
            &format!("prefix_mode: never\nservers:\n  fixture:\n    {server}\n"),
        );
        let port = support::free_port();
        let _gw = gateway(&config, port);
        let through = conformance_2026(
            &format!("http://127.0.0.1:{port}/mcp"),
            &dir.path().join(format!("{label}-2026")),
        );
        let lost: Vec<_> = direct
            .keys()
            .filter(|s| !through.contains_key(*s))
            .collect();
        assert!(
            lost.is_empty(),
            "passing directly but not through the gateway (fixture over {label}): {lost:?}"
        );
    }
}

#[test]
fn tasks_extension_passes_through_the_gateway_wherever_it_passes_directly() {
    let fixture = support::fixture_bin();
    let dir = tempfile::tempdir().expect("tempdir");
    let (_fx, fx_port) = fixture_server("http");
    let direct = conformance_tasks(
        &format!("http://127.0.0.1:{fx_port}/mcp"),
        &dir.path().join("direct"),
    );
    assert_eq!(
        direct.len(),
        10,
        "not every tasks-* scenario ran: {direct:?}"
    );
    // What the fixture is there for; tasks-status-notifications checks nothing yet.
    for scenario in [
        "tasks-lifecycle",
        "tasks-dispatch-and-envelope",
        "tasks-capability-negotiation",
        "tasks-mrtr-input",
        "tasks-mrtr-composition",
    ] {
        assert_eq!(
            direct.get(scenario),
            Some(&true),
            "the fixture fails {scenario} directly: {direct:?}"
        );
    }
    for (label, server) in [
        (
            "stdio",
            format!("command: {}\n    args: [stdio]", fixture.display()),
        ),
        (
            "streamable-http",
            format!("url: http://127.0.0.1:{fx_port}/mcp"),
        ),
    ] {
        let config = write_config(
            dir.path(),
            &format!("{label}-tasks.yaml"),
            &format!("prefix_mode: never\nservers:\n  fixture:\n    {server}\n"),
        );
        let port = support::free_port();
        let _gw = gateway(&config, port);
        let through = conformance_tasks(
            &format!("http://127.0.0.1:{port}/mcp"),
            &dir.path().join(format!("{label}-tasks")),
        );
        let lost: Vec<_> = direct
            .iter()
            .filter(|(s, passed)| **passed && through.get(*s) != Some(&true))
            .map(|(s, _)| s)
            .collect();
        assert!(
            lost.is_empty(),
            "passing directly but not through the gateway (fixture over {label}): {lost:?}"
        );
    }
}

/// Start `tests/interop/modern_server.py` on a free port; returns it and its URL.
fn modern_server(python: &Path, extra: &[&str]) -> (Proc, String) {
    let port = support::free_port();
    let script = repo_root().join("tests/interop/modern_server.py");
    let proc = Proc::spawn(
        "modern_server.py",
        Command::new(python)
            .arg(script)
            .arg(port.to_string())
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    wait_http(port, "/mcp", true, "modern_server.py");
    (proc, format!("http://127.0.0.1:{port}/mcp"))
}

#[test]
fn python_sdk_in_both_eras_drives_modern_and_legacy_servers_through_the_gateway() {
    let python = python();
    let (_py, py_url) = modern_server(&python, &[]);
    let (_py_only, py_only_url) = modern_server(&python, &["--modern-only"]);
    let (_ev, ev_port) = everything_server("streamableHttp");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(
        dir.path(),
        "eras.yaml",
        &format!(
            "servers:\n  py:\n    url: {py_url}\n  pyonly:\n    url: {py_only_url}\n  ev:\n    url: http://127.0.0.1:{ev_port}/mcp\n"
        ),
    );
    let gw_port = support::free_port();
    let _gw = gateway(&config, gw_port);
    let script = repo_root().join("tests/interop/eras_client.py");
    for mode in ["legacy", "modern"] {
        let mut cmd = Command::new(&python);
        cmd.arg(&script)
            .arg(format!("http://127.0.0.1:{gw_port}/mcp"))
            .args(["--mode", mode])
            .args(["--server", "py=py__", "--kind", "python"])
            // A modern-only server reached by a legacy client: the gateway bridges.
            .args(["--server", "pyonly=pyonly__", "--kind", "python"])
            .args(["--server", "ev=ev__", "--kind", "everything"]);
        if mode == "modern" {
            // server-everything asks for roots on its own, outside any call: a
            // 2026-07-28 client can only be asked inside one, so there is no one
            // to ask. Its get-roots-list tool then reports that.
            cmd.args(["--skip", "ev:roots"]);
        }
        let out = cmd.output().expect("python runs");
        assert!(
            out.status.success(),
            "the Python SDK in {mode} mode failed through the gateway:\n{}",
            show(&out)
        );
    }
}

#[test]
fn task_ids_from_two_servers_are_kept_apart_and_unguessable() {
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    runtime.block_on(async {
        let (node, everything) = (node(), everything());
        let entry = |name: &str| {
            serde_json::json!({
                "command": node.display().to_string(),
                "args": [everything.display().to_string(), "stdio"],
                "isolation": "shared",
                "prefix": name,
            })
        };
        let gw = support::Gateway::serve(serde_json::json!({
            "servers": { "a": entry("a"), "b": entry("b") },
        }))
        .await;
        let client = support::Client::http(&gw.base, support::Options::default()).await;
        let caps = client.result("tools/list", serde_json::json!({})).await;
        assert!(caps["tools"].as_array().is_some_and(|t| !t.is_empty()));
        // The same kind of task on each server: servers may mint equal ids.
        let mut ids = Vec::new();
        for server in ["a", "b"] {
            let created = client
                .result(
                    "tools/call",
                    serde_json::json!({
                        "name": format!("{server}__simulate-research-query"),
                        "arguments": { "topic": "gateways" },
                        "task": { "ttl": 60000 },
                    }),
                )
                .await;
            let id = created["task"]["taskId"]
                .as_str()
                .unwrap_or_else(|| panic!("no task was created: {created}"))
                .to_owned();
            assert!(id.starts_with("tgt1."), "the server's own id leaked: {id}");
            ids.push(id);
        }
        assert_ne!(ids[0], ids[1]);
        for id in &ids {
            let got = client
                .result("tasks/get", serde_json::json!({ "taskId": id }))
                .await;
            assert_eq!(got["taskId"], *id, "tasks/get answers under the same id");
        }
        let listed = client.result("tasks/list", serde_json::json!({})).await;
        let listed: Vec<&str> = listed["tasks"]
            .as_array()
            .expect("tasks")
            .iter()
            .filter_map(|t| t["taskId"].as_str())
            .collect();
        for id in &ids {
            assert!(listed.contains(&id.as_str()), "{id} not in {listed:?}");
        }
        // A task finishes and its result comes back through the gateway.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got = client
                .result("tasks/get", serde_json::json!({ "taskId": ids[0] }))
                .await;
            if got["status"] == "completed" {
                break;
            }
            assert!(Instant::now() < deadline, "the task never completed: {got}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let done = client
            .result("tasks/result", serde_json::json!({ "taskId": ids[0] }))
            .await;
        assert!(done["content"].is_array(), "{done}");
        // Forged and made-up ids are unknown tasks, not another server's.
        let mut forged = ids[1].clone().into_bytes();
        let at = forged.len() - 3;
        forged[at] = if forged[at] == b'A' { b'B' } else { b'A' };
        for bad in [String::from_utf8(forged).expect("ascii"), "1".to_owned()] {
            let e = client
                .error("tasks/get", serde_json::json!({ "taskId": bad }))
                .await;
            assert_eq!(e["code"], -32602, "{e}");
            assert!(
                e["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("Unknown task"))
            );
        }
        let cancelled = client
            .request("tasks/cancel", serde_json::json!({ "taskId": ids[1] }))
            .await;
        // It reaches the server that owns it (which may say the task is already
        // finished, but never that it does not know it).
        let unknown = cancelled["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("Unknown task") || m.contains("not found"));
        assert!(
            !unknown,
            "tasks/cancel did not reach task's server: {cancelled}"
        );
    });
}
