//! The MCP server handler: what it advertises, its per-session state, and dispatch to tools, resources and prompts.

use std::{
    borrow::Cow,
    collections::BTreeSet,
    sync::{Arc, Mutex, atomic::AtomicU64},
};

use rmcp::{
    ErrorData, RoleServer, ServerHandler,
    model::{
        CallToolRequestParams, CallToolResponse, CompleteRequestParams, CompleteResult,
        GetPromptRequestParams, GetPromptResponse, Implementation, ListPromptsResult,
        ListResourceTemplatesResult, ListResourcesResult, ListToolsResult, LoggingLevel,
        PaginatedRequestParams, ProtocolVersion, ReadResourceRequestParams, ReadResourceResponse,
        ServerCapabilities, ServerConfig, SetLevelRequestParams, SubscribeRequestParams, Tool,
        UnsubscribeRequestParams,
    },
    service::RequestContext,
};
use serde_json::json;

use crate::{http::Reconnects, prompts, resources, tools};

/// The protocol revisions this fixture implements, oldest first. 2026-07-28 (sessionless,
/// `server/discover`) is deliberately left out: the fixture is a legacy-era upstream.
pub const PROTOCOL_VERSIONS: &[ProtocolVersion] = &[
    ProtocolVersion::V_2024_11_05,
    ProtocolVersion::V_2025_03_26,
    ProtocolVersion::V_2025_06_18,
    ProtocolVersion::V_2025_11_25,
];

/// What the command line chose, and the tool catalogue built from it once; shared by every session.
#[derive(Debug)]
pub struct FixtureConfig {
    pub name: String,
    pub extra_tools: usize,
    /// `crash` and `corrupt_stdout` are listed and callable.
    pub fault_tools: bool,
    pub tools: Vec<Tool>,
}

impl FixtureConfig {
    pub fn new(name: String, extra_tools: usize, fault_tools: bool) -> Self {
        Self {
            name,
            extra_tools,
            fault_tools,
            tools: tools::catalog(extra_tools, fault_tools),
        }
    }
}

/// State that belongs to one MCP session (one stdio connection, or one `Mcp-Session-Id`).
#[derive(Debug)]
pub struct SessionState {
    /// The minimum level of `notifications/message` the client asked for with `logging/setLevel`.
    pub log_level: Mutex<LoggingLevel>,
    /// Resource URIs the client subscribed to with `resources/subscribe`.
    pub subscriptions: Mutex<BTreeSet<String>>,
    /// How often `touch_resource` changed the watched resource.
    pub touches: AtomicU64,
    /// How many `sleep` calls the client cancelled (`sleep_cancellations` reports it).
    pub cancelled_sleeps: AtomicU64,
}

impl Default for SessionState {
    fn default() -> Self {
        Self {
            // Until the client says otherwise it gets everything, so a client that never calls
            // `logging/setLevel` still sees the tool logs.
            log_level: Mutex::new(LoggingLevel::Debug),
            subscriptions: Mutex::default(),
            touches: AtomicU64::new(0),
            cancelled_sleeps: AtomicU64::new(0),
        }
    }
}

impl SessionState {
    pub fn wants_log(&self, level: LoggingLevel) -> bool {
        let minimum = *self.log_level.lock().unwrap_or_else(|e| e.into_inner());
        severity(level) >= severity(minimum)
    }

    pub fn is_subscribed(&self, uri: &str) -> bool {
        self.subscriptions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(uri)
    }
}

/// RFC 5424 order, which is the order MCP log levels filter in.
fn severity(level: LoggingLevel) -> u8 {
    match level {
        LoggingLevel::Debug => 0,
        LoggingLevel::Info => 1,
        LoggingLevel::Notice => 2,
        LoggingLevel::Warning => 3,
        LoggingLevel::Error => 4,
        LoggingLevel::Critical => 5,
        LoggingLevel::Alert => 6,
        LoggingLevel::Emergency => 7,
    }
}

/// One session's server. Cheap to clone; clones share the session state.
#[derive(Clone)]
pub struct Fixture {
    pub config: Arc<FixtureConfig>,
    pub session: Arc<SessionState>,
    /// Present when served over HTTP: lets `test_reconnection` wait for the client to resume.
    pub reconnects: Option<Arc<Reconnects>>,
}

impl Fixture {
    /// A server for a new session.
    pub fn new(config: Arc<FixtureConfig>, reconnects: Option<Arc<Reconnects>>) -> Self {
        Self {
            config,
            session: Arc::default(),
            reconnects,
        }
    }
}

/// What `initialize` advertises. Written as the wire JSON so it reads like the spec.
fn capabilities() -> ServerCapabilities {
    let wire = json!({
        "tools": { "listChanged": false },
        "resources": { "subscribe": true, "listChanged": false },
        "prompts": { "listChanged": false },
        "logging": {},
        "completions": {},
    });
    serde_json::from_value(wire).expect("the fixture's capabilities are valid ServerCapabilities")
}

impl ServerHandler for Fixture {
    fn get_info(&self) -> ServerConfig {
        let mut info = ServerConfig::new(capabilities());
        info.protocol_version = ProtocolVersion::V_2025_11_25;
        info.server_info = Implementation::new(self.config.name.clone(), env!("CARGO_PKG_VERSION"));
        info.instructions = Some(
            "Test fixture for the MCP conformance suite and toolgate's own tests. \
             Tools named test_* behave as the conformance scenarios expect; `echo` returns its input."
                .into(),
        );
        info
    }

    fn supported_protocol_versions(&self) -> Cow<'static, [ProtocolVersion]> {
        Cow::Borrowed(PROTOCOL_VERSIONS)
    }

    async fn set_level(
        &self,
        request: SetLevelRequestParams,
        _cx: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        *self
            .session
            .log_level
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = request.level;
        Ok(())
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _cx: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(self.config.tools.clone()))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.config
            .tools
            .iter()
            .find(|tool| tool.name == name)
            .cloned()
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        cx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        tools::call(self, request, cx).await.map(Into::into)
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _cx: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        Ok(ListResourcesResult::with_all_items(resources::list()))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _cx: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        Ok(ListResourceTemplatesResult::with_all_items(
            resources::templates(),
        ))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _cx: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        resources::read(&self.session, &request.uri).map(Into::into)
    }

    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        _cx: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        resources::subscribe(&self.session, request.uri);
        Ok(())
    }

    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        _cx: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        resources::unsubscribe(&self.session, &request.uri);
        Ok(())
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        _cx: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        Ok(ListPromptsResult::with_all_items(prompts::list()))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        _cx: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        prompts::get(&request.name, request.arguments.unwrap_or_default()).map(Into::into)
    }

    async fn complete(
        &self,
        request: CompleteRequestParams,
        _cx: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, ErrorData> {
        prompts::complete(&request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_are_advertised_as_written() {
        let wire = serde_json::to_value(capabilities()).unwrap();
        assert_eq!(wire["resources"]["subscribe"], json!(true));
        assert!(wire.get("logging").is_some());
        assert!(wire.get("completions").is_some());
        assert!(wire.get("prompts").is_some());
    }

    #[test]
    fn log_level_filters_by_severity() {
        let session = SessionState::default();
        assert!(session.wants_log(LoggingLevel::Debug));
        *session.log_level.lock().unwrap() = LoggingLevel::Warning;
        assert!(!session.wants_log(LoggingLevel::Info));
        assert!(session.wants_log(LoggingLevel::Error));
    }
}
