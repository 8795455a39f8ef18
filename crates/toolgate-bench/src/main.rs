//! toolgate-bench: measures what toolgate adds — latency, CPU, memory — against a baseline taken
//! in the same run, checks the performance budget, and writes the results.
//!
//! It starts everything it measures: `bench-echo` upstreams (HTTP and stdio) and `toolgate
//! serve` gateways with generated configs, pins them to CPUs, drives them with an MCP client,
//! and writes `results.md`, `results.json` and `latency.svg`. Each measurement lives in
//! `measure/`; `bench/README.md` says what each one means.

mod load;
mod mcp;
mod measure;
mod plot;
mod procs;
mod report;
mod stack;

use anyhow::Context as _;
use clap::Parser;
use procs::{Bins, Layout, Purpose};
use report::Report;
use serde_json::{Value, json};
use stack::Stack;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(
    name = "toolgate-bench",
    version,
    about = "Measure what toolgate adds (latency, CPU, memory) against a baseline taken in the same run"
)]
struct Cli {
    /// A smoke run: every measurement at tiny scale, well under a minute; timings are reported
    /// but not judged, and any error fails the run.
    #[arg(long)]
    quick: bool,
    /// The gateway features to measure: `current` (no authentication, no policy), `policy` (JWT
    /// authentication and 100 Cedar policies), `full` (plus the audit trail in SQLite, metrics
    /// and tracing).
    #[arg(long, value_enum, default_value = "current")]
    stack: Stack,
    /// Where results.md, results.json and latency.svg go.
    #[arg(long, default_value = "bench/out")]
    out: PathBuf,
    /// The toolgate binary (default: next to this one).
    #[arg(long)]
    toolgate: Option<PathBuf>,
    /// The bench-echo binary (default: next to this one).
    #[arg(long)]
    echo: Option<PathBuf>,
    /// How to pin the load generator, the gateway and the upstreams to CPUs.
    #[arg(long, value_enum, default_value = "auto")]
    pin: procs::Pin,
    /// Run only these measurements (comma-separated): latency, saturation, lists, sessions,
    /// stdio, startup, isolation.
    #[arg(long, value_delimiter = ',')]
    only: Vec<measure::Kind>,
    /// Exit with status 1 if a target is missed.
    #[arg(long)]
    strict: bool,
}

/// How big each measurement is.
#[derive(Clone)]
pub struct Scale {
    /// Offered rates of the fixed-rate latency runs, calls/s.
    pub rates: Vec<f64>,
    pub warmup: Duration,
    pub measure: Duration,
    /// Callers of the saturation runs.
    pub concurrency: usize,
    pub saturation: Duration,
    /// Client sessions the load is spread over.
    pub load_sessions: usize,
    /// Session counts at which the gateway's memory is read.
    pub session_steps: Vec<usize>,
    /// tools/list: repeated calls, and fresh gateways for the first call.
    pub list_repeats: usize,
    pub list_gateways: usize,
    /// stdio: per-session children started.
    pub children: usize,
    /// startup: upstreams behind the gateway, and how many times to start it.
    pub startup_upstreams: usize,
    pub startup_repeats: usize,
    /// Head-of-line: fast calls/s, slow calls/s.
    pub fast_rate: f64,
    pub slow_rate: f64,
    /// How many times a point disturbed by other processes is measured again.
    pub retries: usize,
}

impl Scale {
    fn full() -> Scale {
        Scale {
            rates: vec![500.0, 2000.0, 5000.0],
            warmup: Duration::from_secs(2),
            measure: Duration::from_secs(10),
            concurrency: 32,
            saturation: Duration::from_secs(8),
            load_sessions: 4,
            session_steps: vec![1000, 2000, 5000, 10_000],
            list_repeats: 500,
            list_gateways: 5,
            children: 10,
            startup_upstreams: 20,
            startup_repeats: 5,
            fast_rate: 2000.0,
            slow_rate: 50.0,
            retries: 2,
        }
    }

    fn quick() -> Scale {
        Scale {
            // A smoke run also drives debug builds with the full stack on a busy
            // machine: the rates the targets name, and no more calls than needed.
            rates: vec![500.0, 2000.0],
            warmup: Duration::from_millis(100),
            measure: Duration::from_millis(300),
            concurrency: 8,
            saturation: Duration::from_millis(300),
            load_sessions: 2,
            session_steps: vec![100, 200],
            list_repeats: 10,
            list_gateways: 1,
            children: 2,
            startup_upstreams: 5,
            startup_repeats: 1,
            fast_rate: 500.0,
            slow_rate: 20.0,
            // Timings are not judged in a quick run: a disturbed point is kept as it is.
            retries: 0,
        }
    }
}

/// Everything a measurement needs to start processes and clients.
#[derive(Clone)]
pub struct Rig {
    pub bins: Bins,
    /// Where this measurement's processes run.
    pub layout: Layout,
    pin: procs::Pin,
    cpus: Vec<usize>,
    pub stack: Stack,
    pub scale: Scale,
    /// The `text` argument of every measured `tools/call`: 1 KiB, echoed back as the result.
    pub text: String,
}

impl Rig {
    /// The same rig with its processes placed for `purpose`.
    pub fn for_purpose(&self, purpose: Purpose) -> Rig {
        Rig {
            layout: Layout::plan(self.pin, purpose, &self.cpus),
            ..self.clone()
        }
    }

    /// A fresh HTTP client (its own connection pool) with the stack's headers.
    pub fn client(&self) -> anyhow::Result<reqwest::Client> {
        mcp::http_client(&self.stack.client_headers()?)
    }

    /// A `bench-echo http` upstream on the upstreams' CPU.
    pub async fn echo(&self, tools: usize, delay_ms: u64) -> anyhow::Result<procs::Echo> {
        procs::Echo::start(&self.bins.echo, self.layout.upstream, tools, delay_ms).await
    }

    /// `bench-echo stdio`, started by the benchmark itself (the stdio baseline).
    pub async fn stdio_peer(&self) -> anyhow::Result<mcp::StdioPeer> {
        mcp::StdioPeer::start(&self.bins.echo, self.layout.upstream).await
    }

    /// A gateway config entry for an HTTP upstream.
    pub fn http_entry(&self, url: &str, isolation: &str) -> Value {
        json!({ "url": url, "isolation": isolation, "failure": "closed" })
    }

    /// A gateway config entry for a stdio upstream the gateway starts (on the upstreams' CPU).
    pub fn stdio_entry(&self, isolation: &str, tools: usize) -> Value {
        let mut args = vec!["--tools".to_owned(), tools.to_string()];
        if let Some(cpu) = self.layout.upstream {
            args.extend(["--cpu".to_owned(), cpu.to_string()]);
        }
        args.push("stdio".to_owned());
        json!({
            "command": self.bins.echo,
            "args": args,
            "isolation": isolation,
            "failure": "closed",
        })
    }

    /// `toolgate serve` with these servers, on the gateway's CPU.
    pub async fn gateway(&self, servers: Value) -> anyhow::Result<procs::Gateway> {
        let mut config = json!({ "servers": servers });
        self.stack.apply(&mut config)?;
        procs::Gateway::start(&self.bins.toolgate, self.layout.gateway, &config).await
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = cli.stack.check() {
        println!("--stack {}: {e}", cli.stack.name());
        return ExitCode::from(2);
    }
    let fds = procs::raise_fd_limit();
    let cpus = procs::allowed_cpus();
    let layout = Layout::plan(cli.pin, Purpose::Latency, &cpus);
    if let Some(cpu) = layout.harness
        && let Err(e) = procs::pin_current_thread(cpu)
    {
        eprintln!("error: cannot pin the load generator to CPU {cpu}: {e}");
        return ExitCode::FAILURE;
    }
    // Built after pinning, so every worker thread inherits the CPU.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let strict = cli.strict;
    let result = runtime.block_on(run(cli, cpus, fds));
    runtime.shutdown_timeout(Duration::from_secs(2));
    match result {
        Ok((report, failed)) => {
            if failed > 0 {
                eprintln!("error: {failed} measurement(s) failed (see above)");
                ExitCode::FAILURE
            } else if strict && report.misses() > 0 {
                eprintln!("{} target(s) missed", report.misses());
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe().context("cannot find this program's path")?;
    let dir = me.parent().context("this program is in no directory")?;
    Ok(dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX)))
}

async fn run(cli: Cli, cpus: Vec<usize>, fds: (u64, u64)) -> anyhow::Result<(Report, usize)> {
    let bins = Bins {
        toolgate: match cli.toolgate {
            Some(p) => p,
            None => sibling("toolgate")?,
        },
        echo: match cli.echo {
            Some(p) => p,
            None => sibling("bench-echo")?,
        },
    };
    for bin in [&bins.toolgate, &bins.echo] {
        anyhow::ensure!(
            bin.exists(),
            "no binary at {} (build with `cargo build --release -p toolgate -p toolgate-bench`)",
            bin.display()
        );
    }
    let rig = Rig {
        bins,
        layout: Layout::plan(cli.pin, Purpose::Latency, &cpus),
        pin: cli.pin,
        cpus,
        stack: cli.stack,
        scale: if cli.quick {
            Scale::quick()
        } else {
            Scale::full()
        },
        text: "x".repeat(1024),
    };
    let mut report = Report::new(cli.quick);
    describe_setup(&mut report, &rig, fds).await;
    println!(
        "toolgate-bench: {} run; {}",
        if cli.quick { "quick" } else { "full" },
        pinning(&rig)
    );
    let started = Instant::now();
    let (failed, plot) = measure::run_all(&rig, &mut report, &cli.only).await;
    report.fact(
        "run time",
        format!("{:.0} s", started.elapsed().as_secs_f64()),
    );
    let markdown = report.markdown();
    println!("\n{markdown}");
    write_outputs(&cli.out, &report, &markdown, plot.as_deref())?;
    println!(
        "wrote {}",
        ["results.md", "results.json", "latency.svg"]
            .iter()
            .map(|f| cli.out.join(f).display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok((report, failed))
}

async fn describe_setup(report: &mut Report, rig: &Rig, fds: (u64, u64)) {
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")?
                    .split_once(':')
                    .map(|x| x.1.trim().to_owned())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    report.fact(
        "machine",
        format!(
            "{} CPUs usable ({cpu_model}), Linux {}",
            rig.layout.cpus,
            kernel.trim()
        ),
    );
    report.fact("pinning", pinning(rig));
    let busy = procs::machine_busy(Duration::from_secs(1)).await;
    report.fact(
        "background load",
        format!(
            "{:.0}% of the machine's CPU was busy in the second before the run started (other processes, not this benchmark){}",
            busy * 100.0,
            if busy > 0.05 { " — results are disturbed by it" } else { "" }
        ),
    );
    report.fact(
        "open files limit",
        format!("{} (raised from {})", fds.1, fds.0),
    );
    let version = tokio::process::Command::new(&rig.bins.toolgate)
        .arg("--version")
        .output()
        .await
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    report.fact(
        "gateway",
        format!("{} ({})", version, profile_of(&rig.bins.toolgate)),
    );
    report.fact(
        "stack",
        match rig.stack {
            Stack::Current => "current: no authentication, no policy, no audit trail (`--stack policy` adds JWT authentication and 100 Cedar policies, `--stack full` the trail and metrics)".to_owned(),
            Stack::Policy => "policy: every call authenticated with an ES256 JWT (JWKS, issuer, audience, expiry, scope) and decided by 100 Cedar policies; lists filtered per caller; no audit trail".to_owned(),
            Stack::Full => "full: the policy stack plus the audit trail (each call answered once its event is in the audit journal; the SQLite store filled from it every second), Prometheus metrics, and tracing (every request's spans exported over OTLP/HTTP)".to_owned(),
        },
    );
    report.fact(
        "call",
        "tools/call `echo` with a 1 KiB text argument, answered with the same 1 KiB as text content",
    );
}

fn pinning(rig: &Rig) -> String {
    let latency = rig.for_purpose(Purpose::Latency).layout.describe();
    let throughput = rig.for_purpose(Purpose::Throughput).layout.describe();
    if latency == throughput {
        latency
    } else {
        format!("latency measurements: {latency}; throughput and CPU measurements: {throughput}")
    }
}

/// `release` or `debug`, from where the binary lives.
fn profile_of(bin: &Path) -> String {
    bin.parent()
        .and_then(|d| d.file_name())
        .and_then(|n| n.to_str())
        .unwrap_or("unknown build")
        .to_owned()
}

fn write_outputs(
    dir: &Path,
    report: &Report,
    markdown: &str,
    plot: Option<&str>,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(dir.join("results.md"), markdown)?;
    std::fs::write(
        dir.join("results.json"),
        serde_json::to_string_pretty(&report.json())?,
    )?;
    let svg = plot
        .map(str::to_owned)
        .unwrap_or_else(|| plot::svg("latency: not measured in this run (--only)", &[]));
    std::fs::write(dir.join("latency.svg"), svg)?;
    Ok(())
}
