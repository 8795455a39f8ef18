//! `toolgate policy …` as an operator uses it: checking a policy directory,
//! reading the schema, and asking why a call would be allowed or denied.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn toolgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_toolgate"))
        .args(args)
        .output()
        .expect("toolgate runs")
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn explain(principal: &str, resource: &str, context: &str, json: bool) -> Output {
    let policies = repo("examples/policies");
    let config = repo("examples/policy.yaml");
    let mut args = vec![
        "policy",
        "explain",
        "--policies",
        policies.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
        "--principal",
        principal,
        "--action",
        "call_tool",
        "--resource",
        resource,
        "--context",
        context,
    ];
    if json {
        args.push("--json");
    }
    toolgate(&args)
}

// Monday 2026-11-23 10:30 UTC, and the Saturday before.
const MONDAY: u64 = 1_795_429_805;
const SATURDAY: u64 = MONDAY - 2 * 86_400;

#[test]
fn check_accepts_the_examples() {
    let out = toolgate(&[
        "policy",
        "check",
        repo("examples/policies").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains(": ok ("),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn check_locates_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.cedar"),
        "permit (principal, action, resource);\n\n@id(\"typo\")\npermit (principal, action, resource)\nwhen { resource.risc == \"high\" };\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("b.cedar"),
        "forbid (principal, action, resource)\nwhen { 1 + };\n",
    )
    .unwrap();
    let out = toolgate(&["policy", "check", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("a.cedar:5:"), "{err}");
    assert!(err.contains("policy `typo`"), "{err}");
    assert!(err.contains("did you mean `risk`?"), "{err}");
    assert!(err.contains("b.cedar:2:"), "{err}");
}

#[test]
fn schema_prints_the_published_schema() {
    let out = toolgate(&["policy", "schema"]);
    assert!(out.status.success());
    let published = std::fs::read_to_string(repo("docs/toolgate.cedarschema")).unwrap();
    assert_eq!(text(&out.stdout), published);
    // With a directory, its declarations are in it.
    let out = toolgate(&[
        "policy",
        "schema",
        "--policies",
        repo("examples/policies").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("amount"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn explain_allows_and_names_the_policy() {
    let ctx = format!(r#"{{"args":{{"amount":50,"currency":"EUR"}},"now":{MONDAY}}}"#);
    let out = explain(
        r#"{"user":"sam","groups":["support"]}"#,
        "tool:payments/refund",
        &ctx,
        false,
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.starts_with("ALLOW (allowed)"), "{stdout}");
    assert!(stdout.contains("support-small-refunds"), "{stdout}");
    assert!(stdout.contains("roles.cedar:"), "{stdout}");
    assert!(stdout.contains("listed:   yes"), "{stdout}");
}

#[test]
fn explain_denies_the_type_bypass_with_policy_error() {
    let ctx = format!(r#"{{"args":{{"amount":"5000","currency":"EUR"}},"now":{MONDAY}}}"#);
    let out = explain(
        r#"{"user":"fay","groups":["finance"]}"#,
        "tool:payments/refund",
        &ctx,
        true,
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["allowed"], false);
    assert_eq!(v["code"], "policy_error");
    // The wrongly typed value is an unknown to every policy that reads the context, so
    // more than the limit may be named; the limit always is.
    let ids: Vec<&str> = v["policies"]
        .as_array()
        .expect("policies")
        .iter()
        .filter_map(|p| p["id"].as_str())
        .collect();
    assert!(ids.contains(&"refund-limit"), "{ids:?}");
}

#[test]
fn explain_uses_labels_from_the_config() {
    // payments is labelled production + high risk: outside office hours only
    // on-call may use it; its ledger tool is relabelled low risk.
    let ctx = format!(r#"{{"args":{{"amount":50,"currency":"EUR"}},"now":{SATURDAY}}}"#);
    let finance = r#"{"user":"fay","groups":["finance"],"attrs":{"dept":"finance"}}"#;
    let out = explain(finance, "tool:payments/refund", &ctx, true);
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["code"], "forbidden", "{v}");
    assert_eq!(v["policies"][0]["id"], "production-high-risk");
    let out = explain(finance, "tool:payments/ledger", &ctx, true);
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["allowed"], true, "{v}");
    // Tenant-scoped server: acme's admins yes, globex's "admins" no.
    let acme = r#"{"user":"al","tenant":"acme","groups":["admins"]}"#;
    let globex = r#"{"user":"al","tenant":"globex","groups":["admins"]}"#;
    let ctx = format!(r#"{{"now":{MONDAY}}}"#);
    assert_eq!(
        explain(acme, "tool:acme-crm/export", &ctx, false)
            .status
            .code(),
        Some(0)
    );
    let out = explain(globex, "tool:acme-crm/export", &ctx, true);
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["code"], "forbidden", "{v}");
}

#[test]
fn explain_rejects_bad_input_clearly() {
    let policies = repo("examples/policies");
    let p = policies.to_str().unwrap();
    let out = toolgate(&[
        "policy",
        "explain",
        "--policies",
        p,
        "--principal",
        "u",
        "--action",
        "call",
        "--resource",
        "tool:a/b",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("unknown action `call`"));
    let out = toolgate(&[
        "policy",
        "explain",
        "--policies",
        p,
        "--principal",
        "u",
        "--action",
        "call_tool",
        "--resource",
        "server:a",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("applies to Tool"),
        "{}",
        text(&out.stderr)
    );
}
