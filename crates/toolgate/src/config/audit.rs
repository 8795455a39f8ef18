//! The `audit:` section and the per-server `audit:` redaction settings.

use super::Seconds;
use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// Where audit events go and what happens when they cannot keep up.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Where events are written; several at once are fine. Default: the store.
    /// `[]` keeps no trail at all (not for governed deployments).
    #[serde(default = "default_sinks")]
    pub sinks: Vec<AuditSink>,
    /// What happens when the sinks fall behind and the buffer is full.
    /// `fail_closed` (the default) refuses new calls with an error and answers a
    /// call only once its event is committed to the sinks; `drop` lets calls
    /// through without waiting and counts the events it loses.
    #[serde(default)]
    pub overflow: Overflow,
    /// Events waiting for the sinks before `overflow` applies.
    #[serde(default = "default_buffer")]
    pub buffer: usize,
    /// How long a call waits for room in a full buffer before `overflow` applies.
    #[serde(default = "default_wait")]
    pub wait: Seconds,
    /// What is recorded of arguments and results where a server or tool does not
    /// say otherwise.
    #[serde(default)]
    pub record: Redaction,
    /// Events older than this are deleted from the store (default 30 days).
    #[serde(default = "default_max_age")]
    pub max_age: Seconds,
    /// At most this many events are kept in the store; the oldest go first.
    #[serde(default = "default_max_events")]
    pub max_events: u64,
    /// Where an event is made durable before the sinks are written. An answer
    /// waits for one write of its event to this append-only journal (which
    /// survives a crash of the process, like the store's own log); the sinks
    /// are filled from memory every `commit_every`, and a gateway that starts
    /// hands them what an ended one left in the journal. `auto` (default): a
    /// directory beside a SQLite store (`toolgate.db.audit-journal`), none with
    /// PostgreSQL; `off`: every answer waits until each sink took its event;
    /// or a directory (relative to the config file).
    #[serde(default)]
    pub journal: JournalSetting,
    /// With a journal: how often the sinks are filled from it (sooner when
    /// 512 events wait, and before the admin API reads the trail). Larger
    /// batches cost the store less per event.
    #[serde(default = "default_commit_every")]
    pub commit_every: Seconds,
}

/// `audit.journal`: `auto`, `off`, or a directory.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(from = "String")]
#[schemars(with = "String")]
pub enum JournalSetting {
    #[default]
    Auto,
    Off,
    Dir(PathBuf),
}

impl From<String> for JournalSetting {
    fn from(s: String) -> Self {
        match s.as_str() {
            "auto" => JournalSetting::Auto,
            "off" => JournalSetting::Off,
            _ => JournalSetting::Dir(PathBuf::from(s)),
        }
    }
}

impl AuditConfig {
    /// The journal's directory for a config stored in `storage` whose file is
    /// in `base`; `None` when there is none.
    pub fn journal_dir(&self, storage: &str, base: Option<&std::path::Path>) -> Option<PathBuf> {
        match &self.journal {
            JournalSetting::Off => None,
            JournalSetting::Dir(d) if d.is_relative() => {
                Some(base.unwrap_or(std::path::Path::new(".")).join(d))
            }
            JournalSetting::Dir(d) => Some(d.clone()),
            JournalSetting::Auto => crate::store::sqlite_file(storage, base).map(|f| {
                let mut dir = f.into_os_string();
                dir.push(".audit-journal");
                PathBuf::from(dir)
            }),
        }
    }
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            sinks: default_sinks(),
            overflow: Overflow::default(),
            buffer: default_buffer(),
            wait: default_wait(),
            record: Redaction::default(),
            max_age: default_max_age(),
            max_events: default_max_events(),
            journal: JournalSetting::default(),
            commit_every: default_commit_every(),
        }
    }
}

fn default_sinks() -> Vec<AuditSink> {
    vec![AuditSink::Store]
}
fn default_buffer() -> usize {
    8192
}
fn default_wait() -> Seconds {
    Seconds(Duration::from_secs(1))
}
fn default_max_age() -> Seconds {
    Seconds(Duration::from_secs(30 * 24 * 3600))
}
fn default_commit_every() -> Seconds {
    Seconds(Duration::from_secs(1))
}
fn default_max_events() -> u64 {
    10_000_000
}

/// A destination for audit events.
#[derive(Debug, Clone, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum AuditSink {
    /// The config's `storage` (SQLite or PostgreSQL): what `toolgate audit`
    /// and the admin API query.
    Store,
    /// One JSON object per line on standard output.
    Stdout,
    /// JSON Lines files, rotated by size.
    Jsonl(JsonlSink),
    /// OpenTelemetry log records to the OTLP endpoint of `telemetry`.
    Otlp,
}

/// A JSON Lines file.
#[derive(Debug, Clone, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JsonlSink {
    /// The file (relative to the config file).
    pub path: PathBuf,
    /// Rotate once the file is this big (default 100 MiB).
    #[serde(default = "default_rotate_bytes")]
    pub max_bytes: u64,
    /// Rotated files kept (`FILE.1` … `FILE.N`).
    #[serde(default = "default_keep")]
    pub keep: usize,
}

fn default_rotate_bytes() -> u64 {
    100 * 1024 * 1024
}
fn default_keep() -> usize {
    5
}

/// What a full audit buffer does.
#[derive(Debug, Clone, Copy, Default, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Overflow {
    /// Refuse calls that cannot be audited; answer each call after its event
    /// is committed.
    #[default]
    FailClosed,
    /// Let calls through; count and log the lost events.
    Drop,
}

/// What audit records of a call's arguments and result.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Redaction {
    /// Default `digest`.
    pub arguments: Option<Recording>,
    /// Default `none`.
    pub results: Option<Recording>,
    /// Field names (at any depth) whose values are replaced by `"***"` when
    /// recording `full` or `masked`. Fields that look like credentials
    /// (`password`, `token`, `secret`, `api_key`, `authorization`, …) are always
    /// masked.
    #[serde(default)]
    pub mask: Vec<String>,
}

/// How much of a value is recorded.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Recording {
    /// The value, with credential-looking fields and strings masked.
    Full,
    /// The value with `mask` fields and credential-looking ones masked (the
    /// same as `full`, named for configs that list fields).
    Masked,
    /// Only a SHA-256 digest of the value (equal values, equal digests).
    Digest,
    /// Nothing.
    None,
}

/// A server's audit settings: its own default and per-tool ones.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServerAudit {
    /// For this server's calls; default: `audit.record.arguments`.
    pub arguments: Option<Recording>,
    /// For this server's results; default: `audit.record.results`.
    pub results: Option<Recording>,
    /// Masked fields, added to `audit.record.mask`.
    #[serde(default)]
    pub mask: Vec<String>,
    /// Per tool (the server's own name for it), over the server's settings.
    #[serde(default)]
    pub tools: IndexMap<String, Redaction>,
}
