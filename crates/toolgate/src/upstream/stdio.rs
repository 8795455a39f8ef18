//! stdio transport: a supervised child process speaking newline-delimited JSON-RPC.
//!
//! The child gets a scrubbed environment (only the variables the config names, plus
//! the few a program needs to run at all), so the gateway's own secrets never reach
//! it. Anything on stdout that is not a JSON-RPC message is a protocol violation:
//! the connection ends, in-flight calls fail naming the server, and the supervisor
//! restarts the child. stderr is logged.
//!
//! How the child is started and stopped (its process group, the parent-death
//! signal, resource limits) is `process.rs`'s business.

use super::process::{self, ChildPermit};
use super::{Transport, TransportEvent, UpstreamError};
use crate::config::ServerConfig;
use crate::jsonrpc::{self, Message};
use std::process::Stdio;
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Variables passed through from the gateway's environment so ordinary programs
/// (npx, uvx, python) can start; everything else must be configured explicitly.
const PASS_THROUGH: &[&str] = &["PATH", "HOME", "USER", "LANG", "LC_ALL", "TMPDIR", "TZ"];

/// Start the child of `cfg`. `permit` is its place under `max_children`, held
/// until the child has been reaped.
pub async fn spawn(
    name: &Arc<str>,
    cfg: &ServerConfig,
    max_message: usize,
    permit: ChildPermit,
) -> Result<Transport, UpstreamError> {
    let Some(program) = cfg.command.as_deref() else {
        return Err(UpstreamError::Unavailable {
            server: name.clone(),
            reason: "no command configured".into(),
        });
    };
    let mut cmd = Command::new(program);
    cmd.args(&cfg.args)
        .env_clear()
        .envs(
            PASS_THROUGH
                .iter()
                .filter_map(|k| std::env::var_os(k).map(|v| (*k, v))),
        )
        .envs(&cfg.env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(dir) = &cfg.cwd {
        cmd.current_dir(dir);
    }
    let sandbox = sandbox(name, cfg, program).map_err(|e| UpstreamError::Unavailable {
        server: name.clone(),
        reason: format!("cannot sandbox `{program}`: {e}"),
    })?;
    process::confine(&mut cmd, cfg.rlimits, sandbox);
    let mut child = process::spawn(cmd)
        .await
        .map_err(|e| UpstreamError::Unavailable {
            server: name.clone(),
            reason: format!("cannot start `{program}`: {e}"),
        })?;
    // If this task is dropped without running its end (the runtime stops), the
    // child's whole group still goes.
    let pid = child.id();
    let group = pid.map(GroupGuard);
    let (Some(mut stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(UpstreamError::Unavailable {
            server: name.clone(),
            reason: "child has no stdio pipes".into(),
        });
    };
    tracing::info!(server = %name, pid = child.id(), "started stdio server");

    let (out_tx, mut out_rx) = mpsc::channel::<Message>(256);
    let (in_tx, in_rx) = mpsc::channel(256);
    let shutdown = CancellationToken::new();

    // Writer: one message per line.
    tokio::spawn(async move {
        while let Some(msg) = out_rx.recv().await {
            let mut line = msg.to_json();
            line.push('\n');
            if stdin.write_all(line.as_bytes()).await.is_err() || stdin.flush().await.is_err() {
                break;
            }
        }
    });

    // stderr → log, line by line, bounded.
    let server = name.clone();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let line: String = line.chars().take(2000).collect();
            tracing::debug!(server = %server, "stderr: {line}");
        }
    });

    // Reader + lifetime: reads stdout until EOF, garbage, or shutdown; then reaps the child.
    let server = name.clone();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let mut reader = BufReader::new(stdout);
        let mut buf = Vec::with_capacity(8 * 1024);
        // Set once the child has exited: until then, what is left in the pipe is read.
        let mut draining: Option<tokio::time::Instant> = None;
        let mut partial = false;
        let end = loop {
            if !std::mem::take(&mut partial) {
                buf.clear();
            }
            let drained = draining.unwrap_or_else(tokio::time::Instant::now);
            let read = tokio::select! {
                r = read_line(&mut reader, &mut buf, max_message) => Some(r),
                _ = stop.cancelled() => break None,
                // The child exited, but something it started may still hold its
                // stdout open, so no EOF would come: kill the rest of its group and
                // read what is left, for a moment at most.
                _ = child.wait(), if draining.is_none() => None,
                _ = tokio::time::sleep_until(drained), if draining.is_some() => {
                    break Some(exit_reason(&server, &mut child).await);
                }
            };
            let Some(read) = read else {
                if let Some(pid) = pid {
                    process::signal_group(pid, true);
                }
                draining = Some(tokio::time::Instant::now() + DRAIN);
                // read_line keeps what it read of an unfinished line in `buf`.
                partial = true;
                continue;
            };
            match read {
                Ok(0) => break Some(exit_reason(&server, &mut child).await),
                Ok(_) => {}
                Err(reason) => break Some(violation(&server, reason)),
            }
            let line = trim_line(&buf);
            if line.is_empty() {
                continue;
            }
            match jsonrpc::parse(line) {
                Ok(msg) => {
                    if in_tx
                        .send(TransportEvent::Message { msg, origin: None })
                        .await
                        .is_err()
                    {
                        break None;
                    }
                }
                Err(e) => {
                    let shown: String = String::from_utf8_lossy(line).chars().take(120).collect();
                    break Some(violation(
                        &server,
                        format!("wrote something that is not JSON-RPC to stdout ({e}): {shown:?}"),
                    ));
                }
            }
        };
        if let Some(e) = end {
            tracing::warn!(server = %server, "{e}");
            let _ = in_tx.send(TransportEvent::Closed(e)).await;
        }
        process::stop(&mut child, pid, process::STOP_GRACE).await;
        if let Some(g) = group {
            g.disarm();
        }
        drop(permit);
    });

    Ok(Transport {
        outbound: out_tx,
        inbound: in_rx,
        shutdown,
    })
}

/// The sandbox of a `sandbox:` server. Where the system has no Landlock it is
/// `None`, with a warning (best effort, as documented); a sandbox that a system
/// with Landlock cannot set up is an error: the child must not start unconfined.
fn sandbox(
    name: &Arc<str>,
    cfg: &ServerConfig,
    program: &str,
) -> Result<Option<process::Confinement>, String> {
    let Some(wanted) = cfg.sandbox.as_ref() else {
        return Ok(None);
    };
    #[cfg(target_os = "linux")]
    {
        let cwd = cfg.cwd.as_deref();
        let ruleset = super::sandbox::ruleset(wanted, std::path::Path::new(program), cwd)?;
        if ruleset.is_none() {
            tracing::warn!(
                server = %name,
                "sandbox NOT enforced: this kernel has no Landlock (Linux 5.13+ with landlock enabled)"
            );
        }
        Ok(ruleset)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (wanted, program);
        tracing::warn!(server = %name, "sandbox NOT enforced: it needs Linux (Landlock)");
        Ok(None)
    }
}

/// How long what an exited child left in its stdout is still read.
const DRAIN: std::time::Duration = std::time::Duration::from_secs(1);

/// SIGKILLs a child's process group when dropped, unless disarmed after an
/// orderly stop.
struct GroupGuard(u32);

impl GroupGuard {
    fn disarm(self) {
        std::mem::forget(self);
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        process::signal_group(self.0, true);
    }
}

fn violation(server: &Arc<str>, reason: String) -> UpstreamError {
    UpstreamError::Protocol {
        server: server.clone(),
        reason,
    }
}

async fn exit_reason(server: &Arc<str>, child: &mut tokio::process::Child) -> UpstreamError {
    let status = tokio::time::timeout(std::time::Duration::from_secs(2), child.wait()).await;
    let reason = match status {
        Ok(Ok(s)) => format!("the process exited ({s})"),
        _ => "the process closed its stdout".to_owned(),
    };
    UpstreamError::Closed {
        server: server.clone(),
        reason,
    }
}

fn trim_line(buf: &[u8]) -> &[u8] {
    let mut end = buf.len();
    while end > 0 && matches!(buf[end - 1], b'\n' | b'\r') {
        end -= 1;
    }
    &buf[..end]
}

/// Read one line, refusing lines longer than `max` without buffering them whole.
async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> Result<usize, String> {
    loop {
        let available = reader
            .fill_buf()
            .await
            .map_err(|e| format!("stdout read failed: {e}"))?;
        if available.is_empty() {
            return Ok(buf.len());
        }
        let (take, done) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (available.len(), false),
        };
        buf.extend_from_slice(&available[..take]);
        reader.consume(take);
        if buf.len() > max {
            return Err(format!("wrote a message larger than {max} bytes"));
        }
        if done {
            return Ok(buf.len());
        }
    }
}
