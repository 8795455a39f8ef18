//! PEM files into rustls types: the served certificate chain with its key, and
//! the roots client certificates must chain to. Every error names the file and
//! says what is wrong with it.

use super::Files;
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use x509_parser::prelude::FromDer as _;

/// A TLS file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {reason}", path.display())]
    Certificate { path: PathBuf, reason: String },
    #[error("{}: {reason}", path.display())]
    Key { path: PathBuf, reason: String },
    #[error(
        "the key in {} does not belong to the certificate in {}: replace both files together",
        key.display(),
        cert.display()
    )]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("client CA {}: {reason}", path.display())]
    ClientCa { path: PathBuf, reason: String },
    #[error("cannot set up TLS: {0}")]
    Setup(rustls::Error),
}

/// The certificate chain in `cert` (PEM bytes of `files.cert`, its own
/// certificate first) with the private key in `key`, checked to belong together.
pub(super) fn certified_key(
    files: &Files,
    cert: &[u8],
    key: &[u8],
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let chain = certificates(&files.cert, cert, |path, reason| TlsError::Certificate {
        path,
        reason,
    })?;
    let key_der = PrivateKeyDer::from_pem_slice(key).map_err(|e| TlsError::Key {
        path: files.key.clone(),
        reason: format!("no usable PEM private key (PKCS#8, PKCS#1 or SEC1): {e}"),
    })?;
    let signing = provider
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| TlsError::Key {
            path: files.key.clone(),
            reason: format!("the private key is not usable: {e}"),
        })?;
    let served = CertifiedKey::new(chain, signing);
    match served.keys_match() {
        Ok(()) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            return Err(TlsError::KeyMismatch {
                cert: files.cert.clone(),
                key: files.key.clone(),
            });
        }
        // The key type cannot tell its public half: nothing to compare.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(e) => {
            return Err(TlsError::Certificate {
                path: files.cert.clone(),
                reason: format!("the certificate cannot be used: {e}"),
            });
        }
    }
    warn_if_expired(&files.cert, &served);
    Ok(served)
}

/// The trust anchors client certificates must chain to.
pub(super) fn client_roots(path: &Path, pem: &[u8]) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    let certs = certificates(path, pem, |path, reason| TlsError::ClientCa {
        path,
        reason,
    })?;
    for cert in certs {
        roots.add(cert).map_err(|e| TlsError::ClientCa {
            path: path.to_path_buf(),
            reason: format!("a certificate is not a usable CA: {e}"),
        })?;
    }
    Ok(Arc::new(roots))
}

/// Every `CERTIFICATE` block of a PEM file; at least one.
fn certificates(
    path: &Path,
    pem: &[u8],
    error: impl Fn(PathBuf, String) -> TlsError,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error(path.to_path_buf(), format!("not a valid PEM file: {e}")))?;
    if certs.is_empty() {
        return Err(error(
            path.to_path_buf(),
            "holds no PEM certificate (`-----BEGIN CERTIFICATE-----`)".into(),
        ));
    }
    Ok(certs)
}

/// Serving an expired certificate is allowed (clients will refuse it), but the
/// operator should hear about it at once rather than from the clients.
fn warn_if_expired(path: &Path, served: &CertifiedKey) {
    let Some(leaf) = served.cert.first() else {
        return;
    };
    if let Ok((_, x509)) = x509_parser::certificate::X509Certificate::from_der(leaf) {
        let validity = x509.validity();
        if !validity.is_valid() {
            tracing::warn!(
                cert = %path.display(),
                not_before = %validity.not_before,
                not_after = %validity.not_after,
                "the TLS certificate is not valid now; clients will refuse it"
            );
        }
    }
}
