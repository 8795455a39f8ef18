//! The store sink: events into the `toolgate_audit` table of the config's
//! `storage` (SQLite by default, PostgreSQL for several replicas), one
//! transaction per batch, on a connection of its own. Retention runs beside
//! the writes (a batch retried after another sink failed is not stored
//! twice: ids are unique). Events older than `max_age`, and beyond the newest
//! `max_events`, are deleted once a minute.
//!
//! SQLite runs in WAL mode with `synchronous = NORMAL` on this connection: a
//! committed batch survives a crash of the gateway process (what an answered
//! call relies on without a journal); a power failure may lose the last moments.
//!
//! With a journal no answer waits for this sink, and its work is background
//! work: a batch of a second's events (tens of milliseconds of SQLite at once)
//! is written as statements of at most 128 events each, committed on their
//! own, with a short pause between them, so that the calls beside it are not
//! held up behind it; the log is folded into the database on the same
//! connection after a write.

use super::{Line, Sink};
use crate::config::Config;
use crate::store::Store;
use futures::future::BoxFuture;
use sqlx::postgres::{PgConnection, Postgres};
use sqlx::query::Query;
use sqlx::sqlite::{
    Sqlite, SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqliteSynchronous,
};
use sqlx::{ConnectOptions as _, Connection, Database, Executor, IntoArguments};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

const PRUNE_EVERY: Duration = Duration::from_secs(60);
const CHECKPOINT_EVERY: Duration = Duration::from_secs(2);
/// Columns per row, and rows per statement (well under SQLite's 32,766 and
/// PostgreSQL's 65,535 parameters).
const COLUMNS: usize = 13;
const ROWS_PER_INSERT: usize = 128;
/// With a journal: the pause between the statements of one batch.
const PAUSE: Duration = Duration::from_millis(2);

pub struct StoreSink {
    conn: Conn,
    store: Store,
    max_age: Duration,
    max_events: u64,
    last_prune: Instant,
    /// No answer waits for this sink (there is a journal): batches are
    /// written in paced statements, and checkpoints on this connection.
    background: bool,
    last_checkpoint: Instant,
}

/// The sink's own connection, on the database's own driver: sqlx's `Any`
/// driver (the rest of the store's) copies every text argument twice on its way
/// to SQLite, and the writer binds thirteen per event.
enum Conn {
    Sqlite(SqliteConnection),
    Postgres(PgConnection),
}

impl StoreSink {
    pub async fn open(config: &Config) -> anyhow::Result<StoreSink> {
        let store = Store::for_config(config).await?;
        let base = config.source.as_deref().and_then(std::path::Path::parent);
        let journal = config.audit.journal_dir(&config.storage, base).is_some();
        StoreSink::new(
            store,
            config.audit.max_age.0,
            config.audit.max_events,
            journal,
        )
        .await
    }

    /// A sink over `store`; `background` when a journal answers for the events
    /// (see the module's note).
    pub async fn new(
        store: Store,
        max_age: Duration,
        max_events: u64,
        background: bool,
    ) -> anyhow::Result<StoreSink> {
        let background = background && store.is_sqlite();
        let conn = connect(&store).await?;
        if store.is_sqlite() && !background {
            tokio::spawn(checkpoints(store.clone()));
        }
        Ok(StoreSink {
            conn,
            store,
            max_age,
            max_events,
            last_prune: Instant::now() - PRUNE_EVERY,
            background,
            last_checkpoint: Instant::now(),
        })
    }

    async fn insert(&mut self, events: &[Line]) -> anyhow::Result<()> {
        match &mut self.conn {
            Conn::Sqlite(c) => insert::<Sqlite>(c, events, self.background).await,
            Conn::Postgres(c) => insert::<Postgres>(c, events, self.background).await,
        }
    }

    async fn prune(&mut self) -> anyhow::Result<()> {
        self.last_prune = Instant::now();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let cutoff = now.saturating_sub(self.max_age).as_micros() as i64;
        // Once a minute: on the store's pool, not worth a statement per driver.
        // Ids begin with the time (`id_at`): the primary key finds them.
        let old = sqlx::query("DELETE FROM toolgate_audit WHERE id < $1")
            .bind(super::super::event::id_at(cutoff))
            .execute(&self.store.pool)
            .await?
            .rows_affected();
        let excess = sqlx::query(
            "DELETE FROM toolgate_audit WHERE id < (
                SELECT id FROM toolgate_audit ORDER BY id DESC LIMIT 1 OFFSET $1)",
        )
        // Ids are unique and ordered by time: exactly the newest `max_events` stay.
        .bind(i64::try_from(self.max_events.max(1) - 1).unwrap_or(i64::MAX))
        .execute(&self.store.pool)
        .await?
        .rows_affected();
        if old + excess > 0 {
            tracing::info!(
                expired = old,
                over_limit = excess,
                "audit retention removed events"
            );
        }
        Ok(())
    }
}

/// Write `events` on `conn`.
async fn insert<D>(
    conn: &mut D::Connection,
    events: &[Line],
    background: bool,
) -> anyhow::Result<()>
where
    D: Driver,
    D::Arguments: IntoArguments<D>,
    for<'c> &'c mut D::Connection: Executor<'c, Database = D>,
{
    // One statement is atomic on its own: no BEGIN and COMMIT, which are
    // two more round trips to the database (for SQLite, to its worker
    // thread) — most of a lone event's cost. Several statements share one
    // transaction, so they commit (and write the log) once.
    if statement_rows(events.len()) == events.len() {
        rows_query::<D>(events)?.execute(&mut *conn).await?;
        return Ok(());
    }
    if background {
        // No answer waits: statements of their own, with a pause between
        // them, so that a second's batch never holds the CPU for long.
        let mut rest = events;
        while !rest.is_empty() {
            let (chunk, tail) = rest.split_at(statement_rows(rest.len()));
            rest = tail;
            rows_query::<D>(chunk)?.execute(&mut *conn).await?;
            if !rest.is_empty() {
                tokio::time::sleep(PAUSE).await;
            }
        }
        return Ok(());
    }
    let mut tx = conn.begin().await?;
    // Statements come in a few sizes only, so each is prepared once and
    // then reused from the connection's statement cache.
    let mut rest = events;
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(statement_rows(rest.len()));
        rest = tail;
        rows_query::<D>(chunk)?.execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// The INSERT of `rows` (a count [`statement_rows`] gives), bound.
fn rows_query<D: Driver>(rows: &[Line]) -> anyhow::Result<Query<'static, D, D::Arguments>> {
    let mut q = sqlx::query::<D>(D::insert(rows.len()));
    for line in rows {
        let c = line.columns()?;
        for value in [
            Value::Text(Some(&c.id)),
            Value::Int(c.time_us),
            Value::Text(Some(c.kind.as_str())),
            Value::Text(c.user.as_deref()),
            Value::Text(c.tenant.as_deref()),
            Value::Text(c.agent.as_deref()),
            Value::Text(c.session.as_deref()),
            Value::Text(c.method.as_deref()),
            Value::Text(c.server.as_deref()),
            Value::Text(c.target.as_deref()),
            Value::Text(c.decision.map(|d| d.as_str())),
            Value::Text(c.outcome.map(|o| o.as_str())),
            Value::Event(line),
        ] {
            q = D::bind(q, value);
        }
    }
    Ok(q)
}

/// A column's value, for any driver.
enum Value<'a> {
    Text(Option<&'a str>),
    Int(i64),
    /// The whole event.
    Event(&'a Line),
}

/// What the writer needs of a database: its INSERTs, made once, and how a
/// column is bound with the fewest copies.
trait Driver: Database {
    /// The INSERT of `rows` events (a count [`statement_rows`] gives).
    fn insert(rows: usize) -> &'static str;

    fn bind<'q>(
        q: Query<'q, Self, Self::Arguments>,
        value: Value<'_>,
    ) -> Query<'q, Self, Self::Arguments>;
}

/// Statements for 1, 2, 4 … [`ROWS_PER_INSERT`] rows.
const SIZES: usize = ROWS_PER_INSERT.trailing_zeros() as usize + 1;

fn statement(all: &'static [String; SIZES], rows: usize) -> &'static str {
    debug_assert!(rows.is_power_of_two() && rows <= ROWS_PER_INSERT);
    &all[rows.trailing_zeros() as usize]
}

impl Driver for Sqlite {
    fn insert(rows: usize) -> &'static str {
        static ALL: LazyLock<[String; SIZES]> =
            LazyLock::new(|| std::array::from_fn(|i| insert_sql(1 << i, true)));
        statement(&ALL, rows)
    }

    /// SQLite keeps every argument as a shared string: one made from a `&str`
    /// is a copy into a `String` and an `Arc` of it, one made from an
    /// `Arc<str>` is that `Arc` (the event's text is bound without a copy).
    fn bind<'q>(
        q: Query<'q, Self, Self::Arguments>,
        value: Value<'_>,
    ) -> Query<'q, Self, Self::Arguments> {
        match value {
            Value::Text(t) => q.bind(t.map(Arc::<str>::from)),
            Value::Int(i) => q.bind(i),
            Value::Event(line) => q.bind(line.shared()),
        }
    }
}

impl Driver for Postgres {
    fn insert(rows: usize) -> &'static str {
        static ALL: LazyLock<[String; SIZES]> =
            LazyLock::new(|| std::array::from_fn(|i| insert_sql(1 << i, false)));
        statement(&ALL, rows)
    }

    /// PostgreSQL writes every argument into its buffer as it is bound.
    fn bind<'q>(
        q: Query<'q, Self, Self::Arguments>,
        value: Value<'_>,
    ) -> Query<'q, Self, Self::Arguments> {
        match value {
            Value::Text(t) => q.bind(t),
            Value::Int(i) => q.bind(i),
            Value::Event(line) => q.bind(line.as_str()),
        }
    }
}

/// Rows in the next statement for `pending` rows: the largest power of two
/// that fits, at most [`ROWS_PER_INSERT`].
fn statement_rows(pending: usize) -> usize {
    let fits = 1usize << (usize::BITS - 1 - pending.max(1).leading_zeros());
    fits.min(ROWS_PER_INSERT)
}

/// The INSERT of `rows` events. SQLite gets anonymous `?` parameters: its
/// numbered `$N` ones are names, and binding by name is a linear search per
/// parameter (quadratic in a statement of thousands of them).
fn insert_sql(rows: usize, sqlite: bool) -> String {
    use std::fmt::Write as _;
    let mut sql = String::from(
        "INSERT INTO toolgate_audit (id, time_us, kind, user_name, tenant, agent, \
         session_id, method, server, target, decision, outcome, event_json) VALUES ",
    );
    for row in 0..rows {
        sql.push_str(if row == 0 { "(" } else { ",(" });
        for col in 0..COLUMNS {
            if col > 0 {
                sql.push(',');
            }
            if sqlite {
                sql.push('?');
            } else {
                let _ = write!(sql, "${}", row * COLUMNS + col + 1);
            }
        }
        sql.push(')');
    }
    sql.push_str(" ON CONFLICT (id) DO NOTHING");
    sql
}

/// A connection of the sink's own, tuned for appending.
async fn connect(store: &Store) -> anyhow::Result<Conn> {
    if !store.is_sqlite() {
        return Ok(Conn::Postgres(PgConnection::connect(&store.url).await?));
    }
    let options = store
        .url
        .parse::<SqliteConnectOptions>()?
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(5))
        // A checkpoint syncs the database file: done by the committing
        // connection it would hold every waiting call for the length of an
        // fsync. `checkpoints` does it beside the writes instead.
        .pragma("wal_autocheckpoint", "0");
    Ok(Conn::Sqlite(options.connect().await?))
}

/// Fold the SQLite write-ahead log into the database every few seconds, on a
/// connection of its own (a passive checkpoint never blocks the writer), so the
/// log stays small without the writer paying for it.
async fn checkpoints(store: Store) {
    let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&store.pool)
            .await
        {
            tracing::debug!(error = %e, "audit WAL checkpoint failed; retried later");
        }
    }
}

impl Sink for StoreSink {
    fn name(&self) -> &'static str {
        "store"
    }

    fn write<'a>(&'a mut self, events: &'a [Line]) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            if let Err(e) = self.insert(events).await {
                // A broken connection (a restarted database) gets one new try.
                tracing::warn!(error = %e, "audit store write failed; reconnecting");
                self.conn = connect(&self.store).await?;
                self.insert(events).await?;
            }
            if self.background && self.last_checkpoint.elapsed() >= CHECKPOINT_EVERY {
                self.last_checkpoint = Instant::now();
                if let Conn::Sqlite(c) = &mut self.conn
                    && let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                        .execute(c)
                        .await
                {
                    tracing::debug!(error = %e, "audit WAL checkpoint failed; retried later");
                }
            }
            if self.last_prune.elapsed() >= PRUNE_EVERY
                && let Err(e) = self.prune().await
            {
                tracing::warn!(error = %e, "audit retention failed");
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_come_in_few_sizes() {
        assert_eq!(statement_rows(1), 1);
        assert_eq!(statement_rows(3), 2);
        assert_eq!(statement_rows(64), 64);
        assert_eq!(statement_rows(100), 64);
        assert_eq!(statement_rows(1000), ROWS_PER_INSERT);
        let mut sizes = std::collections::BTreeSet::new();
        for n in 1..=2000 {
            let mut rest = n;
            while rest > 0 {
                let rows = statement_rows(rest);
                sizes.insert(rows);
                rest -= rows;
            }
        }
        assert_eq!(sizes.len(), 8, "{sizes:?}");
        assert_eq!(insert_sql(2, true).matches('?').count(), 2 * COLUMNS);
        assert!(insert_sql(2, false).contains("$26)"));
        for rows in sizes {
            assert_eq!(<Sqlite as Driver>::insert(rows), insert_sql(rows, true));
            assert_eq!(<Postgres as Driver>::insert(rows), insert_sql(rows, false));
        }
    }
    use crate::audit::query::{Filter, events};
    use crate::audit::{Event, EventKind, Outcome, Verdict};

    fn lines(events: &[Event]) -> Vec<Line> {
        events.iter().map(Line::of).collect()
    }

    /// `n` request events of `users` in turn, alternately allowed and denied.
    fn batch(tag: &str, n: usize) -> Vec<Event> {
        (0..n)
            .map(|i| {
                let mut e = Event::new(EventKind::Request);
                e.user = Some(format!("{tag}-u{}", i % 3));
                e.tenant = Some(format!("{tag}-t"));
                e.method = Some("tools/call".into());
                e.target = Some(format!("{tag}__tool{}", i % 2));
                e.decision = Some(if i % 2 == 0 {
                    Verdict::Allow
                } else {
                    Verdict::Deny
                });
                e.outcome = Some(Outcome::Ok);
                e.arguments = Some(serde_json::json!({ "i": i }));
                e
            })
            .collect()
    }

    async fn writes_and_reads_back(store: Store) {
        let tag = format!("t{:08x}", rand::random::<u32>());
        let mut sink = StoreSink::new(store.clone(), Duration::from_secs(3600), 1_000_000, false)
            .await
            .unwrap();
        let written = batch(&tag, 300);
        sink.write(&lines(&written)).await.unwrap();
        // A batch retried after another sink failed is not stored twice.
        sink.write(&lines(&written[..200])).await.unwrap();
        let mine = |f: Filter| Filter {
            tenant: Some(format!("{tag}-t")),
            limit: f.limit.or(Some(10_000)),
            ..f
        };
        let all = events(
            &store,
            &mine(Filter {
                ascending: true,
                ..Filter::default()
            }),
        )
        .await
        .unwrap();
        assert_eq!(all, written, "every event, once, as written, in order");
        let by_user = events(
            &store,
            &mine(Filter {
                principal: Some(format!("{tag}-t/{tag}-u1")),
                ..Filter::default()
            }),
        )
        .await
        .unwrap();
        assert_eq!(by_user.len(), 100);
        assert!(
            by_user.windows(2).all(|w| w[0].id > w[1].id),
            "newest first"
        );
        let denied_tool1 = events(
            &store,
            &mine(Filter {
                tool: Some(format!("{tag}__tool1")),
                decision: Some("deny".into()),
                ..Filter::default()
            }),
        )
        .await
        .unwrap();
        assert_eq!(denied_tool1.len(), 150);
        let after = events(
            &store,
            &mine(Filter {
                after: Some(written[289].id.clone()),
                ascending: true,
                ..Filter::default()
            }),
        )
        .await
        .unwrap();
        assert_eq!(after, written[290..]);
        let limited = events(
            &store,
            &mine(Filter {
                limit: Some(7),
                ..Filter::default()
            }),
        )
        .await
        .unwrap();
        assert_eq!(limited.len(), 7);
        assert_eq!(limited[0], written[299]);
    }

    #[tokio::test]
    async fn events_round_trip_through_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open("sqlite://audit.db", Some(dir.path()))
            .await
            .unwrap();
        writes_and_reads_back(store.clone()).await;
        // The writer's connection put the file in WAL mode (a setting of the file).
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(mode, "wal");
    }

    /// The same statements against the machine's PostgreSQL.
    #[tokio::test]
    async fn events_round_trip_through_postgres() {
        let url = std::env::var("TOOLGATE_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let store = Store::open(&url, None)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at {url} is required: {e:#}"));
        writes_and_reads_back(store).await;
    }

    #[tokio::test]
    async fn retention_keeps_the_newest_and_drops_the_old() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open("sqlite://audit.db", Some(dir.path()))
            .await
            .unwrap();
        let mut sink = StoreSink::new(store.clone(), Duration::from_secs(3600), 50, false)
            .await
            .unwrap();
        let mut old = batch("old", 10);
        for e in &mut old {
            e.time_us -= 2 * 3600 * 1_000_000;
        }
        sink.write(&lines(&old)).await.unwrap();
        let recent = batch("new", 120);
        sink.write(&lines(&recent)).await.unwrap();
        sink.prune().await.unwrap();
        let left = events(
            &store,
            &Filter {
                limit: Some(10_000),
                ascending: true,
                ..Filter::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(left, recent[70..], "the newest 50, none of the expired");
    }
}
