//! Config reload (SIGHUP, `POST /admin/v1/reload`): the file is read and
//! validated again; a file that does not load is rejected whole and the
//! settings in force keep serving. Of a file that loads, what can change while
//! the gateway runs is put in force at once — without ending a session or a
//! call in flight — and what needs a restart is reported and left as it is.
//!
//! Put in force:
//! - `limits` and `max_session_streams` (budgets of unchanged rules carry over);
//! - `prefix_mode`, `separator`, `page_size`, `shutdown_grace`;
//! - per server: `timeout`, `max_timeout`, `tools` and `prompts` rules (hide,
//!   rename, labels, timeouts), `labels`, `audit`, `cache`, `circuit`,
//!   `health`, `failure`, `max_request_bytes`, `max_result_bytes`.
//!
//! Everything else — how a server is reached, started, shared and named, the
//! set of servers, listeners, TLS, authentication, policy location, storage,
//! audit sinks, telemetry, endpoints, and the timers tasks took at start — is
//! reported under `restartRequired`.
//!
//! Settings are compared by their `Debug` form: every config type has one, it
//! is exact for these plain data types, and it never leaves this module.

use super::Gateway;
use crate::audit::{Event, EventKind, Outcome};
use crate::config::{Config, ServerConfig};
use serde_json::json;
use std::sync::Arc;

/// What a reload did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Keys now in force with new values.
    pub applied: Vec<String>,
    /// Keys whose new values wait for a restart.
    pub restart_required: Vec<String>,
}

impl Report {
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "applied": self.applied,
            "restartRequired": self.restart_required,
        })
    }
}

fn differ<T: std::fmt::Debug>(a: &T, b: &T) -> bool {
    format!("{a:?}") != format!("{b:?}")
}

/// Copy `$field`s that differ from `$new` into `$into`, noting each key.
macro_rules! take {
    ($report:expr, $prefix:expr, $into:expr, $new:expr, [$($field:ident),* $(,)?]) => {
        $(
            if differ(&$into.$field, &$new.$field) {
                $report.applied.push(format!("{}{}", $prefix, stringify!($field)));
                $into.$field = $new.$field.clone();
            }
        )*
    };
}

/// Note `$field`s that differ, for a restart.
macro_rules! pending {
    ($report:expr, $prefix:expr, $old:expr, $new:expr, [$($field:ident),* $(,)?]) => {
        $(
            if differ(&$old.$field, &$new.$field) {
                $report.restart_required.push(format!("{}{}", $prefix, stringify!($field)));
            }
        )*
    };
}

/// The settings that will be in force after reloading `new` over `old`, and
/// what of `new` they leave out.
pub fn plan(old: &Config, new: &Config) -> (Config, Report) {
    let mut report = Report::default();
    let mut next = old.clone();
    take!(
        report,
        "",
        next,
        new,
        [
            limits,
            max_session_streams,
            prefix_mode,
            separator,
            page_size,
            shutdown_grace
        ]
    );
    pending!(
        report,
        "",
        old,
        new,
        [
            listen,
            tls,
            allow_unauthenticated_network,
            allowed_origins,
            max_message_bytes,
            catalog_ttl,
            sse_keep_alive,
            input_required_ttl,
            session_idle_timeout,
            result_cache_bytes,
            auth,
            policy,
            storage,
            audit,
            telemetry,
            admin,
            endpoints,
            redis,
            max_children,
            child_idle_timeout,
        ]
    );
    for (name, new_server) in &new.servers {
        match next.servers.get_mut(name) {
            Some(server) => reload_server(&mut report, name, server, new_server),
            None => report
                .restart_required
                .push(format!("servers.{name} (added)")),
        }
    }
    for name in old.servers.keys() {
        if !new.servers.contains_key(name) {
            report
                .restart_required
                .push(format!("servers.{name} (removed)"));
        }
    }
    (next, report)
}

fn reload_server(report: &mut Report, name: &str, server: &mut ServerConfig, new: &ServerConfig) {
    let prefix = format!("servers.{name}.");
    let old = server.clone();
    take!(
        report,
        prefix,
        server,
        new,
        [
            timeout,
            max_timeout,
            tools,
            prompts,
            labels,
            audit,
            cache,
            circuit,
            health,
            failure,
            max_request_bytes,
            max_result_bytes,
        ]
    );
    pending!(
        report,
        prefix,
        old,
        new,
        [
            command, args, env, cwd, url, transport, headers, prefix, isolation, era, disabled,
            restart, rlimits, sandbox,
        ]
    );
}

impl Gateway {
    /// Put what can change of `new` in force (see the module doc).
    pub fn reload(&self, new: &Config) -> Report {
        let old = self.config();
        let (next, report) = plan(&old, new);
        if report.applied.is_empty() {
            return report;
        }
        let next = Arc::new(next);
        self.config.store(next.clone());
        for up in &self.servers {
            if let Some(cfg) = next.servers.get(&*up.name) {
                up.reconfigure(cfg.clone());
            }
        }
        self.limits.swap(&next);
        self.redactor
            .store(Arc::new(crate::audit::redact::Redactor::new(&next)));
        // Renamed, hidden or relabelled items, and servers whose `failure`
        // mode changed: a new catalog, announced to every client.
        self.rebuild_catalog();
        report
    }

    /// Read the config file again and reload it; audited either way, with
    /// who asked (`None`: a signal). Err: why the file was rejected (the
    /// settings in force are unchanged).
    pub async fn reload_file(&self, by: Option<&crate::auth::Principal>) -> Result<Report, String> {
        let old = self.config();
        let mut e = Event::new(EventKind::Reload);
        if let Some(p) = by {
            e = e.by(p);
        }
        e.method = Some("config".into());
        let Some(path) = old.source.clone() else {
            return Err("the gateway was not started from a file".into());
        };
        e.target = Some(path.display().to_string());
        let loaded = tokio::task::spawn_blocking({
            let path = path.clone();
            move || crate::config::load_file(&path)
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()));
        let result = loaded.map(|mut new| {
            if let Some(listen) = old.listen_override {
                new.listen = listen;
                new.listen_override = Some(listen);
            }
            self.reload(&new)
        });
        match &result {
            Ok(report) => {
                tracing::info!(
                    path = %path.display(),
                    applied = ?report.applied,
                    restart_required = ?report.restart_required,
                    "config reloaded"
                );
                if !report.restart_required.is_empty() {
                    tracing::warn!(
                        keys = ?report.restart_required,
                        "config reload: these changes take effect at the next restart"
                    );
                }
                e.outcome = Some(Outcome::Ok);
                e.detail = Some(report.to_json());
            }
            Err(problem) => {
                tracing::error!(path = %path.display(), "config reload rejected; the settings in force stay: {problem}");
                e.outcome = Some(Outcome::Error);
                e.reason = Some(self.redactor.load().scrub(problem).into_owned());
            }
        }
        self.audit.emit(e);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(yaml: &str) -> Config {
        crate::config::load_str(yaml, "t.yaml", false).unwrap()
    }

    #[test]
    fn soft_changes_apply_and_the_rest_waits_for_a_restart() {
        let old = load(
            "listen: 127.0.0.1:7000\nservers:\n  a: { command: srv, timeout: 10s }\n  b: { url: 'http://x/mcp' }\n",
        );
        let new = load(
            "listen: 127.0.0.1:7001\npage_size: 7\nservers:\n  a: { command: other, timeout: 20s, tools: { hide: [x] } }\n  c: { url: 'http://y/mcp' }\n",
        );
        let (next, report) = plan(&old, &new);
        assert_eq!(
            report.applied,
            ["page_size", "servers.a.timeout", "servers.a.tools"]
        );
        assert_eq!(
            report.restart_required,
            [
                "listen",
                "servers.a.command",
                "servers.c (added)",
                "servers.b (removed)"
            ]
        );
        assert_eq!(next.page_size, 7);
        assert_eq!(next.listen, old.listen, "the listener stays");
        let a = &next.servers["a"];
        assert_eq!(a.command.as_deref(), Some("srv"), "the command stays");
        assert_eq!(a.timeout.0, std::time::Duration::from_secs(20));
        assert_eq!(a.tools.hide, ["x"]);
        assert!(next.servers.contains_key("b") && !next.servers.contains_key("c"));
    }

    #[test]
    fn the_same_file_changes_nothing() {
        let text = "servers:\n  a: { command: srv }\nlimits:\n  - { id: r, rate: 5/s }\n";
        let (_, report) = plan(&load(text), &load(text));
        assert_eq!(report, Report::default());
    }
}
