//! Verified JWT claims → [`Principal`]: dotted paths into nested claims, groups as an
//! array or a separated string, scopes from `scope` or `scp`.
//!
//! Only ever called on claims whose signature, issuer, audience and lifetime have
//! been checked.

use super::{AuthMethod, Principal, TokenRejection};
use crate::config::ClaimMapping;
use serde_json::{Map, Value};

/// The claim at `path`. A top-level claim of exactly that name wins, so namespaced
/// claims such as `https://example.com/roles` work; otherwise the dots step into
/// nested objects (`realm_access.roles`). `null` counts as absent.
pub(super) fn lookup<'a>(claims: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    if let Some(v) = claims.get(path) {
        return (!v.is_null()).then_some(v);
    }
    path.match_indices('.')
        .find_map(|(i, _)| match claims.get(&path[..i]) {
            Some(Value::Object(inner)) => lookup(inner, &path[i + 1..]),
            _ => None,
        })
}

/// The token's scopes, from `scope` (space-separated, RFC 9068) and `scp` (an
/// array or a string, as several issuers send it), in order and without repeats.
pub(super) fn scopes(claims: &Map<String, Value>) -> Result<Vec<String>, TokenRejection> {
    let mut out: Vec<String> = Vec::new();
    for name in ["scope", "scp"] {
        let Some(value) = claims.get(name).filter(|v| !v.is_null()) else {
            continue;
        };
        // A comma is a legal character inside a scope name, so only whitespace splits.
        let words = words(value, |c| c.is_whitespace())
            .ok_or_else(|| TokenRejection::BadClaim(name.into()))?;
        for w in words {
            if !out.contains(&w) {
                out.push(w);
            }
        }
    }
    Ok(out)
}

/// Builds the principal from verified claims as the issuer's mapping says.
pub(super) fn principal(
    claims: &Map<String, Value>,
    mapping: &ClaimMapping,
    scopes: Vec<String>,
) -> Result<Principal, TokenRejection> {
    let user = match lookup(claims, &mapping.user) {
        Some(v) => text(v).ok_or_else(|| TokenRejection::BadClaim(mapping.user.clone()))?,
        None => String::new(),
    };
    if user.is_empty() {
        return Err(TokenRejection::MissingClaim(mapping.user.clone()));
    }
    let mut agent = None;
    for path in &mapping.agent {
        if let Some(v) = lookup(claims, path) {
            let name = text(v).ok_or_else(|| TokenRejection::BadClaim(path.clone()))?;
            if !name.is_empty() {
                agent = Some(name);
                break;
            }
        }
    }
    let tenant = match &mapping.tenant {
        Some(path) => match lookup(claims, path) {
            Some(v) => Some(text(v).ok_or_else(|| TokenRejection::BadClaim(path.clone()))?),
            None => None,
        },
        None => None,
    }
    .filter(|t| !t.is_empty());
    let groups = match lookup(claims, &mapping.groups) {
        Some(v) => words(v, |c| c.is_whitespace() || c == ',')
            .ok_or_else(|| TokenRejection::BadClaim(mapping.groups.clone()))?,
        None => Vec::new(),
    };
    let attrs = mapping
        .attrs
        .iter()
        .filter_map(|(name, path)| Some((name.clone(), lookup(claims, path)?.clone())))
        .collect();
    Ok(Principal {
        user,
        agent,
        tenant,
        groups,
        scopes,
        attrs,
        method: AuthMethod::Jwt,
        recorded: Default::default(),
    })
}

/// A string or number as text.
fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The words of a string split at `sep`, or the strings of an array; `None` for
/// any other shape.
fn words(v: &Value, sep: impl Fn(char) -> bool) -> Option<Vec<String>> {
    match v {
        Value::String(s) => Some(
            s.split(sep)
                .filter(|w| !w.is_empty())
                .map(str::to_owned)
                .collect(),
        ),
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().map(str::to_owned))
            .filter(|w| w.as_ref().is_none_or(|w| !w.is_empty()))
            .collect(),
        _ => None,
    }
}
