//! The OAuth 2.0 protected-resource metadata of the MCP endpoint (RFC 9728): how a
//! client learns which authorization servers issue tokens for toolgate and which
//! scopes to ask for. The HTTP layer serves [`protected_resource_metadata`] at the
//! path of [`resource_metadata_url`] and names that URL in every
//! `WWW-Authenticate` challenge.

use crate::config::AuthConfig;
use serde_json::{Value, json};
use std::net::SocketAddr;
use url::Url;

/// The URL clients use for the MCP endpoint: `auth.resource`, or
/// `http://{listen}/mcp` (`https://` when the listener speaks TLS). It is the
/// audience tokens must name.
pub fn resource_url(auth: &AuthConfig, listen: SocketAddr, tls: bool) -> String {
    let scheme = if tls { "https" } else { "http" };
    auth.resource
        .clone()
        .unwrap_or_else(|| format!("{scheme}://{listen}/mcp"))
}

/// Where the metadata of `resource` lives (RFC 9728 §3.1): the well-known path is
/// inserted between the host and the resource's path, e.g.
/// `https://gw.example.com/mcp` → `https://gw.example.com/.well-known/oauth-protected-resource/mcp`.
/// `None` if `resource` is not an http(s) URL.
pub fn resource_metadata_url(resource: &str) -> Option<String> {
    let mut url = Url::parse(resource).ok()?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return None;
    }
    let path = url.path().trim_end_matches('/').to_owned();
    url.set_path(&format!("/.well-known/oauth-protected-resource{path}"));
    url.set_fragment(None);
    Some(url.into())
}

/// The scopes clients are told about, in the metadata and in challenges:
/// `auth.scopes_supported`, or else the scopes the issuers require.
pub fn advertised_scopes(auth: &AuthConfig) -> Vec<String> {
    if !auth.scopes_supported.is_empty() {
        return auth.scopes_supported.clone();
    }
    let mut scopes: Vec<String> = Vec::new();
    for s in auth.jwt.iter().flat_map(|i| &i.required_scopes) {
        if !scopes.contains(s) {
            scopes.push(s.clone());
        }
    }
    scopes
}

/// The RFC 9728 document for `resource` (see [`resource_url`]).
/// `authorization_servers` defaults to the configured JWT issuers; tokens are
/// accepted only in the `Authorization` header.
pub fn protected_resource_metadata(auth: &AuthConfig, resource: &str) -> Value {
    let mut servers: Vec<&str> = Vec::new();
    let configured = if auth.authorization_servers.is_empty() {
        auth.jwt
            .iter()
            .map(|i| i.issuer.as_str())
            .collect::<Vec<_>>()
    } else {
        auth.authorization_servers
            .iter()
            .map(String::as_str)
            .collect()
    };
    for s in configured {
        if !servers.contains(&s) {
            servers.push(s);
        }
    }
    let mut doc = json!({ "resource": resource });
    if !servers.is_empty() {
        doc["authorization_servers"] = json!(servers);
    }
    let scopes = advertised_scopes(auth);
    if !scopes.is_empty() {
        doc["scopes_supported"] = json!(scopes);
    }
    doc["bearer_methods_supported"] = json!(["header"]);
    doc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::JwtIssuerConfig;

    fn issuer(iss: &str, required: &[&str]) -> JwtIssuerConfig {
        serde_json::from_value(json!({
            "issuer": iss,
            "jwks_url": format!("{iss}/jwks"),
            "required_scopes": required,
        }))
        .unwrap()
    }

    #[test]
    fn metadata_url_inserts_the_well_known_path() {
        assert_eq!(
            resource_metadata_url("https://gw.example.com/mcp").as_deref(),
            Some("https://gw.example.com/.well-known/oauth-protected-resource/mcp")
        );
        assert_eq!(
            resource_metadata_url("https://gw.example.com/").as_deref(),
            Some("https://gw.example.com/.well-known/oauth-protected-resource")
        );
        assert_eq!(
            resource_metadata_url("http://127.0.0.1:8080/a/mcp/").as_deref(),
            Some("http://127.0.0.1:8080/.well-known/oauth-protected-resource/a/mcp")
        );
        assert_eq!(resource_metadata_url("not a url"), None);
        assert_eq!(resource_metadata_url("file:///mcp"), None);
    }

    #[test]
    fn resource_defaults_to_the_listen_address() {
        let auth = AuthConfig::default();
        assert_eq!(
            resource_url(&auth, "127.0.0.1:9000".parse().unwrap(), false),
            "http://127.0.0.1:9000/mcp"
        );
        assert_eq!(
            resource_url(&auth, "127.0.0.1:9000".parse().unwrap(), true),
            "https://127.0.0.1:9000/mcp"
        );
        let auth = AuthConfig {
            resource: Some("https://gw.example.com/mcp".into()),
            ..AuthConfig::default()
        };
        assert_eq!(
            resource_url(&auth, "127.0.0.1:9000".parse().unwrap(), false),
            "https://gw.example.com/mcp"
        );
    }

    #[test]
    fn document_defaults_to_the_issuers_and_their_scopes() {
        let auth = AuthConfig {
            jwt: vec![
                issuer("https://a.example.com", &["mcp", "tools"]),
                issuer("https://b.example.com", &["mcp"]),
            ],
            ..AuthConfig::default()
        };
        assert_eq!(
            protected_resource_metadata(&auth, "https://gw.example.com/mcp"),
            json!({
                "resource": "https://gw.example.com/mcp",
                "authorization_servers": ["https://a.example.com", "https://b.example.com"],
                "scopes_supported": ["mcp", "tools"],
                "bearer_methods_supported": ["header"],
            })
        );
    }

    #[test]
    fn document_uses_the_configured_servers_and_scopes() {
        let auth = AuthConfig {
            authorization_servers: vec!["https://login.example.com".into()],
            scopes_supported: vec!["files:read".into()],
            jwt: vec![issuer("https://a.example.com", &["mcp"])],
            ..AuthConfig::default()
        };
        let doc = protected_resource_metadata(&auth, "https://gw.example.com/mcp");
        assert_eq!(
            doc["authorization_servers"],
            json!(["https://login.example.com"])
        );
        assert_eq!(doc["scopes_supported"], json!(["files:read"]));
        assert_eq!(advertised_scopes(&auth), ["files:read"]);
    }
}
