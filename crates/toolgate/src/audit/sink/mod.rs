//! Where audit events go. Each sink takes whole batches from the writer task;
//! a batch is acknowledged once every sink took it.

mod jsonl;
pub mod otlp;
mod stdout;
pub mod store;

pub use jsonl::Jsonl;
pub use otlp::Otlp;
pub use stdout::Stdout;
pub use store::StoreSink;

use super::{Event, Line};
use crate::config::{AuditSink, Config};
use futures::future::BoxFuture;

pub trait Sink: Send {
    /// For messages.
    fn name(&self) -> &'static str;
    /// Write a batch; `Ok` means it is as durable as this sink makes anything.
    fn write<'a>(&'a mut self, events: &'a [Line]) -> BoxFuture<'a, anyhow::Result<()>>;
    /// Push out anything buffered (at shutdown).
    fn flush(&mut self) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(async { Ok(()) })
    }
}

/// Open every sink `config.audit.sinks` names. `otlp` comes from telemetry,
/// which knows the exporter: pass it in when one is configured.
pub async fn open(
    config: &Config,
    otlp: Option<Box<dyn Sink>>,
) -> anyhow::Result<Vec<Box<dyn Sink>>> {
    let base = config.source.as_deref().and_then(std::path::Path::parent);
    let mut otlp = otlp;
    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    for s in &config.audit.sinks {
        match s {
            AuditSink::Store => {
                let sink = StoreSink::open(config).await?;
                sinks.push(Box::new(sink));
            }
            AuditSink::Stdout => sinks.push(Box::new(Stdout)),
            AuditSink::Jsonl(j) => {
                let path = match base {
                    Some(b) if j.path.is_relative() => b.join(&j.path),
                    _ => j.path.clone(),
                };
                sinks.push(Box::new(Jsonl::open(path, j.max_bytes, j.keep)?));
            }
            AuditSink::Otlp => match otlp.take() {
                Some(sink) => sinks.push(sink),
                None => anyhow::bail!(
                    "audit.sinks: `otlp` needs `telemetry.otlp_endpoint` to be configured"
                ),
            },
        }
    }
    Ok(sinks)
}

/// Write one event straight to the config's sinks, for commands that act
/// without a running gateway (`toolgate keys create|revoke`). The OTLP sink
/// belongs to a serving gateway, and the command's stdout is its own output:
/// both are skipped here.
pub async fn write_now(config: &Config, event: Event) -> anyhow::Result<()> {
    write_local(config, &[Line::of(&event)]).await
}

/// `events` as JSON Lines text.
fn json_lines(events: &[Line]) -> Vec<u8> {
    let mut text = Vec::with_capacity(events.iter().map(|e| e.as_str().len() + 1).sum());
    for e in events {
        text.extend_from_slice(e.as_str().as_bytes());
        text.push(b'\n');
    }
    text
}

/// Write `events` to the config's sinks other than OTLP and stdout (which
/// belong to a serving gateway), and flush them.
async fn write_local(config: &Config, events: &[Line]) -> anyhow::Result<()> {
    let mut only_local = config.clone();
    only_local
        .audit
        .sinks
        .retain(|s| !matches!(s, AuditSink::Otlp | AuditSink::Stdout));
    for mut sink in open(&only_local, None).await? {
        for chunk in events.chunks(1024) {
            sink.write(chunk).await?;
        }
        sink.flush().await?;
    }
    Ok(())
}

/// Hand the local sinks (store, JSON Lines) what gateways that ended left in
/// the audit journal, for commands that read the store without a running
/// gateway (`toolgate audit`, `policy simulate`): after a crash they see every
/// answered call without waiting for the next start. Files a live gateway
/// holds are its own and left alone. Returns the events handed over.
pub async fn recover_journal(config: &Config) -> anyhow::Result<usize> {
    let base = config.source.as_deref().and_then(std::path::Path::parent);
    let Some(dir) = config.audit.journal_dir(&config.storage, base) else {
        return Ok(0);
    };
    if !dir.is_dir() {
        return Ok(0);
    }
    let (journal, left) = super::journal::Journal::open(&dir)?;
    if left.events.is_empty() {
        journal.close();
        return Ok(0);
    }
    write_local(config, &left.events).await?;
    // Only now: on an error above the files stay for the next reader or start.
    journal.close();
    Ok(left.events.len())
}
