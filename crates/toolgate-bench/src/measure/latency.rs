//! Measurement 1, added latency: `tools/call` (1 KiB in, 1 KiB out) at fixed offered rates, straight to the
//! upstream (the baseline) and through toolgate with `isolation: shared` and with the default
//! `per_session`; open loop, latency from each call's intended start.

use super::{ADDED_P50, ADDED_P99, CPU_PER_CALL, judge_measured, open_sessions, verify_echo};
use crate::Rig;
use crate::load::{HttpCall, Outcome, Watched, least_disturbed, open_loop};
use crate::plot::{self, Panel, Series};
use crate::report::{Report, Section, delta, dur, ratio, span, us};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// One way to reach the echo tool.
pub struct Path {
    pub label: &'static str,
    pub color: &'static str,
    pub url: String,
    pub tool: &'static str,
    /// The gateway's pid, whose CPU time is read.
    pub gateway: Option<u32>,
    /// The upstream's pid, whose CPU time is read too.
    pub upstream: Option<u32>,
}

impl Path {
    pub fn watched(&self) -> Watched {
        Watched {
            gateway: self.gateway,
            upstream: self.upstream,
        }
    }
}

pub async fn run(rig: &Rig, report: &mut Report) -> anyhow::Result<String> {
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
            color: "#555555",
            url: echo.url.clone(),
            tool: "echo",
            gateway: None,
            upstream: Some(echo.pid),
        },
        Path {
            label: "toolgate shared",
            color: "#1f77b4",
            url: shared.url.clone(),
            tool: "echo__echo",
            gateway: Some(shared.pid),
            upstream: Some(echo.pid),
        },
        Path {
            label: "toolgate per_session",
            color: "#d62728",
            url: per_session.url.clone(),
            tool: "echo__echo",
            gateway: Some(per_session.pid),
            upstream: Some(echo.pid),
        },
    ];
    let client = rig.client()?;
    let mut callers = Vec::new();
    for p in &paths {
        callers.push(Arc::new(caller(rig, &client, p).await?));
    }
    let s = &rig.scale;
    // Interleaved (each rate: direct, shared, per_session) so drift affects all alike.
    let mut results: Vec<(f64, Vec<Outcome>)> = Vec::new();
    for &rate in &s.rates {
        let mut at_rate = Vec::new();
        for (p, c) in paths.iter().zip(&callers) {
            let what = format!("{} at {rate}/s", p.label);
            let o = least_disturbed(&what, s.retries, || {
                open_loop(c.clone(), rate, s.warmup, s.measure, p.watched())
            })
            .await?;
            o.check(&format!("{} at {rate}/s", p.label))?;
            at_rate.push(o);
        }
        results.push((rate, at_rate));
    }

    let mut section = Section::new(
        "1. Added latency of tools/call at fixed rates",
        format!(
            "Open loop: calls start at the offered rate whatever earlier calls do, and latency is measured from each call's intended start (coordinated omission accounted for). {} per point after {} warm-up, spread over {} sessions; baseline = the same client straight to the upstream. \"added\" = through toolgate − direct at the same percentile. \"others' CPU\": what processes outside the benchmark (and the hypervisor, as steal) used meanwhile, in % of one CPU; a point disturbed by more than 10% is measured again (twice at most) and the least disturbed run is kept.",
            span(s.measure),
            span(s.warmup),
            s.load_sessions
        ),
        &[
            "rate",
            "path",
            "p50",
            "p99",
            "p99.9",
            "max",
            "added p50",
            "added p99",
            "p99 ratio",
            "gateway CPU/call",
            "upstream CPU/call",
            "calls",
            "generator lag p99",
            "others' CPU",
        ],
    );
    let mut data = serde_json::Map::new();
    for (rate, outcomes) in &results {
        let direct = &outcomes[0];
        let mut at_rate = serde_json::Map::new();
        for (p, o) in paths.iter().zip(outcomes) {
            let is_direct = p.gateway.is_none();
            let label = if o.overloaded {
                format!("{} (overloaded: rate not sustained)", p.label)
            } else {
                p.label.to_owned()
            };
            // An overloaded run may stop before any call is answered: it has
            // no latencies to show, only that it was not sustained.
            let none = o.calls == 0;
            let shown = |d: Duration| if none { "—".into() } else { dur(d) };
            section.row(vec![
                format!("{rate:.0}/s"),
                label,
                shown(o.at(0.5)),
                shown(o.at(0.99)),
                shown(o.at(0.999)),
                shown(o.at(1.0)),
                if is_direct {
                    "baseline".into()
                } else if none {
                    "—".into()
                } else {
                    delta(o.at(0.5), direct.at(0.5))
                },
                if is_direct {
                    "baseline".into()
                } else if none {
                    "—".into()
                } else {
                    delta(o.at(0.99), direct.at(0.99))
                },
                if none {
                    "—".into()
                } else {
                    ratio(us(o.at(0.99)), us(direct.at(0.99)))
                },
                o.cpu_text(),
                o.upstream_cpu_text(),
                o.calls.to_string(),
                dur(Duration::from_nanos(o.start_lag.value_at_quantile(0.99))),
                o.interference.describe(),
            ]);
            at_rate.insert(
                p.label.to_owned(),
                json!({
                    "p50_us": us(o.at(0.5)),
                    "p99_us": us(o.at(0.99)),
                    "p999_us": us(o.at(0.999)),
                    "max_us": us(o.at(1.0)),
                    "calls": o.calls,
                    "errors": o.errors,
                    "overloaded": o.overloaded,
                    "gateway_cpu_per_call_us": o.cpu_per_call().map(us),
                    "upstream_cpu_per_call_us": o.upstream_cpu_per_call().map(us),
                    "generator_lag_p99_us": o.start_lag.value_at_quantile(0.99) as f64 / 1e3,
                    "percentile_curve_us": plot::curve(&o.latency)
                        .into_iter()
                        .map(|(nines, v)| json!({ "nines": nines, "us": v }))
                        .collect::<Vec<_>>(),
                    "others_cpu": o.interference.others,
                    "steal_cpu": o.interference.steal,
                }),
            );
        }
        data.insert(format!("{rate:.0}"), at_rate.into());
    }
    section.data = data.into();
    report.sections.push(section);

    // The budget is written for 2,000 calls/s; judge at the rate closest to it.
    if let Some((_, outcomes)) = results
        .iter()
        .min_by(|a, b| (a.0 - 2000.0).abs().total_cmp(&(b.0 - 2000.0).abs()))
    {
        let direct = &outcomes[0];
        for (p, o) in paths.iter().zip(outcomes).skip(1) {
            let variant = p.label.trim_start_matches("toolgate ");
            let added99 = o.at(0.99).saturating_sub(direct.at(0.99));
            let added50 = o.at(0.5).saturating_sub(direct.at(0.5));
            let during = [&direct.interference, &o.interference];
            judge_measured(
                report,
                &ADDED_P99,
                variant,
                delta(o.at(0.99), direct.at(0.99)),
                !o.overloaded && added99 <= Duration::from_millis(1),
                &during,
            );
            judge_measured(
                report,
                &ADDED_P50,
                variant,
                delta(o.at(0.5), direct.at(0.5)),
                !o.overloaded && added50 <= Duration::from_micros(100),
                &during,
            );
            let cpu = o.cpu_per_call();
            judge_measured(
                report,
                &CPU_PER_CALL,
                &format!("{variant}, 2,000 calls/s"),
                o.cpu_text(),
                cpu.is_some_and(|c| c <= Duration::from_micros(40)),
                &during,
            );
        }
    }

    let panels: Vec<Panel> = results
        .iter()
        .map(|(rate, outcomes)| Panel {
            title: format!("{rate:.0} calls/s"),
            series: paths
                .iter()
                .zip(outcomes)
                .map(|(p, o)| Series {
                    label: p.label.to_owned(),
                    color: p.color,
                    latency: &o.latency,
                })
                .collect(),
        })
        .collect();
    Ok(plot::svg(
        "tools/call latency (1 KiB ↔ 1 KiB), direct vs through toolgate, open loop",
        &panels,
    ))
}

/// Sessions on `path`, checked with one fully verified call each.
pub async fn caller(rig: &Rig, client: &reqwest::Client, path: &Path) -> anyhow::Result<HttpCall> {
    let (sessions, _) = open_sessions(client, &path.url, rig.scale.load_sessions, 1).await?;
    for s in &sessions {
        verify_echo(s, path.tool, &rig.text).await?;
    }
    Ok(HttpCall {
        sessions,
        tool: path.tool.to_owned(),
        text: rig.text.clone(),
    })
}
