//! The command line as a user meets it: every shipped example validates, and
//! `--version` answers.

use std::path::Path;
use std::process::Command;

fn toolgate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_toolgate"))
}

#[test]
fn every_example_config_passes_check() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(&examples).expect("examples/ exists") {
        let path = entry.expect("dir entry").path();
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        if !matches!(ext, "yaml" | "yml" | "json") {
            continue;
        }
        let out = toolgate()
            .arg("check")
            .arg("--config")
            .arg(&path)
            .env_remove("WEATHER_TOKEN")
            .output()
            .expect("toolgate runs");
        assert!(
            out.status.success(),
            "{} does not pass check: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains(": ok ("));
        checked += 1;
    }
    assert!(
        checked >= 4,
        "expected the example configs, found {checked}"
    );
}

#[test]
fn version_names_the_program() {
    let out = toolgate().arg("--version").output().expect("toolgate runs");
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("toolgate {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn committed_config_schema_matches_the_types() {
    let out = toolgate()
        .arg("config-schema")
        .output()
        .expect("toolgate runs");
    assert!(out.status.success());
    let generated: serde_json::Value = serde_json::from_slice(&out.stdout).expect("schema is JSON");
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/config.schema.json");
    let committed: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&path).expect("docs/config.schema.json exists"),
    )
    .expect("committed schema is JSON");
    assert_eq!(
        generated, committed,
        "docs/config.schema.json is stale: regenerate it with `toolgate config-schema > docs/config.schema.json`"
    );
    // The schema knows the keys a user writes.
    let servers = &generated["$defs"]["ServerConfig"]["properties"];
    for key in ["command", "url", "isolation", "timeout", "failure", "tools"] {
        assert!(servers.get(key).is_some(), "schema lacks servers.*.{key}");
    }
}
