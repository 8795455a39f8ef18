//! Who is calling: every request is authenticated into a [`Principal`] before the
//! gateway does anything with it.
//!
//! A principal comes from an API key, a JWT bearer token (toolgate is an OAuth 2.1
//! resource server), a client certificate, or — only when the operator configured
//! it — the anonymous local user. The caller's credential stays here: nothing of it
//! is forwarded to an upstream server.
//!
//! `jwt.rs` verifies bearer tokens against trusted issuers, `jwks.rs` keeps each
//! issuer's signing keys, `claims.rs` turns verified claims into a principal, and
//! `metadata.rs` builds the RFC 9728 document that tells clients where to get tokens,
//! `apikey.rs` issues and checks API keys, `mtls.rs` reads client certificates. This file owns what they share:
//! [`Principal`], [`AuthError`], the `WWW-Authenticate` challenge, and the
//! [`Authenticator`] that picks the method for each request.

pub mod apikey;
mod by_principal;
mod claims;
mod jwks;
pub mod jwt;
pub mod metadata;
pub mod mtls;

pub(crate) use by_principal::ByPrincipal;
pub use jwks::JwksError;
pub use mtls::{CertRejection, ClientCert};

use crate::config::{AuthConfig, Config};
use crate::store::Store;
use apikey::ApiKeys;
use http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

/// How a principal proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    Anonymous,
    ApiKey,
    Jwt,
    Mtls,
}

/// An authenticated caller, as policies and audit see it. It reads back from
/// the audit trail's `principal` (to replay a decision) as it was written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Principal {
    /// The user (or service) the credential names: a JWT's subject, an API key's
    /// principal, a certificate's subject.
    pub user: String,
    /// The agent or client application acting for the user (a JWT's `azp` /
    /// `client_id`), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// The tenant the caller belongs to; `None` for single-tenant setups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Groups or roles.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// OAuth scopes the credential carries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// Further attributes mapped from claims, for policies.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub attrs: Map<String, Value>,
    pub method: AuthMethod,
    /// This principal as JSON, made the first time an audit event needs it.
    #[serde(skip)]
    pub recorded: Recorded,
}

/// A principal's JSON, made once: every audit event carries the whole principal,
/// and a caller's principal is the same `Arc` on each of its calls. A clone
/// starts empty, since a clone may be changed before it is used.
#[derive(Default)]
pub struct Recorded(std::sync::OnceLock<Arc<serde_json::value::RawValue>>);

impl Clone for Recorded {
    fn clone(&self) -> Recorded {
        Recorded::default()
    }
}

/// Not part of who the principal is.
impl PartialEq for Recorded {
    fn eq(&self, _: &Recorded) -> bool {
        true
    }
}

impl fmt::Debug for Recorded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Recorded")
    }
}

impl Principal {
    /// The user of a gateway without authentication, on loopback only.
    pub fn anonymous(user: &str) -> Principal {
        Principal {
            user: user.to_owned(),
            agent: None,
            tenant: None,
            groups: Vec::new(),
            scopes: Vec::new(),
            attrs: Map::new(),
            method: AuthMethod::Anonymous,
            recorded: Recorded::default(),
        }
    }

    /// This principal as JSON, as audit events record it. Made on first use: a
    /// principal is not changed once it is in use.
    pub fn json(&self) -> Arc<serde_json::value::RawValue> {
        self.recorded
            .0
            .get_or_init(|| {
                Arc::from(
                    serde_json::value::to_raw_value(self)
                        .unwrap_or_else(|_| serde_json::value::RawValue::NULL.to_owned()),
                )
            })
            .clone()
    }

    /// The anonymous user `auth.anonymous` describes.
    pub fn configured_anonymous(a: &crate::config::AnonymousConfig) -> Principal {
        let mut p = Principal::anonymous(&a.user);
        p.groups = a.groups.clone();
        p
    }

    /// The key that scopes what belongs to this caller (sessions, task ids,
    /// `requestState`, per-principal upstream connections): the same user in two
    /// tenants is two principals.
    pub fn key(&self) -> String {
        match &self.tenant {
            Some(t) => format!("{t}/{}", self.user),
            None => self.user.clone(),
        }
    }
}

/// The token of an `Authorization: Bearer TOKEN` header value (the scheme is
/// case-insensitive); `None` for any other scheme or an empty token.
pub fn bearer_token(header_value: &str) -> Option<&str> {
    let (scheme, token) = header_value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Why a request's credential was not accepted.
///
/// Every message is safe to send to the client: none repeats the credential, a
/// claim value, or key material — only fixed text and claim names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The request carries no credential at all.
    #[error("this endpoint needs a bearer token: send `Authorization: Bearer TOKEN`")]
    MissingToken,
    /// The token is malformed, forged, expired, or not meant for this gateway.
    #[error("{0}")]
    InvalidToken(TokenRejection),
    /// The token is valid but lacks scopes the gateway requires.
    #[error("the token lacks a required scope; it needs: {}", .required.join(" "))]
    InsufficientScope { required: Vec<String> },
    /// The token's issuer is trusted, but its signing keys have never been fetched
    /// successfully, so no token of it can be checked yet.
    #[error(
        "the token cannot be checked now: its issuer's signing keys are unavailable; retry later"
    )]
    KeysUnavailable,
    /// Credentials cannot be checked right now (the key store is unreachable).
    #[error("credentials cannot be checked right now; retry later")]
    Unavailable,
    /// Credentials sent the wrong way (in the URL, or under another scheme).
    #[error("{0}")]
    InvalidRequest(&'static str),
    /// A client certificate that chains to the trusted CA but does not name a
    /// caller the way `auth.mtls` asks.
    #[error("{0}")]
    InvalidCertificate(CertRejection),
}

/// What exactly is wrong with a rejected token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenRejection {
    /// Not three base64url segments of JSON.
    Malformed,
    TooLarge,
    /// No configured issuer has the token's `iss`.
    UntrustedIssuer,
    /// The header's `alg` is not in the issuer's list (`none` and HMAC never are).
    AlgorithmNotAccepted,
    /// The header lists `crit` extensions, which toolgate does not implement.
    CriticalHeader,
    /// The issuer does not publish the key the token names, even after a refetch.
    UnknownKey,
    /// The token names no `kid` and the issuer publishes several keys.
    AmbiguousKey,
    /// The named key's type or `alg` does not fit the token's `alg`.
    KeyMismatch,
    BadSignature,
    Expired,
    NotYetValid,
    IssuedInFuture,
    WrongAudience,
    /// A claim toolgate needs is absent (the name comes from config or the spec,
    /// never from the token).
    MissingClaim(String),
    /// A claim has the wrong JSON type.
    BadClaim(String),
    /// An API key toolgate did not issue, or whose secret is wrong.
    InvalidApiKey,
    /// An API key that was revoked.
    Revoked,
}

impl fmt::Display for TokenRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenRejection::Malformed => f.write_str("the token is not a well-formed JWT"),
            TokenRejection::TooLarge => f.write_str("the token is too large"),
            TokenRejection::UntrustedIssuer => {
                f.write_str("the token's issuer is not trusted here")
            }
            TokenRejection::AlgorithmNotAccepted => {
                f.write_str("the token's signature algorithm is not accepted for its issuer")
            }
            TokenRejection::CriticalHeader => f.write_str(
                "the token uses header extensions (`crit`) this gateway does not support",
            ),
            TokenRejection::UnknownKey => {
                f.write_str("the token is signed with a key its issuer does not publish")
            }
            TokenRejection::AmbiguousKey => {
                f.write_str("the token names no key (`kid`) and its issuer publishes several")
            }
            TokenRejection::KeyMismatch => {
                f.write_str("the token's algorithm does not fit the key it names")
            }
            TokenRejection::BadSignature => f.write_str("the token's signature does not verify"),
            TokenRejection::Expired => f.write_str("the token has expired"),
            TokenRejection::NotYetValid => f.write_str("the token is not valid yet (`nbf`)"),
            TokenRejection::IssuedInFuture => {
                f.write_str("the token was issued in the future (`iat`)")
            }
            TokenRejection::WrongAudience => {
                f.write_str("the token is not meant for this resource (`aud`)")
            }
            TokenRejection::MissingClaim(c) => write!(f, "the token lacks the `{c}` claim"),
            TokenRejection::BadClaim(c) => write!(f, "the token's `{c}` claim has the wrong type"),
            TokenRejection::InvalidApiKey => f.write_str("the API key is not valid"),
            TokenRejection::Revoked => f.write_str("the API key has been revoked"),
        }
    }
}

impl From<TokenRejection> for AuthError {
    fn from(r: TokenRejection) -> Self {
        AuthError::InvalidToken(r)
    }
}

impl AuthError {
    /// A stable code for clients and logs: `missing_token`, `invalid_token`,
    /// `insufficient_scope` (RFC 6750), `invalid_client_certificate`,
    /// `invalid_request` or `temporarily_unavailable`.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::MissingToken => "missing_token",
            AuthError::InvalidToken(_) => "invalid_token",
            AuthError::InvalidCertificate(_) => "invalid_client_certificate",
            AuthError::InsufficientScope { .. } => "insufficient_scope",
            AuthError::KeysUnavailable | AuthError::Unavailable => "temporarily_unavailable",
            AuthError::InvalidRequest(_) => "invalid_request",
        }
    }

    /// The HTTP status to answer with: 401 so the client (re)authenticates, 403
    /// when more scopes would help, 503 when the fault is the issuer's, not the
    /// token's.
    pub fn status(&self) -> StatusCode {
        match self {
            AuthError::MissingToken
            | AuthError::InvalidToken(_)
            | AuthError::InvalidCertificate(_) => StatusCode::UNAUTHORIZED,
            AuthError::InsufficientScope { .. } => StatusCode::FORBIDDEN,
            AuthError::KeysUnavailable | AuthError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            AuthError::InvalidRequest(_) => StatusCode::BAD_REQUEST,
        }
    }

    /// The `WWW-Authenticate` value for this error (RFC 6750 §3, RFC 9728 §5.1):
    /// `Bearer resource_metadata="…", scope="…"`, plus `error` and
    /// `error_description` for an invalid token or insufficient scope. A request
    /// without credentials gets no error code, as RFC 6750 asks. For
    /// `insufficient_scope` the scopes the token lacked are added to `scope`.
    pub fn www_authenticate(&self, resource_metadata_url: &str, scope: &str) -> String {
        let mut scopes: Vec<&str> = scope.split_whitespace().collect();
        if let AuthError::InsufficientScope { required } = self {
            for s in required {
                if !scopes.contains(&s.as_str()) {
                    scopes.push(s);
                }
            }
        }
        let mut challenge = format!(
            "Bearer resource_metadata=\"{}\"",
            quoted(resource_metadata_url)
        );
        if !scopes.is_empty() {
            challenge.push_str(&format!(", scope=\"{}\"", quoted(&scopes.join(" "))));
        }
        if matches!(
            self,
            AuthError::InvalidToken(_) | AuthError::InsufficientScope { .. }
        ) {
            challenge.push_str(&format!(
                ", error=\"{}\", error_description=\"{}\"",
                self.code(),
                quoted(&self.to_string())
            ));
        }
        challenge
    }
}

/// Keeps only the characters RFC 6750 allows inside its quoted parameters
/// (printable ASCII without `"` and `\`), so nothing can break out of the header.
fn quoted(text: &str) -> String {
    text.chars()
        .filter(|c| matches!(c, ' '..='~') && *c != '"' && *c != '\\')
        .collect()
}

/// How long a verified token is trusted without checking it again (never past its
/// `exp`): the longest a key the issuer withdrew keeps its tokens working.
const TOKEN_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(60);
const TOKEN_CACHE_MAX: usize = 10_000;

/// Verified tokens by the SHA-256 of their text.
#[derive(Default)]
struct TokenCache {
    map: std::sync::Mutex<std::collections::HashMap<[u8; 32], Remembered>>,
}

/// A verified token's principal, and until when it is trusted.
type Remembered = (Arc<Principal>, std::time::Instant);

impl TokenCache {
    fn digest(token: &str) -> [u8; 32] {
        use sha2::Digest as _;
        sha2::Sha256::digest(token.as_bytes()).into()
    }

    fn get(&self, token: &str) -> Option<Arc<Principal>> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let (p, until) = map.get(&Self::digest(token))?;
        (std::time::Instant::now() < *until).then(|| p.clone())
    }

    /// Remember a token that just verified, until its `exp` or the TTL, whichever
    /// comes first.
    fn put(&self, token: &str, principal: &Arc<Principal>) {
        let now = std::time::Instant::now();
        let mut until = now + TOKEN_CACHE_TTL;
        if let Some(left) = token_lifetime_left(token) {
            until = until.min(now + left);
        }
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= TOKEN_CACHE_MAX {
            map.retain(|_, (_, u)| *u > now);
            if map.len() >= TOKEN_CACHE_MAX {
                map.clear();
            }
        }
        map.insert(Self::digest(token), (principal.clone(), until));
    }
}

/// The time left before a (verified) token's `exp`.
fn token_lifetime_left(token: &str) -> Option<std::time::Duration> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let exp = serde_json::from_slice::<Value>(&bytes)
        .ok()?
        .get("exp")?
        .as_u64()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs();
    Some(std::time::Duration::from_secs(exp.saturating_sub(now)))
}

/// Query parameters that carry credentials in the wild; toolgate refuses them,
/// since URLs end up in logs, histories and `Referer` headers.
const QUERY_CREDENTIALS: [&str; 5] = ["access_token", "token", "api_key", "apikey", "key"];

/// Turns a request's credentials into a principal: an API key (ours, by its
/// prefix, or in its own header), else a JWT from a trusted issuer, else the
/// client certificate of the TLS connection, else — only if configured — the
/// anonymous user. A credential that fails is refused; it never falls back to
/// another method or to anonymous.
pub struct Authenticator {
    anonymous: Option<Arc<Principal>>,
    api_keys: Option<(ApiKeys, String)>,
    jwt: Option<jwt::JwtVerifier>,
    /// Tokens verified recently, so a client's every request does not pay for a
    /// signature check.
    verified: TokenCache,
    mtls: Option<mtls::CertMapper>,
    /// The URL clients use for the MCP endpoint.
    pub resource: String,
    /// Where the protected-resource metadata for `resource` is published.
    pub metadata_url: String,
    scopes: String,
    metadata: Value,
}

impl Authenticator {
    /// The authenticator `config` describes. Without an `auth` section every caller
    /// is the anonymous local user (the listener then stays on loopback).
    pub async fn from_config(config: &Config, listen: SocketAddr) -> anyhow::Result<Authenticator> {
        let none = AuthConfig {
            anonymous: Some(crate::config::AnonymousConfig {
                user: "local".into(),
                groups: Vec::new(),
            }),
            ..AuthConfig::default()
        };
        let auth = config.auth.as_ref().unwrap_or(&none);
        let resource = metadata::resource_url(auth, listen, config.tls.is_some());
        let metadata_url = metadata::resource_metadata_url(&resource)
            .ok_or_else(|| anyhow::anyhow!("auth.resource `{resource}` is not an http(s) URL"))?;
        let api_keys = match &auth.api_keys {
            Some(k) => {
                let store = Store::for_config(config).await?;
                Some((ApiKeys::new(store), k.header.to_ascii_lowercase()))
            }
            None => None,
        };
        let jwt = if auth.jwt.is_empty() {
            None
        } else {
            let http = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()?;
            let verifier = jwt::JwtVerifier::new(&auth.jwt, &resource, http)
                .map_err(|e| anyhow::anyhow!("{}: {}", e.key, e.message))?;
            // An issuer that cannot be reached now is reported, not fatal: its
            // tokens are refused with 503 until its keys arrive.
            if let Err(e) = verifier.refresh_now().await {
                tracing::warn!(error = %e, "cannot fetch an issuer's signing keys yet");
            }
            verifier.start_refresh();
            Some(verifier)
        };
        let anonymous = auth
            .anonymous
            .as_ref()
            .map(|a| Arc::new(Principal::configured_anonymous(a)));
        Ok(Authenticator {
            anonymous,
            api_keys,
            jwt,
            verified: TokenCache::default(),
            mtls: auth.mtls.clone().map(mtls::CertMapper::new),
            scopes: metadata::advertised_scopes(auth).join(" "),
            metadata: metadata::protected_resource_metadata(auth, &resource),
            resource,
            metadata_url,
        })
    }

    /// The key store's health, when API keys are configured.
    pub async fn store_check(&self) -> Option<Result<(), String>> {
        match &self.api_keys {
            Some((keys, _)) => Some(keys.store_check().await),
            None => None,
        }
    }

    /// The RFC 9728 protected-resource metadata document.
    pub fn metadata(&self) -> &Value {
        &self.metadata
    }

    /// Who is calling: `headers` and `query` are the request's, `client_cert`
    /// the verified certificate of its TLS connection, if any. Credentials in the
    /// query string are refused outright. A bearer token or API key the caller
    /// sends explicitly wins over the connection's certificate.
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
        client_cert: Option<&ClientCert>,
    ) -> Result<Arc<Principal>, AuthError> {
        if let Some(q) = query
            && url::form_urlencoded::parse(q.as_bytes())
                .any(|(k, _)| QUERY_CREDENTIALS.contains(&k.to_ascii_lowercase().as_str()))
        {
            return Err(AuthError::InvalidRequest(
                "credentials in the URL query are refused; send them in the Authorization header",
            ));
        }
        let bearer = match headers.get(http::header::AUTHORIZATION) {
            Some(v) => Some(v.to_str().ok().and_then(bearer_token).ok_or(
                AuthError::InvalidRequest("the Authorization header must be `Bearer TOKEN`"),
            )?),
            None => None,
        };
        if let Some((keys, header)) = &self.api_keys {
            let presented = if header == "authorization" {
                bearer.filter(|t| ApiKeys::looks_like_key(t))
            } else {
                headers.get(header.as_str()).and_then(|v| v.to_str().ok())
            };
            if let Some(key) = presented {
                return keys.authenticate(key.trim()).await.map(Arc::new);
            }
        }
        if let Some(token) = bearer {
            return match &self.jwt {
                Some(v) => {
                    if let Some(p) = self.verified.get(token) {
                        return Ok(p);
                    }
                    // Boxed: a verification may fetch the issuer's keys, a large
                    // future that every request would otherwise carry.
                    let p = Arc::new(Box::pin(v.verify(token)).await?);
                    self.verified.put(token, &p);
                    Ok(p)
                }
                None => Err(AuthError::InvalidToken(TokenRejection::Malformed)),
            };
        }
        if let (Some(mapper), Some(cert)) = (&self.mtls, client_cert) {
            return mapper.principal(cert).map(Arc::new);
        }
        self.anonymous.clone().ok_or(AuthError::MissingToken)
    }

    /// The `WWW-Authenticate` challenge for a failed authentication.
    pub fn challenge(&self, e: &AuthError) -> String {
        e.www_authenticate(&self.metadata_url, &self.scopes)
    }

    /// The challenge for `e` on another resource of this gateway (an endpoint),
    /// whose metadata lives at `metadata_url`.
    pub fn challenge_at(&self, e: &AuthError, metadata_url: &str) -> String {
        e.www_authenticate(metadata_url, &self.scopes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_principal_is_recorded_as_it_serialises_and_a_changed_clone_as_itself() {
        let mut alice = Principal::anonymous("alice");
        alice.groups = vec!["support".into()];
        let recorded: Value = serde_json::from_str(alice.json().get()).unwrap();
        assert_eq!(recorded, serde_json::to_value(&alice).unwrap());
        assert!(Arc::ptr_eq(&alice.json(), &alice.json()), "made once");
        let mut bob = alice.clone();
        bob.user = "bob".into();
        let recorded: Value = serde_json::from_str(bob.json().get()).unwrap();
        assert_eq!(recorded["user"], "bob");
        assert_eq!(
            bob,
            Principal {
                user: "bob".into(),
                ..alice.clone()
            }
        );
        let back: Principal = serde_json::from_str(bob.json().get()).unwrap();
        assert_eq!(back, bob);
    }

    #[test]
    fn challenges_follow_rfc_6750_and_9728() {
        let meta = "https://gw.example.com/.well-known/oauth-protected-resource/mcp";
        assert_eq!(
            AuthError::MissingToken.www_authenticate(meta, "mcp"),
            format!(r#"Bearer resource_metadata="{meta}", scope="mcp""#)
        );
        assert_eq!(
            AuthError::InvalidToken(TokenRejection::Expired).www_authenticate(meta, ""),
            format!(
                r#"Bearer resource_metadata="{meta}", error="invalid_token", error_description="the token has expired""#
            )
        );
        let scope = AuthError::InsufficientScope {
            required: vec!["mcp".into(), "tools:call".into()],
        };
        assert_eq!(
            scope.www_authenticate(meta, "mcp files:read"),
            format!(
                r#"Bearer resource_metadata="{meta}", scope="mcp files:read tools:call", error="insufficient_scope", error_description="the token lacks a required scope; it needs: mcp tools:call""#
            )
        );
        // Nothing can break out of a quoted parameter.
        let odd = AuthError::MissingToken.www_authenticate("https://x/\"y\\z\r\n", "a\"b");
        assert_eq!(
            odd,
            r#"Bearer resource_metadata="https://x/yz", scope="ab""#
        );
    }

    #[test]
    fn error_messages_never_echo_the_token() {
        let all = [
            AuthError::MissingToken,
            AuthError::KeysUnavailable,
            AuthError::InvalidToken(TokenRejection::Malformed),
            AuthError::InvalidToken(TokenRejection::BadSignature),
            AuthError::InvalidToken(TokenRejection::MissingClaim("sub".into())),
        ];
        for e in all {
            let text = e.to_string();
            assert!(!text.contains("eyJ"), "{text}");
            assert!(!e.code().is_empty());
        }
        assert_eq!(
            AuthError::InvalidToken(TokenRejection::Expired).status(),
            StatusCode::UNAUTHORIZED
        );
    }

    #[test]
    fn verified_tokens_are_remembered_until_their_exp_at_most() {
        use base64::Engine as _;
        let b64 = |v: serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let token = |exp: u64| {
            format!(
                "{}.{}.sig",
                b64(serde_json::json!({"alg": "ES256"})),
                b64(serde_json::json!({"exp": exp}))
            )
        };
        let cache = TokenCache::default();
        let p = Arc::new(Principal::anonymous("alice"));
        let fresh = token(now + 3600);
        cache.put(&fresh, &p);
        assert_eq!(cache.get(&fresh).unwrap().user, "alice");
        // Another token (even of the same principal) is not a hit.
        assert!(cache.get(&token(now + 3601)).is_none());
        // A token past its exp is never served from the cache.
        let stale = token(now.saturating_sub(5));
        cache.put(&stale, &p);
        assert!(cache.get(&stale).is_none());
    }

    #[test]
    fn bearer_tokens_are_taken_from_the_header_value() {
        assert_eq!(bearer_token("Bearer abc.def.ghi"), Some("abc.def.ghi"));
        assert_eq!(bearer_token("bearer   abc "), Some("abc"));
        assert_eq!(bearer_token("Basic dXNlcjpwdw=="), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("Bearer"), None);
    }
}
