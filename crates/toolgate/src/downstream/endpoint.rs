//! The endpoints of the HTTP front door: `/mcp` and each of `endpoints:`, and
//! the access rules an endpoint applies to an authenticated caller before any
//! handler runs. What an endpoint exposes of the catalog is decided in the core
//! (`gateway::endpoints`); this file decides only who may come in.

use super::http::auth_error;
use crate::auth::{AuthError, AuthMethod, Authenticator, Principal};
use crate::config::{EndpointConfig, EndpointMethod};
use crate::gateway::Gateway;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// The Streamable HTTP endpoint a request came to: `/mcp` (everything, no rules
/// of its own) or one of `endpoints:`. Its path is what sessions record and
/// policies see as `context.endpoint`.
pub(super) struct Endpoint {
    pub path: Arc<str>,
    pub rules: Option<EndpointConfig>,
    /// Where its protected-resource metadata lives, for challenges.
    pub metadata_url: Option<String>,
}

impl Endpoint {
    /// `/mcp`: everything, no rules of its own.
    pub fn default_mcp() -> Endpoint {
        Endpoint {
            path: "/mcp".into(),
            rules: None,
            metadata_url: None,
        }
    }

    /// An endpoint of `endpoints:`; `resource` is the gateway's resource URL.
    pub fn configured(rules: &EndpointConfig, resource: &str) -> Endpoint {
        Endpoint {
            path: rules.path.as_str().into(),
            metadata_url: endpoint_resource(resource, &rules.path)
                .and_then(|r| crate::auth::metadata::resource_metadata_url(&r)),
            rules: Some(rules.clone()),
        }
    }
}

/// The endpoint's own access rules, between authentication and everything else:
/// a caller who does not meet them never reaches a session, the catalog or an
/// upstream.
/// Refused, the response says why; `source` is the caller's address, for the
/// audit trail.
pub(super) fn admit(
    auth: &Authenticator,
    ep: &Endpoint,
    principal: &Principal,
    gw: &Gateway,
    source: Option<std::net::IpAddr>,
) -> Result<(), Box<Response>> {
    let Some(rules) = &ep.rules else {
        return Ok(());
    };
    let Err(refusal) = check_rules(rules, principal) else {
        return Ok(());
    };
    tracing::info!(
        principal = %principal.key(),
        endpoint = %ep.path,
        reason = %refusal,
        "refused by the endpoint's access rules"
    );
    gw.audit_refusal(crate::gateway::audit::Refusal {
        principal: Some(principal),
        source,
        path: &ep.path,
        status: 403,
        code: match refusal {
            Refusal::Scope(_) => "insufficient_scope",
            _ => "access_denied",
        },
        reason: &refusal.to_string(),
    });
    Err(Box::new(match refusal {
        Refusal::Scope(e) => {
            let url = ep.metadata_url.as_deref().unwrap_or(&auth.metadata_url);
            let mut resp = auth_error(auth, &e);
            if let Ok(v) = HeaderValue::from_str(&auth.challenge_at(&e, url)) {
                resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
            resp
        }
        denied => {
            let body = serde_json::json!({
                "error": "access_denied",
                "error_description": denied.to_string(),
            });
            (
                StatusCode::FORBIDDEN,
                [(header::CONTENT_TYPE, "application/json")],
                body.to_string(),
            )
                .into_response()
        }
    }))
}

/// Why an endpoint refuses an authenticated caller.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("this endpoint serves another tenant")]
    Tenant,
    #[error("this endpoint needs membership in one of its groups")]
    Groups,
    #[error("this endpoint does not accept this authentication method")]
    Method,
    #[error("{0}")]
    Scope(AuthError),
}

fn check_rules(rules: &EndpointConfig, p: &Principal) -> Result<(), Refusal> {
    if let Some(tenant) = &rules.tenant
        && p.tenant.as_ref() != Some(tenant)
    {
        return Err(Refusal::Tenant);
    }
    if let Some(groups) = &rules.groups
        && !groups.iter().any(|g| p.groups.contains(g))
    {
        return Err(Refusal::Groups);
    }
    if let Some(methods) = &rules.methods {
        let method = match p.method {
            AuthMethod::Anonymous => EndpointMethod::Anonymous,
            AuthMethod::ApiKey => EndpointMethod::ApiKey,
            AuthMethod::Jwt => EndpointMethod::Jwt,
            AuthMethod::Mtls => EndpointMethod::Mtls,
        };
        if !methods.contains(&method) {
            return Err(Refusal::Method);
        }
    }
    let missing: Vec<String> = rules
        .scopes
        .iter()
        .filter(|s| !p.scopes.contains(s))
        .cloned()
        .collect();
    if !missing.is_empty() {
        return Err(Refusal::Scope(AuthError::InsufficientScope {
            required: rules.scopes.clone(),
        }));
    }
    Ok(())
}

/// The resource URL of the endpoint at `path`: the origin of the gateway's
/// resource URL with that path.
pub(super) fn endpoint_resource(resource: &str, path: &str) -> Option<String> {
    let mut url = url::Url::parse(resource).ok()?;
    url.set_path(path);
    url.set_query(None);
    url.set_fragment(None);
    Some(url.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(yaml: &str) -> EndpointConfig {
        let text = format!("servers: {{}}\nendpoints:\n  e:\n    path: /mcp/e\n{yaml}");
        let config = crate::config::load_str(&text, "t.yaml", false).unwrap();
        config.endpoints["e"].clone()
    }

    fn caller(tenant: Option<&str>, groups: &[&str], scopes: &[&str]) -> Principal {
        let mut p = Principal::anonymous("ann");
        p.method = AuthMethod::ApiKey;
        p.tenant = tenant.map(str::to_owned);
        p.groups = groups.iter().map(|g| g.to_string()).collect();
        p.scopes = scopes.iter().map(|s| s.to_string()).collect();
        p
    }

    #[test]
    fn every_rule_that_is_set_must_hold() {
        let open = rules("");
        assert!(check_rules(&open, &caller(None, &[], &[])).is_ok());

        let acme = rules("    tenant: acme\n");
        assert!(check_rules(&acme, &caller(Some("acme"), &[], &[])).is_ok());
        assert!(matches!(
            check_rules(&acme, &caller(Some("other"), &[], &[])),
            Err(Refusal::Tenant)
        ));
        assert!(check_rules(&acme, &caller(None, &[], &[])).is_err());

        let groups = rules("    groups: [finance, audit]\n");
        assert!(check_rules(&groups, &caller(None, &["audit"], &[])).is_ok());
        assert!(matches!(
            check_rules(&groups, &caller(None, &["ops"], &[])),
            Err(Refusal::Groups)
        ));

        let methods = rules("    methods: [jwt, mtls]\n");
        assert!(matches!(
            check_rules(&methods, &caller(None, &[], &[])),
            Err(Refusal::Method)
        ));

        let scopes = rules("    scopes: [mcp, mcp:finance]\n");
        assert!(check_rules(&scopes, &caller(None, &[], &["mcp:finance", "mcp"])).is_ok());
        let Err(Refusal::Scope(e)) = check_rules(&scopes, &caller(None, &[], &["mcp"])) else {
            panic!("a missing scope is insufficient_scope");
        };
        assert_eq!(e.code(), "insufficient_scope");
        assert_eq!(e.status(), StatusCode::FORBIDDEN);
        let challenge =
            e.www_authenticate("https://gw/.well-known/oauth-protected-resource/mcp/e", "");
        assert!(challenge.contains("mcp:finance"), "{challenge}");
    }

    #[test]
    fn an_endpoint_is_a_resource_of_its_own() {
        let ep = Endpoint::configured(&rules(""), "https://gw.example.com:8443/mcp");
        assert_eq!(
            ep.metadata_url.as_deref(),
            Some("https://gw.example.com:8443/.well-known/oauth-protected-resource/mcp/e")
        );
        assert_eq!(
            endpoint_resource("https://gw.example.com/mcp", "/mcp/e").as_deref(),
            Some("https://gw.example.com/mcp/e")
        );
    }
}
