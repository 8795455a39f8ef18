//! How a stdio child is started and stopped so that it never outlives the gateway,
//! and how many may live at once.
//!
//! Every child leads its own process group, so stopping it reaches what it started
//! too (the programs a shell or `npx` runs): SIGTERM to the group, SIGKILL after a
//! short grace. A gateway killed with SIGKILL runs no cleanup at all, so on Linux
//! the child also asks the kernel to SIGKILL it when the gateway dies
//! (`PR_SET_PDEATHSIG`). That signal fires when the *thread* that forked exits,
//! not the process, so children are forked on one thread that lives as long as the
//! process — never on a runtime thread, which tokio may retire. Resource limits and
//! the Landlock sandbox (`sandbox.rs`) are set in the same place, between fork and
//! exec.

use crate::config::Rlimits;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

/// How long a child may take to exit after SIGTERM before its group is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(2);

/// The count of live stdio children against `max_children`.
#[derive(Debug)]
pub struct Children {
    max: usize,
    live: AtomicUsize,
}

/// One live child's place in the count, given back when dropped.
#[derive(Debug)]
pub struct ChildPermit(Arc<Children>);

impl Drop for ChildPermit {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Children {
    pub fn new(max: usize) -> Arc<Children> {
        Arc::new(Children {
            max,
            live: AtomicUsize::new(0),
        })
    }

    pub fn max(&self) -> usize {
        self.max
    }

    pub fn live(&self) -> usize {
        self.live.load(Ordering::Acquire)
    }

    /// A place for one more child: refused at the cap unless `always` (the
    /// supervisor's child, one per configured server, is never refused, or a
    /// crowd of sessions could keep a server's discovery down).
    pub fn admit(self: &Arc<Self>, always: bool) -> Option<ChildPermit> {
        let mut now = self.live.load(Ordering::Acquire);
        loop {
            if now >= self.max && !always {
                return None;
            }
            match self
                .live
                .compare_exchange_weak(now, now + 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Some(ChildPermit(self.clone())),
                Err(seen) => now = seen,
            }
        }
    }
}

/// A filesystem sandbox built for one child, enforced by it before exec.
#[cfg(target_os = "linux")]
pub type Confinement = landlock::RulesetCreated;
#[cfg(not(target_os = "linux"))]
pub type Confinement = std::convert::Infallible;

/// Make `cmd` lead its own process group, die with the gateway (Linux) and start
/// under `limits` and `sandbox`.
pub fn confine(cmd: &mut Command, limits: Option<Rlimits>, sandbox: Option<Confinement>) {
    #[cfg(unix)]
    {
        cmd.process_group(0);
        let parent = rustix::process::getpid();
        let limits = limits.unwrap_or_default();
        let mut sandbox = sandbox;
        // SAFETY: the closure runs in the forked child before exec; it only makes
        // raw system calls (prctl, getppid, setrlimit, landlock_restrict_self)
        // and allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                #[cfg(target_os = "linux")]
                {
                    use rustix::process::{Signal, getppid, set_parent_process_death_signal};
                    set_parent_process_death_signal(Some(Signal::KILL))?;
                    // The gateway may have died between fork and prctl, in which
                    // case the signal will never come: do not start orphaned.
                    if getppid() != Some(parent) {
                        return Err(io::Error::other("the gateway exited"));
                    }
                }
                #[cfg(not(target_os = "linux"))]
                let _ = parent;
                apply(&limits)?;
                // Last: it also sets no_new_privs.
                #[cfg(target_os = "linux")]
                if let Some(ruleset) = sandbox.take() {
                    super::sandbox::enforce(ruleset)?;
                }
                #[cfg(not(target_os = "linux"))]
                let _ = sandbox.take();
                Ok(())
            });
        }
    }
    #[cfg(not(unix))]
    let _ = (cmd, limits, sandbox);
}

#[cfg(unix)]
fn apply(limits: &Rlimits) -> io::Result<()> {
    use rustix::process::{Resource, Rlimit, setrlimit};
    let set = |resource, value: Option<u64>| match value {
        // Soft and hard alike: the child may not raise its own limit again.
        Some(v) => setrlimit(
            resource,
            Rlimit {
                current: Some(v),
                maximum: Some(v),
            },
        ),
        None => Ok(()),
    };
    set(Resource::As, limits.memory.map(|b| b.0))?;
    set(Resource::Cpu, limits.cpu_seconds)?;
    set(Resource::Nofile, limits.open_files)?;
    set(Resource::Fsize, limits.file_size.map(|b| b.0))?;
    Ok(())
}

type Job = (
    Command,
    tokio::runtime::Handle,
    oneshot::Sender<io::Result<Child>>,
);

/// Start `cmd` from the process-long spawner thread (see the module comment).
pub async fn spawn(cmd: Command) -> io::Result<Child> {
    static SPAWNER: OnceLock<Mutex<std::sync::mpsc::Sender<Job>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let started = std::thread::Builder::new()
            .name("toolgate-spawner".into())
            .spawn(move || {
                while let Ok((mut cmd, runtime, reply)) = rx.recv() {
                    // The child's pipes and exit belong to the caller's runtime.
                    let _entered = runtime.enter();
                    let _ = reply.send(cmd.spawn());
                }
            });
        if let Err(e) = started {
            tracing::error!("cannot start the child spawner thread: {e}");
        }
        Mutex::new(tx)
    });
    let (reply, answer) = oneshot::channel();
    let job = (cmd, tokio::runtime::Handle::current(), reply);
    spawner
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .send(job)
        .map_err(|_| io::Error::other("the child spawner thread is not running"))?;
    answer
        .await
        .unwrap_or_else(|_| Err(io::Error::other("the child spawner thread stopped")))
}

/// Stop a child and everything in its process group (`group`, the child's pid,
/// taken at spawn: a reaped child no longer knows it): SIGTERM, then SIGKILL
/// after `grace`; waits for the child itself to be reaped.
pub async fn stop(child: &mut Child, group: Option<u32>, grace: Duration) {
    let Some(pid) = group else {
        let _ = child.start_kill();
        let _ = child.wait().await;
        return;
    };
    if child.id().is_some() {
        signal_group(pid, false);
        if tokio::time::timeout(grace, child.wait()).await.is_err() {
            signal_group(pid, true);
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }
    // What the child started and left behind in its group. (The group id could
    // only be someone else's if the whole group had exited and a new process
    // had made itself leader of a group with that id in between: a window of
    // microseconds, accepted.)
    signal_group(pid, true);
}

/// SIGKILL (or SIGTERM) the process group a child leads.
pub fn signal_group(pid: u32, kill: bool) {
    #[cfg(unix)]
    {
        use rustix::process::{Pid, Signal, kill_process_group};
        let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
            return;
        };
        // ESRCH (the group is gone) is the usual, good outcome.
        let _ = kill_process_group(pid, if kill { Signal::KILL } else { Signal::TERM });
    }
    #[cfg(not(unix))]
    let _ = (pid, kill);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_holds_except_for_the_supervisor() {
        let children = Children::new(2);
        let a = children.admit(false).expect("one");
        let _b = children.admit(false).expect("two");
        assert!(children.admit(false).is_none(), "over the cap");
        let c = children.admit(true).expect("the supervisor's child");
        assert_eq!(children.live(), 3);
        drop(a);
        drop(c);
        assert!(children.admit(false).is_some(), "a place was given back");
    }
}
