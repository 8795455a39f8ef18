//! HTTPS and client certificates, through the real `toolgate` binary and real TLS: a CA, server
//! and client certificates issued with rcgen into a temp dir, and reqwest clients presenting
//! them. Proves that MCP works over HTTPS (HTTP/2 by ALPN), that plain HTTP gets nowhere, that
//! `client_auth: required` refuses clients without a good certificate at the handshake, that a
//! certificate names the principal (sessions are bound to it), that API keys still work beside
//! optional certificates, and that replaced certificate files are served without a restart
//! while a broken replacement is not.

mod support;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber,
};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{Client, Gateway, Options, first_text, run_toolgate, stdio_server, within};
use x509_parser::prelude::FromDer as _;

const TEST_TIMEOUT: Duration = Duration::from_secs(90);

/// A certificate and its key, as PEM.
#[derive(Clone)]
struct Leaf {
    cert: String,
    key: String,
}

/// A CA that issues certificates.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).unwrap();
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    fn issue(&self, params: CertificateParams) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    /// A server certificate for the loopback names, with this serial.
    fn server(&self, serial: u64) -> Leaf {
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
        params.serial_number = Some(SerialNumber::from(serial));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(params)
    }

    /// A client certificate with this common name (and e-mail, if given).
    fn client(&self, cn: &str, email: Option<&str>) -> Leaf {
        self.issue(client_params(cn, email))
    }
}

fn client_params(cn: &str, email: Option<&str>) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, cn);
    if let Some(e) = email {
        params.subject_alt_names = vec![SanType::Rfc822Name(e.try_into().unwrap())];
    }
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params
}

/// Everything a test needs: the gateway's CA and server certificate written to a temp dir,
/// and client certificates from it and from a foreign CA.
struct Pki {
    dir: tempfile::TempDir,
    ca: Ca,
    alice: Leaf,
    bob: Leaf,
    /// From the right CA, without an e-mail address.
    nomail: Leaf,
    /// alice's name, from another CA.
    foreign: Leaf,
    /// alice, expired last year.
    expired: Leaf,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new("toolgate test CA");
        let other = Ca::new("someone else's CA");
        let mut old = client_params("alice", Some("alice@example.test"));
        old.not_before = rcgen::date_time_ymd(2020, 1, 1);
        old.not_after = rcgen::date_time_ymd(2021, 1, 1);
        let pki = Pki {
            alice: ca.client("alice", Some("alice@example.test")),
            bob: ca.client("bob", Some("bob@example.test")),
            nomail: ca.client("carol", None),
            foreign: other.client("alice", Some("alice@example.test")),
            expired: ca.issue(old),
            ca,
            dir,
        };
        let server = pki.ca.server(1001);
        pki.install(&server);
        write_atomically(&pki.path("ca.pem"), &pki.ca.pem);
        pki
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Make `leaf` the served certificate (key first: until the certificate follows, the new
    /// key does not fit the old certificate, and the old pair keeps serving).
    fn install(&self, leaf: &Leaf) {
        write_atomically(&self.path("server.key"), &leaf.key);
        write_atomically(&self.path("server.pem"), &leaf.cert);
    }

    /// The `tls` section: the server pair, plus the client CA if `client_auth` is given.
    fn tls(&self, client_auth: Option<&str>) -> Value {
        let mut tls = json!({
            "cert": self.path("server.pem"),
            "key": self.path("server.key"),
            "reload": "200ms",
        });
        if let Some(mode) = client_auth {
            tls["client_ca"] = json!(self.path("ca.pem"));
            tls["client_auth"] = json!(mode);
        }
        tls
    }

    /// A reqwest client trusting only the test CA, presenting `identity` if given.
    fn client(&self, identity: Option<&Leaf>) -> reqwest::Client {
        self.setup(identity)(reqwest::Client::builder().connect_timeout(Duration::from_secs(5)))
            .build()
            .unwrap()
    }

    /// The same, as a test client's HTTP setup.
    fn setup(&self, identity: Option<&Leaf>) -> support::client::HttpSetup {
        let ca = reqwest::Certificate::from_pem(self.ca.pem.as_bytes()).unwrap();
        let identity = identity.map(|l| {
            reqwest::Identity::from_pem(format!("{}{}", l.cert, l.key).as_bytes()).unwrap()
        });
        Arc::new(move |b: reqwest::ClientBuilder| {
            let b = b.tls_certs_only([ca.clone()]).tls_info(true);
            match &identity {
                Some(id) => b.identity(id.clone()),
                None => b,
            }
        })
    }

    fn options(&self, identity: Option<&Leaf>) -> Options {
        Options {
            http: Some(self.setup(identity)),
            ..Options::default()
        }
    }
}

/// Replace a file in one step, as certificate tooling does, so the gateway never reads half.
fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn call_body(text: &str) -> String {
    json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
        "params": {"name": "fx__echo", "arguments": {"text": text}}})
    .to_string()
}

/// A POST to `/mcp` with `client`: the status and body, or the transport error (a refused
/// handshake) as text.
async fn post(
    client: &reqwest::Client,
    base: &str,
    session: Option<&str>,
    headers: &[(&str, &str)],
    body: String,
) -> Result<(u16, String), String> {
    let mut req = client
        .post(format!("{base}/mcp"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(body);
    if let Some(s) = session {
        req = req.header("mcp-session-id", s);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = within(Duration::from_secs(10), "an HTTPS request", req.send())
        .await
        .map_err(|e| format!("{e:?}"))?;
    let status = resp.status().as_u16();
    Ok((status, resp.text().await.unwrap_or_default()))
}

/// The certificate the gateway serves to a new connection.
async fn served_cert(pki: &Pki, base: &str) -> Vec<u8> {
    // A new client is a new connection: nothing is pooled or resumed.
    let resp = within(
        Duration::from_secs(10),
        "a health check",
        pki.client(None).get(format!("{base}/healthz")).send(),
    )
    .await
    .expect("the gateway answers over HTTPS");
    let info = resp
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .expect("TLS info was asked for");
    info.peer_certificate()
        .expect("the server presented a certificate")
        .to_vec()
}

fn serial(der: &[u8]) -> Vec<u8> {
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der).unwrap();
    cert.raw_serial().to_vec()
}

fn der(pem: &str) -> Vec<u8> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

#[tokio::test]
async fn mcp_is_served_over_https_only() {
    within(TEST_TIMEOUT, "MCP over HTTPS", async {
        let pki = Pki::new();
        let gw = Gateway::serve(json!({
            "tls": pki.tls(None),
            "servers": { "fx": stdio_server(&[]) },
        }))
        .await;
        let base = gw.base.clone();
        assert!(base.starts_with("https://127.0.0.1:"), "{base}");

        // initialize, tools/call through the stdio fixture, over HTTP/2.
        let c = Client::http(&base, pki.options(None)).await;
        let result = c.call_tool("fx__echo", json!({"text": "over tls"})).await;
        assert_eq!(first_text(&result), "over tls");
        let resp = pki
            .client(None)
            .get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.version(), reqwest::Version::HTTP_2, "ALPN picks h2");
        // HTTP/1.1 clients are served too.
        let h1 = pki.setup(None)(reqwest::Client::builder().http1_only())
            .build()
            .unwrap();
        let resp = h1.get(format!("{base}/healthz")).send().await.unwrap();
        assert_eq!(resp.version(), reqwest::Version::HTTP_11);
        assert_eq!(resp.text().await.unwrap(), "ok");

        // The default resource names the https URL.
        let meta = pki
            .client(None)
            .get(format!("{base}/.well-known/oauth-protected-resource"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let meta: Value = serde_json::from_str(&meta).unwrap();
        assert_eq!(meta["resource"], format!("{base}/mcp"));

        // Plain HTTP to the TLS port gets no answer; a failed handshake harms nobody else.
        let plain = base.replace("https://", "http://");
        let r = post(
            &reqwest::Client::new(),
            &plain,
            None,
            &[],
            support::initialize_body(),
        )
        .await;
        assert!(r.is_err(), "plain HTTP was answered: {r:?}");
        let result = c.call_tool("fx__echo", json!({"text": "still"})).await;
        assert_eq!(first_text(&result), "still");
        let log = gw.stderr();
        assert!(log.contains("TLS handshake failed"), "{log}");
    })
    .await;
}

#[tokio::test]
async fn a_required_client_certificate_names_the_principal() {
    within(TEST_TIMEOUT, "required client certificates", async {
        let pki = Pki::new();
        let gw = Gateway::serve(json!({
            "tls": pki.tls(Some("required")),
            "policy": support::allow_everyone(),
            "auth": { "mtls": { "user": "san_email" } },
            "servers": { "fx": stdio_server(&[]) },
        }))
        .await;
        let base = gw.base.clone();

        // No certificate, a foreign CA's, an expired one: refused in the handshake.
        for (what, identity) in [
            ("no certificate", None),
            ("a foreign CA", Some(&pki.foreign)),
            ("an expired certificate", Some(&pki.expired)),
        ] {
            let r = post(
                &pki.client(identity),
                &base,
                None,
                &[],
                support::initialize_body(),
            )
            .await;
            assert!(r.is_err(), "{what} was served: {r:?}");
        }

        // alice's certificate is alice.
        let alice = Client::http(&base, pki.options(Some(&pki.alice))).await;
        let result = alice.call_tool("fx__echo", json!({"text": "mine"})).await;
        assert_eq!(first_text(&result), "mine");
        let session = alice.session_id().expect("a session id");
        let as_alice = pki.client(Some(&pki.alice));
        let (status, body) = post(&as_alice, &base, Some(&session), &[], call_body("again"))
            .await
            .unwrap();
        assert_eq!(status, 200, "{body}");
        // bob's certificate is someone else: alice's session does not exist for him.
        let as_bob = pki.client(Some(&pki.bob));
        let (status, body) = post(&as_bob, &base, Some(&session), &[], call_body("hijack"))
            .await
            .unwrap();
        assert_eq!(status, 404, "bob used alice's session: {body}");
        // A certificate from the right CA without the field that names the user.
        let (status, body) = post(
            &pki.client(Some(&pki.nomail)),
            &base,
            None,
            &[],
            support::initialize_body(),
        )
        .await
        .unwrap();
        assert_eq!(status, 401, "{body}");
        assert!(body.contains("invalid_client_certificate"), "{body}");
        assert!(body.contains("e-mail"), "{body}");

        // The refused handshakes were logged for the operator, at debug.
        let log = gw.stderr();
        assert!(log.contains("TLS handshake failed"), "{log}");
    })
    .await;
}

#[tokio::test]
async fn optional_client_certificates_leave_room_for_api_keys() {
    within(TEST_TIMEOUT, "optional client certificates", async {
        let pki = Pki::new();
        let gw = Gateway::serve(json!({
            "tls": pki.tls(Some("optional")),
            "policy": support::allow_everyone(),
            "auth": { "api_keys": {}, "mtls": {} },
            "servers": { "fx": stdio_server(&[]) },
        }))
        .await;
        let base = gw.base.clone();
        let cfg = gw.config.path.to_str().unwrap();
        let (code, out, err) = run_toolgate(
            &["keys", "create", "--config", cfg, "--principal", "bob"],
            Duration::from_secs(30),
        )
        .await;
        assert_eq!(code, Some(0), "{err}");
        let bob_key = out.trim().to_owned();

        // Neither a certificate nor a key: the connection is fine, the request is not.
        let (status, _) = post(
            &pki.client(None),
            &base,
            None,
            &[],
            support::initialize_body(),
        )
        .await
        .unwrap();
        assert_eq!(status, 401);
        // A key without a certificate works.
        let by_key = Client::http(
            &base,
            Options {
                bearer: Some(bob_key.clone()),
                ..pki.options(None)
            },
        )
        .await;
        let result = by_key.call_tool("fx__echo", json!({"text": "key"})).await;
        assert_eq!(first_text(&result), "key");
        // A certificate without a key works (the subject CN is the user).
        let by_cert = Client::http(&base, pki.options(Some(&pki.alice))).await;
        let result = by_cert.call_tool("fx__echo", json!({"text": "cert"})).await;
        assert_eq!(first_text(&result), "cert");
        // Optional is not unverified: a foreign certificate still fails the handshake.
        let r = post(
            &pki.client(Some(&pki.foreign)),
            &base,
            None,
            &[],
            support::initialize_body(),
        )
        .await;
        assert!(r.is_err(), "a foreign certificate was served: {r:?}");
        // An explicit key wins over the connection's certificate: alice's connection sending
        // bob's key is bob, who cannot use alice's session but can use his own.
        let auth = format!("Bearer {bob_key}");
        let alice_with_bobs_key = pki.client(Some(&pki.alice));
        let (status, _) = post(
            &alice_with_bobs_key,
            &base,
            by_cert.session_id().as_deref(),
            &[("authorization", &auth)],
            call_body("whose"),
        )
        .await
        .unwrap();
        assert_eq!(status, 404, "the certificate won over the key");
        let (status, body) = post(
            &alice_with_bobs_key,
            &base,
            by_key.session_id().as_deref(),
            &[("authorization", &auth)],
            call_body("whose"),
        )
        .await
        .unwrap();
        assert_eq!(status, 200, "{body}");
    })
    .await;
}

#[tokio::test]
async fn replaced_certificates_are_served_without_a_restart() {
    within(TEST_TIMEOUT, "certificate reload", async {
        let pki = Pki::new();
        let gw = Gateway::serve(json!({
            "tls": pki.tls(None),
            "servers": { "fx": stdio_server(&[]) },
        }))
        .await;
        let base = gw.base.clone();
        let first = served_cert(&pki, &base).await;
        assert_eq!(serial(&first), [0x03, 0xe9], "serial 1001");
        let c = Client::http(&base, pki.options(None)).await;

        // A newly issued pair (new key, new serial) replaces the files.
        let second = pki.ca.server(1002);
        pki.install(&second);
        let deadline = Instant::now() + Duration::from_secs(20);
        let served = loop {
            let served = served_cert(&pki, &base).await;
            if served != first {
                break served;
            }
            assert!(
                Instant::now() < deadline,
                "the new certificate was never served"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(served, der(&second.cert));
        assert_eq!(serial(&served), [0x03, 0xea], "serial 1002");
        // The connection opened before the reload is unaffected.
        let result = c.call_tool("fx__echo", json!({"text": "before"})).await;
        assert_eq!(first_text(&result), "before");

        // A broken replacement is reported and the second pair keeps serving.
        let warning = "cannot be used; the previous certificate keeps serving";
        let warned = gw.stderr().matches(warning).count();
        write_atomically(
            &pki.path("server.pem"),
            "-----BEGIN CERTIFICATE-----\ngarbage\n",
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while gw.stderr().matches(warning).count() == warned {
            assert!(
                Instant::now() < deadline,
                "the broken file was never looked at"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(served_cert(&pki, &base).await, der(&second.cert));
        let fresh = Client::http(&base, pki.options(None)).await;
        let result = fresh.call_tool("fx__echo", json!({"text": "after"})).await;
        assert_eq!(first_text(&result), "after");
    })
    .await;
}

#[tokio::test]
async fn client_certificates_alone_allow_a_network_address() {
    // Only mTLS configured: no caller is anonymous, so a non-loopback address is allowed.
    let pki = Pki::new();
    let config = json!({
        "tls": pki.tls(Some("required")),
        "policy": support::allow_everyone(),
        "auth": { "mtls": {} },
    });
    let path = pki.path("toolgate.json");
    std::fs::write(&path, config.to_string()).unwrap();
    let mut child = tokio::process::Command::new(support::toolgate_bin())
        .args(["serve", "--config"])
        .arg(&path)
        .args(["--listen", "0.0.0.0:0"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("toolgate starts");
    let exited = tokio::time::timeout(Duration::from_secs(3), child.wait()).await;
    assert!(
        exited.is_err(),
        "refused to serve with only client certificates: {exited:?}"
    );
}
