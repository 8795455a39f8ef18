//! Authentication at the HTTP edge, through the real `toolgate` binary: API keys issued with
//! `toolgate keys`, JWTs signed with test keys and published by a JWKS endpoint the test
//! serves, the attack catalog (each case refused with the right status and nothing reaching the
//! upstream), sessions bound to their principal, RFC 9728 metadata, and the rule that anonymous
//! callers are served on loopback only.

mod support;

use reqwest::Method;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::{Client, Gateway, Options, first_text, raw_mcp, run_toolgate, within};

const TEST_TIMEOUT: Duration = Duration::from_secs(90);
const CLI_TIMEOUT: Duration = Duration::from_secs(30);

use support::logged_stdio_fixture as logged_fixture;

/// The `tools/call`s that reached the upstream, but for those sent while a key was still valid
/// (text `after revoke`: served until the revocation took effect).
fn calls_seen(log: &Path) -> Vec<Value> {
    support::upstream_calls(log)
        .into_iter()
        .filter(|m| m["params"]["arguments"]["text"] != "after revoke")
        .collect()
}

struct Setup {
    gw: Gateway,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

async fn gateway_with_keys() -> Setup {
    let dir = tempfile::tempdir().expect("a temp dir");
    let log = dir.path().join("upstream.log");
    let config = json!({
        "policy": support::allow_everyone(),
        "auth": { "api_keys": {}, "scopes_supported": ["mcp:tools"] },
        "servers": { "fx": logged_fixture(&log) },
    });
    let gw = Gateway::serve(config).await;
    Setup { gw, log, _dir: dir }
}

use support::api_key as create_key;

fn key_id(key: &str) -> &str {
    key.split('_').nth(1).expect("tgk_ID_SECRET")
}

/// One raw request with headers; returns status, headers and body.
async fn raw(
    base: &str,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<String>,
) -> (u16, reqwest::header::HeaderMap, String) {
    let mut req = reqwest::Client::new()
        .request(method, format!("{base}{path}"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if let Some(b) = body {
        req = req.body(b);
    }
    let resp = within(Duration::from_secs(10), "a raw request", req.send())
        .await
        .expect("the gateway answers");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.text().await.unwrap_or_default())
}

fn call_body(key: &str) -> String {
    json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
        "params": {"name": "fx__echo", "arguments": {"text": key}}})
    .to_string()
}

fn with_bearer(key: &str) -> Options {
    Options {
        bearer: Some(key.to_owned()),
        ..Options::default()
    }
}

#[tokio::test]
async fn api_key_attack_catalog_is_refused_before_any_upstream() {
    within(TEST_TIMEOUT, "the API key attack catalog", async {
        let s = gateway_with_keys().await;
        let base = s.gw.base.clone();
        let alice = create_key(&s.gw.config.path, &["--principal", "alice"]).await;
        let bob = create_key(&s.gw.config.path, &["--principal", "bob"]).await;
        let metadata =
            format!("resource_metadata=\"{base}/.well-known/oauth-protected-resource/mcp\"");

        // No credential: a bare challenge pointing at the metadata, with the scopes.
        let (status, headers, _) = raw(
            &base,
            Method::POST,
            "/mcp",
            &[],
            Some(support::initialize_body()),
        )
        .await;
        assert_eq!(status, 401);
        let challenge = headers["www-authenticate"].to_str().unwrap();
        assert!(challenge.starts_with("Bearer "), "{challenge}");
        assert!(challenge.contains(&metadata), "{challenge}");
        assert!(challenge.contains("scope=\"mcp:tools\""), "{challenge}");
        assert!(
            !challenge.contains("error="),
            "no error code without a token: {challenge}"
        );

        let wrong_secret = format!("tgk_{}_{}", key_id(&alice), "A".repeat(43));
        type Case<'a> = (&'a str, Vec<(&'a str, String)>, &'a str, u16);
        let cases: Vec<Case> = vec![
            (
                "garbage bearer",
                vec![("authorization", "Bearer garbage".into())],
                "/mcp",
                401,
            ),
            (
                "malformed key",
                vec![("authorization", "Bearer tgk_0123456789abcdef_short".into())],
                "/mcp",
                401,
            ),
            (
                "right id, wrong secret",
                vec![("authorization", format!("Bearer {wrong_secret}"))],
                "/mcp",
                401,
            ),
            (
                "Basic scheme",
                vec![("authorization", format!("Basic {alice}"))],
                "/mcp",
                400,
            ),
            (
                "key in the query string",
                vec![],
                "/mcp?access_token=KEY",
                400,
            ),
            (
                "api_key in the query string",
                vec![],
                "/mcp?api_key=KEY",
                400,
            ),
            ("legacy SSE without a key", vec![], "/sse", 401),
            (
                "legacy message without a key",
                vec![],
                "/message?sessionId=x",
                401,
            ),
        ];
        for (what, headers, path, expected) in cases {
            let path = path.replace("KEY", &alice);
            let hs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let method = if path.starts_with("/sse") {
                Method::GET
            } else {
                Method::POST
            };
            let (status, resp_headers, body) =
                raw(&base, method, &path, &hs, Some(call_body(what))).await;
            assert_eq!(status, expected, "{what}: {body}");
            if expected == 401 && !hs.is_empty() {
                let c = resp_headers["www-authenticate"].to_str().unwrap();
                assert!(c.contains("error=\"invalid_token\""), "{what}: {c}");
            }
            // The credential is never echoed back.
            assert!(!body.contains(&alice[8..]), "{what} echoed the key: {body}");
        }

        // An expired key and a revoked key.
        let expired = create_key(
            &s.gw.config.path,
            &["--principal", "carol", "--expires", "0s"],
        )
        .await;
        let (status, _, body) = raw(
            &base,
            Method::POST,
            "/mcp",
            &[("authorization", &format!("Bearer {expired}"))],
            Some(support::initialize_body()),
        )
        .await;
        assert_eq!((status, body.contains("expired")), (401, true), "{body}");
        let revoked = create_key(&s.gw.config.path, &["--principal", "dave"]).await;
        let ok = Client::http(&base, with_bearer(&revoked)).await;
        let cfg = s.gw.config.path.to_str().unwrap();
        let (code, out, err) = run_toolgate(
            &["keys", "revoke", "--config", cfg, key_id(&revoked)],
            CLI_TIMEOUT,
        )
        .await;
        assert_eq!(code, Some(0), "{out}{err}");
        // Revocation reaches the running gateway within its cache window.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (status, _) = raw_mcp(
                &base,
                Method::POST,
                ok.session_id().as_deref(),
                &[("authorization", &format!("Bearer {revoked}"))],
                call_body("after revoke"),
            )
            .await;
            if status == 401 {
                break;
            }
            assert!(Instant::now() < deadline, "a revoked key kept working");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }

        // Another principal's session id: refused as if it did not exist.
        let a = Client::http(&base, with_bearer(&alice)).await;
        let alice_session = a.session_id().expect("a session id");
        let (status, body) = raw_mcp(
            &base,
            Method::POST,
            Some(&alice_session),
            &[("authorization", &format!("Bearer {bob}"))],
            call_body("hijack"),
        )
        .await;
        assert_eq!(status, 404, "bob used alice's session: {body}");
        let (status, _) = raw_mcp(
            &base,
            Method::GET,
            Some(&alice_session),
            &[("authorization", &format!("Bearer {bob}"))],
            "",
        )
        .await;
        assert_eq!(status, 404, "bob read alice's stream");

        // Nothing above reached the upstream; a real call does (so the log can tell).
        assert!(
            calls_seen(&s.log).is_empty(),
            "refused requests reached the upstream: {:?}",
            calls_seen(&s.log)
        );
        let result = a.call_tool("fx__echo", json!({"text": "hello"})).await;
        assert_eq!(first_text(&result), "hello");
        let seen = calls_seen(&s.log);
        assert_eq!(seen.len(), 1, "{seen:?}");
        // The caller's key never travels upstream.
        let upstream = std::fs::read_to_string(&s.log).unwrap_or_default();
        for key in [&alice, &bob, &revoked] {
            assert!(
                !upstream.contains(key_id(key)),
                "a key reached the upstream"
            );
        }
        // Nor into the gateway's log.
        let log = s.gw.stderr();
        for key in [&alice, &bob, &revoked, &expired] {
            assert!(!log.contains(&key[21..]), "a key secret was logged");
        }
    })
    .await;
}

#[tokio::test]
async fn keys_are_listed_without_secrets_and_revoked_by_id() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("toolgate.yaml");
    std::fs::write(
        &config,
        "auth:\n  api_keys: {}\nstorage: sqlite://state/keys.db\n",
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("state")).unwrap();
    let key = create_key(
        &config,
        &[
            "--principal",
            "svc-reports",
            "--tenant",
            "acme",
            "--group",
            "readers",
            "--group",
            "ops",
            "--expires",
            "30d",
        ],
    )
    .await;
    let cfg = config.to_str().unwrap();
    let (code, out, err) =
        run_toolgate(&["keys", "list", "--config", cfg, "--json"], CLI_TIMEOUT).await;
    assert_eq!(code, Some(0), "{err}");
    let listed: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(listed[0]["id"], key_id(&key));
    assert_eq!(listed[0]["principal"], "svc-reports");
    assert_eq!(listed[0]["tenant"], "acme");
    assert_eq!(listed[0]["groups"], json!(["readers", "ops"]));
    assert!(
        listed[0]["expires_at"].as_i64().unwrap()
            > listed[0]["created_at"].as_i64().unwrap() + 29 * 86400
    );
    assert!(!out.contains(&key[21..]), "a secret was listed");
    let (code, _, _) = run_toolgate(
        &["keys", "revoke", "--config", cfg, key_id(&key)],
        CLI_TIMEOUT,
    )
    .await;
    assert_eq!(code, Some(0));
    let (_, table, _) = run_toolgate(&["keys", "list", "--config", cfg], CLI_TIMEOUT).await;
    assert!(table.contains("revoked"), "{table}");
    let (code, _, err) = run_toolgate(
        &["keys", "revoke", "--config", cfg, "0000000000000000"],
        CLI_TIMEOUT,
    )
    .await;
    assert_eq!(code, Some(1));
    assert!(err.contains("no key"), "{err}");
    assert!(
        dir.path().join("state/keys.db").exists(),
        "storage is relative to the config"
    );
}

#[tokio::test]
async fn protected_resource_metadata_names_the_resource_clients_use() {
    let config = json!({
        "policy": support::allow_everyone(),
        "auth": {
            "resource": "https://gw.example.com/mcp",
            "authorization_servers": ["https://login.example.com"],
            "scopes_supported": ["mcp:tools", "mcp:admin"],
            "api_keys": {},
        },
        "allowed_origins": [],
    });
    let gw = Gateway::serve(config).await;
    for path in [
        "/.well-known/oauth-protected-resource",
        "/.well-known/oauth-protected-resource/mcp",
    ] {
        let (status, _, body) = raw(&gw.base, Method::GET, path, &[], None).await;
        assert_eq!(status, 200, "{path}");
        let doc: Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(doc["resource"], "https://gw.example.com/mcp");
        assert_eq!(
            doc["authorization_servers"],
            json!(["https://login.example.com"])
        );
        assert_eq!(doc["scopes_supported"], json!(["mcp:tools", "mcp:admin"]));
        assert_eq!(doc["bearer_methods_supported"], json!(["header"]));
    }
    let (status, _, _) = raw(
        &gw.base,
        Method::GET,
        "/.well-known/oauth-protected-resource/other",
        &[],
        None,
    )
    .await;
    assert_eq!(status, 404);
    // The challenge points at the path-suffixed document of the configured resource.
    let (_, headers, _) = raw(
        &gw.base,
        Method::POST,
        "/mcp",
        &[],
        Some(support::initialize_body()),
    )
    .await;
    let challenge = headers["www-authenticate"].to_str().unwrap();
    assert!(
        challenge.contains(
            "resource_metadata=\"https://gw.example.com/.well-known/oauth-protected-resource/mcp\""
        ),
        "{challenge}"
    );
}

/// `toolgate serve` on `listen`: `Ok` once it serves (it is then killed), or `Err` with what it
/// logged when it exits instead.
async fn serve_on(config: &str, listen: &str) -> Result<String, String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("toolgate.yaml");
    std::fs::write(&path, config).unwrap();
    let stderr = dir.path().join("stderr");
    let mut child = tokio::process::Command::new(support::toolgate_bin())
        .args(["serve", "--config"])
        .arg(&path)
        .args(["--listen", listen])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&stderr).expect("a stderr file"))
        .kill_on_drop(true)
        .spawn()
        .expect("toolgate starts");
    support::wait_serving(&mut child, &stderr).await
}

#[tokio::test]
async fn anonymous_callers_are_served_on_loopback_only() {
    // No auth at all, or explicit anonymous access: refused on a network address.
    for config in ["servers: {}\n", "auth:\n  anonymous: {user: me}\n"] {
        let err = serve_on(config, "0.0.0.0:0")
            .await
            .expect_err("served anonymous callers on 0.0.0.0");
        assert!(err.contains("exit status: 1"), "{err}");
        assert!(err.contains("refusing to listen on 0.0.0.0"), "{err}");
    }
    // With credentials required, a network address is fine.
    let served = serve_on("auth:\n  api_keys: {}\n", "0.0.0.0:0").await;
    assert!(
        served.is_ok(),
        "refused to serve with authentication configured: {served:?}"
    );
}

#[tokio::test]
async fn explicit_anonymous_access_serves_the_configured_user() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("upstream.log");
    let config = json!({
        "policy": support::allow_everyone(),
        "auth": { "anonymous": { "user": "me" }, "api_keys": {} },
        "servers": { "fx": logged_fixture(&log) },
    });
    let gw = Gateway::serve(config).await;
    // No credential: the anonymous user. A bad credential is still refused, never downgraded.
    let c = Client::http(&gw.base, Options::default()).await;
    let result = c.call_tool("fx__echo", json!({"text": "hi"})).await;
    assert_eq!(first_text(&result), "hi");
    let (status, _) = raw_mcp(
        &gw.base,
        Method::POST,
        None,
        &[(
            "authorization",
            "Bearer tgk_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        )],
        support::initialize_body(),
    )
    .await;
    assert_eq!(status, 401);
}

mod jwt {
    use super::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};

    const ISS: &str = "https://login.test";
    const RESOURCE: &str = "https://gw.test/mcp";

    use support::issuer::{Issuer, now};

    fn claims(sub: &str) -> Value {
        json!({
            "iss": ISS, "aud": RESOURCE, "sub": sub, "azp": "ide-agent",
            "exp": now() + 600, "iat": now(), "scope": "mcp:tools",
            "tid": "acme", "roles": ["finance"],
        })
    }

    fn sign(issuer: &Issuer, claims: &Value) -> String {
        issuer.sign(claims)
    }

    fn unsigned(header: Value, claims: &Value) -> String {
        let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
        format!("{}.{}.", b64(&header), b64(claims))
    }

    #[tokio::test]
    async fn jwt_attack_catalog_is_refused_before_any_upstream() {
        within(TEST_TIMEOUT, "the JWT attack catalog", async {
            let iss = Issuer::start().await;
            let dir = tempfile::tempdir().unwrap();
            let log = dir.path().join("upstream.log");
            let config = json!({
                "policy": support::allow_everyone(),
                "auth": {
                    "resource": RESOURCE,
                    "jwt": [{
                        "issuer": ISS, "jwks_url": iss.jwks_url,
                        "required_scopes": ["mcp:tools"],
                        "claims": { "tenant": "tid", "groups": "roles" },
                    }],
                },
                "servers": { "fx": logged_fixture(&log) },
            });
            let gw = Gateway::serve(config).await;
            let base = gw.base.clone();

            // An honest token works, and its claims make the principal.
            let good = sign(&iss, &claims("alice"));
            let c = Client::http(&base, with_bearer(&good)).await;
            let result = c.call_tool("fx__echo", json!({"text": "signed"})).await;
            assert_eq!(first_text(&result), "signed");
            assert_eq!(calls_seen(&log).len(), 1);

            let mut expired = claims("alice");
            expired["exp"] = json!(now() - 3600);
            let mut early = claims("alice");
            early["nbf"] = json!(now() + 3600);
            let mut wrong_iss = claims("alice");
            wrong_iss["iss"] = json!("https://evil.test");
            let mut wrong_aud = claims("alice");
            wrong_aud["aud"] = json!("https://other.test/mcp");
            let mut no_scope = claims("alice");
            no_scope["scope"] = json!("profile");
            let mut unknown_kid = Header::new(Algorithm::ES256);
            unknown_kid.kid = Some("k-unknown".into());
            let unknown_kid = encode(&unknown_kid, &claims("alice"), &iss.key).unwrap();
            let mut hs = Header::new(Algorithm::HS256);
            hs.kid = Some(iss.kid.into());
            let confused = encode(&hs, &claims("alice"), &EncodingKey::from_secret(&iss.public)).unwrap();
            let tampered = {
                let mut parts: Vec<String> = good.split('.').map(String::from).collect();
                let mut c = claims("alice");
                c["sub"] = json!("root");
                parts[1] = URL_SAFE_NO_PAD.encode(c.to_string());
                parts.join(".")
            };
            let none = unsigned(json!({"alg": "none", "typ": "JWT", "kid": iss.kid}), &claims("alice"));
            let cases: Vec<(&str, String, u16)> = vec![
                ("expired", sign(&iss, &expired), 401),
                ("not yet valid", sign(&iss, &early), 401),
                ("wrong iss", sign(&iss, &wrong_iss), 401),
                ("wrong aud", sign(&iss, &wrong_aud), 401),
                ("unknown kid", unknown_kid, 401),
                ("alg none", none, 401),
                ("HS256 with the public key", confused, 401),
                ("tampered payload", tampered, 401),
                ("malformed", "not.a.jwt".into(), 401),
                ("missing scope", sign(&iss, &no_scope), 403),
            ];
            for (what, token, expected) in cases {
                let auth = format!("Bearer {token}");
                let (status, headers, body) = raw(&base, Method::POST, "/mcp", &[("authorization", &auth)], Some(call_body(what))).await;
                assert_eq!(status, expected, "{what}: {body}");
                let challenge = headers["www-authenticate"].to_str().unwrap();
                let code = if expected == 403 { "insufficient_scope" } else { "invalid_token" };
                assert!(challenge.contains(&format!("error=\"{code}\"")), "{what}: {challenge}");
                assert!(challenge.contains("resource_metadata=\"https://gw.test/.well-known/oauth-protected-resource/mcp\""), "{what}: {challenge}");
                if expected == 403 {
                    assert!(challenge.contains("scope=\"mcp:tools\""), "{challenge}");
                }
                // A session id of alice's does not help either.
                let (status, _) = raw_mcp(&base, Method::POST, c.session_id().as_deref(), &[("authorization", &auth)], call_body(what)).await;
                assert_eq!(status, expected, "{what} with a session id");
            }
            let (status, _, _) = raw(&base, Method::POST, &format!("/mcp?access_token={good}"), &[], Some(call_body("query"))).await;
            assert_eq!(status, 400, "a token in the query string");

            // The same user with another valid token keeps the session; another user cannot.
            let again = sign(&iss, &claims("alice"));
            let (status, _) = raw_mcp(&base, Method::POST, c.session_id().as_deref(), &[("authorization", &format!("Bearer {again}"))], call_body("again")).await;
            assert_eq!(status, 200);
            let mallory = sign(&iss, &claims("mallory"));
            let (status, _) = raw_mcp(&base, Method::POST, c.session_id().as_deref(), &[("authorization", &format!("Bearer {mallory}"))], call_body("hijack")).await;
            assert_eq!(status, 404);

            let seen: Vec<Value> = calls_seen(&log);
            let texts: Vec<&Value> = seen.iter().map(|m| &m["params"]["arguments"]["text"]).collect();
            assert_eq!(texts, [&json!("signed"), &json!("again")], "refused calls reached the upstream");
            // The caller's token is never passed through.
            let upstream = std::fs::read_to_string(&log).unwrap();
            assert!(!upstream.contains(&good[..40]), "the bearer token reached the upstream");
            assert!(!gw.stderr().contains(&good[good.len() - 40..]), "a token was logged");
        })
        .await;
    }
}

#[tokio::test]
async fn api_keys_in_their_own_header_and_foreign_origins() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("upstream.log");
    let gw = Gateway::serve(json!({
        "policy": support::allow_everyone(),
        "auth": { "api_keys": { "header": "X-Api-Key" } },
        "servers": { "fx": logged_fixture(&log) },
    }))
    .await;
    let key = create_key(&gw.config.path, &["--principal", "erin"]).await;
    // The configured header carries the bare key.
    let (status, _, body) = raw(
        &gw.base,
        Method::POST,
        "/mcp",
        &[("x-api-key", &key)],
        Some(support::initialize_body()),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // A valid key from a foreign web page is still refused: Origin is checked first.
    let (status, _, _) = raw(
        &gw.base,
        Method::POST,
        "/mcp",
        &[("x-api-key", &key), ("origin", "https://evil.example")],
        Some(call_body("from evil")),
    )
    .await;
    assert_eq!(status, 403);
    // The key in the Authorization header is not what this gateway asked for.
    let (status, _, _) = raw(
        &gw.base,
        Method::POST,
        "/mcp",
        &[("authorization", &format!("Bearer {key}"))],
        Some(support::initialize_body()),
    )
    .await;
    assert_eq!(status, 401);
    assert!(calls_seen(&log).is_empty());
}
