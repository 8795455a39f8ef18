//! The 2026-07-28 ("modern") era, downstream: stateless requests that carry their
//! own context in `_meta`, `server/discover`, cacheable results, and Multi
//! Round-Trip Requests (MRTR).
//!
//! A modern request is served in rounds. Each round is one client request and
//! ends with one final message: a complete result, an error, or an
//! `input_required` result. When a legacy server asks the client something in
//! the middle of a call (sampling, elicitation, roots), the round ends with those
//! questions as `inputRequests`; the upstream call is *held* — still running,
//! waiting for its answers — and the client gets a `requestState` sealed by the
//! gateway and bound to the caller, the request and an expiry. The client's retry
//! with `inputResponses` answers the held call and resumes it in a new round.

use super::Gateway;
use super::session::{Ask, Session};
use super::stream::{EventStream, Next};
use crate::auth::Principal;
use crate::catalog::ListKind;
use crate::jsonrpc::{ErrorObject, Id, Kind, LEGACY_VERSIONS, Message, code, to_raw};
use crate::seal::Sealer;
use crate::upstream::Responder;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Marks a `requestState` sealed by toolgate (others belong to modern servers).
const SEAL_PREFIX: &str = "tg1.";

/// How long a round waits for more of a server's questions after the first.
const GATHER_WINDOW: Duration = Duration::from_millis(25);

/// Modern protocol revisions toolgate serves.
pub const MODERN_VERSIONS: &[&str] = &["2026-07-28"];

pub const META_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
pub const META_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
pub const META_CLIENT_INFO: &str = "io.modelcontextprotocol/clientInfo";
pub const META_LOG_LEVEL: &str = "io.modelcontextprotocol/logLevel";
pub const META_SUBSCRIPTION: &str = "io.modelcontextprotocol/subscriptionId";
pub const META_SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";

/// Errors the 2026-07-28 revision defines.
pub mod modern_code {
    pub const HEADER_MISMATCH: i64 = -32020;
    pub const MISSING_CAPABILITY: i64 = -32021;
    pub const UNSUPPORTED_VERSION: i64 = -32022;
}

/// Every protocol revision toolgate speaks, newest first.
pub fn supported_versions() -> Vec<&'static str> {
    MODERN_VERSIONS
        .iter()
        .chain(LEGACY_VERSIONS)
        .copied()
        .collect()
}

/// Does this message carry the modern per-request `_meta`?
pub fn is_modern(msg: &Message) -> bool {
    msg.param("_meta")
        .and_then(|m| m.get(META_VERSION))
        .is_some()
}

/// What a modern request says about its sender.
#[derive(Debug, Clone)]
pub struct RequestMeta {
    pub version: String,
    pub capabilities: Value,
    pub client_info: Value,
    pub log_level: Option<String>,
}

/// Read and check the per-request fields: a missing required field is -32602,
/// a version toolgate does not serve is -32022 with the supported list.
pub fn request_meta(msg: &Message) -> Result<RequestMeta, ErrorObject> {
    let meta = msg.param("_meta").cloned().unwrap_or(Value::Null);
    let Some(version) = meta.get(META_VERSION).and_then(Value::as_str) else {
        return Err(ErrorObject::new(
            code::INVALID_PARAMS,
            format!("params._meta must carry \"{META_VERSION}\""),
        ));
    };
    if !MODERN_VERSIONS.contains(&version) {
        return Err(unsupported_version(version));
    }
    let Some(capabilities) = meta.get(META_CAPABILITIES).filter(|c| c.is_object()) else {
        return Err(ErrorObject::new(
            code::INVALID_PARAMS,
            format!("params._meta must carry \"{META_CAPABILITIES}\" (an object)"),
        ));
    };
    Ok(RequestMeta {
        version: version.to_owned(),
        capabilities: capabilities.clone(),
        client_info: meta.get(META_CLIENT_INFO).cloned().unwrap_or(json!({})),
        log_level: meta
            .get(META_LOG_LEVEL)
            .and_then(Value::as_str)
            .map(str::to_owned),
    })
}

pub fn unsupported_version(requested: &str) -> ErrorObject {
    ErrorObject::new(
        modern_code::UNSUPPORTED_VERSION,
        "Unsupported protocol version",
    )
    .with_data(json!({ "supported": supported_versions(), "requested": requested }))
}

/// Drop the modern per-request fields before a request goes to a legacy server,
/// which learned them at `initialize` and would not understand them here.
fn strip_request_meta(params: &mut Value) {
    if let Some(meta) = params.get_mut("_meta").and_then(Value::as_object_mut) {
        for key in [
            META_VERSION,
            META_CAPABILITIES,
            META_CLIENT_INFO,
            META_LOG_LEVEL,
        ] {
            meta.remove(key);
        }
        if meta.is_empty()
            && let Some(p) = params.as_object_mut()
        {
            p.remove("_meta");
        }
    }
}

/// Add `resultType: "complete"` (and any `extra` members) to a result that lacks
/// them, without re-serialising results that need nothing.
fn complete_result(raw: &RawValue, extra: &[(&str, Value)]) -> Box<RawValue> {
    let text = raw.get();
    let mut v: Value = match serde_json::from_str(text) {
        Ok(Value::Object(m)) => Value::Object(m),
        _ => {
            return RawValue::from_string(text.to_owned())
                .unwrap_or_else(|_| crate::jsonrpc::empty_object());
        }
    };
    let obj = v.as_object_mut().expect("checked above");
    let mut fresh = Map::with_capacity(obj.len() + 1 + extra.len());
    if !obj.contains_key("resultType") {
        fresh.insert("resultType".into(), Value::String("complete".into()));
    }
    for (k, val) in extra {
        if !obj.contains_key(*k) {
            fresh.insert((*k).into(), val.clone());
        }
    }
    if fresh.is_empty() {
        return RawValue::from_string(text.to_owned())
            .unwrap_or_else(|_| crate::jsonrpc::empty_object());
    }
    fresh.extend(std::mem::take(obj));
    to_raw(&Value::Object(fresh))
}

/// A modern client reads "resource not found" as -32602 (2026-07-28 retired -32002).
fn modern_error(mut e: ErrorObject) -> ErrorObject {
    if e.code == code::RESOURCE_NOT_FOUND {
        e.code = code::INVALID_PARAMS;
    }
    e
}

/// An upstream call waiting for the client's answers between rounds.
struct HeldCall {
    session: Arc<Session>,
    out: Arc<EventStream>,
    pos: u64,
    asks: mpsc::Receiver<Ask>,
    /// Input request key → the upstream request it answers.
    pending: HashMap<String, Responder>,
    principal: String,
    method: String,
    fingerprint: String,
    expires: u64,
}

/// Held calls and the key that seals their `requestState`.
pub struct Mrtr {
    sealer: Sealer,
    held: Mutex<HashMap<String, HeldCall>>,
    ttl: Duration,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct SealedState {
    /// Held call id.
    h: String,
    /// Principal the state was issued to.
    p: String,
    /// Method and fingerprint of the request it belongs to.
    m: String,
    f: String,
    /// Expiry, seconds since the epoch.
    e: u64,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A digest of what makes a request "the same request" on retry: its method and
/// its params without `_meta`, `inputResponses` and `requestState`, keys sorted.
fn fingerprint(method: &str, params: &Value) -> String {
    fn canonical(v: &Value, out: &mut String) {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<_> = m.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String(k.clone()).to_string());
                    out.push(':');
                    canonical(&m[k], out);
                }
                out.push('}');
            }
            Value::Array(a) => {
                out.push('[');
                for (i, x) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    canonical(x, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut text = String::from(method);
    text.push('\n');
    if let Value::Object(m) = params {
        let mut rest = m.clone();
        for k in ["_meta", "inputResponses", "requestState"] {
            rest.remove(k);
        }
        canonical(&Value::Object(rest), &mut text);
    }
    let digest = Sha256::digest(text.as_bytes());
    URL_SAFE_NO_PAD.encode(&digest[..16])
}

impl Mrtr {
    pub fn new(ttl: Duration) -> Mrtr {
        Mrtr {
            sealer: Sealer::new(),
            held: Mutex::new(HashMap::new()),
            ttl,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, HeldCall>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn seal(&self, state: &SealedState) -> String {
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(state).unwrap_or_default());
        format!("{SEAL_PREFIX}{}", self.sealer.seal(&payload))
    }

    /// Check a `requestState` and take the call it names. Every failure is the
    /// same clear error: the client must start the request again.
    fn open(
        &self,
        token: &str,
        principal: &str,
        method: &str,
        fingerprint: &str,
    ) -> Result<HeldCall, ErrorObject> {
        let invalid = |why: &str| {
            ErrorObject::new(
                code::INVALID_PARAMS,
                format!("requestState is not valid here: {why}; send the request again without it"),
            )
            .with_data(json!({ "reason": why }))
        };
        let token = token
            .strip_prefix(SEAL_PREFIX)
            .ok_or_else(|| invalid("malformed"))?;
        let payload = self
            .sealer
            .open(token)
            .ok_or_else(|| invalid("it was not issued by this gateway or was altered"))?;
        let state: SealedState = URL_SAFE_NO_PAD
            .decode(payload)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| invalid("malformed"))?;
        if state.e < now_secs() {
            // Release the held call at once rather than waiting for the reaper.
            if let Some(call) = self.lock().remove(&state.h) {
                release(call, "the client did not answer in time");
            }
            return Err(invalid("it has expired"));
        }
        if state.p != principal {
            return Err(invalid("it belongs to another caller"));
        }
        if state.m != method || state.f != fingerprint {
            return Err(invalid("it belongs to a different request"));
        }
        self.lock()
            .remove(&state.h)
            .ok_or_else(|| invalid("it was already used"))
    }

    fn hold(&self, call: HeldCall) -> String {
        let id: [u8; 16] = rand::random();
        let id = URL_SAFE_NO_PAD.encode(id);
        let token = self.seal(&SealedState {
            h: id.clone(),
            p: call.principal.clone(),
            m: call.method.clone(),
            f: call.fingerprint.clone(),
            e: call.expires,
        });
        self.lock().insert(id, call);
        token
    }

    /// Release held calls whose client never came back.
    pub fn reap(&self) {
        let now = now_secs();
        let expired: Vec<HeldCall> = {
            let mut held = self.lock();
            let ids: Vec<String> = held
                .iter()
                .filter(|(_, c)| c.expires < now)
                .map(|(id, _)| id.clone())
                .collect();
            ids.into_iter().filter_map(|id| held.remove(&id)).collect()
        };
        for call in expired {
            release(call, "the client did not answer in time");
        }
    }

    pub fn held_count(&self) -> usize {
        self.lock().len()
    }
}

/// Give up on a held call: its questions get an error upstream and the call is
/// cancelled (which cancels it at the server too).
fn release(call: HeldCall, why: &str) {
    for (_, responder) in call.pending {
        let e = ErrorObject::new(code::UPSTREAM_TIMEOUT, why.to_owned());
        tokio::spawn(responder.respond(Err(e)));
    }
    let session = call.session;
    tokio::spawn(async move { session.close().await });
}

/// Where a round's progress notifications go, with the token the client gave
/// in this round's request.
struct Round {
    id: Id,
    out: Arc<EventStream>,
    progress_token: Option<Value>,
}

impl Gateway {
    /// Serve one modern request. Returns the stream of this round: notifications
    /// that belong to the request, then exactly one final message. `cancel` is the
    /// client going away (closing the response stream cancels the request).
    pub fn modern_request(
        self: &Arc<Self>,
        msg: Message,
        meta: RequestMeta,
        principal: Arc<Principal>,
        endpoint: &str,
        source: Option<std::net::IpAddr>,
        cancel: CancellationToken,
    ) -> Arc<EventStream> {
        let endpoint: Arc<str> = endpoint.into();
        let round = EventStream::new(0);
        let (gw, out) = (self.clone(), round.clone());
        tokio::spawn(async move {
            match gw
                .modern_serve(msg, meta, &principal, &endpoint, source, &out, cancel)
                .await
            {
                Some(last) => {
                    out.finish(&last);
                }
                None => out.close(),
            }
        });
        round
    }

    #[allow(clippy::too_many_arguments)]
    async fn modern_serve(
        self: &Arc<Self>,
        msg: Message,
        meta: RequestMeta,
        principal: &Arc<Principal>,
        endpoint: &Arc<str>,
        source: Option<std::net::IpAddr>,
        out: &Arc<EventStream>,
        cancel: CancellationToken,
    ) -> Option<Message> {
        let id = msg.id.clone()?;
        let params = msg.params.clone().unwrap_or(Value::Null);
        let answer = |r: Result<Box<RawValue>, ErrorObject>| match r {
            Ok(result) => Message::response(id.clone(), result),
            Err(e) => Message::error_response(Some(id.clone()), modern_error(e)),
        };
        let method = msg.method().to_owned();
        // Who asks, for policies and for the audit trail.
        let origin = super::authz::Origin {
            principal,
            endpoint,
            session: None,
            era: crate::policy::Era::Modern,
            source,
        };
        let who = super::audit::Caller {
            principal,
            session: None,
            source,
            endpoint,
            era: "modern",
        };
        if let Some(kind) = ListKind::from_method(&method) {
            let span = crate::telemetry::server_span(
                &msg,
                &crate::telemetry::Request {
                    session: None,
                    protocol_version: &meta.version,
                    user: &principal.user,
                    tenant: principal.tenant.as_deref(),
                    client: source,
                },
            );
            let listed = span
                .wrap(async {
                    let audited = self.audit_begin(&msg).await?;
                    let listed = audited
                        .scope(async { self.modern_list(kind, &params, &origin) })
                        .await;
                    self.audit_end(audited, who, &method, Some(&listed)).await?;
                    listed
                })
                .await;
            return Some(answer(listed));
        }
        match method.as_str() {
            "server/discover" => {
                let discovered = async {
                    let audited = self.audit_begin(&msg).await?;
                    let result = Ok(to_raw(&self.discover_result()));
                    self.audit_end(audited, who, &method, Some(&result)).await?;
                    result
                }
                .await;
                Some(answer(discovered))
            }
            "subscriptions/listen" => {
                let audited = match self.audit_begin(&msg).await {
                    Ok(a) => a,
                    Err(e) => return Some(answer(Err(e))),
                };
                let last = self.listen(id, &params, &origin, out, cancel).await;
                // The stream is over: its event records how it ended (a failed
                // write can no longer change what the client saw).
                let ended = last.as_ref().map(|m| match &m.error {
                    Some(e) => Err(e.clone()),
                    None => Ok(crate::jsonrpc::empty_object()),
                });
                let _ = self.audit_end(audited, who, &method, ended.as_ref()).await;
                last
            }
            "tools/call"
            | "prompts/get"
            | "resources/read"
            | "completion/complete"
            | "tasks/get"
            | "tasks/update"
            | "tasks/cancel" => {
                if method.starts_with("tasks/")
                    && let Err(e) = super::tasks::require_extension(
                        self.offers_tasks_extension(),
                        &method,
                        &meta.capabilities,
                    )
                {
                    return Some(answer(Err(e)));
                }
                let round = Round {
                    id: id.clone(),
                    out: out.clone(),
                    progress_token: params
                        .get("_meta")
                        .and_then(|m| m.get("progressToken"))
                        .cloned(),
                };
                let fp = fingerprint(&method, &params);
                // A requestState the gateway sealed resumes a held call; any other
                // was minted by a modern server and travels to it untouched.
                let ours = params
                    .get("requestState")
                    .and_then(Value::as_str)
                    .filter(|t| t.starts_with(SEAL_PREFIX));
                let call = match ours {
                    Some(token) => {
                        let call = match self.mrtr.open(token, &principal.key(), &method, &fp) {
                            Ok(c) => c,
                            Err(e) => return Some(answer(Err(e))),
                        };
                        answer_held(call, params.get("inputResponses"))
                    }
                    None => self.start_call(msg, meta, principal, endpoint, source, fp),
                };
                self.drive(call, round, cancel).await
            }
            _ => Some(Message::error_response(
                Some(id),
                ErrorObject::new(
                    code::METHOD_NOT_FOUND,
                    format!("Method not found: {method}"),
                ),
            )),
        }
    }

    /// Start a call in the background; its events are read round by round.
    fn start_call(
        self: &Arc<Self>,
        msg: Message,
        meta: RequestMeta,
        principal: &Arc<Principal>,
        endpoint: &Arc<str>,
        source: Option<std::net::IpAddr>,
        fingerprint: String,
    ) -> HeldCall {
        let (session, asks) = Session::modern(
            principal.clone(),
            endpoint.clone(),
            meta.version,
            meta.capabilities,
            meta.client_info,
            meta.log_level.as_deref(),
        );
        if let Some(ip) = source {
            let _ = session.source.set(ip);
        }
        let method = msg.method().to_owned();
        let mut msg = msg;
        if let Some(p) = msg.params.as_mut() {
            strip_request_meta(p);
        }
        let out = EventStream::new(1);
        let (gw, s, o) = (self.clone(), session.clone(), out.clone());
        tokio::spawn(async move {
            match gw.handle_request(&s, msg, &o).await {
                Some(resp) => {
                    o.finish(&resp);
                }
                None => o.close(),
            }
        });
        HeldCall {
            session,
            out,
            pos: 0,
            asks,
            pending: HashMap::new(),
            principal: principal.key(),
            method,
            fingerprint,
            expires: 0,
        }
    }

    /// Relay a call's events into this round until it ends: with its result, with
    /// an `input_required` result (the call is then held), or with the client
    /// going away (the call is cancelled).
    async fn drive(
        self: &Arc<Self>,
        mut call: HeldCall,
        round: Round,
        cancel: CancellationToken,
    ) -> Option<Message> {
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => {
                    release(call, "the client cancelled the request");
                    return None;
                }
                next = call.out.next(call.pos) => match next {
                    Next::End => {
                        // The call ended without a response (it was cancelled).
                        return None;
                    }
                    Next::Event(seq, text) => {
                        call.pos = seq + 1;
                        let Ok(mut msg) = crate::jsonrpc::parse(text.as_bytes()) else { continue };
                        match msg.kind() {
                            Kind::Response => {
                                msg.id = Some(round.id.clone());
                                if let Some(r) = msg.result.as_deref() {
                                    let extra = if call.method == "resources/read" {
                                        vec![("ttlMs", json!(0)), ("cacheScope", json!("private"))]
                                    } else {
                                        Vec::new()
                                    };
                                    msg.result = Some(complete_result(r, &extra));
                                }
                                if let Some(e) = msg.error.take() {
                                    msg.error = Some(modern_error(e));
                                }
                                call.session.closed.cancel();
                                return Some(msg);
                            }
                            Kind::Notification if msg.method() == "notifications/progress" => {
                                // Progress follows the token of the round in progress.
                                let Some(token) = &round.progress_token else { continue };
                                if let Some(p) = msg.params.as_mut() {
                                    p["progressToken"] = token.clone();
                                }
                                round.out.push(&msg);
                            }
                            Kind::Notification => {
                                round.out.push(&msg);
                            }
                            _ => {}
                        }
                    }
                },
                Some(ask) = call.asks.recv() => {
                    // A server may ask several things at once; gather what arrives
                    // together into one round.
                    let mut asks = vec![ask];
                    while let Ok(Some(more)) =
                        tokio::time::timeout(GATHER_WINDOW, call.asks.recv()).await
                    {
                        asks.push(more);
                    }
                    return Some(self.suspend(call, asks, &round));
                }
            }
        }
    }

    /// End the round with `input_required`, holding the call for the retry.
    fn suspend(&self, mut call: HeldCall, asks: Vec<Ask>, round: &Round) -> Message {
        let mut missing = Map::new();
        for ask in &asks {
            let cap = match ask.request.method() {
                "sampling/createMessage" => "sampling",
                "elicitation/create" => "elicitation",
                "roots/list" => "roots",
                _ => continue,
            };
            if call.session.client_capabilities.get(cap).is_none() {
                missing.insert(cap.to_owned(), json!({}));
            }
        }
        if !missing.is_empty() {
            let names: Vec<&str> = missing.keys().map(String::as_str).collect();
            let e = ErrorObject::new(
                modern_code::MISSING_CAPABILITY,
                format!(
                    "this request needs the client capability {}",
                    names.join(", ")
                ),
            )
            .with_data(json!({ "requiredCapabilities": missing }));
            for (n, ask) in asks.into_iter().enumerate() {
                call.pending.insert(format!("refused-{n}"), ask.responder);
            }
            release(call, "the client lacks a capability this request needs");
            return Message::error_response(Some(round.id.clone()), e);
        }
        let mut requests = Map::new();
        let base = call.pending.len();
        for (n, ask) in asks.into_iter().enumerate() {
            let key = format!("toolgate-{}", base + n + 1);
            let mut entry = Map::new();
            entry.insert(
                "method".into(),
                Value::String(ask.request.method().to_owned()),
            );
            if let Some(mut p) = ask.request.params.clone() {
                // A progress token the server minted for its own request means
                // nothing to the client answering it as an input request.
                if let Some(meta) = p.get_mut("_meta").and_then(Value::as_object_mut) {
                    meta.remove("progressToken");
                    if meta.is_empty()
                        && let Some(obj) = p.as_object_mut()
                    {
                        obj.remove("_meta");
                    }
                }
                entry.insert("params".into(), p);
            }
            requests.insert(key.clone(), Value::Object(entry));
            call.pending.insert(key, ask.responder);
        }
        call.expires = now_secs() + self.mrtr.ttl.as_secs().max(1);
        let state = self.mrtr.hold(call);
        let result = json!({
            "resultType": "input_required",
            "inputRequests": requests,
            "requestState": state,
        });
        Message::response_value(round.id.clone(), &result)
    }

    fn modern_list(
        &self,
        kind: ListKind,
        params: &Value,
        origin: &super::authz::Origin<'_>,
    ) -> Result<Box<RawValue>, ErrorObject> {
        let cursor = params.get("cursor").and_then(Value::as_str);
        let catalog = self.catalog();
        let view = self.view_for(origin, &catalog);
        let page = catalog.page(
            kind,
            cursor,
            self.config().page_size,
            &self.cursors,
            view.as_deref().map(|v| v.of(kind)),
            &origin.principal.key(),
        )?;
        // The gateway re-reads lists every catalog TTL, and no server's own hint may
        // be stretched. A list filtered by policy is this caller's alone: private.
        // Otherwise it is the same for everyone: public, unless a server said its
        // lists are private.
        let own = self.config().catalog_ttl.0.as_millis() as u64;
        let ttl_ms = catalog.ttl_ms.map_or(own, |t| t.min(own));
        let scope = if catalog.private || view.is_some() {
            "private"
        } else {
            "public"
        };
        let head =
            format!("{{\"resultType\":\"complete\",\"ttlMs\":{ttl_ms},\"cacheScope\":\"{scope}\",");
        let text = if page.len() > 2 {
            format!("{head}{}", &page[1..])
        } else {
            format!("{}}}", head.trim_end_matches(','))
        };
        RawValue::from_string(text)
            .map_err(|e| ErrorObject::new(code::INTERNAL_ERROR, e.to_string()))
    }

    /// What `server/discover` says: every version toolgate speaks and what the
    /// merged server offers.
    pub fn discover_result(&self) -> Value {
        let mut result = json!({
            "resultType": "complete",
            "supportedVersions": supported_versions(),
            "capabilities": self.capabilities(),
            "_meta": { META_SERVER_INFO: super::server_info() },
            "ttlMs": self.config().catalog_ttl.0.as_millis() as u64,
            "cacheScope": "public",
        });
        if let Some(text) = self.instructions() {
            result["instructions"] = Value::String(text);
        }
        result
    }
}

/// The client's retry: answer each held question from `inputResponses`.
fn answer_held(mut call: HeldCall, responses: Option<&Value>) -> HeldCall {
    for (key, responder) in call.pending.drain() {
        let outcome = match responses.and_then(|r| r.get(&key)) {
            Some(v) => Ok(to_raw(v)),
            None => Err(ErrorObject::new(
                code::INVALID_PARAMS,
                format!("the client sent no answer for input request {key}"),
            )),
        };
        tokio::spawn(responder.respond(outcome));
    }
    call
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_ignores_key_order_and_retry_fields() {
        let a = json!({"name": "t", "arguments": {"x": 1, "y": [1, 2]}});
        let b = json!({"arguments": {"y": [1, 2], "x": 1}, "name": "t",
            "_meta": {"progressToken": 3}, "requestState": "s", "inputResponses": {}});
        assert_eq!(fingerprint("tools/call", &a), fingerprint("tools/call", &b));
        let c = json!({"name": "t", "arguments": {"x": 2, "y": [1, 2]}});
        assert_ne!(fingerprint("tools/call", &a), fingerprint("tools/call", &c));
        assert_ne!(
            fingerprint("tools/call", &a),
            fingerprint("prompts/get", &a)
        );
    }

    #[test]
    fn results_get_their_result_type_once() {
        let raw = RawValue::from_string(r#"{"content":[],"x-extra":1}"#.into()).unwrap();
        let done = complete_result(&raw, &[]);
        assert_eq!(
            done.get(),
            r#"{"resultType":"complete","content":[],"x-extra":1}"#
        );
        let again = complete_result(&done, &[]);
        assert_eq!(again.get(), done.get());
    }

    #[test]
    fn request_meta_is_checked() {
        let msg = |meta: Value| {
            Message::request(Id::Num(1), "tools/list", Some(json!({ "_meta": meta })))
        };
        let ok = request_meta(&msg(
            json!({META_VERSION: "2026-07-28", META_CAPABILITIES: {}}),
        ));
        assert!(ok.is_ok());
        let e = request_meta(&msg(
            json!({META_VERSION: "1900-01-01", META_CAPABILITIES: {}}),
        ))
        .unwrap_err();
        assert_eq!(e.code, modern_code::UNSUPPORTED_VERSION);
        assert_eq!(e.data.unwrap()["supported"][0], "2026-07-28");
        let e = request_meta(&msg(json!({META_VERSION: "2026-07-28"}))).unwrap_err();
        assert_eq!(e.code, code::INVALID_PARAMS);
    }

    #[tokio::test]
    async fn request_state_is_bound_to_caller_request_and_time() {
        let mrtr = Mrtr::new(Duration::from_secs(60));
        let (session, asks) = Session::modern(
            Arc::new(Principal::anonymous("alice")),
            "/mcp".into(),
            "2026-07-28".into(),
            json!({}),
            json!({}),
            None,
        );
        let call = |expires| HeldCall {
            session: session.clone(),
            out: EventStream::new(1),
            pos: 0,
            asks: mpsc::channel(1).1,
            pending: HashMap::new(),
            principal: "alice".into(),
            method: "tools/call".into(),
            fingerprint: "fp".into(),
            expires,
        };
        drop(asks);
        let token = mrtr.hold(call(now_secs() + 60));
        assert!(mrtr.open(&token, "mallory", "tools/call", "fp").is_err());
        assert!(mrtr.open(&token, "alice", "tools/call", "other").is_err());
        let mut forged = token.clone();
        forged.insert(3, 'x');
        assert!(mrtr.open(&forged, "alice", "tools/call", "fp").is_err());
        assert!(mrtr.open(&token, "alice", "tools/call", "fp").is_ok());
        let Err(e) = mrtr.open(&token, "alice", "tools/call", "fp") else {
            panic!("a used requestState must not open again");
        };
        assert!(e.message.contains("already used"), "{}", e.message);
        let stale = mrtr.hold(call(now_secs() - 1));
        let Err(e) = mrtr.open(&stale, "alice", "tools/call", "fp") else {
            panic!("an expired requestState must not open");
        };
        assert!(e.message.contains("expired"), "{}", e.message);
        assert_eq!(mrtr.held_count(), 0, "an expired call is released");
    }
}
