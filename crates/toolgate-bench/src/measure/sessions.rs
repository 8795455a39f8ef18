//! Measurement 5, sessions: the gateway's resident memory idle and with 1,000 … 10,000 idle legacy sessions
//! open at once, the time to open one, and that all of them stay usable. The baseline is
//! bench-echo holding the same sessions (what a minimal server pays for one).
//!
//! Sessions are ids, not connections: they are opened over a small pool of keep-alive
//! connections, so the fd limit is never what is tested.

use super::{IDLE_RSS, MANY_SESSIONS, SESSION_MEMORY, judge, open_sessions, quantile};
use crate::Rig;
use crate::mcp::Session;
use crate::procs::rss_kib;
use crate::report::{Report, Section, dur, ratio, us};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Concurrent openers (and so at most this many connections).
const OPENERS: usize = 16;
/// Let freed memory settle before reading RSS.
const SETTLE: Duration = Duration::from_millis(300);

struct Growth {
    idle_kib: u64,
    /// (sessions open, RSS KiB)
    steps: Vec<(usize, u64)>,
    /// Open time of sessions opened one at a time.
    open_times: Vec<Duration>,
    opened_per_s: f64,
    sessions: Vec<Session>,
}

async fn grow(
    client: &reqwest::Client,
    url: &str,
    pid: u32,
    steps: &[usize],
) -> anyhow::Result<Growth> {
    tokio::time::sleep(SETTLE).await;
    let idle_kib = rss_kib(pid)?;
    let mut sessions: Vec<Session> = Vec::new();
    let mut open_times = Vec::new();
    let mut rss = Vec::new();
    let mut concurrent_time = Duration::ZERO;
    let mut concurrent_n = 0;
    for &target in steps {
        let want = target.saturating_sub(sessions.len());
        // The first thousand one at a time, for a clean open latency; the rest in parallel.
        let sequential = want.min(1000usize.saturating_sub(sessions.len()));
        let (s, times) = open_sessions(client, url, sequential, 1).await?;
        sessions.extend(s);
        open_times.extend(times);
        let t = std::time::Instant::now();
        let (s, _) = open_sessions(client, url, want - sequential, OPENERS).await?;
        concurrent_time += t.elapsed();
        concurrent_n += s.len();
        sessions.extend(s);
        tokio::time::sleep(SETTLE).await;
        rss.push((sessions.len(), rss_kib(pid)?));
    }
    let sequential_time: Duration = open_times.iter().sum();
    let opened_per_s = (open_times.len() + concurrent_n) as f64
        / (sequential_time + concurrent_time).as_secs_f64().max(1e-9);
    Ok(Growth {
        idle_kib,
        steps: rss,
        open_times,
        opened_per_s,
        sessions,
    })
}

/// Ping every session, `OPENERS` at a time; returns (answered, failed, first error).
async fn ping_all(sessions: &[Session]) -> (usize, usize, Option<String>) {
    let sessions: Arc<Vec<Session>> = Arc::new(sessions.to_vec());
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..OPENERS {
        let (sessions, next) = (sessions.clone(), next.clone());
        workers.spawn(async move {
            let (mut ok, mut failed, mut first) = (0, 0, None);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(s) = sessions.get(i) else { break };
                match s.request("ping", json!({})).await {
                    Ok(_) => ok += 1,
                    Err(e) => {
                        failed += 1;
                        first.get_or_insert_with(|| format!("{e:#}"));
                    }
                }
            }
            (ok, failed, first)
        });
    }
    let (mut ok, mut failed, mut first) = (0, 0, None);
    while let Some(Ok((o, f, e))) = workers.join_next().await {
        ok += o;
        failed += f;
        if first.is_none() {
            first = e;
        }
    }
    (ok, failed, first)
}

fn per_session_kib(g: &Growth, at: usize, rss: u64) -> f64 {
    rss.saturating_sub(g.idle_kib) as f64 / at.max(1) as f64
}

pub async fn run(rig: &Rig, report: &mut Report) -> anyhow::Result<()> {
    let steps = &rig.scale.session_steps;
    let echo = rig.echo(1, 0).await?;
    let gw = rig
        .gateway(json!({ "echo": rig.http_entry(&echo.url, "per_session") }))
        .await?;
    let baseline_echo = rig.echo(1, 0).await?;
    let client = rig.client()?;

    let through = grow(&client, &gw.url, gw.pid, steps).await?;
    let (answered, failed, first_error) = ping_all(&through.sessions).await;
    let direct = grow(&client, &baseline_echo.url, baseline_echo.pid, steps).await?;

    let mut memory = Section::new(
        "5a. Sessions: memory",
        format!(
            "Resident memory (VmRSS) of the gateway (default isolation, one HTTP upstream) idle and with N idle legacy sessions open at once (initialize + notifications/initialized, no calls), over at most {OPENERS} keep-alive connections. Baseline: bench-echo holding the same number of sessions. Per session = (RSS − idle RSS) ÷ N."
        ),
        &[
            "sessions",
            "gateway RSS",
            "gateway per session",
            "bench-echo RSS (baseline)",
            "baseline per session",
            "ratio",
        ],
    );
    memory.row(vec![
        "0 (idle)".into(),
        mib(through.idle_kib),
        "—".into(),
        mib(direct.idle_kib),
        "—".into(),
        ratio(through.idle_kib as f64, direct.idle_kib as f64),
    ]);
    let mut data_steps = Vec::new();
    for ((n, gw_kib), (_, base_kib)) in through.steps.iter().zip(&direct.steps) {
        let g = per_session_kib(&through, *n, *gw_kib);
        let b = per_session_kib(&direct, *n, *base_kib);
        memory.row(vec![
            n.to_string(),
            mib(*gw_kib),
            format!("{g:.2} KiB"),
            mib(*base_kib),
            format!("{b:.2} KiB"),
            ratio(g, b),
        ]);
        data_steps.push(json!({
            "sessions": n,
            "gateway_rss_kib": gw_kib,
            "gateway_kib_per_session": g,
            "baseline_rss_kib": base_kib,
            "baseline_kib_per_session": b,
        }));
    }
    memory.data = json!({
        "gateway_idle_rss_kib": through.idle_kib,
        "baseline_idle_rss_kib": direct.idle_kib,
        "steps": data_steps,
    });
    report.sections.push(memory);

    let (g50, g99) = (
        quantile(through.open_times.clone(), 0.5),
        quantile(through.open_times.clone(), 0.99),
    );
    let (b50, b99) = (
        quantile(direct.open_times.clone(), 0.5),
        quantile(direct.open_times.clone(), 0.99),
    );
    let most = steps.iter().copied().max().unwrap_or(0);
    let mut open = Section::new(
        "5b. Sessions: opening them",
        format!(
            "Open time = initialize + notifications/initialized, for the first {} sessions opened one at a time; the rest were opened {OPENERS} at a time. Then every one of the {most} sessions was pinged while all were open.",
            through.open_times.len()
        ),
        &[
            "measurement",
            "bench-echo (baseline)",
            "through toolgate",
            "ratio",
        ],
    );
    open.row(vec![
        "open a session, p50".into(),
        dur(b50),
        dur(g50),
        ratio(us(g50), us(b50)),
    ]);
    open.row(vec![
        "open a session, p99".into(),
        dur(b99),
        dur(g99),
        ratio(us(g99), us(b99)),
    ]);
    open.row(vec![
        "sessions opened per second".into(),
        format!("{:.0}", direct.opened_per_s),
        format!("{:.0}", through.opened_per_s),
        ratio(through.opened_per_s, direct.opened_per_s),
    ]);
    open.row(vec![
        format!("{most} open sessions answering ping"),
        "—".into(),
        format!("{answered} of {most} ({failed} failed)"),
        "—".into(),
    ]);
    open.data = json!({
        "open_p50_us": us(g50),
        "open_p99_us": us(g99),
        "baseline_open_p50_us": us(b50),
        "baseline_open_p99_us": us(b99),
        "opened_per_s": through.opened_per_s,
        "baseline_opened_per_s": direct.opened_per_s,
        "sessions": most,
        "answered": answered,
        "failed": failed,
        "first_error": first_error,
    });
    report.sections.push(open);

    judge(
        report,
        &IDLE_RSS,
        "",
        mib(through.idle_kib),
        through.idle_kib * 1024 <= 30 * 1000 * 1000,
    );
    if let Some((n, kib)) = through.steps.last() {
        let per = per_session_kib(&through, *n, *kib);
        judge(
            report,
            &SESSION_MEMORY,
            "",
            format!("{:.2} KB at {n} sessions", per * 1.024),
            per * 1024.0 <= 10_000.0,
        );
    }
    judge(
        report,
        &MANY_SESSIONS,
        "",
        format!("{answered} of {most} answered, {failed} errors"),
        failed == 0 && answered == most && most >= 10_000,
    );
    if failed > 0 {
        anyhow::bail!(
            "{failed} of {most} open sessions failed a ping; first: {}",
            first_error.unwrap_or_default()
        );
    }
    Ok(())
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}
