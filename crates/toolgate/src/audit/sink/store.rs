//! The store sink: events into the `toolgate_audit` table of the config's
//! `storage` (SQLite by default, PostgreSQL for several replicas), one
//! transaction per batch, on a connection of its own. Retention runs beside
//! the writes (a batch retried after another sink failed is not stored
//! twice: ids are unique). Events older than `max_age`, and beyond the newest
//! `max_events`, are deleted once a minute.
//!
//! SQLite runs in WAL mode with `synchronous = NORMAL` on this connection: a
//! committed batch survives a crash of the gateway process (what an answered
//! call relies on); a power failure may lose the last moments.

use super::{Event, Sink};
use crate::config::Config;
use crate::store::Store;
use futures::future::BoxFuture;
use sqlx::{AnyConnection, Connection as _};
use std::time::{Duration, Instant};

const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// Columns per row, and rows per statement (well under SQLite's 32,766 and
/// PostgreSQL's 65,535 parameters).
const COLUMNS: usize = 13;
const ROWS_PER_INSERT: usize = 128;

pub struct StoreSink {
    conn: AnyConnection,
    store: Store,
    max_age: Duration,
    max_events: u64,
    last_prune: Instant,
}

impl StoreSink {
    pub async fn open(config: &Config) -> anyhow::Result<StoreSink> {
        let store = Store::for_config(config).await?;
        let conn = connect(&store).await?;
        Ok(StoreSink {
            conn,
            store,
            max_age: config.audit.max_age.0,
            max_events: config.audit.max_events,
            last_prune: Instant::now() - PRUNE_EVERY,
        })
    }

    async fn insert(&mut self, events: &[Event]) -> anyhow::Result<()> {
        let mut tx = self.conn.begin().await?;
        // Many rows per statement: the per-statement cost dominates small rows.
        for chunk in events.chunks(ROWS_PER_INSERT) {
            let mut sql = String::from(
                "INSERT INTO toolgate_audit (id, time_us, kind, user_name, tenant, agent, \
                 session_id, method, server, target, decision, outcome, event_json) VALUES ",
            );
            for row in 0..chunk.len() {
                if row > 0 {
                    sql.push(',');
                }
                sql.push('(');
                for col in 0..COLUMNS {
                    if col > 0 {
                        sql.push(',');
                    }
                    sql.push_str(&format!("${}", row * COLUMNS + col + 1));
                }
                sql.push(')');
            }
            sql.push_str(" ON CONFLICT (id) DO NOTHING");
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for e in chunk {
                q = q
                    .bind(e.id.clone())
                    .bind(e.time_us)
                    .bind(e.kind.as_str())
                    .bind(e.user.clone())
                    .bind(e.tenant.clone())
                    .bind(e.agent.clone())
                    .bind(e.session.clone())
                    .bind(e.method.clone())
                    .bind(e.server.clone())
                    .bind(e.target.clone())
                    .bind(e.decision.map(|d| d.as_str()))
                    .bind(e.outcome.map(|o| o.as_str()))
                    .bind(serde_json::to_string(e)?);
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn prune(&mut self) -> anyhow::Result<()> {
        self.last_prune = Instant::now();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let cutoff = now.saturating_sub(self.max_age).as_micros() as i64;
        let old = sqlx::query("DELETE FROM toolgate_audit WHERE time_us < $1")
            .bind(cutoff)
            .execute(&mut self.conn)
            .await?
            .rows_affected();
        let excess = sqlx::query(
            "DELETE FROM toolgate_audit WHERE time_us < (
                SELECT time_us FROM toolgate_audit ORDER BY time_us DESC LIMIT 1 OFFSET $1)",
        )
        .bind(i64::try_from(self.max_events).unwrap_or(i64::MAX))
        .execute(&mut self.conn)
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

/// A connection of the sink's own, tuned for appending.
async fn connect(store: &Store) -> anyhow::Result<AnyConnection> {
    let mut conn = AnyConnection::connect(&store.url).await?;
    if store.is_sqlite() {
        for pragma in [
            "PRAGMA journal_mode = WAL",
            "PRAGMA synchronous = NORMAL",
            "PRAGMA busy_timeout = 5000",
        ] {
            sqlx::query(pragma).execute(&mut conn).await?;
        }
    }
    Ok(conn)
}

impl Sink for StoreSink {
    fn name(&self) -> &'static str {
        "store"
    }

    fn write<'a>(&'a mut self, events: &'a [Event]) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            if let Err(e) = self.insert(events).await {
                // A broken connection (a restarted database) gets one new try.
                tracing::warn!(error = %e, "audit store write failed; reconnecting");
                self.conn = connect(&self.store).await?;
                self.insert(events).await?;
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
