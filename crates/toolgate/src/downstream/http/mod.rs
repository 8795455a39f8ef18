//! The HTTP front door: Streamable HTTP on `/mcp` and on each configured
//! endpoint's path (POST, GET, DELETE), and the 2024-11-05 HTTP+SSE transport on
//! `/sse` + `/message`.
//!
//! This module only speaks HTTP: it checks headers and origins, finds the session,
//! and turns bodies into messages for the gateway core and its event streams into
//! JSON or SSE responses.

mod legacy;

use super::endpoint::{Endpoint, admit, endpoint_resource};
use super::tls::Tls;
use crate::auth::{AuthError, Authenticator, ClientCert, Principal};
use crate::catalog::ListKind;
use crate::gateway::audit::Refusal;
use crate::gateway::modern::{self, MODERN_VERSIONS};
use crate::gateway::stream::{Next, OpenStream, StreamKind};
use crate::gateway::{EventStream, Gateway, Session};
use crate::headers;
use crate::jsonrpc::{self, ErrorObject, Kind, LEGACY_VERSIONS, Message, code};
use crate::sse::format_event;
use crate::telemetry::TraceHeaders;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, DefaultBodyLimit, Extension, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::IncomingStream;
use http_body_util::BodyExt as _;
use serde_json::Value;
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;
use tower::ServiceExt as _;

/// The client's socket address, where a route needs it (the legacy transport's
/// `/message`); the front door passes it on as a `ConnectInfo` extension.
type Peer = Option<Extension<ConnectInfo<SocketAddr>>>;

fn source(peer: &Peer) -> Option<IpAddr> {
    peer.as_ref().map(|Extension(c)| c.0.ip())
}

const SESSION_HEADER: &str = "mcp-session-id";
const VERSION_HEADER: &str = "mcp-protocol-version";

/// An early HTTP answer (400, 404, …) from a check; boxed to keep `Result`s small.
type Reject = Box<Response>;

#[derive(Clone)]
struct AppState {
    gw: Arc<Gateway>,
    auth: Arc<Authenticator>,
    loopback: bool,
    keep_alive: Duration,
    /// `max_message_bytes`: the largest request body read.
    max_body: usize,
    allowed_origins: Arc<Vec<String>>,
    legacy: Arc<Mutex<HashMap<String, Arc<legacy::LegacyConn>>>>,
}

/// The MCP listener's service, one per connection: it knows the connection's
/// peer and verified client certificate, so neither is put in a request's
/// extensions unless a routed handler reads them.
#[derive(Clone)]
pub struct Front {
    gate: Arc<Gate>,
    peer: Option<SocketAddr>,
    cert: Option<ClientCert>,
}

/// What every connection's [`Front`] shares: the Streamable HTTP endpoints by
/// path and the router for everything that is not a POST to one of them.
struct Gate {
    state: AppState,
    endpoints: HashMap<String, Arc<Endpoint>>,
    router: Router,
}

pub fn front(gw: Arc<Gateway>, listen: SocketAddr, auth: Arc<Authenticator>) -> Front {
    let state = AppState {
        auth,
        loopback: listen.ip().is_loopback(),
        keep_alive: gw.config().sse_keep_alive.0,
        max_body: gw.config().max_message_bytes,
        allowed_origins: Arc::new(gw.config().allowed_origins.clone()),
        legacy: Arc::default(),
        gw: gw.clone(),
    };
    let config = gw.config();
    let endpoints = std::iter::once(Endpoint::default_mcp()).chain(
        config
            .endpoints
            .values()
            .map(|rules| Endpoint::configured(rules, &state.auth.resource)),
    );
    let mut routes = Router::new();
    let mut by_path = HashMap::new();
    for ep in endpoints {
        routes = routes.route(
            &ep.path,
            post(mcp_post_routed).get(mcp_get).delete(mcp_delete),
        );
        by_path.insert(ep.path.to_string(), Arc::new(ep));
    }
    let router = routes
        .route("/sse", get(legacy::sse))
        .route("/message", post(legacy::message))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route(
            "/.well-known/oauth-protected-resource",
            get(resource_metadata),
        )
        .route(
            "/.well-known/oauth-protected-resource/{*path}",
            get(resource_metadata),
        )
        .layer(DefaultBodyLimit::max(state.max_body))
        .with_state(state.clone());
    Front {
        gate: Arc::new(Gate {
            state,
            endpoints: by_path,
            router,
        }),
        peer: None,
        cert: None,
    }
}

impl Front {
    /// The service for one connection from `peer`, with the client certificate
    /// its TLS handshake verified, if any.
    pub(super) fn connection(&self, peer: SocketAddr, cert: Option<ClientCert>) -> Front {
        Front {
            gate: self.gate.clone(),
            peer: Some(peer),
            cert,
        }
    }
}

impl tower::Service<Request> for Front {
    type Response = Response;
    type Error = Infallible;
    type Future = std::pin::Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let front = self.clone();
        Box::pin(async move { Ok(front.door(req).await) })
    }
}

/// `axum::serve`'s per-connection factory: a [`Front`] that knows its peer.
struct PerConnection(Front);

impl tower::Service<IncomingStream<'_, tokio::net::TcpListener>> for PerConnection {
    type Response = Front;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Front, Infallible>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, conn: IncomingStream<'_, tokio::net::TcpListener>) -> Self::Future {
        std::future::ready(Ok(self.0.connection(*conn.remote_addr(), None)))
    }
}

impl Front {
    /// Every request, before anything else: the `Origin` and `Host` checks;
    /// then, on the MCP paths, the credential (no principal, no session,
    /// catalog or upstream); then, on a Streamable HTTP endpoint, that
    /// endpoint's access rules. A POST to an endpoint — every MCP message — is
    /// served from here; the rest goes through the router, its principal,
    /// endpoint and peer in the request's extensions. The metadata and health
    /// routes need no principal.
    async fn door(self, mut req: Request) -> Response {
        let state = &self.gate.state;
        let source = self.peer.map(|p| p.ip());
        if let Some(refused) = refuse_origin(state, &req, source) {
            return refused;
        }
        // Endpoint paths are literal (the config allows no patterns), so this
        // lookup matches exactly the routes the router would match.
        let path = req.uri().path();
        let endpoint = self.gate.endpoints.get(path).cloned();
        if endpoint.is_some() || path == "/sse" || path == "/message" {
            let principal =
                match authenticate(state, req.headers(), req.uri(), self.cert.as_ref(), source)
                    .await
                {
                    Ok(p) => p,
                    Err(refused) => return *refused,
                };
            if let Some(ep) = endpoint {
                if let Err(refused) = admit(&state.auth, &ep, &principal, &state.gw, source) {
                    return *refused;
                }
                if req.method() == Method::POST {
                    return mcp_post(state, req, principal, ep, source).await;
                }
                req.extensions_mut().insert(ep);
            }
            req.extensions_mut().insert(principal);
        }
        if let Some(peer) = self.peer {
            req.extensions_mut().insert(ConnectInfo(peer));
        }
        // Boxed: the router's future is large, and every MCP POST would
        // otherwise carry (and copy) room for it.
        match Box::pin(self.gate.router.clone().oneshot(req)).await {
            Ok(resp) => resp,
            Err(never) => match never {},
        }
    }
}

/// Serve until `stop` is cancelled: HTTPS only when `tls` is given (see
/// `downstream::tls`), plain HTTP otherwise.
pub async fn serve(
    gw: Arc<Gateway>,
    auth: Arc<Authenticator>,
    listener: tokio::net::TcpListener,
    tls: Option<Arc<Tls>>,
    stop: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    let front = front(gw, addr, auth);
    match tls {
        Some(tls) => super::tls::serve(front, listener, tls, stop).await,
        None => {
            axum::serve(listener, PerConnection(front))
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
        }
    }
}

/// Who is calling, before anything else happens: a request without a valid
/// credential never reaches a session, the catalog or an upstream.
/// `cert` is present only on HTTPS connections whose client sent a certificate
/// that chains to `tls.client_ca`.
async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    uri: &axum::http::Uri,
    cert: Option<&ClientCert>,
    source: Option<IpAddr>,
) -> Result<Arc<Principal>, Reject> {
    match state.auth.authenticate(headers, uri.query(), cert).await {
        Ok(principal) => Ok(principal),
        Err(e) => {
            tracing::info!(code = e.code(), reason = %e, path = %uri.path(), "request not authenticated");
            state.gw.audit_refusal(Refusal {
                principal: None,
                source,
                path: uri.path(),
                status: e.status().as_u16(),
                code: e.code(),
                reason: &e.to_string(),
            });
            Err(Box::new(auth_error(&state.auth, &e)))
        }
    }
}

pub(super) fn auth_error(auth: &Authenticator, e: &AuthError) -> Response {
    let body = serde_json::json!({ "error": e.code(), "error_description": e.to_string() });
    let mut resp = (
        e.status(),
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response();
    if matches!(e.status(), StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN)
        && let Ok(v) = HeaderValue::from_str(&auth.challenge(e))
    {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    resp
}

async fn readyz(State(state): State<AppState>) -> Response {
    readiness(&state.gw, &state.auth).await
}

/// Ready to serve: the policies loaded, every `failure: closed` server up, the
/// key store answering. 503 with the failing checks otherwise (no secrets: names
/// and reasons only). The MCP and the admin listener answer `/readyz` alike.
pub(super) async fn readiness(gw: &Gateway, auth: &Authenticator) -> Response {
    let mut checks = serde_json::Map::new();
    let mut ready = true;
    let mut check = |name: String, ok: bool, detail: Option<String>| {
        ready &= ok;
        let mut c = serde_json::json!({ "ok": ok });
        if let Some(d) = detail {
            c["detail"] = Value::String(d);
        }
        checks.insert(name, c);
    };
    let policy = gw.policy_problem();
    check("policy".into(), policy.is_none(), policy);
    for up in &gw.servers {
        if up.cfg().failure != crate::config::FailureMode::Closed {
            continue;
        }
        let (ok, detail) = match up.status() {
            crate::gateway::Status::Ready if up.circuit.is_open() => {
                (false, Some("circuit open".to_owned()))
            }
            crate::gateway::Status::Ready => (true, None),
            crate::gateway::Status::Starting => (false, Some("starting".to_owned())),
            crate::gateway::Status::Down { reason } => (false, Some(reason)),
        };
        check(format!("server:{}", up.name), ok, detail);
    }
    if let Some(store) = auth.store_check().await {
        check("store".into(), store.is_ok(), store.err());
    }
    // With `overflow: fail_closed`, calls are refused while the trail cannot be
    // written: not ready.
    let audit = gw.audit.is_healthy();
    check(
        "audit".into(),
        audit,
        (!audit).then(|| "the audit sinks are failing".to_owned()),
    );
    if gw.draining.is_cancelled() {
        check(
            "draining".into(),
            false,
            Some("the gateway is shutting down".to_owned()),
        );
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({ "ready": ready, "checks": checks });
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// RFC 9728 protected-resource metadata, at the well-known root and at its
/// path-suffixed form for the MCP endpoint (`…/oauth-protected-resource/mcp`).
async fn resource_metadata(State(state): State<AppState>, req: Request) -> Response {
    let suffix = req
        .uri()
        .path()
        .strip_prefix("/.well-known/oauth-protected-resource")
        .unwrap_or("");
    let resource_path = url::Url::parse(&state.auth.resource)
        .map(|u| u.path().trim_end_matches('/').to_owned())
        .unwrap_or_default();
    let mut doc = state.auth.metadata().clone();
    if state
        .gw
        .config()
        .endpoints
        .values()
        .any(|e| e.path == suffix)
    {
        // An endpoint is a resource of its own: same issuers, its own URL.
        if let Some(r) = endpoint_resource(&state.auth.resource, suffix) {
            doc["resource"] = Value::String(r);
        }
    } else if !suffix.is_empty() && suffix != resource_path && suffix != "/sse" {
        return StatusCode::NOT_FOUND.into_response();
    }
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        doc.to_string(),
    )
        .into_response()
}

/// A JSON answer; its `Content-Type` is a static header value, not a copy.
fn json(status: StatusCode, body: impl Into<Body>) -> Response {
    let mut resp = Response::new(body.into());
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn rpc_error(status: StatusCode, id: Option<jsonrpc::Id>, error: ErrorObject) -> Response {
    json(status, Message::error_response(id, error).to_json())
}

/// Once a shutdown has begun, a new request is refused (503, retry
/// elsewhere); notifications and answers to the gateway's own requests still
/// reach the calls that are finishing.
/// A posted body as a message with the caller's trace headers, or the answer
/// to a malformed one (400) or to a request while draining.
fn incoming(state: &AppState, body: &[u8], headers: &HeaderMap) -> Result<Message, Reject> {
    let mut msg = jsonrpc::parse(body)
        .map_err(|e| Box::new(rpc_error(StatusCode::BAD_REQUEST, None, e.to_error())))?;
    if let Some(refused) = refuse_while_draining(state, &msg) {
        return Err(Box::new(refused));
    }
    msg.trace = TraceHeaders::from_http(headers);
    Ok(msg)
}

fn refuse_while_draining(state: &AppState, msg: &Message) -> Option<Response> {
    if !state.gw.draining.is_cancelled() || msg.kind() != Kind::Request {
        return None;
    }
    let error = ErrorObject::new(
        code::SHUTTING_DOWN,
        "the gateway is shutting down; retry on another instance",
    );
    let mut resp = rpc_error(StatusCode::SERVICE_UNAVAILABLE, msg.id.clone(), error);
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    Some(resp)
}

fn bad_request(message: &str) -> Response {
    rpc_error(
        StatusCode::BAD_REQUEST,
        None,
        ErrorObject::new(code::INVALID_REQUEST, message),
    )
}

fn is_loopback_host(host: &str) -> bool {
    matches!(host, "localhost" | "127.0.0.1" | "[::1]" | "::1")
}

/// The host part of a Host header or an origin's authority.
fn hostname(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest
            .split(']')
            .next()
            .map_or(authority, |h| &authority[..h.len() + 2]);
    }
    authority.split(':').next().unwrap_or(authority)
}

/// DNS-rebinding protection: a browser page on another origin must not reach a
/// gateway on loopback. A foreign `Origin` is refused; on loopback the `Host` must
/// be a loopback name too (a rebinding attack arrives with the attacker's host name).
fn refuse_origin(state: &AppState, req: &Request, source: Option<IpAddr>) -> Option<Response> {
    let headers = req.headers();
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        let allowed = state.allowed_origins.iter().any(|o| o == origin)
            || (state.loopback
                && url::Url::parse(origin)
                    .ok()
                    .and_then(|u| u.host_str().map(is_loopback_host))
                    .unwrap_or(false));
        if !allowed {
            state.gw.audit_refusal(Refusal {
                principal: None,
                source,
                path: req.uri().path(),
                status: 403,
                code: "origin_not_allowed",
                reason: &format!("Origin {origin} is not allowed"),
            });
            return Some(rpc_error(
                StatusCode::FORBIDDEN,
                None,
                ErrorObject::new(
                    code::INVALID_REQUEST,
                    format!("Origin {origin} is not allowed"),
                ),
            ));
        }
    }
    if state.loopback
        && let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok())
        && !is_loopback_host(hostname(host))
    {
        return Some(rpc_error(
            StatusCode::FORBIDDEN,
            None,
            ErrorObject::new(code::INVALID_REQUEST, format!("Host {host} is not allowed")),
        ));
    }
    None
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn accepts(headers: &HeaderMap, mime: &str) -> bool {
    match header_str(headers, header::ACCEPT.as_str()) {
        None => true,
        Some(a) => a.split(',').any(|part| {
            let t = part.split(';').next().unwrap_or("").trim();
            t == mime || t == "*/*" || (t.ends_with("/*") && mime.starts_with(&t[..t.len() - 1]))
        }),
    }
}

/// The session a request names: 400 without the header, 404 if unknown — or if it
/// belongs to another principal, so a stolen or guessed id is worth nothing and
/// does not even confirm that the session exists. A session is also bound to the
/// endpoint that opened it: elsewhere it is unknown, so it cannot carry its
/// caller past another endpoint's filter.
fn find_session(
    state: &AppState,
    headers: &HeaderMap,
    principal: &Principal,
    ep: &Endpoint,
) -> Result<Arc<Session>, Reject> {
    let Some(id) = header_str(headers, SESSION_HEADER) else {
        return Err(Box::new(bad_request(
            "Bad Request: Mcp-Session-Id header is required",
        )));
    };
    let not_found = || {
        Box::new(rpc_error(
            StatusCode::NOT_FOUND,
            None,
            ErrorObject::new(-32001, "Session not found"),
        ))
    };
    let session = state.gw.sessions.get(id).ok_or_else(not_found)?;
    if session.principal != principal.key() {
        tracing::warn!(
            principal = %principal.key(),
            owner = %session.principal,
            "refused a session id presented by another principal"
        );
        state.gw.audit_refusal(Refusal {
            principal: Some(principal),
            source: None,
            path: &ep.path,
            status: 404,
            code: "foreign_session",
            reason: "a session id of another principal",
        });
        return Err(not_found());
    }
    if session.endpoint != ep.path {
        tracing::info!(
            session = %session.endpoint,
            endpoint = %ep.path,
            "refused a session id opened on another endpoint"
        );
        return Err(not_found());
    }
    Ok(session)
}

fn check_version(headers: &HeaderMap) -> Result<(), Reject> {
    match header_str(headers, VERSION_HEADER) {
        Some(v) if !LEGACY_VERSIONS.contains(&v) => Err(Box::new(bad_request(&format!(
            "Bad Request: unsupported MCP-Protocol-Version {v}; supported: {}",
            LEGACY_VERSIONS.join(", ")
        )))),
        _ => Ok(()),
    }
}

/// A stream's one event as a plain JSON answer: the body shares the event's
/// text instead of copying it.
fn json_response(status: StatusCode, text: Arc<str>) -> Response {
    struct Shared(Arc<str>);
    impl AsRef<[u8]> for Shared {
        fn as_ref(&self) -> &[u8] {
            self.0.as_bytes()
        }
    }
    json(status, Bytes::from_owner(Shared(text)))
}

/// The router's POST on an endpoint's path. The front door serves every such
/// POST itself; the route is here so that the router's 405 for another method
/// names POST in `Allow`, and serves a POST the same way should one arrive.
async fn mcp_post_routed(
    State(state): State<AppState>,
    Extension(principal): Extension<Arc<Principal>>,
    Extension(ep): Extension<Arc<Endpoint>>,
    peer: Peer,
    req: Request,
) -> Response {
    mcp_post(&state, req, principal, ep, source(&peer)).await
}

/// A request body of at most `max_message_bytes`: 413 over it, 400 when the
/// body cannot be read (the client went away mid-body, a broken chunk).
async fn read_body(body: Body, max: usize) -> Result<Bytes, Reject> {
    match http_body_util::Limited::new(body, max).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(Box::new(rpc_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            None,
            ErrorObject::new(
                code::INVALID_REQUEST,
                format!("the request body is over the gateway's limit of {max} bytes"),
            ),
        ))),
        Err(e) => Err(Box::new(bad_request(&format!(
            "Bad Request: the request body could not be read: {e}"
        )))),
    }
}

async fn mcp_post(
    state: &AppState,
    mut req: Request,
    principal: Arc<Principal>,
    ep: Arc<Endpoint>,
    source: Option<IpAddr>,
) -> Response {
    // Taken, not cloned: the handler owns the request.
    let headers = std::mem::take(req.headers_mut());
    let body = match read_body(req.into_body(), state.max_body).await {
        Ok(b) => b,
        Err(r) => return *r,
    };
    if !(accepts(&headers, "application/json") && accepts(&headers, "text/event-stream")) {
        return rpc_error(
            StatusCode::NOT_ACCEPTABLE,
            None,
            ErrorObject::new(
                code::INVALID_REQUEST,
                "Not Acceptable: Accept must include application/json and text/event-stream",
            ),
        );
    }
    let content_type = header_str(&headers, header::CONTENT_TYPE.as_str()).unwrap_or("");
    const JSON: &str = "application/json";
    if !content_type
        .trim_start()
        .get(..JSON.len())
        .is_some_and(|t| t.eq_ignore_ascii_case(JSON))
    {
        return rpc_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            None,
            ErrorObject::new(
                code::INVALID_REQUEST,
                "Content-Type must be application/json",
            ),
        );
    }
    let msg = match incoming(state, &body, &headers) {
        Ok(m) => m,
        Err(r) => return *r,
    };
    // One endpoint, two eras: modern `_meta` (or a modern version header on a
    // sessionless request) is 2026-07-28; `initialize` opens a legacy session.
    let modern_header =
        header_str(&headers, VERSION_HEADER).is_some_and(|v| MODERN_VERSIONS.contains(&v));
    // (`initialize` with modern `_meta` is a modern request for a method the
    // modern era does not have.)
    if modern::is_modern(&msg)
        || (msg.method() != "initialize"
            && modern_header
            && header_str(&headers, SESSION_HEADER).is_none())
    {
        return modern_post(state, &headers, msg, principal, &ep, source).await;
    }
    if msg.method() == "initialize" && msg.kind() == Kind::Request {
        if header_str(&headers, SESSION_HEADER).is_some() {
            return bad_request("Bad Request: initialize must not carry an Mcp-Session-Id");
        }
        let params = msg.params.clone().unwrap_or(Value::Null);
        let (session, result) = state
            .gw
            .initialize(&params, principal, &ep.path, None, source);
        let id = msg.id.clone().unwrap_or(jsonrpc::Id::Num(0));
        let body = Message::response_value(id, &result).to_json();
        let mut resp = json(StatusCode::OK, body);
        if let Ok(v) = HeaderValue::from_str(&session.id) {
            resp.headers_mut().insert(SESSION_HEADER, v);
        }
        return resp;
    }
    let session = match find_session(state, &headers, &principal, &ep) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    if let Err(r) = check_version(&headers) {
        return *r;
    }
    if msg.kind() != Kind::Request {
        state.gw.handle_client_message(&session, msg).await;
        return StatusCode::ACCEPTED.into_response();
    }
    let stream = session.open_stream();
    let (gw, s, out) = (state.gw.clone(), session.clone(), stream.clone());
    // Boxed: the task takes a pointer to the request's (large) state, not a copy.
    tokio::spawn(Box::pin(async move {
        // Runs to completion even if the client disconnects: a dropped connection is
        // not a cancellation, and the client may resume the stream.
        match gw.handle_request(&s, msg, &out).await {
            Some(resp) => {
                out.finish(&resp);
            }
            None => out.close(),
        }
    }));
    match stream.next(0).await {
        Next::Event(seq, text) if stream.is_single_final(seq) => {
            session.forget_stream(stream.id);
            json_response(StatusCode::OK, text)
        }
        Next::Event(..) => request_sse(state, &session, stream, 0, true, ()),
        Next::End => {
            session.forget_stream(stream.id);
            StatusCode::ACCEPTED.into_response()
        }
    }
}

/// A limit's refusal of a 2026-07-28 request, said in HTTP too: 429 with
/// `Retry-After` (whole seconds, rounded up) when waiting helps (503 if the
/// limiter itself could not be asked), 413 for a request too large. Legacy sessions keep 200: their clients treat any other
/// status as a broken transport and would never see the JSON-RPC error.
fn limited_status(resp: &mut Response, e: &ErrorObject) {
    if e.code != crate::limits::LIMITED {
        return;
    }
    let code = e
        .data
        .as_ref()
        .and_then(|d| d.get("code"))
        .and_then(Value::as_str);
    if let Some(secs) = crate::limits::retry_after_secs(e) {
        // A limiter that cannot be asked is the gateway's trouble, not the caller's rate.
        *resp.status_mut() = if code == Some("limiter_unavailable") {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::TOO_MANY_REQUESTS
        };
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    } else if code == Some("request_too_large") {
        *resp.status_mut() = StatusCode::PAYLOAD_TOO_LARGE;
    }
}

/// GET and DELETE exist only for legacy sessions; without one they are the
/// 2026-07-28 endpoint's "POST only".
fn post_only() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        [(header::ALLOW, "POST")],
        "this MCP endpoint takes POST; GET and DELETE need a legacy Mcp-Session-Id",
    )
        .into_response()
}

/// A 2026-07-28 request: check that headers and body agree, then serve it in one
/// round, as JSON or as an SSE stream (no event ids: modern streams do not resume).
async fn modern_post(
    state: &AppState,
    headers: &HeaderMap,
    msg: Message,
    principal: Arc<Principal>,
    ep: &Endpoint,
    source: Option<std::net::IpAddr>,
) -> Response {
    if msg.kind() != Kind::Request {
        // No client notifications are defined over HTTP in 2026-07-28; accept and drop.
        return StatusCode::ACCEPTED.into_response();
    }
    let id = msg.id.clone();
    // The header must agree with the body before the version itself is judged.
    if let Some(body_version) = msg
        .param("_meta")
        .and_then(|m| m.get(modern::META_VERSION))
        .and_then(Value::as_str)
        && let Err(e) = headers::check_version(headers, body_version)
    {
        return rpc_error(StatusCode::BAD_REQUEST, id, e);
    }
    let meta = match modern::request_meta(&msg) {
        Ok(m) => m,
        Err(e) => return rpc_error(StatusCode::BAD_REQUEST, id, e),
    };
    let catalog = state.gw.catalog();
    let schema = (msg.method() == "tools/call")
        .then(|| msg.param("name").and_then(Value::as_str))
        .flatten()
        // A tool outside the endpoint has no schema here: it is unknown.
        .and_then(|name| catalog.position(ListKind::Tools, name))
        .filter(|&i| {
            state
                .gw
                .endpoint_exposes(&ep.path, &catalog, ListKind::Tools, i)
        })
        .and_then(|i| catalog.items(ListKind::Tools).get(i))
        .and_then(|t| serde_json::from_str::<Value>(t.json.get()).ok())
        .and_then(|t| t.get("inputSchema").cloned());
    if let Err(e) = headers::check(headers, &msg, &meta.version, schema.as_ref()) {
        return rpc_error(StatusCode::BAD_REQUEST, id, e);
    }
    let cancel = tokio_util::sync::CancellationToken::new();
    let guard = cancel.clone().drop_guard();
    let stream = state
        .gw
        .modern_request(msg, meta, principal, &ep.path, source, cancel);
    match stream.next(0).await {
        Next::Event(seq, text) if stream.is_single_final(seq) => {
            let error = jsonrpc::parse(text.as_bytes()).ok().and_then(|m| m.error);
            let status = match &error {
                Some(e) if e.code == modern::modern_code::MISSING_CAPABILITY => {
                    StatusCode::BAD_REQUEST
                }
                Some(e) if e.code == code::METHOD_NOT_FOUND => StatusCode::NOT_FOUND,
                _ => StatusCode::OK,
            };
            drop(guard);
            let mut resp = json_response(status, text);
            if let Some(e) = &error {
                limited_status(&mut resp, e);
            }
            resp
        }
        Next::Event(..) => sse_body(SseBody {
            stream,
            reading: Reading::From(0),
            closed: state.gw.stop.clone(),
            keep_alive: state.keep_alive,
            ids: false,
            first: None,
            // Closing the response stream cancels the request.
            _guard: guard,
            _open: state.gw.streams.open(StreamKind::Request),
        }),
        Next::End => StatusCode::ACCEPTED.into_response(),
    }
}

async fn mcp_get(
    State(state): State<AppState>,
    Extension(principal): Extension<Arc<Principal>>,
    Extension(ep): Extension<Arc<Endpoint>>,
    headers: HeaderMap,
) -> Response {
    if header_str(&headers, SESSION_HEADER).is_none() {
        return post_only();
    }
    if !accepts(&headers, "text/event-stream") {
        return rpc_error(
            StatusCode::NOT_ACCEPTABLE,
            None,
            ErrorObject::new(
                code::INVALID_REQUEST,
                "Not Acceptable: Accept must include text/event-stream",
            ),
        );
    }
    let session = match find_session(&state, &headers, &principal, &ep) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    if let Err(r) = check_version(&headers) {
        return *r;
    }
    session.touch();
    if let Some(last) = header_str(&headers, "last-event-id") {
        let parsed = last
            .split_once('-')
            .and_then(|(s, q)| Some((s.parse::<u64>().ok()?, q.parse::<u64>().ok()?)));
        let Some(slot) = stream_slot(&state, &session) else {
            return too_many_streams(&state, &session);
        };
        return match parsed.and_then(|(sid, seq)| Some((session.stream(sid)?, seq))) {
            Some((stream, seq)) => {
                request_sse(&state, &session, stream, seq.wrapping_add(1), false, slot)
            }
            None => bad_request("Bad Request: unknown Last-Event-ID"),
        };
    }
    let Some(slot) = stream_slot(&state, &session) else {
        return too_many_streams(&state, &session);
    };
    session.readers.fetch_add(1, Ordering::Relaxed);
    sse_body(SseBody {
        stream: session.standalone.clone(),
        reading: Reading::Claim,
        closed: session.closed.clone(),
        keep_alive: state.keep_alive,
        ids: true,
        first: None,
        _guard: (ReaderGuard(session.clone()), slot),
        _open: state.gw.streams.open(StreamKind::Listen),
    })
}

async fn mcp_delete(
    State(state): State<AppState>,
    Extension(principal): Extension<Arc<Principal>>,
    Extension(ep): Extension<Arc<Endpoint>>,
    headers: HeaderMap,
) -> Response {
    if header_str(&headers, SESSION_HEADER).is_none() {
        return post_only();
    }
    let session = match find_session(&state, &headers, &principal, &ep) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    state.gw.close_session(&session.id).await;
    StatusCode::OK.into_response()
}

fn sse_headers(body: Body) -> Response {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .header("x-accel-buffering", "no")
        .body(body)
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// Where an SSE response body reads its events.
enum Reading {
    /// A request's stream (or a resumed one) from this position to its end.
    From(u64),
    /// The session's own stream: events no other reader has taken, so one
    /// message never goes out on two connections.
    Claim,
}

/// Everything an SSE response body needs; `guard` is dropped with the body.
struct SseBody<G> {
    stream: Arc<EventStream>,
    reading: Reading,
    /// Ends the body when the session or the gateway ends.
    closed: tokio_util::sync::CancellationToken,
    keep_alive: Duration,
    /// Event ids for resumption (the 2024-11-05 transport has none).
    ids: bool,
    /// Sent before any event: the priming event, or the legacy `endpoint` event.
    first: Option<String>,
    /// Held, never read: its `Drop` runs when the client goes away.
    _guard: G,
    /// Counts the stream as open while the body lives.
    _open: OpenStream,
}

fn sse_body<G: Send + 'static>(body: SseBody<G>) -> Response {
    let events = futures::stream::unfold(body, |mut b| async move {
        if let Some(first) = b.first.take() {
            return Some((Ok::<_, Infallible>(Bytes::from(first)), b));
        }
        let read = async {
            match b.reading {
                Reading::From(pos) => b.stream.next(pos).await,
                Reading::Claim => b.stream.claim_next().await,
            }
        };
        let next = tokio::select! {
            n = tokio::time::timeout(b.keep_alive, read) => n,
            _ = b.closed.cancelled() => return None,
        };
        match next {
            Err(_) => Some((Ok(Bytes::from_static(b": keep-alive\n\n")), b)),
            Ok(Next::End) => None,
            Ok(Next::Event(seq, text)) => {
                if let Reading::From(pos) = &mut b.reading {
                    *pos = seq + 1;
                }
                let id = format!("{}-{seq}", b.stream.id);
                let ev = format_event(b.ids.then_some(id.as_str()), Some("message"), &text);
                Some((Ok(Bytes::from(ev)), b))
            }
        }
    });
    sse_headers(Body::from_stream(events))
}

/// A request's stream as SSE, from `from` on, ending after its last event.
fn request_sse<G: Send + 'static>(
    state: &AppState,
    session: &Arc<Session>,
    stream: Arc<EventStream>,
    from: u64,
    prime: bool,
    guard: G,
) -> Response {
    // 2025-11-25: a first event with an id and no data lets the client resume
    // even if the connection breaks before the first real event. Its id names
    // the position before `from`, so resuming from it replays everything.
    let first = (prime && session.protocol_version.as_str() >= "2025-11-25")
        .then(|| format!("id: {}-{}\ndata: \n\n", stream.id, from.wrapping_sub(1)));
    sse_body(SseBody {
        stream,
        reading: Reading::From(from),
        closed: session.closed.clone(),
        keep_alive: state.keep_alive,
        ids: true,
        first,
        _guard: guard,
        // A resumed stream is read like a session's GET stream.
        _open: state.gw.streams.open(if prime {
            StreamKind::Request
        } else {
            StreamKind::Listen
        }),
    })
}

/// One of the GET streams a session may hold open (`max_session_streams`);
/// given back when the stream's body is dropped.
struct StreamSlot(Arc<Session>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.open_streams.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A stream slot of `session`, if it has one free.
fn stream_slot(state: &AppState, session: &Arc<Session>) -> Option<StreamSlot> {
    let max = state.gw.limits.snapshot().max_session_streams;
    session
        .open_streams
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < max).then_some(n + 1)
        })
        .ok()?;
    Some(StreamSlot(session.clone()))
}

/// 429 for a GET stream over `max_session_streams`: audited, counted.
fn too_many_streams(state: &AppState, session: &Session) -> Response {
    let refused = crate::limits::Refused::TooManyStreams {
        max: state.gw.limits.snapshot().max_session_streams,
    };
    tracing::info!(session = %session.id, "GET stream refused: {refused}");
    crate::metrics::limited(refused.limit(), refused.kind(), "");
    let reason = refused.to_string();
    state.gw.audit_refusal(Refusal {
        principal: Some(&session.identity),
        source: session.source.get().copied(),
        path: &session.endpoint,
        status: StatusCode::TOO_MANY_REQUESTS.as_u16(),
        code: refused.code(),
        reason: &reason,
    });
    let mut resp = rpc_error(StatusCode::OK, None, refused.to_error());
    limited_status(&mut resp, &refused.to_error());
    resp
}

/// Counts an open reader of a session's own stream for idle reaping.
struct ReaderGuard(Arc<Session>);

impl Drop for ReaderGuard {
    fn drop(&mut self) {
        self.0.readers.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}
