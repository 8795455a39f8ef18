//! What toolgate's end-to-end tests share: the real binaries, upstream fixture servers, gateway
//! processes with a config, and (in `client`) an MCP test client for every downstream transport.
//!
//! Nothing here builds toolgate itself: the tests drive the binaries cargo built for them.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

pub mod client;
pub mod issuer;

pub use client::{Client, Options, Transport};

use serde_json::{Value, json};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;
use tokio::io::AsyncBufReadExt as _;

/// How long a gateway may take to start serving (servers are tried once first).
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The `toolgate` binary under test.
pub fn toolgate_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_toolgate"))
}

/// The `toolgate-fixture` binary, built next to `toolgate`.
///
/// It belongs to another package, and cargo only builds the binaries of the package under test
/// for its integration tests (building a dependency's binary needs the unstable "artifact
/// dependencies"). So the first test that needs it runs `cargo build -p toolgate-fixture` into the
/// same target directory and profile as the toolgate binary, once per test binary. Cargo itself
/// decides what is stale, so an edited fixture is always rebuilt and an unchanged one costs a
/// fraction of a second. Without cargo (tests run outside it), an existing binary is used as is.
pub fn fixture_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let profile_dir = toolgate_bin()
            .parent()
            .expect("the toolgate binary is in a profile directory");
        let bin = profile_dir.join(format!("toolgate-fixture{}", std::env::consts::EXE_SUFFIX));
        let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") | None => "dev".to_owned(),
            Some(other) => other.to_owned(),
        };
        let target_dir = profile_dir
            .parent()
            .expect("the profile directory is in a target directory");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let built = std::process::Command::new(cargo)
            .args(["build", "--quiet", "-p", "toolgate-fixture", "--bin"])
            .arg("toolgate-fixture")
            .arg("--profile")
            .arg(&profile)
            .arg("--target-dir")
            .arg(target_dir)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output();
        match built {
            Ok(out) if out.status.success() => {}
            Ok(out) => panic!(
                "cargo build -p toolgate-fixture failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) if bin.exists() => {
                eprintln!(
                    "cannot run cargo ({e}); using the existing {}",
                    bin.display()
                )
            }
            Err(e) => panic!("cannot run cargo to build toolgate-fixture: {e}"),
        }
        assert!(bin.exists(), "no fixture binary at {}", bin.display());
        bin
    })
}

/// A loopback port free right now, for peers that cannot report the port they bound.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Run `fut`, failing the test if it takes longer than `limit`: nothing may hang.
pub async fn within<T>(limit: Duration, what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, fut).await {
        Ok(t) => t,
        Err(_) => panic!("{what}: did not finish within {limit:?}"),
    }
}

/// A config entry for the fixture as a stdio server, with extra fixture arguments.
pub fn stdio_server(args: &[&str]) -> Value {
    let mut all: Vec<&str> = args.to_vec();
    all.push("stdio");
    json!({ "command": fixture_bin(), "args": all })
}

/// `toolgate keys create --config CONFIG ARGS…`: the new API key.
pub async fn api_key(config: &Path, args: &[&str]) -> String {
    let config = config.to_str().expect("a UTF-8 path");
    let mut all = vec!["keys", "create", "--config", config];
    all.extend_from_slice(args);
    let (code, out, err) = run_toolgate(&all, Duration::from_secs(30)).await;
    assert_eq!(code, Some(0), "keys create failed: {err}");
    let key = out.trim().to_owned();
    assert!(key.starts_with("tgk_"), "not a key: {out}");
    assert!(err.contains("cannot be shown again"), "{err}");
    key
}

/// A `policy` config entry that lets every authenticated caller do everything, for tests
/// about something else than policy (with `auth` and no policy, everything is denied).
pub fn allow_everyone() -> Value {
    static PATH: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    let path = PATH.get_or_init(|| {
        let path =
            std::env::temp_dir().join(format!("toolgate-allow-{}.cedar", std::process::id()));
        std::fs::write(
            &path,
            "@id(\"everyone\")\npermit (principal, action, resource);\n",
        )
        .expect("write the policy");
        path
    });
    json!({ "path": path })
}

/// A shared stdio fixture behind a shell that copies every line the gateway sends it to `log`,
/// so a test can tell exactly which requests reached the upstream.
pub fn logged_stdio_fixture(log: &Path) -> Value {
    let script = format!(
        "tee -a '{}' | exec '{}' stdio",
        log.display(),
        fixture_bin().display()
    );
    json!({ "command": "/bin/sh", "args": ["-c", script], "isolation": "shared" })
}

/// The `tools/call` requests a [`logged_stdio_fixture`] received.
pub fn upstream_calls(log: &Path) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|m| m["method"] == "tools/call")
        .collect()
}

/// The fixture serving HTTP (Streamable or legacy SSE) on a free port; killed when dropped.
pub struct FixtureServer {
    pub url: String,
    pub mode: &'static str,
    child: tokio::process::Child,
    // Kept open: the fixture's stdout must not become a broken pipe.
    _stdout: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl FixtureServer {
    /// `toolgate-fixture http`, Streamable HTTP at `/mcp`.
    pub async fn http(args: &[&str]) -> FixtureServer {
        FixtureServer::start("http", args).await
    }

    /// `toolgate-fixture sse`, the 2024-11-05 transport at `/sse`.
    pub async fn sse(args: &[&str]) -> FixtureServer {
        FixtureServer::start("sse", args).await
    }

    async fn start(mode: &'static str, args: &[&str]) -> FixtureServer {
        let mut child = tokio::process::Command::new(fixture_bin())
            .args(args)
            .args([mode, "--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start toolgate-fixture {mode}: {e}"));
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let first = within(
            START_TIMEOUT,
            "the fixture printing its URL",
            lines.next_line(),
        )
        .await;
        let line = first.ok().flatten().unwrap_or_default();
        let url = line
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("toolgate-fixture {mode}: unexpected first line {line:?}"))
            .to_owned();
        FixtureServer {
            url,
            mode,
            child,
            _stdout: lines,
        }
    }

    /// This server as a gateway config entry.
    pub fn entry(&self) -> Value {
        match self.mode {
            "sse" => json!({ "url": self.url, "transport": "sse" }),
            _ => json!({ "url": self.url }),
        }
    }
}

impl Drop for FixtureServer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// A config file in its own temporary directory.
pub struct ConfigFile {
    pub path: PathBuf,
    _dir: tempfile::TempDir,
}

impl ConfigFile {
    /// Write a config. JSON is valid YAML, but a `.json` file is also read as JSON.
    pub fn json(config: &Value) -> ConfigFile {
        ConfigFile::text("config.json", &config.to_string())
    }

    /// Replace the file's content with `config` (for reload tests).
    pub fn write(&self, config: &Value) {
        std::fs::write(&self.path, config.to_string()).expect("rewrite the config");
    }

    pub fn text(name: &str, text: &str) -> ConfigFile {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write the config");
        ConfigFile { path, _dir: dir }
    }
}

/// `toolgate ARGS…`, run to its end (bounded), with its exit code, stdout and stderr.
pub async fn run_toolgate(args: &[&str], limit: Duration) -> (Option<i32>, String, String) {
    let out = tokio::process::Command::new(toolgate_bin())
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = within(limit, &format!("toolgate {}", args.join(" ")), out)
        .await
        .expect("toolgate runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `toolgate serve` on a loopback port the system picked; killed when dropped (its stderr is
/// shown if the test failed).
pub struct Gateway {
    /// `http://127.0.0.1:PORT`
    pub base: String,
    pub config: ConfigFile,
    child: tokio::process::Child,
    stderr: tempfile::NamedTempFile,
}

impl Gateway {
    /// Start serving `config` on a port the system picks and wait until it serves.
    pub async fn serve(config: Value) -> Gateway {
        Gateway::serve_with_env(config, &[]).await
    }

    /// The same with extra environment variables for the gateway process.
    pub async fn serve_with_env(config: Value, env: &[(&str, &str)]) -> Gateway {
        let config = ConfigFile::json(&config);
        let stderr = tempfile::NamedTempFile::new().expect("a temp file");
        let mut child = tokio::process::Command::new(toolgate_bin())
            .args(["serve", "--log", "toolgate=debug,info", "--config"])
            .arg(&config.path)
            .args(["--listen", "127.0.0.1:0"])
            .envs(env.iter().copied())
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr.reopen().expect("reopen the stderr file"))
            .kill_on_drop(true)
            .spawn()
            .expect("toolgate serve starts");
        match wait_serving(&mut child, stderr.path()).await {
            Ok(base) => Gateway {
                base,
                config,
                child,
                stderr,
            },
            Err(log) => panic!("toolgate serve did not start:\n{}", client::tail(&log, 80)),
        }
    }

    /// Ask the gateway to stop, as an operator or an orchestrator would (SIGTERM).
    pub fn terminate(&self) {
        self.signal("TERM");
    }

    /// Send the gateway a signal (`HUP`, `TERM`, …).
    pub fn signal(&self, name: &str) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args([&format!("-{name}"), &pid.to_string()])
                .status();
        }
    }

    /// The gateway's exit status, waiting at most `limit`; `None` if it still runs.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        tokio::time::timeout(limit, self.child.wait())
            .await
            .ok()
            .and_then(Result::ok)
    }

    /// The admin listener's base URL, from the line `serve` logs before it serves MCP.
    pub fn admin_base(&self) -> String {
        let log = self.stderr();
        let rest = log
            .split("admin at ")
            .nth(1)
            .unwrap_or_else(|| panic!("serve did not announce the admin listener:\n{log}"));
        rest.split_whitespace()
            .next()
            .expect("an address follows")
            .to_owned()
    }

    /// What the gateway logged so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.stderr.path()).unwrap_or_default()
    }

    pub fn mcp_url(&self) -> String {
        format!("{}/mcp", self.base)
    }

    /// A client of this gateway over `transport` (stdio: `toolgate stdio` on the same config).
    pub async fn client(&self, transport: Transport, options: Options) -> Client {
        match transport {
            Transport::StreamableHttp => Client::http(&self.base, options).await,
            Transport::LegacySse => Client::sse(&self.base, options).await,
            Transport::Stdio => stdio_gateway_client(&self.config, options).await,
        }
    }

    /// The process id of `toolgate serve`.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("the gateway runs")
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Kill the process and wait until it has exited (its config directory
    /// goes with it).
    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = within(START_TIMEOUT, "toolgate serve exiting", self.child.wait()).await;
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        if std::thread::panicking() {
            eprintln!(
                "--- toolgate serve stderr ({}) ---\n{}",
                self.base,
                client::tail(&self.stderr(), 80)
            );
        }
    }
}

/// Wait for the line `serve` logs once every server was tried and it is about to serve, which
/// names the address it bound (the only way to learn the port it picked). Polls the log file: the
/// process offers nothing to wait on. Returns `http://127.0.0.1:PORT`, or the log on failure.
/// Wait until a `toolgate serve` child says where it serves (its base URL), or fails with what
/// it logged if it exits or does not serve in time.
pub async fn wait_serving(
    child: &mut tokio::process::Child,
    stderr: &Path,
) -> Result<String, String> {
    let log = || std::fs::read_to_string(stderr).unwrap_or_default();
    let deadline = tokio::time::Instant::now() + START_TIMEOUT;
    loop {
        let text = log();
        if let Some(base) = text
            .split("MCP at ")
            .nth(1)
            .and_then(|rest| rest.split_once("/mcp"))
            .map(|(base, _)| base.to_owned())
        {
            return Ok(base);
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("exited ({status})\n{}", log()));
        }
        if tokio::time::Instant::now() > deadline {
            let _ = child.start_kill();
            return Err(format!("not serving after {START_TIMEOUT:?}\n{text}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `toolgate stdio --config FILE`, as a client's child process.
pub async fn stdio_gateway_client(config: &ConfigFile, options: Options) -> Client {
    let config = config.path.to_string_lossy().into_owned();
    Client::stdio(
        toolgate_bin(),
        &["stdio", "--log", "toolgate=debug,info", "--config", &config],
        options,
    )
    .await
}

/// The fixture itself over stdio, without a gateway: what a server says before toolgate touches it.
pub async fn direct_fixture_client(args: &[&str]) -> Client {
    let mut all: Vec<&str> = args.to_vec();
    all.push("stdio");
    Client::stdio(fixture_bin(), &all, Options::default()).await
}

/// The text of the first content item of a tool result.
pub fn first_text(result: &Value) -> &str {
    result
        .pointer("/content/0/text")
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no text content in {result}"))
}

/// The names of listed items.
pub fn names(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|i| i["name"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// One raw HTTP request to a gateway's `/mcp`, for tests about the HTTP edge itself: the
/// headers a Streamable HTTP client sends, plus `extra`. Returns the status and the body.
pub async fn raw_mcp(
    base: &str,
    method: reqwest::Method,
    session: Option<&str>,
    extra: &[(&str, &str)],
    body: impl Into<reqwest::Body>,
) -> (u16, String) {
    let mut req = reqwest::Client::new()
        .request(method, format!("{base}/mcp"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(body);
    if let Some(s) = session {
        req = req.header("mcp-session-id", s);
    }
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let resp = within(client::REQUEST_TIMEOUT, "a raw HTTP request", req.send())
        .await
        .expect("the gateway answers");
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

/// A JSON-RPC `initialize` request body.
pub fn initialize_body() -> String {
    json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": { "name": "toolgate-e2e", "version": "0" },
        },
    })
    .to_string()
}

/// Start a `sleep` call (the fixture's tool, under `tool`) with a progress token and wait until
/// it runs upstream (its first progress notification), so what follows cannot overtake it.
/// Returns when it was sent, and its answer to come.
pub async fn start_sleeping(
    client: &Client,
    tool: &str,
    ms: u64,
) -> (std::time::Instant, tokio::sync::oneshot::Receiver<Value>) {
    let token = format!("sleeping-in-{tool}");
    let started = std::time::Instant::now();
    let (_, rx) = client.start_request(
        "tools/call",
        json!({ "name": tool, "arguments": { "ms": ms }, "_meta": { "progressToken": token } }),
    );
    client
        .wait_notification(&format!("progress for {token}"), |n| {
            n["method"] == "notifications/progress" && n["params"]["progressToken"] == token
        })
        .await;
    (started, rx)
}

/// Call a tool until it succeeds (a server coming back), for at most 40 s; its result.
pub async fn until_it_answers(client: &Client, tool: &str, arguments: Value) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    loop {
        let resp = client
            .request(
                "tools/call",
                json!({ "name": tool, "arguments": arguments }),
            )
            .await;
        if let Some(result) = resp.get("result") {
            return result.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{tool} did not come back: {resp}"
        );
        // Polling for a restart: nothing tells a client that the server is back.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
