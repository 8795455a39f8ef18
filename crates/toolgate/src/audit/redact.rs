//! What may be written down of a call's arguments and result.
//!
//! Per server and per tool the config says `full`, `masked`, `digest` or
//! `none`. Whatever it says, credentials never get written: fields whose name
//! says they hold one, strings that look like one (bearer tokens, JWTs, API
//! keys of common services and of toolgate itself, private keys), and every
//! credential value in the config itself (server `env` and `headers`) are
//! replaced by `"***"`.

use crate::config::{Config, Recording, Redaction};
use regex::Regex;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::collections::HashMap;

pub const MASK: &str = "***";

/// Patterns of credentials that appear in free text.
const SECRET_PATTERNS: &[&str] = &[
    r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]{8,}",
    r"(?i)\bbasic\s+[A-Za-z0-9+/=]{8,}",
    r"\beyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*",
    r"\btgk_[A-Za-z0-9_-]{8,}",
    r"\bAKIA[0-9A-Z]{16}\b",
    r"\bgh[pousr]_[A-Za-z0-9]{20,}",
    r"\bgithub_pat_[A-Za-z0-9_]{20,}",
    r"\bsk-[A-Za-z0-9_-]{16,}",
    r"\b[rs]k_(?:live|test)_[A-Za-z0-9]{10,}",
    r"\bxox[abprs]-[A-Za-z0-9-]{10,}",
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----",
    r"(?i)\b(?:password|passwd|pwd|secret|token|api[_-]?key)=[^\s&;,]+",
];

/// Field names that always hold a credential (compared lower-case, without
/// `-` and `_`).
const SECRET_FIELDS: &[&str] = &[
    "password",
    "passwd",
    "passphrase",
    "secret",
    "clientsecret",
    "token",
    "accesstoken",
    "refreshtoken",
    "idtoken",
    "apikey",
    "authorization",
    "auth",
    "cookie",
    "credential",
    "credentials",
    "privatekey",
    "sessiontoken",
    "bearer",
];

/// The redaction rules of one gateway config.
pub struct Redactor {
    default: Rule,
    servers: HashMap<String, ServerRules>,
    secrets: Regex,
}

struct ServerRules {
    rule: Rule,
    tools: HashMap<String, Rule>,
}

/// What to record for one server or tool.
#[derive(Debug, Clone)]
pub struct Rule {
    pub arguments: Recording,
    pub results: Recording,
    mask: Vec<String>,
}

impl Rule {
    fn over(&self, r: &Redaction) -> Rule {
        let mut mask = self.mask.clone();
        mask.extend(r.mask.iter().map(|m| normal(m)));
        Rule {
            arguments: r.arguments.unwrap_or(self.arguments),
            results: r.results.unwrap_or(self.results),
            mask,
        }
    }
}

impl Redactor {
    pub fn new(config: &Config) -> Redactor {
        let base = Rule {
            arguments: Recording::Digest,
            results: Recording::None,
            mask: Vec::new(),
        };
        let default = base.over(&config.audit.record);
        let servers = config
            .servers
            .iter()
            .map(|(name, s)| {
                let own = Redaction {
                    arguments: s.audit.arguments,
                    results: s.audit.results,
                    mask: s.audit.mask.clone(),
                };
                let rule = default.over(&own);
                let tools = s
                    .audit
                    .tools
                    .iter()
                    .map(|(tool, r)| (tool.clone(), rule.over(r)))
                    .collect();
                (name.clone(), ServerRules { rule, tools })
            })
            .collect();
        // Credentials the config hands to servers are known exactly: mask them
        // wherever they appear (too short a value would mask ordinary text).
        let mut patterns: Vec<String> = SECRET_PATTERNS.iter().map(|p| (*p).to_owned()).collect();
        for s in config.servers.values() {
            for v in s.env.values().chain(s.headers.values()) {
                // `Bearer xyz`: the credential is `xyz`, and may appear alone.
                let bare = v.split_once(' ').map_or(v.as_str(), |(_, c)| c.trim());
                for secret in [v.as_str(), bare] {
                    if secret.len() >= 8 {
                        patterns.push(regex::escape(secret));
                    }
                }
            }
        }
        let secrets = Regex::new(&patterns.join("|"))
            .unwrap_or_else(|_| Regex::new(&SECRET_PATTERNS.join("|")).expect("built-in patterns"));
        Redactor {
            default,
            servers,
            secrets,
        }
    }

    /// The rule for a tool (`tool` is the server's own name) of `server`.
    pub fn rule(&self, server: Option<&str>, tool: Option<&str>) -> &Rule {
        let Some(s) = server.and_then(|s| self.servers.get(s)) else {
            return &self.default;
        };
        tool.and_then(|t| s.tools.get(t)).unwrap_or(&s.rule)
    }

    /// `value` as `how` allows: `(recorded value, digest)`.
    pub fn record(
        &self,
        value: &Value,
        how: Recording,
        rule: &Rule,
    ) -> (Option<Value>, Option<String>) {
        match how {
            Recording::None => (None, None),
            Recording::Digest => (None, Some(digest(value))),
            Recording::Full | Recording::Masked => (Some(self.masked(value, &rule.mask)), None),
        }
    }

    fn masked(&self, value: &Value, mask: &[String]) -> Value {
        match value {
            Value::String(s) => Value::String(self.scrub(s).into_owned()),
            Value::Array(items) => {
                Value::Array(items.iter().map(|v| self.masked(v, mask)).collect())
            }
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| {
                        let key = normal(k);
                        let hide = SECRET_FIELDS.contains(&key.as_str())
                            || key.ends_with("password")
                            || key.ends_with("secret")
                            || key.ends_with("token")
                            || key.ends_with("apikey")
                            || mask.contains(&key);
                        let v = if hide && !v.is_null() {
                            Value::String(MASK.into())
                        } else {
                            self.masked(v, mask)
                        };
                        (k.clone(), v)
                    })
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    /// `text` with everything that looks like a credential masked.
    pub fn scrub<'a>(&self, text: &'a str) -> Cow<'a, str> {
        self.secrets.replace_all(text, MASK)
    }
}

fn normal(name: &str) -> String {
    name.chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

/// `sha256:` and the hex digest of the value's JSON.
pub fn digest(value: &Value) -> String {
    let mut h = Sha256::new();
    let _ = serde_json::to_writer(HashWriter(&mut h), value);
    let digest = h.finalize();
    let mut out = String::with_capacity(7 + 2 * digest.len());
    out.push_str("sha256:");
    crate::seal::hex_into(&mut out, &digest);
    out
}

struct HashWriter<'a>(&'a mut Sha256);

impl std::io::Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn redactor(yaml: &str) -> Redactor {
        Redactor::new(&crate::config::load_str(yaml, "t.yaml", false).unwrap())
    }

    #[test]
    fn arguments_are_a_digest_and_results_nothing_by_default() {
        let r = redactor("servers: {}\n");
        let rule = r.rule(Some("x"), Some("y"));
        let args = json!({ "q": "hello" });
        let (v, d) = r.record(&args, rule.arguments, rule);
        assert_eq!(v, None);
        assert_eq!(d.unwrap(), digest(&json!({ "q": "hello" })));
        assert_eq!(r.record(&args, rule.results, rule), (None, None));
    }

    #[test]
    fn per_server_and_per_tool_settings_apply() {
        let r = redactor(
            "servers:\n  pay:\n    command: x\n    audit:\n      arguments: full\n      mask: [card]\n      tools:\n        refund: { arguments: none }\n",
        );
        let rule = r.rule(Some("pay"), Some("charge"));
        let (v, _) = r.record(
            &json!({ "card": "4111", "amount": 5 }),
            rule.arguments,
            rule,
        );
        assert_eq!(v.unwrap(), json!({ "card": "***", "amount": 5 }));
        let refund = r.rule(Some("pay"), Some("refund"));
        assert_eq!(refund.arguments, Recording::None);
        assert_eq!(r.rule(Some("other"), None).arguments, Recording::Digest);
    }

    #[test]
    fn credentials_never_survive_full_recording() {
        let r = redactor(
            "servers:\n  s:\n    url: http://x/mcp\n    headers:\n      Authorization: Bearer upstream-cred-123456\n    env:\n      DB_URL: postgres://app:hunter2hunter2@db/x\n",
        );
        let rule = Rule {
            arguments: Recording::Full,
            results: Recording::Full,
            mask: Vec::new(),
        };
        let planted = json!({
            "password": "p4ssw0rd!",
            "nested": { "X-Api-Key": "k", "client_secret": "cs" },
            "note": "use Bearer abcdefghijklmnop please",
            "jwt": "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln",
            "key": "tgk_abcdef123_SECRETSECRETSECRET",
            "aws": "AKIAABCDEFGHIJKLMNOP",
            "gh": "ghp_abcdefghijklmnopqrstuvwxyz0123",
            "dsn": "postgres://app:hunter2hunter2@db/x",
            "copy": "upstream-cred-123456",
            "ok": "nothing secret here",
            "n": 5,
        });
        let (v, _) = r.record(&planted, Recording::Full, &rule);
        let text = v.unwrap().to_string();
        for secret in [
            "p4ssw0rd",
            "abcdefghijklmnop",
            "eyJhbGci",
            "SECRETSECRET",
            "AKIAABCDEFGHIJKLMNOP",
            "ghp_abc",
            "hunter2",
            "upstream-cred",
            "\"cs\"",
        ] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
        assert!(text.contains("nothing secret here"), "{text}");
        assert!(text.contains("\"n\":5"), "{text}");
    }
}
