//! Measurement 7, startup: from starting `toolgate serve` to its first successful tools/list listing every
//! upstream's tools, with 20 upstreams (HTTP ones already running; stdio ones the gateway starts
//! itself). The baseline is the same gateway with a single upstream.

use super::median;
use crate::Rig;
use crate::mcp::Session;
use crate::report::{Report, Section, dur, ratio, us};
use serde_json::{Map, Value, json};
use std::time::{Duration, Instant};

const TOOLS: usize = 10;
/// How long a started gateway may take to list every tool.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Start a gateway with `servers` and time it until tools/list shows all `expect` tools.
async fn ready_time(
    rig: &Rig,
    client: &reqwest::Client,
    servers: Value,
    expect: usize,
) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let gw = rig.gateway(servers).await?;
    let session = Session::open(client, &gw.url).await?;
    loop {
        let n = session.list_tools().await?.len();
        if n == expect {
            return Ok(t.elapsed());
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
    let http = |k: usize| -> Value {
        let m: Map<String, Value> = echoes[..k]
            .iter()
            .enumerate()
            .map(|(i, e)| (format!("up{i}"), rig.http_entry(&e.url, "shared")))
            .collect();
        Value::Object(m)
    };
    let stdio = |k: usize| -> Value {
        let m: Map<String, Value> = (0..k)
            .map(|i| (format!("up{i}"), rig.stdio_entry("shared", TOOLS)))
            .collect();
        Value::Object(m)
    };
    let mut times: [Vec<Duration>; 4] = Default::default();
    for _ in 0..rig.scale.startup_repeats {
        times[0].push(ready_time(rig, &client, http(1), TOOLS).await?);
        times[1].push(ready_time(rig, &client, http(n), n * TOOLS).await?);
        times[2].push(ready_time(rig, &client, stdio(1), TOOLS).await?);
        times[3].push(ready_time(rig, &client, stdio(n), n * TOOLS).await?);
    }
    let [h1, hn, s1, sn] = times.map(median);
    let mut section = Section::new(
        format!("7. Startup to ready with {n} upstreams"),
        format!(
            "From starting `toolgate serve` to the first tools/list that lists every upstream's tools ({TOOLS} each), median of {} starts. HTTP upstreams were already running; stdio upstreams are started by the gateway. Baseline: the same with one upstream.",
            rig.scale.startup_repeats
        ),
        &[
            "upstreams",
            "ready (baseline: 1 upstream)",
            "ready",
            "ratio",
        ],
    );
    section.row(vec![
        format!("{n} Streamable HTTP"),
        dur(h1),
        dur(hn),
        ratio(us(hn), us(h1)),
    ]);
    section.row(vec![
        format!("{n} stdio"),
        dur(s1),
        dur(sn),
        ratio(us(sn), us(s1)),
    ]);
    section.data = json!({
        "upstreams": n,
        "http_one_us": us(h1),
        "http_all_us": us(hn),
        "stdio_one_us": us(s1),
        "stdio_all_us": us(sn),
    });
    report.sections.push(section);
    Ok(())
}
