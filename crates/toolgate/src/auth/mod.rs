//! Who is calling: every request is authenticated into a [`Principal`] before the
//! gateway does anything with it.
//!
//! A principal comes from an API key, a JWT bearer token (toolgate is an OAuth 2.1
//! resource server), a client certificate, or — only when the operator configured
//! it — the anonymous local user. The caller's credential stays here: nothing of it
//! is forwarded to an upstream server.

pub mod apikey;

use crate::config::{AuthConfig, Config};
use crate::store::Store;
use apikey::ApiKeys;
use axum::http::{HeaderMap, StatusCode};
use serde::Serialize;
use serde_json::{Map, Value, json};
use std::net::SocketAddr;
use std::sync::Arc;

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

/// Why a request was not authenticated: a stable code, a message safe to show the
/// caller (never the credential itself), and the HTTP status it maps to.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthError {
    pub status: StatusCode,
    /// RFC 6750 error code: `invalid_request`, `invalid_token`,
    /// `insufficient_scope`; or `unavailable` when a store or issuer cannot be
    /// reached.
    pub code: &'static str,
    pub message: String,
    /// Scopes that would have been enough (`insufficient_scope`).
    pub scope: Option<String>,
}

impl AuthError {
    /// No credential at all: a bare challenge, no error code (RFC 6750 §3.1).
    pub fn missing() -> AuthError {
        AuthError {
            status: StatusCode::UNAUTHORIZED,
            code: "",
            message: "authentication required".into(),
            scope: None,
        }
    }
    pub fn invalid_token(message: impl Into<String>) -> AuthError {
        AuthError {
            status: StatusCode::UNAUTHORIZED,
            code: "invalid_token",
            message: message.into(),
            scope: None,
        }
    }
    pub fn invalid_request(message: impl Into<String>) -> AuthError {
        AuthError {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request",
            message: message.into(),
            scope: None,
        }
    }
    pub fn insufficient_scope(required: &[String]) -> AuthError {
        AuthError {
            status: StatusCode::FORBIDDEN,
            code: "insufficient_scope",
            message: format!("this endpoint needs the scope(s): {}", required.join(" ")),
            scope: Some(required.join(" ")),
        }
    }
    pub fn unavailable() -> AuthError {
        AuthError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "unavailable",
            message: "credentials cannot be checked right now; try again".into(),
            scope: None,
        }
    }
}

/// Query parameters that carry credentials in the wild; toolgate refuses them,
/// since URLs end up in logs, histories and `Referer` headers.
const QUERY_CREDENTIALS: [&str; 5] = ["access_token", "token", "api_key", "apikey", "key"];

/// Turns a request's credentials into a principal.
pub struct Authenticator {
    anonymous: Option<Arc<Principal>>,
    api_keys: Option<(ApiKeys, String)>,
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
        let resource = auth
            .resource
            .clone()
            .unwrap_or_else(|| format!("http://{listen}/mcp"));
        let url = url::Url::parse(&resource)
            .map_err(|e| anyhow::anyhow!("auth.resource `{resource}` is not a URL: {e}"))?;
        let path = url.path().trim_end_matches('/');
        let metadata_url = format!(
            "{}/.well-known/oauth-protected-resource{path}",
            url.origin().ascii_serialization()
        );
        let api_keys = match &auth.api_keys {
            Some(k) => {
                let base = config.source.as_deref().and_then(std::path::Path::parent);
                let store = Store::open(&config.storage, base).await?;
                Some((ApiKeys::new(store), k.header.to_ascii_lowercase()))
            }
            None => None,
        };
        let anonymous = auth.anonymous.as_ref().map(|a| {
            let mut p = Principal::anonymous(&a.user);
            p.groups = a.groups.clone();
            Arc::new(p)
        });
        let scopes = auth.scopes_supported.join(" ");
        let mut metadata = json!({
            "resource": resource,
            "authorization_servers": auth.authorization_servers,
            "bearer_methods_supported": ["header"],
            "resource_name": "toolgate",
        });
        if !auth.scopes_supported.is_empty() {
            metadata["scopes_supported"] = json!(auth.scopes_supported);
        }
        Ok(Authenticator {
            anonymous,
            api_keys,
            resource,
            metadata_url,
            scopes,
            metadata,
        })
    }

    /// Whether callers without credentials are served.
    pub fn allows_anonymous(&self) -> bool {
        self.anonymous.is_some()
    }

    /// The RFC 9728 protected-resource metadata document.
    pub fn metadata(&self) -> &Value {
        &self.metadata
    }

    /// Who is calling. Credentials in the query string are refused outright.
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
    ) -> Result<Arc<Principal>, AuthError> {
        if let Some(q) = query
            && url::form_urlencoded::parse(q.as_bytes())
                .any(|(k, _)| QUERY_CREDENTIALS.contains(&k.to_ascii_lowercase().as_str()))
        {
            return Err(AuthError::invalid_request(
                "credentials in the URL query are refused; send them in the Authorization header",
            ));
        }
        let bearer = match headers.get(http::header::AUTHORIZATION) {
            Some(v) => {
                let v = v
                    .to_str()
                    .map_err(|_| AuthError::invalid_request("malformed Authorization header"))?;
                match v.split_once(' ') {
                    Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
                        Some(token.trim())
                    }
                    _ => {
                        return Err(AuthError::invalid_request(
                            "the Authorization header must use the Bearer scheme",
                        ));
                    }
                }
            }
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
        if bearer.is_some() {
            return Err(AuthError::invalid_token(
                "the bearer token is not valid here",
            ));
        }
        self.anonymous.clone().ok_or_else(AuthError::missing)
    }

    /// The `WWW-Authenticate` challenge for a failed authentication (RFC 6750,
    /// with the RFC 9728 `resource_metadata` pointer).
    pub fn challenge(&self, e: &AuthError) -> String {
        let mut c = format!("Bearer resource_metadata=\"{}\"", self.metadata_url);
        let scope = e.scope.as_deref().unwrap_or(&self.scopes);
        if !scope.is_empty() {
            c.push_str(&format!(", scope=\"{scope}\""));
        }
        if !e.code.is_empty() && e.code != "unavailable" {
            c.push_str(&format!(", error=\"{}\"", e.code));
            let description = e.message.replace(['"', '\\'], "'");
            c.push_str(&format!(", error_description=\"{description}\""));
        }
        c
    }
}
