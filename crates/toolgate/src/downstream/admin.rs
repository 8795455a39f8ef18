//! The admin listener (`admin.listen`): Prometheus `/metrics`, `/healthz`,
//! `/readyz`, and the admin API under `/admin/v1/` (the audit trail, read back;
//! the servers with their status, circuit and health).
//!
//! Plain HTTP on an address meant to stay inside the operator's network.
//! `/metrics` and the health routes need no credential, as scrapers and
//! probes expect; the admin API needs a principal in one of `admin.groups`,
//! authenticated the same way MCP callers are. A gateway without `auth` lets
//! its local user in on loopback only.

use crate::audit::cli::{QueryArgs, now_us};
use crate::audit::{Event, EventKind, query};
use crate::auth::{AuthError, AuthMethod, Authenticator, Principal};
use crate::config::Config;
use crate::gateway::Gateway;
use crate::metrics::Metrics;
use crate::store::Store;
use anyhow::Context as _;
use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Why the admin API refused a request. Each has a stable `error` code.
#[derive(Debug, thiserror::Error)]
enum AdminError {
    /// No credential, or one that is not valid (answered like the MCP
    /// listener answers it, challenge included).
    #[error(transparent)]
    Auth(AuthError),
    #[error("the admin API needs a principal in one of the groups: {0}")]
    NotAdmin(String),
    #[error("without `auth` the admin API serves the local user on a loopback admin listener only")]
    LoopbackOnly,
    #[error("{0}")]
    BadQuery(String),
    #[error("the audit store cannot be read right now; retry later")]
    Store,
}

impl AdminError {
    fn code(&self) -> &'static str {
        match self {
            AdminError::Auth(e) => e.code(),
            AdminError::NotAdmin(_) => "admin_group_required",
            AdminError::LoopbackOnly => "loopback_only",
            AdminError::BadQuery(_) => "invalid_query",
            AdminError::Store => "store_unavailable",
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            AdminError::Auth(e) => e.status(),
            AdminError::NotAdmin(_) | AdminError::LoopbackOnly => StatusCode::FORBIDDEN,
            AdminError::BadQuery(_) => StatusCode::BAD_REQUEST,
            AdminError::Store => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

fn error_response(auth: &Authenticator, e: &AdminError) -> Response {
    if let AdminError::Auth(e) = e {
        return super::http::auth_error(auth, e);
    }
    json_response(
        e.status(),
        serde_json::json!({ "error": e.code(), "error_description": e.to_string() }),
    )
}

fn json_response(status: StatusCode, body: serde_json::Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// The admin listener, bound and with its store open, before the gateway
/// serves anything: a taken port or an unreadable store stops `serve` at once.
pub struct Listener {
    listener: tokio::net::TcpListener,
    store: Store,
}

impl Listener {
    /// Bind `admin.listen` if the config has an `admin` section.
    pub async fn open(config: &Config) -> anyhow::Result<Option<Listener>> {
        let Some(admin) = &config.admin else {
            return Ok(None);
        };
        let listen = admin.listen;
        // The same rule as the MCP listener's: without credentials to check,
        // metrics and readiness (server names, reasons) would be open to the
        // network, and the admin API would serve nobody there anyway.
        if !listen.ip().is_loopback()
            && config.serves_anonymous()
            && !config.allow_unauthenticated_network
        {
            anyhow::bail!(
                "refusing to serve admin.listen on {listen}: callers without credentials are served (no `auth`, or `auth.anonymous`), so anyone on the network could read /metrics; listen on 127.0.0.1, configure `auth`, or set allow_unauthenticated_network: true if that is really meant"
            );
        }
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on admin.listen {listen}"))?;
        let store = Store::for_config(config)
            .await
            .context("cannot open the store the admin API reads the audit trail from")?;
        Ok(Some(Listener { listener, store }))
    }

    /// The address actually bound (port 0 picks one).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serve until `stop` is cancelled.
    pub async fn serve(
        self,
        gw: Arc<Gateway>,
        auth: Arc<Authenticator>,
        stop: CancellationToken,
    ) -> std::io::Result<()> {
        let metrics = crate::metrics::install();
        let addr = self.listener.local_addr()?;
        let groups = gw
            .config()
            .admin
            .as_ref()
            .map(|a| a.groups.clone())
            .unwrap_or_default();
        let state = AdminState {
            no_auth: gw.config().auth.is_none(),
            loopback: addr.ip().is_loopback(),
            groups: groups.into(),
            gw,
            auth,
            metrics,
            store: self.store,
        };
        let upkeep = stop.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Metrics::UPKEEP_EVERY);
            loop {
                tokio::select! {
                    _ = tick.tick() => metrics.upkeep(),
                    _ = upkeep.cancelled() => return,
                }
            }
        });
        axum::serve(
            self.listener,
            router(state).into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
    }
}

#[derive(Clone)]
struct AdminState {
    gw: Arc<Gateway>,
    auth: Arc<Authenticator>,
    metrics: &'static Metrics,
    store: Store,
    groups: Arc<[String]>,
    /// The listener is on loopback: `Host` must name loopback too.
    loopback: bool,
    /// No `auth` section: every caller is the anonymous local user.
    no_auth: bool,
}

fn router(state: AdminState) -> Router {
    let api = Router::new()
        .route("/admin/v1/audit", get(audit_events))
        .route("/admin/v1/servers", get(servers))
        .route("/admin/v1/reload", post(reload))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_admin,
        ));
    Router::new()
        .merge(api)
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard_host,
        ))
        .with_state(state)
}

async fn metrics(State(s): State<AdminState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        s.metrics.render(&s.gw),
    )
        .into_response()
}

async fn readyz(State(s): State<AdminState>) -> Response {
    super::http::readiness(&s.gw, &s.auth).await
}

/// DNS rebinding: a web page must not reach a loopback admin listener under
/// its own host name (the local user needs no credential there). Nothing
/// here is for browsers, so a foreign `Origin` is refused everywhere.
async fn guard_host(
    State(s): State<AdminState>,
    req: Request,
    next: axum::middleware::Next,
) -> Response {
    let headers = req.headers();
    let foreign_origin = headers.get(header::ORIGIN).is_some_and(|o| {
        !o.to_str()
            .ok()
            .and_then(|o| url::Url::parse(o).ok())
            .and_then(|u| u.host_str().map(is_loopback_host))
            .unwrap_or(false)
    });
    let foreign_host = s.loopback
        && headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.parse::<http::uri::Authority>().ok())
            .is_some_and(|a| !is_loopback_host(a.host()));
    if foreign_origin || foreign_host {
        return json_response(
            StatusCode::FORBIDDEN,
            serde_json::json!({
                "error": "host_not_allowed",
                "error_description": "this Origin or Host is not allowed on the admin listener",
            }),
        );
    }
    next.run(req).await
}

fn is_loopback_host(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Who calls the admin API, and whether they may.
async fn require_admin(
    State(s): State<AdminState>,
    mut req: Request,
    next: axum::middleware::Next,
) -> Response {
    // Plain HTTP: no client certificate to offer.
    let principal = match s
        .auth
        .authenticate(req.headers(), req.uri().query(), None)
        .await
    {
        Ok(p) => p,
        Err(e) => return error_response(&s.auth, &AdminError::Auth(e)),
    };
    if let Err(e) = admit(&principal, &s.groups, s.no_auth, s.loopback) {
        tracing::info!(principal = %principal.key(), code = e.code(), "admin API refused");
        return error_response(&s.auth, &e);
    }
    req.extensions_mut().insert(principal);
    next.run(req).await
}

/// The admin API's rule: a member of one of `groups`; on a gateway without
/// `auth`, where every caller is the anonymous local user, that user when the
/// admin listener is on loopback (only people on this machine reach it).
fn admit(
    p: &Principal,
    groups: &[String],
    no_auth: bool,
    loopback: bool,
) -> Result<(), AdminError> {
    if no_auth && p.method == AuthMethod::Anonymous {
        return if loopback {
            Ok(())
        } else {
            Err(AdminError::LoopbackOnly)
        };
    }
    if p.groups.iter().any(|g| groups.contains(g)) {
        Ok(())
    } else {
        Err(AdminError::NotAdmin(groups.join(", ")))
    }
}

/// `GET /admin/v1/servers`: every server as `toolgate catalog --json` describes
/// it — status, era, item counts, circuit breaker and health probes.
async fn servers(State(s): State<AdminState>) -> Response {
    let servers: Vec<_> = s.gw.servers.iter().map(|u| u.describe()).collect();
    json_response(StatusCode::OK, serde_json::json!({ "servers": servers }))
}

/// `POST /admin/v1/reload`: read the config file again and put what can
/// change in force (`{"applied": [...], "restartRequired": [...]}`); 400
/// `invalid_config` for a file that does not load, the settings in force
/// unchanged.
async fn reload(
    State(s): State<AdminState>,
    Extension(principal): Extension<Arc<Principal>>,
) -> Response {
    match s.gw.reload_file(Some(&principal)).await {
        Ok(report) => json_response(StatusCode::OK, report.to_json()),
        Err(problem) => json_response(
            StatusCode::BAD_REQUEST,
            serde_json::json!({
                "error": "invalid_config",
                "error_description": problem,
            }),
        ),
    }
}

/// `GET /admin/v1/audit?…`: events as `{"events": […]}`, newest first (oldest
/// first after `after`), with the parameters of `toolgate audit query`.
async fn audit_events(
    State(s): State<AdminState>,
    Extension(principal): Extension<Arc<Principal>>,
    peer: Option<Extension<axum::extract::ConnectInfo<SocketAddr>>>,
    args: Result<Query<QueryArgs>, QueryRejection>,
) -> Response {
    let filter = match args {
        Ok(Query(args)) => args.filter(now_us()),
        Err(e) => Err(e.body_text()),
    };
    let filter = match filter {
        Ok(f) => f,
        Err(msg) => return error_response(&s.auth, &AdminError::BadQuery(msg)),
    };
    // Reading the trail is itself an operator action worth a line in it.
    let mut e = Event::new(EventKind::Admin).by(&principal);
    e.method = Some("audit/query".into());
    e.endpoint = Some("/admin/v1/audit".into());
    e.source = peer.map(|Extension(c)| c.0.ip().to_string());
    s.gw.audit.emit(e);
    // Events the journal holds for the next batch are read back too.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), s.gw.audit.sync()).await;
    match query::events(&s.store, &filter).await {
        Ok(events) => json_response(StatusCode::OK, serde_json::json!({ "events": events })),
        Err(e) => {
            tracing::error!(error = %e, "admin API: the audit store cannot be read");
            error_response(&s.auth, &AdminError::Store)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(method: AuthMethod, groups: &[&str]) -> Principal {
        let mut p = Principal::anonymous("someone");
        p.method = method;
        p.groups = groups.iter().map(|g| g.to_string()).collect();
        p
    }

    #[test]
    fn only_admins_and_the_local_user_on_loopback_get_in() {
        let groups = vec!["toolgate-admins".to_owned()];
        let admin = principal(AuthMethod::ApiKey, &["ops", "toolgate-admins"]);
        assert!(admit(&admin, &groups, false, false).is_ok());
        let other = principal(AuthMethod::Jwt, &["ops"]);
        let e = admit(&other, &groups, false, true).unwrap_err();
        assert_eq!(
            (e.status(), e.code()),
            (StatusCode::FORBIDDEN, "admin_group_required")
        );
        let local = principal(AuthMethod::Anonymous, &[]);
        assert!(admit(&local, &groups, true, true).is_ok());
        // The same user where the admin listener faces the network.
        let e = admit(&local, &groups, true, false).unwrap_err();
        assert_eq!(
            (e.status(), e.code()),
            (StatusCode::FORBIDDEN, "loopback_only")
        );
        // A configured anonymous user is a principal like any other.
        assert!(admit(&local, &groups, false, true).is_err());
        let anonymous_admin = principal(AuthMethod::Anonymous, &["toolgate-admins"]);
        assert!(admit(&anonymous_admin, &groups, false, true).is_ok());
    }

    #[test]
    fn loopback_hosts_are_recognised() {
        for h in [
            "localhost",
            "127.0.0.1",
            "127.1.2.3",
            "[::1]",
            "::1",
            "LOCALHOST",
        ] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in ["example.com", "10.0.0.1", "[::2]", "localhost.evil.com"] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }
}
