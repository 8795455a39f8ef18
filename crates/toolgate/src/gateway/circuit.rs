//! A circuit breaker per upstream server (`circuit:` in its config): after
//! `failures` calls in a row fail for the server's own reasons (it could not be
//! reached, its connection broke, it broke the protocol, it timed out), or once
//! `error_rate` of the calls within `window` failed, the circuit opens and calls
//! fail at once for `cooldown` instead of piling up on a server that is not
//! answering. Then one call — or the supervisor's health probe, which is sent
//! as soon as the cooldown ends — is let through as a probe: its success closes
//! the circuit, its failure opens it again. JSON-RPC errors the server answers
//! with are not failures: the server is up.
//!
//! Whether the circuit is tripped (open, or cooled down and waiting for its
//! probe) is published on a watch channel: the supervisor takes a tripped
//! `failure: open` server's items out of discovery until it closes.

use crate::config::CircuitConfig;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::watch;

pub(crate) struct Circuit {
    st: Mutex<State>,
    tripped: watch::Sender<bool>,
}

struct State {
    cfg: Option<CircuitConfig>,
    failures: u32,
    open_until: Option<Instant>,
    probing: bool,
    /// The error-rate window: when it began, calls and failures in it.
    window_start: Instant,
    calls: u32,
    failed: u32,
    /// How many times the circuit opened.
    opened: u64,
}

/// Where a circuit stands, for `toolgate catalog` and the admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    Closed,
    /// Calls fail at once for `retry_after` more.
    Open,
    /// The cooldown is over; the next call or health probe decides.
    HalfOpen,
}

impl CircuitState {
    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half_open",
        }
    }
}

/// A circuit's state at one moment.
#[derive(Debug, Clone)]
pub struct CircuitSnapshot {
    pub state: CircuitState,
    /// Failed calls in a row.
    pub failures: u32,
    /// Until the cooldown ends (open only).
    pub retry_after: Option<Duration>,
    /// Calls and failures in the current error-rate window.
    pub window_calls: u32,
    pub window_failed: u32,
    pub opened: u64,
}

/// Leave to call the server; say how the call went with [`Pass::ok`] or
/// [`Pass::failed`]. A probe dropped unanswered (the caller went away) lets
/// the next call probe instead.
pub(crate) struct Pass<'a> {
    circuit: &'a Circuit,
    probe: bool,
    done: bool,
}

impl Circuit {
    pub fn new(cfg: Option<CircuitConfig>) -> Circuit {
        Circuit {
            st: Mutex::new(State {
                cfg,
                failures: 0,
                open_until: None,
                probing: false,
                window_start: Instant::now(),
                calls: 0,
                failed: 0,
                opened: 0,
            }),
            tripped: watch::Sender::new(false),
        }
    }

    pub fn is_configured(&self) -> bool {
        self.lock().cfg.is_some()
    }

    /// New settings from a config reload. Taking the breaker away closes it;
    /// a circuit that stays configured keeps its state.
    pub fn reconfigure(&self, cfg: Option<CircuitConfig>) {
        let mut st = self.lock();
        if cfg.is_none() && st.open_until.take().is_some() {
            self.set_tripped(false);
        }
        st.failures = if cfg.is_some() { st.failures } else { 0 };
        st.cfg = cfg;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.st.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A pass for one call, or how long until the circuit lets one through.
    pub fn admit(&self) -> Result<Pass<'_>, Duration> {
        let pass = |probe| Pass {
            circuit: self,
            probe,
            done: false,
        };
        let mut st = self.lock();
        if st.cfg.is_none() {
            return Ok(pass(false));
        }
        let Some(until) = st.open_until else {
            return Ok(pass(false));
        };
        let now = Instant::now();
        if now < until {
            return Err(until - now);
        }
        if st.probing {
            // One probe at a time; the others wait for its verdict.
            return Err(Duration::from_millis(100));
        }
        st.probing = true;
        Ok(pass(true))
    }

    /// Whether calls are being refused now.
    pub fn is_open(&self) -> bool {
        self.lock()
            .open_until
            .is_some_and(|until| Instant::now() < until)
    }

    /// Whether the circuit is open or waiting for its probe.
    pub fn is_tripped(&self) -> bool {
        *self.tripped.borrow()
    }

    /// Hears every change of [`Circuit::is_tripped`].
    pub fn watch(&self) -> watch::Receiver<bool> {
        self.tripped.subscribe()
    }

    /// When the cooldown ends, if the circuit is open.
    pub fn open_until(&self) -> Option<Instant> {
        self.lock().open_until
    }

    pub fn snapshot(&self) -> CircuitSnapshot {
        let st = self.lock();
        let now = Instant::now();
        let (state, retry_after) = match st.open_until {
            None => (CircuitState::Closed, None),
            Some(until) if now < until => (CircuitState::Open, Some(until - now)),
            Some(_) => (CircuitState::HalfOpen, None),
        };
        CircuitSnapshot {
            state,
            failures: st.failures,
            retry_after,
            window_calls: st.calls,
            window_failed: st.failed,
            opened: st.opened,
        }
    }

    /// A health probe's verdict. After the cooldown the probe is the circuit's
    /// probe: it closes or reopens it. Before, a failure counts like a failed
    /// call, and an answer changes nothing (calls may fail while pings pass).
    pub fn probed(&self, ok: bool, server: &str) {
        // One lock for the check and the verdict: a call must not become the
        // probe in between.
        let mut st = self.lock();
        let half_open = st
            .open_until
            .is_some_and(|until| Instant::now() >= until && !st.probing);
        if half_open {
            self.record_in(&mut st, ok, true, server);
        } else if !ok && st.open_until.is_none() {
            self.record_in(&mut st, false, false, server);
        }
    }

    fn record(&self, ok: bool, probe: bool, server: &str) {
        self.record_in(&mut self.lock(), ok, probe, server);
    }

    fn record_in(&self, st: &mut State, ok: bool, probe: bool, server: &str) {
        let Some(cfg) = st.cfg else { return };
        if probe {
            st.probing = false;
        }
        let now = Instant::now();
        if now.duration_since(st.window_start) >= cfg.window.0 {
            st.window_start = now;
            st.calls = 0;
            st.failed = 0;
        }
        if ok {
            if st.open_until.take().is_some() {
                tracing::info!(server, "circuit closed: the server answers again");
                self.set_tripped(false);
            }
            st.failures = 0;
            if !probe {
                st.calls = st.calls.saturating_add(1);
            }
            return;
        }
        st.failures = st.failures.saturating_add(1);
        st.calls = st.calls.saturating_add(1);
        st.failed = st.failed.saturating_add(1);
        let rate = cfg.error_rate.is_some_and(|rate| {
            st.calls >= cfg.min_calls.max(1) && f64::from(st.failed) >= rate * f64::from(st.calls)
        });
        if probe || st.failures >= cfg.failures || rate {
            if st.open_until.is_none() || probe {
                tracing::warn!(
                    server,
                    failures = st.failures,
                    window_calls = st.calls,
                    window_failed = st.failed,
                    cooldown = ?cfg.cooldown.0,
                    "circuit open: calls fail at once until the cooldown ends"
                );
            }
            if st.open_until.is_none() {
                st.opened += 1;
            }
            st.open_until = Some(now + cfg.cooldown.0);
            st.window_start = now;
            st.calls = 0;
            st.failed = 0;
            self.set_tripped(true);
        }
    }

    /// Publish a change of [`Circuit::is_tripped`]; a failed probe that
    /// reopens an open circuit is not one.
    fn set_tripped(&self, tripped: bool) {
        self.tripped
            .send_if_modified(|v| std::mem::replace(v, tripped) != tripped);
    }
}

impl Pass<'_> {
    pub fn ok(mut self, server: &str) {
        self.done = true;
        self.circuit.record(true, self.probe, server);
    }

    pub fn failed(mut self, server: &str) {
        self.done = true;
        self.circuit.record(false, self.probe, server);
    }
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        if self.probe && !self.done {
            self.circuit.lock().probing = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Seconds;

    fn circuit(failures: u32, cooldown_ms: u64) -> Circuit {
        Circuit::new(Some(CircuitConfig {
            failures,
            cooldown: Seconds(Duration::from_millis(cooldown_ms)),
            error_rate: None,
            window: Seconds(Duration::from_secs(60)),
            min_calls: 20,
        }))
    }

    #[test]
    fn opens_after_failures_in_a_row_and_a_probe_closes_it() {
        let c = circuit(3, 50);
        c.admit().unwrap().failed("s");
        c.admit().unwrap().ok("s"); // a success resets the count
        for _ in 0..2 {
            c.admit().unwrap().failed("s");
        }
        assert!(!c.is_open());
        c.admit().unwrap().failed("s");
        assert!(c.is_open());
        assert!(c.admit().is_err());
        std::thread::sleep(Duration::from_millis(60));
        let probe = c.admit().expect("a probe after the cooldown");
        assert!(c.admit().is_err(), "one probe at a time");
        probe.ok("s");
        assert!(!c.is_open());
        assert!(c.admit().is_ok());
    }

    #[test]
    fn a_failed_probe_opens_it_again_and_an_abandoned_one_frees_the_slot() {
        let c = circuit(1, 30);
        let mut tripped = c.watch();
        c.admit().unwrap().failed("s");
        assert!(*tripped.borrow_and_update());
        std::thread::sleep(Duration::from_millis(40));
        c.admit().unwrap().failed("s");
        assert!(c.is_open());
        assert!(
            !tripped.has_changed().unwrap(),
            "reopening an open circuit is not news"
        );
        std::thread::sleep(Duration::from_millis(40));
        drop(c.admit().unwrap());
        assert!(c.admit().is_ok(), "the abandoned probe's turn passed on");
    }

    #[test]
    fn without_config_nothing_is_refused() {
        let c = Circuit::new(None);
        for _ in 0..100 {
            c.admit().unwrap().failed("s");
        }
        assert!(!c.is_open());
    }

    #[test]
    fn an_error_rate_opens_it_once_enough_calls_were_made() {
        let c = Circuit::new(Some(CircuitConfig {
            failures: 100,
            cooldown: Seconds(Duration::from_secs(60)),
            error_rate: Some(0.5),
            window: Seconds(Duration::from_secs(60)),
            min_calls: 10,
        }));
        // Failures alternate with successes: never many in a row.
        for i in 0..9 {
            let pass = c.admit().unwrap();
            if i % 2 == 0 {
                pass.failed("s");
            } else {
                pass.ok("s");
            }
        }
        assert!(!c.is_open(), "9 calls: under min_calls");
        c.admit().unwrap().ok("s");
        assert!(!c.is_open(), "5 of 10 failed only after this one fails");
        c.admit().unwrap().failed("s");
        assert!(c.is_open(), "6 of 11 failed");
        assert!(c.is_tripped());
        let snap = c.snapshot();
        assert_eq!(snap.state, CircuitState::Open);
        assert_eq!(snap.opened, 1);
        assert!(snap.retry_after.is_some());
    }

    #[test]
    fn health_probes_count_failures_and_close_it_after_the_cooldown() {
        let c = circuit(2, 30);
        let mut tripped = c.watch();
        c.probed(true, "s");
        c.probed(false, "s");
        assert!(!c.is_tripped());
        c.probed(false, "s");
        assert!(c.is_tripped());
        assert!(tripped.has_changed().unwrap());
        assert!(*tripped.borrow_and_update());
        c.probed(true, "s");
        assert!(
            c.is_tripped(),
            "an answer during the cooldown changes nothing"
        );
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(c.snapshot().state, CircuitState::HalfOpen);
        c.probed(true, "s");
        assert!(!c.is_tripped());
        assert!(!*tripped.borrow_and_update());
        assert_eq!(c.snapshot().state, CircuitState::Closed);
    }
}
