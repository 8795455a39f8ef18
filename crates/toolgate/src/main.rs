//! The `toolgate` command line: serve, stdio, check, catalog, policy, keys, audit.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use toolgate::config::{self, Config};
use toolgate::gateway::{Gateway, Status};

#[cfg(all(feature = "jemalloc", target_os = "linux", target_env = "gnu"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "toolgate",
    version,
    about = "A governed MCP gateway: many MCP servers behind one endpoint"
)]
struct Cli {
    /// Log filter (e.g. `info`, `toolgate=debug`); RUST_LOG also works.
    #[arg(long, global = true, env = "TOOLGATE_LOG", default_value = "info")]
    log: String,
    /// Log as JSON lines instead of text.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve MCP over HTTP: Streamable HTTP at /mcp, legacy HTTP+SSE at /sse.
    Serve {
        #[arg(long, short, env = "TOOLGATE_CONFIG")]
        config: PathBuf,
        /// Override `listen` from the config.
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Serve MCP over stdin/stdout, for clients that launch their servers.
    Stdio {
        #[arg(long, short, env = "TOOLGATE_CONFIG")]
        config: PathBuf,
    },
    /// Validate a config file; exit 1 with file:line and key on error.
    Check {
        #[arg(long, short, env = "TOOLGATE_CONFIG")]
        config: PathBuf,
    },
    /// Print the JSON Schema of the config file (for editors and CI validation).
    ConfigSchema,
    /// Create, list and revoke API keys (kept hashed in the config's `storage`).
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Connect to every server and print the merged catalog clients would see.
    Catalog {
        #[arg(long, short, env = "TOOLGATE_CONFIG")]
        config: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Cedar policies: check them, print their schema, explain a decision,
    /// replay the audit trail against a change.
    Policy {
        #[command(subcommand)]
        command: toolgate::policy::cli::PolicyCommand,
    },
    /// Read the audit trail from the config's store: query it, or follow it.
    Audit {
        #[command(subcommand)]
        command: toolgate::audit::cli::AuditCommand,
    },
}

fn load(path: &std::path::Path) -> Result<Config, ExitCode> {
    config::load_file(path).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(1)
    })
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Issue a key; it is printed once and cannot be shown again.
    Create {
        #[arg(long, short, env = "TOOLGATE_CONFIG")]
        config: PathBuf,
        /// The user or service the key authenticates as.
        #[arg(long)]
        principal: String,
        #[arg(long)]
        tenant: Option<String>,
        /// The agent or application that will use the key.
        #[arg(long)]
        agent: Option<String>,
        /// A group or role (repeatable).
        #[arg(long = "group")]
        groups: Vec<String>,
        /// Lifetime, e.g. `90d`, `12h`; never expires without it.
        #[arg(long)]
        expires: Option<config::Seconds>,
        #[arg(long)]
        description: Option<String>,
        /// Print JSON (the key under `key`).
        #[arg(long)]
        json: bool,
    },
    /// List keys (never their secrets).
    List {
        #[arg(long, short, env = "TOOLGATE_CONFIG")]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key by id; it stops working within seconds on every replica.
    Revoke {
        #[arg(long, short, env = "TOOLGATE_CONFIG")]
        config: PathBuf,
        id: String,
    },
}

/// How to log, from the command line.
struct Logging {
    filter: String,
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let logging = Logging {
        filter: cli.log,
        json: cli.log_json,
    };
    // `serve` and `stdio` set up logging once their config is read: its
    // `telemetry` adds the span exporter. Everything else just logs.
    if !matches!(cli.command, Command::Serve { .. } | Command::Stdio { .. }) {
        toolgate::telemetry::init_logging(&logging.filter, logging.json);
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let code = runtime.block_on(run(cli.command, &logging));
    // Do not wait for stray blocking tasks (e.g. a child's stdio read) at exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    code
}

async fn run(command: Command, logging: &Logging) -> ExitCode {
    match command {
        Command::ConfigSchema => {
            let schema = config::json_schema();
            println!(
                "{}",
                serde_json::to_string_pretty(&schema).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Command::Check { config } => match load(&config) {
            Ok(c) => {
                if let Some(path) = c.policy_path()
                    && let Err(e) = toolgate::policy::PolicyStore::open(&path)
                {
                    eprintln!("{e}");
                    return ExitCode::from(1);
                }
                let n = c.enabled_servers().count();
                println!(
                    "{}: ok ({n} server{})",
                    config.display(),
                    if n == 1 { "" } else { "s" }
                );
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Serve { config, listen } => {
            let mut c = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            if let Some(l) = listen {
                c.listen = l;
                c.listen_override = Some(l);
            }
            with_telemetry(logging, c, serve).await
        }
        Command::Stdio { config } => {
            let c = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            with_telemetry(logging, c, stdio).await
        }
        Command::Keys { command } => report(keys(command).await),
        Command::Policy { command } => toolgate::policy::cli::run(command).await,
        Command::Audit { command } => report(toolgate::audit::cli::run(command).await),
        Command::Catalog { config, json } => {
            let c = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            report(catalog(c, json).await)
        }
    }
}

async fn keys(command: KeysCommand) -> anyhow::Result<()> {
    use toolgate::auth::apikey;
    let path = match &command {
        KeysCommand::Create { config, .. }
        | KeysCommand::List { config, .. }
        | KeysCommand::Revoke { config, .. } => config.clone(),
    };
    let c = load(&path).map_err(|_| anyhow::anyhow!("the config is not valid"))?;
    let store = toolgate::store::Store::for_config(&c).await?;
    match command {
        KeysCommand::Create {
            principal,
            tenant,
            agent,
            groups,
            expires,
            description,
            json,
            ..
        } => {
            let spec = apikey::KeySpec {
                principal,
                tenant,
                agent,
                groups,
                description,
                expires_at: expires.map(|e| apikey::now() + e.0.as_secs() as i64),
            };
            let (record, key) = apikey::create(&store, &spec).await?;
            admin_event(
                &c,
                "keys.create",
                serde_json::json!({
                    "key": record.id, "principal": record.principal, "tenant": record.tenant,
                    "groups": record.groups, "expires_at": record.expires_at,
                }),
            )
            .await?;
            if json {
                let mut v = serde_json::to_value(&record)?;
                v["key"] = serde_json::Value::String(key);
                println!("{v}");
            } else {
                println!("{key}");
                eprintln!(
                    "key {} for {}: store it now, it cannot be shown again",
                    record.id, record.principal
                );
            }
        }
        KeysCommand::List { json, .. } => {
            let keys = apikey::list(&store).await?;
            let now = apikey::now();
            if json {
                println!("{}", serde_json::to_string_pretty(&keys)?);
            } else {
                println!(
                    "{:<16}  {:<8}  {:<20}  {:<12}  GROUPS",
                    "ID", "STATE", "PRINCIPAL", "TENANT"
                );
                for k in keys {
                    println!(
                        "{:<16}  {:<8}  {:<20}  {:<12}  {}",
                        k.id,
                        k.state(now),
                        k.principal,
                        k.tenant.as_deref().unwrap_or("-"),
                        k.groups.join(",")
                    );
                }
            }
        }
        KeysCommand::Revoke { id, .. } => {
            if !apikey::revoke(&store, &id).await? {
                anyhow::bail!("no key {id}");
            }
            admin_event(&c, "keys.revoke", serde_json::json!({ "key": id })).await?;
            println!("revoked {id}");
        }
    }
    Ok(())
}

/// Record an operator's action in the audit trail: the OS user who ran the
/// command, what it did and to what (never a secret).
async fn admin_event(c: &Config, action: &str, detail: serde_json::Value) -> anyhow::Result<()> {
    use toolgate::audit::{Event, EventKind, Outcome};
    let mut e = Event::new(EventKind::Admin);
    e.user = std::env::var("USER").ok().or(Some("cli".into()));
    e.method = Some(action.to_owned());
    e.endpoint = Some("cli".into());
    e.outcome = Some(Outcome::Ok);
    e.detail = Some(detail);
    toolgate::audit::sink::write_now(c, e)
        .await
        .context("the action was done but could not be audited")
}

fn report(r: anyhow::Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Run `serve` or `stdio` with logging and telemetry set up from `config`, and
/// export what is left once it returns.
async fn with_telemetry<F, Fut>(logging: &Logging, config: Config, command: F) -> ExitCode
where
    F: FnOnce(Config, Option<Box<dyn toolgate::audit::sink::Sink>>) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let telemetry =
        match toolgate::telemetry::Telemetry::start(&logging.filter, logging.json, &config) {
            Ok(t) => t,
            Err(e) => return report(Err(e)),
        };
    let otlp = telemetry.audit_sink();
    let result = command(config, otlp).await;
    // Exporting the last batches blocks on HTTP.
    let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
    report(result)
}

async fn serve(
    config: Config,
    otlp: Option<Box<dyn toolgate::audit::sink::Sink>>,
) -> anyhow::Result<()> {
    let listen = config.listen;
    if !listen.ip().is_loopback()
        && config.serves_anonymous()
        && !config.allow_unauthenticated_network
    {
        anyhow::bail!(
            "refusing to listen on {listen}: callers without credentials are served (no `auth`, or `auth.anonymous`), so anyone on the network could call every tool; listen on 127.0.0.1, configure `auth`, or set allow_unauthenticated_network: true if that is really meant"
        );
    }
    // Certificates are read before anything starts: a gateway that cannot
    // present its certificate must not come up at all.
    let tls = toolgate::downstream::tls::Tls::from_config(&config)?;
    // Bind first so a taken port fails fast, before any server is started.
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    // With port 0 the system picks one: report the address actually bound.
    let listen = listener.local_addr().unwrap_or(listen);
    let admin = toolgate::downstream::admin::Listener::open(&config).await?;
    if admin.is_some() {
        // Installed before the gateway starts, so its first request is counted.
        toolgate::metrics::install();
    }
    // Built after binding: the default resource URL names the port actually bound.
    let auth = Arc::new(toolgate::auth::Authenticator::from_config(&config, listen).await?);
    let audit = start_audit(&config, otlp).await?;
    let gw = Gateway::start_audited(config, audit);
    gw.wait_started().await?;
    log_statuses(&gw);
    // Announced before the MCP listener: whoever waits for "MCP at" finds the
    // admin address already logged.
    if let Some(admin) = admin {
        let addr = admin.local_addr()?;
        tracing::info!("admin at http://{addr} (/metrics, /healthz, /readyz, /admin/v1/)");
        tokio::spawn(admin.serve(gw.clone(), auth.clone(), gw.stop.clone()));
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!("MCP at {scheme}://{listen}/mcp (legacy SSE at {scheme}://{listen}/sse)");
    if let Some(t) = &tls {
        tracing::info!(
            client_certificates = t.asks_for_client_certs(),
            "serving HTTPS only"
        );
    }
    // The listener stops accepting when the drain begins; open connections
    // finish the requests they carry.
    let server = tokio::spawn(toolgate::downstream::http::serve(
        gw.clone(),
        auth,
        listener,
        tls,
        gw.draining.clone(),
    ));
    reload_on_hangup(&gw);
    shutdown_signal().await;
    tracing::info!("shutting down: no new connections or requests");
    gw.drain(gw.config().shutdown_grace.0).await;
    gw.shutdown().await;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), server).await;
    tracing::info!("stopped");
    Ok(())
}

/// The audit trail as the config describes it: every sink opened before the
/// gateway serves, so a trail that cannot be written stops `serve` at once.
async fn start_audit(
    config: &Config,
    otlp: Option<Box<dyn toolgate::audit::sink::Sink>>,
) -> anyhow::Result<toolgate::audit::Auditor> {
    if config.audit.sinks.is_empty() {
        tracing::warn!("audit.sinks is empty: no audit trail is kept");
        return Ok(toolgate::audit::Auditor::disabled());
    }
    let sinks = toolgate::audit::sink::open(config, otlp)
        .await
        .context("cannot open the audit trail")?;
    let base = config.source.as_deref().and_then(std::path::Path::parent);
    let journal = config.audit.journal_dir(&config.storage, base);
    toolgate::audit::Auditor::start(&config.audit, sinks, journal.as_deref())
        .context("cannot open the audit journal")
}

async fn stdio(
    config: Config,
    otlp: Option<Box<dyn toolgate::audit::sink::Sink>>,
) -> anyhow::Result<()> {
    if config.audit.sinks.contains(&config::AuditSink::Stdout) {
        anyhow::bail!(
            "audit.sinks: `stdout` cannot be used with `toolgate stdio`, whose stdout is the MCP stream"
        );
    }
    let audit = start_audit(&config, otlp).await?;
    let gw = Gateway::start_audited(config, audit);
    gw.wait_started().await?;
    log_statuses(&gw);
    reload_on_hangup(&gw);
    tokio::select! {
        r = toolgate::downstream::stdio::serve(gw.clone()) => r.context("stdio failed")?,
        _ = shutdown_signal() => {
            gw.drain(gw.config().shutdown_grace.0).await;
        }
    }
    gw.shutdown().await;
    Ok(())
}

fn log_statuses(gw: &Gateway) {
    for s in &gw.servers {
        match s.status() {
            Status::Ready => tracing::info!(server = %s.name, "ready"),
            Status::Down { reason } => tracing::warn!(server = %s.name, "unavailable: {reason}"),
            Status::Starting => tracing::info!(server = %s.name, "starting"),
        }
    }
}

async fn catalog(config: Config, json: bool) -> anyhow::Result<()> {
    let gw = Gateway::start(config);
    // A required server being down is reported, not fatal, here: this command exists
    // to show why.
    let _ = gw.wait_started().await;
    let servers: Vec<serde_json::Value> = gw.servers.iter().map(|s| s.describe()).collect();
    if json {
        let mut v = gw.catalog().describe();
        v["servers"] = serde_json::Value::Array(servers);
        emit(&(serde_json::to_string_pretty(&v)? + "\n"))?;
    } else {
        emit(&table(&gw, &servers))?;
    }
    gw.shutdown().await;
    Ok(())
}

fn table(gw: &Arc<Gateway>, servers: &[serde_json::Value]) -> String {
    use std::fmt::Write as _;
    let cat = gw.catalog();
    let mut out = String::from("SERVERS\n");
    for s in servers {
        let text = |k: &str| s[k].as_str().unwrap_or_default().to_owned();
        let mut notes = Vec::new();
        if let Some(state) = s["circuit"]["state"].as_str() {
            notes.push(format!("circuit {state}"));
        }
        if s["health"]["ok"] == false {
            notes.push(format!(
                "health check failing: {}",
                s["health"]["error"].as_str().unwrap_or_default()
            ));
        }
        if s["withdrawn"] == true {
            notes.push("items withdrawn".to_owned());
        }
        if let Some(reason) = s["reason"].as_str() {
            notes.push(reason.to_owned());
        }
        let line = format!(
            "  {:<24} {:<8} {}",
            text("name"),
            text("status"),
            notes.join("; ")
        );
        let _ = writeln!(out, "{}", line.trim_end());
    }
    let owner = |i: usize| gw.servers[i].name.to_string();
    for (title, items) in [("TOOLS", &cat.tools), ("PROMPTS", &cat.prompts)] {
        let _ = writeln!(out, "\n{title} ({})", items.len());
        for it in items.iter() {
            let _ = writeln!(
                out,
                "  {:<48} {} ({})",
                it.exposed,
                owner(it.server),
                it.original
            );
        }
    }
    for (title, items) in [
        ("RESOURCES", &cat.resources),
        ("RESOURCE TEMPLATES", &cat.templates),
    ] {
        let _ = writeln!(out, "\n{title} ({})", items.len());
        for it in items.iter() {
            let _ = writeln!(out, "  {:<48} {}", it.exposed, owner(it.server));
        }
    }
    out
}

/// Write command output; a closed pipe (`toolgate catalog | head`) is not an error.
fn emit(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// SIGHUP reloads the config file (`gateway/reload.rs`).
fn reload_on_hangup(gw: &Arc<Gateway>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; reload with POST /admin/v1/reload");
                return;
            }
        };
        let gw = Arc::downgrade(gw);
        tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                let Some(gw) = gw.upgrade() else { return };
                // Logged and audited inside; a rejected file changes nothing.
                let _ = gw.reload_file(None).await;
            }
        });
    }
    #[cfg(not(unix))]
    let _ = gw;
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return ctrl_c.await.unwrap_or(()),
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
