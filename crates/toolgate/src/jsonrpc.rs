//! The JSON-RPC 2.0 envelope as it crosses every transport.
//!
//! Only the envelope is typed. `params` is kept as a `serde_json::Value` (with
//! `preserve_order`) because the gateway rewrites a few of its fields (tool names,
//! progress tokens, cursors, URIs); `result` stays raw unless a stage must rewrite it,
//! so results the gateway does not touch are forwarded exactly as they arrived.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use std::fmt;

/// A JSON-RPC id: a string or an integer (null is not a valid request id in MCP).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Id {
    Num(i64),
    Str(String),
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Id::Num(n) => write!(f, "{n}"),
            Id::Str(s) => write!(f, "{s:?}"),
        }
    }
}

/// A JSON-RPC error object.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ErrorObject {
    pub code: i64,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

impl ErrorObject {
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        ErrorObject {
            code,
            message: message.into(),
            data: None,
        }
    }

    pub fn with_data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }
}

/// Standard JSON-RPC and MCP error codes, plus toolgate's own (-32050 … -32059).
pub mod code {
    pub const PARSE_ERROR: i64 = -32700;
    pub const INVALID_REQUEST: i64 = -32600;
    pub const METHOD_NOT_FOUND: i64 = -32601;
    pub const INVALID_PARAMS: i64 = -32602;
    pub const INTERNAL_ERROR: i64 = -32603;
    /// MCP: resource not found.
    pub const RESOURCE_NOT_FOUND: i64 = -32002;
    /// The upstream server that owns the item is not reachable.
    pub const UPSTREAM_UNAVAILABLE: i64 = -32050;
    /// The upstream server did not answer within its timeout.
    pub const UPSTREAM_TIMEOUT: i64 = -32051;
    /// The upstream server broke the protocol (garbage on stdout, bad framing).
    pub const UPSTREAM_PROTOCOL: i64 = -32052;
    /// A server→client request could not be attributed to a client request.
    pub const UNATTRIBUTED: i64 = -32053;
    /// The request was cancelled.
    pub const CANCELLED: i64 = -32054;
    /// The gateway is shutting down and takes no new requests (HTTP 503).
    pub const SHUTTING_DOWN: i64 = -32055;
}

/// One JSON-RPC message: request, notification, or response.
///
/// Unknown top-level members are not kept: JSON-RPC 2.0 defines none, and MCP puts
/// everything extensible inside `params`/`result`, which are carried untouched.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Message {
    pub jsonrpc: JsonRpcVersion,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Id>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Box<RawValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorObject>,
    /// W3C trace context that travels beside the message, not in it: read from
    /// the HTTP request that brought it, sent as headers by HTTP upstreams
    /// (boxed: almost every message has none).
    #[serde(skip)]
    pub trace: Option<Box<crate::telemetry::TraceHeaders>>,
}

/// The literal `"2.0"`; anything else is rejected at parse time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct JsonRpcVersion;

impl Serialize for JsonRpcVersion {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("2.0")
    }
}

impl<'de> Deserialize<'de> for JsonRpcVersion {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v: std::borrow::Cow<'de, str> = Deserialize::deserialize(d)?;
        if v == "2.0" {
            Ok(JsonRpcVersion)
        } else {
            Err(serde::de::Error::custom("jsonrpc must be \"2.0\""))
        }
    }
}

/// What kind of message this is, decided once from its members.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Request,
    Notification,
    Response,
    Invalid,
}

impl Message {
    pub fn request(id: Id, method: impl Into<String>, params: Option<Value>) -> Self {
        Message {
            jsonrpc: JsonRpcVersion,
            id: Some(id),
            method: Some(method.into()),
            params,
            result: None,
            error: None,
            trace: None,
        }
    }

    pub fn notification(method: impl Into<String>, params: Option<Value>) -> Self {
        Message {
            jsonrpc: JsonRpcVersion,
            id: None,
            method: Some(method.into()),
            params,
            result: None,
            error: None,
            trace: None,
        }
    }

    pub fn response(id: Id, result: Box<RawValue>) -> Self {
        Message {
            jsonrpc: JsonRpcVersion,
            id: Some(id),
            method: None,
            params: None,
            result: Some(result),
            error: None,
            trace: None,
        }
    }

    /// A response whose result is built by the gateway.
    pub fn response_value(id: Id, result: &Value) -> Self {
        Self::response(id, to_raw(result))
    }

    pub fn error_response(id: Option<Id>, error: ErrorObject) -> Self {
        Message {
            jsonrpc: JsonRpcVersion,
            id,
            method: None,
            params: None,
            result: None,
            error: Some(error),
            trace: None,
        }
    }

    pub fn kind(&self) -> Kind {
        match (
            &self.id,
            &self.method,
            self.result.is_some() || self.error.is_some(),
        ) {
            (Some(_), Some(_), false) => Kind::Request,
            (None, Some(_), false) => Kind::Notification,
            (_, None, true) => Kind::Response,
            _ => Kind::Invalid,
        }
    }

    pub fn method(&self) -> &str {
        self.method.as_deref().unwrap_or("")
    }

    /// A member of `params`, if params is an object that has it.
    pub fn param(&self, key: &str) -> Option<&Value> {
        self.params.as_ref()?.get(key)
    }

    /// `params._meta.progressToken`, if present.
    pub fn progress_token(&self) -> Option<&Value> {
        self.param("_meta")?.get("progressToken")
    }

    pub fn to_json(&self) -> String {
        // Written into a buffer this thread keeps, then copied out once at its
        // size: serialising straight into a new `String` grows it by doubling,
        // a reallocation and a copy each time (several for a 1 KB call).
        thread_local! {
            static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        BUF.with_borrow_mut(|buf| {
            buf.clear();
            // Serialising a Message cannot fail: every member is plain JSON.
            if serde_json::to_writer(&mut *buf, self).is_err() {
                return String::new();
            }
            let text = std::str::from_utf8(buf)
                .map(str::to_owned)
                .unwrap_or_default();
            // A rare huge message does not stay in the buffer.
            if buf.capacity() > 64 * 1024 {
                *buf = Vec::new();
            }
            text
        })
    }
}

/// Serialise a value the gateway built into a raw JSON fragment.
pub fn to_raw(v: &Value) -> Box<RawValue> {
    // A serde_json::Value always serialises.
    RawValue::from_string(v.to_string()).unwrap_or_else(|_| empty_object())
}

pub fn empty_object() -> Box<RawValue> {
    RawValue::from_string("{}".to_owned()).expect("literal JSON")
}

/// Why an incoming frame could not be taken as a message.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("malformed JSON: {0}")]
    Json(String),
    #[error("not a JSON-RPC 2.0 message: {0}")]
    Invalid(String),
    #[error("JSON-RPC batches are not supported by this protocol revision")]
    Batch,
}

impl ParseError {
    pub fn to_error(&self) -> ErrorObject {
        let code = match self {
            ParseError::Json(_) => code::PARSE_ERROR,
            ParseError::Invalid(_) | ParseError::Batch => code::INVALID_REQUEST,
        };
        ErrorObject::new(code, self.to_string())
    }
}

/// Parse one frame (a line on stdio, a POST body, an SSE `data`).
pub fn parse(bytes: &[u8]) -> Result<Message, ParseError> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    match first {
        Some(b'[') => return Err(ParseError::Batch),
        Some(b'{') => {}
        _ => {
            // Distinguish "not JSON at all" from "JSON but not an object".
            return match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
                Ok(_) => Err(ParseError::Invalid("expected a JSON object".into())),
                Err(e) => Err(ParseError::Json(e.to_string())),
            };
        }
    }
    match serde_json::from_slice::<Message>(bytes) {
        Ok(m) if m.kind() == Kind::Invalid => Err(ParseError::Invalid(
            "a message needs a method (request/notification) or a result/error (response)".into(),
        )),
        Ok(m) => Ok(m),
        Err(e) if e.is_syntax() || e.is_eof() => Err(ParseError::Json(e.to_string())),
        Err(e) => Err(ParseError::Invalid(e.to_string())),
    }
}

/// Protocol revisions of the legacy (session) era that toolgate negotiates, newest first.
pub const LEGACY_VERSIONS: &[&str] = &["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];
pub const LATEST_LEGACY: &str = "2025-11-25";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        let m = parse(br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#).unwrap();
        assert_eq!(m.kind(), Kind::Request);
        let m = parse(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).unwrap();
        assert_eq!(m.kind(), Kind::Notification);
        let m = parse(br#"{"jsonrpc":"2.0","id":"a","result":{}}"#).unwrap();
        assert_eq!(m.kind(), Kind::Response);
    }

    #[test]
    fn errors_are_classified() {
        assert!(matches!(parse(b"{nope"), Err(ParseError::Json(_))));
        assert!(matches!(parse(b"garbage"), Err(ParseError::Json(_))));
        assert!(matches!(parse(b"42"), Err(ParseError::Invalid(_))));
        assert!(matches!(parse(b"[]"), Err(ParseError::Batch)));
        assert!(matches!(
            parse(br#"{"jsonrpc":"1.0","id":1,"method":"x"}"#),
            Err(ParseError::Invalid(_))
        ));
        assert!(matches!(
            parse(br#"{"jsonrpc":"2.0","id":1}"#),
            Err(ParseError::Invalid(_))
        ));
    }

    #[test]
    fn unknown_fields_in_params_and_result_survive() {
        let text =
            r#"{"jsonrpc":"2.0","id":7,"result":{"zeta":1,"alpha":{"x-unknown":[1.5,"é"]}}}"#;
        let m = parse(text.as_bytes()).unwrap();
        assert_eq!(m.to_json(), text);
        let text =
            r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"zeta":1,"alpha":2}}"#;
        assert_eq!(parse(text.as_bytes()).unwrap().to_json(), text);
    }
}
