//! The shared limiter: budgets in Redis (or Valkey), so that every replica of
//! a gateway spends the same budgets. Each check is one script run on the
//! server, atomic there and timed by the server's clock (`TIME`), so replicas'
//! clocks never matter. Keys are the in-process limiter's keys under
//! `toolgate:limit:`; every key expires on its own once its budget is full
//! again, so nothing needs sweeping.
//!
//! A store that cannot be reached refuses calls (`limiter_unavailable`),
//! failing closed like the audit trail: a limit that silently stopped holding
//! would be worse than a clear error.

use super::gcra::Gcra;
use super::{Budget, Denied, Limiter, Permit, Rule};
use futures::future::BoxFuture;
use redis::aio::ConnectionManager;
use std::time::Duration;
use tokio::sync::OnceCell;

/// How long a concurrency slot is held without being renewed: a replica that
/// dies with calls in flight frees their slots after this.
const LEASE: Duration = Duration::from_secs(30);
/// How long a check may wait for the store.
const TIMEOUT: Duration = Duration::from_secs(1);
const PREFIX: &str = "toolgate:limit:";

/// GCRA on the key's TAT, in microseconds of the server's clock. Returns 0
/// when admitted, else the wait in microseconds.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or 0)
if tat < now then tat = now end
local ahead = tat - now
if ahead > tolerance then return ahead - tolerance end
local new = tat + interval
redis.call('SET', KEYS[1], string.format('%d', new), 'PX', math.floor((new - now) / 1000) + 1)
return 0
";

/// A count per calendar window of `ARGV[1]` seconds, at most `ARGV[2]`.
/// Returns 0 when admitted, else the seconds until the window ends.
const QUOTA: &str = r"
local now = tonumber(redis.call('TIME')[1])
local length = tonumber(ARGV[1])
local max = tonumber(ARGV[2])
local window = math.floor(now / length)
local state = redis.call('HMGET', KEYS[1], 'w', 'n')
local n = 0
if tonumber(state[1]) == window then n = tonumber(state[2]) or 0 end
local ends = (window + 1) * length
if n >= max then return math.max(ends - now, 1) end
redis.call('HSET', KEYS[1], 'w', string.format('%d', window), 'n', n + 1)
redis.call('EXPIREAT', KEYS[1], ends + 1)
return 0
";

/// Take a slot: a member of the key's sorted set, scored by its lease's end
/// (ms). Expired leases are dropped first. Returns 1 when taken, 0 if full.
const TAKE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local max = tonumber(ARGV[1])
local lease = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= max then return 0 end
redis.call('ZADD', KEYS[1], now + lease, ARGV[3])
redis.call('PEXPIRE', KEYS[1], lease)
return 1
";

/// Renew a slot's lease (only if it is still held).
const RENEW: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[1])
if redis.call('ZADD', KEYS[1], 'XX', 'CH', now + lease, ARGV[2]) == 1 then
  redis.call('PEXPIRE', KEYS[1], lease)
end
return 1
";

/// Budgets in a Redis (or Valkey) server shared by the replicas.
pub struct RedisLimiter {
    client: redis::Client,
    /// The URL's password, kept out of every message.
    password: Option<String>,
    conn: OnceCell<ConnectionManager>,
    gcra: redis::Script,
    quota: redis::Script,
    take: redis::Script,
    renew: redis::Script,
}

impl RedisLimiter {
    /// A limiter on the server at `url` (`redis://…`); it connects on first
    /// use and reconnects by itself.
    pub fn new(url: &str) -> Result<RedisLimiter, String> {
        let client = redis::Client::open(url).map_err(|e| e.to_string())?;
        let password = url::Url::parse(url)
            .ok()
            .and_then(|u| u.password().map(str::to_owned))
            .filter(|p| !p.is_empty());
        Ok(RedisLimiter {
            client,
            password,
            conn: OnceCell::new(),
            gcra: redis::Script::new(GCRA),
            quota: redis::Script::new(QUOTA),
            take: redis::Script::new(TAKE),
            renew: redis::Script::new(RENEW),
        })
    }

    async fn connection(&self) -> Result<ConnectionManager, String> {
        let conn = self
            .conn
            .get_or_try_init(|| async {
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(TIMEOUT))
                    .set_response_timeout(Some(TIMEOUT))
                    .set_number_of_retries(2);
                ConnectionManager::new_with_config(self.client.clone(), config).await
            })
            .await
            .map_err(|e| self.scrub(format!("the limit store cannot be reached: {e}")))?;
        Ok(conn.clone())
    }

    /// `text` without the URL's password (the client's errors may quote it).
    fn scrub(&self, text: String) -> String {
        match &self.password {
            Some(p) => text.replace(p.as_str(), "***"),
            None => text,
        }
    }

    async fn check(&self, key: &str, rule: &Rule) -> Result<Permit, Denied> {
        let mut conn = self.connection().await.map_err(Denied::Unavailable)?;
        let key = format!("{PREFIX}{key}");
        let unavailable = |e: redis::RedisError| {
            Denied::Unavailable(self.scrub(format!("the limit store failed: {e}")))
        };
        match rule.budget {
            Budget::Rate { count, per, burst } => {
                let g = Gcra::new(count, per, burst);
                let wait: u64 = self
                    .gcra
                    .key(&key)
                    .arg((g.interval / 1000).max(1))
                    .arg(g.tolerance / 1000)
                    .invoke_async(&mut conn)
                    .await
                    .map_err(unavailable)?;
                match wait {
                    0 => Ok(Permit::spent()),
                    us => Err(Denied::Exceeded {
                        retry_after: Duration::from_micros(us),
                    }),
                }
            }
            Budget::Quota { count, window } => {
                let wait: u64 = self
                    .quota
                    .key(&key)
                    .arg(window.as_secs().max(1))
                    .arg(count)
                    .invoke_async(&mut conn)
                    .await
                    .map_err(unavailable)?;
                match wait {
                    0 => Ok(Permit::spent()),
                    secs => Err(Denied::Exceeded {
                        retry_after: Duration::from_secs(secs),
                    }),
                }
            }
            Budget::Concurrency { max } => {
                let id = crate::seal::hex(&rand::random::<[u8; 16]>());
                let lease = u64::try_from(LEASE.as_millis()).unwrap_or(u64::MAX);
                let taken: u64 = self
                    .take
                    .key(&key)
                    .arg(max)
                    .arg(lease)
                    .arg(&id)
                    .invoke_async(&mut conn)
                    .await
                    .map_err(unavailable)?;
                if taken == 0 {
                    return Err(Denied::Exceeded {
                        retry_after: super::NOMINAL_RETRY,
                    });
                }
                Ok(Permit::held(hold(conn, self.renew.clone(), key, id)))
            }
        }
    }
}

/// Keep a slot's lease alive until the permit is dropped, then give it back.
fn hold(
    mut conn: ConnectionManager,
    renew: redis::Script,
    key: String,
    id: String,
) -> tokio::sync::oneshot::Sender<()> {
    let (held, mut released) = tokio::sync::oneshot::channel::<()>();
    let lease = u64::try_from(LEASE.as_millis()).unwrap_or(u64::MAX);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                // The permit was dropped (its sender with it).
                _ = &mut released => break,
                _ = tokio::time::sleep(LEASE / 3) => {
                    let renewed: redis::RedisResult<u64> =
                        renew.key(&key).arg(lease).arg(&id).invoke_async(&mut conn).await;
                    if let Err(e) = renewed {
                        tracing::warn!(error = %e, "a concurrency lease could not be renewed");
                    }
                }
            }
        }
        let released: redis::RedisResult<u64> = redis::cmd("ZREM")
            .arg(&key)
            .arg(&id)
            .query_async(&mut conn)
            .await;
        if let Err(e) = released {
            // The lease runs out by itself.
            tracing::warn!(error = %e, "a concurrency slot could not be given back; it frees when its lease ends");
        }
    });
    held
}

impl Limiter for RedisLimiter {
    fn acquire<'a>(
        &'a self,
        key: &'a str,
        rule: &'a Rule,
    ) -> BoxFuture<'a, Result<Permit, Denied>> {
        Box::pin(async move {
            match tokio::time::timeout(TIMEOUT * 2, self.check(key, rule)).await {
                Ok(r) => r,
                Err(_) => Err(Denied::Unavailable(
                    "the limit store did not answer in time".into(),
                )),
            }
        })
    }
}
