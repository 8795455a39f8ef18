//! Load generation.
//!
//! Open loop: calls are started at a fixed offered rate by a pacer thread, whatever happens to
//! earlier calls, and each call's latency is measured from its *intended* send time. A stall
//! anywhere (gateway, network, the generator itself) is therefore charged to every call it
//! delays — coordinated omission is accounted for. Closed loop: N callers each send the next
//! call as soon as the last one answered, to find the throughput at saturation.
//!
//! Both record into HDR histograms (nanoseconds, 3 significant digits) and can read a process's
//! CPU time at the edges of the measured window.

use crate::mcp::{Session, StdioPeer, call_body};
use crate::procs::{self, Interference};
use crate::report::dur;
use hdrhistogram::Histogram;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// More calls in flight than this and the offered rate is called overloaded: the run stops
/// offering instead of piling up connections without bound.
const MAX_IN_FLIGHT: usize = 2048;
/// How long calls still in flight at the end of a run may take to finish.
const DRAIN: Duration = Duration::from_secs(30);

/// Makes one call. `seq` is unique within a run.
pub trait Caller: Send + Sync + 'static {
    fn call(&self, seq: u64) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// `tools/call` with a fixed text argument over HTTP, spread round-robin over sessions.
pub struct HttpCall {
    pub sessions: Vec<Session>,
    pub tool: String,
    pub text: String,
}

impl Caller for HttpCall {
    fn call(&self, seq: u64) -> impl Future<Output = anyhow::Result<()>> + Send {
        let session = &self.sessions[seq as usize % self.sessions.len()];
        let body = call_body(seq, &self.tool, &self.text);
        session.send(body)
    }
}

/// `tools/call` straight to a stdio server the benchmark started.
pub struct StdioCall {
    pub peer: StdioPeer,
    pub tool: String,
    pub text: String,
}

impl Caller for StdioCall {
    async fn call(&self, _seq: u64) -> anyhow::Result<()> {
        let answer = self
            .peer
            .exchange(|id| call_body(id, &self.tool, &self.text))
            .await?;
        if answer.windows(9).any(|w| w == b"\"result\":") {
            Ok(())
        } else {
            anyhow::bail!("not a result: {}", String::from_utf8_lossy(&answer))
        }
    }
}

/// A latency histogram in nanoseconds, 1 µs … 10 min.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1_000, 600_000_000_000, 3).expect("static histogram bounds")
}

fn nanos(d: Duration) -> u64 {
    d.as_nanos().min(u128::from(u64::MAX)) as u64
}

/// What a run measured.
pub struct Outcome {
    /// Latency of every call started in the measured window.
    pub latency: Histogram<u64>,
    /// Open loop: how late the generator started each call (its own delay, included above).
    pub start_lag: Histogram<u64>,
    /// Calls that answered with a result, in the measured window.
    pub calls: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    /// The measured window.
    pub window: Duration,
    /// Open loop: the offered rate could not be sustained (too many calls in flight).
    pub overloaded: bool,
    /// CPU time of the gateway during the window.
    pub cpu: Option<Duration>,
    /// CPU time of the upstream during the window.
    pub upstream_cpu: Option<Duration>,
    /// What other processes and the hypervisor took during the window.
    pub interference: Interference,
}

impl Outcome {
    pub fn throughput(&self) -> f64 {
        self.calls as f64 / self.window.as_secs_f64().max(1e-9)
    }

    /// Latency at quantile `q` (0.5, 0.99, …).
    pub fn at(&self, q: f64) -> Duration {
        Duration::from_nanos(self.latency.value_at_quantile(q))
    }

    fn per_call(&self, cpu: Option<Duration>) -> Option<Duration> {
        let cpu = cpu?;
        (self.calls > 0).then(|| cpu / self.calls.min(u64::from(u32::MAX)) as u32)
    }

    /// CPU time of the gateway per call.
    pub fn cpu_per_call(&self) -> Option<Duration> {
        self.per_call(self.cpu)
    }

    /// CPU time of the upstream per call.
    pub fn upstream_cpu_per_call(&self) -> Option<Duration> {
        self.per_call(self.upstream_cpu)
    }

    /// The gateway's CPU per call for people: `41 µs`, or `—` if not watched.
    pub fn cpu_text(&self) -> String {
        self.cpu_per_call().map_or("—".into(), dur)
    }

    /// The upstream's CPU per call for people.
    pub fn upstream_cpu_text(&self) -> String {
        self.upstream_cpu_per_call().map_or("—".into(), dur)
    }

    /// Fails with the first error if any call failed.
    pub fn check(&self, what: &str) -> anyhow::Result<()> {
        if self.errors > 0 {
            anyhow::bail!(
                "{what}: {} of {} calls failed; first: {}",
                self.errors,
                self.errors + self.calls,
                self.first_error.as_deref().unwrap_or("?")
            );
        }
        Ok(())
    }
}

#[derive(Default)]
struct Tally {
    latency: Option<Histogram<u64>>,
    start_lag: Option<Histogram<u64>>,
    calls: u64,
    errors: u64,
    first_error: Option<String>,
}

impl Tally {
    fn record(&mut self, latency: Duration, lag: Option<Duration>, result: anyhow::Result<()>) {
        match result {
            Ok(()) => {
                self.calls += 1;
                let _ = self
                    .latency
                    .get_or_insert_with(histogram)
                    .record(nanos(latency));
                if let Some(lag) = lag {
                    let _ = self
                        .start_lag
                        .get_or_insert_with(histogram)
                        .record(nanos(lag));
                }
            }
            Err(e) => {
                self.errors += 1;
                self.first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
}

/// The processes whose CPU time a run reads.
#[derive(Debug, Clone, Copy, Default)]
pub struct Watched {
    pub gateway: Option<u32>,
    /// The upstream: a minimal server doing its part of the same calls, the baseline for the
    /// gateway's CPU per call.
    pub upstream: Option<u32>,
}

/// CPU time of the watched processes over the window, and what else ran meanwhile.
struct Readings {
    gateway: Option<Duration>,
    upstream: Option<Duration>,
    interference: Option<Interference>,
}

type Start = (Option<Duration>, Option<Duration>, procs::MachineSample);

/// Read at the edges of the measured window.
struct Watch {
    watched: Watched,
    start: Mutex<Option<Start>>,
}

impl Watch {
    fn new(watched: Watched) -> Arc<Watch> {
        Arc::new(Watch {
            watched,
            start: Mutex::new(None),
        })
    }

    /// Take the start readings at `at` (in the background).
    fn start_at(self: &Arc<Self>, at: Instant) {
        let this = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            let cpu = |pid: Option<u32>| pid.and_then(|p| procs::cpu_time(p).ok());
            let start = (
                cpu(this.watched.gateway),
                cpu(this.watched.upstream),
                procs::sample_machine(),
            );
            *this.start.lock().unwrap_or_else(|p| p.into_inner()) = Some(start);
        });
    }

    fn finish(&self) -> Readings {
        let Some((gw0, up0, machine0)) = *self.start.lock().unwrap_or_else(|p| p.into_inner())
        else {
            return Readings {
                gateway: None,
                upstream: None,
                interference: None,
            };
        };
        let since = |pid: Option<u32>, start: Option<Duration>| {
            let end = procs::cpu_time(pid?).ok()?;
            Some(end.saturating_sub(start?))
        };
        Readings {
            gateway: since(self.watched.gateway, gw0),
            upstream: since(self.watched.upstream, up0),
            interference: Some(machine0.interference(&procs::sample_machine())),
        }
    }
}

fn outcome(tally: Tally, window: Duration, overloaded: bool, readings: Readings) -> Outcome {
    Outcome {
        interference: readings.interference.unwrap_or_default(),
        cpu: readings.gateway,
        upstream_cpu: readings.upstream,
        latency: tally.latency.unwrap_or_else(histogram),
        start_lag: tally.start_lag.unwrap_or_else(histogram),
        calls: tally.calls,
        errors: tally.errors,
        first_error: tally.first_error,
        window,
        overloaded,
    }
}

/// Offer `rate` calls per second for `warmup + measure`; only calls whose intended start falls
/// in the measured window are recorded; `watch`: the processes whose CPU time to read.
pub async fn open_loop<C: Caller>(
    caller: Arc<C>,
    rate: f64,
    warmup: Duration,
    measure: Duration,
    watch: Watched,
) -> anyhow::Result<Outcome> {
    let tally = Arc::new(Mutex::new(Tally::default()));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let runtime = tokio::runtime::Handle::current();
    let start = Instant::now() + Duration::from_millis(5);
    let measure_from = start + warmup;
    let end = measure_from + measure;
    let watched = Watch::new(watch);
    watched.start_at(measure_from);
    let (t, f) = (tally.clone(), in_flight.clone());
    // A thread, not a task: tokio's timer ticks in milliseconds, far too coarse to pace
    // thousands of calls per second.
    let pacer = std::thread::Builder::new()
        .name("pacer".into())
        .spawn(move || {
            procs::tight_timer_slack();
            let mut handles = Vec::new();
            for seq in 0u64.. {
                let intended = start + Duration::from_secs_f64(seq as f64 / rate);
                if intended >= end {
                    return (handles, false);
                }
                let now = Instant::now();
                if intended > now {
                    std::thread::sleep(intended - now);
                }
                if f.fetch_add(1, Ordering::Relaxed) >= MAX_IN_FLIGHT {
                    return (handles, true);
                }
                let (caller, tally, f) = (caller.clone(), t.clone(), f.clone());
                let measured = intended >= measure_from;
                handles.push(runtime.spawn(async move {
                    let began = Instant::now();
                    let result = caller.call(seq).await;
                    let done = Instant::now();
                    f.fetch_sub(1, Ordering::Relaxed);
                    if measured {
                        let mut tally = tally.lock().unwrap_or_else(|p| p.into_inner());
                        tally.record(done - intended, Some(began - intended), result);
                    }
                }));
            }
            (handles, false)
        })?;
    let (handles, overloaded) = tokio::task::spawn_blocking(move || pacer.join())
        .await?
        .map_err(|_| anyhow::anyhow!("the pacer thread panicked"))?;
    let drained = tokio::time::timeout(DRAIN, async {
        for h in handles {
            let _ = h.await;
        }
    })
    .await;
    let readings = watched.finish();
    if drained.is_err() {
        anyhow::bail!("calls were still unanswered {DRAIN:?} after the run ended");
    }
    let tally = std::mem::take(&mut *tally.lock().unwrap_or_else(|p| p.into_inner()));
    Ok(outcome(tally, measure, overloaded, readings))
}

/// `concurrency` callers, each calling again as soon as it has an answer, for
/// `warmup + measure`; calls started in the measured window are recorded.
pub async fn closed_loop<C: Caller>(
    caller: Arc<C>,
    concurrency: usize,
    warmup: Duration,
    measure: Duration,
    watch: Watched,
) -> anyhow::Result<Outcome> {
    let tally = Arc::new(Mutex::new(Tally::default()));
    let seq = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + measure;
    let watched = Watch::new(watch);
    watched.start_at(measure_from);
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (caller, tally, seq) = (caller.clone(), tally.clone(), seq.clone());
        workers.spawn(async move {
            let mut local = Tally::default();
            loop {
                let began = Instant::now();
                if began >= end {
                    break;
                }
                let result = caller.call(seq.fetch_add(1, Ordering::Relaxed)).await;
                if began >= measure_from {
                    local.record(began.elapsed(), None, result);
                }
            }
            let mut tally = tally.lock().unwrap_or_else(|p| p.into_inner());
            merge(&mut tally, local);
        });
    }
    // CPU is read when the window closes, before the stragglers' answers.
    tokio::time::sleep_until(end.into()).await;
    let readings = watched.finish();
    let drained = tokio::time::timeout(DRAIN, async {
        while workers.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        anyhow::bail!("calls were still unanswered {DRAIN:?} after the run ended");
    }
    let tally = std::mem::take(&mut *tally.lock().unwrap_or_else(|p| p.into_inner()));
    Ok(outcome(tally, measure, false, readings))
}

fn merge(into: &mut Tally, from: Tally) {
    into.calls += from.calls;
    into.errors += from.errors;
    if into.first_error.is_none() {
        into.first_error = from.first_error;
    }
    if let Some(h) = from.latency {
        let _ = into.latency.get_or_insert_with(histogram).add(&h);
    }
}

/// Run `measure` again (at most `retries` more times) while other processes or the hypervisor
/// disturb it by more than a tenth of a CPU; keep the least disturbed outcome.
pub async fn least_disturbed<F, Fut>(
    what: &str,
    retries: usize,
    mut measure: F,
) -> anyhow::Result<Outcome>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Outcome>>,
{
    let mut best = measure().await?;
    for _ in 0..retries {
        if !best.interference.disturbing() {
            break;
        }
        eprintln!(
            "  {what}: other processes took {} of a CPU; measuring again",
            best.interference.describe()
        );
        let again = measure().await?;
        let load = |o: &Outcome| o.interference.others + o.interference.steal;
        if load(&again) < load(&best) {
            best = again;
        }
    }
    Ok(best)
}
