//! The tools: the conformance suite's `test_*` tools, `echo`, a few helpers for toolgate's tests, and generated `tool_N`.

use std::{io::Write as _, sync::atomic::Ordering, time::Duration};

use rmcp::{
    ErrorData, RoleServer,
    model::{
        CallToolRequestParams, CallToolResult, ContentBlock, CreateMessageRequestParams,
        ElicitRequestParams, JsonObject, LoggingLevel, LoggingMessageNotificationParam,
        ProgressNotificationParam, ResourceContents, SamplingMessage, Tool,
    },
    service::RequestContext,
};
use serde_json::{Value, json};

use crate::{
    assets::{RED_PIXEL_PNG, SILENT_WAV},
    resources,
    server::Fixture,
};

/// Pause between the notifications of the logging and progress tools, as the scenarios describe.
const STEP: Duration = Duration::from_millis(50);

/// How long `test_reconnection` waits for the client to come back before answering anyway.
const RECONNECT_WAIT: Duration = Duration::from_secs(10);

/// The most notifications one `flood` call sends of each kind.
const MAX_FLOOD: u64 = 1_000_000;
/// The most padding one `flood` notification carries, in bytes.
const MAX_PADDING: u64 = 1024 * 1024;
/// The largest text `big` answers with, in bytes.
const MAX_BIG: u64 = 64 * 1024 * 1024;

pub const LOGGING_TOOL: &str = "test_logging_tool";
pub const TRIGGER_TOOL_CHANGE: &str = "test_trigger_tool_change";
pub const TRIGGER_PROMPT_CHANGE: &str = "test_trigger_prompt_change";
pub const CUSTOM_HEADER_TOOL: &str = "test_custom_header";
pub const TRACE_CONTEXT_TOOL: &str = "trace_context";

/// Every tool this server lists, in a stable order, with `extra_tools` generated ones at the end.
pub fn catalog(extra_tools: usize, fault_tools: bool) -> Vec<Tool> {
    let no_args = || json!({ "type": "object", "properties": {} });
    let mut wire = vec![
        tool(
            "test_simple_text",
            "Returns a simple text content",
            no_args(),
        ),
        tool(
            "test_image_content",
            "Returns an image content (1x1 red PNG)",
            no_args(),
        ),
        tool(
            "test_audio_content",
            "Returns an audio content (WAV)",
            no_args(),
        ),
        tool(
            "test_embedded_resource",
            "Returns an embedded text resource",
            no_args(),
        ),
        tool(
            "test_multiple_content_types",
            "Returns text, image and embedded resource contents",
            no_args(),
        ),
        tool(
            "test_tool_with_logging",
            "Sends three info log notifications while it runs",
            no_args(),
        ),
        tool(
            "test_tool_with_progress",
            "Reports progress 0, 50 and 100 of 100 when given a progress token",
            no_args(),
        ),
        tool(
            "test_error_handling",
            "Always fails with isError: true",
            no_args(),
        ),
        tool(
            "test_sampling",
            "Asks the client's LLM (sampling/createMessage) and returns its answer",
            json!({
                "type": "object",
                "properties": { "prompt": { "type": "string", "description": "The prompt to send to the LLM" } },
                "required": ["prompt"],
            }),
        ),
        tool(
            "test_elicitation",
            "Asks the user for a username and email (elicitation/create)",
            json!({
                "type": "object",
                "properties": { "message": { "type": "string", "description": "The message to show the user" } },
                "required": ["message"],
            }),
        ),
        tool(
            "test_elicitation_sep1034_defaults",
            "Elicits a form whose fields all have default values (SEP-1034)",
            no_args(),
        ),
        tool(
            "test_elicitation_sep1330_enums",
            "Elicits a form with the five enum shapes (SEP-1330)",
            no_args(),
        ),
        tool(
            "json_schema_2020_12_tool",
            "Tool with JSON Schema 2020-12 features",
            // The 0.1.16 scenario checks $schema, $defs and additionalProperties (SEP-1613); later
            // suites also check $anchor, allOf/anyOf and if/then/else (SEP-2106), so they are here too.
            json!({
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "type": "object",
                "$defs": {
                    "address": {
                        "$anchor": "addressDef",
                        "type": "object",
                        "properties": { "street": { "type": "string" }, "city": { "type": "string" } },
                    },
                },
                "properties": {
                    "name": { "type": "string" },
                    "address": { "$ref": "#/$defs/address" },
                    "contactMethod": { "type": "string", "enum": ["phone", "email"] },
                    "phone": { "type": "string" },
                    "email": { "type": "string" },
                },
                "allOf": [{ "anyOf": [{ "required": ["phone"] }, { "required": ["email"] }] }],
                "if": {
                    "properties": { "contactMethod": { "const": "phone" } },
                    "required": ["contactMethod"],
                },
                "then": { "required": ["phone"] },
                "else": { "required": ["email"] },
                "additionalProperties": false,
            }),
        ),
        tool(
            "test_reconnection",
            "Over HTTP, closes its SSE stream before answering; the answer arrives after the client resumes with Last-Event-ID (SEP-1699)",
            no_args(),
        ),
        tool(
            LOGGING_TOOL,
            "Sends one notifications/message per level from debug to error; on 2026-07-28 only those at or above the request's _meta logLevel, none without one",
            no_args(),
        ),
        tool(
            TRIGGER_TOOL_CHANGE,
            "Changes the tool list (this description counts the changes) and notifies subscriptions/listen streams that asked for toolsListChanged",
            no_args(),
        ),
        tool(
            TRIGGER_PROMPT_CHANGE,
            "Changes the prompt list (test_dynamic_prompt's description) and notifies subscriptions/listen streams that asked for promptsListChanged",
            no_args(),
        ),
        tool(
            CUSTOM_HEADER_TOOL,
            "Echoes `region`, which 2026-07-28 clients also send as the Mcp-Param-Region header (SEP-2243 x-mcp-header)",
            json!({
                "type": "object",
                "properties": {
                    "region": { "type": "string", "description": "A region name", "x-mcp-header": "Region" },
                    "query": { "type": "string", "description": "Anything; not mirrored in a header" },
                },
                "required": ["region"],
            }),
        ),
        tool(
            "echo",
            "Returns its `text` argument, or all its arguments as JSON when there is no `text`",
            json!({
                "type": "object",
                "properties": { "text": { "type": "string", "description": "Text to return" } },
            }),
        ),
        tool(
            "sleep",
            "Waits `ms` milliseconds (at most 60000) then answers; stops early when cancelled. With a progress token it reports progress 0 as it starts, so a client knows the call is running, and with `every_ms` again every that many milliseconds",
            json!({
                "type": "object",
                "properties": {
                    "ms": { "type": "integer", "minimum": 0, "maximum": 60000 },
                    "every_ms": { "type": "integer", "minimum": 10 },
                },
                "required": ["ms"],
            }),
        ),
        tool(
            "touch_resource",
            "Sends notifications/resources/updated for `uri` if this session subscribed to it",
            json!({
                "type": "object",
                "properties": { "uri": { "type": "string", "default": resources::WATCHED } },
            }),
        ),
        tool(
            "sleep_cancellations",
            "How many `sleep` calls of this session the client cancelled (on 2026-07-28, of all sessionless requests)",
            no_args(),
        ),
        tool(
            TRACE_CONTEXT_TOOL,
            "Returns the W3C trace context the request arrived with, as JSON: `header` (the traceparent/tracestate HTTP headers, HTTP only) and `meta` (params._meta.traceparent/tracestate)",
            no_args(),
        ),
        tool(
            crate::unknown_fields::TOOL,
            "Returns a result with a member and a content type no MCP revision defines; its listing has one too",
            no_args(),
        ),
    ];
    wire.extend(
        crate::mrtr::tool_definitions()
            .into_iter()
            .chain(crate::tasks::tool_definitions())
            .map(|(name, description, schema)| tool(name, description, schema)),
    );
    if fault_tools {
        wire.push(tool(
            "crash",
            "Exits the server process at once, without answering",
            no_args(),
        ));
        wire.push(tool(
            "corrupt_stdout",
            "Writes a line that is not JSON-RPC to stdout, then never answers",
            no_args(),
        ));
        wire.push(tool(
            "flood",
            "Sends `count` info log messages (each carrying `bytes` of padding) as fast as it can, and as many progress notifications when given a progress token, then answers; with `detach` it answers first and sends the log messages afterwards, outside any call",
            json!({
                "type": "object",
                "properties": {
                    "count": { "type": "integer", "minimum": 0, "maximum": MAX_FLOOD },
                    "bytes": { "type": "integer", "minimum": 0, "maximum": MAX_PADDING },
                    "detach": { "type": "boolean" },
                },
                "required": ["count"],
            }),
        ));
        wire.push(tool(
            "big",
            "Answers with one text content of `bytes` characters",
            json!({
                "type": "object",
                "properties": { "bytes": { "type": "integer", "minimum": 0, "maximum": MAX_BIG } },
                "required": ["bytes"],
            }),
        ));
    }
    wire.extend((0..extra_tools).map(|i| {
        tool(
            &format!("tool_{i}"),
            "Generated tool: echoes its arguments",
            json!({ "type": "object", "properties": { "text": { "type": "string" } } }),
        )
    }));
    wire.into_iter()
        .map(|t| serde_json::from_value(t).expect("the fixture's tool definitions are valid Tools"))
        .collect()
}

fn tool(name: &str, description: &str, input_schema: Value) -> Value {
    json!({ "name": name, "description": description, "inputSchema": input_schema })
}

/// Runs one `tools/call`.
pub async fn call(
    fixture: &Fixture,
    request: CallToolRequestParams,
    cx: RequestContext<RoleServer>,
) -> Result<CallToolResult, ErrorData> {
    let args = request.arguments.unwrap_or_default();
    let name = request.name.as_ref();
    match name {
        "test_simple_text" => Ok(text("This is a simple text response for testing.")),
        "test_image_content" => Ok(CallToolResult::success(vec![ContentBlock::image(
            RED_PIXEL_PNG,
            "image/png",
        )])),
        "test_audio_content" => Ok(CallToolResult::success(vec![ContentBlock::audio(
            SILENT_WAV,
            "audio/wav",
        )])),
        "test_embedded_resource" => Ok(CallToolResult::success(vec![ContentBlock::resource(
            text_resource(
                "test://embedded-resource",
                "text/plain",
                "This is an embedded resource content.",
            ),
        )])),
        "test_multiple_content_types" => Ok(CallToolResult::success(vec![
            ContentBlock::text("Multiple content types test:"),
            ContentBlock::image(RED_PIXEL_PNG, "image/png"),
            ContentBlock::resource(text_resource(
                "test://mixed-content-resource",
                "application/json",
                r#"{"test":"data","value":123}"#,
            )),
        ])),
        "test_tool_with_logging" => log_while_running(fixture, &cx).await,
        LOGGING_TOOL => log_each_level(fixture, &cx).await,
        TRIGGER_TOOL_CHANGE => {
            let generation = fixture.config.changes.tools_changed();
            Ok(text(format!("tool list changed (change {generation})")))
        }
        TRIGGER_PROMPT_CHANGE => {
            let generation = fixture.config.changes.prompts_changed();
            Ok(text(format!("prompt list changed (change {generation})")))
        }
        CUSTOM_HEADER_TOOL => match string_arg(&args, "region") {
            Some(region) => Ok(text(format!("region={region}"))),
            None => Err(ErrorData::invalid_params(
                "test_custom_header needs a string argument `region`",
                None,
            )),
        },
        "test_tool_with_progress" => report_progress(&cx).await,
        "test_error_handling" => Ok(CallToolResult::error(vec![ContentBlock::text(
            "This tool intentionally returns an error for testing",
        )])),
        "test_sampling" => sample(&args, &cx).await,
        "test_elicitation"
        | "test_elicitation_sep1034_defaults"
        | "test_elicitation_sep1330_enums" => {
            let (message, schema, label) = elicitation_of(name, &args);
            elicit(&cx, &message, schema, label).await
        }
        "json_schema_2020_12_tool" => {
            let who = string_arg(&args, "name").unwrap_or("world");
            Ok(text(format!("Hello, {who}!")))
        }
        "test_reconnection" => reconnect(fixture, &cx).await,
        "echo" => Ok(echo(&args)),
        TRACE_CONTEXT_TOOL => Ok(trace_context(&cx)),
        "sleep" => sleep(fixture, &args, &cx).await,
        "sleep_cancellations" => {
            let n = fixture.state(&cx).cancelled_sleeps.load(Ordering::Relaxed);
            Ok(text(n.to_string()))
        }
        // `unknown_fields::WithUnknownFields` answers it before the typed handler is reached.
        crate::unknown_fields::TOOL => Ok(text("served without the unknown fields")),
        "crash" if fixture.config.fault_tools => {
            tracing::warn!("crash was called: exiting");
            std::process::exit(3)
        }
        "corrupt_stdout" if fixture.config.fault_tools => corrupt_stdout(&cx).await,
        "flood" if fixture.config.fault_tools => flood(fixture, &args, &cx).await,
        "big" if fixture.config.fault_tools => big(&args),
        "touch_resource" if crate::mrtr::is_modern(&cx) => {
            // No sessions on 2026-07-28: the update goes to the subscriptions/listen streams
            // that named the URI in their resourceSubscriptions.
            let uri = string_arg(&args, "uri").unwrap_or(resources::WATCHED);
            if uri == resources::WATCHED {
                fixture
                    .config
                    .sessionless
                    .touches
                    .fetch_add(1, Ordering::Relaxed);
            }
            let listeners = fixture.config.changes.resource_updated(uri);
            Ok(text(format!(
                "notified {listeners} subscriptions/listen stream(s) of {uri}"
            )))
        }
        "touch_resource" => {
            let uri = string_arg(&args, "uri").unwrap_or(resources::WATCHED);
            let sent = resources::touch(&fixture.session, &cx.peer, uri).await;
            Ok(text(if sent {
                format!("notified subscribers of {uri}")
            } else {
                format!("{uri} has no subscription in this session")
            }))
        }
        generated if is_generated(fixture, generated) => Ok(echo(&args)),
        unknown => Err(ErrorData::invalid_params(
            format!("Unknown tool: {unknown}"),
            Some(json!({ "name": unknown })),
        )),
    }
}

/// The message, form schema and result label of the legacy elicitation tools.
pub fn elicitation_of(name: &str, args: &JsonObject) -> (String, Value, &'static str) {
    match name {
        "test_elicitation_sep1034_defaults" => (
            "Please review these values (all have defaults)".into(),
            defaults_schema(),
            "Elicitation completed",
        ),
        "test_elicitation_sep1330_enums" => (
            "Please choose options".into(),
            enums_schema(),
            "Elicitation completed",
        ),
        _ => (
            string_arg(args, "message")
                .unwrap_or("Please provide your information")
                .to_owned(),
            user_schema(),
            "User response",
        ),
    }
}

fn text(text: impl Into<String>) -> CallToolResult {
    CallToolResult::success(vec![ContentBlock::text(text)])
}

fn text_resource(uri: &str, mime_type: &str, text: &str) -> ResourceContents {
    ResourceContents::TextResourceContents {
        uri: uri.into(),
        mime_type: Some(mime_type.into()),
        text: text.into(),
        meta: None,
    }
}

fn string_arg<'a>(args: &'a JsonObject, name: &str) -> Option<&'a str> {
    args.get(name).and_then(Value::as_str)
}

fn is_generated(fixture: &Fixture, name: &str) -> bool {
    name.strip_prefix("tool_")
        .and_then(|n| n.parse::<usize>().ok())
        .is_some_and(|n| n < fixture.config.extra_tools && name == format!("tool_{n}"))
}

fn echo(args: &JsonObject) -> CallToolResult {
    match string_arg(args, "text") {
        Some(t) => text(t),
        None => text(Value::Object(args.clone()).to_string()),
    }
}

/// What a test needs to see whether a client propagated its trace: the
/// headers of the HTTP request (the trace's and the 2026-07-28 ones that mirror
/// the body) and the keys of `_meta`, each absent when absent.
fn trace_context(cx: &RequestContext<RoleServer>) -> CallToolResult {
    let header = |name: &str| {
        cx.extensions
            .get::<http::request::Parts>()
            .and_then(|parts| parts.headers.get(name))
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    text(
        json!({
            "header": {
                "traceparent": header("traceparent"),
                "tracestate": header("tracestate"),
                "mcp-method": header("mcp-method"),
                "mcp-name": header("mcp-name"),
                "mcp-protocol-version": header("mcp-protocol-version"),
            },
            "meta": {
                "traceparent": cx.meta.get_traceparent(),
                "tracestate": cx.meta.get_tracestate(),
            },
        })
        .to_string(),
    )
}

async fn log_while_running(
    fixture: &Fixture,
    cx: &RequestContext<RoleServer>,
) -> Result<CallToolResult, ErrorData> {
    let messages = [
        "Tool execution started",
        "Tool processing data",
        "Tool execution completed",
    ];
    for (i, message) in messages.into_iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(STEP).await;
        }
        if wants_log(fixture, cx, LoggingLevel::Info) {
            let note = LoggingMessageNotificationParam::new(LoggingLevel::Info, json!(message))
                .with_logger("test_tool_with_logging");
            if let Err(error) = cx.peer.notify_logging_message(note).await {
                tracing::warn!(%error, "could not send a log notification");
            }
        }
    }
    Ok(text("Logging test completed: sent 3 log notifications"))
}

/// Whether a log of `level` may be sent for this request: on 2026-07-28 the request's own
/// `_meta` `io.modelcontextprotocol/logLevel` decides, and without one nothing is sent; a legacy
/// session's `logging/setLevel` decides otherwise.
fn wants_log(fixture: &Fixture, cx: &RequestContext<RoleServer>, level: LoggingLevel) -> bool {
    if crate::mrtr::is_modern(cx) {
        cx.meta.log_level().is_some_and(|minimum| {
            crate::server::severity(level) >= crate::server::severity(minimum)
        })
    } else {
        fixture.session.wants_log(level)
    }
}

async fn log_each_level(
    fixture: &Fixture,
    cx: &RequestContext<RoleServer>,
) -> Result<CallToolResult, ErrorData> {
    let mut sent = 0;
    for level in [
        LoggingLevel::Debug,
        LoggingLevel::Info,
        LoggingLevel::Notice,
        LoggingLevel::Warning,
        LoggingLevel::Error,
    ] {
        if !wants_log(fixture, cx, level) {
            continue;
        }
        let level_name = serde_json::to_value(level).unwrap_or(Value::Null);
        let note =
            LoggingMessageNotificationParam::new(level, json!(format!("a {level_name} message")))
                .with_logger(LOGGING_TOOL);
        match cx.peer.notify_logging_message(note).await {
            Ok(()) => sent += 1,
            Err(error) => tracing::warn!(%error, "could not send a log notification"),
        }
    }
    Ok(text(format!("sent {sent} log message(s)")))
}

async fn report_progress(cx: &RequestContext<RoleServer>) -> Result<CallToolResult, ErrorData> {
    let token = cx.meta.get_progress_token();
    for (i, progress) in [0.0, 50.0, 100.0].into_iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(STEP).await;
        }
        if let Some(token) = &token {
            let note = ProgressNotificationParam::new(token.clone(), progress)
                .with_total(100.0)
                .with_message(format!("{progress}/100"));
            if let Err(error) = cx.peer.notify_progress(note).await {
                tracing::warn!(%error, "could not send a progress notification");
            }
        }
    }
    Ok(text(if token.is_some() {
        "Progress test completed: reported 0, 50, 100 of 100"
    } else {
        "Progress test completed (no progress token was given)"
    }))
}

async fn sample(
    args: &JsonObject,
    cx: &RequestContext<RoleServer>,
) -> Result<CallToolResult, ErrorData> {
    let Some(prompt) = string_arg(args, "prompt") else {
        return Err(ErrorData::invalid_params(
            "test_sampling needs a string argument `prompt`",
            None,
        ));
    };
    if !client_declared(cx, |caps| caps.sampling.is_some()) {
        return Ok(CallToolResult::error(vec![ContentBlock::text(
            "The client did not declare the sampling capability, so this tool cannot ask its LLM",
        )]));
    }
    let request = CreateMessageRequestParams::new(vec![SamplingMessage::user_text(prompt)], 100);
    match cx.peer.create_message(request).await {
        Ok(result) => {
            let answer = result
                .message
                .content
                .first()
                .and_then(|c| c.as_text())
                .map(|t| t.text.clone())
                .unwrap_or_else(|| "(the response had no text content)".into());
            Ok(text(format!("LLM response: {answer}")))
        }
        Err(error) => Ok(CallToolResult::error(vec![ContentBlock::text(format!(
            "Sampling failed: {error}"
        ))])),
    }
}

fn client_declared(
    cx: &RequestContext<RoleServer>,
    has: impl FnOnce(&rmcp::model::ClientCapabilities) -> bool,
) -> bool {
    cx.peer
        .peer_info()
        .is_some_and(|info| has(&info.capabilities))
}

/// Sends `elicitation/create` with a form schema and reports what the user answered.
async fn elicit(
    cx: &RequestContext<RoleServer>,
    message: &str,
    schema: Value,
    label: &str,
) -> Result<CallToolResult, ErrorData> {
    if !client_declared(cx, |caps| caps.elicitation.is_some()) {
        return Ok(CallToolResult::error(vec![ContentBlock::text(
            "The client did not declare the elicitation capability, so this tool cannot ask the user",
        )]));
    }
    let params: ElicitRequestParams = serde_json::from_value(form_request(message, schema))
        .map_err(|e| ErrorData::internal_error(format!("bad elicitation schema: {e}"), None))?;
    match cx.peer.create_elicitation(params).await {
        Ok(result) => {
            let action = serde_json::to_value(&result.action)
                .ok()
                .and_then(|a| a.as_str().map(str::to_owned))
                .unwrap_or_default();
            let content = result.content.unwrap_or(Value::Null);
            Ok(text(format!("{label}: action={action}, content={content}")))
        }
        Err(error) => Ok(CallToolResult::error(vec![ContentBlock::text(format!(
            "Elicitation failed: {error}"
        ))])),
    }
}

fn form_request(message: &str, schema: Value) -> Value {
    json!({ "mode": "form", "message": message, "requestedSchema": schema })
}

fn user_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "username": { "type": "string", "description": "User's response" },
            "email": { "type": "string", "description": "User's email address" },
        },
        "required": ["username", "email"],
    })
}

/// SEP-1034: a default for every primitive type.
fn defaults_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "name": { "type": "string", "description": "User name", "default": "John Doe" },
            "age": { "type": "integer", "description": "User age", "default": 30 },
            "score": { "type": "number", "description": "User score", "default": 95.5 },
            "status": {
                "type": "string",
                "description": "User status",
                "enum": ["active", "inactive", "pending"],
                "default": "active",
            },
            "verified": { "type": "boolean", "description": "Verified user", "default": true },
        },
    })
}

/// SEP-1330: the five enum shapes.
fn enums_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "untitledSingle": { "type": "string", "enum": ["option1", "option2", "option3"] },
            "titledSingle": {
                "type": "string",
                "oneOf": [
                    { "const": "value1", "title": "First Option" },
                    { "const": "value2", "title": "Second Option" },
                    { "const": "value3", "title": "Third Option" },
                ],
            },
            "legacyEnum": {
                "type": "string",
                "enum": ["opt1", "opt2", "opt3"],
                "enumNames": ["Option One", "Option Two", "Option Three"],
            },
            "untitledMulti": {
                "type": "array",
                "items": { "type": "string", "enum": ["option1", "option2", "option3"] },
            },
            "titledMulti": {
                "type": "array",
                "items": {
                    "anyOf": [
                        { "const": "value1", "title": "First Choice" },
                        { "const": "value2", "title": "Second Choice" },
                        { "const": "value3", "title": "Third Choice" },
                    ],
                },
            },
        },
    })
}

/// The HTTP layer has already ended this call's SSE stream after its priming event (see
/// `http::reconnect`); answer once the client has resumed, so the answer is replayed to it.
async fn reconnect(
    fixture: &Fixture,
    cx: &RequestContext<RoleServer>,
) -> Result<CallToolResult, ErrorData> {
    let session_id = cx
        .extensions
        .get::<http::request::Parts>()
        .and_then(|parts| parts.headers.get("mcp-session-id"))
        .and_then(|v| v.to_str().ok());
    let (Some(reconnects), Some(session_id)) = (&fixture.reconnects, session_id) else {
        return Ok(text(
            "Reconnection test completed (no HTTP session to reconnect)",
        ));
    };
    let resumed = reconnects.wait_for_resume(session_id, RECONNECT_WAIT).await;
    Ok(text(if resumed {
        "Reconnection test completed: answered after the client resumed the stream"
    } else {
        "Reconnection test completed: the client did not resume in time"
    }))
}

async fn sleep(
    fixture: &Fixture,
    args: &JsonObject,
    cx: &RequestContext<RoleServer>,
) -> Result<CallToolResult, ErrorData> {
    let Some(ms) = args
        .get("ms")
        .and_then(Value::as_u64)
        .filter(|ms| *ms <= 60_000)
    else {
        return Err(ErrorData::invalid_params(
            "sleep needs an integer argument `ms` between 0 and 60000",
            None,
        ));
    };
    let token = cx.meta.get_progress_token();
    let every = args
        .get("every_ms")
        .and_then(Value::as_u64)
        .map(|e| Duration::from_millis(e.max(10)));
    let report = |elapsed: u64| {
        let token = token.clone();
        async move {
            let Some(token) = token else { return };
            let note = ProgressNotificationParam::new(token, elapsed as f64)
                .with_total(ms as f64)
                .with_message("sleeping");
            if let Err(error) = cx.peer.notify_progress(note).await {
                tracing::warn!(%error, "could not send a progress notification");
            }
        }
    };
    report(0).await;
    let started = tokio::time::Instant::now();
    let done = tokio::time::sleep(Duration::from_millis(ms));
    tokio::pin!(done);
    loop {
        let tick = async {
            match every {
                Some(e) => tokio::time::sleep(e).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = &mut done => return Ok(text(format!("slept {ms} ms"))),
            () = cx.ct.cancelled() => {
                fixture.state(cx).cancelled_sleeps.fetch_add(1, Ordering::Relaxed);
                return Ok(CallToolResult::error(vec![ContentBlock::text("cancelled")]));
            }
            () = tick => {
                let elapsed = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                report(elapsed).await;
            }
        }
    }
}

/// On stdio this breaks the protocol channel, which is the point: a client must drop the
/// connection and fail what is in flight. The call itself never answers (until cancelled).
async fn corrupt_stdout(cx: &RequestContext<RoleServer>) -> Result<CallToolResult, ErrorData> {
    {
        let mut out = std::io::stdout().lock();
        // One write of a short line: a pipe delivers it whole, between two protocol messages.
        let _ = out.write_all(b"this line is not JSON-RPC\n");
        let _ = out.flush();
    }
    cx.ct.cancelled().await;
    Ok(CallToolResult::error(vec![ContentBlock::text("cancelled")]))
}

/// A server that floods its client: `count` log messages (at level info, if the client's
/// level lets them through) and, with a progress token, `count` progress notifications, sent
/// one after the other as fast as the transport takes them. With `detach` the call answers at
/// once and the log messages follow it, outside any call.
async fn flood(
    fixture: &Fixture,
    args: &JsonObject,
    cx: &RequestContext<RoleServer>,
) -> Result<CallToolResult, ErrorData> {
    let Some(count) = args
        .get("count")
        .and_then(Value::as_u64)
        .filter(|c| *c <= MAX_FLOOD)
    else {
        return Err(ErrorData::invalid_params(
            format!("flood needs an integer argument `count` between 0 and {MAX_FLOOD}"),
            None,
        ));
    };
    let Some(padding) = bounded_arg(args, "bytes", 0, MAX_PADDING) else {
        return Err(ErrorData::invalid_params(
            format!("flood's `bytes` is an integer between 0 and {MAX_PADDING}"),
            None,
        ));
    };
    let detach = args.get("detach").and_then(Value::as_bool).unwrap_or(false);
    let logs = wants_log(fixture, cx, LoggingLevel::Info);
    // Progress belongs to the call: a detached flood sends none.
    let token = (!detach).then(|| cx.meta.get_progress_token()).flatten();
    let peer = cx.peer.clone();
    let padding = "x".repeat(padding);
    let send = async move {
        let (mut logged, mut reported) = (0u64, 0u64);
        for i in 0..count {
            if logs {
                let note = LoggingMessageNotificationParam::new(
                    LoggingLevel::Info,
                    json!({ "n": i, "padding": padding }),
                )
                .with_logger("flood");
                if peer.notify_logging_message(note).await.is_err() {
                    break;
                }
                logged += 1;
            }
            if let Some(token) = &token {
                let note = ProgressNotificationParam::new(token.clone(), i as f64)
                    .with_total(count as f64);
                if peer.notify_progress(note).await.is_err() {
                    break;
                }
                reported += 1;
            }
        }
        (logged, reported)
    };
    if detach {
        tokio::spawn(async move {
            // Give the answer a head start, so the flood comes after it.
            tokio::time::sleep(STEP).await;
            send.await
        });
        return Ok(text(format!(
            "flooding: {} log message(s) follow",
            if logs { count } else { 0 }
        )));
    }
    let (logged, reported) = send.await;
    Ok(text(format!(
        "sent {logged} log message(s) and {reported} progress notification(s)"
    )))
}

/// A result as large as asked: one text content of `bytes` characters.
fn big(args: &JsonObject) -> Result<CallToolResult, ErrorData> {
    match args
        .get("bytes")
        .and_then(Value::as_u64)
        .filter(|b| *b <= MAX_BIG)
    {
        Some(bytes) => Ok(text("x".repeat(bytes as usize))),
        None => Err(ErrorData::invalid_params(
            format!("big needs an integer argument `bytes` between 0 and {MAX_BIG}"),
            None,
        )),
    }
}

/// An optional integer argument within `0..=max`, `default` when absent; `None` when invalid.
fn bounded_arg(args: &JsonObject, name: &str, default: u64, max: u64) -> Option<usize> {
    let value = match args.get(name) {
        None => default,
        Some(v) => v.as_u64()?,
    };
    (value <= max).then_some(value as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_every_conformance_tool_and_the_generated_ones() {
        let names: Vec<String> = catalog(3, false)
            .into_iter()
            .map(|t| t.name.into_owned())
            .collect();
        for expected in [
            "test_simple_text",
            "test_image_content",
            "test_audio_content",
            "test_embedded_resource",
            "test_multiple_content_types",
            "test_tool_with_logging",
            "test_tool_with_progress",
            "test_error_handling",
            "test_sampling",
            "test_elicitation",
            "test_elicitation_sep1034_defaults",
            "test_elicitation_sep1330_enums",
            "json_schema_2020_12_tool",
            "test_reconnection",
            "echo",
            "tool_0",
            "tool_2",
        ] {
            assert!(names.iter().any(|n| n == expected), "missing {expected}");
        }
        assert!(!names.iter().any(|n| n == "tool_3"));
        assert!(
            !names.iter().any(|n| n == "crash"),
            "fault tools need the flag"
        );
        let with_faults = catalog(0, true);
        for fault in ["crash", "corrupt_stdout", "flood", "big"] {
            assert!(
                with_faults.iter().any(|t| t.name == fault),
                "missing {fault}"
            );
        }
    }

    #[test]
    fn json_schema_2020_12_keywords_survive_the_typed_model() {
        let tool = catalog(0, false)
            .into_iter()
            .find(|t| t.name == "json_schema_2020_12_tool")
            .unwrap();
        let wire = serde_json::to_value(&tool).unwrap();
        let schema = &wire["inputSchema"];
        assert_eq!(
            schema["$schema"],
            "https://json-schema.org/draft/2020-12/schema"
        );
        assert!(schema["$defs"]["address"].is_object());
        assert_eq!(schema["additionalProperties"], json!(false));
        assert_eq!(schema["$defs"]["address"]["$anchor"], "addressDef");
        assert!(schema["allOf"].is_array() && schema["if"].is_object());
    }

    /// The elicitation schemas go through rmcp's typed `ElicitationSchema`; the client must
    /// still receive exactly what the scenarios check (defaults, enumNames, oneOf, anyOf).
    #[test]
    fn elicitation_schemas_reach_the_wire_unchanged() {
        for schema in [user_schema(), defaults_schema(), enums_schema()] {
            let params: ElicitRequestParams =
                serde_json::from_value(form_request("m", schema.clone())).unwrap();
            let wire = serde_json::to_value(&params).unwrap();
            assert_eq!(wire["requestedSchema"]["properties"], schema["properties"]);
        }
    }

    #[test]
    fn big_answers_as_many_characters_as_asked_and_refuses_more_than_its_maximum() {
        let args: JsonObject = serde_json::from_value(json!({ "bytes": 1000 })).unwrap();
        let wire = serde_json::to_value(big(&args).unwrap()).unwrap();
        assert_eq!(wire["content"][0]["text"].as_str().unwrap().len(), 1000);
        let args: JsonObject = serde_json::from_value(json!({ "bytes": MAX_BIG + 1 })).unwrap();
        assert!(big(&args).is_err());
        assert!(big(&JsonObject::new()).is_err());
    }

    #[test]
    fn echo_returns_text_or_the_arguments() {
        let args: JsonObject = serde_json::from_value(json!({ "text": "hi" })).unwrap();
        let wire = serde_json::to_value(echo(&args)).unwrap();
        assert_eq!(wire["content"][0]["text"], "hi");
        let args: JsonObject = serde_json::from_value(json!({ "n": 1 })).unwrap();
        let wire = serde_json::to_value(echo(&args)).unwrap();
        assert_eq!(wire["content"][0]["text"], r#"{"n":1}"#);
    }
}
