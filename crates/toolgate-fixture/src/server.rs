//! The MCP server handler: what it advertises, its per-session state, and dispatch to tools, resources and prompts.

use std::{
    borrow::Cow,
    collections::BTreeSet,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use rmcp::{
    ErrorData, RoleServer, ServerHandler,
    model::{
        CallToolRequestParams, CallToolResponse, CancelTaskParams, CompleteRequestParams,
        CompleteResult, GetPromptRequestParams, GetPromptResponse, GetTaskParams, GetTaskResult,
        Implementation, InitializeRequestParams, InitializeResult, ListPromptsResult,
        ListResourceTemplatesResult, ListResourcesResult, ListToolsResult, LoggingLevel,
        PaginatedRequestParams, ProtocolVersion, ReadResourceRequestParams, ReadResourceResponse,
        ServerCapabilities, ServerConfig, ServerNotification, SetLevelRequestParams,
        SubscribeRequestParams, SubscriptionFilter, Tool, UnsubscribeRequestParams,
        UpdateTaskParams,
    },
    service::{RequestContext, SubscriptionContext, SubscriptionSendError},
    task_manager::TaskManager,
};
use serde_json::json;
use tokio::sync::broadcast;

use crate::{
    http::Reconnects,
    mrtr::{self, StateSeal},
    prompts, resources, tasks, tools,
};

/// The protocol revisions this fixture implements, oldest first: the legacy era (sessions,
/// `initialize`) and 2026-07-28 (sessionless, `server/discover`, MRTR, `subscriptions/listen`).
pub const PROTOCOL_VERSIONS: &[ProtocolVersion] = &[
    ProtocolVersion::V_2024_11_05,
    ProtocolVersion::V_2025_03_26,
    ProtocolVersion::V_2025_06_18,
    ProtocolVersion::V_2025_11_25,
    ProtocolVersion::V_2026_07_28,
];

/// Which protocol eras the fixture serves (`--eras`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Eras {
    /// Both: legacy clients `initialize`, 2026-07-28 clients send self-contained requests.
    Both,
    /// Up to 2025-11-25 only: a 2026-07-28 request gets UnsupportedProtocolVersion (-32022).
    Legacy,
    /// 2026-07-28 only: `initialize` fails, as against a modern-only server.
    Modern,
}

impl Eras {
    pub fn protocol_versions(self) -> &'static [ProtocolVersion] {
        let legacy = PROTOCOL_VERSIONS.len() - 1;
        match self {
            Eras::Both => PROTOCOL_VERSIONS,
            Eras::Legacy => &PROTOCOL_VERSIONS[..legacy],
            Eras::Modern => &PROTOCOL_VERSIONS[legacy..],
        }
    }
}

/// What the command line chose, and the tool catalogue built from it once; shared by every session.
pub struct FixtureConfig {
    pub name: String,
    pub extra_tools: usize,
    /// `crash`, `corrupt_stdout`, `flood` and `big` are listed and callable.
    pub fault_tools: bool,
    pub eras: Eras,
    pub tools: Vec<Tool>,
    /// Seals the `requestState` of MRTR tools (shared: a retry may reach another session object).
    pub seal: StateSeal,
    /// List changes and resource updates, for the `subscriptions/listen` streams.
    pub changes: Changes,
    /// What 2026-07-28 requests share in place of a session (they have none): the cancelled
    /// `sleep` count and the watched resource's touches.
    pub sessionless: Arc<SessionState>,
    /// Tasks of the `io.modelcontextprotocol/tasks` extension. Process-wide: a task outlives the
    /// request that created it, and 2026-07-28 requests have no session to keep it in.
    pub tasks: TaskManager,
}

impl FixtureConfig {
    pub fn new(name: String, extra_tools: usize, fault_tools: bool, eras: Eras) -> Self {
        Self {
            name,
            extra_tools,
            fault_tools,
            eras,
            tools: tools::catalog(extra_tools, fault_tools),
            seal: StateSeal::default(),
            changes: Changes::default(),
            sessionless: Arc::default(),
            tasks: TaskManager::new(),
        }
    }
}

/// A change that `subscriptions/listen` streams may have asked to hear about.
#[derive(Debug, Clone)]
pub enum Change {
    ToolsListChanged,
    PromptsListChanged,
    ResourceUpdated(String),
}

impl Change {
    fn notification(&self) -> ServerNotification {
        let wire = match self {
            Change::ToolsListChanged => json!({ "method": "notifications/tools/list_changed" }),
            Change::PromptsListChanged => json!({ "method": "notifications/prompts/list_changed" }),
            Change::ResourceUpdated(uri) => json!({
                "method": "notifications/resources/updated",
                "params": { "uri": uri },
            }),
        };
        serde_json::from_value(wire).expect("the fixture's change notifications are valid")
    }
}

/// The process-wide record of list changes, broadcast to every open `subscriptions/listen` stream.
#[derive(Debug)]
pub struct Changes {
    sender: broadcast::Sender<Change>,
    tools: AtomicU64,
    prompts: AtomicU64,
}

impl Default for Changes {
    fn default() -> Self {
        Self {
            sender: broadcast::channel(64).0,
            tools: AtomicU64::new(0),
            prompts: AtomicU64::new(0),
        }
    }
}

impl Changes {
    /// How often `test_trigger_tool_change` changed the tool list.
    pub fn tools_generation(&self) -> u64 {
        self.tools.load(Ordering::Relaxed)
    }

    /// How often `test_trigger_prompt_change` changed the prompt list.
    pub fn prompts_generation(&self) -> u64 {
        self.prompts.load(Ordering::Relaxed)
    }

    /// Changes the tool list and tells the listeners; returns the new generation.
    pub fn tools_changed(&self) -> u64 {
        let generation = self.tools.fetch_add(1, Ordering::Relaxed) + 1;
        let _ = self.sender.send(Change::ToolsListChanged);
        generation
    }

    /// Changes the prompt list and tells the listeners; returns the new generation.
    pub fn prompts_changed(&self) -> u64 {
        let generation = self.prompts.fetch_add(1, Ordering::Relaxed) + 1;
        let _ = self.sender.send(Change::PromptsListChanged);
        generation
    }

    /// Tells the listeners `uri` changed; returns how many streams were open (each filters it).
    pub fn resource_updated(&self, uri: &str) -> usize {
        self.sender
            .send(Change::ResourceUpdated(uri.to_owned()))
            .unwrap_or(0)
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.sender.subscribe()
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
pub fn severity(level: LoggingLevel) -> u8 {
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
    /// The state this request counts in: its session's, or on 2026-07-28 the process-wide one.
    pub fn state(&self, cx: &RequestContext<RoleServer>) -> &SessionState {
        if mrtr::is_modern(cx) {
            &self.config.sessionless
        } else {
            &self.session
        }
    }

    /// A server for a new session.
    pub fn new(config: Arc<FixtureConfig>, reconnects: Option<Arc<Reconnects>>) -> Self {
        Self {
            config,
            session: Arc::default(),
            reconnects,
        }
    }
}

/// What `initialize` advertises to legacy sessions. Written as the wire JSON so it reads like the
/// spec. List changes are only announced on 2026-07-28 `subscriptions/listen` streams, so legacy
/// sessions are promised none.
fn legacy_capabilities() -> ServerCapabilities {
    let wire = json!({
        "tools": { "listChanged": false },
        "resources": { "subscribe": true, "listChanged": false },
        "prompts": { "listChanged": false },
        "logging": {},
        "completions": {},
    });
    serde_json::from_value(wire).expect("the fixture's capabilities are valid ServerCapabilities")
}

/// What `server/discover` advertises (2026-07-28): the same, plus the list changes that
/// `test_trigger_tool_change` and `test_trigger_prompt_change` make, and the Tasks extension
/// (`tasks.rs`). rmcp also intersects a `subscriptions/listen` filter with these, and answers
/// `tasks/*` with -32601 unless the extension is here.
fn capabilities() -> ServerCapabilities {
    let wire = json!({
        "tools": { "listChanged": true },
        "resources": { "subscribe": true, "listChanged": false },
        "prompts": { "listChanged": true },
        "logging": {},
        "completions": {},
        "extensions": { rmcp::model::TASKS_EXTENSION_ID: {} },
    });
    serde_json::from_value(wire).expect("the fixture's capabilities are valid ServerCapabilities")
}

impl ServerHandler for Fixture {
    fn get_info(&self) -> ServerConfig {
        let mut info = ServerConfig::new(capabilities());
        // What `initialize` falls back to when the client asks for a version not served. A
        // modern-only fixture names 2026-07-28, which has no `initialize`: the handshake fails.
        info.protocol_version = match self.config.eras {
            Eras::Modern => ProtocolVersion::V_2026_07_28,
            Eras::Both | Eras::Legacy => ProtocolVersion::V_2025_11_25,
        };
        info.server_info = Implementation::new(self.config.name.clone(), env!("CARGO_PKG_VERSION"));
        info.instructions = Some(
            "Test fixture for the MCP conformance suite and toolgate's own tests. \
             Tools named test_* behave as the conformance scenarios expect; `echo` returns its input."
                .into(),
        );
        info
    }

    fn supported_protocol_versions(&self) -> Cow<'static, [ProtocolVersion]> {
        Cow::Borrowed(self.config.eras.protocol_versions())
    }

    async fn initialize(
        &self,
        request: InitializeRequestParams,
        cx: RequestContext<RoleServer>,
    ) -> Result<InitializeResult, ErrorData> {
        cx.peer.set_peer_info(request.clone());
        let mut result = self.negotiate_initialize(&request)?;
        result.capabilities = legacy_capabilities();
        Ok(result)
    }

    fn accepted_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        // Everything asked for; rmcp narrows it to what `capabilities()` advertises.
        Some(requested.clone())
    }

    async fn listen(&self, subscription: SubscriptionContext) -> Result<(), ErrorData> {
        let mut changes = self.config.changes.subscribe();
        loop {
            let change = tokio::select! {
                () = subscription.cancelled() => return Ok(()),
                change = changes.recv() => change,
            };
            match change {
                Ok(change) => match subscription.sink().send(change.notification()).await {
                    Ok(()) | Err(SubscriptionSendError::NotificationNotAccepted(_)) => {}
                    Err(SubscriptionSendError::SubscriptionClosed) => return Ok(()),
                    Err(error) => {
                        tracing::debug!(%error, "subscriptions/listen stream failed");
                        return Ok(());
                    }
                },
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "a subscriptions/listen stream missed changes");
                }
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            }
        }
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
        let mut tools = self.config.tools.clone();
        let generation = self.config.changes.tools_generation();
        if generation > 0
            && let Some(trigger) = tools
                .iter_mut()
                .find(|t| t.name == tools::TRIGGER_TOOL_CHANGE)
        {
            let described = trigger.description.as_deref().unwrap_or_default();
            trigger.description =
                Some(format!("{described} [changed {generation} time(s)]").into());
        }
        Ok(ListToolsResult::with_all_items(tools))
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
        if let Some(response) = tasks::call_tool(self, &request, &cx).await {
            return response;
        }
        if let Some(response) = mrtr::call_tool(self, &request, &cx).await {
            return response;
        }
        tools::call(self, request, cx).await.map(Into::into)
    }

    // rmcp answers -32021 before these run when the request did not declare the extension.
    async fn get_task(
        &self,
        request: GetTaskParams,
        _cx: RequestContext<RoleServer>,
    ) -> Result<GetTaskResult, ErrorData> {
        self.config
            .tasks
            .get_task(&request.task_id)
            .map(GetTaskResult::new)
    }

    async fn update_task(
        &self,
        request: UpdateTaskParams,
        _cx: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.config
            .tasks
            .update_task(&request.task_id, request.input_responses)
    }

    async fn cancel_task(
        &self,
        request: CancelTaskParams,
        _cx: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.config.tasks.cancel_task(&request.task_id)
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
        cx: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        resources::read(self.state(&cx), &request.uri).map(Into::into)
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
        Ok(ListPromptsResult::with_all_items(prompts::list(
            self.config.changes.prompts_generation(),
        )))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        cx: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        if request.name == mrtr::PROMPT {
            return mrtr::get_prompt(self, &request, &cx).await;
        }
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
        for (caps, list_changes) in [(legacy_capabilities(), false), (capabilities(), true)] {
            let wire = serde_json::to_value(caps).unwrap();
            assert_eq!(wire["resources"]["subscribe"], json!(true));
            assert!(wire.get("logging").is_some());
            assert!(wire.get("completions").is_some());
            assert_eq!(wire["tools"]["listChanged"], json!(list_changes));
            assert_eq!(wire["prompts"]["listChanged"], json!(list_changes));
        }
    }

    #[test]
    fn eras_choose_protocol_versions() {
        assert_eq!(Eras::Both.protocol_versions().len(), 5);
        assert!(
            !Eras::Legacy
                .protocol_versions()
                .contains(&ProtocolVersion::V_2026_07_28)
        );
        assert_eq!(
            Eras::Modern.protocol_versions(),
            &[ProtocolVersion::V_2026_07_28]
        );
    }

    #[test]
    fn changes_count_and_reach_listeners() {
        let changes = Changes::default();
        let mut listener = changes.subscribe();
        assert_eq!(changes.tools_changed(), 1);
        assert_eq!(changes.tools_generation(), 1);
        assert_eq!(changes.resource_updated("test://x"), 1);
        assert!(matches!(listener.try_recv(), Ok(Change::ToolsListChanged)));
        let Ok(Change::ResourceUpdated(uri)) = listener.try_recv() else {
            panic!("no resource update");
        };
        assert_eq!(uri, "test://x");
        for change in [
            Change::ToolsListChanged,
            Change::PromptsListChanged,
            Change::ResourceUpdated("test://x".into()),
        ] {
            change.notification();
        }
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
