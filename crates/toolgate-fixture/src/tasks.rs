//! The Tasks extension of 2026-07-28 (SEP-2663, `io.modelcontextprotocol/tasks`): tools that may
//! run as tasks, and the task store behind `tasks/get`, `tasks/update` and `tasks/cancel`.
//!
//! The server decides whether a call becomes a task, never the client: a tool that supports tasks
//! answers a request that declared the extension (in its `_meta` client capabilities, or at
//! `initialize`) with a `CreateTaskResult`, and the client polls `tasks/get` until the task settles.
//! Without the extension, an *optional* tool runs as an ordinary call and a *required* one is
//! refused with -32021 naming the extension. rmcp's `TaskManager` keeps the tasks; this module
//! decides what each tool does inside one.
//!
//! Tools that need the client's input are the step functions of `mrtr.rs`, run in a third way: in a
//! task, a round's input requests park the task in `input_required` (listed by `tasks/get` under
//! `inputRequests`) until `tasks/update` answers them. The same tools outside a task ask through
//! MRTR (2026-07-28) or real requests (legacy), exactly as `mrtr::drive` does.

use std::{collections::BTreeMap, time::Duration};

use rmcp::{
    ErrorData, RoleServer,
    model::{
        CallToolRequestParams, CallToolResponse, CallToolResult, ClientCapabilities, ContentBlock,
        CreateTaskResult, InputRequest,
    },
    service::RequestContext,
    task_manager::{TaskContext, TaskExit, TaskFuture, TaskManager, TaskOptions},
};
use serde_json::{Map, Value, json};

use crate::{
    mrtr::{self, Outcome, Round, Step},
    server::Fixture,
};

pub const GREET: &str = "greet";
pub const SLOW_COMPUTE: &str = "slow_compute";
pub const FAILING_JOB: &str = "failing_job";
pub const PROTOCOL_ERROR_JOB: &str = "protocol_error_job";
pub const CONFIRM_DELETE: &str = "confirm_delete";
pub const MULTI_INPUT: &str = "multi_input";
pub const TOOL_WITH_TASK: &str = "test_tool_with_task";

/// The longest `slow_compute` will sleep, so a stray call cannot hold a task for hours.
const MAX_SECONDS: f64 = 600.0;

/// How long `failing_job` works before it reports its error (the scenarios say "after ~1s").
const FAILING_JOB_WORK: Duration = Duration::from_secs(1);

/// How long the task of `test_tool_with_task` works, so a client sees it `working` first.
const GREETING_WORK: Duration = Duration::from_millis(300);

/// Whether a tool runs as a task when the client declared the extension, and what happens when it
/// did not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Support {
    /// A task with the extension, an ordinary call without it.
    Optional,
    /// A task with the extension, -32021 without it.
    Required,
}

fn support(name: &str) -> Option<Support> {
    match name {
        SLOW_COMPUTE | PROTOCOL_ERROR_JOB | CONFIRM_DELETE | MULTI_INPUT => Some(Support::Optional),
        FAILING_JOB | TOOL_WITH_TASK => Some(Support::Required),
        _ => None,
    }
}

/// The tools of this module, as wire JSON `(name, description, inputSchema)`.
pub fn tool_definitions() -> Vec<(&'static str, &'static str, Value)> {
    let no_args = || json!({ "type": "object", "properties": {} });
    vec![
        (
            GREET,
            "Answers `Hello, {name}!` at once; never a task",
            json!({
                "type": "object",
                "properties": { "name": { "type": "string", "description": "Who to greet" } },
            }),
        ),
        (
            SLOW_COMPUTE,
            "Sleeps `seconds` then reports `label`. A task when the client declared io.modelcontextprotocol/tasks (even for 0 seconds); tasks/cancel settles it as cancelled",
            json!({
                "type": "object",
                "properties": {
                    "seconds": { "type": "number", "minimum": 0, "maximum": MAX_SECONDS },
                    "label": { "type": "string" },
                },
                "required": ["seconds"],
            }),
        ),
        (
            FAILING_JOB,
            "A task (required: -32021 without io.modelcontextprotocol/tasks) that reports a tool error (isError) after about a second",
            no_args(),
        ),
        (
            PROTOCOL_ERROR_JOB,
            "Fails with a JSON-RPC error: as a task it settles as failed with the error inlined",
            no_args(),
        ),
        (
            CONFIRM_DELETE,
            "Asks the user to confirm deleting `filename` (input request `confirm`, elicitation); as a task it waits in input_required for tasks/update. Deletes nothing",
            json!({
                "type": "object",
                "properties": { "filename": { "type": "string" } },
                "required": ["filename"],
            }),
        ),
        (
            MULTI_INPUT,
            "Asks two elicitations at once (`first`, `second`), so two input requests are pending together",
            no_args(),
        ),
        (
            TOOL_WITH_TASK,
            "Asks the user's name through MRTR (`user_name`), then becomes a task (required) whose result says `Hello, <name>!`",
            no_args(),
        ),
    ]
}

/// Did this request declare the tasks extension (per request on 2026-07-28, else at `initialize`)?
fn declared_tasks(cx: &RequestContext<RoleServer>) -> bool {
    cx.client_capabilities()
        .is_some_and(|caps| caps.supports_tasks())
}

fn missing_tasks_extension() -> ErrorData {
    ErrorData::missing_required_client_capability(
        ClientCapabilities::builder().enable_tasks().build(),
    )
}

/// Starts a task; `tasks/get` knows it before the `CreateTaskResult` leaves (SEP-2663 asks for
/// that: a client may poll the moment it has the id).
fn start(tasks: &TaskManager, work: impl FnOnce(TaskContext) -> TaskFuture) -> CallToolResponse {
    // Clients poll often enough to see short tasks settle; the TTL stays rmcp's five minutes.
    let options = TaskOptions::new().with_poll_interval_ms(250);
    CallToolResponse::Task(CreateTaskResult::new(tasks.spawn(options, work)))
}

/// Answers the tools of this module; `None` for every other tool.
pub async fn call_tool(
    fixture: &Fixture,
    request: &CallToolRequestParams,
    cx: &RequestContext<RoleServer>,
) -> Option<Result<CallToolResponse, ErrorData>> {
    let name = request.name.as_ref();
    let args = request.arguments.clone().unwrap_or_default();
    if name == GREET {
        let who = args.get("name").and_then(Value::as_str).unwrap_or("World");
        return Some(Ok(mrtr::text(format!("Hello, {who}!")).into()));
    }
    let support = support(name)?;
    let as_task = declared_tasks(cx);
    if support == Support::Required && !as_task {
        return Some(Err(missing_tasks_extension()));
    }
    let tasks = &fixture.config.tasks;
    Some(match name {
        SLOW_COMPUTE => {
            let seconds = match args.get("seconds").and_then(Value::as_f64) {
                Some(s) if (0.0..=MAX_SECONDS).contains(&s) => s,
                _ => {
                    return Some(Err(ErrorData::invalid_params(
                        format!(
                            "slow_compute needs a number `seconds` between 0 and {MAX_SECONDS}"
                        ),
                        None,
                    )));
                }
            };
            let label = args
                .get("label")
                .and_then(Value::as_str)
                .unwrap_or("slow_compute")
                .to_owned();
            let work = Duration::from_secs_f64(seconds);
            let done = move || mrtr::text(format!("{label}: computed after {seconds} s"));
            if as_task {
                Ok(start(tasks, |task| {
                    Box::pin(async move {
                        tokio::select! {
                            () = tokio::time::sleep(work) => Ok(done()),
                            () = task.cancelled() => Err(TaskExit::Cancelled),
                        }
                    })
                }))
            } else {
                tokio::select! {
                    () = tokio::time::sleep(work) => Ok(done().into()),
                    () = cx.ct.cancelled() => Ok(cancelled().into()),
                }
            }
        }
        FAILING_JOB => Ok(start(tasks, |task| {
            Box::pin(async move {
                tokio::select! {
                    () = tokio::time::sleep(FAILING_JOB_WORK) => Ok(CallToolResult::error(vec![
                        ContentBlock::text("failing_job failed on purpose (a tool error, not a protocol error)"),
                    ])),
                    () = task.cancelled() => Err(TaskExit::Cancelled),
                }
            })
        })),
        PROTOCOL_ERROR_JOB => {
            let error = || ErrorData::internal_error("protocol_error_job failed on purpose", None);
            if as_task {
                Ok(start(tasks, move |_| {
                    Box::pin(async move { Err(TaskExit::Error(error())) })
                }))
            } else {
                Err(error())
            }
        }
        CONFIRM_DELETE => {
            let Some(filename) = args.get("filename").and_then(Value::as_str) else {
                return Some(Err(ErrorData::invalid_params(
                    "confirm_delete needs a string argument `filename`",
                    None,
                )));
            };
            let filename = filename.to_owned();
            run_steps(fixture, request, cx, as_task, move |round| {
                confirm_delete(round, &filename)
            })
            .await
        }
        MULTI_INPUT => run_steps(fixture, request, cx, as_task, multi_input).await,
        TOOL_WITH_TASK => greet_later(fixture, request, cx).await,
        _ => return None,
    })
}

fn cancelled() -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text("cancelled")])
}

/// Runs a step function in a task (the client declared the extension) or as an ordinary call.
async fn run_steps(
    fixture: &Fixture,
    request: &CallToolRequestParams,
    cx: &RequestContext<RoleServer>,
    as_task: bool,
    step: impl Fn(&Round) -> Result<Step<CallToolResult>, ErrorData> + Send + Sync + 'static,
) -> Result<CallToolResponse, ErrorData> {
    if as_task {
        let capabilities = cx.client_capabilities().unwrap_or_default();
        return Ok(start(&fixture.config.tasks, move |task| {
            Box::pin(steps_in_task(task, capabilities, step))
        }));
    }
    let outcome = mrtr::drive(
        fixture,
        cx,
        request.name.as_ref(),
        request.input_responses.as_ref(),
        request.request_state.as_deref(),
        step,
    )
    .await?;
    Ok(match outcome {
        Outcome::Complete(result) => result.into(),
        Outcome::InputRequired(result) => result.into(),
    })
}

/// Runs `step` inside a task: each round's input requests park the task in `input_required` until
/// `tasks/update` has answered all of them (answering some leaves the rest pending).
async fn steps_in_task(
    task: TaskContext,
    capabilities: ClientCapabilities,
    step: impl Fn(&Round) -> Result<Step<CallToolResult>, ErrorData>,
) -> Result<CallToolResult, TaskExit> {
    let mut responses: Option<BTreeMap<String, Value>> = None;
    let mut state = None;
    for number in 1..=mrtr::MAX_ROUNDS {
        let round = Round {
            responses: responses.as_ref(),
            state: state.take(),
            capabilities: &capabilities,
        };
        match step(&round)? {
            Step::Done(result) => return Ok(result),
            Step::Ask {
                requests,
                state: kept,
            } => {
                let asked = requests.into_iter().map(|(key, request)| {
                    let (task, capabilities) = (task.clone(), &capabilities);
                    async move {
                        mrtr::require_capability(capabilities, &request)?;
                        let typed: InputRequest = serde_json::from_value(request).map_err(|e| {
                            ErrorData::internal_error(format!("bad input request {key}: {e}"), None)
                        })?;
                        // A task's input request keys must never repeat, and a step may ask
                        // again under the same key in a later round.
                        let wire = if number == 1 {
                            key.clone()
                        } else {
                            format!("{key}-{number}")
                        };
                        Ok::<_, TaskExit>((key, task.request_input(wire, typed).await?))
                    }
                });
                responses = Some(
                    futures::future::try_join_all(asked)
                        .await?
                        .into_iter()
                        .collect(),
                );
                state = kept;
            }
        }
    }
    Err(TaskExit::Error(ErrorData::internal_error(
        format!("still asking after {} rounds", mrtr::MAX_ROUNDS),
        None,
    )))
}

fn confirm_delete(round: &Round, filename: &str) -> Result<Step<CallToolResult>, ErrorData> {
    let Some(answer) = mrtr::answer(round, "confirm")? else {
        let schema = json!({
            "type": "object",
            "properties": { "confirm": { "type": "boolean", "description": "Delete it?" } },
            "required": ["confirm"],
        });
        return Ok(Step::Ask {
            requests: mrtr::asks([(
                "confirm",
                mrtr::elicit_request(&format!("Delete {filename}?"), schema),
            )]),
            state: None,
        });
    };
    Ok(Step::Done(mrtr::text(
        match mrtr::elicited("confirm", answer)? {
            Ok(content) if content.get("confirm") == Some(&Value::Bool(true)) => {
                format!("Deleted {filename} (pretend: the fixture deletes nothing)")
            }
            Ok(_) => format!("Kept {filename}: deletion was not confirmed"),
            Err(action) => format!("Kept {filename}: the user chose {action}"),
        },
    )))
}

/// Two questions at once. Answers given in an earlier round are kept in the state, so an MRTR
/// client may answer one round partially.
fn multi_input(round: &Round) -> Result<Step<CallToolResult>, ErrorData> {
    let mut answered: Map<String, Value> = round
        .state
        .as_ref()
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let questions = [
        ("first", "First: what is your name?"),
        ("second", "Second: and another name?"),
    ];
    let mut missing = Map::new();
    for (key, message) in questions {
        if let Some(answer) = mrtr::answer(round, key)? {
            // An answer that is no ElicitResult is refused now, not after the other one.
            let _checked = mrtr::elicited(key, answer)?;
            answered.insert(key.to_owned(), Value::Object(answer.clone()));
        }
        if !answered.contains_key(key) {
            missing.insert(
                key.to_owned(),
                mrtr::elicit_request(message, mrtr::one_string_schema("name")),
            );
        }
    }
    if !missing.is_empty() {
        return Ok(Step::Ask {
            requests: missing,
            state: Some(Value::Object(answered)),
        });
    }
    let name = |key: &str| -> Result<String, ErrorData> {
        let answer = answered[key].as_object().cloned().unwrap_or_default();
        Ok(mrtr::outcome_text(mrtr::elicited(key, &answer)?, "name"))
    };
    Ok(Step::Done(mrtr::text(format!(
        "first={}; second={}",
        name("first")?,
        name("second")?
    ))))
}

/// `test_tool_with_task`: MRTR rounds first (the name), then a task for the rest of the work, so
/// the request that finally carries the answer gets a `CreateTaskResult`.
async fn greet_later(
    fixture: &Fixture,
    request: &CallToolRequestParams,
    cx: &RequestContext<RoleServer>,
) -> Result<CallToolResponse, ErrorData> {
    let outcome = mrtr::drive(
        fixture,
        cx,
        TOOL_WITH_TASK,
        request.input_responses.as_ref(),
        request.request_state.as_deref(),
        |round| {
            Ok(match mrtr::answer(round, "user_name")? {
                None => Step::Ask {
                    requests: mrtr::asks([(
                        "user_name",
                        mrtr::elicit_request("What is your name?", mrtr::one_string_schema("name")),
                    )]),
                    state: None,
                },
                Some(answer) => Step::Done(mrtr::outcome_text(
                    mrtr::elicited("user_name", answer)?,
                    "name",
                )),
            })
        },
    )
    .await?;
    let name = match outcome {
        Outcome::InputRequired(result) => return Ok(result.into()),
        Outcome::Complete(name) => name,
    };
    Ok(start(&fixture.config.tasks, |task| {
        Box::pin(async move {
            tokio::select! {
                () = tokio::time::sleep(GREETING_WORK) => Ok(mrtr::text(format!("Hello, {name}!"))),
                () = task.cancelled() => Err(TaskExit::Cancelled),
            }
        })
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round<'a>(
        responses: Option<&'a BTreeMap<String, Value>>,
        state: Option<Value>,
        capabilities: &'a ClientCapabilities,
    ) -> Round<'a> {
        Round {
            responses,
            state,
            capabilities,
        }
    }

    #[test]
    fn every_task_tool_is_listed_and_only_they_support_tasks() {
        let names: Vec<&str> = tool_definitions().iter().map(|(n, _, _)| *n).collect();
        for name in &names {
            assert_eq!(support(name).is_none(), *name == GREET, "{name}");
        }
        assert_eq!(support(FAILING_JOB), Some(Support::Required));
        assert_eq!(support(SLOW_COMPUTE), Some(Support::Optional));
        assert_eq!(support("echo"), None);
    }

    #[test]
    fn the_missing_extension_is_named_in_the_error() {
        let error = missing_tasks_extension();
        assert_eq!(error.code.0, -32021);
        assert_eq!(
            error.data.unwrap()["requiredCapabilities"],
            json!({ "extensions": { "io.modelcontextprotocol/tasks": {} } })
        );
    }

    #[test]
    fn multi_input_keeps_a_partial_answer_and_asks_only_the_rest() {
        let caps = ClientCapabilities::default();
        let Step::Ask { requests, .. } = multi_input(&round(None, None, &caps)).unwrap() else {
            panic!("the first round asks");
        };
        assert_eq!(requests.keys().collect::<Vec<_>>(), ["first", "second"]);
        let first: BTreeMap<String, Value> = [(
            "first".to_owned(),
            json!({ "action": "accept", "content": { "name": "Ada" } }),
        )]
        .into();
        let Step::Ask { requests, state } = multi_input(&round(Some(&first), None, &caps)).unwrap()
        else {
            panic!("one answer is not enough");
        };
        assert_eq!(requests.keys().collect::<Vec<_>>(), ["second"]);
        let second: BTreeMap<String, Value> = [(
            "second".to_owned(),
            json!({ "action": "accept", "content": { "name": "Grace" } }),
        )]
        .into();
        let Step::Done(result) = multi_input(&round(Some(&second), state, &caps)).unwrap() else {
            panic!("both answered");
        };
        let wire = serde_json::to_value(result).unwrap();
        assert_eq!(wire["content"][0]["text"], "first=Ada; second=Grace");
    }

    #[tokio::test]
    async fn a_task_parks_on_its_question_until_tasks_update_answers_it() {
        let tasks = TaskManager::new();
        let caps: ClientCapabilities =
            serde_json::from_value(json!({ "elicitation": {} })).unwrap();
        let created = tasks.spawn(TaskOptions::new(), move |task| {
            Box::pin(steps_in_task(task, caps, |round| {
                confirm_delete(round, "notes.txt")
            }))
        });
        let id = created.task_id;
        let parked = async {
            loop {
                let task = serde_json::to_value(tasks.get_task(&id).unwrap()).unwrap();
                if task["status"] == "input_required" {
                    return task;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        let parked = tokio::time::timeout(Duration::from_secs(5), parked)
            .await
            .expect("the task asks");
        assert_eq!(
            parked["inputRequests"]["confirm"]["method"],
            "elicitation/create"
        );
        tasks
            .update_task(
                &id,
                [(
                    "confirm".to_owned(),
                    json!({ "action": "accept", "content": { "confirm": true } }),
                )],
            )
            .unwrap();
        let done = async {
            loop {
                let task = serde_json::to_value(tasks.get_task(&id).unwrap()).unwrap();
                if task["status"] == "completed" {
                    return task;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        let done = tokio::time::timeout(Duration::from_secs(5), done)
            .await
            .expect("the task completes");
        let text = done["result"]["content"][0]["text"].as_str().unwrap();
        assert!(text.starts_with("Deleted notes.txt"), "{text}");
    }
}
