//! The resources: static text and binary, the `test://template/{id}/data` template, and a watched resource for subscriptions.

use std::sync::atomic::Ordering;

use rmcp::{
    ErrorData, Peer, RoleServer,
    model::{
        ReadResourceResult, Resource, ResourceContents, ResourceTemplate,
        ResourceUpdatedNotificationParam,
    },
};
use serde_json::json;

use crate::{assets::RED_PIXEL_PNG, server::SessionState};

pub const STATIC_TEXT: &str = "test://static-text";
pub const STATIC_BINARY: &str = "test://static-binary";
/// The URI the subscribe scenarios use; `touch_resource` "changes" it.
pub const WATCHED: &str = "test://watched-resource";
const TEMPLATE: &str = "test://template/{id}/data";

pub fn list() -> Vec<Resource> {
    [
        json!({
            "uri": STATIC_TEXT,
            "name": "static-text",
            "title": "Static text resource",
            "description": "A fixed plain-text resource",
            "mimeType": "text/plain",
        }),
        json!({
            "uri": STATIC_BINARY,
            "name": "static-binary",
            "title": "Static binary resource",
            "description": "A fixed 1x1 PNG, served as a blob",
            "mimeType": "image/png",
        }),
        json!({
            "uri": WATCHED,
            "name": "watched-resource",
            "title": "Watched resource",
            "description": "Subscribe to it, then call the touch_resource tool to get notifications/resources/updated",
            "mimeType": "text/plain",
        }),
    ]
    .into_iter()
    .map(|r| serde_json::from_value(r).expect("the fixture's resources are valid Resources"))
    .collect()
}

pub fn templates() -> Vec<ResourceTemplate> {
    let wire = json!({
        "uriTemplate": TEMPLATE,
        "name": "template-data",
        "title": "Templated data",
        "description": "JSON data for any {id}",
        "mimeType": "application/json",
    });
    vec![serde_json::from_value(wire).expect("the fixture's template is a valid ResourceTemplate")]
}

pub fn read(session: &SessionState, uri: &str) -> Result<ReadResourceResult, ErrorData> {
    let contents = match uri {
        STATIC_TEXT => text(
            uri,
            "text/plain",
            "This is the content of the static text resource.",
        ),
        STATIC_BINARY => ResourceContents::BlobResourceContents {
            uri: uri.into(),
            mime_type: Some("image/png".into()),
            blob: RED_PIXEL_PNG.into(),
            meta: None,
        },
        WATCHED => {
            let touches = session.touches.load(Ordering::Relaxed);
            text(
                uri,
                "text/plain",
                &format!("This resource was touched {touches} time(s) in this session."),
            )
        }
        _ => match template_id(uri) {
            Some(id) => {
                let data =
                    json!({ "id": id, "templateTest": true, "data": format!("Data for ID: {id}") });
                text(uri, "application/json", &data.to_string())
            }
            None => {
                return Err(ErrorData::resource_not_found(
                    format!("Resource not found: {uri}"),
                    Some(json!({ "uri": uri })),
                ));
            }
        },
    };
    Ok(ReadResourceResult::new(vec![contents]))
}

fn text(uri: &str, mime_type: &str, text: &str) -> ResourceContents {
    ResourceContents::TextResourceContents {
        uri: uri.into(),
        mime_type: Some(mime_type.into()),
        text: text.into(),
        meta: None,
    }
}

/// The `{id}` of a URI that matches `test://template/{id}/data` (one non-empty path segment).
pub fn template_id(uri: &str) -> Option<&str> {
    uri.strip_prefix("test://template/")
        .and_then(|rest| rest.strip_suffix("/data"))
        .filter(|id| !id.is_empty() && !id.contains('/'))
}

pub fn subscribe(session: &SessionState, uri: String) {
    session
        .subscriptions
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(uri);
}

pub fn unsubscribe(session: &SessionState, uri: &str) {
    session
        .subscriptions
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(uri);
}

/// "Changes" `uri` and tells the client if it subscribed. Returns whether a notification went out.
pub async fn touch(session: &SessionState, peer: &Peer<RoleServer>, uri: &str) -> bool {
    if uri == WATCHED {
        session.touches.fetch_add(1, Ordering::Relaxed);
    }
    if !session.is_subscribed(uri) {
        return false;
    }
    let note = ResourceUpdatedNotificationParam::new(uri);
    match peer.notify_resource_updated(note).await {
        Ok(()) => true,
        Err(error) => {
            tracing::warn!(%error, "could not send notifications/resources/updated");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_ids_are_one_segment() {
        assert_eq!(template_id("test://template/123/data"), Some("123"));
        assert_eq!(template_id("test://template//data"), None);
        assert_eq!(template_id("test://template/1/2/data"), None);
        assert_eq!(template_id("test://static-text"), None);
    }

    #[test]
    fn template_reads_substitute_the_id() {
        let result = read(&SessionState::default(), "test://template/123/data").unwrap();
        let wire = serde_json::to_value(result).unwrap();
        let text = wire["contents"][0]["text"].as_str().unwrap();
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(text).unwrap(),
            json!({ "id": "123", "templateTest": true, "data": "Data for ID: 123" })
        );
        assert_eq!(wire["contents"][0]["mimeType"], "application/json");
    }

    #[test]
    fn unknown_resources_are_not_found() {
        let error = read(&SessionState::default(), "test://nope").unwrap_err();
        assert_eq!(error.code.0, -32002);
    }

    #[test]
    fn lists_parse() {
        assert_eq!(list().len(), 3);
        assert_eq!(templates().len(), 1);
    }
}
