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
//! `metadata.rs` builds the RFC 9728 document that tells clients where to get tokens.
//! This file owns what they share: [`Principal`], [`AuthError`] and the
//! `WWW-Authenticate` challenge.

mod claims;
mod jwks;
pub mod jwt;
pub mod metadata;

pub use jwks::JwksError;

use http::StatusCode;
use serde::Serialize;
use serde_json::{Map, Value};
use std::fmt;

/// How a principal proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    Anonymous,
    ApiKey,
    Jwt,
    Mtls,
}

/// An authenticated caller, as policies and audit see it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Principal {
    /// The user (or service) the credential names: a JWT's subject, an API key's
    /// principal, a certificate's subject.
    pub user: String,
    /// The agent or client application acting for the user (a JWT's `azp` /
    /// `client_id`), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// The tenant the caller belongs to; `None` for single-tenant setups.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Groups or roles.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// OAuth scopes the credential carries.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// Further attributes mapped from claims, for policies.
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub attrs: Map<String, Value>,
    pub method: AuthMethod,
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
        }
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
    /// `insufficient_scope` (RFC 6750) or `temporarily_unavailable`.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::MissingToken => "missing_token",
            AuthError::InvalidToken(_) => "invalid_token",
            AuthError::InsufficientScope { .. } => "insufficient_scope",
            AuthError::KeysUnavailable => "temporarily_unavailable",
        }
    }

    /// The HTTP status to answer with: 401 so the client (re)authenticates, 403
    /// when more scopes would help, 503 when the fault is the issuer's, not the
    /// token's.
    pub fn status(&self) -> StatusCode {
        match self {
            AuthError::MissingToken | AuthError::InvalidToken(_) => StatusCode::UNAUTHORIZED,
            AuthError::InsufficientScope { .. } => StatusCode::FORBIDDEN,
            AuthError::KeysUnavailable => StatusCode::SERVICE_UNAVAILABLE,
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn bearer_tokens_are_taken_from_the_header_value() {
        assert_eq!(bearer_token("Bearer abc.def.ghi"), Some("abc.def.ghi"));
        assert_eq!(bearer_token("bearer   abc "), Some("abc"));
        assert_eq!(bearer_token("Basic dXNlcjpwdw=="), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("Bearer"), None);
    }
}
