//! The journal: where an event is first made to last. A call's answer waits
//! for one `write` of its event to an append-only file of this process (which,
//! like SQLite's log under `synchronous = NORMAL`, survives a crash of the
//! process); the sinks are filled from memory in large batches afterwards, and
//! a file whose events every sink took is deleted. A gateway that starts finds
//! the files of processes that ended without that and hands their events to
//! the sinks first (the store keeps each event once: ids are unique).
//!
//! Files are `SSSSSSSSSSSSSSSS-PID-NNNNNN.log` (start time, process, number)
//! in the journal's directory, one JSON event per line, each locked by the
//! process writing it for as long as it lives. Several gateways may share a
//! directory (`toolgate stdio` started per client beside a served one): a
//! file another process holds locked is its own, never replayed or deleted.

use super::Line;
use anyhow::Context as _;
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufRead as _, Write as _};
use std::path::{Path, PathBuf};

/// A file is closed and a new one started beyond this size.
const SEGMENT_BYTES: u64 = 8 * 1024 * 1024;

pub struct Journal {
    dir: PathBuf,
    /// Start time and process id: this process's files' prefix.
    prefix: String,
    number: u64,
    file: File,
    path: PathBuf,
    bytes: u64,
    /// Files complete, with the sequence number of their last event and the
    /// open file that holds their lock.
    closed: VecDeque<(PathBuf, u64, File)>,
    /// The sequence number of the last event appended.
    appended: u64,
}

/// Events another process appended and did not see into its sinks.
pub struct Leftover {
    pub events: Vec<Line>,
    /// Lines that did not parse (the torn end of a file written at a crash).
    pub unreadable: usize,
    pub files: usize,
}

impl Journal {
    /// Open a journal in `dir` (created if missing), and take over what
    /// processes that ended left in it. The leftover events get the sequence
    /// numbers 1..=n; this process's own continue after them.
    pub fn open(dir: &Path) -> anyhow::Result<(Journal, Leftover)> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the audit journal {}", dir.display()))?;
        let mut orphans = Vec::new();
        for entry in std::fs::read_dir(dir)
            .with_context(|| format!("cannot read the audit journal {}", dir.display()))?
        {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "log") {
                orphans.push(path);
            }
        }
        // Names begin with the writer's start time: older processes first.
        orphans.sort();
        let mut leftover = Leftover {
            events: Vec::new(),
            unreadable: 0,
            files: 0,
        };
        let mut closed = VecDeque::new();
        for path in orphans {
            let Ok(file) = File::open(&path) else {
                continue;
            };
            // Held by a live process: its own.
            if file.try_lock().is_err() {
                continue;
            }
            if file.metadata().is_ok_and(|m| m.len() == 0) {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            for line in std::io::BufReader::new(&file).split(b'\n') {
                let line = line.with_context(|| format!("cannot read {}", path.display()))?;
                if line.is_empty() {
                    continue;
                }
                match Line::parse(&line) {
                    Some(e) => leftover.events.push(e),
                    None => leftover.unreadable += 1,
                }
            }
            leftover.files += 1;
            // Kept locked (so no other starting process takes it too) until
            // its events are in the sinks.
            closed.push_back((path, leftover.events.len() as u64, file));
        }
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_micros();
        let prefix = format!("{started:016x}-{}", std::process::id());
        let (path, file) = create(dir, &prefix, 1)?;
        Ok((
            Journal {
                dir: dir.to_owned(),
                prefix,
                number: 1,
                file,
                path,
                bytes: 0,
                closed,
                appended: leftover.events.len() as u64,
            },
            leftover,
        ))
    }

    /// Append `n` events serialised by [`Line::write`], each followed by a
    /// newline, with one `write`; returns the
    /// sequence number of the last. On an error nothing counts as appended (a
    /// partial line is skipped at replay).
    pub fn append_lines(&mut self, lines: &[u8], n: u64) -> anyhow::Result<u64> {
        if self.bytes >= SEGMENT_BYTES {
            self.rotate()?;
        }
        if let Err(e) = self.file.write_all(lines) {
            // Whatever part went out ends at a line that does not parse; the
            // next write starts a file of its own.
            let _ = self.rotate();
            return Err(e).with_context(|| format!("cannot write {}", self.path.display()));
        }
        self.bytes += lines.len() as u64;
        self.appended += n;
        Ok(self.appended)
    }

    /// Every event up to `durable` is in the sinks: delete the files that hold
    /// only such events, and empty the current one once it is all such.
    pub fn release(&mut self, durable: u64) {
        while let Some((path, last, _)) = self.closed.front() {
            if *last > durable {
                break;
            }
            if let Err(e) = std::fs::remove_file(path) {
                tracing::warn!(file = %path.display(), error = %e, "cannot delete a finished audit journal file");
            }
            self.closed.pop_front();
        }
        if durable >= self.appended && self.bytes > 0 && self.closed.is_empty() {
            // Appends go to the end of the file, wherever that is now.
            match self.file.set_len(0) {
                Ok(()) => self.bytes = 0,
                Err(e) => tracing::warn!(error = %e, "cannot empty the audit journal"),
            }
        }
    }

    /// Start a new file (after an error, or once the current one is full).
    pub fn rotate(&mut self) -> anyhow::Result<()> {
        let (path, file) = create(&self.dir, &self.prefix, self.number + 1)?;
        self.number += 1;
        let old = std::mem::replace(&mut self.path, path);
        // Kept open, so that its lock says it is still this process's.
        let old_file = std::mem::replace(&mut self.file, file);
        if self.bytes > 0 {
            self.closed.push_back((old, self.appended, old_file));
        } else {
            let _ = std::fs::remove_file(&old);
        }
        self.bytes = 0;
        Ok(())
    }

    /// The last sequence number appended.
    pub fn appended(&self) -> u64 {
        self.appended
    }

    /// Everything is in the sinks (at shutdown): no file is left behind.
    pub fn close(mut self) {
        self.release(self.appended);
        if self.closed.is_empty() && self.bytes == 0 {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A new file of this process's, locked.
fn create(dir: &Path, prefix: &str, number: u64) -> anyhow::Result<(PathBuf, File)> {
    let path = dir.join(format!("{prefix}-{number:06}.log"));
    let file = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.try_lock()
        .with_context(|| format!("cannot lock {}", path.display()))?;
    Ok((path, file))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{Event, EventKind};

    fn events(n: usize) -> Vec<Line> {
        (0..n)
            .map(|i| {
                let mut e = Event::new(EventKind::Request);
                e.arguments = Some(serde_json::json!({ "i": i }));
                Line::of(&e)
            })
            .collect()
    }

    /// Append `events` as the gateway does, in one write.
    fn append(j: &mut Journal, events: &[Line]) -> u64 {
        let mut buf = Vec::new();
        for e in events {
            buf.extend_from_slice(e.as_str().as_bytes());
            buf.push(b'\n');
        }
        j.append_lines(&buf, events.len() as u64).unwrap()
    }

    fn files(dir: &Path) -> usize {
        std::fs::read_dir(dir).unwrap().count()
    }

    #[test]
    fn what_a_process_left_is_taken_over_once() {
        let dir = tempfile::tempdir().unwrap();
        let written = events(5);
        let (mut j, left) = Journal::open(dir.path()).unwrap();
        assert!(left.events.is_empty());
        assert_eq!(append(&mut j, &written[..3]), 3);
        assert_eq!(append(&mut j, &written[3..]), 5);
        // Still held by this journal: a second one leaves it alone.
        let (other, left) = Journal::open(dir.path()).unwrap();
        assert!(left.events.is_empty());
        other.close();
        // The writer dies (its lock goes with it); a torn line at the end.
        j.file.write_all(b"{\"id\":\"tor").unwrap();
        drop(j);
        let (j, left) = Journal::open(dir.path()).unwrap();
        assert_eq!(left.events, written);
        assert_eq!(left.unreadable, 1);
        assert_eq!(left.files, 1);
        assert_eq!(j.appended(), 5);
        // Taken over, until released: a third one does not see it.
        let (k, left) = Journal::open(dir.path()).unwrap();
        assert!(left.events.is_empty());
        k.close();
        j.close();
        assert_eq!(files(dir.path()), 0, "nothing left once all is released");
    }

    #[test]
    fn released_events_leave_no_file_behind() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _) = Journal::open(dir.path()).unwrap();
        let all = events(10);
        append(&mut j, &all[..4]);
        j.rotate().unwrap();
        append(&mut j, &all[4..]);
        assert_eq!(files(dir.path()), 2);
        j.release(3);
        assert_eq!(files(dir.path()), 2, "the first file still holds event 4");
        j.release(4);
        assert_eq!(files(dir.path()), 1);
        assert!(j.bytes > 0);
        j.release(10);
        assert_eq!(j.bytes, 0, "the current file is emptied");
        append(&mut j, &all[..1]);
        drop(j);
        let (j, left) = Journal::open(dir.path()).unwrap();
        assert_eq!(left.events, all[..1], "only what was appended after");
        j.close();
    }
}
