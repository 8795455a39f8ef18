//! Durations in config: `30s`, `500ms`, `5m`, `1h`, or a bare number of seconds.

use serde::{Deserialize, Deserializer};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seconds(pub Duration);

impl schemars::JsonSchema for Seconds {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A duration: `30s`, `500ms`, `5m`, `1h`, or a number of seconds.",
            "oneOf": [
                { "type": "number", "exclusiveMinimum": 0 },
                { "type": "string", "pattern": "^\\s*[0-9.]+\\s*(ms|s|m|h)?\\s*$" }
            ]
        })
    }
}

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Num(f64),
            Text(String),
        }
        let secs = match Raw::deserialize(d)? {
            Raw::Num(n) => n,
            Raw::Text(t) => parse(&t).map_err(serde::de::Error::custom)?,
        };
        if !(secs.is_finite() && secs > 0.0 && secs < 1e9) {
            return Err(serde::de::Error::custom("a duration must be positive"));
        }
        Ok(Seconds(Duration::from_secs_f64(secs)))
    }
}

impl std::str::FromStr for Seconds {
    type Err = String;

    fn from_str(text: &str) -> Result<Seconds, String> {
        let secs = parse(text)?;
        if !(secs.is_finite() && secs >= 0.0) {
            return Err(format!("invalid duration {text:?}"));
        }
        Ok(Seconds(Duration::from_secs_f64(secs)))
    }
}

fn parse(text: &str) -> Result<f64, String> {
    let t = text.trim();
    let split = t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("invalid duration {text:?}: expected e.g. 30s, 500ms, 5m"))?;
    let scale = match unit {
        "" | "s" => 1.0,
        "ms" => 0.001,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86400.0,
        _ => {
            return Err(format!(
                "invalid duration unit in {text:?}: use ms, s, m, h or d"
            ));
        }
    };
    Ok(n * scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse("30s").unwrap(), 30.0);
        assert_eq!(parse("500ms").unwrap(), 0.5);
        assert_eq!(parse("2m").unwrap(), 120.0);
        assert_eq!(parse("7").unwrap(), 7.0);
        assert!(parse("5 fortnights").is_err());
    }
}
