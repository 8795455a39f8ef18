//! The `limits:` list: rate limits, quotas and concurrency limits on calls,
//! each matching some calls and keeping one budget per combination of the
//! dimensions named in `per` (see `docs/limits.md`).

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer};
use std::time::Duration;

/// One limit. Exactly one of `rate`, `quota` and `concurrency` is set.
#[derive(Debug, Clone, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LimitRule {
    /// A stable name (A-Z a-z 0-9 _ - .): clients see it in `error.data.limit`,
    /// metrics and the audit trail use it, and a budget survives a change of
    /// the file as long as the rule's id and numbers stay the same.
    pub id: String,
    /// Which calls the rule applies to; every condition set must hold. Without
    /// it, every call.
    #[serde(rename = "match", default)]
    pub matches: LimitMatch,
    /// The dimensions that each get a budget of their own: `[tenant]` is one
    /// budget per tenant, `[principal, tool]` one per caller and tool, `[]`
    /// (the default) one budget shared by every matching call. Callers without
    /// a value (no tenant, no agent) share the budget of the empty value.
    #[serde(default)]
    pub per: Vec<LimitDimension>,
    /// A rate with a burst (GCRA): `10/s`, `600/min`, `5000/h`. Calls over it
    /// are refused with `rate_limited` and the time until one is allowed.
    pub rate: Option<Rate>,
    /// Calls allowed at once above the steady rate (only with `rate`; default
    /// the rate's count, so `10/s` admits 10 calls at once).
    pub burst: Option<u32>,
    /// A count per calendar window in UTC: `1000/day`, `100/h`, `20/min`.
    /// Calls over it are refused with `quota_exceeded` until the window ends.
    pub quota: Option<Quota>,
    /// Calls in flight at once; one more is refused with
    /// `concurrency_limited` (never queued).
    pub concurrency: Option<u32>,
}

/// Conditions on a call. Lists match any of their entries; `*` in an entry
/// matches any run of characters.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LimitMatch {
    /// Servers (names from `servers`).
    pub servers: Option<Vec<String>>,
    /// Tools by exposed name (`payments__refund`, `payments__*`); only
    /// `tools/call` matches.
    pub tools: Option<Vec<String>>,
    /// Prompts by exposed name; only `prompts/get` and completions of a
    /// prompt's arguments match.
    pub prompts: Option<Vec<String>>,
    /// Methods: `tools/call`, `prompts/get`, `resources/read`,
    /// `completion/complete`.
    pub methods: Option<Vec<String>>,
    /// Callers of these tenants.
    pub tenants: Option<Vec<String>>,
    /// Callers acting through these agents (a JWT's `azp` / `client_id`, an
    /// API key's `--agent`).
    pub agents: Option<Vec<String>>,
    /// Callers who are these users.
    pub users: Option<Vec<String>>,
    /// Callers in at least one of these groups.
    pub groups: Option<Vec<String>>,
    /// Calls that came through these endpoint paths (`/mcp`, `/mcp/finance`,
    /// `stdio`).
    pub endpoints: Option<Vec<String>>,
}

/// What a budget is kept per.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum LimitDimension {
    /// The caller: tenant and user together.
    Principal,
    User,
    Agent,
    Tenant,
    /// The endpoint path the call came through.
    Endpoint,
    /// The server that owns the item.
    Server,
    /// The tool or prompt (exposed name); resource reads share one value.
    Tool,
}

/// `COUNT/UNIT`: so many calls per second, minute, hour or day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub per: Duration,
}

/// `COUNT/WINDOW`: so many calls per calendar minute, hour or day (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub count: u64,
    pub window: Duration,
}

/// Parse `10/s`, `1000/day`: a positive count and a unit.
fn parse_per(text: &str) -> Result<(u64, Duration), String> {
    let help = "write it as COUNT/UNIT, e.g. `10/s`, `600/min`, `1000/day` (units: s, min, h, day)";
    let Some((count, unit)) = text.split_once('/') else {
        return Err(format!("`{text}`: {help}"));
    };
    let count: u64 = count
        .trim()
        .parse()
        .map_err(|_| format!("`{text}`: the count must be a whole number; {help}"))?;
    if count == 0 {
        return Err(format!("`{text}`: the count must be at least 1"));
    }
    let secs = match unit.trim() {
        "s" | "sec" | "second" => 1,
        "m" | "min" | "minute" => 60,
        "h" | "hour" => 3600,
        "d" | "day" => 86_400,
        _ => return Err(format!("`{text}`: unknown unit; {help}")),
    };
    Ok((count, Duration::from_secs(secs)))
}

impl std::str::FromStr for Rate {
    type Err = String;
    fn from_str(text: &str) -> Result<Rate, String> {
        let (count, per) = parse_per(text)?;
        let count =
            u32::try_from(count).map_err(|_| format!("`{text}`: the count is too large"))?;
        Ok(Rate { count, per })
    }
}

impl std::str::FromStr for Quota {
    type Err = String;
    fn from_str(text: &str) -> Result<Quota, String> {
        let (count, window) = parse_per(text)?;
        if window < Duration::from_secs(60) {
            return Err(format!(
                "`{text}`: a quota counts per minute, hour or day; use `rate` for per-second limits"
            ));
        }
        Ok(Quota { count, window })
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl<'de> Deserialize<'de> for Quota {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

const PER_PATTERN: &str = "^\\s*[0-9]+\\s*/\\s*(s|sec|second|m|min|minute|h|hour|d|day)\\s*$";

impl JsonSchema for Rate {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Rate".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "COUNT/UNIT: `10/s`, `600/min`, `5000/h`, `100000/day`.",
            "type": "string",
            "pattern": PER_PATTERN,
        })
    }
}

impl JsonSchema for Quota {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Quota".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "COUNT/WINDOW, a calendar window in UTC: `20/min`, `100/h`, `1000/day`.",
            "type": "string",
            "pattern": PER_PATTERN,
        })
    }
}

/// Check the list as a whole; errors name `limits[i].field`.
pub(super) fn validate(config: &super::Config) -> Result<(), (String, String)> {
    let mut seen: Vec<&str> = Vec::new();
    for (i, rule) in config.limits.iter().enumerate() {
        let key = |field: &str| format!("limits[{i}].{field}");
        let id = rule.id.as_str();
        if id.is_empty()
            || id.len() > 64
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
        {
            return Err((
                key("id"),
                "an id is 1-64 characters of A-Z a-z 0-9 _ - .".into(),
            ));
        }
        if seen.contains(&id) {
            return Err((key("id"), format!("`{id}` is the id of an earlier limit")));
        }
        seen.push(id);
        let kinds = [
            rule.rate.is_some(),
            rule.quota.is_some(),
            rule.concurrency.is_some(),
        ];
        if kinds.iter().filter(|k| **k).count() != 1 {
            return Err((
                format!("limits[{i}]"),
                format!(
                    "limit `{id}` needs exactly one of `rate`, `quota` and `concurrency` (write two rules for two limits)"
                ),
            ));
        }
        if rule.burst.is_some() && rule.rate.is_none() {
            return Err((key("burst"), "`burst` goes with `rate`".into()));
        }
        if rule.burst == Some(0) {
            return Err((key("burst"), "must be at least 1".into()));
        }
        if rule.concurrency == Some(0) {
            return Err((
                key("concurrency"),
                "must be at least 1 (remove the tool from the endpoint or deny it by policy to stop every call)".into(),
            ));
        }
        for (n, d) in rule.per.iter().enumerate() {
            if rule.per[..n].contains(d) {
                let name = format!("{d:?}").to_lowercase();
                return Err((key("per"), format!("`{name}` is listed twice")));
            }
        }
        for server in rule.matches.servers.iter().flatten() {
            let known = config.servers.contains_key(server)
                || (server.contains('*') && !server.trim_matches('*').is_empty())
                || server == "*";
            if !known {
                return Err((
                    key("match.servers"),
                    format!("unknown server `{server}`; it must be a name under `servers`"),
                ));
            }
        }
        for method in rule.matches.methods.iter().flatten() {
            if !LIMITED_METHODS.contains(&method.as_str()) {
                return Err((
                    key("match.methods"),
                    format!(
                        "`{method}` is not limited; limits apply to {}",
                        LIMITED_METHODS.join(", ")
                    ),
                ));
            }
        }
    }
    for (name, server) in &config.servers {
        for (field, v) in [
            ("max_request_bytes", server.max_request_bytes),
            ("max_result_bytes", server.max_result_bytes),
        ] {
            if v == Some(0) {
                return Err((
                    format!("servers.{name}.{field}"),
                    "must be at least 1".into(),
                ));
            }
        }
    }
    if let Some(url) = &config.redis {
        // TLS (`rediss://`) needs a TLS-enabled client build; say so rather
        // than fail at the first call.
        if !url.starts_with("redis://")
            && !url.starts_with("redis+unix://")
            && !url.starts_with("unix://")
        {
            return Err((
                "redis".into(),
                "must be a redis:// (or unix://) URL; rediss:// (TLS) is not supported yet".into(),
            ));
        }
        if let Err(e) = redis::Client::open(url.as_str()) {
            return Err(("redis".into(), format!("not a usable Redis URL: {e}")));
        }
    }
    if config.max_session_streams == 0 {
        return Err(("max_session_streams".into(), "must be at least 1".into()));
    }
    Ok(())
}

/// The methods that pass the admit stage (and so can be limited).
pub const LIMITED_METHODS: [&str; 4] = [
    "tools/call",
    "prompts/get",
    "resources/read",
    "completion/complete",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_quotas_parse() {
        let r: Rate = "10/s".parse().unwrap();
        assert_eq!((r.count, r.per), (10, Duration::from_secs(1)));
        let r: Rate = " 600 / min ".parse().unwrap();
        assert_eq!((r.count, r.per), (600, Duration::from_secs(60)));
        let q: Quota = "1000/day".parse().unwrap();
        assert_eq!((q.count, q.window), (1000, Duration::from_secs(86_400)));
        assert!("0/s".parse::<Rate>().is_err());
        assert!("10".parse::<Rate>().is_err());
        assert!("10/fortnight".parse::<Rate>().is_err());
        assert!(
            "5/s".parse::<Quota>().is_err(),
            "quotas are per minute or longer"
        );
    }
}
