//! What rmcp's typed model cannot say: a tool whose listing and result carry members no MCP
//! revision defines, so a client (or a gateway in between) can be checked to pass them on intact.
//!
//! rmcp's `Tool` and `CallToolResult` drop unknown members, so this wraps the typed handler as a
//! `Service` and writes those two answers as raw JSON; every other request goes to the `Fixture`
//! unchanged. rmcp's Streamable HTTP service only takes a typed handler, so over HTTP the same
//! answers are made at the edge instead (`http::unknown_fields`).

use std::borrow::Cow;

use rmcp::{
    ErrorData, RoleServer, Service,
    model::{
        ClientNotification, ClientRequest, CustomResult, ProtocolVersion, ServerConfig,
        ServerResult,
    },
    service::{NotificationContext, RequestContext},
};
use serde_json::{Value, json};

use crate::server::Fixture;

/// The tool whose listing and result have the unknown members.
pub const TOOL: &str = "test_unknown_fields";

/// Add the unknown member to the tool's entry in a `tools/list` result.
pub fn add_to_listing(result: &mut Value) {
    if let Some(tools) = result.get_mut("tools").and_then(Value::as_array_mut) {
        for tool in tools.iter_mut().filter(|t| t["name"] == TOOL) {
            tool["x_unknown_field"] =
                json!({ "nested": [1, 2.5, "three", null, { "deep": true }] });
        }
    }
}

/// The whole `tools/call` result: a top-level member and a content item of a type nobody defines.
pub fn call_result() -> Value {
    json!({
        "content": [
            { "type": "text", "text": "unknown fields follow" },
            { "type": "x_unknown_content", "payload": { "a": 1, "b": [true, false] } },
        ],
        "isError": false,
        "x_unknown_field": { "kept": "as is", "n": 42 },
    })
}

/// The fixture as it is served on every transport.
#[derive(Clone)]
pub struct WithUnknownFields(pub Fixture);

impl Service<RoleServer> for WithUnknownFields {
    async fn handle_request(
        &self,
        request: ClientRequest,
        cx: RequestContext<RoleServer>,
    ) -> Result<ServerResult, ErrorData> {
        match &request {
            ClientRequest::CallToolRequest(call) if call.params.name == TOOL => {
                Ok(ServerResult::CustomResult(CustomResult(call_result())))
            }
            ClientRequest::ListToolsRequest(_) => {
                let typed = self.0.handle_request(request, cx).await?;
                let mut wire = serde_json::to_value(&typed)
                    .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
                add_to_listing(&mut wire);
                Ok(ServerResult::CustomResult(CustomResult(wire)))
            }
            _ => self.0.handle_request(request, cx).await,
        }
    }

    async fn handle_notification(
        &self,
        notification: ClientNotification,
        cx: NotificationContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.0.handle_notification(notification, cx).await
    }

    fn get_info(&self) -> ServerConfig {
        Service::get_info(&self.0)
    }

    fn supported_protocol_versions(&self) -> Cow<'static, [ProtocolVersion]> {
        Service::supported_protocol_versions(&self.0)
    }
}
