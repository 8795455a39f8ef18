//! The measurements, one file each, in the order of the issue: added latency at fixed rates,
//! throughput at saturation, (which stack: section 3), tools/list over many
//! upstreams, sessions, stdio upstreams, startup, and head-of-line isolation.
//!
//! Each one starts its own processes, takes its baseline in the same run, adds one or more
//! tables to the report and judges its targets. The targets are named here, so a run that skips
//! a measurement still lists what it did not judge.

mod isolation;
mod latency;
mod lists;
mod saturation;
mod sessions;
mod startup;
mod stdio;

use crate::Rig;
use crate::mcp::Session;
use crate::procs::{Interference, Purpose};
use crate::report::{Report, Section};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    Latency,
    Saturation,
    Lists,
    Sessions,
    Stdio,
    Startup,
    Isolation,
}

const ALL: [Kind; 7] = [
    Kind::Latency,
    Kind::Saturation,
    Kind::Lists,
    Kind::Sessions,
    Kind::Stdio,
    Kind::Startup,
    Kind::Isolation,
];

/// A target of the performance budget: its name and limit as the report prints them.
pub struct TargetDef {
    pub name: &'static str,
    pub limit: &'static str,
}

pub const ADDED_P99: TargetDef = TargetDef {
    name: "added p99 of tools/call at 2,000 calls/s",
    limit: "≤ 1 ms (the budget is for `--stack full`; judged on the stack of the run)",
};
pub const ADDED_P50: TargetDef = TargetDef {
    name: "added p50 of tools/call at 2,000 calls/s",
    limit: "≤ 100 µs",
};
pub const CPU_PER_CALL: TargetDef = TargetDef {
    name: "gateway CPU per call",
    limit: "≤ 40 µs",
};
pub const THROUGHPUT: TargetDef = TargetDef {
    name: "throughput at saturation vs direct",
    limit: "≥ 0.5×",
};
pub const IDLE_RSS: TargetDef = TargetDef {
    name: "gateway RSS, idle",
    limit: "≤ 30 MB",
};
pub const SESSION_MEMORY: TargetDef = TargetDef {
    name: "memory per idle legacy session",
    limit: "≤ 10 KB",
};
pub const MANY_SESSIONS: TargetDef = TargetDef {
    name: "10,000 concurrent sessions",
    limit: "all open and answer, no errors",
};
pub const NO_CLIFF: TargetDef = TargetDef {
    name: "no latency cliff with a slow second upstream",
    limit: "fast-call p99 ≤ 2× (or + 1 ms) its p99 without the slow calls",
};

/// Which targets each measurement judges (for the "not measured" rows of a partial run).
fn targets_of(kind: Kind) -> Vec<(&'static TargetDef, &'static str)> {
    match kind {
        Kind::Latency => vec![
            (&ADDED_P99, "per_session"),
            (&ADDED_P99, "shared"),
            (&ADDED_P50, "per_session"),
            (&ADDED_P50, "shared"),
            (&CPU_PER_CALL, "per_session, 2,000 calls/s"),
            (&CPU_PER_CALL, "shared, 2,000 calls/s"),
        ],
        Kind::Saturation => vec![
            (&CPU_PER_CALL, "per_session, saturation"),
            (&CPU_PER_CALL, "shared, saturation"),
            (&THROUGHPUT, "per_session"),
            (&THROUGHPUT, "shared"),
        ],
        Kind::Sessions => vec![(&IDLE_RSS, ""), (&SESSION_MEMORY, ""), (&MANY_SESSIONS, "")],
        Kind::Isolation => vec![(&NO_CLIFF, "")],
        Kind::Lists | Kind::Stdio | Kind::Startup => vec![],
    }
}

/// A target's name with the configuration it was measured on.
pub fn target_name(def: &TargetDef, variant: &str) -> String {
    if variant.is_empty() {
        def.name.to_owned()
    } else {
        format!("{} ({variant})", def.name)
    }
}

pub fn judge(report: &mut Report, def: &TargetDef, variant: &str, measured: String, met: bool) {
    report.target(&target_name(def, variant), def.limit, measured, met);
}

/// `judge`, flagging the verdict when other processes disturbed the measurement behind it.
pub fn judge_measured(
    report: &mut Report,
    def: &TargetDef,
    variant: &str,
    measured: String,
    met: bool,
    during: &[&Interference],
) {
    judge(report, def, variant, measured, met);
    let worst = during
        .iter()
        .max_by(|a, b| (a.others + a.steal).total_cmp(&(b.others + b.steal)));
    if let (Some(t), Some(w)) = (report.targets.last_mut(), worst)
        && w.disturbing()
    {
        t.disturbed = Some(w.describe());
    }
}

/// Run the selected measurements (all if `only` is empty). Returns how many failed, and the
/// latency plot if the latency measurement ran.
pub async fn run_all(rig: &Rig, report: &mut Report, only: &[Kind]) -> (usize, Option<String>) {
    let mut failed = 0;
    let mut plot = None;
    for kind in ALL {
        if kind == Kind::Lists {
            // Section 3 of the issue, in its place in the order.
            let note = match rig.stack {
                crate::stack::Stack::Full => "This run has the full stack (`--stack full`): JWT authentication, 100 Cedar policies, the audit trail (each call answered once its event is in the audit journal; the SQLite store filled from it every second), metrics and tracing (spans exported over OTLP) on every call and list; every measurement above and below includes them.".to_owned(),
                crate::stack::Stack::Policy => "This run has JWT authentication and 100 Cedar policies on every call and list (`--stack policy`), without the audit trail: every measurement above and below includes them. `--stack full` adds the trail and metrics.".to_owned(),
                crate::stack::Stack::Current => "This run is `--stack current` (no authentication, policy or audit). `--stack policy` adds JWT authentication and 100 Cedar policies, `--stack full` also the audit trail and metrics.".to_owned(),
            };
            let mut s = Section::new(
                "3. Full stack: authentication, Cedar policy, audit, metrics",
                note,
                &[],
            );
            s.data = json!({
                "stack": rig.stack.name(),
                "audit_and_metrics": rig.stack == crate::stack::Stack::Full,
            });
            report.sections.push(s);
        }
        if !only.is_empty() && !only.contains(&kind) {
            for (def, variant) in targets_of(kind) {
                report.not_measured(&target_name(def, variant), def.limit, "not run (--only)");
            }
            continue;
        }
        eprintln!("measuring {kind:?} …");
        let began = Instant::now();
        let purpose = match kind {
            Kind::Saturation | Kind::Stdio => Purpose::Throughput,
            _ => Purpose::Latency,
        };
        let rig = &rig.for_purpose(purpose);
        let first_section = report.sections.len();
        let outcome = match kind {
            Kind::Latency => latency::run(rig, report).await.map(|svg| plot = Some(svg)),
            Kind::Saturation => saturation::run(rig, report).await,
            Kind::Lists => lists::run(rig, report).await,
            Kind::Sessions => sessions::run(rig, report).await,
            Kind::Stdio => stdio::run(rig, report).await,
            Kind::Startup => startup::run(rig, report).await,
            Kind::Isolation => isolation::run(rig, report).await,
        };
        for s in &mut report.sections[first_section..] {
            s.how
                .push_str(&format!(" Pinning: {}.", rig.layout.describe()));
        }
        eprintln!("  {kind:?} done in {:.1} s", began.elapsed().as_secs_f64());
        if let Err(e) = outcome {
            failed += 1;
            eprintln!("error: {kind:?} failed: {e:#}");
            let mut s = Section::new(
                format!("{kind:?}: FAILED"),
                format!("The measurement failed: {e:#}"),
                &[],
            );
            s.data = json!({ "error": format!("{e:#}") });
            report.sections.push(s);
            for (def, variant) in targets_of(kind) {
                report.not_measured(
                    &target_name(def, variant),
                    def.limit,
                    "the measurement failed",
                );
            }
        }
    }
    (failed, plot)
}

/// Open `n` sessions, `concurrency` at a time over the client's connection pool; returns them
/// and how long each took to open (initialize + notifications/initialized).
pub async fn open_sessions(
    client: &reqwest::Client,
    url: &str,
    n: usize,
    concurrency: usize,
) -> anyhow::Result<(Vec<Session>, Vec<Duration>)> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (client, url, next) = (client.clone(), url.to_owned(), next.clone());
        workers.spawn(async move {
            let mut opened = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < n {
                let t = Instant::now();
                let s = Session::open(&client, &url).await?;
                opened.push((s, t.elapsed()));
            }
            anyhow::Ok(opened)
        });
    }
    let mut sessions = Vec::with_capacity(n);
    let mut times = Vec::with_capacity(n);
    while let Some(done) = workers.join_next().await {
        for (s, t) in done?? {
            sessions.push(s);
            times.push(t);
        }
    }
    Ok((sessions, times))
}

/// One `tools/call` whose answer is checked in full: the text must come back unchanged.
pub async fn verify_echo(session: &Session, tool: &str, text: &str) -> anyhow::Result<()> {
    let result = session
        .request(
            "tools/call",
            json!({ "name": tool, "arguments": { "text": text } }),
        )
        .await?;
    let got = result
        .pointer("/content/0/text")
        .and_then(Value::as_str)
        .unwrap_or("");
    anyhow::ensure!(
        got == text,
        "{tool} did not echo its argument: {}",
        result.to_string().chars().take(200).collect::<String>()
    );
    Ok(())
}

pub fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

/// The value at quantile `q` of some durations.
pub fn quantile(mut v: Vec<Duration>, q: f64) -> Duration {
    v.sort();
    if v.is_empty() {
        return Duration::ZERO;
    }
    let i = ((v.len() as f64 - 1.0) * q).round() as usize;
    v[i.min(v.len() - 1)]
}
