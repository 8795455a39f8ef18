//! Reading the trail back: the filters `toolgate audit query|tail` and the
//! admin API share, turned into one SQL query over the store.

use super::Event;
use crate::store::Store;
use serde::Deserialize;
use sqlx::Row as _;

/// Which events to return; every field narrows the result.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    /// Not before this time (µs since the epoch).
    pub since_us: Option<i64>,
    /// Before this time.
    pub until_us: Option<i64>,
    /// Only events after this id (to follow the trail).
    pub after: Option<String>,
    /// `user`, or `tenant/user`.
    pub principal: Option<String>,
    pub tenant: Option<String>,
    pub agent: Option<String>,
    pub session: Option<String>,
    /// The tool, prompt or resource URI.
    pub tool: Option<String>,
    pub server: Option<String>,
    pub method: Option<String>,
    /// `allow` or `deny`.
    pub decision: Option<String>,
    /// `ok`, `tool_error`, `error`, `cancelled`, `refused`.
    pub outcome: Option<String>,
    /// `request`, `auth`, `session`, `upstream`, `reload`, `admin`.
    pub kind: Option<String>,
    /// At most this many (default 100, at most 10,000).
    pub limit: Option<u32>,
    /// Oldest first (for following); newest first otherwise.
    #[serde(default)]
    pub ascending: bool,
}

/// Events matching `f`, newest first unless `f.ascending`.
pub async fn events(store: &Store, f: &Filter) -> anyhow::Result<Vec<Event>> {
    let mut clauses: Vec<String> = Vec::new();
    let mut binds: Vec<String> = Vec::new();
    let mut add = |clause: &str, v: String| {
        binds.push(v);
        clauses.push(clause.replace('?', &format!("${}", binds.len())));
    };
    // Ids begin with the time: a time range is a range of the primary key.
    if let Some(t) = f.since_us {
        add("id >= ?", super::event::id_at(t));
    }
    if let Some(t) = f.until_us {
        add("id < ?", super::event::id_at(t));
    }
    if let Some(id) = &f.after {
        add("id > ?", id.clone());
    }
    if let Some(p) = &f.principal {
        match p.split_once('/') {
            Some((tenant, user)) => {
                add("tenant = ?", tenant.into());
                add("user_name = ?", user.into());
            }
            None => add("user_name = ?", p.clone()),
        }
    }
    for (column, value) in [
        ("tenant", &f.tenant),
        ("agent", &f.agent),
        ("session_id", &f.session),
        ("target", &f.tool),
        ("server", &f.server),
        ("method", &f.method),
        ("decision", &f.decision),
        ("outcome", &f.outcome),
        ("kind", &f.kind),
    ] {
        if let Some(v) = value {
            add(&format!("{column} = ?"), v.clone());
        }
    }
    let filter = if clauses.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", clauses.join(" AND "))
    };
    let order = if f.ascending { "ASC" } else { "DESC" };
    let limit = f.limit.unwrap_or(100).clamp(1, 10_000);
    let sql =
        format!("SELECT event_json FROM toolgate_audit {filter} ORDER BY id {order} LIMIT {limit}");
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    for b in binds {
        q = q.bind(b);
    }
    let rows = q.fetch_all(&store.pool).await?;
    rows.iter()
        .map(|r| {
            let text: String = r.try_get("event_json")?;
            Ok(serde_json::from_str(&text)?)
        })
        .collect()
}

/// `24h`, `90m`, `7d`, `30s`, or an RFC 3339 time, as µs since the epoch.
pub fn parse_since(text: &str, now_us: i64) -> Result<i64, String> {
    let text = text.trim();
    let (num, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    if let (Ok(n), Some(secs)) = (
        num.parse::<i64>(),
        match unit {
            "s" => Some(1),
            "m" => Some(60),
            "h" => Some(3600),
            "d" => Some(86_400),
            _ => None,
        },
    ) {
        return Ok(now_us - n.saturating_mul(secs).saturating_mul(1_000_000));
    }
    parse_rfc3339(text).ok_or_else(|| {
        format!("`{text}` is neither a duration like 24h / 90m / 7d nor a time like 2026-11-25T10:00:00Z")
    })
}

/// `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)` as µs since the epoch.
fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let n = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d, h, mi, sec) = (
        n(0..4)?,
        n(5..7)?,
        n(8..10)?,
        n(11..13)?,
        n(14..16)?,
        n(17..19)?,
    );
    let mut rest = &s[19..];
    let mut micros = 0i64;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits: String = frac.chars().take_while(char::is_ascii_digit).collect();
        rest = &frac[digits.len()..];
        let padded = format!("{digits:0<6}");
        micros = padded[..6].parse().ok()?;
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let oh: i64 = rest.get(1..3)?.parse().ok()?;
            let om: i64 = rest.get(4..6)?.parse().ok()?;
            sign * (oh * 3600 + om * 60)
        }
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset;
    Some(secs * 1_000_000 + micros)
}

/// µs since the epoch as `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
pub fn format_time(us: i64) -> String {
    let secs = us.div_euclid(1_000_000);
    let micros = us.rem_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_and_format_both_ways() {
        let t = parse_rfc3339("2026-11-25T10:20:30.5Z").unwrap();
        assert_eq!(format_time(t), "2026-11-25T10:20:30.500000Z");
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339("2026-11-25T12:20:30+02:00"),
            parse_rfc3339("2026-11-25T10:20:30Z")
        );
        assert_eq!(
            parse_since("24h", 100_000_000_000).unwrap(),
            100_000_000_000 - 86_400_000_000
        );
        assert!(parse_since("yesterday", 0).is_err());
    }
}
