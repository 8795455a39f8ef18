//! What committing audit events to the SQLite store costs: one event per
//! commit (the trail without a journal at moderate rates, where each answer
//! waits for its own commit), 64 per commit (under load), and 1,024 per commit
//! (the journal's batches: a second of calls at 1,000/s), with the table's
//! indexes as they are and with the time index the table used to have.
//!
//! Events are given to the sink as the gateway gives them: serialised once,
//! when they are recorded.
//!
//! Run: `cargo bench -p toolgate --bench audit_store`. Results: docs/performance.md.

use criterion::{Criterion, criterion_group, criterion_main};
use std::time::{Duration, Instant};
use toolgate::audit::sink::{Sink, StoreSink};
use toolgate::audit::{Event, EventKind, Line, Outcome, Verdict};
use toolgate::store::Store;

fn event(n: u64) -> Line {
    let mut e = Event::new(EventKind::Request);
    e.user = Some(format!("user-{}", n % 50));
    e.tenant = Some("acme".into());
    e.agent = Some("bench-agent".into());
    e.session = Some(format!("{n:032x}"));
    e.method = Some("tools/call".into());
    e.server = Some("fx".into());
    e.target = Some(format!("fx__tool_{}", n % 200));
    e.decision = Some(Verdict::Allow);
    e.outcome = Some(Outcome::Ok);
    e.arguments = Some(serde_json::json!({ "text": "x".repeat(256) }));
    e.latency_us = Some(350);
    e.bytes_in = Some(1300);
    e.bytes_out = Some(1200);
    Line::of(&e)
}

/// A store in a fresh directory, with the old time index if `time_index`.
async fn sink(dir: &std::path::Path, time_index: bool) -> StoreSink {
    let url = format!("sqlite://{}", dir.join("audit.db").display());
    let store = Store::open(&url, None).await.expect("the store opens");
    if time_index {
        let pool = sqlx::AnyPool::connect(&format!("{url}?mode=rw"))
            .await
            .expect("a second connection");
        sqlx::query("CREATE INDEX toolgate_audit_time ON toolgate_audit (time_us)")
            .execute(&pool)
            .await
            .expect("the old index");
    }
    StoreSink::new(store, Duration::from_secs(86_400 * 30), 10_000_000, false)
        .await
        .expect("the sink opens")
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime");
    let mut group = c.benchmark_group("audit store commit");
    for (name, time_index) in [("indexes now", false), ("with the time index", true)] {
        let batches: &[usize] = if time_index { &[1, 64] } else { &[1, 64, 1024] };
        for &batch in batches {
            // A sample of 1,024-event commits takes tens of milliseconds.
            group.sample_size(if batch >= 1024 { 10 } else { 100 });
            let dir = tempfile::tempdir().expect("a temp dir");
            let mut sink = rt.block_on(sink(dir.path(), time_index));
            let mut n = 0u64;
            group.bench_function(format!("{name}, {batch} per commit (per event)"), |b| {
                b.iter_custom(|iters| {
                    let events: Vec<Vec<Line>> = (0..iters)
                        .map(|_| {
                            (0..batch)
                                .map(|_| {
                                    n += 1;
                                    event(n)
                                })
                                .collect()
                        })
                        .collect();
                    let started = Instant::now();
                    rt.block_on(async {
                        for batch in &events {
                            sink.write(batch).await.expect("the batch commits");
                        }
                    });
                    started.elapsed() / batch as u32
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
