//! HTTPS on the MCP listener: the server certificate, the client CA, and their
//! reload without a restart. `certs.rs` reads PEM files into rustls types;
//! `serve.rs` is the accept loop that terminates TLS and hands each connection,
//! with its verified client certificate, to the HTTP router.
//!
//! The served certificate sits in an `ArcSwap` read by every handshake; the
//! client CA lives in the rustls `ServerConfig`, which is rebuilt and swapped
//! when the CA file changes (a new config also drops TLS session tickets issued
//! under the old CA, so a resumed session cannot skip the new CA's checks).

mod certs;
mod serve;

pub use certs::TlsError;
pub use serve::serve;

use crate::config::{ClientAuth, Config, TlsConfig};
use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use sha2::{Digest as _, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// Protocols offered by ALPN, preferred first.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The TLS side of the listener: what every new connection is handshaken with.
pub struct Tls {
    files: Files,
    provider: Arc<CryptoProvider>,
    certs: Arc<CertResolver>,
    server: ArcSwap<ServerConfig>,
}

/// Where the PEM files are, resolved against the config file's directory.
#[derive(Debug, Clone)]
struct Files {
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
    client_auth: ClientAuth,
    reload: Duration,
}

/// Hands every handshake the certificate currently served.
#[derive(Debug)]
struct CertResolver(ArcSwap<CertifiedKey>);

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

/// What the files held when they were last looked at: a SHA-256 of each file's
/// bytes, `None` when it could not be read. A change of any of them (and only a
/// change) makes the watcher try the files again, so a broken replacement is
/// reported once, not at every check.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Seen {
    pair: (Option<[u8; 32]>, Option<[u8; 32]>),
    client_ca: Option<[u8; 32]>,
}

impl Tls {
    /// The TLS setup `config.tls` describes, with its files read now; `None`
    /// without `tls`. Any unusable file is an error: `serve` must not start
    /// with a certificate it cannot present.
    pub fn from_config(config: &Config) -> Result<Option<Arc<Tls>>, TlsError> {
        let Some(tls) = &config.tls else {
            return Ok(None);
        };
        let files = Files::new(config, tls);
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let (cert, key) = (read(&files.cert)?, read(&files.key)?);
        let served = certs::certified_key(&files, &cert, &key, &provider)?;
        let certs = Arc::new(CertResolver(ArcSwap::from_pointee(served)));
        let ca = files.client_ca.as_deref().map(read).transpose()?;
        let server = server_config(&files, &provider, &certs, ca.as_deref())?;
        Ok(Some(Arc::new(Tls {
            files,
            provider,
            certs,
            server: ArcSwap::from_pointee(server),
        })))
    }

    /// Whether clients are asked for certificates at all.
    pub fn asks_for_client_certs(&self) -> bool {
        self.files.client_ca.is_some()
    }

    /// An acceptor with the current certificate and client CA.
    fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.server.load_full())
    }

    /// Check the files every `reload` until `stop`: see [`Tls::reload`].
    async fn watch(self: Arc<Self>, stop: CancellationToken) {
        let mut seen = self.seen();
        let mut ticks = tokio::time::interval(self.files.reload);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = stop.cancelled() => return,
            }
            // File reads are small but blocking; keep them off the reactor.
            let this = self.clone();
            let before = seen.clone();
            match tokio::task::spawn_blocking(move || this.reload(before)).await {
                Ok(now) => seen = now,
                Err(e) => tracing::warn!(error = %e, "the TLS reload check failed"),
            }
        }
    }

    /// What the files hold now.
    fn seen(&self) -> Seen {
        let digest = |p: &Path| read(p).ok().map(|b| Sha256::digest(&b).into());
        Seen {
            pair: (digest(&self.files.cert), digest(&self.files.key)),
            client_ca: self.files.client_ca.as_deref().and_then(digest),
        }
    }

    /// Re-read the files; whatever changed since `before` and is usable
    /// replaces what is served, whatever changed and is broken is logged while
    /// the old one keeps serving. Returns what the files held.
    fn reload(&self, before: Seen) -> Seen {
        let digest = |r: &Result<Vec<u8>, TlsError>| {
            r.as_ref().ok().map(|b| <[u8; 32]>::from(Sha256::digest(b)))
        };
        let (cert, key) = (read(&self.files.cert), read(&self.files.key));
        let ca = self.files.client_ca.as_deref().map(read);
        let now = Seen {
            pair: (digest(&cert), digest(&key)),
            client_ca: ca.as_ref().and_then(digest),
        };
        if now.pair != before.pair {
            let pair = cert.and_then(|c| key.map(|k| (c, k)));
            match pair.and_then(|(c, k)| certs::certified_key(&self.files, &c, &k, &self.provider))
            {
                Ok(served) => {
                    self.certs.0.store(Arc::new(served));
                    tracing::info!(cert = %self.files.cert.display(), "reloaded the TLS certificate");
                }
                Err(e) => tracing::warn!(
                    error = %e,
                    "the TLS certificate files changed but cannot be used; the previous certificate keeps serving"
                ),
            }
        }
        if now.client_ca != before.client_ca
            && let Some(ca) = ca
        {
            let rebuilt = ca
                .and_then(|ca| server_config(&self.files, &self.provider, &self.certs, Some(&ca)));
            match rebuilt {
                Ok(server) => {
                    self.server.store(Arc::new(server));
                    tracing::info!("reloaded the TLS client CA");
                }
                Err(e) => tracing::warn!(
                    error = %e,
                    "the TLS client CA file changed but cannot be used; the previous CA keeps verifying clients"
                ),
            }
        }
        now
    }
}

impl Files {
    fn new(config: &Config, tls: &TlsConfig) -> Files {
        Files {
            cert: config.path_from_file(&tls.cert),
            key: config.path_from_file(&tls.key),
            client_ca: tls.client_ca.as_deref().map(|p| config.path_from_file(p)),
            client_auth: tls.client_auth.unwrap_or_default(),
            reload: tls.reload.0,
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// A rustls server config around `certs`, verifying client certificates
/// against `client_ca` (PEM bytes) when given.
fn server_config(
    files: &Files,
    provider: &Arc<CryptoProvider>,
    certs: &Arc<CertResolver>,
    client_ca: Option<&[u8]>,
) -> Result<ServerConfig, TlsError> {
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Setup)?;
    let builder = match (client_ca, &files.client_ca) {
        (Some(pem), Some(path)) => {
            let roots = certs::client_roots(path, pem)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone());
            let verifier = match files.client_auth {
                ClientAuth::Optional => verifier.allow_unauthenticated(),
                ClientAuth::Required => verifier,
            };
            let verifier = verifier.build().map_err(|e| TlsError::ClientCa {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    let mut server = builder.with_cert_resolver(certs.clone());
    server.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(server)
}

#[cfg(test)]
mod tests;
