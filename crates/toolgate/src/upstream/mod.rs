//! Clients for the MCP servers behind the gateway.
//!
//! A transport (`stdio`, `streamable`, `sse`) only moves JSON-RPC messages; the
//! `Connection` on top correlates requests with responses, remaps the ids and
//! progress tokens the gateway mints, and routes what the server sends on its own
//! initiative to the downstream request or session that caused it.

mod connection;
pub mod process;
#[cfg(target_os = "linux")]
mod sandbox;
pub mod sse;
pub mod stdio;
pub mod streamable;

pub use connection::{Connection, InitInfo, Responder, ServerEvent, Sink};

use crate::config::{ServerConfig, TransportKind};
use crate::jsonrpc::{ErrorObject, Message, code};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What a transport hands up to its connection.
// Nearly every event is a message: boxing it would add an allocation per
// message to spare the rare other variants some bytes.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum TransportEvent {
    /// A message from the server. `origin` is the id of the gateway's request whose
    /// response stream carried it (Streamable HTTP only): that is attribution the
    /// server itself made.
    Message { msg: Message, origin: Option<i64> },
    /// Sending request `id` failed before any response could arrive.
    RequestFailed { id: i64, error: UpstreamError },
    /// The transport is gone (child exited, stream closed); every pending call fails.
    Closed(UpstreamError),
}

/// The two ends of a running transport.
pub struct Transport {
    pub outbound: mpsc::Sender<Message>,
    pub inbound: mpsc::Receiver<TransportEvent>,
    /// Cancelled when the connection is dropped: kills the child, ends HTTP sessions.
    pub shutdown: CancellationToken,
}

/// Why a call to an upstream failed. Every variant names the server.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    #[error("server '{server}' is unavailable: {reason}")]
    Unavailable { server: Arc<str>, reason: String },
    #[error("server '{server}' closed the connection: {reason}")]
    Closed { server: Arc<str>, reason: String },
    #[error("server '{server}' broke the protocol: {reason}")]
    Protocol { server: Arc<str>, reason: String },
    #[error("server '{server}' did not answer within {}s", .after.as_secs_f64())]
    Timeout { server: Arc<str>, after: Duration },
    #[error("server '{server}' no longer knows the session")]
    SessionExpired { server: Arc<str> },
    #[error("server '{server}' answered HTTP {status}: {body}")]
    Http {
        server: Arc<str>,
        status: u16,
        body: String,
    },
}

impl UpstreamError {
    pub fn server(&self) -> &str {
        match self {
            UpstreamError::Unavailable { server, .. }
            | UpstreamError::Closed { server, .. }
            | UpstreamError::Protocol { server, .. }
            | UpstreamError::Timeout { server, .. }
            | UpstreamError::SessionExpired { server }
            | UpstreamError::Http { server, .. } => server,
        }
    }

    /// The JSON-RPC error a client sees.
    pub fn to_error(&self) -> ErrorObject {
        let code = match self {
            UpstreamError::Timeout { .. } => code::UPSTREAM_TIMEOUT,
            UpstreamError::Protocol { .. } => code::UPSTREAM_PROTOCOL,
            _ => code::UPSTREAM_UNAVAILABLE,
        };
        ErrorObject::new(code, self.to_string()).with_data(json!({ "server": self.server() }))
    }
}

/// The modern revision toolgate speaks to servers.
pub const MODERN_VERSION: &str = "2026-07-28";

/// Mirrored tool parameters (`x-mcp-header`) per tool, as the server lists them;
/// the Streamable HTTP transport writes them as `Mcp-Param-*` headers.
pub type ToolHeaders = std::sync::RwLock<HashMap<String, crate::headers::ParamHeaders>>;

/// Start the transport a server's config asks for. A stdio server needs a place
/// under `max_children` (`child`); without one it is unavailable.
pub async fn open(
    name: &Arc<str>,
    cfg: &ServerConfig,
    max_message: usize,
    tool_headers: Arc<ToolHeaders>,
    child: Option<process::ChildPermit>,
) -> Result<Transport, UpstreamError> {
    match cfg.transport() {
        TransportKind::Stdio => match child {
            Some(permit) => stdio::spawn(name, cfg, max_message, permit).await,
            None => Err(UpstreamError::Unavailable {
                server: name.clone(),
                reason: "no place for another child process".into(),
            }),
        },
        TransportKind::StreamableHttp => streamable::open(name, cfg, max_message, tool_headers),
        TransportKind::Sse => sse::open(name, cfg, max_message).await,
    }
}

/// Params of a request to a 2026-07-28 server: the caller's per-request context
/// in `_meta` (the server keeps none between requests).
pub fn with_request_meta(
    params: Option<Value>,
    capabilities: &Value,
    client_info: &Value,
    log_level: Option<&str>,
) -> Value {
    let mut params = match params {
        Some(Value::Object(m)) => Value::Object(m),
        _ => json!({}),
    };
    let meta = params
        .as_object_mut()
        .expect("made an object above")
        .entry("_meta")
        .or_insert_with(|| json!({}));
    if let Some(m) = meta.as_object_mut() {
        m.insert(
            "io.modelcontextprotocol/protocolVersion".into(),
            json!(MODERN_VERSION),
        );
        m.insert(
            "io.modelcontextprotocol/clientCapabilities".into(),
            capabilities.clone(),
        );
        m.insert(
            "io.modelcontextprotocol/clientInfo".into(),
            client_info.clone(),
        );
        if let Some(level) = log_level {
            m.insert("io.modelcontextprotocol/logLevel".into(), json!(level));
        }
    }
    params
}
