//! `toolgate audit query|tail`: the trail read straight from the config's
//! store, so it works while the gateway runs (and against PostgreSQL when
//! `storage` says so). [`QueryArgs`] are also the admin API's parameters: one
//! set of names and checks for both.

use super::query::{self, Filter};
use super::{Event, EventKind, Outcome, Verdict};
use crate::config;
use crate::store::Store;
use anyhow::Context as _;
use clap::Subcommand;
use serde::Deserialize;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How often `tail --follow` asks the store for new events.
const FOLLOW_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Events matching the filters, newest first: a table, or JSON lines.
    Query {
        #[arg(long, short, env = "TOOLGATE_CONFIG")]
        config: PathBuf,
        #[command(flatten)]
        args: Box<QueryArgs>,
        /// One JSON event per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The newest events, oldest first; with `--follow`, then every new one
    /// until interrupted.
    Tail {
        #[arg(long, short, env = "TOOLGATE_CONFIG")]
        config: PathBuf,
        /// How many of the newest events to print first.
        #[arg(short = 'n', long = "lines", default_value_t = 20)]
        lines: u32,
        /// Keep printing new events as they are written.
        #[arg(long, short)]
        follow: bool,
        /// One JSON event per line instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Which events to read. The flags of `toolgate audit query` and the query
/// parameters of `GET /admin/v1/audit`, under the same names.
#[derive(Debug, Clone, Default, clap::Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryArgs {
    /// Not before this: a duration back from now (`30s`, `90m`, `24h`, `7d`)
    /// or an RFC 3339 time.
    #[arg(long)]
    pub since: Option<String>,
    /// Before this (same forms as `--since`).
    #[arg(long)]
    pub until: Option<String>,
    /// Only events after this event id, oldest first (to page forward).
    #[arg(long)]
    pub after: Option<String>,
    /// `USER`, or `TENANT/USER`.
    #[arg(long)]
    pub principal: Option<String>,
    #[arg(long)]
    pub tenant: Option<String>,
    /// The agent (client application) acting for the user.
    #[arg(long)]
    pub agent: Option<String>,
    /// A legacy session's id.
    #[arg(long)]
    pub session: Option<String>,
    /// The tool or prompt as clients see it, or a resource URI.
    #[arg(long)]
    pub tool: Option<String>,
    #[arg(long)]
    pub server: Option<String>,
    /// The MCP method (`tools/call`, `resources/read`, …).
    #[arg(long)]
    pub method: Option<String>,
    /// `allow` or `deny`.
    #[arg(long)]
    pub decision: Option<String>,
    /// `ok`, `tool_error`, `error`, `cancelled` or `refused`.
    #[arg(long)]
    pub outcome: Option<String>,
    /// `request`, `auth`, `session`, `upstream`, `reload` or `admin`.
    #[arg(long)]
    pub kind: Option<String>,
    /// At most this many events (default 100, at most 10000).
    #[arg(long)]
    pub limit: Option<u32>,
}

impl QueryArgs {
    /// The store filter these arguments describe, with durations taken back
    /// from `now_us`; the message says which argument is wrong and how.
    pub fn filter(&self, now_us: i64) -> Result<Filter, String> {
        let time = |name: &str, v: &Option<String>| {
            v.as_deref()
                .map(|t| query::parse_since(t, now_us).map_err(|e| format!("{name}: {e}")))
                .transpose()
        };
        check::<Verdict>("decision", &self.decision, "allow, deny")?;
        check::<Outcome>(
            "outcome",
            &self.outcome,
            "ok, tool_error, error, cancelled, refused",
        )?;
        if let Some(k) = &self.kind
            && EventKind::parse(k).is_none()
        {
            return Err(format!(
                "kind: `{k}` is not one of request, auth, session, upstream, reload, admin"
            ));
        }
        Ok(Filter {
            since_us: time("since", &self.since)?,
            until_us: time("until", &self.until)?,
            // Ids grow with time: "after this one" reads forward.
            ascending: self.after.is_some(),
            after: self.after.clone(),
            principal: self.principal.clone(),
            tenant: self.tenant.clone(),
            agent: self.agent.clone(),
            session: self.session.clone(),
            tool: self.tool.clone(),
            server: self.server.clone(),
            method: self.method.clone(),
            decision: self.decision.clone(),
            outcome: self.outcome.clone(),
            kind: self.kind.clone(),
            limit: self.limit,
        })
    }
}

/// A value must be one the trail writes, or the query silently finds nothing.
fn check<T: serde::de::DeserializeOwned>(
    name: &str,
    value: &Option<String>,
    valid: &str,
) -> Result<(), String> {
    match value {
        Some(v) if serde_json::from_value::<T>(serde_json::Value::String(v.clone())).is_err() => {
            Err(format!("{name}: `{v}` is not one of {valid}"))
        }
        _ => Ok(()),
    }
}

/// Now, in µs since the epoch.
pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// Run an `audit` subcommand, printing to stdout.
pub async fn run(command: AuditCommand) -> anyhow::Result<()> {
    match command {
        AuditCommand::Query { config, args, json } => {
            let store = open(&config).await?;
            let filter = args.filter(now_us()).map_err(anyhow::Error::msg)?;
            let events = query::events(&store, &filter).await?;
            let mut out = Output::new(json);
            out.events(&events);
            Ok(())
        }
        AuditCommand::Tail {
            config,
            lines,
            follow,
            json,
        } => {
            let store = open(&config).await?;
            tail(&store, lines, follow, json).await
        }
    }
}

async fn open(path: &Path) -> anyhow::Result<Store> {
    let config = config::load_file(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    if !config.audit.sinks.contains(&config::AuditSink::Store) {
        eprintln!(
            "note: audit.sinks does not include `store`: this gateway writes nothing this command can read"
        );
    }
    let store = Store::for_config(&config)
        .await
        .context("cannot open the audit store")?;
    super::sink::recover_journal(&config)
        .await
        .context("cannot hand the audit journal an ended gateway left to the store")?;
    Ok(store)
}

async fn tail(store: &Store, lines: u32, follow: bool, json: bool) -> anyhow::Result<()> {
    let newest = Filter {
        limit: Some(lines.max(1)),
        ..Filter::default()
    };
    let mut events = query::events(store, &newest).await?;
    events.reverse();
    let mut out = Output::new(json);
    let mut last = events.last().map(|e| e.id.clone());
    if !out.events(&events) || !follow {
        return Ok(());
    }
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        tokio::select! {
            _ = &mut interrupted => return Ok(()),
            _ = tokio::time::sleep(FOLLOW_EVERY) => {}
        }
        let next = Filter {
            after: last.clone(),
            ascending: true,
            limit: Some(1000),
            ..Filter::default()
        };
        let events = query::events(store, &next).await?;
        if let Some(e) = events.last() {
            last = Some(e.id.clone());
        }
        if !out.events(&events) {
            return Ok(());
        }
    }
}

/// Events to stdout as a table or JSON lines. A closed pipe (`… | head`)
/// ends the output quietly.
struct Output {
    json: bool,
    header: bool,
}

impl Output {
    fn new(json: bool) -> Output {
        Output {
            json,
            header: !json,
        }
    }

    /// Print `events`; false once stdout is gone.
    fn events(&mut self, events: &[Event]) -> bool {
        use std::fmt::Write as _;
        let mut text = String::new();
        if std::mem::take(&mut self.header) {
            let _ = writeln!(
                text,
                "{:<27}  {:<8}  {:<20}  {:<24}  {:<32}  {:<8}  {:<10}  {:>9}",
                "TIME", "KIND", "PRINCIPAL", "METHOD", "TARGET", "DECISION", "OUTCOME", "LATENCY"
            );
        }
        for e in events {
            if self.json {
                if let Ok(line) = serde_json::to_string(e) {
                    text.push_str(&line);
                    text.push('\n');
                }
            } else {
                text.push_str(&row(e));
            }
        }
        let mut stdout = std::io::stdout().lock();
        stdout
            .write_all(text.as_bytes())
            .and_then(|()| stdout.flush())
            .is_ok()
    }
}

fn row(e: &Event) -> String {
    let principal = match (&e.tenant, &e.user) {
        (Some(t), Some(u)) => format!("{t}/{u}"),
        (None, Some(u)) => u.clone(),
        _ => "-".into(),
    };
    // Upstream events name their server and no target.
    let target = e.target.as_deref().or(e.server.as_deref()).unwrap_or("-");
    let latency = e
        .latency_us
        .map_or_else(|| "-".into(), |us| format!("{:.1}ms", us as f64 / 1000.0));
    format!(
        "{:<27}  {:<8}  {:<20}  {:<24}  {:<32}  {:<8}  {:<10}  {:>9}\n",
        query::format_time(e.time_us),
        e.kind.as_str(),
        principal,
        e.method.as_deref().unwrap_or("-"),
        target,
        e.decision.map_or("-", Verdict::as_str),
        e.outcome.map_or("-", Outcome::as_str),
        latency,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_become_a_filter_or_say_what_is_wrong() {
        let now = 100 * 86_400 * 1_000_000;
        let args = QueryArgs {
            since: Some("24h".into()),
            principal: Some("acme/alice".into()),
            decision: Some("deny".into()),
            kind: Some("request".into()),
            limit: Some(5),
            ..QueryArgs::default()
        };
        let f = args.filter(now).unwrap();
        assert_eq!(f.since_us, Some(now - 86_400 * 1_000_000));
        assert_eq!(f.principal.as_deref(), Some("acme/alice"));
        assert!(!f.ascending);
        let after = QueryArgs {
            after: Some("0001".into()),
            ..QueryArgs::default()
        };
        assert!(after.filter(now).unwrap().ascending);
        for (args, wrong) in [
            (
                QueryArgs {
                    decision: Some("maybe".into()),
                    ..QueryArgs::default()
                },
                "decision: `maybe`",
            ),
            (
                QueryArgs {
                    outcome: Some("fine".into()),
                    ..QueryArgs::default()
                },
                "outcome: `fine`",
            ),
            (
                QueryArgs {
                    kind: Some("everything".into()),
                    ..QueryArgs::default()
                },
                "kind: `everything`",
            ),
            (
                QueryArgs {
                    since: Some("yesterday".into()),
                    ..QueryArgs::default()
                },
                "since: `yesterday`",
            ),
        ] {
            let e = args.filter(now).unwrap_err();
            assert!(e.starts_with(wrong), "{e}");
        }
    }

    #[test]
    fn a_row_shows_who_did_what_and_how_it_ended() {
        let mut e = Event::new(EventKind::Request);
        e.time_us = 0;
        e.user = Some("alice".into());
        e.tenant = Some("acme".into());
        e.method = Some("tools/call".into());
        e.target = Some("fx__echo".into());
        e.decision = Some(Verdict::Allow);
        e.outcome = Some(Outcome::Ok);
        e.latency_us = Some(1_260);
        let r = row(&e);
        for part in [
            "1970-01-01T00:00:00.000000Z",
            "request",
            "acme/alice",
            "tools/call",
            "fx__echo",
            "allow",
            "ok",
            "1.3ms",
        ] {
            assert!(r.contains(part), "{part} in {r}");
        }
    }
}
