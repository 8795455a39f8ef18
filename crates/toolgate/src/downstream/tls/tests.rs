use super::*;
use rcgen::{CertificateParams, KeyPair};

/// A self-signed certificate for `name` and its key, as PEM.
fn pair(name: &str) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec![name.to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    (cert.pem(), key.serialize_pem())
}

struct Dir {
    dir: tempfile::TempDir,
}

impl Dir {
    fn new() -> Dir {
        Dir {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.dir.path().join(name), text).unwrap();
    }

    /// A config file in this directory naming `tls` (paths relative to it).
    fn config(&self, tls: &str) -> Config {
        let path = self.dir.path().join("toolgate.yaml");
        std::fs::write(&path, format!("tls: {tls}\n")).unwrap();
        crate::config::load_file(&path).unwrap()
    }
}

fn served(tls: &Tls) -> Vec<u8> {
    tls.certs.0.load().cert[0].to_vec()
}

fn der(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;

#[test]
fn files_are_read_relative_to_the_config() {
    let d = Dir::new();
    let (cert, key) = pair("localhost");
    d.write("server.pem", &cert);
    d.write("server.key", &key);
    let tls = Tls::from_config(&d.config("{cert: server.pem, key: server.key}"))
        .unwrap()
        .unwrap();
    assert_eq!(served(&tls), der(&cert));
    assert!(!tls.asks_for_client_certs());
    assert_eq!(
        tls.server.load().alpn_protocols,
        [b"h2".to_vec(), b"http/1.1".to_vec()]
    );
}

#[test]
fn unusable_files_are_refused_at_start_with_their_path() {
    let d = Dir::new();
    let (cert, key) = pair("localhost");
    let (_, other_key) = pair("localhost");
    d.write("server.pem", &cert);
    d.write("server.key", &key);
    d.write("other.key", &other_key);
    d.write("garbage.pem", "not PEM at all\n");
    d.write(
        "ca.pem",
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    );
    let cases = [
        ("{cert: missing.pem, key: server.key}", "missing.pem"),
        ("{cert: garbage.pem, key: server.key}", "no PEM certificate"),
        (
            "{cert: server.pem, key: garbage.pem}",
            "no usable PEM private key",
        ),
        ("{cert: server.pem, key: other.key}", "does not belong"),
    ];
    for (tls, expected) in cases {
        let Err(e) = Tls::from_config(&d.config(tls)) else {
            panic!("{tls} was accepted");
        };
        assert!(e.to_string().contains(expected), "{tls}: {e}");
    }
    let path = d.dir.path().join("toolgate.yaml");
    std::fs::write(
        &path,
        "tls: {cert: server.pem, key: server.key, client_ca: ca.pem}\nauth: {mtls: {}}\n",
    )
    .unwrap();
    let Err(e) = Tls::from_config(&crate::config::load_file(&path).unwrap()) else {
        panic!("a broken client CA was accepted");
    };
    assert!(e.to_string().contains("ca.pem"), "{e}");
}

#[test]
fn a_changed_pair_is_served_and_a_broken_one_is_not() {
    let d = Dir::new();
    let (first, first_key) = pair("localhost");
    d.write("server.pem", &first);
    d.write("server.key", &first_key);
    let tls = Tls::from_config(&d.config("{cert: server.pem, key: server.key}"))
        .unwrap()
        .unwrap();
    let seen = tls.seen();
    // Nothing changed: nothing happens.
    assert_eq!(tls.reload(seen.clone()), seen);

    let (second, second_key) = pair("localhost");
    d.write("server.pem", &second);
    d.write("server.key", &second_key);
    let seen = tls.reload(seen);
    assert_eq!(served(&tls), der(&second));

    // Half a replacement (a new certificate, the old key) is not served; the
    // rest of it, once written, is.
    let (third, third_key) = pair("localhost");
    d.write("server.pem", &third);
    let seen = tls.reload(seen);
    assert_eq!(served(&tls), der(&second));
    d.write("server.key", &third_key);
    let seen = tls.reload(seen);
    assert_eq!(served(&tls), der(&third));

    // A vanished or garbled file keeps the served pair.
    std::fs::remove_file(d.dir.path().join("server.key")).unwrap();
    let seen = tls.reload(seen);
    assert_eq!(seen.pair.1, None);
    d.write("server.key", "garbage");
    tls.reload(seen);
    assert_eq!(served(&tls), der(&third));
}

#[test]
fn a_changed_client_ca_rebuilds_the_server_config() {
    let d = Dir::new();
    let (cert, key) = pair("localhost");
    let (ca, _) = pair("ca.test");
    d.write("server.pem", &cert);
    d.write("server.key", &key);
    d.write("ca.pem", &ca);
    let path = d.dir.path().join("toolgate.yaml");
    std::fs::write(
        &path,
        "tls: {cert: server.pem, key: server.key, client_ca: ca.pem, client_auth: required}\nauth: {mtls: {}}\n",
    )
    .unwrap();
    let tls = Tls::from_config(&crate::config::load_file(&path).unwrap())
        .unwrap()
        .unwrap();
    assert!(tls.asks_for_client_certs());
    let before = tls.server.load_full();
    let seen = tls.seen();
    d.write("ca.pem", "garbage");
    let seen = tls.reload(seen);
    assert!(
        Arc::ptr_eq(&before, &tls.server.load_full()),
        "a broken CA was taken"
    );
    let (other_ca, _) = pair("other-ca.test");
    d.write("ca.pem", &other_ca);
    tls.reload(seen);
    assert!(!Arc::ptr_eq(&before, &tls.server.load_full()));
    // The certificate resolver is shared: the served pair is unchanged.
    assert_eq!(served(&tls), der(&cert));
}
