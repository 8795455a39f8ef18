//! The declarative configuration: typed, validated, and compiled once into a snapshot.
//!
//! Every struct denies unknown fields so a typo is an error with file, line and key,
//! never a silently ignored setting. `load.rs` reads files (YAML, JSON, or the
//! `mcpServers` form desktop clients use) into these types.

mod audit;
mod duration;
mod limits;
mod load;
mod stdio;
mod telemetry;

pub use audit::{
    AuditConfig, AuditSink, JournalSetting, JsonlSink, Overflow, Recording, Redaction, ServerAudit,
};
pub use duration::Seconds;
pub use limits::{LIMITED_METHODS, LimitDimension, LimitMatch, LimitRule, Quota, Rate};
pub use load::{ConfigError, load_file, load_str};
pub use stdio::{ByteSize, RestartPolicy, Rlimits, Sandbox};
pub use telemetry::TelemetryConfig;

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The JSON Schema of the config file, generated from these types.
pub fn json_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(Config)).unwrap_or_default()
}

/// The whole gateway configuration.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address of the MCP listener (`/mcp`, and the legacy `/sse` + `/message`).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Serve HTTPS (only) on `listen`, optionally asking clients for certificates.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// When tool and prompt names get the server prefix.
    #[serde(default)]
    pub prefix_mode: PrefixMode,
    /// Between the prefix and the item's own name.
    #[serde(default = "default_separator")]
    pub separator: String,
    /// Allow a non-loopback `listen` address although no authentication is
    /// configured. Without it toolgate refuses to expose unauthenticated tools to
    /// the network.
    #[serde(default)]
    pub allow_unauthenticated_network: bool,
    /// Extra `Origin` values browsers may send (loopback origins are always allowed
    /// while the gateway listens on loopback).
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Largest message, in bytes, in either direction: a client's request body or
    /// stdio line (bigger ones get HTTP 413), and a server's message or response
    /// (a server that sends a bigger one is treated as broken).
    #[serde(default = "default_max_body")]
    pub max_message_bytes: usize,
    /// Items per page of `tools/list`, `prompts/list`, `resources/list`.
    #[serde(default = "default_page_size")]
    pub page_size: usize,
    /// How often every server's lists are re-read even without `list_changed`.
    #[serde(default = "default_catalog_ttl")]
    pub catalog_ttl: Seconds,
    /// How often an idle SSE stream gets a keep-alive comment, so proxies and
    /// clients do not time it out.
    #[serde(default = "default_keep_alive")]
    pub sse_keep_alive: Seconds,
    /// How long a call waits for a modern client's answers to its input requests
    /// (MRTR) before it is cancelled and its `requestState` stops working.
    #[serde(default = "default_input_ttl")]
    pub input_required_ttl: Seconds,
    /// A legacy session with no traffic and no open stream is dropped after this.
    #[serde(default = "default_session_idle")]
    pub session_idle_timeout: Seconds,
    /// On SIGTERM (or Ctrl-C) the gateway stops accepting connections and new
    /// requests, lets the calls in flight finish for at most this long, then
    /// closes sessions and stops its servers.
    #[serde(default = "default_shutdown_grace")]
    pub shutdown_grace: Seconds,
    /// Bytes of results the result cache (`cache:` per server) keeps at most;
    /// the least used go first.
    #[serde(default = "default_result_cache_bytes")]
    pub result_cache_bytes: u64,
    /// How callers prove who they are. Without it the gateway serves the anonymous
    /// local user, on loopback only.
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    /// Cedar policies deciding every call. With `auth` configured and no policy,
    /// every call is denied.
    #[serde(default)]
    pub policy: Option<PolicyConfig>,
    /// Where API keys and the audit trail live: `sqlite://PATH` (relative
    /// to this file; created if missing) or `postgres://…`.
    #[serde(default = "default_storage")]
    pub storage: String,
    /// The audit trail: every request, decision, session, upstream change and
    /// reload, with who asked. On by default, into `storage`.
    #[serde(default)]
    pub audit: AuditConfig,
    /// OpenTelemetry: a span per request and per upstream call, and audit
    /// events as log records, exported over OTLP/HTTP. Off without it.
    #[serde(default)]
    pub telemetry: Option<TelemetryConfig>,
    /// Prometheus metrics, health and the admin API on a separate listener.
    #[serde(default)]
    pub admin: Option<AdminConfig>,
    /// The MCP servers behind the gateway, by name (`mcpServers` is accepted too).
    #[serde(alias = "mcpServers", default)]
    pub servers: IndexMap<String, ServerConfig>,
    /// Further MCP endpoints besides `/mcp`, by name: each serves Streamable HTTP
    /// on its own path as a virtual server with a subset of the servers and tools
    /// and its own access rules (checked before policies).
    #[serde(default)]
    pub endpoints: IndexMap<String, EndpointConfig>,
    /// Rate limits, quotas and concurrency limits on calls (`tools/call`,
    /// `prompts/get`, `resources/read`, `completion/complete`), checked after
    /// authorization; every rule that matches a call must admit it.
    #[serde(default)]
    pub limits: Vec<LimitRule>,
    /// GET streams (SSE) one legacy session may hold open at once; one more is
    /// refused with 429.
    #[serde(default = "default_session_streams")]
    pub max_session_streams: usize,
    /// A Redis (or Valkey) server, `redis://[:PASSWORD@]HOST[:PORT][/DB]`,
    /// holding state the replicas of a gateway share: today, the budgets of
    /// `limits`. Without it each process keeps its own budgets.
    #[serde(default)]
    pub redis: Option<String>,
    /// Most stdio child processes alive at once, over every server. The one
    /// child the gateway keeps per stdio server is always started (and
    /// counted); a session's or principal's child beyond the cap is refused,
    /// and its call fails with -32050 naming the cap.
    #[serde(default = "default_max_children")]
    pub max_children: usize,
    /// A `per_session` or `per_principal` stdio child with no call for this
    /// long is stopped; the next call starts a new one.
    #[serde(default = "default_child_idle")]
    pub child_idle_timeout: Seconds,
    /// Where the file came from, for messages; not part of the file.
    #[serde(skip)]
    #[schemars(skip)]
    pub source: Option<PathBuf>,
    /// `listen` as given on the command line (`serve --listen`), over the
    /// file's; kept when the file is reloaded. Not part of the file.
    #[serde(skip)]
    #[schemars(skip)]
    pub listen_override: Option<SocketAddr>,
}

/// Authentication of callers.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// The URL clients use for the MCP endpoint (e.g. `https://gw.example.com/mcp`):
    /// the audience tokens must name, and the `resource` of the protected-resource
    /// metadata. Defaults to `http://{listen}/mcp`.
    pub resource: Option<String>,
    /// Authorization servers whose tokens are accepted, advertised in the
    /// protected-resource metadata.
    #[serde(default)]
    pub authorization_servers: Vec<String>,
    /// Scopes advertised in the metadata and in `WWW-Authenticate` challenges.
    #[serde(default)]
    pub scopes_supported: Vec<String>,
    /// Accept callers without credentials as this user. Only for a local
    /// single-user setup: refused on a non-loopback address unless
    /// `allow_unauthenticated_network` is set.
    pub anonymous: Option<AnonymousConfig>,
    /// API keys created with `toolgate keys create`, kept hashed in `storage`.
    pub api_keys: Option<ApiKeyConfig>,
    /// JWT bearer tokens from these issuers.
    #[serde(default)]
    pub jwt: Vec<JwtIssuerConfig>,
    /// Client certificates verified against `tls.client_ca`, and how one names
    /// the principal. Needs `tls.client_ca`; `mtls: {}` takes the user from the
    /// subject's common name.
    pub mtls: Option<MtlsConfig>,
}

/// TLS on the MCP listener: with it, `serve` speaks HTTPS only (HTTP/2 and
/// HTTP/1.1, by ALPN). Paths are relative to this file. The files are re-read
/// every `reload`: a changed, valid certificate and key (or client CA) replace
/// the served ones for new connections without a restart, while a broken
/// replacement is logged and the old one keeps serving.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with the server's certificate chain, its own certificate first.
    pub cert: PathBuf,
    /// PEM file with the private key of `cert` (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM file with the CA certificates client certificates must chain to.
    /// With it, clients are asked for a certificate and `auth.mtls` must say how
    /// one becomes a principal.
    pub client_ca: Option<PathBuf>,
    /// Whether a client must present a certificate to connect at all (only with
    /// `client_ca`; default `optional`).
    pub client_auth: Option<ClientAuth>,
    /// How often the certificate, key and client CA files are checked for
    /// changes.
    #[serde(default = "default_tls_reload")]
    pub reload: Seconds,
}

/// Whether clients must present a certificate.
#[derive(Debug, Clone, Copy, Default, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// A client may connect without one and authenticate otherwise (an API key,
    /// a JWT, or as the anonymous user if configured); one it presents must
    /// chain to `client_ca`.
    #[default]
    Optional,
    /// The TLS handshake fails without a certificate that chains to `client_ca`.
    Required,
}

/// How a verified client certificate becomes the principal. A certificate that
/// lacks the field `user` (or a field `tenant`) names is refused with 401; a
/// bearer token or API key sent on the same connection takes precedence over the
/// certificate.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MtlsConfig {
    /// The field whose (first) value is the user.
    #[serde(default = "default_mtls_user")]
    pub user: CertField,
    /// Where the tenant comes from; none by default.
    pub tenant: Option<TenantSource>,
    /// A field whose every value becomes a group (e.g. `subject_ou`); none by
    /// default. A certificate without it simply has no groups.
    pub groups: Option<CertField>,
}

/// A field of a client certificate.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CertField {
    /// The subject's common name (CN).
    SubjectCn,
    /// The subject's organization (O).
    SubjectO,
    /// The subject's organizational units (OU).
    SubjectOu,
    /// An e-mail address in the subject alternative names.
    SanEmail,
    /// A URI in the subject alternative names (e.g. a SPIFFE id).
    SanUri,
    /// A DNS name in the subject alternative names.
    SanDns,
}

/// Where a client certificate's tenant comes from.
#[derive(Debug, Clone, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum TenantSource {
    /// The (first) value of this certificate field, e.g. `{field: subject_o}`.
    Field(CertField),
    /// The same tenant for every certificate, e.g. `{fixed: acme}`.
    Fixed(String),
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AnonymousConfig {
    /// The user anonymous callers act as.
    #[serde(default = "default_anonymous_user")]
    pub user: String,
    #[serde(default)]
    pub groups: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// Header carrying the key. `Authorization` means `Authorization: Bearer KEY`;
    /// any other header carries the bare key.
    #[serde(default = "default_api_key_header")]
    pub header: String,
}

/// One trusted token issuer.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JwtIssuerConfig {
    /// Expected `iss`.
    pub issuer: String,
    /// Where the issuer's signing keys are published (fetched, cached, refreshed
    /// when a token names an unknown `kid`).
    pub jwks_url: String,
    /// Accepted `aud` values; defaults to `auth.resource`.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Accepted signature algorithms (asymmetric only; `none` and HMAC are never
    /// accepted).
    #[serde(default = "default_jwt_algorithms")]
    pub algorithms: Vec<String>,
    /// Clock skew tolerated on `exp` and `nbf` (at most 5 minutes).
    #[serde(default = "default_leeway")]
    pub leeway: Seconds,
    /// Scopes every token must carry.
    #[serde(default)]
    pub required_scopes: Vec<String>,
    /// How claims become the principal.
    #[serde(default)]
    pub claims: ClaimMapping,
}

/// Claim names for each part of the principal (dotted paths reach into objects).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimMapping {
    #[serde(default = "default_claim_user")]
    pub user: String,
    /// The first of these claims present names the agent.
    #[serde(default = "default_claim_agent")]
    pub agent: Vec<String>,
    pub tenant: Option<String>,
    #[serde(default = "default_claim_groups")]
    pub groups: String,
    /// Principal attribute name → claim.
    #[serde(default)]
    pub attrs: BTreeMap<String, String>,
}

impl Default for ClaimMapping {
    fn default() -> Self {
        ClaimMapping {
            user: default_claim_user(),
            agent: default_claim_agent(),
            tenant: None,
            groups: default_claim_groups(),
            attrs: BTreeMap::new(),
        }
    }
}

/// One extra MCP endpoint: a path, what it exposes and who may use it. Every rule
/// that is set must hold; a rule left out does not restrict.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    /// Where it is served, e.g. `/mcp/finance`. Must start with `/` and must not
    /// be `/mcp`, `/sse`, `/message`, `/healthz`, under `/.well-known/`, or
    /// another endpoint's path.
    pub path: String,
    /// The servers it exposes (names from `servers`); all when left out.
    pub servers: Option<Vec<String>>,
    /// The tools it exposes, by their exposed (prefixed) names; all tools of its
    /// servers when left out.
    pub tools: Option<Vec<String>>,
    /// Only callers of this tenant.
    pub tenant: Option<String>,
    /// Only callers in at least one of these groups.
    pub groups: Option<Vec<String>>,
    /// Only callers who authenticated in one of these ways.
    pub methods: Option<Vec<EndpointMethod>>,
    /// Scopes the caller's credential must carry, all of them; a caller without
    /// them gets 403 `insufficient_scope` with a challenge naming them.
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// An authentication method an endpoint accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EndpointMethod {
    Anonymous,
    ApiKey,
    Jwt,
    Mtls,
}

/// Authorization policies.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// A `.cedar` file or a directory of them (relative to this file); reloaded
    /// when it changes.
    pub path: PathBuf,
    /// Tell clients which policies denied a call (operators always see them).
    #[serde(default)]
    pub reveal_reasons: bool,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PrefixMode {
    /// Every tool and prompt is `{server}{sep}{name}`: names never change when a
    /// server is added.
    #[default]
    Always,
    /// Only names that two servers share get the prefix.
    Conditional,
    /// Names are exposed as the servers give them; a clash is resolved by
    /// prefixing the later server's item.
    Never,
}

/// One upstream MCP server.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Program to start for a stdio server (only from this file, never from a client).
    pub command: Option<String>,
    #[serde(default)]
    pub args: Vec<String>,
    /// Environment of the child: only these variables (plus PATH and HOME) reach it.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    pub cwd: Option<PathBuf>,
    /// URL of a Streamable HTTP endpoint or of a legacy HTTP+SSE `/sse` endpoint.
    pub url: Option<String>,
    /// How to reach `url` (the `mcpServers` form calls this `type`).
    #[serde(alias = "type")]
    pub transport: Option<TransportKind>,
    /// Headers sent with every HTTP request to the server (`${VAR}` is expanded).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Prefix for this server's items instead of its name.
    pub prefix: Option<String>,
    #[serde(default)]
    pub isolation: Isolation,
    /// Which protocol era the server speaks: probed (`server/discover`, then
    /// `initialize`) unless set. `sse` servers are always legacy.
    #[serde(default)]
    pub era: UpstreamEra,
    /// How long one call may take before it is cancelled upstream
    /// (`notifications/cancelled`) and the client gets `-32051`. Per tool or
    /// prompt: `tools.timeouts` / `prompts.timeouts`.
    #[serde(default = "default_timeout")]
    pub timeout: Seconds,
    /// Results of this server worth reusing for the same caller.
    #[serde(default)]
    pub cache: ServerCache,
    /// A circuit breaker: after `failures` failed calls in a row (or a failure
    /// rate of `error_rate` within `window`) the server's calls fail at once —
    /// or, with `failure: open`, its items leave discovery — for `cooldown`,
    /// then one probe decides. Off by default.
    pub circuit: Option<CircuitConfig>,
    /// Active health checks of the server's shared connection: a `ping`
    /// (`server/discover` for 2026-07-28 servers) every `interval`; after
    /// `failures` unanswered ones in a row the connection is dropped and made
    /// again (a stdio child is restarted). `health: { interval: 0s }` turns
    /// them off.
    #[serde(default)]
    pub health: HealthConfig,
    /// With it, each progress notification the server sends for a call starts
    /// the call's `timeout` again, up to this much in all; without it, progress
    /// does not extend a call.
    pub max_timeout: Option<Seconds>,
    #[serde(default)]
    pub failure: FailureMode,
    #[serde(default)]
    pub tools: ItemRules,
    #[serde(default)]
    pub prompts: ItemRules,
    /// What policies know about this server (`resource.risk == "high"`); its tools,
    /// prompts and resources inherit these unless `tools.labels` says otherwise.
    #[serde(default)]
    pub labels: Labels,
    /// What audit records of this server's arguments and results.
    #[serde(default)]
    pub audit: ServerAudit,
    /// Largest `params` of a call to this server, in bytes of JSON; a bigger
    /// call is refused (`request_too_large`) before it reaches the server.
    /// Unlimited by default (within `max_message_bytes`).
    pub max_request_bytes: Option<usize>,
    /// Largest result of a call to this server, in bytes of JSON; a bigger one
    /// reaches the client as an error (`result_too_large`) instead. Unlimited
    /// by default (within `max_message_bytes`).
    pub max_result_bytes: Option<usize>,
    /// Keep the entry but do not start or expose it (`mcpServers` files use this).
    #[serde(default)]
    pub disabled: bool,
    /// stdio only: restarts allowed before a crash-looping server is held down.
    #[serde(default)]
    pub restart: RestartPolicy,
    /// stdio only: operating-system resource limits of the child.
    #[serde(default)]
    pub rlimits: Option<Rlimits>,
    /// stdio only: confine the child's filesystem access (Linux, Landlock).
    #[serde(default)]
    pub sandbox: Option<Sandbox>,
}

#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, PartialEq, Eq)]
pub enum TransportKind {
    #[serde(rename = "stdio")]
    Stdio,
    #[serde(
        rename = "streamable-http",
        alias = "http",
        alias = "streamableHttp",
        alias = "streamable_http"
    )]
    StreamableHttp,
    #[serde(rename = "sse")]
    Sse,
}

/// Who shares an upstream session (and, for stdio, a child process).
#[derive(Debug, Clone, Copy, Default, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Isolation {
    /// One upstream session for every caller; ids and tokens are remapped.
    Shared,
    /// One upstream session per authenticated principal.
    PerPrincipal,
    /// One upstream session per downstream session: the safe default, since a
    /// server's session state (subscriptions, roots, server→client requests) then
    /// never mixes two clients.
    #[default]
    PerSession,
}

/// The protocol era of an upstream server.
#[derive(Debug, Clone, Copy, Default, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamEra {
    /// Probe once: `server/discover` first, falling back to `initialize`.
    #[default]
    Auto,
    /// 2024-11-05 … 2025-11-25: sessions opened with `initialize`.
    Legacy,
    /// 2026-07-28: stateless requests.
    Modern,
}

/// What the catalog does while a server is down.
#[derive(Debug, Clone, Copy, Default, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FailureMode {
    /// Its items vanish; every other server keeps serving.
    #[default]
    Open,
    /// The gateway does not start without it, and while it is down later its
    /// items stay listed and calls fail with a clear error.
    Closed,
}

/// Per-item hiding and renaming for tools or prompts.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ItemRules {
    /// Names (as the server gives them) that clients never see.
    #[serde(default)]
    pub hide: Vec<String>,
    /// Server name → exposed name (used as is: no prefix is added).
    #[serde(default)]
    pub rename: BTreeMap<String, String>,
    /// Server name → labels of that item for policies, over the server's own
    /// (`refund: { risk: high }`).
    #[serde(default)]
    pub labels: BTreeMap<String, Labels>,
    /// Server name → how long a call of that item may take, instead of the
    /// server's `timeout` (`report: 5m`).
    #[serde(default)]
    pub timeouts: BTreeMap<String, Seconds>,
}

/// What of a server's results the gateway reuses, and for how long. A result
/// is reused only for the same caller (principal and endpoint), the same
/// item and the same arguments; errors are never reused.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServerCache {
    /// How long a `resources/read` result is reused (default: never).
    pub resources: Option<Seconds>,
    /// Tools (by the server's own name) whose results are reused, and for how
    /// long. Only for tools that read and never change anything, and answer
    /// the same arguments the same way: the operator vouches for that here.
    #[serde(default)]
    pub tools: BTreeMap<String, Seconds>,
}

/// When a server's circuit opens, and for how long.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CircuitConfig {
    /// Failed calls in a row (unreachable, broken connection, protocol
    /// violation, timeout) that open the circuit.
    #[serde(default = "default_circuit_failures")]
    pub failures: u32,
    /// How long calls fail at once before one probe is let through.
    #[serde(default = "default_circuit_cooldown")]
    pub cooldown: Seconds,
    /// The share of failed calls (0 < rate <= 1) within `window` that opens
    /// the circuit too, once `min_calls` calls were made in the window. Off
    /// unless set.
    pub error_rate: Option<f64>,
    /// The window `error_rate` is measured over.
    #[serde(default = "default_circuit_window")]
    pub window: Seconds,
    /// Calls in the window before `error_rate` may open the circuit.
    #[serde(default = "default_circuit_min_calls")]
    pub min_calls: u32,
}

/// Active health checks of one server (see [`ServerConfig::health`]).
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// How often the shared connection is probed; `0s` turns probing off.
    #[serde(default = "default_health_interval")]
    pub interval: Seconds,
    /// How long one probe may take.
    #[serde(default = "default_health_timeout")]
    pub timeout: Seconds,
    /// Probes in a row without an answer before the connection is made again.
    #[serde(default = "default_health_failures")]
    pub failures: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            interval: default_health_interval(),
            timeout: default_health_timeout(),
            failures: default_health_failures(),
        }
    }
}

fn default_health_interval() -> Seconds {
    Seconds(Duration::from_secs(30))
}
fn default_health_timeout() -> Seconds {
    Seconds(Duration::from_secs(5))
}
fn default_health_failures() -> u32 {
    3
}
fn default_circuit_window() -> Seconds {
    Seconds(Duration::from_secs(60))
}
fn default_circuit_min_calls() -> u32 {
    20
}

fn default_circuit_failures() -> u32 {
    5
}
fn default_circuit_cooldown() -> Seconds {
    Seconds(Duration::from_secs(30))
}

/// The time limits of one call (see [`ServerConfig::call_timeouts`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallTimeouts {
    /// Without an answer (or, when progress extends calls, without progress).
    pub idle: Duration,
    /// In all, whatever the server reports.
    pub total: Duration,
}

impl CallTimeouts {
    /// Whether progress notifications extend the call.
    pub fn extended_by_progress(&self) -> bool {
        self.total > self.idle
    }
}

/// Labels that Cedar policies can test: set by the operator here, never by a
/// server, so unlike a tool's annotations they can be trusted.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Labels {
    /// Who is responsible for it (`resource.owner`).
    pub owner: Option<String>,
    /// Where it runs, e.g. `production` (`resource.environment`).
    pub environment: Option<String>,
    /// How much harm a mistaken call can do, e.g. `low` / `high` (`resource.risk`).
    pub risk: Option<String>,
    /// Free-form labels (`resource.labels.contains("pii")`).
    #[serde(default)]
    pub extra: Vec<String>,
}

impl Labels {
    /// These labels over `base`: a value set here wins, `extra` is the union.
    pub fn over(&self, base: &Labels) -> Labels {
        let mut extra = base.extra.clone();
        for l in &self.extra {
            if !extra.contains(l) {
                extra.push(l.clone());
            }
        }
        Labels {
            owner: self.owner.clone().or_else(|| base.owner.clone()),
            environment: self
                .environment
                .clone()
                .or_else(|| base.environment.clone()),
            risk: self.risk.clone().or_else(|| base.risk.clone()),
            extra,
        }
    }
}

impl ServerConfig {
    /// The transport this entry resolves to (validated in `load`).
    pub fn transport(&self) -> TransportKind {
        match (self.transport, &self.command) {
            (Some(t), _) => t,
            (None, Some(_)) => TransportKind::Stdio,
            (None, None) => TransportKind::StreamableHttp,
        }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout.0
    }

    /// How long a `method` call of item `name` (the server's own name) may go
    /// without an answer, and without progress where progress extends it; and
    /// how long it may take in all.
    pub fn call_timeouts(&self, method: &str, name: Option<&str>) -> CallTimeouts {
        let rules = match method {
            "tools/call" => Some(&self.tools),
            "prompts/get" => Some(&self.prompts),
            _ => None,
        };
        let idle = rules
            .zip(name)
            .and_then(|(r, n)| r.timeouts.get(n))
            .map_or(self.timeout.0, |t| t.0);
        CallTimeouts {
            idle,
            total: self.max_timeout.map_or(idle, |m| m.0.max(idle)),
        }
    }
}

impl Config {
    /// Where `policy.path` points, relative paths taken from the config file's
    /// directory.
    pub fn policy_path(&self) -> Option<PathBuf> {
        Some(self.path_from_file(&self.policy.as_ref()?.path))
    }

    /// Whether callers without credentials are served: without `auth` (the local
    /// user) or with `auth.anonymous`.
    pub fn serves_anonymous(&self) -> bool {
        self.auth.as_ref().is_none_or(|a| a.anonymous.is_some())
    }

    /// A path written in this file: relative paths are taken from the file's
    /// directory (the working directory for a config without a file).
    pub fn path_from_file(&self, path: &Path) -> PathBuf {
        match self.source.as_deref().and_then(Path::parent) {
            Some(dir) if path.is_relative() => dir.join(path),
            _ => path.to_path_buf(),
        }
    }

    /// Servers that are not disabled, in file order.
    pub fn enabled_servers(&self) -> impl Iterator<Item = (&str, &ServerConfig)> {
        self.servers
            .iter()
            .filter(|(_, s)| !s.disabled)
            .map(|(name, s)| (name.as_str(), s))
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_tls_reload() -> Seconds {
    Seconds(Duration::from_secs(30))
}
fn default_mtls_user() -> CertField {
    CertField::SubjectCn
}
fn default_storage() -> String {
    "sqlite://toolgate.db".into()
}
fn default_anonymous_user() -> String {
    "local".into()
}
fn default_api_key_header() -> String {
    "Authorization".into()
}
fn default_jwt_algorithms() -> Vec<String> {
    ["RS256", "PS256", "ES256", "EdDSA"]
        .map(String::from)
        .to_vec()
}
fn default_leeway() -> Seconds {
    Seconds(Duration::from_secs(30))
}
fn default_claim_user() -> String {
    "sub".into()
}
fn default_claim_agent() -> Vec<String> {
    vec!["azp".into(), "client_id".into()]
}
fn default_claim_groups() -> String {
    "groups".into()
}
fn default_separator() -> String {
    "__".into()
}
fn default_max_body() -> usize {
    4 * 1024 * 1024
}
fn default_session_streams() -> usize {
    8
}
fn default_page_size() -> usize {
    500
}
fn default_catalog_ttl() -> Seconds {
    Seconds(Duration::from_secs(300))
}
fn default_input_ttl() -> Seconds {
    Seconds(Duration::from_secs(300))
}
fn default_keep_alive() -> Seconds {
    Seconds(Duration::from_secs(15))
}
fn default_result_cache_bytes() -> u64 {
    64 << 20
}
fn default_shutdown_grace() -> Seconds {
    Seconds(Duration::from_secs(30))
}
fn default_session_idle() -> Seconds {
    Seconds(Duration::from_secs(1800))
}
fn default_max_children() -> usize {
    256
}
fn default_child_idle() -> Seconds {
    Seconds(Duration::from_secs(600))
}
fn default_timeout() -> Seconds {
    Seconds(Duration::from_secs(60))
}

/// The admin listener: `/metrics` (Prometheus), `/healthz`, `/readyz`, and the
/// admin API under `/admin/v1/` (audit queries).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Its address; keep it off the public network.
    pub listen: SocketAddr,
    /// Principals in one of these groups may use the admin API (authenticated
    /// like MCP callers). Without `auth`, the local user may, on loopback only.
    #[serde(default = "default_admin_groups")]
    pub groups: Vec<String>,
}

fn default_admin_groups() -> Vec<String> {
    vec!["toolgate-admins".into()]
}
