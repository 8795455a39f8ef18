//! 2026-07-28 request headers: `MCP-Protocol-Version`, `Mcp-Method`, `Mcp-Name`
//! and `Mcp-Param-*` mirror the body so intermediaries can route without parsing
//! it. Downstream, as a body-processing intermediary, toolgate checks that they
//! agree (any disagreement is a `HeaderMismatch`, -32020, HTTP 400); upstream, as
//! a client, it writes them (`mirror`).

use crate::gateway::modern::modern_code::HEADER_MISMATCH;
use crate::jsonrpc::{ErrorObject, Message};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::HeaderMap;
use serde_json::Value;

fn mismatch(message: String) -> ErrorObject {
    ErrorObject::new(HEADER_MISMATCH, format!("Header mismatch: {message}"))
}

/// A header value as text: visible ASCII, space and tab only; surrounding
/// whitespace dropped; the `=?base64?…?=` sentinel decoded.
pub fn decode_value(name: &str, raw: &http::HeaderValue) -> Result<String, ErrorObject> {
    let bad = || mismatch(format!("{name} contains invalid characters"));
    let bytes = raw.as_bytes();
    if bytes
        .iter()
        .any(|&b| !(b == b'\t' || (0x20..=0x7e).contains(&b)))
    {
        return Err(bad());
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|_| bad())?
        .trim_matches([' ', '\t']);
    if let Some(inner) = text
        .strip_prefix("=?base64?")
        .and_then(|t| t.strip_suffix("?="))
    {
        let decoded = STANDARD.decode(inner).map_err(|_| bad())?;
        return String::from_utf8(decoded).map_err(|_| bad());
    }
    Ok(text.to_owned())
}

fn header(headers: &HeaderMap, name: &str) -> Result<Option<String>, ErrorObject> {
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    // Two values for one mirrored field: an intermediary could route on either.
    if values.next().is_some() {
        return Err(mismatch(format!("{name} appears more than once")));
    }
    first.map(|v| decode_value(name, v)).transpose()
}

/// The params member a method's `Mcp-Name` header mirrors (SEP-2243; SEP-2663
/// adds the task methods, so a router can send a task's requests where it lives).
fn named_field(method: &str) -> Option<&'static str> {
    match method {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" => Some("uri"),
        "tasks/get" | "tasks/update" | "tasks/cancel" => Some("taskId"),
        _ => None,
    }
}

/// `MCP-Protocol-Version` must be present and equal the body's version.
pub fn check_version(headers: &HeaderMap, body_version: &str) -> Result<(), ErrorObject> {
    let Some(version) = header(headers, "mcp-protocol-version")? else {
        return Err(mismatch(
            "the MCP-Protocol-Version header is missing".into(),
        ));
    };
    if version != body_version {
        return Err(mismatch(format!(
            "MCP-Protocol-Version header value '{version}' does not match body value '{body_version}'"
        )));
    }
    Ok(())
}

/// Check the standard headers against the body. `tool_schema` is the listed
/// `inputSchema` of the tool a `tools/call` names, for its `x-mcp-header` params.
pub fn check(
    headers: &HeaderMap,
    msg: &Message,
    body_version: &str,
    tool_schema: Option<&Value>,
) -> Result<(), ErrorObject> {
    check_version(headers, body_version)?;
    let Some(method) = header(headers, "mcp-method")? else {
        return Err(mismatch("the Mcp-Method header is missing".into()));
    };
    if method != msg.method() {
        return Err(mismatch(format!(
            "Mcp-Method header value '{method}' does not match body value '{}'",
            msg.method()
        )));
    }
    if let Some(field) = named_field(msg.method()) {
        let body = msg.param(field).and_then(Value::as_str).unwrap_or("");
        match header(headers, "mcp-name")? {
            None => return Err(mismatch("the Mcp-Name header is missing".into())),
            Some(h) if h != body => {
                return Err(mismatch(format!(
                    "Mcp-Name header value '{h}' does not match body value '{body}'"
                )));
            }
            Some(_) => {}
        }
    }
    if let Some(schema) = tool_schema {
        let args = msg.param("arguments").cloned().unwrap_or(Value::Null);
        for (name, path) in annotated_params(schema) {
            let header_name = format!("mcp-param-{}", name.to_ascii_lowercase());
            let value = path.iter().try_fold(&args, |v, key| v.get(key));
            let given = header(headers, &header_name)?;
            match (value.filter(|v| !v.is_null()), given) {
                (Some(v), Some(h)) if !same_value(v, &h) => {
                    return Err(mismatch(format!(
                        "Mcp-Param-{name} header value '{h}' does not match the argument"
                    )));
                }
                (Some(_), None) => {
                    return Err(mismatch(format!(
                        "the Mcp-Param-{name} header is missing for an argument the tool mirrors"
                    )));
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// A value as a header may carry it: plain when it is safe visible ASCII,
/// otherwise (or when it looks like the sentinel itself) `=?base64?…?=`.
pub fn encode_value(text: &str) -> String {
    let sentinel_like = text.starts_with("=?base64?") && text.ends_with("?=");
    let plain = !text.is_empty()
        && text.bytes().all(|b| (0x20..=0x7e).contains(&b))
        && !text.starts_with(' ')
        && !text.ends_with(' ')
        && !sentinel_like;
    if plain {
        text.to_owned()
    } else {
        format!("=?base64?{}?=", STANDARD.encode(text.as_bytes()))
    }
}

/// Mirrored parameters of a tool: header name part and property path.
pub type ParamHeaders = Vec<(String, Vec<String>)>;

/// The headers a client sends with a 2026-07-28 request: method, name and the
/// tool's mirrored parameters (`params` is the request's params).
pub fn mirror(
    method: &str,
    params: Option<&Value>,
    tool: Option<&ParamHeaders>,
) -> Vec<(String, String)> {
    let mut out = vec![("mcp-method".to_owned(), method.to_owned())];
    let name = named_field(method).and_then(|field| params?.get(field));
    if let Some(n) = name.and_then(Value::as_str) {
        out.push(("mcp-name".to_owned(), encode_value(n)));
    }
    if let (Some(annotated), Some(args)) = (tool, params.and_then(|p| p.get("arguments"))) {
        for (name, path) in annotated {
            let value = path.iter().try_fold(args, |v, key| v.get(key));
            let text = match value {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Bool(b)) => b.to_string(),
                Some(Value::Number(n)) => n.to_string(),
                _ => continue,
            };
            out.push((format!("mcp-param-{name}"), encode_value(&text)));
        }
    }
    out
}

fn same_value(v: &Value, header: &str) -> bool {
    match v {
        Value::String(s) => s == header,
        Value::Bool(b) => header == if *b { "true" } else { "false" },
        // Integers compare numerically (`42` and `42.0` are the same value).
        Value::Number(n) => header
            .parse::<f64>()
            .ok()
            .zip(n.as_f64())
            .is_some_and(|(a, b)| a == b),
        _ => false,
    }
}

/// `x-mcp-header` annotations reachable from the schema root through
/// `properties` only, as (header name part, property path).
pub fn annotated_params(schema: &Value) -> Vec<(String, Vec<String>)> {
    fn walk(node: &Value, path: &mut Vec<String>, out: &mut Vec<(String, Vec<String>)>) {
        let Some(props) = node.get("properties").and_then(Value::as_object) else {
            return;
        };
        for (key, child) in props {
            path.push(key.clone());
            if let Some(name) = child.get("x-mcp-header").and_then(Value::as_str) {
                out.push((name.to_owned(), path.clone()));
            }
            walk(child, path, out);
            path.pop();
        }
    }
    let mut out = Vec::new();
    walk(schema, &mut Vec::new(), &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jsonrpc::Id;
    use serde_json::json;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                http::HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn call(args: Value) -> Message {
        Message::request(
            Id::Num(1),
            "tools/call",
            Some(json!({ "name": "get weather", "arguments": args })),
        )
    }

    #[test]
    fn matching_headers_pass_and_each_mismatch_fails() {
        let ok = [
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/call"),
            ("mcp-name", "=?base64?Z2V0IHdlYXRoZXI=?="),
        ];
        assert!(check(&headers(&ok), &call(json!({})), "2026-07-28", None).is_ok());
        for (drop, replace) in [
            ("mcp-protocol-version", Some("2025-11-25")),
            ("mcp-protocol-version", None),
            ("mcp-method", Some("TOOLS/CALL")),
            ("mcp-method", None),
            ("mcp-name", Some("other")),
            ("mcp-name", None),
        ] {
            let mut h: Vec<(&str, &str)> = ok.iter().filter(|(k, _)| *k != drop).copied().collect();
            if let Some(v) = replace {
                h.push((drop, v));
            }
            let e = check(&headers(&h), &call(json!({})), "2026-07-28", None).unwrap_err();
            assert_eq!(e.code, HEADER_MISMATCH, "{drop} {replace:?}");
        }
    }

    #[test]
    fn mirrored_parameters_are_checked() {
        let schema = json!({"type": "object", "properties": {
            "region": {"type": "string", "x-mcp-header": "Region"},
            "opts": {"type": "object", "properties": {"n": {"type": "integer", "x-mcp-header": "N"}}},
            "list": {"type": "array", "items": {"properties": {"z": {"x-mcp-header": "Z"}}}}
        }});
        assert_eq!(
            annotated_params(&schema).len(),
            2,
            "array items are not reachable"
        );
        let base = [
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/call"),
            ("mcp-name", "get weather"),
        ];
        let with = |extra: &[(&str, &str)]| {
            let mut h = base.to_vec();
            h.extend_from_slice(extra);
            headers(&h)
        };
        let args = json!({"region": "us-west1", "opts": {"n": 42}});
        let good = with(&[("mcp-param-region", "us-west1"), ("mcp-param-n", "42.0")]);
        assert!(check(&good, &call(args.clone()), "2026-07-28", Some(&schema)).is_ok());
        let wrong = with(&[("mcp-param-region", "eu"), ("mcp-param-n", "42")]);
        assert!(check(&wrong, &call(args.clone()), "2026-07-28", Some(&schema)).is_err());
        let missing = with(&[("mcp-param-n", "42")]);
        assert!(check(&missing, &call(args), "2026-07-28", Some(&schema)).is_err());
        // No value in the body: no header expected.
        assert!(check(&with(&[]), &call(json!({})), "2026-07-28", Some(&schema)).is_ok());
    }

    #[test]
    fn what_is_mirrored_reads_back_the_same() {
        let schema =
            json!({"properties": {"region": {"type": "string", "x-mcp-header": "Region"}}});
        let params = json!({"name": "héllo", "arguments": {"region": " padded "}});
        let out = mirror(
            "tools/call",
            Some(&params),
            Some(&annotated_params(&schema)),
        );
        let mut h = HeaderMap::new();
        for (k, v) in &out {
            h.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                http::HeaderValue::from_str(v).unwrap(),
            );
        }
        h.insert(
            "mcp-protocol-version",
            http::HeaderValue::from_static("2026-07-28"),
        );
        let msg = Message::request(Id::Num(1), "tools/call", Some(params));
        assert!(
            check(&h, &msg, "2026-07-28", Some(&schema)).is_ok(),
            "{out:?}"
        );
        assert_eq!(encode_value("=?base64?x?="), "=?base64?PT9iYXNlNjQ/eD89?=");
    }

    #[test]
    fn task_requests_mirror_their_task_id() {
        let params = json!({"taskId": "task-7", "inputResponses": {}});
        assert_eq!(
            mirror("tasks/update", Some(&params), None),
            [
                ("mcp-method".to_owned(), "tasks/update".to_owned()),
                ("mcp-name".to_owned(), "task-7".to_owned()),
            ]
        );
        let get = Message::request(Id::Num(1), "tasks/get", Some(params));
        let base = [
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tasks/get"),
        ];
        let with_name = |name: &'static str| {
            let mut h = base.to_vec();
            h.push(("mcp-name", name));
            headers(&h)
        };
        assert!(check(&with_name("task-7"), &get, "2026-07-28", None).is_ok());
        for bad in [with_name("task-8"), headers(&base)] {
            let e = check(&bad, &get, "2026-07-28", None).unwrap_err();
            assert_eq!(e.code, HEADER_MISMATCH);
        }
    }

    #[test]
    fn values_are_trimmed_and_sentinels_decoded() {
        let v = http::HeaderValue::from_static("  name  ");
        assert_eq!(decode_value("Mcp-Name", &v).unwrap(), "name");
        let v = http::HeaderValue::from_static("=?base64?SGVsbG8sIOS4lueVjA==?=");
        assert_eq!(decode_value("Mcp-Name", &v).unwrap(), "Hello, 世界");
        let v = http::HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap();
        assert!(decode_value("Mcp-Name", &v).is_err());
    }
}
