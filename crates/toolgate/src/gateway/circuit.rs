//! A circuit breaker per upstream server (`circuit:` in its config): after
//! `failures` calls in a row fail for the server's own reasons (it could not be
//! reached, its connection broke, it broke the protocol, it timed out), the
//! circuit opens and calls fail at once for `cooldown` instead of piling up on
//! a server that is not answering. Then one call is let through as a probe: its
//! success closes the circuit, its failure opens it again. JSON-RPC errors the
//! server answers with are not failures: the server is up.

use crate::config::CircuitConfig;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub(crate) struct Circuit {
    cfg: Option<CircuitConfig>,
    st: Mutex<State>,
}

#[derive(Default)]
struct State {
    failures: u32,
    open_until: Option<Instant>,
    probing: bool,
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
            cfg,
            st: Mutex::default(),
        }
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
        if self.cfg.is_none() {
            return Ok(pass(false));
        }
        let mut st = self.lock();
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

    fn record(&self, ok: bool, probe: bool, server: &str) {
        let Some(cfg) = &self.cfg else { return };
        let mut st = self.lock();
        if probe {
            st.probing = false;
        }
        if ok {
            if st.open_until.take().is_some() {
                tracing::info!(server, "circuit closed: the server answers again");
            }
            st.failures = 0;
            return;
        }
        st.failures = st.failures.saturating_add(1);
        if probe || st.failures >= cfg.failures {
            if st.open_until.is_none() || probe {
                tracing::warn!(
                    server,
                    failures = st.failures,
                    cooldown = ?cfg.cooldown.0,
                    "circuit open: calls fail at once until the cooldown ends"
                );
            }
            st.open_until = Some(Instant::now() + cfg.cooldown.0);
        }
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
        c.admit().unwrap().failed("s");
        std::thread::sleep(Duration::from_millis(40));
        c.admit().unwrap().failed("s");
        assert!(c.is_open());
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
}
