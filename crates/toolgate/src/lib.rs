//! toolgate: a governed MCP gateway. One endpoint in front of many MCP servers.
//!
//! See `docs/architecture.md` for the map of this crate.

pub mod audit;
pub mod auth;
pub mod catalog;
pub mod config;
pub mod downstream;
pub mod gateway;
pub mod headers;
pub mod jsonrpc;
pub mod limits;
pub mod metrics;
pub mod names;
pub mod policy;
pub mod seal;
pub mod sse;
pub mod store;
pub mod telemetry;
pub mod upstream;
