//! toolgate-fixture: an MCP server with exactly what the conformance suite's server scenarios expect.
//!
//! It is the upstream that toolgate is tested against (conformance runs, end-to-end tests,
//! benchmarks, the README quickstart), served over stdio, Streamable HTTP, or the legacy
//! HTTP+SSE transport of 2024-11-05.
//!
//! It speaks both protocol eras by default (`--eras`): the legacy one up to 2025-11-25 and
//! 2026-07-28 (sessionless requests, `server/discover`, MRTR, `subscriptions/listen`).
//! Logging, sampling and the log levels are deprecated in rmcp because the 2026-07-28 revision
//! removes or reshapes them; the fixture still serves them, as both eras need them.
#![allow(deprecated)]

mod assets;
mod http;
mod mrtr;
mod prompts;
mod resources;
mod server;
mod sse;
mod tasks;
mod tools;
mod unknown_fields;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use rmcp::ServiceExt as _;
use tracing_subscriber::EnvFilter;

use crate::server::{Eras, Fixture, FixtureConfig};
use crate::unknown_fields::WithUnknownFields;

#[derive(Debug, Parser)]
#[command(name = "toolgate-fixture", version, about)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
    #[command(subcommand)]
    transport: Transport,
}

#[derive(Debug, Args)]
struct CommonArgs {
    /// The name this server reports in `serverInfo` (tell apart several copies behind one gateway).
    #[arg(
        long,
        global = true,
        env = "TOOLGATE_FIXTURE_NAME",
        default_value = "toolgate-fixture"
    )]
    name: String,
    /// Add N generated tools `tool_0` .. `tool_{N-1}` that echo their arguments (catalog tests).
    #[arg(
        long,
        global = true,
        env = "TOOLGATE_FIXTURE_EXTRA_TOOLS",
        default_value_t = 0,
        value_name = "N"
    )]
    extra_tools: usize,
    /// Add tools that break the server on purpose, for failure tests: `crash` exits the process at
    /// once, `corrupt_stdout` writes a line that is not JSON-RPC to stdout and never answers,
    /// `flood` sends notifications as fast as it can, `big` answers with a result of any size.
    #[arg(long, global = true, env = "TOOLGATE_FIXTURE_FAULT_TOOLS")]
    fault_tools: bool,
    /// Which protocol eras to serve: `both` (legacy `initialize` sessions and 2026-07-28
    /// sessionless requests), `legacy` (up to 2025-11-25) or `modern` (2026-07-28 only).
    #[arg(
        long,
        global = true,
        env = "TOOLGATE_FIXTURE_ERAS",
        value_enum,
        default_value_t = Eras::Both
    )]
    eras: Eras,
}

#[derive(Debug, Subcommand)]
enum Transport {
    /// Serve one MCP session on stdin/stdout (stdout carries nothing but MCP messages).
    Stdio,
    /// Serve Streamable HTTP; the MCP endpoint is `/mcp`.
    Http(http::HttpArgs),
    /// Serve the legacy HTTP+SSE transport (2024-11-05): `GET /sse`, then `POST /message?sessionId=…`.
    Sse(sse::SseArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging();
    let config = FixtureConfig::new(
        cli.common.name,
        cli.common.extra_tools,
        cli.common.fault_tools,
        cli.common.eras,
    );
    match cli.transport {
        Transport::Stdio => serve_stdio(config).await,
        Transport::Http(args) => http::serve(config, args).await,
        Transport::Sse(args) => sse::serve(config, args).await,
    }
}

/// Logs go to stderr only: in stdio mode stdout is the protocol channel.
fn init_logging() {
    let filter = EnvFilter::try_from_env("TOOLGATE_FIXTURE_LOG")
        .unwrap_or_else(|_| EnvFilter::new("toolgate_fixture=info,rmcp=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
}

async fn serve_stdio(config: FixtureConfig) -> anyhow::Result<()> {
    let fixture = WithUnknownFields(Fixture::new(config.into(), None));
    let running = fixture
        .serve(rmcp::transport::stdio())
        .await
        .context("the stdio MCP session did not start (was initialize sent?)")?;
    tracing::info!("serving MCP on stdio");
    running
        .waiting()
        .await
        .context("stdio session ended abnormally")?;
    Ok(())
}
