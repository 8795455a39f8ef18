//! Measurement 4, tools/list over 5 upstreams × 200 tools: the gateway answers from its merged catalog, so
//! even the first list after start costs no upstream round trip. The baseline is a client
//! listing the five upstreams itself, one after the other.

use super::{median, open_sessions, quantile};
use crate::Rig;
use crate::mcp::Session;
use crate::report::{Report, Section, dur, ratio, us};
use serde_json::{Map, Value, json};
use std::time::{Duration, Instant};

const UPSTREAMS: usize = 5;
const TOOLS: usize = 200;

pub async fn run(rig: &Rig, report: &mut Report) -> anyhow::Result<()> {
    let mut echoes = Vec::new();
    for _ in 0..UPSTREAMS {
        echoes.push(rig.echo(TOOLS, 0).await?);
    }
    let client = rig.client()?;
    let repeats = rig.scale.list_repeats;

    // Baseline: the client lists each upstream itself.
    let mut direct_sessions = Vec::new();
    for e in &echoes {
        direct_sessions.push(open_sessions(&client, &e.url, 1, 1).await?.0.remove(0));
    }
    let mut one = Vec::new();
    let mut all = Vec::new();
    for _ in 0..repeats {
        let t = Instant::now();
        let n = direct_sessions[0].list_tools().await?.len();
        one.push(t.elapsed());
        anyhow::ensure!(n == TOOLS, "bench-echo listed {n} tools, not {TOOLS}");
        let t = Instant::now();
        for s in &direct_sessions {
            s.list_tools().await?;
        }
        all.push(t.elapsed());
    }

    // Through toolgate: the first list of a fresh gateway, then repeated lists.
    let servers: Map<String, Value> = echoes
        .iter()
        .enumerate()
        .map(|(i, e)| (format!("up{i}"), rig.http_entry(&e.url, "shared")))
        .collect();
    let mut firsts = Vec::new();
    let mut through = Vec::new();
    let mut listed = 0;
    let mut bytes = 0;
    for g in 0..rig.scale.list_gateways.max(1) {
        let gw = rig.gateway(Value::Object(servers.clone())).await?;
        let session = Session::open(&client, &gw.url).await?;
        let t = Instant::now();
        let tools = session.list_tools().await?;
        firsts.push(t.elapsed());
        listed = tools.len();
        bytes = serde_json::to_string(&tools)?.len();
        anyhow::ensure!(
            listed == UPSTREAMS * TOOLS,
            "toolgate listed {listed} tools, not {}",
            UPSTREAMS * TOOLS
        );
        if g + 1 == rig.scale.list_gateways.max(1) {
            for _ in 0..repeats {
                let t = Instant::now();
                session.list_tools().await?;
                through.push(t.elapsed());
            }
        }
    }

    let first = median(firsts.clone());
    let (d50, d99) = (quantile(all.clone(), 0.5), quantile(all.clone(), 0.99));
    let (g50, g99) = (
        quantile(through.clone(), 0.5),
        quantile(through.clone(), 0.99),
    );
    let one50 = quantile(one.clone(), 0.5);
    let mut section = Section::new(
        format!("4. tools/list over {UPSTREAMS} upstreams × {TOOLS} tools"),
        format!(
            "Every page of tools/list ({listed} tools, {} KiB of tool definitions). Baseline: the client lists the {UPSTREAMS} upstreams itself, one after the other. First call: the first tools/list of a fresh gateway, median of {} gateways; repeated: {repeats} lists in a row.",
            bytes / 1024,
            firsts.len()
        ),
        &[
            "measurement",
            "direct (baseline)",
            "through toolgate",
            "ratio",
        ],
    );
    let row = |name: &str, base: Duration, gw: Duration| {
        vec![name.to_owned(), dur(base), dur(gw), ratio(us(gw), us(base))]
    };
    section.row(row("first tools/list after start (p50)", d50, first));
    section.row(row("repeated tools/list, p50", d50, g50));
    section.row(row("repeated tools/list, p99", d99, g99));
    section.row(vec![
        format!("one upstream's list alone ({TOOLS} tools), p50"),
        dur(one50),
        "—".into(),
        "—".into(),
    ]);
    section.data = json!({
        "tools": listed,
        "bytes": bytes,
        "direct_all_p50_us": us(d50),
        "direct_all_p99_us": us(d99),
        "direct_one_p50_us": us(one50),
        "gateway_first_us": firsts.iter().map(|d| us(*d)).collect::<Vec<_>>(),
        "gateway_repeated_p50_us": us(g50),
        "gateway_repeated_p99_us": us(g99),
    });
    report.sections.push(section);
    Ok(())
}
