//! Measurement 2, throughput at saturation: closed loop (each caller sends its next call as soon as it has
//! an answer), direct vs through toolgate, and the gateway's CPU time per call.

use super::latency::{Path, caller};
use super::{CPU_PER_CALL, THROUGHPUT, judge_measured};
use crate::Rig;
use crate::load::{closed_loop, least_disturbed};
use crate::report::{Report, Section, dur, ratio, span, us};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

pub async fn run(rig: &Rig, report: &mut Report) -> anyhow::Result<()> {
    let echo = rig.echo(1, 0).await?;
    let shared = rig
        .gateway(json!({ "echo": rig.http_entry(&echo.url, "shared") }))
        .await?;
    let per_session = rig
        .gateway(json!({ "echo": rig.http_entry(&echo.url, "per_session") }))
        .await?;
    let paths = [
        Path {
            label: "direct",
            color: "",
            url: echo.url.clone(),
            tool: "echo",
            gateway: None,
            upstream: Some(echo.pid),
        },
        Path {
            label: "toolgate shared",
            color: "",
            url: shared.url.clone(),
            tool: "echo__echo",
            gateway: Some(shared.pid),
            upstream: Some(echo.pid),
        },
        Path {
            label: "toolgate per_session",
            color: "",
            url: per_session.url.clone(),
            tool: "echo__echo",
            gateway: Some(per_session.pid),
            upstream: Some(echo.pid),
        },
    ];
    let s = &rig.scale;
    let client = rig.client()?;
    let mut outcomes = Vec::new();
    for p in &paths {
        let c = Arc::new(caller(rig, &client, p).await?);
        let o = least_disturbed(p.label, s.retries, || {
            closed_loop(
                c.clone(),
                s.concurrency,
                s.warmup,
                s.saturation,
                p.watched(),
            )
        })
        .await?;
        o.check(&format!("{} at saturation", p.label))?;
        outcomes.push(o);
    }
    let direct = outcomes[0].throughput();
    let mut section = Section::new(
        "2. Throughput at saturation",
        format!(
            "Closed loop: {} callers over {} sessions, each sending its next tools/call as soon as the last one answered; {} after {} warm-up. Gateway CPU = its utime+stime (/proc/PID/stat) over the window ÷ calls.",
            s.concurrency,
            s.load_sessions,
            span(s.saturation),
            span(s.warmup)
        ),
        &[
            "path",
            "calls/s",
            "vs direct",
            "p50",
            "p99",
            "gateway CPU/call",
            "upstream CPU/call",
            "calls",
            "others' CPU",
        ],
    );
    let mut data = serde_json::Map::new();
    for (p, o) in paths.iter().zip(&outcomes) {
        section.row(vec![
            p.label.to_owned(),
            format!("{:.0}", o.throughput()),
            ratio(o.throughput(), direct),
            dur(o.at(0.5)),
            dur(o.at(0.99)),
            o.cpu_text(),
            o.upstream_cpu_text(),
            o.calls.to_string(),
            o.interference.describe(),
        ]);
        data.insert(
            p.label.to_owned(),
            json!({
                "calls_per_s": o.throughput(),
                "p50_us": us(o.at(0.5)),
                "p99_us": us(o.at(0.99)),
                "gateway_cpu_per_call_us": o.cpu_per_call().map(us),
                "upstream_cpu_per_call_us": o.upstream_cpu_per_call().map(us),
                "calls": o.calls,
                "others_cpu": o.interference.others,
                "steal_cpu": o.interference.steal,
            }),
        );
        if p.gateway.is_some() {
            let variant = format!("{}, saturation", p.label.trim_start_matches("toolgate "));
            let cpu = o.cpu_per_call();
            judge_measured(
                report,
                &CPU_PER_CALL,
                &variant,
                o.cpu_text(),
                cpu.is_some_and(|c| c <= Duration::from_micros(40)),
                &[&o.interference],
            );
            let r = o.throughput() / direct.max(1e-9);
            judge_measured(
                report,
                &THROUGHPUT,
                p.label.trim_start_matches("toolgate "),
                format!("{r:.2}× ({:.0} vs {direct:.0} calls/s)", o.throughput()),
                r >= 0.5,
                &[&outcomes[0].interference, &o.interference],
            );
        }
    }
    section.data = data.into();
    report.sections.push(section);
    Ok(())
}
