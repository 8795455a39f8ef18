//! Transports clients use to reach the gateway: HTTP (Streamable HTTP and the
//! legacy HTTP+SSE, optionally over TLS) and stdio. Each turns its wire format
//! into messages for the gateway core and nothing else. `admin.rs` is the
//! operator's listener: metrics, health and the admin API.

pub mod admin;
mod endpoint;
pub mod http;
pub mod stdio;
pub mod tls;
