//! JSON → Cedar values, for call arguments and principal attributes.
//!
//! integers → Long; numbers with a fraction → `decimal` when Cedar's decimal
//! holds them exactly (at most 4 fractional digits); strings → String; bools →
//! Bool; arrays → Set; objects → records. Everything else — `null`, integers
//! outside i64, other fractions, strings over [`MAX_STRING`] bytes, values
//! nested deeper than [`MAX_DEPTH`] or past the first [`MAX_NODES`] — becomes a
//! Cedar *unknown* named by its path. Cedar cannot decide a policy that reads an
//! unknown, and toolgate turns an undecided policy into a denial: a value the
//! gateway cannot show faithfully can never help a call through.

use cedar_policy::RestrictedExpression;
use serde_json::Value;

/// Deepest nesting given to policies (the record `args` itself is depth 0).
pub const MAX_DEPTH: usize = 16;
/// Most values (of any kind, nested ones included) given to policies per map.
pub const MAX_NODES: usize = 4096;
/// Longest string given to policies, in bytes.
pub const MAX_STRING: usize = 16 * 1024;

/// Largest magnitude of a Cedar `decimal` (i64 / 10⁴), kept clear of the edge.
const DECIMAL_LIMIT: f64 = 9.0e14;

/// Maps one JSON tree, remembering which paths could not be represented.
#[derive(Default)]
pub(crate) struct Mapper {
    nodes: usize,
    /// `path: why` for every value that became an unknown.
    pub unrepresentable: Vec<String>,
    /// Strings containing this were masked when recorded: they become
    /// unknowns (what they held is not known).
    pub masked: Option<&'static str>,
}

impl Mapper {
    /// The members of a JSON object as record attributes. `root` names the
    /// record in messages (`args`, `principal.attrs`).
    pub fn record(
        &mut self,
        root: &str,
        object: &serde_json::Map<String, Value>,
    ) -> Vec<(String, RestrictedExpression)> {
        object
            .iter()
            .map(|(k, v)| (k.clone(), self.value(&format!("{root}.{k}"), v, 1)))
            .collect()
    }

    fn unknown(&mut self, path: &str, why: &str) -> RestrictedExpression {
        self.unrepresentable.push(format!("{path}: {why}"));
        RestrictedExpression::new_unknown(path)
    }

    pub fn value(&mut self, path: &str, v: &Value, depth: usize) -> RestrictedExpression {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return self.unknown(path, "too many values");
        }
        if depth > MAX_DEPTH {
            return self.unknown(path, "nested too deep");
        }
        match v {
            Value::Null => self.unknown(path, "null"),
            Value::Bool(b) => RestrictedExpression::new_bool(*b),
            Value::String(s) if s.len() > MAX_STRING => self.unknown(path, "string too long"),
            Value::String(s) if self.masked.is_some_and(|m| s.contains(m)) => {
                self.unknown(path, "masked when recorded")
            }
            Value::String(s) => RestrictedExpression::new_string(s.clone()),
            Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    return RestrictedExpression::new_long(i);
                }
                match n.as_f64() {
                    // JSON does not tell 5000 from 5000.0: both are the number 5000.
                    Some(f) if f.fract() == 0.0 && f.abs() <= 9.007_199_254_740_992e15 =>
                    {
                        #[expect(
                            clippy::cast_possible_truncation,
                            reason = "integral and within ±2^53"
                        )]
                        RestrictedExpression::new_long(f as i64)
                    }
                    Some(f) if f.is_finite() && f.abs() < DECIMAL_LIMIT => {
                        let text = f.to_string();
                        match text.split_once('.') {
                            Some((_, frac)) if !frac.is_empty() && frac.len() <= 4 => {
                                RestrictedExpression::new_decimal(text)
                            }
                            _ => self.unknown(path, "a number with more than 4 decimal places"),
                        }
                    }
                    _ => self.unknown(path, "a number outside Cedar's range"),
                }
            }
            Value::Array(items) => {
                let mut elems = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    elems.push(self.value(&format!("{path}[{i}]"), item, depth + 1));
                }
                RestrictedExpression::new_set(elems)
            }
            Value::Object(map) => {
                let mut attrs = Vec::with_capacity(map.len());
                for (k, child) in map {
                    attrs.push((
                        k.clone(),
                        self.value(&format!("{path}.{k}"), child, depth + 1),
                    ));
                }
                // Keys of a JSON object are unique, so this cannot fail.
                RestrictedExpression::new_record(attrs)
                    .unwrap_or_else(|_| RestrictedExpression::new_unknown(path))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The Cedar value (as text; "unknown" when it is one) and what could not be shown.
    fn map(v: Value) -> (String, Vec<String>) {
        let mut m = Mapper::default();
        let e = m.value("args", &v, 0);
        let shown = cedar_policy::Context::from_pairs([("v".to_owned(), e)])
            .ok()
            .and_then(|c| c.get("v"))
            .map_or_else(|| "unknown".to_owned(), |r| r.to_string());
        (shown, m.unrepresentable)
    }

    #[test]
    fn faithful_values_map_directly() {
        assert_eq!(map(json!(5)).0, "5");
        assert_eq!(map(json!(5000.0)).0, "5000");
        assert_eq!(map(json!("x")).0, "\"x\"");
        assert_eq!(map(json!(true)).0, "true");
        assert!(
            map(json!(12.5)).0.contains("12.5"),
            "{}",
            map(json!(12.5)).0
        );
        let (rec, bad) = map(json!({"a": [1, 2], "b": {"c": "d"}}));
        assert!(bad.is_empty());
        assert!(rec.contains("\"c\": \"d\""), "{rec}");
    }

    #[test]
    fn what_cannot_be_shown_becomes_unknown() {
        for (v, why) in [
            (json!(null), "null"),
            (json!(u64::MAX), "range"),
            (json!(0.123456), "decimal places"),
            (json!("x".repeat(MAX_STRING + 1)), "too long"),
        ] {
            let (e, bad) = map(v);
            assert!(e.contains("unknown"), "{e}");
            assert!(bad[0].contains(why), "{bad:?}");
        }
        let mut deep = json!(1);
        for _ in 0..MAX_DEPTH + 2 {
            deep = json!({ "d": deep });
        }
        assert!(map(deep).1[0].contains("too deep"));
        let wide = Value::Array(vec![json!(1); MAX_NODES + 1]);
        assert!(map(wide).1[0].contains("too many"));
    }
}
