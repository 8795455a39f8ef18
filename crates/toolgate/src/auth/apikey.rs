//! API keys: issued per principal, shown once, kept only as a hash, revocable.
//!
//! A key reads `tgk_<id>_<secret>`: the id finds the record without a scan, the
//! 256-bit secret is what proves possession. Only the secret's SHA-256 is stored
//! (a random 256-bit secret needs no slow hash: there is nothing to guess). Lookups
//! are cached for a moment so a revocation takes effect within [`CACHE_TTL`] on
//! every replica without a store round trip per request.

use super::{AuthError, AuthMethod, Principal, TokenRejection};
use crate::store::Store;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore as _;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::Row as _;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub const KEY_PREFIX: &str = "tgk_";
/// How long a looked-up key (or its absence) is trusted before the store is asked
/// again: the longest a revoked key keeps working.
pub const CACHE_TTL: Duration = Duration::from_secs(2);
const CACHE_MAX: usize = 10_000;

/// What a new key is for.
#[derive(Debug, Clone, Default)]
pub struct KeySpec {
    pub principal: String,
    pub tenant: Option<String>,
    pub agent: Option<String>,
    pub groups: Vec<String>,
    pub description: Option<String>,
    /// Unix seconds after which the key stops working.
    pub expires_at: Option<i64>,
}

/// A stored key, without its secret.
#[derive(Debug, Clone, Serialize)]
pub struct KeyRecord {
    pub id: String,
    pub principal: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    pub groups: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    #[serde(skip)]
    hash: String,
}

impl KeyRecord {
    pub fn state(&self, now: i64) -> &'static str {
        if self.revoked_at.is_some() {
            "revoked"
        } else if self.expires_at.is_some_and(|e| e <= now) {
            "expired"
        } else {
            "active"
        }
    }
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn digest(secret: &str) -> String {
    let d = Sha256::digest(secret.as_bytes());
    crate::seal::hex(&d)
}

/// Equal without an early exit, so timing says nothing about where digests differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Split a presented key into id and secret; `None` if it is not shaped like one.
fn parse(presented: &str) -> Option<(&str, &str)> {
    let rest = presented.strip_prefix(KEY_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    (id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()) && secret.len() >= 32)
        .then_some((id, secret))
}

/// Create a key; the returned string is the only time the secret exists outside
/// the caller's hands.
pub async fn create(store: &Store, spec: &KeySpec) -> anyhow::Result<(KeyRecord, String)> {
    if spec.principal.trim().is_empty() {
        anyhow::bail!("a key needs a principal");
    }
    let mut id = [0u8; 8];
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut id);
    rand::rng().fill_bytes(&mut secret);
    let id = crate::seal::hex(&id);
    let secret = URL_SAFE_NO_PAD.encode(secret);
    let record = KeyRecord {
        id: id.clone(),
        principal: spec.principal.clone(),
        tenant: spec.tenant.clone(),
        agent: spec.agent.clone(),
        groups: spec.groups.clone(),
        description: spec.description.clone(),
        created_at: now(),
        expires_at: spec.expires_at,
        revoked_at: None,
        hash: digest(&secret),
    };
    sqlx::query(
        "INSERT INTO toolgate_api_keys
            (id, hash, principal, tenant, agent, groups_json, description, created_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&record.id)
    .bind(&record.hash)
    .bind(&record.principal)
    .bind(&record.tenant)
    .bind(&record.agent)
    .bind(serde_json::to_string(&record.groups)?)
    .bind(&record.description)
    .bind(record.created_at)
    .bind(record.expires_at)
    .execute(&store.pool)
    .await?;
    Ok((record, format!("{KEY_PREFIX}{id}_{secret}")))
}

const COLUMNS: &str = "id, hash, principal, tenant, agent, groups_json, description, created_at, expires_at, revoked_at";

fn record(row: &sqlx::any::AnyRow) -> Result<KeyRecord, sqlx::Error> {
    let groups: String = row.try_get("groups_json")?;
    Ok(KeyRecord {
        id: row.try_get("id")?,
        hash: row.try_get("hash")?,
        principal: row.try_get("principal")?,
        tenant: row.try_get("tenant")?,
        agent: row.try_get("agent")?,
        groups: serde_json::from_str(&groups).unwrap_or_default(),
        description: row.try_get("description")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

/// Every key, oldest first.
pub async fn list(store: &Store) -> anyhow::Result<Vec<KeyRecord>> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM toolgate_api_keys ORDER BY created_at, id"
    )))
    .fetch_all(&store.pool)
    .await?;
    Ok(rows.iter().map(record).collect::<Result<_, _>>()?)
}

async fn find(store: &Store, id: &str) -> Result<Option<KeyRecord>, sqlx::Error> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM toolgate_api_keys WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(&store.pool)
    .await?;
    row.as_ref().map(record).transpose()
}

/// Revoke a key; `false` if there is no such key. Revoking twice is harmless.
pub async fn revoke(store: &Store, id: &str) -> anyhow::Result<bool> {
    let done = sqlx::query(
        "UPDATE toolgate_api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
    )
    .bind(now())
    .bind(id)
    .execute(&store.pool)
    .await?;
    if done.rows_affected() > 0 {
        return Ok(true);
    }
    Ok(find(store, id).await?.is_some())
}

/// When a key id was looked up, and what was found.
type Cached = (Instant, Option<Arc<KeyRecord>>);

/// Checks presented keys against the store.
pub struct ApiKeys {
    store: Store,
    cache: Mutex<HashMap<String, Cached>>,
}

impl ApiKeys {
    pub fn new(store: Store) -> ApiKeys {
        ApiKeys {
            store,
            cache: Mutex::default(),
        }
    }

    /// Whether the key store answers (for readiness).
    pub async fn store_check(&self) -> Result<(), String> {
        sqlx::query("SELECT 1")
            .execute(&self.store.pool)
            .await
            .map(|_| ())
            .map_err(|e| {
                tracing::warn!(error = %e, "the key store does not answer");
                "the key store does not answer".to_owned()
            })
    }

    /// Whether `presented` is shaped like one of our keys (so a bearer token that
    /// is not goes to the JWT verifier instead).
    pub fn looks_like_key(presented: &str) -> bool {
        presented.starts_with(KEY_PREFIX)
    }

    pub async fn authenticate(&self, presented: &str) -> Result<Principal, AuthError> {
        let invalid = || AuthError::InvalidToken(TokenRejection::InvalidApiKey);
        let (id, secret) = parse(presented).ok_or_else(invalid)?;
        let record = self.lookup(id).await?.ok_or_else(invalid)?;
        if !same(&record.hash, &digest(secret)) {
            return Err(invalid());
        }
        match record.state(now()) {
            "active" => {}
            "revoked" => return Err(AuthError::InvalidToken(TokenRejection::Revoked)),
            _ => return Err(AuthError::InvalidToken(TokenRejection::Expired)),
        }
        let mut attrs = serde_json::Map::new();
        attrs.insert("key_id".into(), record.id.clone().into());
        Ok(Principal {
            user: record.principal.clone(),
            agent: record.agent.clone(),
            tenant: record.tenant.clone(),
            groups: record.groups.clone(),
            scopes: Vec::new(),
            attrs,
            method: AuthMethod::ApiKey,
            recorded: Default::default(),
        })
    }

    async fn lookup(&self, id: &str) -> Result<Option<Arc<KeyRecord>>, AuthError> {
        if let Some((at, hit)) = self.cache.lock().unwrap_or_else(|p| p.into_inner()).get(id)
            && at.elapsed() < CACHE_TTL
        {
            return Ok(hit.clone());
        }
        let found = find(&self.store, id).await.map_err(|e| {
            tracing::error!(error = %e, "API key lookup failed");
            AuthError::Unavailable
        })?;
        let found = found.map(Arc::new);
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= CACHE_MAX {
            cache.retain(|_, (at, _)| at.elapsed() < CACHE_TTL);
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
        }
        cache.insert(id.to_owned(), (Instant::now(), found.clone()));
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn sqlite() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open("sqlite://keys.db", Some(dir.path()))
            .await
            .unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn a_key_works_until_revoked_and_only_its_hash_is_stored() {
        let (dir, store) = sqlite().await;
        let spec = KeySpec {
            principal: "alice".into(),
            tenant: Some("acme".into()),
            groups: vec!["finance".into()],
            ..Default::default()
        };
        let (rec, key) = create(&store, &spec).await.unwrap();
        let keys = ApiKeys::new(store.clone());
        let p = keys.authenticate(&key).await.unwrap();
        assert_eq!(
            (p.user.as_str(), p.tenant.as_deref()),
            ("alice", Some("acme"))
        );
        assert_eq!(p.groups, ["finance"]);
        assert_eq!(p.method, AuthMethod::ApiKey);

        // The secret never reaches the file.
        // (The secret is base64url, which may itself contain `_`.)
        let secret = key
            .strip_prefix(&format!("{KEY_PREFIX}{}_", rec.id))
            .expect("tgk_<id>_<secret>");
        assert!(secret.len() >= 43, "{secret}");
        let bytes = std::fs::read(dir.path().join("keys.db")).unwrap();
        assert!(!String::from_utf8_lossy(&bytes).contains(secret));

        // A wrong secret for a real id, and garbage, are both just invalid.
        let wrong = format!("{KEY_PREFIX}{}_{}", rec.id, "A".repeat(43));
        for bad in [wrong.as_str(), "tgk_nope", "Bearer x", ""] {
            let e = keys.authenticate(bad).await.unwrap_err();
            assert_eq!(e.code(), "invalid_token", "{bad}");
        }

        assert!(revoke(&store, &rec.id).await.unwrap());
        assert!(!revoke(&store, "0000000000000000").await.unwrap());
        // A fresh checker (another replica, or after the cache window) refuses it.
        let e = ApiKeys::new(store.clone())
            .authenticate(&key)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("revoked"), "{e}");
        let listed = list(&store).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].state(now()), "revoked");
    }

    #[tokio::test]
    async fn an_expired_key_is_refused() {
        let (_dir, store) = sqlite().await;
        let spec = KeySpec {
            principal: "bob".into(),
            expires_at: Some(now() - 1),
            ..Default::default()
        };
        let (_, key) = create(&store, &spec).await.unwrap();
        let e = ApiKeys::new(store).authenticate(&key).await.unwrap_err();
        assert!(e.to_string().contains("expired"), "{e}");
    }

    /// The same statements against the machine's PostgreSQL.
    #[tokio::test]
    async fn keys_live_in_postgres_too() {
        let url = std::env::var("TOOLGATE_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let store = Store::open(&url, None)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at {url} is required: {e:#}"));
        let spec = KeySpec {
            principal: "carol".into(),
            groups: vec!["ops".into(), "dev".into()],
            ..Default::default()
        };
        let (rec, key) = create(&store, &spec).await.unwrap();
        let p = ApiKeys::new(store.clone())
            .authenticate(&key)
            .await
            .unwrap();
        assert_eq!(p.user, "carol");
        assert_eq!(p.groups, ["ops", "dev"]);
        assert!(revoke(&store, &rec.id).await.unwrap());
        assert!(ApiKeys::new(store).authenticate(&key).await.is_err());
    }
}
