//! Measurement 6, stdio upstreams: calls/s through one shared child (`isolation: shared`), and what a
//! per-session child costs (`per_session`): the time to the first call in a new session, which
//! starts and initializes a child, and the memory of each child. The baselines are the same
//! bench-echo started and driven by the benchmark itself over its stdin/stdout.

use super::latency::{Path, caller};
use super::{median, open_sessions};
use crate::Rig;
use crate::load::{StdioCall, Watched, closed_loop};
use crate::mcp::{Session, call_body};
use crate::procs::{children, rss_kib};
use crate::report::{Report, Section, dur, ratio, span, us};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub async fn run(rig: &Rig, report: &mut Report) -> anyhow::Result<()> {
    let s = &rig.scale;
    let client = rig.client()?;

    // Shared child: saturation, direct vs through the gateway.
    let peer = rig.stdio_peer().await?;
    let peer_rss = rss_kib(peer.pid)?;
    let direct_watch = Watched {
        gateway: None,
        upstream: Some(peer.pid),
    };
    let direct = closed_loop(
        Arc::new(StdioCall {
            peer,
            tool: "echo".into(),
            text: rig.text.clone(),
        }),
        s.concurrency,
        s.warmup,
        s.saturation,
        direct_watch,
    )
    .await?;
    direct.check("direct stdio")?;
    let shared = rig
        .gateway(json!({ "echo": rig.stdio_entry("shared", 1) }))
        .await?;
    let mut path = Path {
        label: "toolgate shared stdio",
        color: "",
        url: shared.url.clone(),
        tool: "echo__echo",
        gateway: Some(shared.pid),
        upstream: None,
    };
    let calls = Arc::new(caller(rig, &client, &path).await?);
    // The child serving the calls, looked up once calls have been answered: a child that only
    // took part in start-up may still be exiting.
    path.upstream = children(shared.pid)
        .into_iter()
        .filter(|&p| rss_kib(p).is_ok())
        .max();
    let through = closed_loop(calls, s.concurrency, s.warmup, s.saturation, path.watched()).await?;
    through.check("shared stdio through toolgate")?;
    drop(shared);
    // The same gateway path with an HTTP upstream: what the stdio transport costs in comparison.
    let echo = rig.echo(1, 0).await?;
    let http_gw = rig
        .gateway(json!({ "echo": rig.http_entry(&echo.url, "shared") }))
        .await?;
    let http_path = Path {
        label: "toolgate shared http",
        color: "",
        url: http_gw.url.clone(),
        tool: "echo__echo",
        gateway: Some(http_gw.pid),
        upstream: Some(echo.pid),
    };
    let over_http = closed_loop(
        Arc::new(caller(rig, &client, &http_path).await?),
        s.concurrency,
        s.warmup,
        s.saturation,
        http_path.watched(),
    )
    .await?;
    over_http.check("shared HTTP upstream through toolgate")?;
    drop((http_gw, echo));

    // Per-session children.
    let mut direct_first = Vec::new();
    for _ in 0..s.children {
        let t = Instant::now();
        let peer = rig.stdio_peer().await?;
        peer.exchange(|id| call_body(id, "echo", &rig.text)).await?;
        direct_first.push(t.elapsed());
    }
    let gw = rig
        .gateway(json!({ "echo": rig.stdio_entry("per_session", 1) }))
        .await?;
    // The supervisor's own child (discovery) is there before any session.
    let before = children(gw.pid);
    let gw_rss_before = rss_kib(gw.pid)?;
    let mut first = Vec::new();
    let mut second = Vec::new();
    let mut sessions: Vec<Session> = Vec::new();
    for _ in 0..s.children {
        let t = Instant::now();
        let (mut opened, _) = open_sessions(&client, &gw.url, 1, 1).await?;
        let session = opened.remove(0);
        session.send(call_body(1, "echo__echo", &rig.text)).await?;
        first.push(t.elapsed());
        let t = Instant::now();
        session.send(call_body(2, "echo__echo", &rig.text)).await?;
        second.push(t.elapsed());
        sessions.push(session);
    }
    // Children that only took part in starting a connection may still be exiting: count
    // until they are gone (there is no event to wait for), for a second at most.
    let mut kids: Vec<u32> = Vec::new();
    for _ in 0..20 {
        kids = children(gw.pid)
            .into_iter()
            .filter(|p| !before.contains(p))
            .collect();
        if kids.len() == s.children {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::ensure!(
        kids.len() == s.children,
        "expected {} per-session children of the gateway, found {}",
        s.children,
        kids.len()
    );
    let kid_rss: Vec<u64> = kids.iter().filter_map(|&p| rss_kib(p).ok()).collect();
    let avg_kid = kid_rss.iter().sum::<u64>() as f64 / kid_rss.len().max(1) as f64;
    let gw_growth =
        rss_kib(gw.pid)?.saturating_sub(gw_rss_before) as f64 / s.children.max(1) as f64;

    let mut section = Section::new(
        "6. stdio upstreams",
        format!(
            "Shared: one bench-echo child behind the gateway, {} callers in a closed loop for {}; baselines: the benchmark driving the same program over its own pipes with as many requests in flight, and the same gateway with a Streamable HTTP bench-echo instead. Per-session: {} sessions each make a first call (which starts and initializes their own child) and a second one; baseline: start bench-echo, initialize it and make the call directly.",
            s.concurrency,
            span(s.saturation),
            s.children
        ),
        &["measurement", "baseline", "through toolgate", "ratio"],
    );
    section.row(vec![
        "calls/s through one shared child (baseline: the child driven directly)".into(),
        format!("{:.0}", direct.throughput()),
        format!("{:.0}", through.throughput()),
        ratio(through.throughput(), direct.throughput()),
    ]);
    section.row(vec![
        "calls/s through one shared child (baseline: the same gateway, HTTP upstream)".into(),
        format!("{:.0}", over_http.throughput()),
        format!("{:.0}", through.throughput()),
        ratio(through.throughput(), over_http.throughput()),
    ]);
    section.row(vec![
        "shared child: p50 latency at saturation".into(),
        dur(direct.at(0.5)),
        dur(through.at(0.5)),
        ratio(us(through.at(0.5)), us(direct.at(0.5))),
    ]);
    section.row(vec![
        "shared child: gateway CPU per call (baseline: HTTP upstream)".into(),
        over_http.cpu_text(),
        through.cpu_text(),
        match (through.cpu_per_call(), over_http.cpu_per_call()) {
            (Some(a), Some(b)) => ratio(us(a), us(b)),
            _ => "—".into(),
        },
    ]);
    let (f, d) = (median(first.clone()), median(direct_first.clone()));
    section.row(vec![
        "shared child: the child's own CPU per call (baseline: driven directly)".into(),
        direct.upstream_cpu_text(),
        through.upstream_cpu_text(),
        match (
            through.upstream_cpu_per_call(),
            direct.upstream_cpu_per_call(),
        ) {
            (Some(a), Some(b)) => ratio(us(a), us(b)),
            _ => "—".into(),
        },
    ]);
    section.row(vec![
        "per_session: new session to first answer (starts a child), median".into(),
        dur(d),
        dur(f),
        ratio(us(f), us(d)),
    ]);
    section.row(vec![
        "per_session: second call in that session, median".into(),
        "—".into(),
        dur(median(second.clone())),
        "—".into(),
    ]);
    section.row(vec![
        "RSS per child".into(),
        format!("{peer_rss} KiB"),
        format!("{avg_kid:.0} KiB"),
        ratio(avg_kid, peer_rss as f64),
    ]);
    section.row(vec![
        "gateway RSS growth per session with a child".into(),
        "—".into(),
        format!("{gw_growth:.0} KiB"),
        "—".into(),
    ]);
    section.data = json!({
        "direct_calls_per_s": direct.throughput(),
        "shared_calls_per_s": through.throughput(),
        "direct_p50_us": us(direct.at(0.5)),
        "shared_p50_us": us(through.at(0.5)),
        "shared_gateway_cpu_per_call_us": through.cpu_per_call().map(us),
        "http_upstream_calls_per_s": over_http.throughput(),
        "http_upstream_gateway_cpu_per_call_us": over_http.cpu_per_call().map(us),
        "per_session_first_call_us": first.iter().map(|d| us(*d)).collect::<Vec<_>>(),
        "per_session_second_call_us": second.iter().map(|d| us(*d)).collect::<Vec<_>>(),
        "direct_start_and_call_us": direct_first.iter().map(|d| us(*d)).collect::<Vec<_>>(),
        "child_rss_kib": kid_rss,
        "baseline_child_rss_kib": peer_rss,
        "gateway_rss_growth_per_child_session_kib": gw_growth,
    });
    report.sections.push(section);
    Ok(())
}
