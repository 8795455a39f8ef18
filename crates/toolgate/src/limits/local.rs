//! The in-process limiter: every budget in this process's memory, in a
//! sharded table, each shard behind a short mutex (a check is a hash lookup
//! and a few integer operations; nothing awaits while holding it).
//!
//! State stays bounded: a key whose budget is full again (a TAT in the past, a
//! quota of an earlier window, no slot held) is the same as an absent key, so
//! `sweep` forgets it. A shard that is still full when a new key arrives
//! forgets the key closest to being full again; keys come from authenticated
//! callers and the catalog, so that takes more distinct callers than
//! `MAX_KEYS`.

use super::gcra::{self, Gcra};
use super::{Budget, Denied, Limiter, Permit, Rule};
use futures::future::BoxFuture;
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Budgets remembered at most, over all rules.
pub const MAX_KEYS: usize = 100_000;
const SHARDS: usize = 16;

enum State {
    /// GCRA: the theoretical arrival time, in ns since the limiter started.
    Tat(u64),
    /// A quota: the window and the calls counted in it.
    Window(u64, u64),
    /// Calls in flight; shared with their permits.
    InFlight(Arc<AtomicU32>),
}

impl State {
    /// Whether forgetting this key changes nothing.
    fn is_idle(&self, now: u64, wall_secs: u64) -> bool {
        match self {
            State::Tat(tat) => *tat <= now,
            State::Window(w, _) => window_over(*w, wall_secs),
            State::InFlight(n) => n.load(Ordering::Acquire) == 0,
        }
    }

    /// How soon the key would be idle anyway (for eviction: smallest first).
    fn remaining(&self, now: u64) -> u64 {
        match self {
            State::Tat(tat) => tat.saturating_sub(now),
            State::Window(..) => u64::MAX / 2,
            State::InFlight(_) => u64::MAX,
        }
    }
}

/// Windows are stored as `index << 2 | unit` so a sweep knows when one ends
/// without the rule (units: minute, hour, day).
fn encode_window(index: u64, length_secs: u64) -> u64 {
    let unit = match length_secs {
        60 => 0,
        3600 => 1,
        _ => 2,
    };
    (index << 2) | unit
}

fn window_over(encoded: u64, wall_secs: u64) -> bool {
    let length = match encoded & 3 {
        0 => 60,
        1 => 3600,
        _ => 86_400,
    };
    let index = encoded >> 2;
    (index + 1).saturating_mul(length) <= wall_secs
}

/// Budgets in this process.
pub struct LocalLimiter {
    shards: Vec<Mutex<HashMap<Box<str>, State>>>,
    hasher: RandomState,
    started: Instant,
    per_shard: usize,
}

impl Default for LocalLimiter {
    fn default() -> Self {
        LocalLimiter::with_capacity(MAX_KEYS)
    }
}

/// Gives a concurrency slot back when dropped.
struct Slot(Arc<AtomicU32>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl LocalLimiter {
    /// A limiter remembering at most about `keys` budgets.
    pub fn with_capacity(keys: usize) -> LocalLimiter {
        LocalLimiter {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
            started: Instant::now(),
            per_shard: keys.div_ceil(SHARDS).max(1),
        }
    }

    fn now(&self) -> u64 {
        // Offset by a day so that a fresh key (TAT 0) is always in the past.
        u64::try_from(self.started.elapsed().as_nanos())
            .unwrap_or(u64::MAX)
            .saturating_add(86_400 * 1_000_000_000)
    }

    fn wall_secs() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }

    /// The decision, synchronously: the whole check happens under the shard's
    /// lock, so two concurrent calls can never both take the last unit.
    pub fn check(&self, key: &str, rule: &Rule) -> Result<Permit, Denied> {
        let now = self.now();
        let wall = Self::wall_secs();
        let shard = &self.shards[(self.hasher.hash_one(key) as usize) % SHARDS];
        let mut map = shard.lock().unwrap_or_else(|p| p.into_inner());
        if !map.contains_key(key) && map.len() >= self.per_shard {
            make_room(&mut map, now, wall);
        }
        match rule.budget {
            Budget::Rate { count, per, burst } => {
                let g = Gcra::new(count, per, burst);
                let tat = match map.get(key) {
                    Some(State::Tat(t)) => *t,
                    _ => 0,
                };
                let tat = g
                    .check(tat, now)
                    .map_err(|retry_after| Denied::Exceeded { retry_after })?;
                set(&mut map, key, State::Tat(tat));
                Ok(Permit::spent())
            }
            Budget::Quota { count, window } => {
                let length = window.as_secs();
                let current = gcra::window(wall, window);
                let state = match map.get(key) {
                    Some(State::Window(w, n)) => Some((*w >> 2, *n)),
                    _ => None,
                };
                let (w, n) = gcra::quota(state, current, wall, window, count)
                    .map_err(|retry_after| Denied::Exceeded { retry_after })?;
                set(&mut map, key, State::Window(encode_window(w, length), n));
                Ok(Permit::spent())
            }
            Budget::Concurrency { max } => {
                let n = match map.get(key) {
                    Some(State::InFlight(n)) => n.clone(),
                    _ => {
                        let n = Arc::new(AtomicU32::new(0));
                        set(&mut map, key, State::InFlight(n.clone()));
                        n
                    }
                };
                // Increments happen only under the shard lock; a permit's
                // drop decrements without it, which can only make room.
                if n.load(Ordering::Acquire) >= max {
                    return Err(Denied::Exceeded {
                        retry_after: super::NOMINAL_RETRY,
                    });
                }
                n.fetch_add(1, Ordering::AcqRel);
                Ok(Permit::held(Slot(n)))
            }
        }
    }
}

fn set(map: &mut HashMap<Box<str>, State>, key: &str, state: State) {
    match map.get_mut(key) {
        Some(s) => *s = state,
        None => {
            map.insert(key.into(), state);
        }
    }
}

/// Forget idle keys; if none is idle, the one closest to being idle.
fn make_room(map: &mut HashMap<Box<str>, State>, now: u64, wall: u64) {
    let before = map.len();
    map.retain(|_, s| !s.is_idle(now, wall));
    if map.len() < before {
        return;
    }
    let victim = map
        .iter()
        .filter(|(_, s)| !matches!(s, State::InFlight(_)))
        .min_by_key(|(_, s)| s.remaining(now))
        .map(|(k, _)| k.clone());
    if let Some(k) = victim {
        tracing::warn!("rate-limit state is full; forgetting the budget closest to full");
        map.remove(&k);
    }
}

impl Limiter for LocalLimiter {
    fn acquire<'a>(
        &'a self,
        key: &'a str,
        rule: &'a Rule,
    ) -> BoxFuture<'a, Result<Permit, Denied>> {
        Box::pin(std::future::ready(self.check(key, rule)))
    }

    fn sweep(&self) {
        let now = self.now();
        let wall = Self::wall_secs();
        for shard in &self.shards {
            shard
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|_, s| !s.is_idle(now, wall));
        }
    }

    fn keys(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_str;
    use crate::limits::{Call, Snapshot};

    fn rules(yaml: &str) -> Snapshot {
        let text = format!("servers:\n  fx: {{ command: x }}\n{yaml}");
        Snapshot::compile(&load_str(&text, "t.yaml", false).unwrap())
    }

    fn take(l: &LocalLimiter, s: &Snapshot, user: &str) -> Result<Vec<Permit>, Denied> {
        let p = crate::auth::Principal::anonymous(user);
        let c = Call {
            principal: &p,
            endpoint: "/mcp",
            server: "fx",
            method: "tools/call",
            item: Some("fx__echo"),
        };
        s.matching(&c).map(|r| l.check(&r.key(&c), r)).collect()
    }

    #[test]
    fn a_burst_is_admitted_then_refused_with_the_wait() {
        let l = LocalLimiter::default();
        let s = rules("limits:\n  - { id: r, per: [user], rate: 1/h, burst: 3 }\n");
        for _ in 0..3 {
            take(&l, &s, "ann").unwrap();
        }
        let Err(Denied::Exceeded { retry_after }) = take(&l, &s, "ann") else {
            panic!("the fourth call is refused");
        };
        assert!(retry_after.as_secs() > 3500 && retry_after.as_secs() <= 3600);
        take(&l, &s, "bob").expect("another user has a budget of their own");
    }

    #[test]
    fn quotas_count_and_refuse_until_the_window_ends() {
        let l = LocalLimiter::default();
        let s = rules("limits:\n  - { id: q, quota: 2/day }\n");
        take(&l, &s, "ann").unwrap();
        take(&l, &s, "bob").unwrap();
        let Err(Denied::Exceeded { retry_after }) = take(&l, &s, "ann") else {
            panic!("the quota is shared and spent");
        };
        assert!(retry_after.as_secs() >= 1 && retry_after.as_secs() <= 86_400);
    }

    #[test]
    fn concurrency_slots_come_back_when_permits_drop() {
        let l = LocalLimiter::default();
        let s = rules("limits:\n  - { id: c, concurrency: 2 }\n");
        let a = take(&l, &s, "ann").unwrap();
        let b = take(&l, &s, "ann").unwrap();
        assert!(take(&l, &s, "ann").is_err());
        drop(a);
        let c = take(&l, &s, "ann").unwrap();
        drop((b, c));
        assert_eq!(l.keys(), 1);
        l.sweep();
        assert_eq!(l.keys(), 0, "an idle slot counter is forgotten");
    }

    #[test]
    fn state_stays_bounded() {
        let l = LocalLimiter::with_capacity(SHARDS * 4);
        let s = rules("limits:\n  - { id: r, per: [user], rate: 1/h, burst: 1 }\n");
        for i in 0..1000 {
            take(&l, &s, &format!("user{i}")).unwrap();
        }
        assert!(l.keys() <= SHARDS * 4, "{}", l.keys());
    }

    #[test]
    fn windows_know_when_they_end() {
        let day = encode_window(20_000, 86_400);
        assert!(!window_over(day, 20_000 * 86_400 + 10));
        assert!(window_over(day, 20_001 * 86_400));
        let minute = encode_window(5, 60);
        assert!(!window_over(minute, 5 * 60 + 59) && window_over(minute, 6 * 60));
    }
}
