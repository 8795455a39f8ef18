//! Which gateway features a run measures.
//!
//! `current` is the gateway with no authentication and no policy (the local single-user setup).
//! `policy` adds what every governed deployment runs: callers authenticate with a JWT (ES256,
//! checked against a JWKS the benchmark serves itself, with issuer, audience, expiry and a
//! required scope), and a set of 100 Cedar policies decides every call and filters every list.
//! `full` is `policy` plus the audit trail as configured by default (every call's event written
//! to the audit journal before the call is answered, the SQLite store filled from it every
//! second, arguments recorded as a digest), Prometheus metrics on an admin
//! listener, and tracing (every request's spans exported over OTLP to a sink the benchmark runs):
//! the stack the "added p99 ≤ 1 ms" budget is written for. `apply` adds a
//! stack's settings to every generated gateway config and `client_headers` gives the credentials
//! a client then needs. Every measurement goes through these two functions, so nothing else has
//! to change.

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::sync::OnceLock;

const ISSUER: &str = "https://issuer.bench.toolgate";
const RESOURCE: &str = "http://toolgate.bench/mcp";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Stack {
    /// No authentication, no policy: routing, sessions, transports.
    Current,
    /// JWT authentication and 100 Cedar policies on every call and list.
    Policy,
    /// `policy` plus the audit trail (SQLite), metrics and tracing.
    Full,
}

/// The stack cannot be measured yet; the message says what it waits for.
#[derive(Debug)]
pub struct NotAvailable(pub String);

impl std::fmt::Display for NotAvailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NotAvailable {}

impl Stack {
    pub fn name(self) -> &'static str {
        match self {
            Stack::Current => "current",
            Stack::Policy => "policy",
            Stack::Full => "full",
        }
    }

    /// Fails at once, before anything starts, if this stack cannot be measured.
    pub fn check(self) -> Result<(), NotAvailable> {
        self.apply(&mut json!({}))
    }

    /// Add this stack's settings to a generated gateway config.
    pub fn apply(self, config: &mut Value) -> Result<(), NotAvailable> {
        match self {
            // Without the trail: these stacks measure routing, and routing plus
            // authentication and policy; `full` adds the trail.
            Stack::Current => {
                config["audit"] = json!({ "sinks": [] });
                Ok(())
            }
            Stack::Policy => {
                config["audit"] = json!({ "sinks": [] });
                let kit = kit()?;
                config["auth"] = json!({
                    "resource": RESOURCE,
                    "jwt": [{
                        "issuer": ISSUER,
                        "jwks_url": kit.jwks_url,
                        "required_scopes": ["mcp"],
                    }],
                });
                config["policy"] = json!({ "path": kit.policies });
                Ok(())
            }
            Stack::Full => {
                Stack::Policy.apply(config)?;
                // The default trail: every call's event in the journal before the call is
                // answered, and in the SQLite store beside the generated config within a second.
                config["audit"] = json!({ "sinks": ["store"] });
                // Metrics are recorded only where an admin listener serves them.
                config["admin"] = json!({ "listen": "127.0.0.1:0" });
                // Every request traced and exported, to a collector that takes and drops.
                config["telemetry"] = json!({ "otlp_endpoint": collector()?, "sample_ratio": 1.0 });
                Ok(())
            }
        }
    }

    /// Headers every benchmark client sends.
    pub fn client_headers(self) -> Result<Vec<(&'static str, String)>, NotAvailable> {
        match self {
            Stack::Current => Ok(Vec::new()),
            Stack::Policy => Ok(vec![("authorization", format!("Bearer {}", kit()?.token))]),
            Stack::Full => Stack::Policy.client_headers(),
        }
    }
}

/// The signing key's JWKS endpoint, a token for the benchmark's principal, and the policies.
struct Kit {
    jwks_url: String,
    token: String,
    policies: PathBuf,
    _dir: tempfile::TempDir,
}

fn kit() -> Result<&'static Kit, NotAvailable> {
    static KIT: OnceLock<Result<Kit, String>> = OnceLock::new();
    KIT.get_or_init(|| make_kit().map_err(|e| format!("cannot set up the policy stack: {e:#}")))
        .as_ref()
        .map_err(|e| NotAvailable(e.clone()))
}

fn make_kit() -> anyhow::Result<Kit> {
    let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
        .map_err(|_| anyhow::anyhow!("cannot generate a P-256 key"))?;
    let point = pair.public_key().as_ref();
    let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
    let jwks = json!({ "keys": [{
        "kty": "EC", "kid": "bench", "crv": "P-256", "alg": "ES256", "use": "sig",
        "x": b64(&point[1..33]), "y": b64(&point[33..]),
    }]});
    let jwks_url = serve_forever(jwks.to_string())?;
    let pkcs8 = pair
        .to_pkcs8v1()
        .map_err(|_| anyhow::anyhow!("cannot export the key"))?;
    let key = jsonwebtoken::EncodingKey::from_ec_der(pkcs8.as_ref());
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some("bench".into());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let claims = json!({
        "iss": ISSUER, "aud": RESOURCE, "sub": "bench-user", "azp": "toolgate-bench",
        "groups": ["bench"], "scope": "mcp", "iat": now, "exp": now + 86_400,
    });
    let token = jsonwebtoken::encode(&header, &claims, &key)?;
    let dir = tempfile::tempdir()?;
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies)?;
    std::fs::write(
        policies.join("args.cedarschema"),
        "namespace Toolgate {\n  type Args = { \"text\"?: String, \"n\"?: Long };\n  type Attrs = {};\n}\n",
    )?;
    std::fs::write(policies.join("bench.cedar"), policy_set(100))?;
    Ok(Kit {
        jwks_url,
        token,
        policies,
        _dir: dir,
    })
}

/// `count` policies shaped like a real deployment's: a tenth of them global (they meet every
/// request: the benchmark's own permit, an argument rule, suspended groups), the rest about
/// other teams' servers, so slicing keeps them off this workload's calls.
fn policy_set(count: usize) -> String {
    let mut text = String::from(
        "@id(\"bench-uses-everything\")\n\
         permit (principal in Toolgate::Group::\"bench\", action, resource);\n\n\
         @id(\"no-marker\")\n\
         forbid (principal, action == Toolgate::Action::\"call_tool\", resource)\n\
         when { context.args has text && context.args.text == \"forbidden-marker\" };\n\n",
    );
    let global = count / 10;
    for i in 2..global {
        text.push_str(&format!(
            "@id(\"suspended-{i}\")\nforbid (principal in Toolgate::Group::\"suspended-{i}\", action, resource);\n\n"
        ));
    }
    for i in global.max(2)..count {
        text.push_str(&format!(
            "@id(\"team-{i}\")\n\
             permit (principal in Toolgate::Group::\"team-{i}\", action == Toolgate::Action::\"call_tool\", resource in Toolgate::Server::\"svc-{i}\")\n\
             when {{ context.args has n && context.args.n < {} }};\n\n",
            i * 10
        ));
    }
    text
}

/// Serve `body` as JSON to every HTTP request on a loopback port, from a thread, for the life
/// of the process (the gateway fetches the JWKS at start and on unknown key ids only).
/// An OTLP/HTTP endpoint that reads every export whole and answers it with an empty success,
/// as a collector would; started once.
fn collector() -> Result<&'static str, NotAvailable> {
    static URL: OnceLock<Result<String, String>> = OnceLock::new();
    URL.get_or_init(|| serve_collector().map_err(|e| format!("cannot start the OTLP sink: {e:#}")))
        .as_deref()
        .map_err(|e| NotAvailable(e.to_owned()))
}

fn serve_collector() -> anyhow::Result<String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let url = format!("http://{}", listener.local_addr()?);
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || drain_exports(conn));
        }
    });
    Ok(url)
}

/// Answer each request on a keep-alive connection once its body has been read in full.
fn drain_exports(conn: std::net::TcpStream) {
    use std::io::BufRead as _;
    let Ok(mut writer) = conn.try_clone() else {
        return;
    };
    let mut reader = std::io::BufReader::new(conn);
    loop {
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let ok =
            "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
        if writer.write_all(ok.as_bytes()).is_err() {
            return;
        }
    }
}

fn serve_forever(body: String) -> anyhow::Result<String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let url = format!("http://{}/jwks", listener.local_addr()?);
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_set_has_the_size_it_claims() {
        let text = policy_set(100);
        assert_eq!(text.matches("@id(").count(), 100);
        assert_eq!(text.matches("when {").count(), 1 + (100 - 10));
    }
}
