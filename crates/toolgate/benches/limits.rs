//! What the admit stage costs a call with the in-process limiter: no rules,
//! one rate, and a rate, a quota and a concurrency limit together, each with
//! budgets per principal, for one caller and across 10,000 callers.
//!
//! Run: `cargo bench -p toolgate --bench limits`. Results: docs/limits.md.

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::sync::Arc;
use toolgate::auth::Principal;
use toolgate::limits::{Call, Limits, LocalLimiter};

fn limits(rules: &str) -> Limits {
    let text = format!("servers:\n  fx: {{ command: x }}\nlimits:\n{rules}");
    let config = toolgate::config::load_str(&text, "bench.yaml", false).expect("a valid config");
    Limits::new(&config, Arc::new(LocalLimiter::default()))
}

fn admit(limits: &Limits, principal: &Principal) {
    let call = Call {
        principal,
        endpoint: "/mcp",
        server: "fx",
        method: "tools/call",
        item: Some("fx__echo"),
    };
    let snapshot = limits.snapshot();
    let permits = futures::executor::block_on(limits.admit(&snapshot, &call));
    black_box(permits.is_ok());
}

fn bench(c: &mut Criterion) {
    // Budgets large enough never to refuse: the cost measured is the admitting one.
    let cases = [
        ("no rules", "  []\n"),
        (
            "one rate",
            "  - { id: r, per: [principal], rate: 1000000/s }\n",
        ),
        (
            "rate + quota + concurrency",
            "  - { id: r, per: [principal], rate: 1000000/s }\n  - { id: q, per: [principal], quota: 1000000000/day }\n  - { id: c, per: [principal], concurrency: 1000 }\n",
        ),
    ];
    let principals: Vec<Principal> = (0..10_000)
        .map(|i| {
            let mut p = Principal::anonymous(&format!("user{i}"));
            p.tenant = Some("acme".into());
            p
        })
        .collect();
    for (name, rules) in cases {
        let l = limits(rules);
        c.bench_function(&format!("admit, {name}, one caller"), |b| {
            b.iter(|| admit(&l, &principals[0]))
        });
        let l = limits(rules);
        let mut i = 0;
        c.bench_function(&format!("admit, {name}, 10k callers"), |b| {
            b.iter(|| {
                i = (i + 1) % principals.len();
                admit(&l, &principals[i])
            })
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
