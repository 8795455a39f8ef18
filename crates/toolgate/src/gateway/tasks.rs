//! Task ids across servers: the 2025-11-25 experimental tasks and the 2026-07-28
//! `io.modelcontextprotocol/tasks` extension.
//!
//! A server mints its own task ids, and two servers may mint the same one. The
//! gateway shows clients a sealed id naming the server, the server's id and the
//! caller, so `tasks/get|result|update|cancel` reach the right server and an id
//! is worthless to anyone who did not create the task: a forged, altered or
//! foreign id is answered exactly like an unknown one.

use super::modern::modern_code::MISSING_CAPABILITY;
use crate::jsonrpc::{ErrorObject, code};
use crate::seal::Sealer;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

const PREFIX: &str = "tgt1.";

/// The 2026-07-28 Tasks extension, as it is named in capability maps.
pub const EXTENSION: &str = "io.modelcontextprotocol/tasks";

/// May a modern request use `tasks/get|update|cancel`? Not if no server behind
/// the gateway offers the extension: the methods then do not exist (-32601).
/// Not if the request did not declare the extension: SEP-2663 wants -32021
/// naming it, before the id is even looked at, as the server itself would answer.
pub fn require_extension(
    offered: bool,
    method: &str,
    client_capabilities: &Value,
) -> Result<(), ErrorObject> {
    if !offered {
        return Err(ErrorObject::new(
            code::METHOD_NOT_FOUND,
            format!("Method not found: {method}"),
        ));
    }
    if client_capabilities
        .get("extensions")
        .and_then(|e| e.get(EXTENSION))
        .is_none()
    {
        return Err(ErrorObject::new(
            MISSING_CAPABILITY,
            format!("{method} needs the client capability extensions.{EXTENSION}"),
        )
        .with_data(json!({ "requiredCapabilities": { "extensions": { EXTENSION: {} } } })));
    }
    Ok(())
}

pub struct TaskIds {
    sealer: Sealer,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Sealed {
    /// Server name.
    s: String,
    /// The server's task id.
    t: String,
    /// The principal the task belongs to.
    p: String,
}

impl TaskIds {
    pub fn new() -> TaskIds {
        TaskIds {
            sealer: Sealer::new(),
        }
    }

    /// The id a client sees. The same task always gets the same id, wherever it
    /// appears (creation, `tasks/get`, `tasks/list`, status notifications).
    pub fn expose(&self, server: &str, task: &str, principal: &str) -> String {
        let sealed = Sealed {
            s: server.to_owned(),
            t: task.to_owned(),
            p: principal.to_owned(),
        };
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&sealed).unwrap_or_default());
        format!("{PREFIX}{}", self.sealer.seal(&payload))
    }

    /// The server and the server's id behind an id a client presents.
    pub fn open(&self, exposed: &str, principal: &str) -> Result<(String, String), ErrorObject> {
        let unknown = || {
            ErrorObject::new(code::INVALID_PARAMS, format!("Unknown task: {exposed}"))
                .with_data(json!({ "taskId": exposed }))
        };
        let token = exposed.strip_prefix(PREFIX).ok_or_else(unknown)?;
        let payload = self.sealer.open(token).ok_or_else(unknown)?;
        let sealed: Sealed = URL_SAFE_NO_PAD
            .decode(payload)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(unknown)?;
        if sealed.p != principal {
            return Err(unknown());
        }
        Ok((sealed.s, sealed.t))
    }

    /// Replace every `taskId` a server's message carries with the id clients see.
    pub fn expose_all(&self, server: &str, principal: &str, v: &mut Value) {
        match v {
            Value::Object(map) => {
                for (k, child) in map.iter_mut() {
                    match child {
                        Value::String(t) if k == "taskId" => *t = self.expose(server, t, principal),
                        _ => self.expose_all(server, principal, child),
                    }
                }
            }
            Value::Array(items) => items
                .iter_mut()
                .for_each(|c| self.expose_all(server, principal, c)),
            _ => {}
        }
    }
}

impl Default for TaskIds {
    fn default() -> Self {
        TaskIds::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_route_back_only_for_their_owner() {
        let ids = TaskIds::new();
        let a = ids.expose("alpha", "task-1", "alice");
        assert_eq!(a, ids.expose("alpha", "task-1", "alice"), "stable");
        assert_ne!(
            a,
            ids.expose("beta", "task-1", "alice"),
            "servers kept apart"
        );
        assert_eq!(
            ids.open(&a, "alice").unwrap(),
            ("alpha".into(), "task-1".into())
        );
        let foreign = ids.open(&a, "mallory").unwrap_err();
        let forged = ids
            .open(&a.replace("tgt1.e", "tgt1.f"), "alice")
            .unwrap_err();
        let made_up = ids.open("task-1", "alice").unwrap_err();
        // All three look the same as an unknown task.
        for e in [&foreign, &forged, &made_up] {
            assert_eq!(e.code, code::INVALID_PARAMS);
            assert!(e.message.starts_with("Unknown task"));
        }
        let mut result = json!({"task": {"taskId": "task-9", "status": "working"},
            "_meta": {"io.modelcontextprotocol/related-task": {"taskId": "task-9"}}});
        ids.expose_all("alpha", "alice", &mut result);
        let shown = result["task"]["taskId"].as_str().unwrap().to_owned();
        assert_eq!(
            result["_meta"]["io.modelcontextprotocol/related-task"]["taskId"],
            shown
        );
        assert_eq!(ids.open(&shown, "alice").unwrap().1, "task-9");
    }

    #[test]
    fn task_methods_need_the_extension_offered_and_declared() {
        let declared = json!({ "extensions": { EXTENSION: {} } });
        assert!(require_extension(true, "tasks/get", &declared).is_ok());
        let e = require_extension(true, "tasks/cancel", &json!({ "sampling": {} })).unwrap_err();
        assert_eq!(e.code, MISSING_CAPABILITY);
        assert_eq!(e.data.unwrap()["requiredCapabilities"], declared);
        let e = require_extension(false, "tasks/get", &declared).unwrap_err();
        assert_eq!(e.code, code::METHOD_NOT_FOUND);
    }
}
