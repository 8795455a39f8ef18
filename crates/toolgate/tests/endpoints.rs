//! Several MCP endpoints on one gateway, through the real binary: each endpoint
//! path is a virtual server exposing a subset of the servers and tools, in both
//! eras; its access rules refuse callers before anything reaches a session or
//! an upstream; a session belongs to the endpoint that opened it; and a bad
//! `endpoints:` entry is a config error naming the key.

mod support;

use serde_json::{Value, json};
use std::time::Duration;
use support::{
    Client, ConfigFile, Gateway, Options, first_text, names, run_toolgate, stdio_server, within,
};

const TEST_TIMEOUT: Duration = Duration::from_secs(90);
const MODERN: &str = "2026-07-28";

async fn tool_names(c: &Client) -> Vec<String> {
    let mut v = names(&c.list_all("tools/list", "tools").await);
    v.sort();
    v
}

/// One raw POST to `url` with the headers a Streamable HTTP client sends.
async fn post(
    url: &str,
    bearer: Option<&str>,
    session: Option<&str>,
    extra: &[(&str, &str)],
    body: &Value,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut req = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(body.to_string());
    if let Some(k) = bearer {
        req = req.bearer_auth(k);
    }
    if let Some(s) = session {
        req = req.header("mcp-session-id", s);
    }
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let resp = within(Duration::from_secs(20), "a response", req.send())
        .await
        .expect("the gateway answers");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap_or_default();
    (
        status,
        headers,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// A 2026-07-28 request: `_meta` in the body, the mirrored headers beside it.
async fn modern(url: &str, id: i64, method: &str, mut params: Value) -> Value {
    params["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": { "name": "endpoints-test", "version": "1" },
    });
    let mut headers = vec![("mcp-protocol-version", MODERN), ("mcp-method", method)];
    let name = params["name"].as_str().map(str::to_owned);
    if let Some(n) = &name {
        headers.push(("mcp-name", n));
    }
    let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
    let (status, _, reply) = post(url, None, None, &headers, &body).await;
    assert!(status == 200 || status == 400, "{status}: {reply}");
    reply
}

fn initialize() -> Value {
    serde_json::from_str(&support::initialize_body()).expect("JSON")
}

#[tokio::test]
async fn an_endpoint_exposes_only_its_servers_and_tools() {
    within(TEST_TIMEOUT, "the endpoint filters", async {
        // No auth and no policy: the endpoint's filter holds all the same.
        let gw = Gateway::serve(json!({
            "servers": { "a": stdio_server(&[]), "b": stdio_server(&[]) },
            "endpoints": {
                "a-only": { "path": "/mcp/a-only", "servers": ["a"] },
                "picked": { "path": "/mcp/picked", "tools": ["b__echo"] },
            },
        }))
        .await;
        let all = Client::http(&gw.base, Options::default()).await;
        let everything = tool_names(&all).await;
        assert!(everything.iter().any(|n| n == "a__echo"), "{everything:?}");
        assert!(everything.iter().any(|n| n == "b__echo"), "{everything:?}");

        let a_only_url = format!("{}/mcp/a-only", gw.base);
        let a_only = Client::http_at(&a_only_url, Options::default()).await;
        let seen = tool_names(&a_only).await;
        assert!(!seen.is_empty());
        assert!(seen.iter().all(|n| n.starts_with("a__")), "{seen:?}");
        assert_eq!(
            seen.len(),
            everything.iter().filter(|n| n.starts_with("a__")).count()
        );
        let prompts = names(&a_only.list_all("prompts/list", "prompts").await);
        assert!(prompts.iter().all(|n| n.starts_with("a__")), "{prompts:?}");

        // Outside the endpoint is the same as not existing.
        let hidden = a_only
            .error(
                "tools/call",
                json!({"name": "b__echo", "arguments": {"text": "x"}}),
            )
            .await;
        let missing = a_only
            .error("tools/call", json!({"name": "a__nope", "arguments": {}}))
            .await;
        assert_eq!(hidden["message"], "Unknown tool: b__echo");
        assert_eq!(hidden["code"], missing["code"]);
        assert_eq!(
            first_text(&a_only.call_tool("a__echo", json!({"text": "hi"})).await),
            "hi"
        );
        assert_eq!(
            first_text(&all.call_tool("b__echo", json!({"text": "ho"})).await),
            "ho"
        );

        // Resources of a server outside the endpoint are not found there.
        let uris = |items: Vec<Value>| -> Vec<String> {
            items
                .iter()
                .filter_map(|r| r["uri"].as_str().map(str::to_owned))
                .collect()
        };
        let every_uri = uris(all.list_all("resources/list", "resources").await);
        let a_uris = uris(a_only.list_all("resources/list", "resources").await);
        assert!(a_uris.len() < every_uri.len(), "{a_uris:?} / {every_uri:?}");
        let b_uri = every_uri
            .iter()
            .find(|u| !a_uris.contains(u))
            .expect("a resource of b");
        all.result("resources/read", json!({"uri": b_uri})).await;
        let e = a_only.error("resources/read", json!({"uri": b_uri})).await;
        assert!(
            e["message"].as_str().unwrap_or("").contains("not found"),
            "{e}"
        );

        // A tool allow-list.
        let picked = Client::http_at(&format!("{}/mcp/picked", gw.base), Options::default()).await;
        assert_eq!(tool_names(&picked).await, ["b__echo"]);
        let e = picked
            .error(
                "tools/call",
                json!({"name": "a__echo", "arguments": {"text": "x"}}),
            )
            .await;
        assert_eq!(e["message"], "Unknown tool: a__echo");

        // A session belongs to the endpoint that opened it.
        let sid = all.session_id().expect("a session id");
        let ping = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/list"});
        let (status, _, _) = post(&a_only_url, None, Some(&sid), &[], &ping).await;
        assert_eq!(status, 404, "a /mcp session is unknown on /mcp/a-only");
        let (status, _, _) = post(&gw.mcp_url(), None, Some(&sid), &[], &ping).await;
        assert_eq!(status, 200, "and still known where it was opened");
        let other = a_only.session_id().expect("a session id");
        let (status, _, _) = post(&gw.mcp_url(), None, Some(&other), &[], &ping).await;
        assert_eq!(status, 404, "and the other way round");

        // The 2026-07-28 era sees the same filter.
        let listed = modern(&a_only_url, 1, "tools/list", json!({})).await;
        let modern_names = names(listed["result"]["tools"].as_array().expect("tools"));
        assert!(!modern_names.is_empty());
        assert!(
            modern_names.iter().all(|n| n.starts_with("a__")),
            "{modern_names:?}"
        );
        let called = modern(
            &a_only_url,
            2,
            "tools/call",
            json!({"name": "b__echo", "arguments": {"text": "x"}}),
        )
        .await;
        assert_eq!(
            called["error"]["message"], "Unknown tool: b__echo",
            "{called}"
        );
        let whole = modern(&gw.mcp_url(), 3, "tools/list", json!({})).await;
        let whole = names(whole["result"]["tools"].as_array().expect("tools"));
        assert!(whole.iter().any(|n| n == "b__echo"), "{whole:?}");

        all.close().await;
        a_only.close().await;
        picked.close().await;
    })
    .await;
}

use support::api_key as key;

#[tokio::test]
async fn an_endpoints_access_rules_refuse_before_anything_runs() {
    within(TEST_TIMEOUT, "the endpoint access rules", async {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("upstream.log");
        let gw = Gateway::serve(json!({
            "auth": { "api_keys": {} },
            "policy": support::allow_everyone(),
            "servers": { "a": support::logged_stdio_fixture(&log) },
            "endpoints": {
                "acme": { "path": "/mcp/acme", "tenant": "acme" },
                "finance": { "path": "/mcp/finance", "groups": ["finance"] },
                "tokens": { "path": "/mcp/tokens", "methods": ["jwt"] },
            },
        }))
        .await;
        let acme = key(&gw.config.path, &["--principal", "ann", "--tenant", "acme"]).await;
        let other = key(
            &gw.config.path,
            &[
                "--principal",
                "olaf",
                "--tenant",
                "other",
                "--group",
                "finance",
            ],
        )
        .await;

        let url = format!("{}/mcp/acme", gw.base);
        let options = Options {
            bearer: Some(acme.clone()),
            ..Options::default()
        };
        let ann = Client::http_at(&url, options).await;
        assert_eq!(
            first_text(&ann.call_tool("a__echo", json!({"text": "in"})).await),
            "in"
        );

        // The other tenant is refused, whatever it sends.
        let call = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
            "params": {"name": "a__echo", "arguments": {"text": "refused"}}});
        for body in [initialize(), call.clone()] {
            let (status, _, reply) = post(&url, Some(&other), None, &[], &body).await;
            assert_eq!(status, 403, "{reply}");
            assert_eq!(reply["error"], "access_denied", "{reply}");
        }
        let sid = ann.session_id().expect("a session id");
        let (status, _, _) = post(&url, Some(&other), Some(&sid), &[], &call).await;
        assert_eq!(status, 403, "not even with someone else's session id");

        // No credential: 401 on an endpoint's path, whatever the method, before its rules.
        let (status, _, reply) = post(&url, None, None, &[], &initialize()).await;
        assert_eq!(status, 401, "{reply}");
        for method in [reqwest::Method::GET, reqwest::Method::DELETE] {
            let resp = reqwest::Client::new()
                .request(method.clone(), &url)
                .header("mcp-session-id", ann.session_id().expect("a session id"))
                .send()
                .await
                .expect("an answer");
            assert_eq!(resp.status(), 401, "{method}");
        }

        // Groups and methods.
        let finance = format!("{}/mcp/finance", gw.base);
        let (status, _, _) = post(&finance, Some(&acme), None, &[], &initialize()).await;
        assert_eq!(status, 403, "ann is in no group");
        let (status, _, _) = post(&finance, Some(&other), None, &[], &initialize()).await;
        assert_eq!(status, 200, "olaf is in finance");
        let tokens = format!("{}/mcp/tokens", gw.base);
        let (status, _, reply) = post(&tokens, Some(&acme), None, &[], &initialize()).await;
        assert_eq!(status, 403, "an API key on a JWT-only endpoint: {reply}");

        // Only ann's call reached the upstream.
        let calls: Vec<Value> = support::upstream_calls(&log)
            .into_iter()
            .map(|m| m["params"]["arguments"].clone())
            .collect();
        assert_eq!(calls, [json!({"text": "in"})], "upstream saw: {calls:?}");

        // The endpoint is a protected resource of its own.
        let text = reqwest::get(format!(
            "{}/.well-known/oauth-protected-resource/mcp/acme",
            gw.base
        ))
        .await
        .expect("metadata")
        .text()
        .await
        .expect("a body");
        let meta: Value = serde_json::from_str(&text).expect("JSON");
        let resource = meta["resource"].as_str().expect("a resource");
        assert!(resource.ends_with("/mcp/acme"), "{meta}");
        ann.close().await;
    })
    .await;
}

async fn check(config: &str) -> (Option<i32>, String) {
    let file = ConfigFile::text("config.yaml", config);
    let (code, _, err) = run_toolgate(
        &["check", "--config", file.path.to_str().unwrap()],
        Duration::from_secs(30),
    )
    .await;
    (code, err)
}

#[tokio::test]
async fn a_bad_endpoint_is_a_config_error_naming_the_key() {
    let server = "servers:\n  a:\n    command: /bin/true\n";
    let (code, err) = check(&format!("{server}endpoints:\n  x:\n    path: /sse/x\n")).await;
    assert_ne!(code, Some(0));
    assert!(err.contains("config.yaml:6"), "{err}");
    assert!(err.contains("endpoints.x.path"), "{err}");
    let (code, err) = check(&format!("{server}endpoints:\n  x:\n    path: /mcp\n")).await;
    assert_ne!(code, Some(0));
    assert!(err.contains("endpoints.x.path"), "{err}");
    let (code, err) = check(&format!(
        "{server}endpoints:\n  x:\n    path: /mcp/x\n    servers: [a, nope]\n"
    ))
    .await;
    assert_ne!(code, Some(0));
    assert!(err.contains("config.yaml:7"), "{err}");
    assert!(err.contains("endpoints.x.servers"), "{err}");
    assert!(err.contains("nope"), "{err}");
    let (code, err) = check(&format!(
        "{server}endpoints:\n  x:\n    path: /mcp/x\n    tenants: acme\n"
    ))
    .await;
    assert_ne!(code, Some(0), "unknown fields are refused: {err}");
}

/// An endpoint's required scopes, with real JWTs from an issuer on loopback.
mod scopes {
    use super::*;
    use support::issuer::{Issuer, now};

    const ISS: &str = "https://login.test";
    const RESOURCE: &str = "https://gw.test/mcp";

    fn token(issuer: &Issuer, scope: &str) -> String {
        let now = now();
        issuer.sign(&json!({
            "iss": ISS, "aud": RESOURCE, "sub": "alice",
            "exp": now + 600, "iat": now, "scope": scope,
        }))
    }

    #[tokio::test]
    async fn a_token_without_the_endpoints_scopes_gets_insufficient_scope() {
        within(TEST_TIMEOUT, "endpoint scopes", async {
            let issuer = Issuer::start().await;
            let jwks_url = issuer.jwks_url.clone();
            let gw = Gateway::serve(json!({
                "policy": support::allow_everyone(),
                "auth": {
                    "resource": RESOURCE,
                    "jwt": [{ "issuer": ISS, "jwks_url": jwks_url }],
                },
                "servers": { "a": stdio_server(&[]) },
                "endpoints": {
                    "finance": {
                        "path": "/mcp/finance",
                        "methods": ["jwt"],
                        "scopes": ["mcp:finance"],
                    },
                },
            }))
            .await;
            let url = format!("{}/mcp/finance", gw.base);
            let weak = token(&issuer, "mcp:tools");
            let (status, headers, reply) =
                post(&url, Some(&weak), None, &[], &initialize()).await;
            assert_eq!(status, 403, "{reply}");
            assert_eq!(reply["error"], "insufficient_scope", "{reply}");
            let challenge = headers
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok())
                .expect("a challenge");
            assert!(challenge.contains("mcp:finance"), "{challenge}");
            assert!(
                challenge.contains(
                    "resource_metadata=\"https://gw.test/.well-known/oauth-protected-resource/mcp/finance\""
                ),
                "{challenge}"
            );
            // The same token is fine on /mcp, and a token with the scope on the endpoint.
            let (status, _, _) = post(&gw.mcp_url(), Some(&weak), None, &[], &initialize()).await;
            assert_eq!(status, 200);
            let strong = token(&issuer, "mcp:tools mcp:finance");
            let (status, _, reply) = post(&url, Some(&strong), None, &[], &initialize()).await;
            assert_eq!(status, 200, "{reply}");
        })
        .await;
    }
}
