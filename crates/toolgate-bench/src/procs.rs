//! The processes a run starts — echo upstreams and gateways — and what the benchmark reads
//! about them from /proc (CPU time, resident memory, children); CPU pinning; the fd limit.
//!
//! The load generator, the gateway and the upstreams share the machine, so where each one runs
//! is decided once (`Layout`) and printed with the results.

use anyhow::{Context as _, bail};
use serde_json::Value;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

/// How long an upstream or a gateway may take to say where it listens.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Gateway log lines kept for error messages.
const LOG_TAIL: usize = 40;

/// How to pin the processes of a run to CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Pin {
    /// Per measurement: `client` for latency, `gateway` for throughput and CPU.
    Auto,
    /// The gateway alone on one CPU; load generator and upstreams on another.
    Gateway,
    /// The load generator alone on one CPU; gateway and upstreams on another.
    Client,
    /// No pinning: the scheduler decides.
    None,
}

/// What a measurement is after, which decides where its processes run under `Pin::Auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Latency: the load generator gets its own CPU, so its pacing is not disturbed, and the
    /// baseline (client → upstream) crosses CPUs exactly as often as the path through the
    /// gateway does (client → gateway, and back); what differs is only the gateway's work.
    Latency,
    /// Throughput and CPU: the gateway gets its own CPU, and the load generator shares the
    /// other with the upstream, so "through the gateway" is limited by the gateway alone and
    /// the baseline by the same client and upstream.
    Throughput,
}

/// Which CPU each role runs on (`None`: wherever the scheduler likes).
#[derive(Debug, Clone, Copy, Default)]
pub struct Layout {
    pub harness: Option<usize>,
    pub upstream: Option<usize>,
    pub gateway: Option<usize>,
    /// CPUs this process could use before anything was pinned.
    pub cpus: usize,
}

impl Layout {
    /// Where each role runs for `purpose`. The load generator is always on the first CPU (it
    /// is pinned once, at start); with three or more CPUs every role gets its own.
    pub fn plan(pin: Pin, purpose: Purpose, cpus: &[usize]) -> Layout {
        let unpinned = Layout {
            cpus: cpus.len(),
            ..Layout::default()
        };
        if pin == Pin::None || cpus.len() < 2 {
            return unpinned;
        }
        let (a, b) = (cpus[0], cpus[1]);
        let gateway_apart = match pin {
            Pin::Gateway => true,
            Pin::Client => false,
            _ => purpose == Purpose::Throughput,
        };
        let (harness, upstream, gateway) = match cpus.get(2) {
            Some(&c) => (a, b, c),
            None if gateway_apart => (a, a, b),
            None => (a, b, b),
        };
        Layout {
            harness: Some(harness),
            upstream: Some(upstream),
            gateway: Some(gateway),
            ..unpinned
        }
    }

    pub fn describe(&self) -> String {
        let cpu = |c: Option<usize>| c.map_or("any CPU".to_owned(), |c| format!("CPU {c}"));
        if self.harness.is_none() && self.gateway.is_none() {
            return format!(
                "not pinned ({} CPUs shared by load generator, gateway and upstreams)",
                self.cpus
            );
        }
        format!(
            "load generator → {}, upstreams → {}, gateway → {}",
            cpu(self.harness),
            cpu(self.upstream),
            cpu(self.gateway)
        )
    }
}

/// The CPUs this process may run on.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: `set` is a plain bit set the kernel fills in; its size is passed along.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

/// Pin the calling thread (and every thread or process it starts later) to `cpu`.
pub fn pin_current_thread(cpu: usize) -> std::io::Result<()> {
    set_affinity(cpu)
}

fn set_affinity(cpu: usize) -> std::io::Result<()> {
    // SAFETY: sched_setaffinity on the calling thread with a bit set we own; it is
    // async-signal-safe, so it may also run between fork and exec.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Raise the soft limit on open files to the hard limit (children inherit it). Returns the
/// limit before and after.
pub fn raise_fd_limit() -> (u64, u64) {
    // SAFETY: getrlimit/setrlimit with a struct we own.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return (0, 0);
        }
        let before = lim.rlim_cur;
        if lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return (before, before);
            }
        }
        (before, lim.rlim_cur)
    }
}

/// Let `sleep` on this thread wake up on time (the default timer slack is 50 µs).
pub fn tight_timer_slack() {
    // SAFETY: prctl(PR_SET_TIMERSLACK) only changes this thread's timer slack.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0);
    }
}

/// A command that runs on `cpu` if one is given, and dies with the benchmark: killed when its
/// handle is dropped, and by the kernel if the benchmark itself is killed.
pub fn command(program: &Path, cpu: Option<usize>) -> Command {
    let mut cmd = Command::new(program);
    cmd.kill_on_drop(true).stdin(Stdio::null());
    // SAFETY: the closure only makes async-signal-safe system calls (prctl, sched_setaffinity).
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            match cpu {
                Some(cpu) => set_affinity(cpu),
                None => Ok(()),
            }
        });
    }
    cmd
}

/// A process's CPU time so far (user + system, all its threads), from /proc/PID/stat.
///
/// Only the sum is used: the kernel splits it into user and system time by sampling, which
/// over short windows is too coarse to report.
pub fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    stat_cpu_time(&stat, clock_ticks())
}

fn stat_cpu_time(stat: &str, hz: u64) -> anyhow::Result<Duration> {
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("malformed stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat(5); `rest` starts at field 3.
    let ticks: u64 = fields
        .get(11..13)
        .context("short stat")?
        .iter()
        .map(|f| f.parse::<u64>().unwrap_or(0))
        .sum();
    Ok(Duration::from_nanos(ticks * 1_000_000_000 / hz.max(1)))
}

/// What the whole machine and this benchmark's own processes had used at one moment.
#[derive(Debug, Clone, Copy)]
pub struct MachineSample {
    at: std::time::Instant,
    /// user + nice + system of every CPU (/proc/stat), in ticks.
    busy_ticks: u64,
    /// Time the hypervisor ran something else while a CPU wanted to run, in ticks.
    steal_ticks: u64,
    /// CPU time of this process and every process it started, directly or not.
    own: Duration,
}

/// What else ran on the machine between two samples, in CPUs (1.0 = one CPU the whole time).
#[derive(Debug, Clone, Copy, Default)]
pub struct Interference {
    /// Processes that are not this benchmark's.
    pub others: f64,
    /// Time the hypervisor took the CPUs away.
    pub steal: f64,
}

impl Interference {
    /// For people: `3%`, or `3% + steal 2%` (percent of one CPU).
    pub fn describe(&self) -> String {
        let others = format!("{:.0}%", self.others * 100.0);
        if self.steal >= 0.01 {
            format!("{others} + steal {:.0}%", self.steal * 100.0)
        } else {
            others
        }
    }

    /// Worth measuring again: others or the hypervisor took more than a tenth of a CPU.
    pub fn disturbing(&self) -> bool {
        self.others + self.steal > 0.10
    }
}

fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64
}

/// Read the machine's CPU counters and the CPU time of this benchmark's process tree.
pub fn sample_machine() -> MachineSample {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<u64> = stat
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("cpu "))
        .unwrap_or("")
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let at = |i: usize| f.get(i).copied().unwrap_or(0);
    MachineSample {
        at: std::time::Instant::now(),
        busy_ticks: at(0) + at(1) + at(2),
        steal_ticks: at(7),
        own: own_cpu(),
    }
}

/// CPU time of this process and all its descendants (a scan of /proc).
fn own_cpu() -> Duration {
    let hz = clock_ticks();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Duration::ZERO;
    };
    let mut procs: Vec<(u32, u32, Duration)> = Vec::new();
    for pid in dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok()) {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, r)| r.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0);
        let cpu = stat_cpu_time(&stat, hz).unwrap_or_default();
        procs.push((pid, ppid, cpu));
    }
    let mut ours = vec![std::process::id()];
    let mut i = 0;
    while i < ours.len() {
        let parent = ours[i];
        ours.extend(procs.iter().filter(|p| p.1 == parent).map(|p| p.0));
        i += 1;
    }
    procs
        .iter()
        .filter(|p| ours.contains(&p.0))
        .map(|p| p.2)
        .sum()
}

impl MachineSample {
    /// What ran besides this benchmark from `self` until `later`.
    pub fn interference(&self, later: &MachineSample) -> Interference {
        let hz = clock_ticks() as f64;
        let wall = later.at.duration_since(self.at).as_secs_f64().max(1e-3);
        let busy = later.busy_ticks.saturating_sub(self.busy_ticks) as f64 / hz;
        let own = later.own.saturating_sub(self.own).as_secs_f64();
        Interference {
            others: ((busy - own) / wall).max(0.0),
            steal: later.steal_ticks.saturating_sub(self.steal_ticks) as f64 / hz / wall,
        }
    }
}

/// The fraction of the machine's CPU time that was busy over `over` (from /proc/stat).
pub async fn machine_busy(over: Duration) -> f64 {
    fn sample() -> Option<(u64, u64)> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let line = stat.lines().next()?.strip_prefix("cpu ")?;
        let f: Vec<u64> = line
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        // idle and iowait are fields 4 and 5; guest time is already counted in user.
        let total: u64 = f.iter().take(8).sum();
        let idle = f.get(3).copied().unwrap_or(0) + f.get(4).copied().unwrap_or(0);
        Some((total, idle))
    }
    let Some((t0, i0)) = sample() else { return 0.0 };
    tokio::time::sleep(over).await;
    let Some((t1, i1)) = sample() else { return 0.0 };
    let total = t1.saturating_sub(t0).max(1);
    1.0 - i1.saturating_sub(i0) as f64 / total as f64
}

/// A process's resident memory in KiB (VmRSS from /proc/PID/status).
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no VmRSS in status")
}

/// The live child processes of `pid`.
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| {
                    let rest = s.rsplit_once(')')?.1.to_owned();
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

/// The binaries a run starts.
#[derive(Debug, Clone)]
pub struct Bins {
    pub toolgate: PathBuf,
    pub echo: PathBuf,
}

/// A `bench-echo http` upstream; killed when dropped.
pub struct Echo {
    pub url: String,
    pub pid: u32,
    _child: Child,
    // Kept open so the server never writes into a closed pipe.
    _stdout: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl Echo {
    pub async fn start(
        bin: &Path,
        cpu: Option<usize>,
        tools: usize,
        delay_ms: u64,
    ) -> anyhow::Result<Echo> {
        let mut cmd = command(bin, None);
        if let Some(cpu) = cpu {
            cmd.arg("--cpu").arg(cpu.to_string());
        }
        let mut child = cmd
            .arg("--tools")
            .arg(tools.to_string())
            .arg("--delay-ms")
            .arg(delay_ms.to_string())
            .args(["http", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let pid = child.id().context("bench-echo exited at once")?;
        let stdout = child.stdout.take().context("stdout is piped")?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(START_TIMEOUT, lines.next_line())
            .await
            .context("bench-echo did not print its URL")??
            .unwrap_or_default();
        let Some(url) = line.strip_prefix("listening on ") else {
            bail!("bench-echo: unexpected first line {line:?}");
        };
        Ok(Echo {
            url: url.to_owned(),
            pid,
            _child: child,
            _stdout: lines,
        })
    }
}

/// A `toolgate serve` process with a generated config; killed when dropped.
pub struct Gateway {
    pub url: String,
    pub pid: u32,
    /// From spawn to the "MCP at" log line (the gateway has tried every server once).
    pub started_in: Duration,
    child: Child,
    log: Arc<Mutex<VecDeque<String>>>,
    /// Log lines saying a stdio server (child process) was started.
    stdio_starts: Arc<std::sync::atomic::AtomicUsize>,
    _dir: tempfile::TempDir,
}

impl Gateway {
    /// Write `config` into a temporary directory and start `toolgate serve` on it, on a port the
    /// system picks; the address is read from the gateway's log line "MCP at http://ADDR/mcp".
    pub async fn start(bin: &Path, cpu: Option<usize>, config: &Value) -> anyhow::Result<Gateway> {
        let dir = tempfile::tempdir().context("a temporary directory")?;
        let path = dir.path().join("toolgate.json");
        std::fs::write(&path, serde_json::to_vec_pretty(config)?)
            .with_context(|| format!("writing {}", path.display()))?;
        let spawned = Instant::now();
        let mut child = command(bin, cpu)
            .arg("serve")
            .arg("--config")
            .arg(&path)
            .args(["--listen", "127.0.0.1:0", "--log", "info"])
            .env_remove("RUST_LOG")
            .env_remove("TOOLGATE_LOG")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let pid = child.id().context("toolgate exited at once")?;
        let stderr = child.stderr.take().context("stderr is piped")?;
        let mut lines = BufReader::new(stderr).lines();
        let log = Arc::new(Mutex::new(VecDeque::new()));
        let stdio_starts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let starts = stdio_starts.clone();
        let keep = move |log: &Mutex<VecDeque<String>>, line: String| {
            if line.contains("started stdio server") {
                starts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
            log.push_back(line);
            if log.len() > LOG_TAIL {
                log.pop_front();
            }
        };
        let url = tokio::time::timeout(START_TIMEOUT, async {
            while let Ok(Some(line)) = lines.next_line().await {
                let url = line
                    .split_once("MCP at ")
                    .and_then(|(_, rest)| rest.split_whitespace().next())
                    .map(str::to_owned);
                keep(&log, line);
                if url.is_some() {
                    return url;
                }
            }
            None
        })
        .await
        .ok()
        .flatten();
        let started_in = spawned.elapsed();
        let Some(url) = url else {
            let tail = tail(&log);
            bail!("toolgate serve did not report its address; its log:\n{tail}");
        };
        // Keep reading the log: a full pipe would stall the gateway.
        let sink = log.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                keep(&sink, line);
            }
        });
        Ok(Gateway {
            url,
            pid,
            started_in,
            child,
            log,
            stdio_starts,
            _dir: dir,
        })
    }

    /// How many stdio server processes the gateway has started so far (from its log).
    pub fn stdio_starts(&self) -> usize {
        self.stdio_starts.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The last lines the gateway logged, for error messages.
    pub fn log_tail(&self) -> String {
        tail(&self.log)
    }

    /// Fails if the gateway has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Ok(Some(status)) = self.child.try_wait() {
            bail!("toolgate exited ({status}); its log:\n{}", self.log_tail());
        }
        Ok(())
    }
}

fn tail(log: &Mutex<VecDeque<String>>) -> String {
    let log = log.lock().unwrap_or_else(|p| p.into_inner());
    log.iter().cloned().collect::<Vec<_>>().join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_cpus_keep_the_gateway_with_the_upstream_for_latency_and_apart_for_throughput() {
        let latency = Layout::plan(Pin::Auto, Purpose::Latency, &[0, 1]);
        assert_eq!(
            (latency.harness, latency.upstream, latency.gateway),
            (Some(0), Some(1), Some(1))
        );
        let throughput = Layout::plan(Pin::Auto, Purpose::Throughput, &[0, 1]);
        assert_eq!(
            (throughput.harness, throughput.upstream, throughput.gateway),
            (Some(0), Some(0), Some(1))
        );
        let forced = Layout::plan(Pin::Gateway, Purpose::Latency, &[0, 1]);
        assert_eq!(forced.upstream, Some(0));
    }

    #[test]
    fn three_cpus_give_every_role_its_own_and_one_cpu_pins_nothing() {
        let l = Layout::plan(Pin::Auto, Purpose::Latency, &[2, 5, 7]);
        assert_eq!(
            (l.harness, l.upstream, l.gateway),
            (Some(2), Some(5), Some(7))
        );
        let one = Layout::plan(Pin::Auto, Purpose::Latency, &[0]);
        assert!(one.harness.is_none() && one.gateway.is_none());
        assert!(one.describe().starts_with("not pinned"));
    }

    #[test]
    fn cpu_time_sums_utime_and_stime_after_an_odd_command_name() {
        // pid (comm) state ppid … utime=250 stime=50 (fields 14 and 15).
        let stat = "42 (tokio (rt) x) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0";
        assert_eq!(stat_cpu_time(stat, 100).unwrap(), Duration::from_secs(3));
    }
}
