//! One issuer's signing keys (its JWKS): fetched over HTTP(S), kept as an immutable
//! snapshot behind `arc-swap`, refreshed in the background as often as the issuer's
//! `Cache-Control` suggests (within bounds), and refetched when a token names a key
//! the snapshot lacks.
//!
//! A token-triggered refetch happens at most once per `refetch_interval`, and
//! requests that miss at the same time share one fetch: forged tokens with made-up
//! `kid`s cannot make toolgate hammer the issuer. A failed fetch keeps the old keys.
//! Only asymmetric signature keys of a known type are kept; everything else in the
//! document is skipped (and logged at debug level).

use super::{AuthError, TokenRejection};
use arc_swap::ArcSwap;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, KeyOperations, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey};
use reqwest::header::{ACCEPT, CACHE_CONTROL};
use serde::Deserialize;
use serde_json::Value;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// Keys kept from one document; an issuer publishing more is misconfigured or hostile.
const MAX_KEYS: usize = 64;

/// Why an issuer's keys could not be fetched. Shown to operators, never to clients.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("cannot fetch the JWKS at {url}: {source}")]
    Fetch {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("the JWKS at {url} answered HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("the JWKS at {url} is larger than {limit} bytes")]
    TooLarge { url: String, limit: usize },
    #[error("{url} did not send a JWK set: {message}")]
    Invalid { url: String, message: String },
}

/// The type of a public key, which fixes the algorithms it can verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    Rsa,
    P256,
    P384,
    Ed25519,
}

impl KeyKind {
    fn fits(self, alg: Algorithm) -> bool {
        use Algorithm::*;
        matches!(
            (self, alg),
            (KeyKind::Rsa, RS256 | RS384 | RS512 | PS256 | PS384 | PS512)
                | (KeyKind::P256, ES256)
                | (KeyKind::P384, ES384)
                | (KeyKind::Ed25519, EdDSA)
        )
    }
}

/// A public key fit for verifying signatures.
pub(super) struct SigningKey {
    kid: Option<String>,
    kind: KeyKind,
    /// The key's own `alg`, when the JWKS pins one.
    alg: Option<Algorithm>,
    pub(super) key: DecodingKey,
}

impl SigningKey {
    /// Whether a token signed with `alg` may be checked with this key: the key type
    /// must fit (no RSA key for an ECDSA token, never a symmetric key) and a pinned
    /// `alg` must be exactly the token's.
    fn fits(&self, alg: Algorithm) -> bool {
        self.kind.fits(alg) && self.alg.is_none_or(|a| a == alg)
    }
}

/// One fetched document's usable keys. `generation` counts successful fetches;
/// 0 means the keys were never fetched.
struct KeySet {
    keys: Vec<Arc<SigningKey>>,
    generation: u64,
}

enum Selection {
    Found(Arc<SigningKey>),
    /// No key of that `kid` (or, without `kid`, no key at all): a refetch may help.
    Missing,
    Ambiguous,
    Mismatch,
}

impl KeySet {
    fn select(&self, kid: Option<&str>, alg: Algorithm) -> Selection {
        let candidates: Vec<&Arc<SigningKey>> = match kid {
            Some(kid) => self
                .keys
                .iter()
                .filter(|k| k.kid.as_deref() == Some(kid))
                .collect(),
            // Without a `kid` the key is only unambiguous if the issuer has one.
            None if self.keys.len() > 1 => return Selection::Ambiguous,
            None => self.keys.iter().collect(),
        };
        if candidates.is_empty() {
            return Selection::Missing;
        }
        match candidates.into_iter().find(|k| k.fits(alg)) {
            Some(k) => Selection::Found(k.clone()),
            None => Selection::Mismatch,
        }
    }
}

impl Selection {
    fn into_result(self) -> Result<Arc<SigningKey>, AuthError> {
        match self {
            Selection::Found(k) => Ok(k),
            Selection::Missing => Err(TokenRejection::UnknownKey.into()),
            Selection::Ambiguous => Err(TokenRejection::AmbiguousKey.into()),
            Selection::Mismatch => Err(TokenRejection::KeyMismatch.into()),
        }
    }
}

/// How often keys are fetched, and the limits of one fetch.
#[derive(Debug, Clone)]
pub(super) struct RefreshPolicy {
    /// Bounds on how long fetched keys are kept before the background refresh,
    /// whatever the issuer's `max-age` says: not so short that toolgate polls, not
    /// so long that a withdrawn key stays trusted for days.
    pub min_age: Duration,
    pub max_age: Duration,
    /// Without `Cache-Control: max-age`.
    pub default_age: Duration,
    /// First delay after a failed background fetch; doubles up to `default_age`.
    pub retry: Duration,
    /// At most one token-triggered refetch per this interval.
    pub refetch_interval: Duration,
    pub timeout: Duration,
    pub max_bytes: usize,
}

impl Default for RefreshPolicy {
    fn default() -> Self {
        RefreshPolicy {
            min_age: Duration::from_secs(60),
            max_age: Duration::from_secs(3600),
            default_age: Duration::from_secs(600),
            retry: Duration::from_secs(15),
            refetch_interval: Duration::from_secs(10),
            timeout: Duration::from_secs(10),
            max_bytes: 256 * 1024,
        }
    }
}

impl RefreshPolicy {
    fn keep_for(&self, max_age: Option<Duration>) -> Duration {
        max_age.map_or(self.default_age, |a| a.clamp(self.min_age, self.max_age))
    }

    fn retry_after(&self, failures: u32) -> Duration {
        let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(16));
        self.retry.saturating_mul(factor).min(self.default_age)
    }
}

/// The keys of one issuer.
pub(super) struct Jwks {
    url: String,
    http: reqwest::Client,
    policy: RefreshPolicy,
    current: ArcSwap<KeySet>,
    /// Serialises fetches; holds when the last token-triggered fetch began.
    fetching: tokio::sync::Mutex<Option<Instant>>,
}

impl Jwks {
    pub(super) fn new(url: String, http: reqwest::Client, policy: RefreshPolicy) -> Jwks {
        Jwks {
            url,
            http,
            policy,
            current: ArcSwap::from_pointee(KeySet {
                keys: Vec::new(),
                generation: 0,
            }),
            fetching: tokio::sync::Mutex::new(None),
        }
    }

    /// The key to check a token signed with `alg` that names `kid`. A miss triggers
    /// a (rate-limited, shared) refetch before the token is declared unknown.
    pub(super) async fn key_for(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Arc<SigningKey>, AuthError> {
        let seen = {
            let set = self.current.load();
            match set.select(kid, alg) {
                Selection::Missing => set.generation,
                other => return other.into_result(),
            }
        };
        self.refetch_after_miss(seen).await;
        let set = self.current.load();
        match set.select(kid, alg) {
            Selection::Missing if set.generation == 0 => Err(AuthError::KeysUnavailable),
            other => other.into_result(),
        }
    }

    /// Fetches the keys now, whatever the rate limit; on success returns how long
    /// they may be kept. On failure the old keys stay.
    pub(super) async fn refresh(&self) -> Result<Duration, JwksError> {
        let _serial = self.fetching.lock().await;
        self.fetch_and_store().await
    }

    async fn refetch_after_miss(&self, seen: u64) {
        let mut last = self.fetching.lock().await;
        if self.current.load().generation != seen {
            // Keys arrived while this request waited: the fetch is shared.
            return;
        }
        if last.is_some_and(|t| t.elapsed() < self.policy.refetch_interval) {
            return;
        }
        *last = Some(Instant::now());
        if let Err(e) = self.fetch_and_store().await {
            tracing::warn!(error = %e, "a token named an unknown key and refetching the issuer's keys failed; keeping the old ones");
        }
    }

    async fn fetch_and_store(&self) -> Result<Duration, JwksError> {
        let (keys, max_age) = self.fetch().await?;
        let generation = self.current.load().generation + 1;
        tracing::debug!(url = %self.url, keys = keys.len(), generation, "fetched signing keys");
        self.current.store(Arc::new(KeySet { keys, generation }));
        Ok(self.policy.keep_for(max_age))
    }

    async fn fetch(&self) -> Result<(Vec<Arc<SigningKey>>, Option<Duration>), JwksError> {
        let url = &self.url;
        let failed = |source| JwksError::Fetch {
            url: url.clone(),
            source,
        };
        let mut response = self
            .http
            .get(url)
            .header(ACCEPT, "application/jwk-set+json, application/json")
            .timeout(self.policy.timeout)
            .send()
            .await
            .map_err(failed)?;
        if !response.status().is_success() {
            return Err(JwksError::Status {
                url: url.clone(),
                status: response.status().as_u16(),
            });
        }
        let max_age = response
            .headers()
            .get(CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .and_then(cache_max_age);
        let limit = self.policy.max_bytes;
        let too_large = || JwksError::TooLarge {
            url: url.clone(),
            limit,
        };
        if response.content_length().is_some_and(|n| n > limit as u64) {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(failed)? {
            if body.len() + chunk.len() > limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        let keys = parse_key_set(&body).map_err(|message| JwksError::Invalid {
            url: url.clone(),
            message,
        })?;
        Ok((keys, max_age))
    }
}

/// Refreshes `jwks` until it is dropped: at once, then whenever the fetched keys
/// go stale; after a failure sooner, with backoff.
pub(super) async fn keep_fresh(jwks: Weak<Jwks>) {
    let mut delay = Duration::ZERO;
    let mut failures = 0;
    loop {
        tokio::time::sleep(delay).await;
        let Some(jwks) = jwks.upgrade() else {
            return;
        };
        delay = match jwks.refresh().await {
            Ok(keep_for) => {
                failures = 0;
                keep_for
            }
            Err(e) => {
                failures += 1;
                let retry = jwks.policy.retry_after(failures);
                tracing::warn!(error = %e, retry_in = ?retry, "cannot refresh an issuer's signing keys; keeping the old ones");
                retry
            }
        };
    }
}

/// `max-age` of a `Cache-Control` value; `no-store` and `no-cache` count as 0
/// (the policy's minimum then applies).
fn cache_max_age(value: &str) -> Option<Duration> {
    let mut age = None;
    for directive in value.split(',').map(str::trim) {
        if directive.eq_ignore_ascii_case("no-store") || directive.eq_ignore_ascii_case("no-cache")
        {
            return Some(Duration::ZERO);
        }
        if let Some((name, secs)) = directive.split_once('=')
            && name.trim().eq_ignore_ascii_case("max-age")
        {
            age = secs
                .trim()
                .trim_matches('"')
                .parse::<u64>()
                .ok()
                .map(Duration::from_secs);
        }
    }
    age
}

fn parse_key_set(body: &[u8]) -> Result<Vec<Arc<SigningKey>>, String> {
    #[derive(Deserialize)]
    struct Document {
        keys: Vec<Value>,
    }
    let doc: Document = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let mut keys = Vec::new();
    for (index, raw) in doc.keys.into_iter().enumerate() {
        if keys.len() == MAX_KEYS {
            tracing::debug!(max = MAX_KEYS, "the JWKS has more keys; ignoring the rest");
            break;
        }
        match usable_key(raw) {
            Ok(key) => keys.push(Arc::new(key)),
            Err(why) => tracing::debug!(index, why, "skipping a JWKS key"),
        }
    }
    Ok(keys)
}

fn usable_key(raw: Value) -> Result<SigningKey, &'static str> {
    let jwk: Jwk = serde_json::from_value(raw).map_err(|_| "not a JWK toolgate understands")?;
    let common = &jwk.common;
    if common
        .public_key_use
        .as_ref()
        .is_some_and(|u| *u != PublicKeyUse::Signature)
    {
        return Err("not meant for signatures (`use`)");
    }
    if common
        .key_operations
        .as_ref()
        .is_some_and(|ops| !ops.contains(&KeyOperations::Verify))
    {
        return Err("not meant for verifying (`key_ops`)");
    }
    let alg = match common.key_algorithm {
        None => None,
        Some(a) => Some(
            signature_algorithm(a).ok_or("its `alg` is not an asymmetric signature algorithm")?,
        ),
    };
    let (kind, key) = match &jwk.algorithm {
        AlgorithmParameters::RSA(p) => {
            if modulus_bits(&p.n).ok_or("bad RSA modulus")? < 2048 {
                return Err("RSA keys under 2048 bits are too weak");
            }
            let key =
                DecodingKey::from_rsa_components(&p.n, &p.e).map_err(|_| "bad RSA components")?;
            (KeyKind::Rsa, key)
        }
        AlgorithmParameters::EllipticCurve(p) => {
            let (kind, len) = match p.curve {
                EllipticCurve::P256 => (KeyKind::P256, 32),
                EllipticCurve::P384 => (KeyKind::P384, 48),
                _ => return Err("unsupported elliptic curve"),
            };
            if decoded_len(&p.x) != Some(len) || decoded_len(&p.y) != Some(len) {
                return Err("EC coordinates do not fit the curve");
            }
            let key =
                DecodingKey::from_ec_components(&p.x, &p.y).map_err(|_| "bad EC coordinates")?;
            (kind, key)
        }
        AlgorithmParameters::OctetKeyPair(p) => {
            if p.curve != EllipticCurve::Ed25519 || decoded_len(&p.x) != Some(32) {
                return Err("only Ed25519 OKP keys are supported");
            }
            let key = DecodingKey::from_ed_components(&p.x).map_err(|_| "bad Ed25519 key")?;
            (KeyKind::Ed25519, key)
        }
        // A shared secret in a public document would let anyone mint tokens; a
        // resource server only ever verifies with public keys.
        AlgorithmParameters::OctetKey(_) => return Err("symmetric (`oct`) keys are never used"),
        _ => return Err("unsupported key type"),
    };
    if alg.is_some_and(|a| !kind.fits(a)) {
        return Err("its `alg` does not fit its key type");
    }
    Ok(SigningKey {
        kid: common.key_id.clone(),
        kind,
        alg,
        key,
    })
}

fn signature_algorithm(a: KeyAlgorithm) -> Option<Algorithm> {
    Some(match a {
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

fn decoded_len(b64: &str) -> Option<usize> {
    URL_SAFE_NO_PAD.decode(b64).ok().map(|b| b.len())
}

fn modulus_bits(n: &str) -> Option<usize> {
    let bytes = URL_SAFE_NO_PAD.decode(n).ok()?;
    let first = bytes.iter().position(|b| *b != 0)?;
    Some((bytes.len() - first) * 8 - bytes[first].leading_zeros() as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_control_max_age() {
        assert_eq!(
            cache_max_age("public, max-age=120"),
            Some(Duration::from_secs(120))
        );
        assert_eq!(cache_max_age("Max-Age = 7"), Some(Duration::from_secs(7)));
        assert_eq!(cache_max_age("no-store"), Some(Duration::ZERO));
        assert_eq!(cache_max_age("public"), None);
        assert_eq!(cache_max_age("max-age=soon"), None);
    }

    #[test]
    fn refresh_interval_stays_within_bounds() {
        let p = RefreshPolicy::default();
        assert_eq!(p.keep_for(None), p.default_age);
        assert_eq!(p.keep_for(Some(Duration::ZERO)), p.min_age);
        assert_eq!(
            p.keep_for(Some(Duration::from_secs(300))),
            Duration::from_secs(300)
        );
        assert_eq!(p.keep_for(Some(Duration::from_secs(86400 * 30))), p.max_age);
        assert_eq!(p.retry_after(1), p.retry);
        assert_eq!(p.retry_after(2), p.retry * 2);
        assert_eq!(p.retry_after(40), p.default_age);
    }

    #[test]
    fn only_asymmetric_signing_keys_are_kept() {
        let doc = serde_json::json!({ "keys": [
            { "kty": "oct", "kid": "hmac", "k": "c2VjcmV0" },
            { "kty": "EC", "kid": "enc", "use": "enc", "crv": "P-256",
              "x": URL_SAFE_NO_PAD.encode([1u8; 32]), "y": URL_SAFE_NO_PAD.encode([2u8; 32]) },
            { "kty": "EC", "kid": "short", "crv": "P-256",
              "x": URL_SAFE_NO_PAD.encode([1u8; 31]), "y": URL_SAFE_NO_PAD.encode([2u8; 32]) },
            { "kty": "RSA", "kid": "weak", "n": URL_SAFE_NO_PAD.encode([0xffu8; 128]), "e": "AQAB" },
            { "kty": "RSA", "kid": "oaep", "alg": "RSA-OAEP", "n": URL_SAFE_NO_PAD.encode([0xffu8; 256]), "e": "AQAB" },
            { "kty": "RSA", "kid": "hs", "alg": "HS256", "n": URL_SAFE_NO_PAD.encode([0xffu8; 256]), "e": "AQAB" },
            { "kty": "OKP", "kid": "x", "crv": "X25519", "x": URL_SAFE_NO_PAD.encode([1u8; 32]) },
            { "kty": "RSA", "kid": "good", "n": URL_SAFE_NO_PAD.encode([0xffu8; 256]), "e": "AQAB" },
        ]});
        let keys = parse_key_set(doc.to_string().as_bytes()).unwrap();
        let kids: Vec<_> = keys.iter().map(|k| k.kid.as_deref()).collect();
        assert_eq!(kids, [Some("good")]);
        assert!(parse_key_set(b"{\"nokeys\": []}").is_err());
    }

    #[test]
    fn modulus_size() {
        assert_eq!(
            modulus_bits(&URL_SAFE_NO_PAD.encode([0x00, 0x01, 0xff])),
            Some(9)
        );
        assert_eq!(
            modulus_bits(&URL_SAFE_NO_PAD.encode([0xffu8; 256])),
            Some(2048)
        );
        assert_eq!(modulus_bits(""), None);
    }
}
