//! Measurement 7, startup: from starting `toolgate serve` to its first successful tools/list listing every
//! upstream's tools, with 20 upstreams (HTTP ones already running; stdio ones the gateway starts
//! itself). The baseline is the same gateway with a single upstream.

use super::median;
use crate::Rig;
use crate::mcp::Session;
use crate::procs::Gateway;
use crate::report::{Report, Section, dur, ratio, us};
use serde_json::{Map, Value, json};
use std::time::{Duration, Instant};

const TOOLS: usize = 10;
/// How long a started gateway may take to list every tool.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long after ready the stdio children are counted.
const SETTLE: Duration = Duration::from_millis(300);

/// Start a gateway with `servers` and time it until tools/list shows all `expect` tools.
async fn ready_time(
    rig: &Rig,
    client: &reqwest::Client,
    servers: Value,
    expect: usize,
) -> anyhow::Result<(Duration, Gateway)> {
    let t = Instant::now();
    let gw = rig.gateway(servers).await?;
    let session = Session::open(client, &gw.url).await?;
    loop {
        let n = session.list_tools().await?.len();
        if n == expect {
            return Ok((t.elapsed(), gw));
        }
        anyhow::ensure!(
            t.elapsed() < READY_TIMEOUT,
            "the gateway listed {n} of {expect} tools after {READY_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub async fn run(rig: &Rig, report: &mut Report) -> anyhow::Result<()> {
    let n = rig.scale.startup_upstreams;
    let mut echoes = Vec::new();
    for _ in 0..n {
        echoes.push(rig.echo(TOOLS, 0).await?);
    }
    let client = rig.client()?;
    // `era: legacy` skips the 2026-07-28 era probe (`server/discover` before `initialize`).
    let entry = |e: Value, era: Option<&str>| match era {
        Some(era) => {
            let mut e = e;
            e["era"] = Value::String(era.to_owned());
            e
        }
        None => e,
    };
    let http = |k: usize, era: Option<&str>| -> Value {
        let m: Map<String, Value> = echoes[..k]
            .iter()
            .enumerate()
            .map(|(i, e)| {
                (
                    format!("up{i}"),
                    entry(rig.http_entry(&e.url, "shared"), era),
                )
            })
            .collect();
        Value::Object(m)
    };
    let stdio = |k: usize, era: Option<&str>| -> Value {
        let m: Map<String, Value> = (0..k)
            .map(|i| {
                (
                    format!("up{i}"),
                    entry(rig.stdio_entry("shared", TOOLS), era),
                )
            })
            .collect();
        Value::Object(m)
    };
    let legacy = Some("legacy");
    let mut times: [Vec<Duration>; 8] = Default::default();
    let mut children = [0usize; 2];
    for _ in 0..rig.scale.startup_repeats {
        times[0].push(ready_time(rig, &client, http(1, None), TOOLS).await?.0);
        times[1].push(ready_time(rig, &client, http(n, None), n * TOOLS).await?.0);
        times[2].push(ready_time(rig, &client, http(1, legacy), TOOLS).await?.0);
        times[3].push(
            ready_time(rig, &client, http(n, legacy), n * TOOLS)
                .await?
                .0,
        );
        times[4].push(ready_time(rig, &client, stdio(1, None), TOOLS).await?.0);
        let (t, gw) = ready_time(rig, &client, stdio(n, None), n * TOOLS).await?;
        times[5].push(t);
        // Children started in the first moments, the start-up's own included.
        tokio::time::sleep(SETTLE).await;
        children[0] = gw.stdio_starts();
        drop(gw);
        times[6].push(ready_time(rig, &client, stdio(1, legacy), TOOLS).await?.0);
        let (t, gw) = ready_time(rig, &client, stdio(n, legacy), n * TOOLS).await?;
        times[7].push(t);
        tokio::time::sleep(SETTLE).await;
        children[1] = gw.stdio_starts();
    }
    let [h1, hn, hl1, hln, s1, sn, sl1, sln] = times.map(median);
    let mut section = Section::new(
        format!("7. Startup to ready with {n} upstreams"),
        format!(
            "From starting `toolgate serve` to the first tools/list that lists every upstream's tools ({TOOLS} each), median of {} starts. HTTP upstreams were already running; stdio upstreams are started by the gateway. Baseline: the same with one upstream. Default: the upstream's protocol era is probed (`server/discover`, then `initialize`); `era: legacy` skips the probe. Children: stdio processes the gateway started in its first {} ms.",
            rig.scale.startup_repeats,
            SETTLE.as_millis()
        ),
        &[
            "upstreams",
            "ready (baseline: 1 upstream)",
            "ready",
            "ratio",
            "children started",
        ],
    );
    let rows = [
        (format!("{n} Streamable HTTP"), h1, hn, "—".to_owned()),
        (
            format!("{n} Streamable HTTP, `era: legacy`"),
            hl1,
            hln,
            "—".to_owned(),
        ),
        (format!("{n} stdio"), s1, sn, children[0].to_string()),
        (
            format!("{n} stdio, `era: legacy`"),
            sl1,
            sln,
            children[1].to_string(),
        ),
    ];
    for (name, one, all, kids) in rows {
        section.row(vec![
            name,
            dur(one),
            dur(all),
            ratio(us(all), us(one)),
            kids,
        ]);
    }
    section.data = json!({
        "upstreams": n,
        "http_one_us": us(h1),
        "http_all_us": us(hn),
        "http_legacy_one_us": us(hl1),
        "http_legacy_all_us": us(hln),
        "stdio_one_us": us(s1),
        "stdio_all_us": us(sn),
        "stdio_legacy_one_us": us(sl1),
        "stdio_legacy_all_us": us(sln),
        "stdio_children_started": children[0],
        "stdio_legacy_children_started": children[1],
    });
    report.sections.push(section);
    Ok(())
}
