//! `toolgate policy …`: check a policy directory, print the schema, explain a
//! decision, replay the audit trail against a change. The same operations the
//! gateway performs, for people and CI.

use super::simulate::{self, Report};
use super::{Action, CallContext, Decision, Era, Policies, Request, ServerRef, Target};
use crate::audit::{Event, query};
use crate::auth::{AuthMethod, Principal};
use crate::config::{self, AuditSink, Config, Labels, PrefixMode};
use crate::store::Store;
use clap::Subcommand;
use serde_json::{Value, json};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Validate a `.cedar` file or a policy directory against the schema; exit 1
    /// with file:line:column errors.
    Check { path: PathBuf },
    /// Print the Cedar schema policies are validated against (with `--policies`,
    /// including that directory's `Args`/`Attrs` declarations).
    Schema {
        #[arg(long)]
        policies: Option<PathBuf>,
    },
    /// Decide one request and say why. Exit 0 if allowed, 2 if denied.
    Explain {
        #[arg(long)]
        policies: PathBuf,
        /// A user name, or a JSON principal:
        /// `{"user":"alice","tenant":"acme","groups":["finance"],"scopes":[],"agent":"cli","attrs":{},"method":"jwt"}`.
        #[arg(long)]
        principal: String,
        /// `call_tool`, `get_prompt`, `read_resource`, `subscribe`, `complete`,
        /// `list_tools`, `list_prompts` or `list_resources`.
        #[arg(long)]
        action: String,
        /// `tool:SERVER/NAME`, `prompt:SERVER/NAME`, `resource:SERVER/URI` or
        /// `server:SERVER`, with the server's own item names.
        #[arg(long)]
        resource: String,
        /// JSON: `{"args":{…},"source":"10.0.0.1","endpoint":"/mcp","session":"…","era":"modern","now":UNIX_SECONDS}`.
        #[arg(long)]
        context: Option<String>,
        /// The tool's MCP annotations as its server lists them (JSON).
        #[arg(long)]
        annotations: Option<String>,
        /// A gateway config, for the servers' and items' labels and exposed names.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Replay the calls decided in the audit trail against the policies in a
    /// directory and list those whose decision would change. Exit 0 when none
    /// would, 1 when some would, 2 when it cannot run.
    Simulate(SimulateArgs),
}

/// The inputs of `policy simulate`.
#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    /// The gateway config: where the trail is (`storage`), and the servers'
    /// and items' labels.
    #[arg(long, short, env = "TOOLGATE_CONFIG")]
    pub config: PathBuf,
    /// The candidate policies: a directory (with its `*.cedarschema`
    /// declarations) or one `.cedar` file.
    #[arg(long)]
    pub policies: PathBuf,
    /// Calls since then: a duration ago (`24h`, `90m`, `7d`) or an RFC 3339 time.
    #[arg(long, default_value = "24h")]
    pub since: String,
    /// Calls before then (the same forms).
    #[arg(long)]
    pub until: Option<String>,
    /// Only this principal's calls: `user` or `tenant/user`.
    #[arg(long)]
    pub principal: Option<String>,
    /// Only calls of this tool or prompt (as clients see it) or resource URI.
    #[arg(long)]
    pub tool: Option<String>,
    /// Replay at most this many calls, oldest first.
    #[arg(long, default_value_t = 100_000)]
    pub limit: usize,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Run a `policy` subcommand, printing to stdout/stderr.
pub async fn run(command: PolicyCommand) -> ExitCode {
    let result = match command {
        PolicyCommand::Simulate(args) => return simulate(&args).await,
        PolicyCommand::Check { path } => check(&path).map(|text| (text, ExitCode::SUCCESS)),
        PolicyCommand::Schema { policies } => {
            schema(policies.as_deref()).map(|text| (text, ExitCode::SUCCESS))
        }
        PolicyCommand::Explain {
            policies,
            principal,
            action,
            resource,
            context,
            annotations,
            config,
            json,
        } => explain(&ExplainArgs {
            policies: &policies,
            principal: &principal,
            action: &action,
            resource: &resource,
            context: context.as_deref(),
            annotations: annotations.as_deref(),
            config: config.as_deref(),
            json,
        })
        .map(|(text, d)| {
            (
                text,
                if d.allowed {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(2)
                },
            )
        }),
    };
    match result {
        Ok((text, code)) => {
            print!("{text}");
            code
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(1)
        }
    }
}

/// `policy simulate`: exit 0 when no decision would change, 1 when some
/// would, 2 when it could not run (bad policies, config or trail).
pub async fn simulate(a: &SimulateArgs) -> ExitCode {
    match replay(a).await {
        Ok((text, report)) => {
            print!("{text}");
            if report.changed() > 0 {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}

/// Calls read from the store per query.
const PAGE: u32 = 10_000;

async fn replay(a: &SimulateArgs) -> Result<(String, Report), String> {
    let policies = Policies::load(&a.policies)
        .map_err(|e| format!("error: {e}").replace('\n', "\nerror: "))?;
    for w in policies.warnings() {
        eprintln!("warning: {w}");
    }
    let config = config::load_file(&a.config).map_err(|e| format!("error: {e}"))?;
    if !config.audit.sinks.contains(&AuditSink::Store) {
        eprintln!(
            "warning: audit.sinks does not include `store`: only calls recorded there before can be replayed"
        );
    }
    let now_us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
    let since = query::parse_since(&a.since, now_us).map_err(|e| format!("error: --since: {e}"))?;
    let until = a
        .until
        .as_deref()
        .map(|t| query::parse_since(t, now_us))
        .transpose()
        .map_err(|e| format!("error: --until: {e}"))?;
    let store = Store::for_config(&config)
        .await
        .map_err(|e| format!("error: {e:#}"))?;
    crate::audit::sink::recover_journal(&config)
        .await
        .map_err(|e| format!("error: the audit journal: {e:#}"))?;
    let filter = query::Filter {
        since_us: Some(since),
        until_us: until,
        principal: a.principal.clone(),
        tool: a.tool.clone(),
        kind: Some("request".into()),
        limit: Some(PAGE),
        ascending: true,
        ..query::Filter::default()
    };
    let (calls, cut) = decided_calls(&store, filter, a.limit).await?;
    let report = simulate::simulate(&calls, &policies, &config);
    let last = calls.last().map(|e| query::format_time(e.time_us));
    let text = if a.json {
        let mut v = serde_json::to_value(&report).map_err(|e| format!("error: {e}"))?;
        v["changed"] = json!(report.changed());
        v["limit_reached"] = json!(cut);
        serde_json::to_string_pretty(&v).unwrap_or_default() + "\n"
    } else {
        let mut text = report.text();
        if cut {
            text.push_str(&format!(
                "stopped at --limit {}: calls after {} were not replayed\n",
                a.limit,
                last.unwrap_or_default()
            ));
        }
        text
    };
    Ok((text, report))
}

/// The calls with a decision that `filter` selects, oldest first, at most
/// `limit`; and whether there were more.
async fn decided_calls(
    store: &Store,
    mut filter: query::Filter,
    limit: usize,
) -> Result<(Vec<Event>, bool), String> {
    let mut calls = Vec::new();
    loop {
        let page = query::events(store, &filter)
            .await
            .map_err(|e| format!("error: cannot read the audit trail: {e:#}"))?;
        let Some(last) = page.last() else {
            return Ok((calls, false));
        };
        filter.after = Some(last.id.clone());
        let more = page.len() == PAGE as usize;
        for e in page {
            if simulate::is_decided_call(&e) {
                if calls.len() == limit {
                    return Ok((calls, true));
                }
                calls.push(e);
            }
        }
        if !more {
            return Ok((calls, false));
        }
    }
}

/// `policy check`: the report on success, every located problem on failure.
pub fn check(path: &Path) -> Result<String, String> {
    let p = Policies::load(path).map_err(|e| format!("error: {e}").replace('\n', "\nerror: "))?;
    let mut out = String::new();
    for w in p.warnings() {
        out.push_str(&format!("warning: {w}\n"));
    }
    // The built-in policy is not the user's.
    let n = p.len() - 1;
    out.push_str(&format!(
        "{}: ok ({n} polic{}; the largest slice a request meets holds {})\n",
        path.display(),
        if n == 1 { "y" } else { "ies" },
        p.largest_slice()
    ));
    Ok(out)
}

/// `policy schema`.
pub fn schema(policies: Option<&Path>) -> Result<String, String> {
    match policies {
        None => Ok(super::SCHEMA.to_owned()),
        Some(path) => {
            let p = Policies::load(path).map_err(|e| format!("error: {e}"))?;
            p.schema_text().map(|s| s + "\n")
        }
    }
}

/// The inputs of `policy explain`.
pub struct ExplainArgs<'a> {
    pub policies: &'a Path,
    pub principal: &'a str,
    pub action: &'a str,
    pub resource: &'a str,
    pub context: Option<&'a str>,
    pub annotations: Option<&'a str>,
    pub config: Option<&'a Path>,
    pub json: bool,
}

/// `policy explain`: the decision, and its report.
pub fn explain(a: &ExplainArgs<'_>) -> Result<(String, Decision), String> {
    let policies = Policies::load(a.policies).map_err(|e| format!("error: {e}"))?;
    let principal = parse_principal(a.principal)?;
    let action = Action::from_name(a.action).ok_or_else(|| {
        format!(
            "error: unknown action `{}`; one of: {}",
            a.action,
            Action::ALL.map(Action::name).join(", ")
        )
    })?;
    let config = match a.config {
        Some(path) => Some(config::load_file(path).map_err(|e| format!("error: {e}"))?),
        None => None,
    };
    let annotations: Option<Value> = a
        .annotations
        .map(|t| {
            serde_json::from_str(t).map_err(|e| format!("error: --annotations is not JSON: {e}"))
        })
        .transpose()?;
    let target = parse_target(a.resource, config.as_ref(), annotations.as_ref())?;
    if !action.resource_kinds().contains(&target.kind()) {
        return Err(format!(
            "error: `{action}` applies to {}, not to a {}",
            action
                .resource_kinds()
                .iter()
                .map(|k| k.type_name())
                .collect::<Vec<_>>()
                .join(" or "),
            target.kind().type_name()
        ));
    }
    let ctx_json: Value = match a.context {
        Some(t) => {
            serde_json::from_str(t).map_err(|e| format!("error: --context is not JSON: {e}"))?
        }
        None => json!({}),
    };
    let source = match ctx_json.get("source").and_then(Value::as_str) {
        Some(s) => Some(
            s.parse::<IpAddr>()
                .map_err(|e| format!("error: context.source `{s}`: {e}"))?,
        ),
        None => None,
    };
    let time =
        match ctx_json.get("now") {
            Some(n) => {
                UNIX_EPOCH
                    + Duration::from_secs(n.as_u64().ok_or(
                        "error: context.now must be unix seconds (a non-negative integer)",
                    )?)
            }
            None => SystemTime::now(),
        };
    let context = CallContext {
        args: ctx_json.get("args"),
        source,
        endpoint: ctx_json
            .get("endpoint")
            .and_then(Value::as_str)
            .unwrap_or("/mcp"),
        session: ctx_json.get("session").and_then(Value::as_str),
        era: match ctx_json.get("era").and_then(Value::as_str) {
            Some("modern") => Era::Modern,
            _ => Era::Legacy,
        },
        time,
    };
    let req = Request {
        principal: &principal,
        action,
        target: &target,
        context,
    };
    let decision = policies.decide(&req);
    let listed = policies.could_allow(&req);
    let located: Vec<Value> = decision
        .reason
        .policies
        .iter()
        .map(|id| json!({ "id": id, "at": policies.origin(id) }))
        .collect();
    let text = if a.json {
        let v = json!({
            "allowed": decision.allowed,
            "code": decision.reason.code,
            "policies": located,
            "message": decision.reason.message,
            "could_allow_some_arguments": listed,
            "resource": target.uid().to_string(),
        });
        serde_json::to_string_pretty(&v).unwrap_or_default() + "\n"
    } else {
        let mut out = format!(
            "{} ({})\n  request:  {} {} {}\n",
            if decision.allowed { "ALLOW" } else { "DENY" },
            decision.reason.code,
            principal_uid_text(&principal),
            action,
            target.uid()
        );
        for l in &located {
            out.push_str(&format!(
                "  policy:   {}{}\n",
                l["id"].as_str().unwrap_or(""),
                l["at"]
                    .as_str()
                    .map(|at| format!(" ({at})"))
                    .unwrap_or_default()
            ));
        }
        out.push_str(&format!("  message:  {}\n", decision.reason.message));
        if action.resource_kinds() != [crate::policy::TargetKind::Server] {
            out.push_str(&format!(
                "  listed:   {} (allowed for some arguments)\n",
                if listed { "yes" } else { "no" }
            ));
        }
        out
    };
    Ok((text, decision))
}

fn principal_uid_text(p: &Principal) -> String {
    format!("Toolgate::User::{:?}", p.key())
}

/// A user name, or a principal as JSON.
pub fn parse_principal(text: &str) -> Result<Principal, String> {
    let text = text.trim();
    if !text.starts_with('{') {
        return Ok(Principal::anonymous(text));
    }
    let v: Value =
        serde_json::from_str(text).map_err(|e| format!("error: --principal is not JSON: {e}"))?;
    let strings = |k: &str| -> Vec<String> {
        v.get(k)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    let string = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    let method = match string("method").as_deref() {
        None | Some("anonymous") => AuthMethod::Anonymous,
        Some("api_key") => AuthMethod::ApiKey,
        Some("jwt") => AuthMethod::Jwt,
        Some("mtls") => AuthMethod::Mtls,
        Some(other) => {
            return Err(format!(
                "error: principal method `{other}`: one of anonymous, api_key, jwt, mtls"
            ));
        }
    };
    Ok(Principal {
        user: string("user").ok_or("error: the principal needs a \"user\"")?,
        agent: string("agent"),
        tenant: string("tenant"),
        groups: strings("groups"),
        scopes: strings("scopes"),
        attrs: v
            .get("attrs")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default(),
        method,
        recorded: Default::default(),
    })
}

/// `tool:SERVER/NAME`, `prompt:SERVER/NAME`, `resource:SERVER/URI`, `server:SERVER`.
pub fn parse_target(
    spec: &str,
    config: Option<&Config>,
    annotations: Option<&Value>,
) -> Result<Target, String> {
    let bad = || {
        format!(
            "error: resource `{spec}`: expected tool:SERVER/NAME, prompt:SERVER/NAME, resource:SERVER/URI or server:SERVER"
        )
    };
    let (kind, rest) = spec.split_once(':').ok_or_else(bad)?;
    let no_labels = Labels::default();
    let server_of = |name: &str| config.and_then(|c| c.servers.get(name));
    if kind == "server" {
        let labels = server_of(rest).map_or(&no_labels, |s| &s.labels);
        return Ok(Target::server(ServerRef { name: rest, labels }));
    }
    let (server, item) = rest.split_once('/').ok_or_else(bad)?;
    if server.is_empty() || item.is_empty() {
        return Err(bad());
    }
    let cfg = server_of(server);
    let labels = cfg.map_or(&no_labels, |s| &s.labels);
    let sref = ServerRef {
        name: server,
        labels,
    };
    let exposed = |rules: Option<&config::ItemRules>| -> String {
        if let Some(r) = rules.and_then(|r| r.rename.get(item)) {
            return r.clone();
        }
        let (mode, sep) = config.map_or((PrefixMode::Always, "__"), |c| {
            (c.prefix_mode, c.separator.as_str())
        });
        let prefix = cfg.and_then(|s| s.prefix.as_deref()).unwrap_or(server);
        match mode {
            PrefixMode::Always => crate::names::normalise(&format!("{prefix}{sep}{item}")),
            _ => crate::names::normalise(item),
        }
    };
    match kind {
        "tool" => {
            let rules = cfg.map(|s| &s.tools);
            Ok(Target::tool(
                sref,
                &exposed(rules),
                item,
                rules.and_then(|r| r.labels.get(item)),
                annotations,
            ))
        }
        "prompt" => {
            let rules = cfg.map(|s| &s.prompts);
            Ok(Target::prompt(
                sref,
                &exposed(rules),
                item,
                rules.and_then(|r| r.labels.get(item)),
            ))
        }
        "resource" => Ok(Target::resource(sref, item, item)),
        _ => Err(bad()),
    }
}
