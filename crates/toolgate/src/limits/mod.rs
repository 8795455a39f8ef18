//! Limits on calls: rate limits and quotas keyed by who calls what, concurrency
//! limits, request and result sizes, and open streams per session.
//!
//! The config's `limits:` list compiles once into an immutable [`Snapshot`]
//! (`rules.rs`: matching and bucket keys), held behind `arc-swap` so a config
//! reload can swap it while calls read it without a lock. Budgets live in a
//! [`Limiter`]: the trait is the seam for a shared implementation (Redis, for
//! several replicas); `local.rs` is the in-process one. Callers never see which
//! one is in use.
//!
//! A refusal is a [`Refused`], which maps to one stable JSON-RPC code,
//! [`LIMITED`], with a machine-readable `error.data`.

pub mod gcra;
pub mod local;
pub mod rules;
pub mod shared;

pub use local::LocalLimiter;
pub use rules::{Call, Rule, Snapshot};
pub use shared::RedisLimiter;

use crate::jsonrpc::ErrorObject;
use arc_swap::ArcSwap;
use futures::future::BoxFuture;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// The JSON-RPC error code of every limit refusal (next to -32040 forbidden
/// and -32041 audit unavailable).
pub const LIMITED: i64 = -32042;

/// The retry hint of refusals whose end the gateway cannot predict (a slot
/// frees when some other call ends): a nominal second.
pub const NOMINAL_RETRY: Duration = Duration::from_secs(1);

/// What kind of budget a rule keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    /// GCRA: `count` per `per`, with `burst` at once.
    Rate {
        count: u32,
        per: Duration,
        burst: u32,
    },
    /// A count per calendar window (UTC).
    Quota { count: u64, window: Duration },
    /// Calls in flight at once.
    Concurrency { max: u32 },
}

/// Why a call was refused: each variant is one `error.data.code`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("rate limit `{rule}` exceeded; retry in {}", secs(*.retry_after))]
    RateLimited {
        rule: Arc<str>,
        retry_after: Duration,
    },
    #[error("quota `{rule}` is used up; it renews in {}", secs(*.retry_after))]
    QuotaExceeded {
        rule: Arc<str>,
        retry_after: Duration,
    },
    #[error("limit `{rule}` allows no more calls in flight; retry when one ends")]
    ConcurrencyLimited { rule: Arc<str> },
    #[error("the request is {size} bytes; server `{server}` takes at most {max}")]
    RequestTooLarge {
        server: Arc<str>,
        size: usize,
        max: usize,
    },
    #[error("the result is {size} bytes; server `{server}` may return at most {max}")]
    ResultTooLarge {
        server: Arc<str>,
        size: usize,
        max: usize,
    },
    #[error("this session already has {max} streams open; close one first")]
    TooManyStreams { max: usize },
    #[error("limit `{rule}` cannot be checked: {reason}")]
    Unavailable { rule: Arc<str>, reason: String },
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

impl Refused {
    /// The stable `error.data.code` (also the audit event's `reason_code`).
    pub fn code(&self) -> &'static str {
        match self {
            Refused::RateLimited { .. } => "rate_limited",
            Refused::QuotaExceeded { .. } => "quota_exceeded",
            Refused::ConcurrencyLimited { .. } => "concurrency_limited",
            Refused::RequestTooLarge { .. } => "request_too_large",
            Refused::ResultTooLarge { .. } => "result_too_large",
            Refused::TooManyStreams { .. } => "too_many_streams",
            Refused::Unavailable { .. } => "limiter_unavailable",
        }
    }

    /// The kind of limit, for the metric's `kind` label.
    pub fn kind(&self) -> &'static str {
        match self {
            Refused::RateLimited { .. } => "rate",
            Refused::QuotaExceeded { .. } => "quota",
            Refused::ConcurrencyLimited { .. } => "concurrency",
            Refused::RequestTooLarge { .. } => "request_size",
            Refused::ResultTooLarge { .. } => "result_size",
            Refused::TooManyStreams { .. } => "streams",
            Refused::Unavailable { .. } => "unavailable",
        }
    }

    /// The rule (or setting) that refused.
    pub fn limit(&self) -> &str {
        match self {
            Refused::RateLimited { rule, .. }
            | Refused::QuotaExceeded { rule, .. }
            | Refused::ConcurrencyLimited { rule }
            | Refused::Unavailable { rule, .. } => rule,
            Refused::RequestTooLarge { .. } => "max_request_bytes",
            Refused::ResultTooLarge { .. } => "max_result_bytes",
            Refused::TooManyStreams { .. } => "max_session_streams",
        }
    }

    /// When trying again can succeed; `None` when it cannot (the same request
    /// will always be too large).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Refused::RateLimited { retry_after, .. }
            | Refused::QuotaExceeded { retry_after, .. } => Some(*retry_after),
            Refused::ConcurrencyLimited { .. }
            | Refused::TooManyStreams { .. }
            | Refused::Unavailable { .. } => Some(NOMINAL_RETRY),
            Refused::RequestTooLarge { .. } | Refused::ResultTooLarge { .. } => None,
        }
    }

    /// The client's error: [`LIMITED`], this message, and
    /// `data: {code, limit, retryAfterMs?}`.
    pub fn to_error(&self) -> ErrorObject {
        let mut data = json!({ "code": self.code(), "limit": self.limit() });
        if let Some(after) = self.retry_after() {
            data["retryAfterMs"] = json!(retry_ms(after));
        }
        ErrorObject::new(LIMITED, self.to_string()).with_data(data)
    }
}

/// Milliseconds, rounded up: a client that waits exactly this long is allowed.
pub fn retry_ms(d: Duration) -> u64 {
    u64::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)
}

/// The `Retry-After` seconds (rounded up, at least 1) of a limit error the
/// gateway sent, read back from its `error.data`; `None` for other errors.
pub fn retry_after_secs(e: &ErrorObject) -> Option<u64> {
    if e.code != LIMITED {
        return None;
    }
    let ms = e.data.as_ref()?.get("retryAfterMs")?.as_u64()?;
    Some(ms.div_ceil(1000).max(1))
}

/// What a limiter answers when a budget has no room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// Over the budget; room again after this long.
    Exceeded { retry_after: Duration },
    /// The budget could not be read (a shared store is unreachable).
    Unavailable(String),
}

/// One unit of a budget that must be given back: a concurrency slot. Dropping
/// it (the call ended, was cancelled or timed out) gives it back.
pub struct Permit {
    _held: Option<Box<dyn Send + Sync>>,
}

impl Permit {
    /// Nothing to give back (rates and quotas are spent, not held).
    pub fn spent() -> Permit {
        Permit { _held: None }
    }

    /// A slot released when `guard` is dropped.
    pub fn held(guard: impl Send + Sync + 'static) -> Permit {
        Permit {
            _held: Some(Box::new(guard)),
        }
    }
}

/// Where budgets live. `key` names one budget of `rule` (the rule's id and
/// fingerprint, then the values of its `per` dimensions): an implementation
/// keeps one budget per distinct key and may forget a key whose budget is
/// full again. [`LocalLimiter`] keeps them in this process; [`RedisLimiter`]
/// in a store the replicas share, with the store's clock (`docs/limits.md`).
pub trait Limiter: Send + Sync + 'static {
    /// Take one unit of `rule`'s budget for `key`.
    fn acquire<'a>(&'a self, key: &'a str, rule: &'a Rule)
    -> BoxFuture<'a, Result<Permit, Denied>>;

    /// Forget budgets that are full again (bounded state); called every few
    /// seconds.
    fn sweep(&self) {}

    /// Budgets currently remembered, for metrics.
    fn keys(&self) -> usize {
        0
    }
}

/// Where `config` keeps budgets: in Redis with `redis:` (shared by replicas),
/// else in this process. A URL that cannot be used was refused by `load`;
/// should one slip through, every limited call is refused rather than
/// silently unlimited.
pub fn limiter_for(config: &crate::config::Config) -> Arc<dyn Limiter> {
    let Some(url) = config.redis.as_deref() else {
        return Arc::new(LocalLimiter::default());
    };
    match RedisLimiter::new(url) {
        Ok(l) => Arc::new(l),
        Err(e) => Arc::new(Broken(e)),
    }
}

/// A limiter that refuses every call: the configured store is unusable.
struct Broken(String);

impl Limiter for Broken {
    fn acquire<'a>(
        &'a self,
        _key: &'a str,
        _rule: &'a Rule,
    ) -> BoxFuture<'a, Result<Permit, Denied>> {
        Box::pin(std::future::ready(Err(Denied::Unavailable(self.0.clone()))))
    }
}

/// The limits in force: the compiled rules (swappable) and the budgets.
pub struct Limits {
    snapshot: ArcSwap<Snapshot>,
    limiter: Arc<dyn Limiter>,
}

impl Limits {
    /// `config`'s limits with budgets in `limiter`.
    pub fn new(config: &crate::config::Config, limiter: Arc<dyn Limiter>) -> Limits {
        Limits {
            snapshot: ArcSwap::from_pointee(Snapshot::compile(config)),
            limiter,
        }
    }

    /// The rules in force now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Put `config`'s limits in force. Budgets of rules whose id and numbers
    /// did not change carry over (their keys stay the same); calls in flight
    /// keep the permits they hold.
    pub fn swap(&self, config: &crate::config::Config) {
        self.snapshot.store(Arc::new(Snapshot::compile(config)));
    }

    pub fn limiter(&self) -> &dyn Limiter {
        &*self.limiter
    }

    /// Take a unit of every rule of `snapshot` (the one in force, from
    /// [`Limits::snapshot`]) that matches `call`, concurrency first, then
    /// rates, then quotas: a call refused by a rate never spends its quota.
    /// The first refusal ends the check; slots taken for it are given back.
    pub async fn admit(
        &self,
        snapshot: &Snapshot,
        call: &Call<'_>,
    ) -> Result<Vec<Permit>, Refused> {
        let mut permits = Vec::new();
        for rule in snapshot.matching(call) {
            let key = rule.key(call);
            match self.limiter.acquire(&key, rule).await {
                Ok(p) => permits.push(p),
                Err(denied) => return Err(rule.refusal(denied)),
            }
        }
        Ok(permits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_str;

    fn config(limits: &str) -> crate::config::Config {
        let text = format!("servers:\n  fx: {{ command: x }}\nlimits:\n{limits}");
        load_str(&text, "t.yaml", false).unwrap()
    }

    async fn call(limits: &Limits) -> Result<Vec<Permit>, Refused> {
        let p = crate::auth::Principal::anonymous("ann");
        let c = Call {
            principal: &p,
            endpoint: "/mcp",
            server: "fx",
            method: "tools/call",
            item: Some("fx__echo"),
        };
        limits.admit(&limits.snapshot(), &c).await
    }

    #[tokio::test]
    async fn a_swap_keeps_the_budgets_of_unchanged_rules() {
        let limits = Limits::new(
            &config("  - { id: r, rate: 1/h, burst: 2 }\n"),
            Arc::new(LocalLimiter::default()),
        );
        call(&limits).await.unwrap();
        call(&limits).await.unwrap();
        assert!(matches!(
            call(&limits).await,
            Err(Refused::RateLimited { .. })
        ));
        // The same rule beside a new one: still spent.
        limits.swap(&config(
            "  - { id: r, rate: 1/h, burst: 2 }\n  - { id: c, concurrency: 1 }\n",
        ));
        assert!(matches!(
            call(&limits).await,
            Err(Refused::RateLimited { .. })
        ));
        // The concurrency slot taken before the rate refused is back.
        let held = {
            limits.swap(&config("  - { id: c, concurrency: 1 }\n"));
            call(&limits).await.unwrap()
        };
        assert!(matches!(
            call(&limits).await,
            Err(Refused::ConcurrencyLimited { .. })
        ));
        drop(held);
        // A changed rule starts afresh.
        limits.swap(&config("  - { id: r, rate: 2/h, burst: 2 }\n"));
        call(&limits).await.unwrap();
    }

    #[test]
    fn refusals_carry_code_limit_and_hint() {
        let r = Refused::RateLimited {
            rule: "refunds".into(),
            retry_after: Duration::from_micros(1_200_001),
        };
        let e = r.to_error();
        assert_eq!(e.code, LIMITED);
        let data = e.data.clone().unwrap();
        assert_eq!(data["code"], "rate_limited");
        assert_eq!(data["limit"], "refunds");
        assert_eq!(data["retryAfterMs"], 1201);
        assert_eq!(retry_after_secs(&e), Some(2));
        let big = Refused::RequestTooLarge {
            server: "fx".into(),
            size: 10,
            max: 5,
        }
        .to_error();
        assert!(big.data.as_ref().unwrap().get("retryAfterMs").is_none());
        assert_eq!(retry_after_secs(&big), None);
    }
}
