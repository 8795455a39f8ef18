//! Measurement 8, head-of-line isolation: calls to a fast upstream while another upstream behind the same
//! gateway answers every call after 200 ms and is kept busy, against the same fast calls with
//! the slow upstream idle. The same client sessions call both (the default `per_session`).

use super::latency::{Path, caller};
use super::{NO_CLIFF, judge_measured};
use crate::Rig;
use crate::load::{Watched, least_disturbed, open_loop};
use crate::report::{Report, Section, delta, dur, ratio, span, us};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

const SLOW_MS: u64 = 200;

pub async fn run(rig: &Rig, report: &mut Report) -> anyhow::Result<()> {
    let s = &rig.scale;
    let fast = rig.echo(1, 0).await?;
    let slow = rig.echo(1, SLOW_MS).await?;
    let gw = rig
        .gateway(json!({
            "fast": rig.http_entry(&fast.url, "per_session"),
            "slow": rig.http_entry(&slow.url, "per_session"),
        }))
        .await?;
    let client = rig.client()?;
    let path = |tool| Path {
        label: "",
        color: "",
        url: gw.url.clone(),
        tool,
        gateway: Some(gw.pid),
        upstream: Some(fast.pid),
    };
    let fast_calls = Arc::new(caller(rig, &client, &path("fast__echo")).await?);
    // The same sessions call the slow server: its connections are theirs too.
    let slow_calls = Arc::new(crate::load::HttpCall {
        sessions: fast_calls.sessions.clone(),
        tool: "slow__echo".into(),
        text: rig.text.clone(),
    });
    super::verify_echo(&slow_calls.sessions[0], "slow__echo", &rig.text).await?;

    // Alone, next to slow calls, alone again: the baseline is the better of the two alone
    // runs, so a disturbance of one of them cannot hide a cliff.
    let alone_once = || async {
        let o = least_disturbed("fast calls alone", s.retries, || {
            open_loop(
                fast_calls.clone(),
                s.fast_rate,
                s.warmup,
                s.measure,
                Watched::default(),
            )
        })
        .await?;
        o.check("fast calls alone")?;
        anyhow::Ok(o)
    };
    let before = alone_once().await?;
    let mut next_to_slow = None;
    for attempt in 0..=s.retries {
        let (fast, slow) = tokio::join!(
            open_loop(
                fast_calls.clone(),
                s.fast_rate,
                s.warmup,
                s.measure,
                Watched::default()
            ),
            open_loop(
                slow_calls.clone(),
                s.slow_rate,
                s.warmup,
                s.measure,
                Watched::default()
            ),
        );
        let (fast, slow) = (fast?, slow?);
        fast.check("fast calls next to slow ones")?;
        slow.check("slow calls")?;
        let disturbed = fast.interference.disturbing();
        next_to_slow = Some((fast, slow));
        if !disturbed || attempt == s.retries {
            break;
        }
        eprintln!("  fast calls next to slow ones: disturbed by other processes; measuring again");
    }
    let Some((with_slow, slow_out)) = next_to_slow else {
        anyhow::bail!("no run next to the slow upstream");
    };
    let after = alone_once().await?;
    let alone = if after.at(0.99) < before.at(0.99) {
        after
    } else {
        before
    };

    let mut section = Section::new(
        "8. Head-of-line isolation: a slow upstream next to a fast one",
        format!(
            "One gateway, two upstreams: `fast` (answers at once) and `slow` (answers after {SLOW_MS} ms). Fast calls at {:.0}/s (open loop, {}) alone, then while the same {} sessions also call `slow` at {:.0}/s (≈{:.0} slow calls always in flight), then alone again; the baseline is the better of the two runs alone.",
            s.fast_rate,
            span(s.measure),
            s.load_sessions,
            s.slow_rate,
            s.slow_rate * SLOW_MS as f64 / 1000.0
        ),
        &[
            "fast calls",
            "p50",
            "p99",
            "p99.9",
            "max",
            "added p99",
            "p99 ratio",
            "slow calls p50",
            "others' CPU",
        ],
    );
    section.row(vec![
        "alone (baseline)".into(),
        dur(alone.at(0.5)),
        dur(alone.at(0.99)),
        dur(alone.at(0.999)),
        dur(alone.at(1.0)),
        "baseline".into(),
        "1.00×".into(),
        "—".into(),
        alone.interference.describe(),
    ]);
    section.row(vec![
        "with slow calls in flight".into(),
        dur(with_slow.at(0.5)),
        dur(with_slow.at(0.99)),
        dur(with_slow.at(0.999)),
        dur(with_slow.at(1.0)),
        delta(with_slow.at(0.99), alone.at(0.99)),
        ratio(us(with_slow.at(0.99)), us(alone.at(0.99))),
        dur(slow_out.at(0.5)),
        with_slow.interference.describe(),
    ]);
    section.data = json!({
        "alone_p50_us": us(alone.at(0.5)),
        "alone_p99_us": us(alone.at(0.99)),
        "alone_p999_us": us(alone.at(0.999)),
        "with_slow_p50_us": us(with_slow.at(0.5)),
        "with_slow_p99_us": us(with_slow.at(0.99)),
        "with_slow_p999_us": us(with_slow.at(0.999)),
        "slow_p50_us": us(slow_out.at(0.5)),
        "slow_calls": slow_out.calls,
    });
    report.sections.push(section);

    let (a, w) = (alone.at(0.99), with_slow.at(0.99));
    let limit = (a * 2).max(a + Duration::from_millis(1));
    judge_measured(
        report,
        &NO_CLIFF,
        "",
        format!("p99 {} alone, {} with slow calls", dur(a), dur(w)),
        w <= limit,
        &[&alone.interference, &with_slow.interference],
    );
    Ok(())
}
