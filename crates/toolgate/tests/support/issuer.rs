//! A token issuer for tests: an ES256 key, its public half served as a JWKS on loopback, and
//! signing of whatever claims a test needs.

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};

pub struct Issuer {
    /// The key id the JWKS publishes.
    pub kid: &'static str,
    pub key: EncodingKey,
    pub jwks_url: String,
    /// The public point, for the HMAC confusion attack.
    pub public: Vec<u8>,
    _server: tokio::task::JoinHandle<()>,
}

impl Issuer {
    pub async fn start() -> Issuer {
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("a P-256 key");
        let point = pair.public_key().as_ref().to_vec();
        let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
        let jwks = json!({ "keys": [{
            "kty": "EC", "kid": "k1", "crv": "P-256", "alg": "ES256", "use": "sig",
            "x": b64(&point[1..33]), "y": b64(&point[33..]),
        }]});
        let app = axum::Router::new().route(
            "/jwks",
            axum::routing::get(move || {
                let jwks = jwks.clone();
                async move { axum::Json(jwks) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let port = listener.local_addr().expect("an address").port();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Issuer {
            kid: "k1",
            key: EncodingKey::from_ec_der(pair.to_pkcs8v1().expect("PKCS#8").as_ref()),
            jwks_url: format!("http://127.0.0.1:{port}/jwks"),
            public: point,
            _server: server,
        }
    }

    /// `claims` signed with this issuer's key, under its key id.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.into());
        encode(&header, claims, &self.key).expect("a signed token")
    }
}

/// Unix time now, for `exp`, `nbf` and `iat`.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64
}
