//! Real keys, a real JWKS server on loopback, real signed tokens: every attack in
//! the catalogue must end in the right rejection, and honest tokens must pass.

use super::*;
use crate::auth::AuthMethod;
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair,
};
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use jsonwebtoken::{EncodingKey, Header as JwtHeader, encode};
use serde_json::json;
use std::sync::LazyLock;
use tokio::sync::watch;

const ISS: &str = "https://login.example.com";
const AUDIENCE: &str = "https://gw.example.com/mcp";

/// A private key to sign with and its public JWK.
struct TestKey {
    kid: &'static str,
    alg: Algorithm,
    encoding: EncodingKey,
    jwk: Value,
    /// The public key as DER, for the HMAC confusion attack.
    public_der: Vec<u8>,
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn rsa_key(kid: &'static str) -> TestKey {
    let pair = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
    let public = pair.public_key();
    TestKey {
        kid,
        alg: Algorithm::RS256,
        // jsonwebtoken signs with a PKCS#1 RSAPrivateKey; aws-lc exports PKCS#8.
        encoding: EncodingKey::from_rsa_der(&pkcs1_from_pkcs8(pair.as_der().unwrap().as_ref())),
        jwk: json!({
            "kty": "RSA", "kid": kid, "use": "sig",
            "n": b64(public.modulus().big_endian_without_leading_zero()),
            "e": b64(public.exponent().big_endian_without_leading_zero()),
        }),
        public_der: public.as_ref().to_vec(),
    }
}

fn ec_key(kid: &'static str) -> TestKey {
    let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
    let point = pair.public_key().as_ref();
    assert_eq!(point.len(), 65, "uncompressed P-256 point");
    TestKey {
        kid,
        alg: Algorithm::ES256,
        encoding: EncodingKey::from_ec_der(pair.to_pkcs8v1().unwrap().as_ref()),
        jwk: json!({
            "kty": "EC", "kid": kid, "crv": "P-256", "alg": "ES256",
            "x": b64(&point[1..33]), "y": b64(&point[33..]),
        }),
        public_der: point.to_vec(),
    }
}

fn ed_key(kid: &'static str) -> TestKey {
    let pair = Ed25519KeyPair::generate().unwrap();
    let public = pair.public_key().as_ref().to_vec();
    TestKey {
        kid,
        alg: Algorithm::EdDSA,
        encoding: EncodingKey::from_ed_der(pair.to_pkcs8().unwrap().as_ref()),
        jwk: json!({ "kty": "OKP", "kid": kid, "crv": "Ed25519", "x": b64(&public) }),
        public_der: public,
    }
}

/// The `privateKey` OCTET STRING of a PKCS#8 `PrivateKeyInfo`.
fn pkcs1_from_pkcs8(pkcs8: &[u8]) -> Vec<u8> {
    fn tlv(input: &[u8]) -> (u8, &[u8], &[u8]) {
        let (len, start) = match input[1] {
            n if n < 0x80 => (n as usize, 2),
            0x81 => (input[2] as usize, 3),
            0x82 => (u16::from_be_bytes([input[2], input[3]]) as usize, 4),
            other => panic!("unexpected DER length byte {other:#x}"),
        };
        (input[0], &input[start..start + len], &input[start + len..])
    }
    let (_, info, _) = tlv(pkcs8);
    let (_, _, rest) = tlv(info); // version
    let (_, _, rest) = tlv(rest); // algorithm
    let (tag, key, _) = tlv(rest);
    assert_eq!(tag, 0x04, "privateKey is an OCTET STRING");
    key.to_vec()
}

// Key generation is the slow part of these tests (RSA above all): once per run.
static RSA_A: LazyLock<TestKey> = LazyLock::new(|| rsa_key("rsa-a"));
static RSA_B: LazyLock<TestKey> = LazyLock::new(|| rsa_key("rsa-b"));
static EC: LazyLock<TestKey> = LazyLock::new(|| ec_key("ec-1"));
static ED: LazyLock<TestKey> = LazyLock::new(|| ed_key("ed-1"));

/// A JWKS endpoint on loopback that counts its hits.
struct JwksServer {
    url: String,
    state: ServerState,
    hits: watch::Receiver<usize>,
}

#[derive(Clone)]
struct ServerState {
    doc: Arc<Mutex<Value>>,
    status: Arc<Mutex<StatusCode>>,
    hits: Arc<watch::Sender<usize>>,
}

async fn serve_jwks(State(state): State<ServerState>) -> Response {
    state.hits.send_modify(|n| *n += 1);
    let status = *state.status.lock().unwrap();
    let body = state.doc.lock().unwrap().to_string();
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=300"),
    );
    response
}

impl JwksServer {
    async fn start(keys: &[&TestKey]) -> JwksServer {
        let (tx, hits) = watch::channel(0);
        let state = ServerState {
            doc: Arc::new(Mutex::new(Value::Null)),
            status: Arc::new(Mutex::new(StatusCode::OK)),
            hits: Arc::new(tx),
        };
        let app = axum::Router::new()
            .route("/jwks", axum::routing::get(serve_jwks))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let server = JwksServer { url, state, hits };
        server.publish(keys);
        server
    }

    fn publish(&self, keys: &[&TestKey]) {
        let keys: Vec<&Value> = keys.iter().map(|k| &k.jwk).collect();
        *self.state.doc.lock().unwrap() = json!({ "keys": keys });
    }

    fn fail_with(&self, status: StatusCode) {
        *self.state.status.lock().unwrap() = status;
    }

    fn hits(&self) -> usize {
        *self.hits.borrow()
    }

    /// An issuer config for this server; `extra` overrides fields.
    fn issuer(&self, extra: Value) -> JwtIssuerConfig {
        let mut config = json!({
            "issuer": ISS,
            "jwks_url": self.url,
            "algorithms": ["RS256", "PS256", "ES256", "EdDSA"],
            "required_scopes": ["mcp"],
        });
        for (k, v) in extra.as_object().unwrap() {
            config[k] = v.clone();
        }
        serde_json::from_value(config).unwrap()
    }

    fn verifier(&self, extra: Value) -> JwtVerifier {
        JwtVerifier::new(&[self.issuer(extra)], AUDIENCE, reqwest::Client::new()).unwrap()
    }
}

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn claims() -> Value {
    json!({
        "iss": ISS,
        "aud": AUDIENCE,
        "sub": "alice",
        "exp": now() + 300,
        "iat": now(),
        "scope": "mcp tools:read",
    })
}

fn with(mut base: Value, changes: Value) -> Value {
    for (k, v) in changes.as_object().unwrap() {
        if v.is_null() {
            base.as_object_mut().unwrap().remove(k);
        } else {
            base[k] = v.clone();
        }
    }
    base
}

fn sign(key: &TestKey, claims: &Value) -> String {
    let mut header = JwtHeader::new(key.alg);
    header.kid = Some(key.kid.into());
    encode(&header, claims, &key.encoding).unwrap()
}

fn sign_with_kid(key: &TestKey, kid: Option<&str>, claims: &Value) -> String {
    let mut header = JwtHeader::new(key.alg);
    header.kid = kid.map(str::to_owned);
    encode(&header, claims, &key.encoding).unwrap()
}

/// A token assembled by hand, for headers jsonwebtoken refuses to produce.
fn hand_built(header: &Value, claims: &Value, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes()),
        b64(signature)
    )
}

fn rejected(reason: TokenRejection) -> Result<Principal, AuthError> {
    Err(AuthError::InvalidToken(reason))
}

// ---- honest tokens ----

#[tokio::test]
async fn rs256_es256_and_eddsa_tokens_verify() {
    let server = JwksServer::start(&[&RSA_A, &EC, &ED]).await;
    let verifier = server.verifier(json!({}));
    for key in [&*RSA_A, &*EC, &*ED] {
        let principal = verifier.verify(&sign(key, &claims())).await.unwrap();
        assert_eq!(principal.user, "alice", "{:?}", key.alg);
        assert_eq!(principal.method, AuthMethod::Jwt);
        assert_eq!(principal.scopes, ["mcp", "tools:read"]);
        assert_eq!(principal.agent, None);
        assert_eq!(principal.tenant, None);
    }
    assert_eq!(server.hits(), 1, "one fetch serves every key");
}

#[tokio::test]
async fn ps256_tokens_verify_with_an_rsa_key() {
    let server = JwksServer::start(&[&RSA_A]).await;
    let verifier = server.verifier(json!({}));
    let mut header = JwtHeader::new(Algorithm::PS256);
    header.kid = Some(RSA_A.kid.into());
    let token = encode(&header, &claims(), &RSA_A.encoding).unwrap();
    assert_eq!(verifier.verify(&token).await.unwrap().user, "alice");
}

#[tokio::test]
async fn audience_may_be_an_array_and_leeway_is_honoured() {
    let server = JwksServer::start(&[&EC]).await;
    let verifier = server.verifier(json!({ "leeway": 30 }));
    let token = sign(
        &EC,
        &with(
            claims(),
            json!({ "aud": ["https://other.example.com", AUDIENCE], "exp": now() - 10 }),
        ),
    );
    assert!(verifier.verify(&token).await.is_ok());
}

#[tokio::test]
async fn configured_audiences_replace_the_resource_url() {
    let server = JwksServer::start(&[&EC]).await;
    let verifier = server.verifier(json!({ "audiences": ["api://toolgate"] }));
    let ours = sign(&EC, &with(claims(), json!({ "aud": "api://toolgate" })));
    assert!(verifier.verify(&ours).await.is_ok());
    assert_eq!(
        verifier.verify(&sign(&EC, &claims())).await,
        rejected(TokenRejection::WrongAudience)
    );
}

#[tokio::test]
async fn a_token_without_kid_needs_a_single_key() {
    let server = JwksServer::start(&[&EC]).await;
    let verifier = server.verifier(json!({}));
    let token = sign_with_kid(&EC, None, &claims());
    assert!(verifier.verify(&token).await.is_ok());

    server.publish(&[&EC, &ED]);
    verifier.refresh_now().await.unwrap();
    assert_eq!(
        verifier.verify(&token).await,
        rejected(TokenRejection::AmbiguousKey)
    );
}

// ---- the attack catalogue ----

#[tokio::test]
async fn missing_and_malformed_tokens_are_rejected() {
    let server = JwksServer::start(&[&RSA_A]).await;
    let verifier = server.verifier(json!({}));
    assert_eq!(verifier.verify("").await, Err(AuthError::MissingToken));
    for garbage in [
        "abc",
        "a.b",
        "a.b.c",
        "a.b.c.d",
        "eyJhbGciOiJSUzI1NiJ9.bm90IGpzb24.c2ln",
        "....",
    ] {
        assert_eq!(
            verifier.verify(garbage).await,
            rejected(TokenRejection::Malformed),
            "{garbage}"
        );
    }
    let huge = format!("{}.{}.x", "a".repeat(10_000), "b".repeat(10_000));
    assert_eq!(
        verifier.verify(&huge).await,
        rejected(TokenRejection::TooLarge)
    );
    assert_eq!(server.hits(), 0, "garbage never reaches the issuer");
}

#[tokio::test]
async fn alg_none_is_rejected() {
    let server = JwksServer::start(&[&RSA_A]).await;
    let verifier = server.verifier(json!({}));
    for alg in ["none", "None", "NONE"] {
        let header = json!({ "alg": alg, "typ": "JWT", "kid": RSA_A.kid });
        for signature in [&b""[..], b"anything"] {
            let token = hand_built(&header, &claims(), signature);
            assert_eq!(
                verifier.verify(&token).await,
                rejected(TokenRejection::AlgorithmNotAccepted)
            );
        }
    }
}

#[tokio::test]
async fn hs256_signed_with_the_public_key_is_rejected() {
    let server = JwksServer::start(&[&RSA_A]).await;
    let verifier = server.verifier(json!({}));
    let modulus = URL_SAFE_NO_PAD
        .decode(RSA_A.jwk["n"].as_str().unwrap())
        .unwrap();
    for secret in [
        &RSA_A.public_der[..],
        &modulus,
        RSA_A.jwk.to_string().as_bytes(),
    ] {
        let mut header = JwtHeader::new(Algorithm::HS256);
        header.kid = Some(RSA_A.kid.into());
        let token = encode(&header, &claims(), &EncodingKey::from_secret(secret)).unwrap();
        assert_eq!(
            verifier.verify(&token).await,
            rejected(TokenRejection::AlgorithmNotAccepted)
        );
    }
}

#[tokio::test]
async fn a_key_of_the_wrong_type_is_never_used() {
    let server = JwksServer::start(&[&RSA_A, &EC]).await;
    let verifier = server.verifier(json!({}));
    // An ES256 token that names the RSA key.
    let token = sign_with_kid(&EC, Some(RSA_A.kid), &claims());
    assert_eq!(
        verifier.verify(&token).await,
        rejected(TokenRejection::KeyMismatch)
    );
    // The JWKS pins the RSA key to RS256: a PS256 token may not use it.
    let mut pinned = rsa_jwk_with_alg("RS256");
    pinned["kid"] = json!("rsa-pinned");
    *server.state.doc.lock().unwrap() = json!({ "keys": [pinned] });
    verifier.refresh_now().await.unwrap();
    let mut header = JwtHeader::new(Algorithm::PS256);
    header.kid = Some("rsa-pinned".into());
    let token = encode(&header, &claims(), &RSA_A.encoding).unwrap();
    assert_eq!(
        verifier.verify(&token).await,
        rejected(TokenRejection::KeyMismatch)
    );
    header.alg = Algorithm::RS256;
    let token = encode(&header, &claims(), &RSA_A.encoding).unwrap();
    assert!(verifier.verify(&token).await.is_ok());
}

fn rsa_jwk_with_alg(alg: &str) -> Value {
    let mut jwk = RSA_A.jwk.clone();
    jwk["alg"] = json!(alg);
    jwk
}

#[tokio::test]
async fn an_algorithm_the_issuer_does_not_use_is_rejected() {
    let server = JwksServer::start(&[&RSA_A, &EC]).await;
    let verifier = server.verifier(json!({ "algorithms": ["ES256"] }));
    assert!(verifier.verify(&sign(&EC, &claims())).await.is_ok());
    assert_eq!(
        verifier.verify(&sign(&RSA_A, &claims())).await,
        rejected(TokenRejection::AlgorithmNotAccepted)
    );
}

#[tokio::test]
async fn expired_and_not_yet_valid_tokens_are_rejected() {
    let server = JwksServer::start(&[&EC]).await;
    let verifier = server.verifier(json!({ "leeway": 30 }));
    let cases = [
        (json!({ "exp": now() - 120 }), TokenRejection::Expired),
        (
            json!({ "exp": null }),
            TokenRejection::MissingClaim("exp".into()),
        ),
        (
            json!({ "exp": "tomorrow" }),
            TokenRejection::BadClaim("exp".into()),
        ),
        (json!({ "nbf": now() + 120 }), TokenRejection::NotYetValid),
        (
            json!({ "iat": now() + 120 }),
            TokenRejection::IssuedInFuture,
        ),
    ];
    for (change, reason) in cases {
        let token = sign(&EC, &with(claims(), change.clone()));
        assert_eq!(verifier.verify(&token).await, rejected(reason), "{change}");
    }
    let within_leeway = sign(&EC, &with(claims(), json!({ "nbf": now() + 10 })));
    assert!(verifier.verify(&within_leeway).await.is_ok());
}

#[tokio::test]
async fn wrong_issuer_and_audience_are_rejected() {
    let server = JwksServer::start(&[&EC]).await;
    let verifier = server.verifier(json!({}));
    let cases = [
        (
            json!({ "iss": "https://evil.example.com" }),
            TokenRejection::UntrustedIssuer,
        ),
        (
            json!({ "iss": format!("{ISS}/") }),
            TokenRejection::UntrustedIssuer,
        ),
        (
            json!({ "iss": null }),
            TokenRejection::MissingClaim("iss".into()),
        ),
        (
            json!({ "iss": [ISS] }),
            TokenRejection::BadClaim("iss".into()),
        ),
        (
            json!({ "aud": "https://other.example.com/mcp" }),
            TokenRejection::WrongAudience,
        ),
        (json!({ "aud": [] }), TokenRejection::WrongAudience),
        (
            json!({ "aud": null }),
            TokenRejection::MissingClaim("aud".into()),
        ),
    ];
    for (change, reason) in cases {
        let token = sign(&EC, &with(claims(), change.clone()));
        assert_eq!(verifier.verify(&token).await, rejected(reason), "{change}");
    }
}

#[tokio::test]
async fn a_tampered_token_is_rejected() {
    let server = JwksServer::start(&[&RSA_A, &EC]).await;
    let verifier = server.verifier(json!({}));
    for key in [&*RSA_A, &*EC] {
        let token = sign(key, &claims());
        let parts: Vec<&str> = token.split('.').collect();
        let forged = with(claims(), json!({ "sub": "admin", "scope": "mcp admin" }));
        let tampered = format!(
            "{}.{}.{}",
            parts[0],
            b64(forged.to_string().as_bytes()),
            parts[2]
        );
        assert_eq!(
            verifier.verify(&tampered).await,
            rejected(TokenRejection::BadSignature)
        );
        // A signature from another key of the same type fails too.
        let other = format!("{}.{}.{}", parts[0], parts[1], b64(&[7u8; 64]));
        assert_eq!(
            verifier.verify(&other).await,
            rejected(TokenRejection::BadSignature)
        );
    }
}

#[tokio::test]
async fn crit_headers_are_rejected() {
    let server = JwksServer::start(&[&EC]).await;
    let verifier = server.verifier(json!({}));
    let mut header = JwtHeader::new(Algorithm::ES256);
    header.kid = Some(EC.kid.into());
    header.crit = Some(vec!["exp".into()]);
    let token = encode(&header, &claims(), &EC.encoding).unwrap();
    assert_eq!(
        verifier.verify(&token).await,
        rejected(TokenRejection::CriticalHeader)
    );
}

#[tokio::test]
async fn a_missing_scope_is_insufficient_scope() {
    let server = JwksServer::start(&[&EC]).await;
    let verifier = server.verifier(json!({ "required_scopes": ["mcp", "tools:call"] }));
    let token = sign(&EC, &with(claims(), json!({ "scope": "mcp" })));
    let err = verifier.verify(&token).await.unwrap_err();
    assert_eq!(
        err,
        AuthError::InsufficientScope {
            required: vec!["mcp".into(), "tools:call".into()]
        }
    );
    assert_eq!(err.status(), StatusCode::FORBIDDEN);
    assert_eq!(err.code(), "insufficient_scope");
    // `scp`, as an array or a string, counts as well.
    for scp in [json!(["mcp", "tools:call"]), json!("tools:call mcp")] {
        let token = sign(&EC, &with(claims(), json!({ "scope": null, "scp": scp })));
        let principal = verifier.verify(&token).await.unwrap();
        assert!(principal.scopes.contains(&"tools:call".to_owned()));
    }
    let bad = sign(&EC, &with(claims(), json!({ "scope": 42 })));
    assert_eq!(
        verifier.verify(&bad).await,
        rejected(TokenRejection::BadClaim("scope".into()))
    );
}

// ---- keys: refetch, rate limit, rotation, failures ----

#[tokio::test]
async fn an_unknown_kid_refetches_once_per_window() {
    let server = JwksServer::start(&[&RSA_A]).await;
    let verifier = server.verifier(json!({}));
    verifier.refresh_now().await.unwrap();
    assert_eq!(server.hits(), 1);

    let ghost = sign_with_kid(&RSA_A, Some("ghost-1"), &claims());
    assert_eq!(
        verifier.verify(&ghost).await,
        rejected(TokenRejection::UnknownKey)
    );
    assert_eq!(server.hits(), 2, "an unknown kid refetches the JWKS");

    let ghost = sign_with_kid(&RSA_A, Some("ghost-2"), &claims());
    assert_eq!(
        verifier.verify(&ghost).await,
        rejected(TokenRejection::UnknownKey)
    );
    assert_eq!(server.hits(), 2, "no second refetch within the window");

    // Known keys keep working, without fetching.
    assert!(verifier.verify(&sign(&RSA_A, &claims())).await.is_ok());
    assert_eq!(server.hits(), 2);
}

#[tokio::test]
async fn concurrent_misses_share_one_fetch() {
    let server = JwksServer::start(&[&EC]).await;
    let verifier = server.verifier(json!({}));
    let token = sign(&EC, &claims());
    let ghost = sign_with_kid(&EC, Some("ghost"), &claims());
    let mut calls = Vec::new();
    for i in 0..16 {
        calls.push(verifier.verify(if i % 2 == 0 { &token } else { &ghost }));
    }
    let results = futures::future::join_all(calls).await;
    for (i, result) in results.into_iter().enumerate() {
        if i % 2 == 0 {
            assert!(result.is_ok());
        } else {
            assert_eq!(result, rejected(TokenRejection::UnknownKey));
        }
    }
    assert_eq!(server.hits(), 1);
}

#[tokio::test]
async fn a_rotated_key_verifies_after_one_refetch() {
    let server = JwksServer::start(&[&RSA_A]).await;
    let verifier = server.verifier(json!({}));
    verifier.refresh_now().await.unwrap();
    assert!(verifier.verify(&sign(&RSA_A, &claims())).await.is_ok());

    server.publish(&[&RSA_B]);
    assert!(verifier.verify(&sign(&RSA_B, &claims())).await.is_ok());
    assert_eq!(server.hits(), 2);
    // The retired key is gone with the new document.
    assert_eq!(
        verifier.verify(&sign(&RSA_A, &claims())).await,
        rejected(TokenRejection::UnknownKey)
    );
    assert_eq!(server.hits(), 2);
}

#[tokio::test]
async fn a_failed_fetch_keeps_the_old_keys() {
    let server = JwksServer::start(&[&EC]).await;
    let verifier = server.verifier(json!({}));
    verifier.refresh_now().await.unwrap();
    server.fail_with(StatusCode::INTERNAL_SERVER_ERROR);
    assert!(matches!(
        verifier.refresh_now().await,
        Err(JwksError::Status { status: 500, .. })
    ));
    assert!(verifier.verify(&sign(&EC, &claims())).await.is_ok());

    *server.state.status.lock().unwrap() = StatusCode::OK;
    *server.state.doc.lock().unwrap() = json!({ "not": "a jwks" });
    assert!(matches!(
        verifier.refresh_now().await,
        Err(JwksError::Invalid { .. })
    ));
    assert!(verifier.verify(&sign(&EC, &claims())).await.is_ok());
}

#[tokio::test]
async fn keys_never_fetched_make_tokens_uncheckable_not_invalid() {
    let server = JwksServer::start(&[&EC]).await;
    server.fail_with(StatusCode::BAD_GATEWAY);
    let verifier = server.verifier(json!({}));
    let err = verifier.verify(&sign(&EC, &claims())).await.unwrap_err();
    assert_eq!(err, AuthError::KeysUnavailable);
    assert_eq!(err.status(), StatusCode::SERVICE_UNAVAILABLE);
    // Rate-limited like any miss.
    assert!(verifier.verify(&sign(&EC, &claims())).await.is_err());
    assert_eq!(server.hits(), 1);
}

#[tokio::test]
async fn keys_are_refreshed_in_the_background() {
    let server = JwksServer::start(&[&EC]).await;
    let fast = RefreshPolicy {
        min_age: Duration::from_millis(10),
        max_age: Duration::from_millis(10),
        ..RefreshPolicy::default()
    };
    let verifier = JwtVerifier::with_policy(
        &[server.issuer(json!({}))],
        AUDIENCE,
        reqwest::Client::new(),
        fast,
    )
    .unwrap();
    verifier.start_refresh();
    verifier.start_refresh();
    let mut hits = server.hits.clone();
    tokio::time::timeout(Duration::from_secs(10), hits.wait_for(|n| *n >= 3))
        .await
        .expect("the background task keeps fetching")
        .unwrap();
    // The new key arrives without any token asking for it.
    server.publish(&[&ED]);
    let seen = server.hits();
    tokio::time::timeout(Duration::from_secs(10), hits.wait_for(|n| *n >= seen + 2))
        .await
        .unwrap()
        .unwrap();
    assert!(verifier.verify(&sign(&ED, &claims())).await.is_ok());
}

// ---- claims → principal ----

#[tokio::test]
async fn claims_map_to_the_principal() {
    let server = JwksServer::start(&[&EC]).await;
    let verifier = server.verifier(json!({
        "claims": {
            "user": "profile.email",
            "tenant": "org.id",
            "groups": "realm_access.roles",
            "attrs": {
                "department": "profile.department",
                "level": "https://example.com/claims.level",
                "absent": "no.such.claim",
            },
        },
    }));
    let token = sign(
        &EC,
        &with(
            claims(),
            json!({
                "profile": { "email": "alice@example.com", "department": "research" },
                "org": { "id": "acme" },
                "realm_access": { "roles": ["admin", "dev"] },
                "https://example.com/claims": { "level": 3 },
                "azp": "claude-desktop",
                "client_id": "ignored-because-azp-wins",
            }),
        ),
    );
    let p = verifier.verify(&token).await.unwrap();
    assert_eq!(p.user, "alice@example.com");
    assert_eq!(p.tenant.as_deref(), Some("acme"));
    assert_eq!(p.groups, ["admin", "dev"]);
    assert_eq!(p.agent.as_deref(), Some("claude-desktop"));
    assert_eq!(p.attrs.get("department"), Some(&json!("research")));
    assert_eq!(p.attrs.get("level"), Some(&json!(3)));
    assert!(!p.attrs.contains_key("absent"));
    assert_eq!(p.key(), "acme/alice@example.com");
}

#[tokio::test]
async fn groups_as_a_string_and_agent_from_client_id() {
    let server = JwksServer::start(&[&EC]).await;
    let verifier = server.verifier(json!({ "claims": { "tenant": "tid" } }));
    let token = sign(
        &EC,
        &with(
            claims(),
            json!({ "groups": "admin dev,ops", "client_id": "cursor" }),
        ),
    );
    let p = verifier.verify(&token).await.unwrap();
    assert_eq!(p.groups, ["admin", "dev", "ops"]);
    assert_eq!(p.agent.as_deref(), Some("cursor"));
    assert_eq!(p.tenant, None, "tenant is optional");
    assert_eq!(p.key(), "alice");

    for (change, reason) in [
        (
            json!({ "sub": null }),
            TokenRejection::MissingClaim("sub".into()),
        ),
        (
            json!({ "sub": "" }),
            TokenRejection::MissingClaim("sub".into()),
        ),
        // jsonwebtoken itself refuses a `sub` that is not a string.
        (json!({ "sub": {"id": 1} }), TokenRejection::Malformed),
        (
            json!({ "client_id": {"id": 1} }),
            TokenRejection::BadClaim("client_id".into()),
        ),
        (
            json!({ "groups": 7 }),
            TokenRejection::BadClaim("groups".into()),
        ),
    ] {
        let token = sign(&EC, &with(claims(), change.clone()));
        assert_eq!(verifier.verify(&token).await, rejected(reason), "{change}");
    }
}

// ---- config ----

#[test]
fn unsafe_issuer_settings_are_refused() {
    let base = json!({ "issuer": ISS, "jwks_url": "https://login.example.com/jwks" });
    let cases = [
        (
            json!({ "algorithms": ["none"] }),
            "algorithms",
            "never accepted",
        ),
        (
            json!({ "algorithms": ["RS256", "HS256"] }),
            "algorithms",
            "HMAC",
        ),
        (json!({ "algorithms": ["hs512"] }), "algorithms", "HMAC"),
        (
            json!({ "algorithms": ["ES512"] }),
            "algorithms",
            "unsupported",
        ),
        (json!({ "algorithms": [] }), "algorithms", "no algorithm"),
        (json!({ "leeway": "301s" }), "leeway", "at most 5m"),
        (
            json!({ "jwks_url": "http://login.example.com/jwks" }),
            "jwks_url",
            "https",
        ),
        (
            json!({ "jwks_url": "file:///etc/jwks.json" }),
            "jwks_url",
            "https",
        ),
        (json!({ "jwks_url": "jwks.json" }), "jwks_url", "not a URL"),
        (json!({ "issuer": " " }), "issuer", "empty"),
        (
            json!({ "required_scopes": ["a b"] }),
            "required_scopes",
            "one word",
        ),
    ];
    for (change, field, needle) in cases {
        let config: JwtIssuerConfig =
            serde_json::from_value(with(base.clone(), change.clone())).unwrap();
        let err = JwtVerifier::new(&[config], AUDIENCE, reqwest::Client::new())
            .err()
            .unwrap_or_else(|| panic!("{change} was accepted"));
        assert_eq!(err.key, format!("auth.jwt[0].{field}"), "{change}");
        assert!(err.message.contains(needle), "{change}: {}", err.message);
    }

    let ok: JwtIssuerConfig =
        serde_json::from_value(with(base.clone(), json!({ "leeway": "5m" }))).unwrap();
    assert!(JwtVerifier::new(std::slice::from_ref(&ok), AUDIENCE, reqwest::Client::new()).is_ok());
    let local: JwtIssuerConfig = serde_json::from_value(with(
        base.clone(),
        json!({ "jwks_url": "http://127.0.0.1:9/jwks" }),
    ))
    .unwrap();
    assert!(JwtVerifier::new(&[local], AUDIENCE, reqwest::Client::new()).is_ok());

    let twice = JwtVerifier::new(&[ok.clone(), ok.clone()], AUDIENCE, reqwest::Client::new());
    assert_eq!(twice.err().unwrap().key, "auth.jwt[1].issuer");
    let no_audience = JwtVerifier::new(&[ok], "", reqwest::Client::new());
    assert_eq!(no_audience.err().unwrap().key, "auth.jwt[0].audiences");
}
