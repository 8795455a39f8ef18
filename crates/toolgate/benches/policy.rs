//! What a policy decision costs, with 10, 100 and 1,000 policies.
//!
//! The policy sets are shaped like a real deployment's: most policies are
//! scoped to one server or one tool (group permits, per-tool argument limits),
//! and a few are global (labels, tenants, hours). Each size is measured three
//! ways in the same run: `decide` (sliced: only policies whose scope could
//! match are evaluated; a caller's repeated call, so what the policies that do
//! not read the context found is remembered), `decide_first_call` (the same
//! for a principal never seen before), `decide_unsliced` (the whole set in one
//! Cedar evaluation: the baseline) and `could_allow` (discovery, arguments
//! unknown).
//!
//! Run: `cargo bench -p toolgate --bench policy`. Results: docs/performance.md.

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;
use std::fmt::Write as _;
use std::hint::black_box;
use std::path::PathBuf;
use std::time::SystemTime;
use toolgate::auth::{AuthMethod, Principal};
use toolgate::config::Labels;
use toolgate::policy::{Action, CallContext, Era, Policies, Request, ServerRef, Target};

const TOOLS_PER_SERVER: usize = 10;

/// `n` policies over `n / 10` servers of 10 tools each.
fn policy_text(n: usize) -> String {
    let servers = (n / 10).max(1);
    let mut out = String::new();
    for i in 0..n {
        let s = i % servers;
        let t = (i / servers) % TOOLS_PER_SERVER;
        let g = i % 7;
        let _ = match i % 20 {
            // 40 %: a group may call one tool.
            0..=7 => writeln!(
                out,
                r#"permit (principal in Toolgate::Group::"team{g}", action == Toolgate::Action::"call_tool", resource == Toolgate::Tool::"s{s}/t{t}");"#
            ),
            // 25 %: a group may use a whole server.
            8..=12 => writeln!(
                out,
                r#"permit (principal in Toolgate::Group::"team{g}", action in Toolgate::Action::"use", resource in Toolgate::Server::"s{s}");"#
            ),
            // 25 %: an argument limit on one tool.
            13..=17 => writeln!(
                out,
                r#"forbid (principal, action == Toolgate::Action::"call_tool", resource == Toolgate::Tool::"s{s}/t{t}") when {{ context.args has amount && context.args.amount >= {} }};"#,
                100 * (i + 1)
            ),
            // 5 %: a global rule on labels.
            18 => writeln!(
                out,
                r#"forbid (principal, action in Toolgate::Action::"use", resource) when {{ resource has risk && resource.risk == "level{i}" }} unless {{ principal in Toolgate::Group::"admins" }};"#
            ),
            // 5 %: a global rule on tenants and hours.
            _ => writeln!(
                out,
                r#"permit (principal in Toolgate::Tenant::"tenant{i}", action == Toolgate::Action::"call_tool", resource) when {{ context.hour >= 8 && context.hour < 18 }};"#
            ),
        };
    }
    out
}

fn bench(c: &mut Criterion) {
    let declarations = vec![(
        PathBuf::from("args.cedarschema"),
        r#"namespace Toolgate { type Args = { "amount"?: Long, "currency"?: String }; }"#
            .to_owned(),
    )];
    let principal = Principal {
        user: "alice".into(),
        agent: Some("desktop".into()),
        tenant: None,
        groups: vec!["team1".into(), "team3".into(), "finance".into()],
        scopes: vec!["mcp".into()],
        attrs: serde_json::Map::new(),
        method: AuthMethod::Jwt,
        recorded: Default::default(),
    };
    let labels = Labels {
        environment: Some("production".into()),
        risk: Some("high".into()),
        ..Labels::default()
    };
    let target = Target::tool(
        ServerRef {
            name: "s0",
            labels: &labels,
        },
        "s0__t3",
        "t3",
        None,
        Some(&json!({"readOnlyHint": false})),
    );
    let args = json!({"amount": 250, "currency": "EUR", "memo": "refund for order 1234"});
    for n in [10, 100, 1000] {
        let policies = Policies::compile(
            &[(PathBuf::from("bench.cedar"), policy_text(n))],
            &declarations,
        )
        .unwrap_or_else(|e| panic!("{n} policies do not load: {e}"));
        let req = Request {
            principal: &principal,
            action: Action::CallTool,
            target: &target,
            context: CallContext {
                args: Some(&args),
                source: Some(
                    "10.0.0.7"
                        .parse()
                        .unwrap_or(std::net::IpAddr::from([127, 0, 0, 1])),
                ),
                endpoint: "/mcp",
                session: Some("s-1"),
                era: Era::Legacy,
                time: SystemTime::now(),
            },
        };
        // The two must agree, or the comparison means nothing.
        assert_eq!(policies.decide(&req), policies.decide_unsliced(&req));
        eprintln!(
            "{n} policies: decision {:?}; the largest slice holds {}",
            policies.decide(&req).reason.code,
            policies.largest_slice()
        );
        let mut group = c.benchmark_group(format!("policy/{n}"));
        // A caller's repeated calls: what the policies that do not read the
        // context found is remembered after the first.
        group.bench_function("decide", |b| {
            b.iter(|| black_box(policies.decide(black_box(&req))))
        });
        // Every call by a principal never seen before: its entity is built and
        // every policy of the slices evaluated.
        let mut n = 0u64;
        group.bench_function("decide_first_call", |b| {
            b.iter_batched(
                || {
                    n += 1;
                    let mut p = principal.clone();
                    p.user = format!("user-{n}");
                    p
                },
                |p| {
                    let first = Request {
                        principal: &p,
                        ..req
                    };
                    black_box(policies.decide(black_box(&first)))
                },
                criterion::BatchSize::SmallInput,
            )
        });
        group.bench_function("decide_unsliced", |b| {
            b.iter(|| black_box(policies.decide_unsliced(black_box(&req))))
        });
        group.bench_function("could_allow", |b| {
            b.iter(|| black_box(policies.could_allow(black_box(&req))))
        });
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
