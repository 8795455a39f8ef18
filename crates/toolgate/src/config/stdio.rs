//! Settings of supervised stdio children: how often a crashing server is
//! restarted, and the operating-system limits a child runs under.

use super::Seconds;
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer};
use std::time::Duration;

/// How often the supervisor restarts a stdio server that keeps failing before it
/// holds it down. Every restart (a start after the child exited, the connection
/// ended or a start failed) counts; the first start does not.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RestartPolicy {
    /// Restarts allowed within `window`. One more, and the server is marked down
    /// (`crash loop`) and not started again, by the supervisor or for any
    /// session, until `cooldown` has passed.
    #[serde(default = "default_max")]
    pub max: u32,
    /// The sliding window restarts are counted in.
    #[serde(default = "default_window")]
    pub window: Seconds,
    /// How long a crash-looping server stays down before it is tried again
    /// (with a fresh count). Calls to it fail at once with -32050 meanwhile.
    #[serde(default = "default_cooldown")]
    pub cooldown: Seconds,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            max: default_max(),
            window: default_window(),
            cooldown: default_cooldown(),
        }
    }
}

fn default_max() -> u32 {
    5
}
fn default_window() -> Seconds {
    Seconds(Duration::from_secs(60))
}
fn default_cooldown() -> Seconds {
    Seconds(Duration::from_secs(300))
}

/// Resource limits (`setrlimit`) a stdio child starts with, soft and hard alike,
/// so the child cannot raise them again. Each applies per process: a child's own
/// children inherit them. A limit left out is inherited from the gateway.
#[derive(Debug, Clone, Copy, Default, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Rlimits {
    /// Largest address space (`RLIMIT_AS`), e.g. `512MiB`: allocations beyond it
    /// fail. Runtimes that reserve large virtual ranges up front (Node.js, the
    /// JVM, Go) need a generous value.
    pub memory: Option<ByteSize>,
    /// CPU time in seconds (`RLIMIT_CPU`): the child gets SIGXCPU at the limit
    /// and is killed by the kernel soon after.
    pub cpu_seconds: Option<u64>,
    /// Open file descriptors (`RLIMIT_NOFILE`), sockets and pipes included.
    pub open_files: Option<u64>,
    /// Largest file the child may write (`RLIMIT_FSIZE`), e.g. `100MiB`.
    pub file_size: Option<ByteSize>,
}

/// A filesystem sandbox for a stdio server (Linux 5.13 and later, with Landlock
/// enabled): the child and everything it starts may read, and execute, only the
/// system directories (`/usr`, `/lib`, `/lib64`, `/bin`, `/sbin`, `/etc`,
/// `/proc`, `/sys`, `/dev`), the command, `cwd` and the `read` paths, and may
/// write (create, change, delete) only below the `write` paths and `/dev/null`.
/// Only the filesystem is confined: the network, other processes and files the
/// child was handed open (its stdio) are not. Best effort: where the kernel lacks
/// Landlock the child runs without the sandbox and a warning is logged each time
/// it starts.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Sandbox {
    /// Extra paths (files or directories, and everything below) the child may
    /// read and execute.
    #[serde(default)]
    pub read: Vec<std::path::PathBuf>,
    /// Paths the child may also write below.
    #[serde(default)]
    pub write: Vec<std::path::PathBuf>,
}

/// A size in bytes: a number, or a number with `KiB`, `MiB`, `GiB` (or `K`, `M`,
/// `G`, also powers of 1024).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl JsonSchema for ByteSize {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ByteSize".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A size in bytes: a number, or e.g. `512MiB`, `2GiB`, `64K`.",
            "oneOf": [
                { "type": "integer", "minimum": 1 },
                { "type": "string", "pattern": "^\\s*[0-9]+\\s*([KMG]i?B?)?\\s*$" }
            ]
        })
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Num(u64),
            Text(String),
        }
        let n = match Raw::deserialize(d)? {
            Raw::Num(n) => n,
            Raw::Text(t) => parse_size(&t).map_err(serde::de::Error::custom)?,
        };
        if n == 0 {
            return Err(serde::de::Error::custom("a size must be positive"));
        }
        Ok(ByteSize(n))
    }
}

fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid size {text:?}: expected e.g. 512MiB"))?;
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "KiB" | "KB" => 1 << 10,
        "M" | "MiB" | "MB" => 1 << 20,
        "G" | "GiB" | "GB" => 1 << 30,
        _ => {
            return Err(format!(
                "invalid size unit in {text:?}: use KiB, MiB or GiB"
            ));
        }
    };
    n.checked_mul(scale)
        .ok_or_else(|| format!("size {text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("5 lots").is_err());
        assert!(parse_size("99999999999999999999G").is_err());
    }

    fn key_of(yaml: &str) -> (Option<String>, String) {
        let e = crate::config::load_str(yaml, "t.yaml", false).unwrap_err();
        (e.key, e.message)
    }

    #[test]
    fn supervision_keys_are_read_with_their_defaults() {
        let c = crate::config::load_str(
            "max_children: 8
child_idle_timeout: 90s
servers:
  fx:
    command: fx
    restart: { max: 2 }
    rlimits: { memory: 512MiB, open_files: 64 }
    sandbox: { write: [/tmp] }
",
            "t.yaml",
            false,
        )
        .expect("valid");
        assert_eq!(c.max_children, 8);
        assert_eq!(c.child_idle_timeout.0, Duration::from_secs(90));
        let fx = &c.servers["fx"];
        assert_eq!(fx.restart.max, 2);
        assert_eq!(
            fx.restart.window,
            default_window(),
            "defaults fill the rest"
        );
        let limits = fx.rlimits.expect("rlimits");
        assert_eq!(limits.memory, Some(ByteSize(512 << 20)));
        assert_eq!(limits.open_files, Some(64));
        assert_eq!(limits.cpu_seconds, None);
        assert_eq!(fx.sandbox.as_ref().map(|s| s.write.len()), Some(1));
    }

    #[test]
    fn check_errors_name_the_key() {
        let http = "servers:\n  web:\n    url: http://127.0.0.1:1/mcp\n";
        for (extra, key) in [
            ("    rlimits: { open_files: 10 }\n", "servers.web.rlimits"),
            ("    sandbox: {}\n", "servers.web.sandbox"),
            ("    restart: { max: 2 }\n", "servers.web.restart"),
        ] {
            let (k, m) = key_of(&format!("{http}{extra}"));
            assert_eq!(k.as_deref(), Some(key), "{m}");
            assert!(m.contains("stdio"), "{m}");
        }
        let stdio = "servers:\n  fx:\n    command: fx\n";
        let (k, m) = key_of(&format!("{stdio}    restart: {{ max: 0 }}\n"));
        assert_eq!(k.as_deref(), Some("servers.fx.restart.max"), "{m}");
        let (k, m) = key_of(&format!("{stdio}    rlimits: {{ memory: 5 lots }}\n"));
        assert_eq!(k.as_deref(), Some("servers.fx.rlimits.memory"), "{m}");
        let (k, m) = key_of(&format!("{stdio}    rlimits: {{ stack: 1 }}\n"));
        assert_eq!(k.as_deref(), Some("servers.fx.rlimits.stack"), "{m}");
        assert!(m.contains("stack"), "{m}");
        let (k, m) = key_of(&format!("max_children: 0\n{stdio}"));
        assert_eq!(k.as_deref(), Some("max_children"), "{m}");
    }
}
