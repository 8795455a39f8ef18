//! Which gateway features a run measures.
//!
//! `current` is the gateway as it is today. `full` adds authentication, Cedar policy, audit and
//! metrics — the stack the "added p99 ≤ 1 ms" budget is written for — and plugs in here once
//! those features exist: `apply` adds their settings to every generated gateway config and
//! `client_headers` gives the credentials a client then needs. Every measurement goes through
//! these two functions, so nothing else has to change.

use serde_json::Value;

/// What `--stack full` reports until the features it needs exist.
pub const FULL_STACK_MISSING: &str =
    "not available: needs authentication/policy/audit (issues 5 and 6)";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Stack {
    /// The gateway as built today: routing, sessions, transports.
    Current,
    /// Authentication, Cedar policy, audit and metrics on top (not available yet).
    Full,
}

/// The stack cannot be measured yet; the message says what it waits for.
#[derive(Debug)]
pub struct NotAvailable(pub &'static str);

impl std::fmt::Display for NotAvailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for NotAvailable {}

impl Stack {
    pub fn name(self) -> &'static str {
        match self {
            Stack::Current => "current",
            Stack::Full => "full",
        }
    }

    /// Fails at once, before anything starts, if this stack cannot be measured.
    pub fn check(self) -> Result<(), NotAvailable> {
        self.apply(&mut Value::Null)
    }

    /// Add this stack's settings to a generated gateway config.
    pub fn apply(self, _config: &mut Value) -> Result<(), NotAvailable> {
        match self {
            Stack::Current => Ok(()),
            // Later: an authentication block (a static test issuer), a Cedar policy set that
            // permits the benchmark's principal, audit to a file sink, the metrics endpoint.
            Stack::Full => Err(NotAvailable(FULL_STACK_MISSING)),
        }
    }

    /// Headers every benchmark client sends (e.g. a bearer token once authentication exists).
    pub fn client_headers(self) -> Result<Vec<(&'static str, String)>, NotAvailable> {
        match self {
            Stack::Current => Ok(Vec::new()),
            Stack::Full => Err(NotAvailable(FULL_STACK_MISSING)),
        }
    }
}
