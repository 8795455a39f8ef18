//! Who is calling: every request is authenticated into a [`Principal`] before the
//! gateway does anything with it.
//!
//! A principal comes from an API key, a JWT bearer token (toolgate is an OAuth 2.1
//! resource server), a client certificate, or — only when the operator configured
//! it — the anonymous local user. The caller's credential stays here: nothing of it
//! is forwarded to an upstream server.

use serde::Serialize;
use serde_json::{Map, Value};

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
