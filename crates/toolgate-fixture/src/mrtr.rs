//! Tools and a prompt that need the client's input mid-request, served in both protocol eras.
//!
//! Each is written once, as a step function: given the input responses gathered so far (and the
//! state it asked to keep), it either asks for more (`Step::Ask`) or finishes (`Step::Done`).
//! [`drive`] runs it in the era of the request:
//! - 2026-07-28 (MRTR, SEP-2322): one round per request. `Ask` becomes an `InputRequiredResult`
//!   with `inputRequests` and an integrity-protected `requestState`; the client answers by
//!   retrying with `inputResponses` and the echoed `requestState`.
//! - legacy (up to 2025-11-25): all rounds inside one call, each input request sent to the client
//!   as a real `elicitation/create`, `sampling/createMessage` or `roots/list` request (a round's
//!   requests all at once).
//!
//! So the same tool names work for a legacy and a modern client, and a gateway bridging the two
//! eras can be tested against either kind of upstream.

use std::{
    collections::BTreeMap,
    hash::{BuildHasher, RandomState},
};

use rmcp::{
    ErrorData, RoleServer,
    model::{
        CallToolRequestParams, CallToolResponse, CallToolResult, ClientCapabilities, ContentBlock,
        CreateMessageRequestParams, ElicitRequestParams, GetPromptRequestParams, GetPromptResponse,
        GetPromptResult, InputRequest, InputRequiredResult, JsonObject, ProtocolVersion,
        ResultType,
    },
    service::RequestContext,
};
use serde_json::{Map, Value, json};

use crate::server::Fixture;

/// Is this request of the 2026-07-28 era (or later)? Legacy sessions negotiated an older version.
pub fn is_modern(cx: &RequestContext<RoleServer>) -> bool {
    cx.protocol_version()
        .is_some_and(|v| v.as_str() >= ProtocolVersion::V_2026_07_28.as_str())
}

/// At most this many rounds before a call gives up (a client that never answers what is asked).
pub(crate) const MAX_ROUNDS: usize = 10;

pub const ELICITATION: &str = "test_input_required_result_elicitation";
pub const SAMPLING: &str = "test_input_required_result_sampling";
pub const LIST_ROOTS: &str = "test_input_required_result_list_roots";
pub const REQUEST_STATE: &str = "test_input_required_result_request_state";
pub const MULTIPLE_INPUTS: &str = "test_input_required_result_multiple_inputs";
pub const MULTI_ROUND: &str = "test_input_required_result_multi_round";
pub const TAMPERED_STATE: &str = "test_input_required_result_tampered_state";
pub const CAPABILITIES: &str = "test_input_required_result_capabilities";
pub const MISSING_CAPABILITY: &str = "test_missing_capability";
pub const STREAMING_ELICITATION: &str = "test_streaming_elicitation";
/// The prompt that asks for input before it can be rendered.
pub const PROMPT: &str = "test_input_required_result_prompt";

/// The tools of this module, as wire JSON `(name, description, inputSchema)`.
pub fn tool_definitions() -> Vec<(&'static str, &'static str, Value)> {
    let no_args = || json!({ "type": "object", "properties": {} });
    vec![
        (
            ELICITATION,
            "Asks the user's name (input request `user_name`, elicitation) and answers `Hello, <name>!`",
            no_args(),
        ),
        (
            SAMPLING,
            "Asks the client's LLM the capital of France (input request `capital_question`, sampling) and returns its answer",
            no_args(),
        ),
        (
            LIST_ROOTS,
            "Asks for the client's roots (input request `client_roots`, roots/list) and lists them",
            no_args(),
        ),
        (
            REQUEST_STATE,
            "Asks for a confirmation with a requestState; answers `state-ok` once the echoed state verifies",
            no_args(),
        ),
        (
            MULTIPLE_INPUTS,
            "Asks for an elicitation, a sampling and the roots in one round (with a requestState)",
            no_args(),
        ),
        (
            MULTI_ROUND,
            "Asks for a name, then for a favourite colour, in two rounds whose requestState differs",
            no_args(),
        ),
        (
            TAMPERED_STATE,
            "Asks for a confirmation with an integrity-protected requestState; a modified state is refused with -32602",
            no_args(),
        ),
        (
            CAPABILITIES,
            "Asks only for what the client declared among sampling, elicitation and roots",
            no_args(),
        ),
        (
            MISSING_CAPABILITY,
            "Needs the sampling capability: without it the call fails with -32021 (MissingRequiredClientCapability)",
            no_args(),
        ),
        (
            STREAMING_ELICITATION,
            "Asks the user's name (elicitation); on 2026-07-28 as an InputRequiredResult, never as a request on the stream",
            no_args(),
        ),
    ]
}

// ---------------------------------------------------------------------------------------------
// requestState: sealed so a client cannot forge or alter it.
// ---------------------------------------------------------------------------------------------

/// Seals and opens `requestState` values. The state travels through the client as
/// `<hex of the JSON payload>.<64-bit SipHash tag>`; the tag is keyed with this process's random
/// key and covers the tool (or prompt) name, so a state cannot be moved to another tool, altered
/// or invented, and states do not outlive the process. (SipHash is a keyed PRF: ample for a test
/// fixture; a production server would use an HMAC.)
#[derive(Debug, Default)]
pub struct StateSeal {
    key: RandomState,
}

impl StateSeal {
    pub fn seal(&self, scope: &str, payload: &Value) -> String {
        let body = hex(payload.to_string().as_bytes());
        let tag = self.key.hash_one((scope, body.as_str()));
        format!("{body}.{tag:016x}")
    }

    pub fn open(&self, scope: &str, state: &str) -> Result<Value, ErrorData> {
        let refused = || {
            ErrorData::invalid_params(
                "requestState failed its integrity check",
                Some(json!({ "requestState": state })),
            )
        };
        let (body, tag) = state.rsplit_once('.').ok_or_else(refused)?;
        let tag = (tag.len() == 16)
            .then(|| u64::from_str_radix(tag, 16).ok())
            .flatten()
            .ok_or_else(refused)?;
        if self.key.hash_one((scope, body)) != tag {
            return Err(refused());
        }
        let bytes = unhex(body).ok_or_else(refused)?;
        serde_json::from_slice(&bytes).map_err(|_| refused())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The step machinery.
// ---------------------------------------------------------------------------------------------

/// What a step function sees: the answers to the last round's input requests (`None` on the
/// first round), the state it kept, and the client's capabilities.
pub struct Round<'a> {
    pub responses: Option<&'a BTreeMap<String, Value>>,
    pub state: Option<Value>,
    pub capabilities: &'a ClientCapabilities,
}

pub enum Step<T> {
    /// Ask the client for these input requests (`{ "method": …, "params": … }` by key), keeping
    /// `state` for the next round.
    Ask {
        requests: Map<String, Value>,
        state: Option<Value>,
    },
    Done(T),
}

pub enum Outcome<T> {
    Complete(T),
    InputRequired(InputRequiredResult),
}

/// Runs `step` in the era of the request (see the module documentation).
pub async fn drive<T>(
    fixture: &Fixture,
    cx: &RequestContext<RoleServer>,
    scope: &str,
    input_responses: Option<&BTreeMap<String, Value>>,
    request_state: Option<&str>,
    step: impl Fn(&Round) -> Result<Step<T>, ErrorData>,
) -> Result<Outcome<T>, ErrorData> {
    let capabilities = cx.client_capabilities().unwrap_or_default();
    if is_modern(cx) {
        let state = request_state
            .map(|s| fixture.config.seal.open(scope, s))
            .transpose()?;
        let round = Round {
            responses: input_responses,
            state,
            capabilities: &capabilities,
        };
        return match step(&round)? {
            Step::Done(done) => Ok(Outcome::Complete(done)),
            Step::Ask { requests, state } => {
                let mut input_requests = BTreeMap::new();
                for (key, request) in requests {
                    require_capability(&capabilities, &request)?;
                    let request: InputRequest = serde_json::from_value(request).map_err(|e| {
                        ErrorData::internal_error(format!("bad input request {key}: {e}"), None)
                    })?;
                    input_requests.insert(key, request);
                }
                let state = state.map(|s| fixture.config.seal.seal(scope, &s));
                Ok(Outcome::InputRequired(InputRequiredResult::new(
                    Some(input_requests),
                    state,
                )))
            }
        };
    }
    // Legacy: every round within this call, as real requests to the client.
    let mut responses: Option<BTreeMap<String, Value>> = None;
    let mut state = None;
    for _ in 0..MAX_ROUNDS {
        let round = Round {
            responses: responses.as_ref(),
            state: state.take(),
            capabilities: &capabilities,
        };
        match step(&round)? {
            Step::Done(done) => return Ok(Outcome::Complete(done)),
            Step::Ask {
                requests,
                state: kept,
            } => {
                for request in requests.values() {
                    require_capability(&capabilities, request)?;
                }
                // All of a round's requests are in flight at once, as MRTR asks them at once.
                let asked = requests.iter().map(|(key, request)| async move {
                    Ok::<_, ErrorData>((key.clone(), ask_legacy_client(cx, request).await?))
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
    Err(ErrorData::internal_error(
        format!("{scope}: still asking after {MAX_ROUNDS} rounds"),
        None,
    ))
}

/// The capability an input request needs, as its `ClientCapabilities` key.
fn capability_for(method: &str) -> Option<&'static str> {
    match method {
        "elicitation/create" => Some("elicitation"),
        "sampling/createMessage" => Some("sampling"),
        "roots/list" => Some("roots"),
        _ => None,
    }
}

fn declared(capabilities: &ClientCapabilities, capability: &str) -> bool {
    match capability {
        "elicitation" => capabilities.elicitation.is_some(),
        "sampling" => capabilities.sampling.is_some(),
        "roots" => capabilities.roots.is_some(),
        _ => false,
    }
}

/// A server MUST NOT rely on a capability the client did not declare: -32021 instead.
pub(crate) fn require_capability(
    capabilities: &ClientCapabilities,
    request: &Value,
) -> Result<(), ErrorData> {
    let method = request["method"].as_str().unwrap_or_default();
    match capability_for(method) {
        Some(capability) if !declared(capabilities, capability) => {
            Err(missing_capability(capability))
        }
        _ => Ok(()),
    }
}

pub fn missing_capability(capability: &str) -> ErrorData {
    let required: ClientCapabilities = serde_json::from_value(json!({ capability: {} }))
        .expect("a known capability name makes valid ClientCapabilities");
    ErrorData::missing_required_client_capability(required)
}

/// Sends one input request to a legacy client as a real server-to-client request.
async fn ask_legacy_client(
    cx: &RequestContext<RoleServer>,
    request: &Value,
) -> Result<Value, ErrorData> {
    let params = request.get("params").cloned().unwrap_or_else(|| json!({}));
    let failed = |error: rmcp::service::ServiceError| {
        ErrorData::internal_error(format!("the client's answer failed: {error}"), None)
    };
    let bad =
        |e: serde_json::Error| ErrorData::internal_error(format!("bad input request: {e}"), None);
    let answer = match request["method"].as_str().unwrap_or_default() {
        "elicitation/create" => {
            let params: ElicitRequestParams = serde_json::from_value(params).map_err(bad)?;
            serde_json::to_value(cx.peer.create_elicitation(params).await.map_err(failed)?)
        }
        "sampling/createMessage" => {
            let params: CreateMessageRequestParams = serde_json::from_value(params).map_err(bad)?;
            serde_json::to_value(cx.peer.create_message(params).await.map_err(failed)?)
        }
        "roots/list" => serde_json::to_value(cx.peer.list_roots().await.map_err(failed)?),
        other => {
            return Err(ErrorData::internal_error(
                format!("cannot ask a client for {other}"),
                None,
            ));
        }
    };
    answer.map_err(|e| ErrorData::internal_error(e.to_string(), None))
}

// ---------------------------------------------------------------------------------------------
// Input requests and reading their answers.
// ---------------------------------------------------------------------------------------------

pub(crate) fn elicit_request(message: &str, schema: Value) -> Value {
    json!({
        "method": "elicitation/create",
        "params": { "mode": "form", "message": message, "requestedSchema": schema },
    })
}

pub(crate) fn one_string_schema(property: &str) -> Value {
    json!({
        "type": "object",
        "properties": { property: { "type": "string" } },
        "required": [property],
    })
}

fn sampling_request(prompt: &str, max_tokens: u32) -> Value {
    json!({
        "method": "sampling/createMessage",
        "params": {
            "messages": [{ "role": "user", "content": { "type": "text", "text": prompt } }],
            "maxTokens": max_tokens,
        },
    })
}

fn roots_request() -> Value {
    json!({ "method": "roots/list", "params": {} })
}

pub(crate) fn asks(entries: impl IntoIterator<Item = (&'static str, Value)>) -> Map<String, Value> {
    entries
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
}

/// The answer under `key`, if the client gave one. An answer that is not a JSON object is a
/// protocol error (-32602), not a reason to ask again.
pub(crate) fn answer<'a>(round: &'a Round, key: &str) -> Result<Option<&'a JsonObject>, ErrorData> {
    match round.responses.and_then(|r| r.get(key)) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(object)) => Ok(Some(object)),
        Some(other) => Err(ErrorData::invalid_params(
            format!("inputResponses.{key} must be an object, not {other}"),
            Some(json!({ "inputResponse": key })),
        )),
    }
}

/// What the user did with an elicitation: `Ok(content)` when accepted, `Err(action)` otherwise.
pub(crate) fn elicited(
    key: &str,
    answer: &JsonObject,
) -> Result<Result<JsonObject, String>, ErrorData> {
    match answer.get("action").and_then(Value::as_str) {
        Some("accept") => Ok(Ok(answer
            .get("content")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default())),
        Some(action @ ("decline" | "cancel")) => Ok(Err(action.to_owned())),
        _ => Err(ErrorData::invalid_params(
            format!("inputResponses.{key} is not an ElicitResult (no valid `action`)"),
            Some(json!({ "inputResponse": key })),
        )),
    }
}

/// The text of a `CreateMessageResult` (content as one block or, from 2025-11-25 on, a list).
fn sampled_text(key: &str, answer: &JsonObject) -> Result<String, ErrorData> {
    let block = match answer.get("content") {
        Some(Value::Array(blocks)) => blocks.iter().find(|b| b["type"] == "text"),
        Some(block) => Some(block),
        None => None,
    };
    block
        .and_then(|b| b["text"].as_str())
        .map(str::to_owned)
        .ok_or_else(|| {
            ErrorData::invalid_params(
                format!("inputResponses.{key} is not a CreateMessageResult with text content"),
                Some(json!({ "inputResponse": key })),
            )
        })
}

/// `uri (name)` for each root of a `ListRootsResult`.
fn listed_roots(key: &str, answer: &JsonObject) -> Result<Vec<String>, ErrorData> {
    let roots = answer
        .get("roots")
        .and_then(Value::as_array)
        .ok_or_else(|| {
            ErrorData::invalid_params(
                format!("inputResponses.{key} is not a ListRootsResult"),
                Some(json!({ "inputResponse": key })),
            )
        })?;
    Ok(roots
        .iter()
        .map(|root| {
            let uri = root["uri"].as_str().unwrap_or("?");
            match root["name"].as_str() {
                Some(name) => format!("{uri} ({name})"),
                None => uri.to_owned(),
            }
        })
        .collect())
}

pub(crate) fn outcome_text(elicitation: Result<JsonObject, String>, field: &str) -> String {
    match elicitation {
        Ok(content) => content
            .get(field)
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
            .unwrap_or_else(|| "(not given)".into()),
        Err(action) => format!("(the user chose {action})"),
    }
}

pub(crate) fn text(text: impl Into<String>) -> CallToolResult {
    CallToolResult::success(vec![ContentBlock::text(text)])
}

// ---------------------------------------------------------------------------------------------
// The tools.
// ---------------------------------------------------------------------------------------------

/// Answers the tools of this module, and, for 2026-07-28 requests, the legacy tools that ask the
/// client mid-call (`test_sampling`, `test_elicitation*`), which cannot send requests in that era.
/// `None` for every other tool.
pub async fn call_tool(
    fixture: &Fixture,
    request: &CallToolRequestParams,
    cx: &RequestContext<RoleServer>,
) -> Option<Result<CallToolResponse, ErrorData>> {
    let name = request.name.as_ref();
    let args = request.arguments.clone().unwrap_or_default();
    let responses = request.input_responses.as_ref();
    let state = request.request_state.as_deref();
    let outcome = match name {
        ELICITATION => {
            drive(fixture, cx, name, responses, state, |round| {
                Ok(match answer(round, "user_name")? {
                    None => Step::Ask {
                        requests: asks([(
                            "user_name",
                            elicit_request("What is your name?", one_string_schema("name")),
                        )]),
                        state: None,
                    },
                    Some(a) => match elicited("user_name", a)? {
                        Ok(content) => Step::Done(text(format!(
                            "Hello, {}!",
                            outcome_text(Ok(content), "name")
                        ))),
                        Err(action) => {
                            Step::Done(text(format!("No name: the user chose {action}")))
                        }
                    },
                })
            })
            .await
        }
        SAMPLING => {
            drive(fixture, cx, name, responses, state, |round| {
                Ok(match answer(round, "capital_question")? {
                    None => Step::Ask {
                        requests: asks([(
                            "capital_question",
                            sampling_request("What is the capital of France?", 100),
                        )]),
                        state: None,
                    },
                    Some(a) => Step::Done(text(format!(
                        "Sampling result: {}",
                        sampled_text("capital_question", a)?
                    ))),
                })
            })
            .await
        }
        LIST_ROOTS => {
            drive(fixture, cx, name, responses, state, |round| {
                Ok(match answer(round, "client_roots")? {
                    None => Step::Ask {
                        requests: asks([("client_roots", roots_request())]),
                        state: None,
                    },
                    Some(a) => Step::Done(text(format!(
                        "Client roots: {}",
                        listed_roots("client_roots", a)?.join(", ")
                    ))),
                })
            })
            .await
        }
        REQUEST_STATE | TAMPERED_STATE => {
            drive(fixture, cx, name, responses, state, |round| {
                let ask = || Step::Ask {
                    requests: asks([(
                        "confirm",
                        elicit_request(
                            "Please confirm",
                            json!({
                                "type": "object",
                                "properties": { "ok": { "type": "boolean" } },
                                "required": ["ok"],
                            }),
                        ),
                    )]),
                    state: Some(json!({ "asked": "confirm" })),
                };
                // The answer only counts together with the state this server handed out.
                if round.state.is_none() {
                    return Ok(ask());
                }
                Ok(match answer(round, "confirm")? {
                    None => ask(),
                    Some(a) => Step::Done(text(format!(
                        "state-ok: requestState verified; confirmed={}",
                        outcome_text(elicited("confirm", a)?, "ok")
                    ))),
                })
            })
            .await
        }
        MULTIPLE_INPUTS => {
            drive(fixture, cx, name, responses, state, |round| {
                let all = [
                    (
                        "user_name",
                        elicit_request("What is your name?", one_string_schema("name")),
                    ),
                    ("greeting", sampling_request("Generate a greeting", 50)),
                    ("client_roots", roots_request()),
                ];
                if round.state.is_none() {
                    return Ok(Step::Ask {
                        requests: asks(all),
                        state: Some(json!({ "asked": ["user_name", "greeting", "client_roots"] })),
                    });
                }
                let mut missing = Map::new();
                for (key, request) in all {
                    if answer(round, key)?.is_none() {
                        missing.insert(key.to_owned(), request);
                    }
                }
                if !missing.is_empty() {
                    return Ok(Step::Ask {
                        requests: missing,
                        state: round.state.clone(),
                    });
                }
                let name = outcome_text(
                    elicited("user_name", answer(round, "user_name")?.expect("checked"))?,
                    "name",
                );
                let greeting =
                    sampled_text("greeting", answer(round, "greeting")?.expect("checked"))?;
                let roots = listed_roots(
                    "client_roots",
                    answer(round, "client_roots")?.expect("checked"),
                )?;
                Ok(Step::Done(text(format!(
                    "name={name}; greeting={greeting}; roots={}",
                    roots.join(", ")
                ))))
            })
            .await
        }
        MULTI_ROUND => {
            drive(fixture, cx, name, responses, state, |round| {
                let step1 = || Step::Ask {
                    requests: asks([(
                        "step1",
                        elicit_request("Step 1: What is your name?", one_string_schema("name")),
                    )]),
                    state: Some(json!({ "step": 1 })),
                };
                let step2 = |name: &str| Step::Ask {
                    requests: asks([(
                        "step2",
                        elicit_request(
                            "Step 2: What is your favorite color?",
                            one_string_schema("color"),
                        ),
                    )]),
                    state: Some(json!({ "step": 2, "name": name })),
                };
                let Some(state) = &round.state else {
                    return Ok(step1());
                };
                Ok(match state["step"].as_u64() {
                    Some(2) => {
                        let name = state["name"].as_str().unwrap_or_default();
                        match answer(round, "step2")? {
                            None => step2(name),
                            Some(a) => Step::Done(text(format!(
                                "name={name}; color={}",
                                outcome_text(elicited("step2", a)?, "color")
                            ))),
                        }
                    }
                    _ => match answer(round, "step1")? {
                        None => step1(),
                        Some(a) => step2(&outcome_text(elicited("step1", a)?, "name")),
                    },
                })
            })
            .await
        }
        CAPABILITIES => drive(fixture, cx, name, responses, state, |round| {
            let wanted = [
                (
                    "sampling",
                    "capital_question",
                    sampling_request("What is the capital of France?", 100),
                ),
                (
                    "elicitation",
                    "user_name",
                    elicit_request("What is your name?", one_string_schema("name")),
                ),
                ("roots", "client_roots", roots_request()),
            ];
            let offered: Vec<_> = wanted
                .into_iter()
                .filter(|(capability, _, _)| declared(round.capabilities, capability))
                .collect();
            if offered.is_empty() {
                return Ok(Step::Done(text(
                    "The client declared none of sampling, elicitation and roots: nothing to ask",
                )));
            }
            if round.responses.is_none() || round.state.is_none() {
                let keys: Vec<&str> = offered.iter().map(|(_, key, _)| *key).collect();
                return Ok(Step::Ask {
                    requests: offered
                        .into_iter()
                        .map(|(_, key, request)| (key.to_owned(), request))
                        .collect(),
                    state: Some(json!({ "asked": keys })),
                });
            }
            let answered: Vec<&str> = offered
                .iter()
                .map(|(_, key, _)| *key)
                .filter(|key| round.responses.is_some_and(|r| r.contains_key(*key)))
                .collect();
            Ok(Step::Done(text(format!(
                "Asked only for declared capabilities; answered: {}",
                answered.join(", ")
            ))))
        })
        .await,
        MISSING_CAPABILITY => {
            drive(fixture, cx, name, responses, state, |round| {
                if round.capabilities.sampling.is_none() {
                    return Err(missing_capability("sampling"));
                }
                Ok(match answer(round, "llm")? {
                    None => Step::Ask {
                        requests: asks([("llm", sampling_request("Say hello", 20))]),
                        state: None,
                    },
                    Some(a) => Step::Done(text(format!("LLM said: {}", sampled_text("llm", a)?))),
                })
            })
            .await
        }
        STREAMING_ELICITATION => {
            drive(fixture, cx, name, responses, state, |round| {
                Ok(match answer(round, "user_name")? {
                    None => Step::Ask {
                        requests: asks([(
                            "user_name",
                            elicit_request("What should I call you?", one_string_schema("name")),
                        )]),
                        state: None,
                    },
                    Some(a) => Step::Done(text(format!(
                        "Thanks, {}",
                        outcome_text(elicited("user_name", a)?, "name")
                    ))),
                })
            })
            .await
        }
        // The legacy tools that ask mid-call: on 2026-07-28 they ask through MRTR instead.
        "test_sampling" if is_modern(cx) => {
            let Some(prompt) = args.get("prompt").and_then(Value::as_str) else {
                return Some(Err(ErrorData::invalid_params(
                    "test_sampling needs a string argument `prompt`",
                    None,
                )));
            };
            let prompt = prompt.to_owned();
            drive(fixture, cx, name, responses, state, move |round| {
                Ok(match answer(round, "llm")? {
                    None => Step::Ask {
                        requests: asks([("llm", sampling_request(&prompt, 100))]),
                        state: None,
                    },
                    Some(a) => {
                        Step::Done(text(format!("LLM response: {}", sampled_text("llm", a)?)))
                    }
                })
            })
            .await
        }
        "test_elicitation"
        | "test_elicitation_sep1034_defaults"
        | "test_elicitation_sep1330_enums"
            if is_modern(cx) =>
        {
            let (message, schema, label) = crate::tools::elicitation_of(name, &args);
            drive(fixture, cx, name, responses, state, move |round| {
                Ok(match answer(round, "user_input")? {
                    None => Step::Ask {
                        requests: asks([("user_input", elicit_request(&message, schema.clone()))]),
                        state: None,
                    },
                    Some(a) => {
                        let action = a.get("action").and_then(Value::as_str).unwrap_or_default();
                        let _checked = elicited("user_input", a)?;
                        let content = a.get("content").cloned().unwrap_or(Value::Null);
                        Step::Done(text(format!("{label}: action={action}, content={content}")))
                    }
                })
            })
            .await
        }
        _ => return None,
    };
    Some(outcome.map(|outcome| match outcome {
        Outcome::Complete(result) => CallToolResponse::Complete(result),
        Outcome::InputRequired(result) => CallToolResponse::InputRequired(result),
    }))
}

/// `prompts/get` of [`PROMPT`]: it asks what context to use, then renders with it.
pub async fn get_prompt(
    fixture: &Fixture,
    request: &GetPromptRequestParams,
    cx: &RequestContext<RoleServer>,
) -> Result<GetPromptResponse, ErrorData> {
    let outcome = drive(
        fixture,
        cx,
        PROMPT,
        request.input_responses.as_ref(),
        request.request_state.as_deref(),
        |round| {
            Ok(match answer(round, "user_context")? {
                None => Step::Ask {
                    requests: asks([(
                        "user_context",
                        elicit_request(
                            "What context should the prompt use?",
                            one_string_schema("context"),
                        ),
                    )]),
                    state: None,
                },
                Some(a) => {
                    let context = outcome_text(elicited("user_context", a)?, "context");
                    Step::Done(context)
                }
            })
        },
    )
    .await?;
    Ok(match outcome {
        Outcome::InputRequired(result) => GetPromptResponse::InputRequired(result),
        Outcome::Complete(context) => {
            let wire = json!({
                "description": "A prompt rendered with the context the user gave",
                "messages": [{
                    "role": "user",
                    "content": { "type": "text", "text": format!("Use this context: {context}") },
                }],
            });
            let mut result: GetPromptResult = serde_json::from_value(wire)
                .map_err(|e| ErrorData::internal_error(format!("bad prompt result: {e}"), None))?;
            result.result_type = Some(ResultType::COMPLETE);
            GetPromptResponse::Complete(result)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_state_opens_only_unaltered_and_for_its_scope() {
        let seal = StateSeal::default();
        let payload = json!({ "step": 2, "name": "Alice" });
        let state = seal.seal("tool_a", &payload);
        assert_eq!(seal.open("tool_a", &state).unwrap(), payload);
        assert!(
            seal.open("tool_b", &state).is_err(),
            "moved to another tool"
        );
        assert!(seal.open("tool_a", &format!("{state}-TAMPERED")).is_err());
        let (body, tag) = state.rsplit_once('.').unwrap();
        let forged = format!("{}.{tag}", hex(br#"{"step":3}"#));
        assert!(seal.open("tool_a", &forged).is_err(), "body swapped");
        assert!(seal.open("tool_a", body).is_err(), "tag dropped");
        let other_process = StateSeal::default();
        assert!(other_process.open("tool_a", &state).is_err());
        assert_eq!(
            seal.open("tool_a", "zz").unwrap_err().code.0,
            -32602,
            "refusals are invalid params"
        );
    }

    #[test]
    fn input_requests_parse_as_rmcp_input_requests() {
        for request in [
            elicit_request("m", one_string_schema("name")),
            sampling_request("p", 10),
            roots_request(),
        ] {
            let typed: InputRequest = serde_json::from_value(request.clone()).unwrap();
            let wire = serde_json::to_value(typed).unwrap();
            assert_eq!(wire["method"], request["method"]);
        }
    }

    #[test]
    fn missing_capability_names_it_as_an_object() {
        let error = missing_capability("sampling");
        assert_eq!(error.code.0, -32021);
        assert_eq!(
            error.data.unwrap()["requiredCapabilities"],
            json!({ "sampling": {} })
        );
    }
}
