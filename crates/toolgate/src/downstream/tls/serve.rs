//! The HTTPS accept loop: TCP → TLS handshake → HTTP/1.1 or HTTP/2 (with
//! upgrades) → the front door, which knows the connection's peer and verified
//! client certificate. Each connection lives in its own task, so a failed or
//! stalled handshake only ever costs that connection.

use super::Tls;
use crate::auth::ClientCert;
use crate::downstream::http::Front;
use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_service::Service as _;

/// How long a client may take to finish its handshake: a peer that opens a
/// connection and sends nothing must not hold a task forever.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serve `front` over TLS on `listener` until `stop` is cancelled, then wait for
/// open connections to finish (the caller bounds that wait). The certificate
/// files are watched for changes meanwhile.
pub async fn serve(
    front: Front,
    listener: TcpListener,
    tls: Arc<Tls>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    tokio::spawn(tls.clone().watch(stop.clone()));
    let http = auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.cancelled() => break,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of
                // spinning; the listener itself is still good.
                tracing::warn!(error = %e, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = tls.acceptor();
        let (front, http, watcher) = (front.clone(), http.clone(), graceful.watcher());
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            // rustls has verified the chain against the client CA; what the
            // certificate names is for the authenticator to read.
            let cert = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|c| ClientCert::new(c.clone().into_owned()));
            let front = front.connection(peer, cert);
            let service = hyper::service::service_fn(move |req: http::Request<Incoming>| {
                front.clone().call(req.map(Body::new))
            });
            let conn = http.serve_connection_with_upgrades(TokioIo::new(stream), service);
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(%peer, error = %e, "HTTPS connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
