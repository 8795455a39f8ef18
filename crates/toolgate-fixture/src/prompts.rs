//! The prompts the conformance suite expects, and `completion/complete` for their arguments and the resource template.

use rmcp::{
    ErrorData,
    model::{
        CompleteRequestParams, CompleteResult, CompletionInfo, GetPromptResult, JsonObject, Prompt,
        Reference, ResultType,
    },
};
use serde_json::{Value, json};

use crate::assets::RED_PIXEL_PNG;

/// The prompt whose description changes with `test_trigger_prompt_change`.
pub const DYNAMIC: &str = "test_dynamic_prompt";

/// Every prompt; `prompt_changes` is how often `test_trigger_prompt_change` ran.
pub fn list(prompt_changes: u64) -> Vec<Prompt> {
    [
        json!({
            "name": "test_simple_prompt",
            "description": "A simple prompt without arguments",
        }),
        json!({
            "name": "test_prompt_with_arguments",
            "description": "A prompt that substitutes two arguments",
            "arguments": [
                { "name": "arg1", "description": "First test argument", "required": true },
                { "name": "arg2", "description": "Second test argument", "required": true },
            ],
        }),
        json!({
            "name": "test_prompt_with_embedded_resource",
            "description": "A prompt that embeds a resource",
            "arguments": [
                { "name": "resourceUri", "description": "URI of the resource to embed", "required": true },
            ],
        }),
        json!({
            "name": "test_prompt_with_image",
            "description": "A prompt that contains an image",
        }),
        json!({
            "name": crate::mrtr::PROMPT,
            "description": "Asks what context to use (input request `user_context`: MRTR on 2026-07-28, elicitation/create before), then renders with it",
        }),
        json!({
            "name": DYNAMIC,
            "description": format!("A prompt the test_trigger_prompt_change tool changes (changed {prompt_changes} time(s))"),
        }),
    ]
    .into_iter()
    .map(|p| serde_json::from_value(p).expect("the fixture's prompts are valid Prompts"))
    .collect()
}

pub fn get(name: &str, args: JsonObject) -> Result<GetPromptResult, ErrorData> {
    let wire = match name {
        "test_simple_prompt" => json!({
            "description": "A simple prompt without arguments",
            "messages": [user(json!({ "type": "text", "text": "This is a simple prompt for testing." }))],
        }),
        "test_prompt_with_arguments" => {
            let arg1 = required(&args, name, "arg1")?;
            let arg2 = required(&args, name, "arg2")?;
            json!({
                "description": "A prompt with arguments",
                "messages": [user(json!({
                    "type": "text",
                    "text": format!("Prompt with arguments: arg1='{arg1}', arg2='{arg2}'"),
                }))],
            })
        }
        "test_prompt_with_embedded_resource" => {
            let uri = required(&args, name, "resourceUri")?;
            json!({
                "description": "A prompt with an embedded resource",
                "messages": [
                    user(json!({
                        "type": "resource",
                        "resource": {
                            "uri": uri,
                            "mimeType": "text/plain",
                            "text": "Embedded resource content for testing.",
                        },
                    })),
                    user(json!({ "type": "text", "text": "Please process the embedded resource above." })),
                ],
            })
        }
        "test_prompt_with_image" => json!({
            "description": "A prompt with an image",
            "messages": [
                user(json!({ "type": "image", "data": RED_PIXEL_PNG, "mimeType": "image/png" })),
                user(json!({ "type": "text", "text": "Please analyze the image above." })),
            ],
        }),
        DYNAMIC => json!({
            "description": "A prompt the test_trigger_prompt_change tool changes",
            "messages": [user(json!({ "type": "text", "text": "This prompt's listing changes; its text does not." }))],
        }),
        unknown => {
            return Err(ErrorData::invalid_params(
                format!("Unknown prompt: {unknown}"),
                Some(json!({ "name": unknown })),
            ));
        }
    };
    let mut result: GetPromptResult = serde_json::from_value(wire)
        .map_err(|e| ErrorData::internal_error(format!("bad prompt result: {e}"), None))?;
    // 2026-07-28 requires it; rmcp removes it again for legacy sessions.
    result.result_type = Some(ResultType::COMPLETE);
    Ok(result)
}

fn user(content: Value) -> Value {
    json!({ "role": "user", "content": content })
}

fn required<'a>(args: &'a JsonObject, prompt: &str, name: &str) -> Result<&'a str, ErrorData> {
    args.get(name).and_then(Value::as_str).ok_or_else(|| {
        ErrorData::invalid_params(
            format!("prompt {prompt} needs a string argument `{name}`"),
            Some(json!({ "argument": name })),
        )
    })
}

/// Suggestions for the arguments this server knows, filtered by what the user typed so far.
pub fn complete(request: &CompleteRequestParams) -> Result<CompleteResult, ErrorData> {
    let argument = request.argument.name.as_str();
    let candidates: &[&str] = match &request.r#ref {
        Reference::Prompt(prompt) => match (prompt.name.as_str(), argument) {
            ("test_prompt_with_arguments", "arg1") => {
                &["paris", "park", "party", "test", "testValue1"]
            }
            ("test_prompt_with_arguments", "arg2") => &["world", "wonder", "test", "testValue2"],
            ("test_prompt_with_embedded_resource", "resourceUri") => &[
                "test://static-text",
                "test://static-binary",
                "test://watched-resource",
            ],
            _ => &[],
        },
        Reference::Resource(template) => match (template.uri.as_str(), argument) {
            ("test://template/{id}/data", "id") => &["1", "2", "3", "123"],
            _ => &[],
        },
        _ => &[],
    };
    let typed = request.argument.value.as_str();
    let values = candidates
        .iter()
        .filter(|c| c.starts_with(typed))
        .map(|c| (*c).to_owned())
        .collect();
    let info =
        CompletionInfo::with_all_values(values).map_err(|e| ErrorData::internal_error(e, None))?;
    Ok(CompleteResult::new(info))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmcp::model::ArgumentInfo;

    fn args(v: Value) -> JsonObject {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn every_listed_prompt_renders() {
        let all = args(json!({ "arg1": "a", "arg2": "b", "resourceUri": "test://x" }));
        // The MRTR prompt needs a request context; `mrtr::get_prompt` renders it.
        for prompt in list(0).iter().filter(|p| p.name != crate::mrtr::PROMPT) {
            get(&prompt.name, all.clone()).unwrap();
        }
    }

    #[test]
    fn arguments_are_substituted() {
        let result = get(
            "test_prompt_with_arguments",
            args(json!({ "arg1": "hello", "arg2": "world" })),
        );
        let wire = serde_json::to_value(result.unwrap()).unwrap();
        assert_eq!(
            wire["messages"][0]["content"]["text"],
            "Prompt with arguments: arg1='hello', arg2='world'"
        );
    }

    #[test]
    fn missing_arguments_are_invalid_params() {
        let error = get("test_prompt_with_arguments", args(json!({ "arg1": "x" }))).unwrap_err();
        assert_eq!(error.code.0, -32602);
    }

    #[test]
    fn completion_filters_by_prefix() {
        let request = CompleteRequestParams::new(
            Reference::for_prompt("test_prompt_with_arguments"),
            ArgumentInfo::new("arg1", "par"),
        );
        let result = complete(&request).unwrap();
        assert_eq!(result.completion.values, ["paris", "park", "party"]);
    }
}
