//! JWT bearer tokens: toolgate as an OAuth 2.1 resource server.
//!
//! A [`JwtVerifier`] is built once from the `auth.jwt` issuers (refusing unsafe
//! settings) and checks each token in this order:
//!
//! 1. shape: three base64url segments of JSON, at most 16 KiB;
//! 2. issuer: the unverified `iss` only chooses whose rules and keys apply;
//! 3. algorithm: the header's `alg` must be in that issuer's list (which can only
//!    hold asymmetric algorithms: `none` and HMAC never get this far);
//! 4. key: from the issuer's JWKS by `kid`, of a type that fits `alg`;
//! 5. signature, then `iss`, `aud`, `exp`, `nbf` (with the issuer's leeway), `iat`;
//! 6. required scopes (`scope` or `scp`), then the claims become a [`Principal`].
//!
//! Nothing the token says is believed before step 5 except to choose rules and key,
//! and the signature then covers those choices.

use super::jwks::{self, Jwks, RefreshPolicy};
use super::{AuthError, JwksError, Principal, TokenRejection, claims};
use crate::config::{ClaimMapping, JwtIssuerConfig};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Map, Value};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use url::{Host, Url};

/// Clock skew an operator may allow; more would keep expired tokens alive.
const MAX_LEEWAY: Duration = Duration::from_secs(300);
/// Real access tokens are a few KiB; anything larger is refused before parsing.
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// The algorithms an issuer may be configured with, by their JOSE names.
const ASYMMETRIC: [(&str, Algorithm); 9] = [
    ("RS256", Algorithm::RS256),
    ("RS384", Algorithm::RS384),
    ("RS512", Algorithm::RS512),
    ("PS256", Algorithm::PS256),
    ("PS384", Algorithm::PS384),
    ("PS512", Algorithm::PS512),
    ("ES256", Algorithm::ES256),
    ("ES384", Algorithm::ES384),
    ("EdDSA", Algorithm::EdDSA),
];

/// A setting in `auth.jwt` that toolgate refuses, with the key that holds it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct JwtConfigError {
    /// Dotted path of the setting, e.g. `auth.jwt[0].algorithms`.
    pub key: String,
    pub message: String,
}

/// Checks bearer tokens from the configured issuers. Cheap to share behind an `Arc`.
pub struct JwtVerifier {
    issuers: Vec<Issuer>,
    refreshers: Mutex<Vec<tokio::task::AbortHandle>>,
}

/// One trusted issuer, compiled from its config.
struct Issuer {
    issuer: String,
    /// One prepared validation per accepted algorithm.
    validations: Vec<(Algorithm, Validation)>,
    leeway: u64,
    required_scopes: Vec<String>,
    claims: ClaimMapping,
    keys: Arc<Jwks>,
}

impl JwtVerifier {
    /// Compiles the issuers. `default_audience` (the resource URL) is the accepted
    /// `aud` of issuers that list none. No network access happens here: keys are
    /// fetched by [`start_refresh`](Self::start_refresh), [`refresh_now`](Self::refresh_now)
    /// or the first token.
    pub fn new(
        issuers: &[JwtIssuerConfig],
        default_audience: &str,
        http: reqwest::Client,
    ) -> Result<JwtVerifier, JwtConfigError> {
        JwtVerifier::with_policy(issuers, default_audience, http, RefreshPolicy::default())
    }

    fn with_policy(
        issuers: &[JwtIssuerConfig],
        default_audience: &str,
        http: reqwest::Client,
        policy: RefreshPolicy,
    ) -> Result<JwtVerifier, JwtConfigError> {
        let mut compiled: Vec<Issuer> = Vec::with_capacity(issuers.len());
        for (index, config) in issuers.iter().enumerate() {
            let issuer = compile(index, config, default_audience, &http, &policy)?;
            // `iss` picks the issuer: two entries for one `iss` would make the
            // choice of keys and rules depend on order.
            if compiled.iter().any(|i| i.issuer == issuer.issuer) {
                return Err(JwtConfigError {
                    key: format!("auth.jwt[{index}].issuer"),
                    message: format!("issuer `{}` is configured twice", issuer.issuer),
                });
            }
            compiled.push(issuer);
        }
        Ok(JwtVerifier {
            issuers: compiled,
            refreshers: Mutex::new(Vec::new()),
        })
    }

    /// The configured issuers (`iss` values), in config order.
    pub fn issuers(&self) -> impl Iterator<Item = &str> {
        self.issuers.iter().map(|i| i.issuer.as_str())
    }

    /// Starts refreshing every issuer's keys in the background: at once, then as
    /// the issuer's `Cache-Control: max-age` says (kept between 1 minute and 1
    /// hour; 10 minutes without it). Needs a Tokio runtime; a second call does
    /// nothing. The tasks end when the verifier is dropped.
    pub fn start_refresh(&self) {
        let mut tasks = self
            .refreshers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if !tasks.is_empty() {
            return;
        }
        for issuer in &self.issuers {
            let task = tokio::spawn(jwks::keep_fresh(Arc::downgrade(&issuer.keys)));
            tasks.push(task.abort_handle());
        }
    }

    /// Fetches every issuer's keys now (e.g. at startup, to report an unreachable
    /// issuer early). An issuer whose fetch fails keeps its old keys; the first
    /// failure is returned after all fetches are done.
    pub async fn refresh_now(&self) -> Result<(), JwksError> {
        let results =
            futures::future::join_all(self.issuers.iter().map(|i| i.keys.refresh())).await;
        results
            .into_iter()
            .find_map(Result::err)
            .map_or(Ok(()), Err)
    }

    /// Verifies a bearer token (without the `Bearer ` prefix) and maps its claims
    /// to the caller.
    pub async fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        if token.is_empty() {
            return Err(AuthError::MissingToken);
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenRejection::TooLarge.into());
        }
        let unverified = Unverified::parse(token)?;
        let issuer = match unverified.claims.get("iss") {
            Some(Value::String(iss)) => self.issuers.iter().find(|i| i.issuer == *iss),
            Some(_) => return Err(TokenRejection::BadClaim("iss".into()).into()),
            None => return Err(TokenRejection::MissingClaim("iss".into()).into()),
        }
        .ok_or(TokenRejection::UntrustedIssuer)?;
        let (alg, validation) = issuer
            .validation_for(&unverified.header.alg)
            .ok_or(TokenRejection::AlgorithmNotAccepted)?;
        if unverified.header.crit.is_some() {
            return Err(TokenRejection::CriticalHeader.into());
        }
        let key = issuer
            .keys
            .key_for(unverified.header.kid.as_deref(), alg)
            .await?;
        jsonwebtoken::decode::<IgnoredAny>(token, &key.key, validation)
            .map_err(|e| rejection(e, &unverified.claims))?;

        // The signature holds: the claims are the issuer's.
        let claims = unverified.claims;
        check_issued_at(&claims, issuer.leeway)?;
        let scopes = claims::scopes(&claims)?;
        if issuer.required_scopes.iter().any(|s| !scopes.contains(s)) {
            return Err(AuthError::InsufficientScope {
                required: issuer.required_scopes.clone(),
            });
        }
        Ok(claims::principal(&claims, &issuer.claims, scopes)?)
    }
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("issuers", &self.issuers().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Drop for JwtVerifier {
    fn drop(&mut self) {
        let tasks = self
            .refreshers
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        for task in tasks.drain(..) {
            task.abort();
        }
    }
}

impl Issuer {
    /// The prepared validation for a header `alg`, if this issuer accepts it.
    fn validation_for(&self, alg: &str) -> Option<(Algorithm, &Validation)> {
        let (_, alg) = ASYMMETRIC.iter().find(|(name, _)| *name == alg)?;
        self.validations
            .iter()
            .find(|(a, _)| a == alg)
            .map(|(a, v)| (*a, v))
    }
}

fn compile(
    index: usize,
    config: &JwtIssuerConfig,
    default_audience: &str,
    http: &reqwest::Client,
    policy: &RefreshPolicy,
) -> Result<Issuer, JwtConfigError> {
    let err = |field: &str, message: String| JwtConfigError {
        key: format!("auth.jwt[{index}].{field}"),
        message,
    };
    if config.issuer.trim().is_empty() {
        return Err(err("issuer", "must not be empty".into()));
    }
    let jwks_url = check_jwks_url(&config.jwks_url).map_err(|m| err("jwks_url", m))?;
    if config.algorithms.is_empty() {
        return Err(err(
            "algorithms",
            "lists no algorithm: name the ones the issuer signs with (e.g. RS256, ES256)".into(),
        ));
    }
    let mut algorithms = Vec::new();
    for name in &config.algorithms {
        let alg = parse_algorithm(name).map_err(|m| err("algorithms", m))?;
        if !algorithms.contains(&alg) {
            algorithms.push(alg);
        }
    }
    if config.leeway.0 > MAX_LEEWAY {
        return Err(err(
            "leeway",
            "at most 5m: a longer leeway keeps expired tokens alive".into(),
        ));
    }
    let leeway = config.leeway.0.as_secs();
    let audiences: Vec<String> = if config.audiences.is_empty() {
        vec![default_audience.to_owned()]
    } else {
        config.audiences.clone()
    };
    if audiences.iter().any(|a| a.trim().is_empty()) {
        return Err(err(
            "audiences",
            "an empty audience: set `auth.resource` or this issuer's `audiences`".into(),
        ));
    }
    if let Some(bad) = config
        .required_scopes
        .iter()
        .find(|s| s.is_empty() || s.contains(char::is_whitespace))
    {
        return Err(err(
            "required_scopes",
            format!("`{bad}` is not a scope: one word per entry"),
        ));
    }
    if config.claims.user.is_empty() {
        return Err(err("claims.user", "must name a claim (e.g. `sub`)".into()));
    }
    let validations = algorithms
        .iter()
        .map(|&alg| {
            let mut v = Validation::new(alg);
            v.leeway = leeway;
            v.validate_exp = true;
            v.validate_nbf = true;
            v.validate_aud = true;
            v.set_audience(&audiences);
            v.set_issuer(&[&config.issuer]);
            // An access token without an audience could be meant for anyone
            // (MCP authorization, RFC 8707): `aud` is required, as are `exp` and `iss`.
            v.set_required_spec_claims(&["exp", "iss", "aud"]);
            (alg, v)
        })
        .collect();
    Ok(Issuer {
        issuer: config.issuer.clone(),
        validations,
        leeway,
        required_scopes: config.required_scopes.clone(),
        claims: config.claims.clone(),
        keys: Arc::new(Jwks::new(jwks_url, http.clone(), policy.clone())),
    })
}

fn parse_algorithm(name: &str) -> Result<Algorithm, String> {
    if let Some((_, alg)) = ASYMMETRIC.iter().find(|(n, _)| *n == name) {
        return Ok(*alg);
    }
    if name.eq_ignore_ascii_case("none") {
        return Err("`none` means unsigned tokens, which are never accepted".into());
    }
    if name.len() > 2 && name[..2].eq_ignore_ascii_case("HS") {
        return Err(format!(
            "`{name}` is HMAC: it needs a secret shared with the issuer, and whoever holds \
             it can mint tokens; use the issuer's public-key algorithm (RS256, PS256, ES256, EdDSA)"
        ));
    }
    let known: Vec<&str> = ASYMMETRIC.iter().map(|(n, _)| *n).collect();
    Err(format!(
        "unknown or unsupported algorithm `{name}`; use one of {}",
        known.join(", ")
    ))
}

/// The JWKS must come over HTTPS: keys fetched over plain HTTP could be swapped by
/// anyone on the path, and with them every token. Plain HTTP is allowed only to a
/// loopback address (a local issuer, tests).
fn check_jwks_url(text: &str) -> Result<String, String> {
    let url = Url::parse(text).map_err(|e| format!("not a URL ({e})"))?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err(format!(
            "`{}:` URLs are not fetched; use https://",
            url.scheme()
        ));
    }
    let loopback = match url.host() {
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        Some(Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => return Err("the URL has no host".into()),
    };
    if url.scheme() == "http" && !loopback {
        return Err(
            "must be https:// (plain http only to a loopback address): keys fetched over \
             plain HTTP could be replaced by anyone on the path"
                .into(),
        );
    }
    Ok(url.into())
}

/// A token split and decoded, nothing checked yet.
struct Unverified {
    header: Header,
    claims: Map<String, Value>,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    crit: Option<Value>,
}

impl Unverified {
    fn parse(token: &str) -> Result<Unverified, TokenRejection> {
        let mut segments = token.split('.');
        let (Some(header), Some(payload), Some(_signature), None) = (
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
        ) else {
            return Err(TokenRejection::Malformed);
        };
        Ok(Unverified {
            header: decode_segment(header)?,
            claims: decode_segment(payload)?,
        })
    }
}

fn decode_segment<T: serde::de::DeserializeOwned>(segment: &str) -> Result<T, TokenRejection> {
    let bytes = URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| TokenRejection::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| TokenRejection::Malformed)
}

/// `iat` is optional, but a token issued in the future (beyond the leeway) was
/// minted by a clock that cannot be trusted, or minted to outlive its lifetime.
fn check_issued_at(claims: &Map<String, Value>, leeway: u64) -> Result<(), TokenRejection> {
    let Some(iat) = claims.get("iat").filter(|v| !v.is_null()) else {
        return Ok(());
    };
    let iat = iat
        .as_f64()
        .ok_or_else(|| TokenRejection::BadClaim("iat".into()))?;
    let now = jsonwebtoken::get_current_timestamp();
    if iat > now.saturating_add(leeway) as f64 {
        return Err(TokenRejection::IssuedInFuture);
    }
    Ok(())
}

fn rejection(e: jsonwebtoken::errors::Error, claims: &Map<String, Value>) -> TokenRejection {
    match e.kind() {
        // jsonwebtoken reports an `exp` of the wrong type as missing.
        ErrorKind::MissingRequiredClaim(c) if claims.get(c).is_some_and(|v| !v.is_null()) => {
            TokenRejection::BadClaim(c.clone())
        }
        ErrorKind::InvalidSignature => TokenRejection::BadSignature,
        ErrorKind::ExpiredSignature => TokenRejection::Expired,
        ErrorKind::ImmatureSignature => TokenRejection::NotYetValid,
        ErrorKind::InvalidAudience => TokenRejection::WrongAudience,
        ErrorKind::InvalidIssuer => TokenRejection::UntrustedIssuer,
        // The names come from our own list of required claims, not from the token.
        ErrorKind::MissingRequiredClaim(c) => TokenRejection::MissingClaim(c.clone()),
        ErrorKind::InvalidClaimFormat(c) => TokenRejection::BadClaim(c.clone()),
        ErrorKind::InvalidAlgorithm => TokenRejection::AlgorithmNotAccepted,
        ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidKeyFormat => TokenRejection::KeyMismatch,
        _ => TokenRejection::Malformed,
    }
}

#[cfg(test)]
mod tests;
