//! CI smoke test of the benchmark: `toolgate-bench --quick` runs every measurement at tiny scale
//! against the binaries of this build, completes without an error, prints the results table and
//! writes its three outputs. Timings are never asserted: CI machines are noisy, and the budget is
//! judged by the full run (`bench/run`), not here.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The quick run must finish well within this, debug binaries included.
const LIMIT: Duration = Duration::from_secs(90);

fn bench_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_toolgate-bench"))
}

fn echo_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_bench-echo"))
}

/// The `toolgate` binary, built next to this package's binaries.
///
/// It belongs to another package, and cargo builds only the binaries of the package under test
/// for its integration tests, so this runs `cargo build -p toolgate` into the same target
/// directory and profile. Cargo decides what is stale: an unchanged gateway costs a fraction of
/// a second. Without cargo (tests run outside it), an existing binary is used as is.
fn toolgate_bin() -> PathBuf {
    let profile_dir = bench_bin()
        .parent()
        .expect("the benchmark binary is in a profile directory");
    let bin = profile_dir.join(format!("toolgate{}", std::env::consts::EXE_SUFFIX));
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => "dev".to_owned(),
        Some(other) => other.to_owned(),
    };
    let target_dir = profile_dir
        .parent()
        .expect("the profile directory is in a target directory");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let built = Command::new(cargo)
        .args(["build", "--quiet", "-p", "toolgate", "--bin", "toolgate"])
        .arg("--profile")
        .arg(&profile)
        .arg("--target-dir")
        .arg(target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output();
    match built {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "cargo build -p toolgate failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) if bin.exists() => eprintln!(
            "cannot run cargo ({e}); using the existing {}",
            bin.display()
        ),
        Err(e) => panic!("cannot run cargo to build toolgate: {e}"),
    }
    assert!(bin.exists(), "no toolgate binary at {}", bin.display());
    bin
}

/// Run the benchmark with `args`; fails the test if it takes longer than `limit`.
fn run_bench(args: &[&str], limit: Duration) -> Output {
    // One measuring run at a time: two would pin to the same CPUs and disturb each other.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let child = Command::new(bench_bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("toolgate-bench starts");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.expect("toolgate-bench runs"),
        Err(_) => {
            // The processes it started die with it (PR_SET_PDEATHSIG).
            // SAFETY: kill(2) on the pid of a child this test started and has not reaped.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
            }
            panic!(
                "toolgate-bench {} did not finish within {limit:?}",
                args.join(" ")
            );
        }
    }
}

#[test]
fn quick_run_completes_and_writes_the_results() {
    let toolgate = toolgate_bin();
    let out_dir = tempfile::tempdir().expect("a temp dir");
    let started = Instant::now();
    let out = run_bench(
        &[
            "--quick",
            "--toolgate",
            toolgate.to_str().expect("a UTF-8 path"),
            "--echo",
            echo_bin().to_str().expect("a UTF-8 path"),
            "--out",
            out_dir.path().to_str().expect("a UTF-8 path"),
        ],
        LIMIT,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "toolgate-bench --quick failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    eprintln!(
        "toolgate-bench --quick took {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // The table on stdout, with every measurement and the targets.
    for heading in [
        "## 1. Added latency of tools/call at fixed rates",
        "## 2. Throughput at saturation",
        "## 3. Full stack",
        "## 4. tools/list over 5 upstreams",
        "## 5a. Sessions: memory",
        "## 6. stdio upstreams",
        "## 7. Startup to ready",
        "## 8. Head-of-line isolation",
        "## Targets",
    ] {
        assert!(stdout.contains(heading), "no {heading:?} in:\n{stdout}");
    }
    assert!(
        stdout.contains("| rate | path | p50 | p99 |"),
        "no latency table:\n{stdout}"
    );
    assert!(
        !stdout.contains("FAILED"),
        "a measurement failed:\n{stdout}"
    );

    // The three files.
    let md = std::fs::read_to_string(out_dir.path().join("results.md")).expect("results.md");
    assert!(
        md.contains("## Targets"),
        "results.md has no targets:\n{md}"
    );
    let json: serde_json::Value = serde_json::from_slice(
        &std::fs::read(out_dir.path().join("results.json")).expect("results.json"),
    )
    .expect("results.json is JSON");
    assert_eq!(json["mode"], "quick");
    assert!(
        json["targets"].as_array().is_some_and(|t| !t.is_empty()),
        "results.json has no targets: {json}"
    );
    let svg = std::fs::read_to_string(out_dir.path().join("latency.svg")).expect("latency.svg");
    assert!(
        svg.starts_with("<svg") && svg.contains("<polyline"),
        "latency.svg has no curves"
    );
}

/// The full stack (authentication, policy, the audit trail in SQLite, metrics) runs the calls and
/// the lists.
#[test]
fn full_stack_runs_calls_and_lists() {
    let out_dir = tempfile::tempdir().expect("a temp dir");
    let out = run_bench(
        &[
            "--quick",
            "--stack",
            "full",
            "--only",
            "latency,lists",
            "--out",
            out_dir.path().to_str().expect("a UTF-8 path"),
        ],
        LIMIT,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json = std::fs::read_to_string(out_dir.path().join("results.json")).expect("results.json");
    assert!(json.contains("the audit trail"), "{json}");
    let results: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    let stack = results["sections"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["data"]["stack"].is_string()))
        .map(|s| s["data"].clone());
    assert_eq!(
        stack,
        Some(serde_json::json!({ "stack": "full", "audit_and_metrics": true })),
        "{json}"
    );
}

/// The policy stack (JWT authentication, 100 Cedar policies) runs the calls and the lists: every
/// call is authenticated and allowed, every list complete, or the run fails.
#[test]
fn policy_stack_runs_calls_and_lists() {
    let out_dir = tempfile::tempdir().expect("a temp dir");
    let out = run_bench(
        &[
            "--quick",
            "--stack",
            "policy",
            "--only",
            "latency,lists",
            "--out",
            out_dir.path().to_str().expect("a UTF-8 path"),
        ],
        LIMIT,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json = std::fs::read_to_string(out_dir.path().join("results.json")).expect("results.json");
    let results: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    assert!(json.contains("100 Cedar policies"), "{json}");
    assert_eq!(results["mode"], "quick");
}
