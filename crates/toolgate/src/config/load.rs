//! Reading a config file into `Config`: YAML or JSON, `${VAR}` expansion, validation.
//!
//! Every error names the file, the line (when the parser knows it) and the key path,
//! so `toolgate check` and `toolgate serve` point at the exact spot to fix.

use super::{Config, ServerConfig, TenantSource, TransportKind};
use std::fmt;
use std::path::Path;

/// A config problem, located as precisely as the parser allows.
#[derive(Debug, Clone)]
pub struct ConfigError {
    pub file: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// Dotted path of the offending key, e.g. `servers.files.command`.
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(col) = self.column {
                write!(f, ":{col}")?;
            }
        }
        if let Some(key) = &self.key {
            write!(f, ": {key}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Read and validate a config file. `.json` files are JSON; everything else is YAML.
pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: file.clone(),
        line: None,
        column: None,
        key: None,
        message: format!("cannot read the config file: {e}"),
    })?;
    let json = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    let mut config = load_str(&text, &file, json)?;
    config.source = Some(path.to_path_buf());
    Ok(config)
}

/// Parse config text; `file` is only used in messages.
pub fn load_str(text: &str, file: &str, json: bool) -> Result<Config, ConfigError> {
    let mut config = if json {
        parse_json(text, file)?
    } else {
        parse_yaml(text, file)?
    };
    let err = |key: String, message: String| ConfigError {
        file: file.to_owned(),
        line: line_of_key(text, &key),
        column: None,
        key: Some(key),
        message,
    };
    for (name, server) in config.servers.iter_mut() {
        expand_server(name, server).map_err(|(k, m)| err(k, m))?;
        validate_server(name, server).map_err(|(k, m)| err(k, m))?;
    }
    if config.separator.is_empty()
        || !config
            .separator
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
    {
        return Err(err(
            "separator".into(),
            "must be one or more of A-Z a-z 0-9 _ - .".into(),
        ));
    }
    if config.page_size == 0 {
        return Err(err("page_size".into(), "must be at least 1".into()));
    }
    if config.max_children == 0 {
        return Err(err("max_children".into(), "must be at least 1".into()));
    }
    validate_tls(&config).map_err(|(k, m)| err(k, m))?;
    if let Some(t) = &mut config.telemetry {
        t.prepare().map_err(|(k, m)| err(k, m))?;
    }
    if config.telemetry.is_none() && config.audit.sinks.contains(&super::AuditSink::Otlp) {
        return Err(err(
            "audit.sinks".into(),
            "`otlp` sends events to `telemetry.otlp_endpoint`: configure `telemetry` too".into(),
        ));
    }
    validate_endpoints(&config).map_err(|(k, m)| err(k, m))?;
    super::limits::validate(&config).map_err(|(k, m)| {
        let mut e = err(k.clone(), m);
        // `limits[2].rate` names no YAML key: point at the rule's `id` line.
        if e.line.is_none()
            && let Some(id) = limit_index(&k).and_then(|i| config.limits.get(i))
        {
            e.line = line_of_id(text, &id.id);
        }
        e
    })?;
    Ok(config)
}

/// Paths the gateway serves itself; an endpoint may live below `/mcp/` but not
/// on or below any of these.
const RESERVED_PATHS: [&str; 5] = ["/mcp", "/sse", "/message", "/healthz", "/.well-known"];

/// Each endpoint needs a path of its own and names only configured servers.
fn validate_endpoints(config: &Config) -> Result<(), KeyedError> {
    let mut seen: Vec<(&str, &str)> = Vec::new();
    for (name, ep) in &config.endpoints {
        let key = |field: &str| format!("endpoints.{name}.{field}");
        let path = ep.path.as_str();
        let valid = path.len() > 1
            && path.starts_with('/')
            && !path.ends_with('/')
            && !path.contains("//")
            && path
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "/_-.~".contains(c))
            && !path.split('/').any(|seg| seg == "." || seg == "..");
        if !valid {
            return Err((
                key("path"),
                format!(
                    "`{path}` is not a usable path: write it like `/mcp/finance` (starts with `/`, no trailing `/`, letters, digits and _ - . ~)"
                ),
            ));
        }
        let reserved = RESERVED_PATHS
            .iter()
            .find(|r| path == **r || (**r != "/mcp" && path.starts_with(&format!("{r}/"))));
        if let Some(r) = reserved {
            return Err((
                key("path"),
                format!("`{path}` collides with toolgate's own `{r}`; choose another path"),
            ));
        }
        if let Some((other, _)) = seen.iter().find(|(_, p)| *p == path) {
            return Err((
                key("path"),
                format!("`{path}` is already the path of endpoint `{other}`"),
            ));
        }
        seen.push((name, path));
        for server in ep.servers.iter().flatten() {
            if !config.servers.contains_key(server) {
                return Err((
                    key("servers"),
                    format!("unknown server `{server}`; it must be a name under `servers`"),
                ));
            }
        }
    }
    Ok(())
}

/// Client certificates need both halves: a CA to verify them (`tls.client_ca`)
/// and a mapping to a principal (`auth.mtls`). Either alone is refused rather
/// than half-applied: a CA without a mapping would verify certificates that
/// authenticate nobody, a mapping without a CA would never see a certificate.
fn validate_tls(config: &Config) -> Result<(), KeyedError> {
    let mtls = config.auth.as_ref().and_then(|a| a.mtls.as_ref());
    let client_ca = config.tls.as_ref().and_then(|t| t.client_ca.as_ref());
    if let Some(tls) = &config.tls {
        for (field, path) in [("cert", &tls.cert), ("key", &tls.key)] {
            if path.as_os_str().is_empty() {
                return Err((format!("tls.{field}"), "must name a PEM file".into()));
            }
        }
        if tls.client_auth.is_some() && client_ca.is_none() {
            return Err((
                "tls.client_auth".into(),
                "needs `client_ca`, the CA client certificates must chain to".into(),
            ));
        }
    }
    match (mtls, client_ca) {
        (Some(_), None) => Err((
            "auth.mtls".into(),
            "needs `tls.client_ca`: without a CA no client certificate is verified".into(),
        )),
        (None, Some(_)) => Err((
            "tls.client_ca".into(),
            "verified client certificates need `auth.mtls` to say who they name (`mtls: {}` uses the subject CN)".into(),
        )),
        (Some(m), Some(_)) => match &m.tenant {
            Some(TenantSource::Fixed(t)) if t.trim().is_empty() => Err((
                "auth.mtls.tenant.fixed".into(),
                "must not be empty".into(),
            )),
            _ => Ok(()),
        },
        (None, None) => Ok(()),
    }
}

fn parse_yaml(text: &str, file: &str) -> Result<Config, ConfigError> {
    let mut path = None;
    let options = serde_saphyr::options! { with_snippet: false };
    let result = serde_saphyr::with_deserializer_from_str_with_options(text, options, |de| {
        serde_path_to_error::deserialize(de).map_err(|e| {
            path = Some(e.path().to_string());
            e.into_inner()
        })
    });
    result.map_err(|e| {
        let location = e.location();
        let key = path.filter(|p| p != ".");
        let message = first_line(&e.to_string());
        ConfigError {
            file: file.to_owned(),
            line: location.map(|l| l.line() as usize),
            column: location.map(|l| l.column() as usize),
            key,
            message,
        }
    })
}

fn parse_json(text: &str, file: &str) -> Result<Config, ConfigError> {
    let de = &mut serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let key = Some(e.path().to_string()).filter(|p| p != ".");
        let inner = e.into_inner();
        // serde_json appends " at line L column C"; we report those separately.
        let message = inner.to_string();
        let message = message
            .rsplit_once(" at line ")
            .map_or(message.as_str(), |(m, _)| m)
            .to_owned();
        ConfigError {
            file: file.to_owned(),
            line: Some(inner.line()),
            column: Some(inner.column()),
            key,
            message,
        }
    })
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or(s).trim().to_owned()
}

/// Best effort: the first line that defines the last segment of `key`
/// below the line that defines the segment before it.
fn line_of_key(text: &str, key: &str) -> Option<usize> {
    let mut start = 0;
    let mut found = None;
    for segment in key.split('.') {
        let (idx, _) = text.lines().enumerate().skip(start).find(|(_, line)| {
            let t = line.trim_start().trim_start_matches('"');
            t.starts_with(segment)
                && t[segment.len()..]
                    .trim_start_matches('"')
                    .trim_start()
                    .starts_with(':')
        })?;
        start = idx + 1;
        found = Some(idx + 1);
    }
    found
}

type KeyedError = (String, String);

/// `3` of `limits[3].rate`.
fn limit_index(key: &str) -> Option<usize> {
    key.strip_prefix("limits[")?.split(']').next()?.parse().ok()
}

/// The line of `id: ID` (YAML, block or flow style) or `"id": "ID"` (JSON).
fn line_of_id(text: &str, id: &str) -> Option<usize> {
    let pattern = format!(
        r#"(^|[\s{{,-])"?id"?\s*:\s*["']?{}["']?\s*([,}}]|$)"#,
        regex::escape(id)
    );
    let re = regex::Regex::new(&pattern).ok()?;
    text.lines().position(|l| re.is_match(l)).map(|i| i + 1)
}

/// Expand `${VAR}` and `${VAR:-default}` in the fields that commonly carry secrets
/// or machine-specific paths. A missing variable without a default is an error:
/// silently sending `Bearer ` upstream is worse than refusing to start.
fn expand_server(name: &str, s: &mut ServerConfig) -> Result<(), KeyedError> {
    let key = |field: &str| format!("servers.{name}.{field}");
    if let Some(c) = &mut s.command {
        *c = expand(c).map_err(|m| (key("command"), m))?;
    }
    for (i, a) in s.args.iter_mut().enumerate() {
        *a = expand(a).map_err(|m| (key(&format!("args[{i}]")), m))?;
    }
    for (k, v) in s.env.iter_mut() {
        *v = expand(v).map_err(|m| (key(&format!("env.{k}")), m))?;
    }
    for (k, v) in s.headers.iter_mut() {
        *v = expand(v).map_err(|m| (key(&format!("headers.{k}")), m))?;
    }
    if let Some(u) = &mut s.url {
        *u = expand(u).map_err(|m| (key("url"), m))?;
    }
    Ok(())
}

pub(super) fn expand(text: &str) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err(format!("unterminated ${{ in {text:?}"));
        };
        let inner = &after[..end];
        let (var, default) = match inner.split_once(":-") {
            Some((v, d)) => (v, Some(d)),
            None => (inner, None),
        };
        match (std::env::var(var), default) {
            (Ok(v), _) => out.push_str(&v),
            (Err(_), Some(d)) => out.push_str(d),
            (Err(_), None) => {
                return Err(format!(
                    "environment variable {var} is not set (use ${{{var}:-default}} for a fallback)"
                ));
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

pub(crate) fn valid_server_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn validate_server(name: &str, s: &ServerConfig) -> Result<(), KeyedError> {
    let key = |field: &str| {
        if field.is_empty() {
            format!("servers.{name}")
        } else {
            format!("servers.{name}.{field}")
        }
    };
    if !valid_server_name(name) {
        return Err((
            key(""),
            "a server name is 1-64 characters of A-Z a-z 0-9 _ -".into(),
        ));
    }
    if let Some(p) = &s.prefix
        && !p
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
    {
        return Err((key("prefix"), "only A-Z a-z 0-9 _ - . are allowed".into()));
    }
    match (s.transport(), &s.command, &s.url) {
        (_, Some(_), Some(_)) => Err((
            key("url"),
            "set either `command` (stdio) or `url` (HTTP), not both".into(),
        )),
        (_, None, None) => Err((
            key(""),
            "needs `command` (a stdio server) or `url` (an HTTP server)".into(),
        )),
        (TransportKind::Stdio, None, Some(_)) => Err((
            key("transport"),
            "stdio needs `command`; use streamable-http or sse with `url`".into(),
        )),
        (TransportKind::StreamableHttp | TransportKind::Sse, Some(_), None) => Err((
            key("transport"),
            "HTTP transports need `url`, not `command`".into(),
        )),
        (_, None, Some(u)) => match url::Url::parse(u) {
            Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => Ok(()),
            Ok(_) => Err((key("url"), "only http and https URLs are supported".into())),
            Err(e) => Err((key("url"), format!("not a valid URL: {e}"))),
        },
        (_, Some(c), None) if c.trim().is_empty() => {
            Err((key("command"), "must not be empty".into()))
        }
        _ => Ok(()),
    }?;
    if let Some(c) = &s.circuit {
        if c.failures == 0 {
            return Err((key("circuit.failures"), "must be at least 1".into()));
        }
        if let Some(rate) = c.error_rate
            && !(rate > 0.0 && rate <= 1.0)
        {
            return Err((
                key("circuit.error_rate"),
                "a share of calls: more than 0, at most 1 (0.5 = half of them)".into(),
            ));
        }
        if c.error_rate.is_some() && c.window.0.is_zero() {
            return Err((key("circuit.window"), "must be longer than 0s".into()));
        }
    }
    if !s.health.interval.0.is_zero() {
        if s.health.timeout.0.is_zero() {
            return Err((key("health.timeout"), "must be longer than 0s".into()));
        }
        if s.health.failures == 0 {
            return Err((key("health.failures"), "must be at least 1".into()));
        }
    }
    if s.command.is_none() {
        if s.rlimits.is_some() {
            return Err((key("rlimits"), "rlimits apply to stdio servers only".into()));
        }
        if s.sandbox.is_some() {
            return Err((
                key("sandbox"),
                "sandbox applies to stdio servers only".into(),
            ));
        }
        if s.restart != crate::config::RestartPolicy::default() {
            return Err((
                key("restart"),
                "restart applies to stdio servers only (HTTP servers are retried with backoff)"
                    .into(),
            ));
        }
    }
    if s.restart.max == 0 {
        return Err((key("restart.max"), "must be at least 1".into()));
    }
    if !s.headers.is_empty() && s.command.is_some() {
        return Err((key("headers"), "headers apply to HTTP servers only".into()));
    }
    let zero = |t: &crate::config::Seconds| t.0.is_zero();
    if zero(&s.timeout) {
        return Err((key("timeout"), "must be longer than 0".into()));
    }
    if let Some(max) = s.max_timeout
        && max.0 < s.timeout.0
    {
        return Err((
            key("max_timeout"),
            "shorter than `timeout`: progress could never extend a call".into(),
        ));
    }
    for (kind, rules) in [("tools", &s.tools), ("prompts", &s.prompts)] {
        if let Some((item, _)) = rules.timeouts.iter().find(|(_, t)| zero(t)) {
            return Err((
                key(&format!("{kind}.timeouts.{item}")),
                "must be longer than 0".into(),
            ));
        }
        for (from, to) in &rules.rename {
            if !crate::names::valid_exposed_name(to) {
                return Err((
                    key(&format!("{kind}.rename.{from}")),
                    "an exposed name is 1-64 characters of A-Z a-z 0-9 _ - .".into(),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{FailureMode, Isolation, PrefixMode};

    #[test]
    fn call_timeouts_per_item_and_extended_by_progress() {
        let c = load_str(
            "servers:\n  fx:\n    command: fx\n    timeout: 2s\n    max_timeout: 10s\n    tools: { timeouts: { slow: 5s } }\n  plain:\n    command: p\n    timeout: 3s\n",
            "t.yaml",
            false,
        )
        .unwrap();
        let fx = &c.servers["fx"];
        let slow = fx.call_timeouts("tools/call", Some("slow"));
        assert_eq!(slow.idle.as_secs(), 5);
        assert_eq!(slow.total.as_secs(), 10);
        assert!(slow.extended_by_progress());
        let other = fx.call_timeouts("tools/call", Some("other"));
        assert_eq!((other.idle.as_secs(), other.total.as_secs()), (2, 10));
        // A prompt of the same name is not the tool.
        assert_eq!(
            fx.call_timeouts("prompts/get", Some("slow")).idle.as_secs(),
            2
        );
        let plain = c.servers["plain"].call_timeouts("tools/call", Some("x"));
        assert_eq!((plain.idle.as_secs(), plain.total.as_secs()), (3, 3));
        assert!(!plain.extended_by_progress());

        for (yaml, key) in [
            (
                "    timeout: 5s\n    max_timeout: 2s\n",
                "servers.fx.max_timeout",
            ),
            ("    timeout: 0s\n", "servers.fx.timeout"),
            (
                "    tools: { timeouts: { t: 0ms } }\n",
                "servers.fx.tools.timeouts.t",
            ),
        ] {
            let text = format!("servers:\n  fx:\n    command: fx\n{yaml}");
            let e = load_str(&text, "t.yaml", false).unwrap_err().to_string();
            assert!(e.contains(key), "{key}: {e}");
        }
    }

    #[test]
    fn yaml_example() {
        let c = load_str(
            r#"
listen: 127.0.0.1:9000
prefix_mode: conditional
servers:
  files:
    command: npx
    args: ["-y", "server"]
    env: { LOG_LEVEL: info }
    isolation: shared
    timeout: 5s
  weather:
    url: https://weather.example.com/mcp
    headers: { X-Key: "${TOOLGATE_TEST_UNSET_VAR:-fallback}" }
    failure: closed
    tools: { hide: [secret], rename: { forecast: weather_now } }
  legacy:
    url: http://127.0.0.1:9001/sse
    transport: sse
"#,
            "t.yaml",
            false,
        )
        .unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.prefix_mode, PrefixMode::Conditional);
        let names: Vec<_> = c.enabled_servers().map(|(n, _)| n).collect();
        assert_eq!(names, ["files", "weather", "legacy"]);
        let files = &c.servers["files"];
        assert_eq!(files.transport(), TransportKind::Stdio);
        assert_eq!(files.isolation, Isolation::Shared);
        assert_eq!(files.timeout().as_secs(), 5);
        let weather = &c.servers["weather"];
        assert_eq!(weather.transport(), TransportKind::StreamableHttp);
        assert_eq!(weather.headers["X-Key"], "fallback");
        assert_eq!(weather.failure, FailureMode::Closed);
        assert_eq!(weather.tools.rename["forecast"], "weather_now");
        assert_eq!(c.servers["legacy"].transport(), TransportKind::Sse);
    }

    #[test]
    fn mcp_servers_form_works_unchanged() {
        let c = load_str(
            r#"{"mcpServers": {
                "everything": {"command": "npx", "args": ["-y", "x"], "env": {"A": "b"}},
                "remote": {"url": "http://127.0.0.1:1/mcp", "type": "http", "headers": {"X": "y"}},
                "old": {"type": "sse", "url": "http://127.0.0.1:1/sse"}
            }}"#,
            "c.json",
            true,
        )
        .unwrap();
        assert_eq!(c.servers.len(), 3);
        assert_eq!(
            c.servers["remote"].transport(),
            TransportKind::StreamableHttp
        );
        assert_eq!(c.servers["old"].transport(), TransportKind::Sse);
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let e = load_str(
            "servers:\n  files:\n    command: x\n    comand: y\n",
            "bad.yaml",
            false,
        )
        .unwrap_err();
        let text = e.to_string();
        assert!(text.starts_with("bad.yaml:4:"), "{text}");
        assert!(text.contains("servers.files"), "{text}");
        assert!(text.contains("comand"), "{text}");
    }

    #[test]
    fn tls_and_mtls_are_read_and_checked_together() {
        let c = load_str(
            r#"
tls:
  cert: certs/server.pem
  key: certs/server.key
  client_ca: certs/ca.pem
  client_auth: required
  reload: 5s
auth:
  mtls:
    user: san_email
    tenant: { field: subject_o }
    groups: subject_ou
"#,
            "t.yaml",
            false,
        )
        .unwrap();
        let tls = c.tls.as_ref().unwrap();
        assert_eq!(tls.client_auth, Some(crate::config::ClientAuth::Required));
        assert_eq!(tls.reload.0.as_secs(), 5);
        let m = c.auth.as_ref().unwrap().mtls.as_ref().unwrap();
        assert_eq!(m.user, crate::config::CertField::SanEmail);
        assert_eq!(
            m.tenant,
            Some(TenantSource::Field(crate::config::CertField::SubjectO))
        );
        let c = load_str(
            "tls: {cert: a, key: b, client_ca: c}\nauth: {mtls: {tenant: {fixed: acme}}}\n",
            "t.yaml",
            false,
        )
        .unwrap();
        assert_eq!(c.tls.unwrap().reload.0.as_secs(), 30);
        let m = c.auth.unwrap().mtls.unwrap();
        assert_eq!(m.user, crate::config::CertField::SubjectCn);
        assert_eq!(m.tenant, Some(TenantSource::Fixed("acme".into())));

        for (text, key) in [
            ("tls: {cert: a, key: b, client_ca: c}\n", "tls.client_ca"),
            ("tls: {cert: a, key: b}\nauth: {mtls: {}}\n", "auth.mtls"),
            ("auth: {mtls: {}}\n", "auth.mtls"),
            (
                "tls: {cert: a, key: b, client_auth: required}\n",
                "tls.client_auth",
            ),
            (
                "tls: {cert: a, key: b, client_ca: c}\nauth: {mtls: {tenant: {fixed: ' '}}}\n",
                "auth.mtls.tenant.fixed",
            ),
        ] {
            let e = load_str(text, "t.yaml", false).unwrap_err();
            assert_eq!(e.key.as_deref(), Some(key), "{text}: {e}");
        }
        let e = load_str("tls: {cert: a, key: b, ca: c}\n", "t.yaml", false).unwrap_err();
        assert!(e.to_string().contains("ca"), "{e}");
        let e = load_str(
            "tls: {cert: a, key: b, client_ca: c}\nauth: {mtls: {user: subject_x}}\n",
            "t.yaml",
            false,
        )
        .unwrap_err();
        assert!(e.to_string().contains("subject_x"), "{e}");
    }

    #[test]
    fn json_error_is_located() {
        let e = load_str(
            "{\n \"servers\": {\"a\": {\"url\": 5}}\n}",
            "bad.json",
            true,
        )
        .unwrap_err();
        assert_eq!(e.line, Some(2));
        assert_eq!(e.key.as_deref(), Some("servers.a.url"));
    }

    #[test]
    fn semantic_errors_name_the_key() {
        let e = load_str("servers:\n  a:\n    args: [x]\n", "s.yaml", false).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("servers.a"));
        assert_eq!(e.line, Some(2));
        let e = load_str("servers:\n  a:\n    url: ftp://x/\n", "s.yaml", false).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("servers.a.url"));
        assert_eq!(e.line, Some(3));
        let e = load_str(
            "servers:\n  a:\n    url: http://x/\n    headers: {A: \"${TOOLGATE_SURELY_UNSET}\"}\n",
            "s.yaml",
            false,
        )
        .unwrap_err();
        assert!(e.message.contains("TOOLGATE_SURELY_UNSET"));
    }

    #[test]
    fn endpoints_need_their_own_path_and_known_servers() {
        let base = "servers:\n  a:\n    command: x\nendpoints:\n";
        let ok = load_str(
            &format!(
                "{base}  fin:\n    path: /mcp/finance\n    servers: [a]\n  t:\n    path: /tools\n"
            ),
            "e.yaml",
            false,
        )
        .unwrap();
        assert_eq!(ok.endpoints["fin"].path, "/mcp/finance");
        for bad in [
            "mcp",
            "/",
            "/mcp",
            "/mcp/",
            "/sse",
            "/message",
            "/healthz",
            "/.well-known/x",
            "/sse/x",
            "/a//b",
            "/a/../mcp",
            "/a b",
        ] {
            let e = load_str(
                &format!("{base}  x:\n    path: \"{bad}\"\n"),
                "e.yaml",
                false,
            )
            .unwrap_err();
            assert_eq!(e.key.as_deref(), Some("endpoints.x.path"), "{bad}: {e}");
            assert_eq!(e.line, Some(6), "{bad}");
        }
        let e = load_str(
            &format!("{base}  x:\n    path: /p\n  y:\n    path: /p\n"),
            "e.yaml",
            false,
        )
        .unwrap_err();
        assert_eq!(e.key.as_deref(), Some("endpoints.y.path"));
        assert!(e.message.contains("`x`"), "{e}");
        let e = load_str(
            &format!("{base}  x:\n    path: /p\n    servers: [a, b]\n"),
            "e.yaml",
            false,
        )
        .unwrap_err();
        assert_eq!(e.key.as_deref(), Some("endpoints.x.servers"));
        assert_eq!(e.line, Some(7));
        assert!(e.message.contains("`b`"), "{e}");
    }
}
