//! The gateway's durable state: the embedded SQLite file by default, PostgreSQL
//! when several replicas share it. One SQL dialect serves both (sqlx's `Any`
//! driver; the statements stick to what both databases accept), and the schema
//! is created on first use.

use anyhow::Context as _;
use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;
use std::path::Path;

/// A connection pool to the configured store.
#[derive(Clone)]
pub struct Store {
    pub(crate) pool: AnyPool,
    /// The URL it was opened with (resolved; may hold a password).
    pub(crate) url: String,
}

impl Store {
    pub fn is_sqlite(&self) -> bool {
        self.url.starts_with("sqlite:")
    }
}

/// How long an unused pooled connection stays open.
const IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS toolgate_api_keys (
        id TEXT PRIMARY KEY,
        hash TEXT NOT NULL,
        principal TEXT NOT NULL,
        tenant TEXT,
        agent TEXT,
        groups_json TEXT NOT NULL,
        description TEXT,
        created_at BIGINT NOT NULL,
        expires_at BIGINT,
        revoked_at BIGINT
    )",
    // The audit trail: the columns queries filter on, and the whole event.
    "CREATE TABLE IF NOT EXISTS toolgate_audit (
        id TEXT PRIMARY KEY,
        time_us BIGINT NOT NULL,
        kind TEXT NOT NULL,
        user_name TEXT,
        tenant TEXT,
        agent TEXT,
        session_id TEXT,
        method TEXT,
        server TEXT,
        target TEXT,
        decision TEXT,
        outcome TEXT,
        event_json TEXT NOT NULL
    )",
    // Time ranges use the primary key (ids begin with the time): one index
    // fewer to write per event. Stores made before that lose theirs here.
    "DROP INDEX IF EXISTS toolgate_audit_time",
    "CREATE INDEX IF NOT EXISTS toolgate_audit_user ON toolgate_audit (user_name, time_us)",
    "CREATE INDEX IF NOT EXISTS toolgate_audit_target ON toolgate_audit (target, time_us)",
];

impl Store {
    /// The store a config names in `storage`, relative to the config file.
    pub async fn for_config(config: &crate::config::Config) -> anyhow::Result<Store> {
        let base = config.source.as_deref().and_then(Path::parent);
        Store::open(&config.storage, base).await
    }

    /// Open (creating if needed) the store `url` names: `sqlite://PATH` (relative
    /// paths are taken from `base`, the config file's directory) or
    /// `postgres://…`.
    pub async fn open(url: &str, base: Option<&Path>) -> anyhow::Result<Store> {
        sqlx::any::install_default_drivers();
        let url = resolve(url, base)?;
        let pool = AnyPoolOptions::new()
            .max_connections(8)
            // A SQLite connection is a thread and a page cache; reopening one
            // takes a millisecond. Idle ones go after a minute, not ten.
            .idle_timeout(IDLE_TIMEOUT)
            .connect_lazy(&url)
            .with_context(|| format!("cannot open the store {}", redact(&url)))?;
        // On one connection: statements run one by one on the pool each open a
        // connection of their own while the last one is still being returned.
        let mut conn = pool
            .acquire()
            .await
            .with_context(|| format!("cannot open the store {}", redact(&url)))?;
        for statement in SCHEMA {
            sqlx::query(sqlx::AssertSqlSafe(*statement))
                .execute(&mut *conn)
                .await
                .with_context(|| format!("cannot create the schema in {}", redact(&url)))?;
        }
        // Not kept: most stores are used now and then (retention, reads), and
        // an idle SQLite connection is a thread and a page cache.
        let _ = conn.close().await;
        Ok(Store { pool, url })
    }
}

/// The file a `sqlite://` store URL names (relative paths taken from `base`);
/// `None` for PostgreSQL and in-memory databases.
pub fn sqlite_file(url: &str, base: Option<&Path>) -> Option<std::path::PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or(url.strip_prefix("sqlite:"))?;
    let path = rest.split_once('?').map_or(rest, |(p, _)| p);
    if path.is_empty() || path == ":memory:" {
        return None;
    }
    Some(base.unwrap_or(Path::new(".")).join(path))
}

/// The URL sqlx opens: SQLite paths made absolute and the file created if missing.
fn resolve(url: &str, base: Option<&Path>) -> anyhow::Result<String> {
    if let Some(rest) = url
        .strip_prefix("sqlite://")
        .or(url.strip_prefix("sqlite:"))
    {
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        if path.is_empty() {
            anyhow::bail!("storage: `{url}` names no SQLite file");
        }
        let path = if path == ":memory:" || Path::new(path).is_absolute() {
            path.to_owned()
        } else {
            base.unwrap_or(Path::new("."))
                .join(path)
                .to_string_lossy()
                .into_owned()
        };
        let query = if query.is_empty() {
            "mode=rwc".to_owned()
        } else {
            query.to_owned()
        };
        return Ok(format!("sqlite://{path}?{query}"));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(url.to_owned());
    }
    anyhow::bail!(
        "storage: `{}` is neither sqlite:// nor postgres://",
        redact(url)
    )
}

/// A store URL fit for messages: any password replaced.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_paths_are_taken_from_the_config_directory() {
        let base = Path::new("/etc/toolgate");
        assert_eq!(
            resolve("sqlite://toolgate.db", Some(base)).unwrap(),
            "sqlite:///etc/toolgate/toolgate.db?mode=rwc"
        );
        assert_eq!(
            resolve("sqlite:///var/lib/tg.db?mode=ro", Some(base)).unwrap(),
            "sqlite:///var/lib/tg.db?mode=ro"
        );
        assert!(resolve("mysql://x", None).is_err());
        assert!(resolve("sqlite://", None).is_err());
    }

    #[tokio::test]
    async fn an_opened_sqlite_store_holds_no_connection() {
        let dir = tempfile::tempdir().unwrap();
        for _ in 0..2 {
            // Made, then opened again over the schema it has.
            let store = Store::open("sqlite://s.db", Some(dir.path()))
                .await
                .unwrap();
            assert_eq!(
                store.pool.size(),
                0,
                "connections left open after the schema"
            );
            let events: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM toolgate_audit")
                .fetch_one(&store.pool)
                .await
                .unwrap();
            assert_eq!(events, 0);
        }
        let missing = dir.path().join("no-such-dir").join("s.db");
        let Err(err) = Store::open(&format!("sqlite://{}", missing.display()), None).await else {
            panic!("a store in a missing directory opened");
        };
        assert!(
            format!("{err:#}").starts_with("cannot open the store"),
            "{err:#}"
        );
    }

    #[test]
    fn passwords_never_reach_messages() {
        let shown = redact("postgres://app:hunter2@db:5432/toolgate");
        assert!(!shown.contains("hunter2"), "{shown}");
        let err = resolve("mysql://app:hunter2@db/x", None).unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }
}
