//! The result cache: `resources/read` results and the results of tools the
//! operator marked cacheable (`cache:` per server), reused for the same caller
//! for a while. A result is cached under everything that could make it
//! differ for someone else: the server, the method, the item's own name or
//! URI, the arguments, the whole principal and the endpoint, so one caller
//! never gets another's private result. Errors and tool results with
//! `isError: true` are never cached, nor are 2026-07-28 `input_required`
//! rounds.

use crate::auth::Principal;
use serde_json::Value;
use serde_json::value::RawValue;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Results kept, by total size.
pub(crate) struct ResultCache {
    entries: moka::sync::Cache<String, Arc<Entry>>,
}

pub(crate) struct Entry {
    result: Box<RawValue>,
    expires: Instant,
}

impl ResultCache {
    pub fn new(max_bytes: u64) -> ResultCache {
        let entries = moka::sync::Cache::builder()
            .weigher(|key: &String, e: &Arc<Entry>| {
                u32::try_from(key.len() + e.result.get().len()).unwrap_or(u32::MAX)
            })
            .max_capacity(max_bytes)
            .build();
        ResultCache { entries }
    }

    /// The key of a call: `None` when the principal cannot be written down
    /// (then nothing is cached).
    pub fn key(
        server: &str,
        method: &str,
        item: &str,
        args: Option<&Value>,
        principal: &Principal,
        endpoint: &str,
    ) -> Option<String> {
        let who = serde_json::to_string(principal).ok()?;
        // serde_json's maps keep their order (preserve_order): equal arguments
        // sent in another key order are another entry, which is only a miss.
        let args = args.map(Value::to_string).unwrap_or_default();
        Some(format!(
            "{server}\u{0}{method}\u{0}{item}\u{0}{endpoint}\u{0}{who}\u{0}{args}"
        ))
    }

    pub fn get(&self, key: &str) -> Option<Box<RawValue>> {
        let e = self.entries.get(key)?;
        if e.expires <= Instant::now() {
            self.entries.invalidate(key);
            return None;
        }
        Some(e.result.clone())
    }

    /// Keep `result` for `ttl` if it is worth reusing.
    pub fn put(&self, key: String, result: &RawValue, ttl: Duration) {
        if !cacheable(result) {
            return;
        }
        let entry = Entry {
            result: result.to_owned(),
            expires: Instant::now() + ttl,
        };
        self.entries.insert(key, Arc::new(entry));
    }
}

/// Errors never get here; a tool's own error result and an `input_required`
/// round are not answers to reuse.
fn cacheable(result: &RawValue) -> bool {
    #[derive(serde::Deserialize)]
    struct Shape {
        #[serde(rename = "isError", default)]
        is_error: bool,
        #[serde(rename = "resultType", default)]
        result_type: Option<String>,
    }
    match serde_json::from_str::<Shape>(result.get()) {
        Ok(s) => !s.is_error && s.result_type.as_deref() != Some("input_required"),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn raw(v: Value) -> Box<RawValue> {
        RawValue::from_string(v.to_string()).unwrap()
    }

    #[test]
    fn reuses_only_what_was_kept_for_the_same_caller_and_call() {
        let cache = ResultCache::new(1 << 20);
        let alice = Principal::anonymous("alice");
        let bob = Principal::anonymous("bob");
        let args = json!({ "city": "Oslo" });
        let k = |p: &Principal, a: &Value| {
            ResultCache::key("fx", "tools/call", "weather", Some(a), p, "/mcp").unwrap()
        };
        let ok = raw(json!({ "content": [{ "type": "text", "text": "rain" }] }));
        cache.put(k(&alice, &args), &ok, Duration::from_secs(60));
        assert_eq!(cache.get(&k(&alice, &args)).unwrap().get(), ok.get());
        assert!(cache.get(&k(&bob, &args)).is_none(), "another caller");
        assert!(
            cache
                .get(&k(&alice, &json!({ "city": "Bergen" })))
                .is_none()
        );
        let other_endpoint =
            ResultCache::key("fx", "tools/call", "weather", Some(&args), &alice, "/ops").unwrap();
        assert!(cache.get(&other_endpoint).is_none());
    }

    #[test]
    fn errors_and_rounds_are_not_kept_and_entries_expire() {
        let cache = ResultCache::new(1 << 20);
        let p = Principal::anonymous("p");
        let key = |n: &str| ResultCache::key("fx", "tools/call", n, None, &p, "/mcp").unwrap();
        cache.put(
            key("a"),
            &raw(json!({ "isError": true, "content": [] })),
            Duration::from_secs(60),
        );
        cache.put(
            key("b"),
            &raw(json!({ "resultType": "input_required" })),
            Duration::from_secs(60),
        );
        cache.put(key("c"), &raw(json!({ "content": [] })), Duration::ZERO);
        assert!(cache.get(&key("a")).is_none());
        assert!(cache.get(&key("b")).is_none());
        assert!(cache.get(&key("c")).is_none(), "expired at once");
    }
}
