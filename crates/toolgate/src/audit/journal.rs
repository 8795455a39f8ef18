//! The journal: where an event is first made to last. A call's answer waits
//! for its event to be copied into a memory-mapped file of this process (which,
//! like SQLite's log under `synchronous = NORMAL`, survives a crash of the
//! process: the kernel writes a dead process's pages of a shared file mapping
//! back like any other); the sinks are filled from memory in large batches
//! afterwards, and a file whose events every sink took is rewound, to be
//! written over, or deleted. A gateway that starts finds the files of
//! processes that ended without that and hands their events to the sinks first
//! (the store keeps each event once: ids are unique).
//!
//! Files are `SSSSSSSSSSSSSSSS-PID-NNNNNN.log` (start time, process, number)
//! in the journal's directory, each locked by the process writing it for as
//! long as it lives. Several gateways may share a directory (`toolgate stdio`
//! started per client beside a served one): a file another process holds
//! locked is its own, never replayed or deleted.
//!
//! A file is a 16-byte header — [`MAGIC`], then the end of its events as a
//! little-endian `u64` — and one JSON event per line after it, its space
//! allocated on disk when it is made (a full disk is an error then, not a
//! fault on a later page; on a copy-on-write filesystem, which allocates
//! again on every write, it may still be one). An append copies the lines,
//! then moves the end: a
//! crash between the two loses a call that was not answered, and what lies
//! beyond the end is never read. A file without the header (an older
//! gateway's plain append-only file) is read line by line.
//!
//! Appending is a copy into memory, no system call: a `write` per event was
//! the audit trail's largest cost on a call's path (docs/performance.md).

use super::Line;
use anyhow::Context as _;
use memmap2::MmapMut;
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufRead as _, Read as _, Seek as _};
use std::path::{Path, PathBuf};

/// A file's size: the next one is started when an append does not fit (an
/// event larger than that gets a file of its size). Under load the files
/// alternate: one taken, the other written over (the journal's spare), so
/// twice this is what the journal keeps in memory.
const SEGMENT_BYTES: usize = 2 * 1024 * 1024;
/// What a journal file starts with.
const MAGIC: &[u8; 8] = b"tgjrnl01";
/// The magic, then the end of the events.
const HEADER: usize = 16;

pub struct Journal {
    dir: PathBuf,
    /// Start time and process id: this process's files' prefix.
    prefix: String,
    number: u64,
    current: Segment,
    /// Files complete, with the sequence number of their last event.
    closed: VecDeque<Closed>,
    /// A file whose events the sinks took, rewound and kept to be the next
    /// one: written over, its pages are in memory already, where a new file's
    /// are allocated and zeroed one fault at a time.
    spare: Option<Segment>,
    /// The sequence number of the last event appended.
    appended: u64,
}

/// A file complete.
struct Closed {
    path: PathBuf,
    /// The sequence number of its last event.
    last: u64,
    /// Kept open: its lock says the file is this process's.
    file: File,
    /// The first of this process's own stays mapped, to be reused.
    map: Option<MmapMut>,
}

/// The file being appended to.
struct Segment {
    path: PathBuf,
    /// Kept open: its lock says the file is this process's.
    file: File,
    map: MmapMut,
    /// Where the next line goes (what the header says).
    end: usize,
}

impl Segment {
    /// A new file of this process's, locked, `size` bytes allocated and
    /// mapped, with its header.
    fn create(dir: &Path, prefix: &str, number: u64, size: usize) -> anyhow::Result<Segment> {
        let path = dir.join(name(prefix, number));
        let made = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(anyhow::Error::from)
            .and_then(|file| {
                // Made here: not left behind half made.
                Segment::prepare(&path, file, size).inspect_err(|_| {
                    let _ = std::fs::remove_file(&path);
                })
            });
        made.with_context(|| format!("cannot create {}", path.display()))
    }

    fn prepare(path: &Path, file: File, size: usize) -> anyhow::Result<Segment> {
        file.try_lock().context("cannot lock it")?;
        allocate(&file, size).context("cannot allocate its space")?;
        // SAFETY: the file is this process's own, locked against every other
        // gateway, and never shortened while mapped.
        let mut map = unsafe { MmapMut::map_mut(&file) }.context("cannot map it")?;
        map[..MAGIC.len()].copy_from_slice(MAGIC);
        let mut segment = Segment {
            path: path.to_owned(),
            file,
            map,
            end: HEADER,
        };
        segment.set_end(HEADER);
        Ok(segment)
    }

    fn set_end(&mut self, end: usize) {
        // The lines are in place before the end says so.
        std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
        self.map[MAGIC.len()..HEADER].copy_from_slice(&(end as u64).to_le_bytes());
        self.end = end;
    }

    fn is_empty(&self) -> bool {
        self.end == HEADER
    }
}

/// This process's file number `number`.
fn name(prefix: &str, number: u64) -> String {
    format!("{prefix}-{number:06}.log")
}

fn remove(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        tracing::warn!(file = %path.display(), error = %e, "cannot delete a finished audit journal file");
    }
}

/// Give `file` `size` bytes of disk space, zeroed.
fn allocate(file: &File, size: usize) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use rustix::fs::{FallocateFlags, fallocate};
        match fallocate(file, FallocateFlags::empty(), 0, size as u64) {
            Ok(()) => return Ok(()),
            // A filesystem without it: written out below.
            Err(rustix::io::Errno::OPNOTSUPP) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let zeros = vec![0u8; 64 * 1024];
    let mut file = file;
    let mut left = size;
    while left > 0 {
        let n = left.min(zeros.len());
        std::io::Write::write_all(&mut file, &zeros[..n])?;
        left -= n;
    }
    Ok(())
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
            read_events(&file, &mut leftover)
                .with_context(|| format!("cannot read {}", path.display()))?;
            leftover.files += 1;
            // Kept locked (so no other starting process takes it too) until
            // its events are in the sinks.
            closed.push_back(Closed {
                path,
                last: leftover.events.len() as u64,
                file,
                map: None,
            });
        }
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_micros();
        let prefix = format!("{started:016x}-{}", std::process::id());
        let current = Segment::create(dir, &prefix, 1, SEGMENT_BYTES)?;
        Ok((
            Journal {
                dir: dir.to_owned(),
                prefix,
                number: 1,
                current,
                closed,
                spare: None,
                appended: leftover.events.len() as u64,
            },
            leftover,
        ))
    }

    /// Append `n` events serialised by [`Line::write`], each followed by a
    /// newline; returns the sequence number of the last. On an error (no file
    /// could be made for them) nothing counts as appended.
    pub fn append_lines(&mut self, lines: &[u8], n: u64) -> anyhow::Result<u64> {
        let start = self.current.end;
        if start + lines.len() > self.current.map.len() {
            self.rotate(lines.len())?;
            return self.append_lines(lines, n);
        }
        let end = start + lines.len();
        self.current.map[start..end].copy_from_slice(lines);
        self.current.set_end(end);
        self.appended += n;
        Ok(self.appended)
    }

    /// Every event up to `durable` is in the sinks: delete the files that hold
    /// only such events (keeping one, rewound, as the spare), and rewind the
    /// current one once it is all such.
    pub fn release(&mut self, durable: u64) {
        while self.closed.front().is_some_and(|c| c.last <= durable) {
            let Some(done) = self.closed.pop_front() else {
                break;
            };
            match done.map {
                Some(map) if self.spare.is_none() && map.len() == SEGMENT_BYTES => {
                    let mut spare = Segment {
                        path: done.path,
                        file: done.file,
                        map,
                        end: HEADER,
                    };
                    // Rewound now: a crash must not hand its events over again.
                    spare.set_end(HEADER);
                    self.spare = Some(spare);
                }
                _ => remove(&done.path),
            }
        }
        if durable >= self.appended && !self.current.is_empty() && self.closed.is_empty() {
            // Its pages are kept, to be written over.
            self.current.set_end(HEADER);
        }
    }

    /// Go on in the next file, with room for `room` bytes of lines at least
    /// (once the current one is full): the spare, renamed to come after the
    /// current one, or a new file.
    fn rotate(&mut self, room: usize) -> anyhow::Result<()> {
        let number = self.number + 1;
        let fits = HEADER + room <= SEGMENT_BYTES;
        let spare = fits
            .then(|| self.spare.take())
            .flatten()
            .and_then(|mut spare| {
                let path = self.dir.join(name(&self.prefix, number));
                match std::fs::rename(&spare.path, &path) {
                    Ok(()) => {
                        spare.path = path;
                        Some(spare)
                    }
                    Err(_) => {
                        remove(&spare.path);
                        None
                    }
                }
            });
        let next = match spare {
            Some(spare) => spare,
            None => Segment::create(
                &self.dir,
                &self.prefix,
                number,
                SEGMENT_BYTES.max(HEADER + room),
            )?,
        };
        self.number = number;
        let old = std::mem::replace(&mut self.current, next);
        if old.is_empty() {
            remove(&old.path);
        } else {
            // Only the first file waiting for the sinks can become the spare:
            // later ones are unmapped (their pages are not held while the
            // sinks are slow).
            let map = self.closed.is_empty().then_some(old.map);
            self.closed.push_back(Closed {
                path: old.path,
                last: self.appended,
                file: old.file,
                map,
            });
        }
        Ok(())
    }

    /// The last sequence number appended.
    pub fn appended(&self) -> u64 {
        self.appended
    }

    /// Everything is in the sinks (at shutdown): no file is left behind.
    pub fn close(mut self) {
        self.release(self.appended);
        if let Some(spare) = self.spare.take() {
            remove(&spare.path);
        }
        if self.closed.is_empty() && self.current.is_empty() {
            let _ = std::fs::remove_file(&self.current.path);
        }
    }
}

/// The events of a journal file another process left.
fn read_events(mut file: &File, leftover: &mut Leftover) -> anyhow::Result<()> {
    let mut header = [0u8; HEADER];
    let n = file.read(&mut header)?;
    let lines: Box<dyn std::io::BufRead> = if n == HEADER && header.starts_with(MAGIC) {
        let end = u64::from_le_bytes(header[MAGIC.len()..].try_into().unwrap_or_default());
        let len = end.saturating_sub(HEADER as u64);
        Box::new(std::io::BufReader::new(file.take(len)))
    } else {
        // A plain append-only file.
        file.rewind()?;
        Box::new(std::io::BufReader::new(file))
    };
    for line in lines.split(b'\n') {
        let line = line?;
        // Space allocated and never written (a crash while a file was made).
        if line.iter().all(|b| *b == 0) {
            continue;
        }
        match Line::parse(&line) {
            Some(e) => leftover.events.push(e),
            None => leftover.unreadable += 1,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{Event, EventKind};
    use std::io::Write as _;

    fn events(n: usize) -> Vec<Line> {
        (0..n)
            .map(|i| {
                let mut e = Event::new(EventKind::Request);
                e.arguments = Some(serde_json::json!({ "i": i }));
                Line::of(&e)
            })
            .collect()
    }

    fn text(events: &[Line]) -> Vec<u8> {
        let mut buf = Vec::new();
        for e in events {
            buf.extend_from_slice(e.as_str().as_bytes());
            buf.push(b'\n');
        }
        buf
    }

    /// Append `events` as the gateway does, at once.
    fn append(j: &mut Journal, events: &[Line]) -> u64 {
        j.append_lines(&text(events), events.len() as u64).unwrap()
    }

    /// Append `line` until the current file has no room for another; how
    /// many went in.
    fn fill(j: &mut Journal, line: &[u8]) -> u64 {
        let mut n = 0;
        while j.current.end + line.len() <= j.current.map.len() {
            j.append_lines(line, 1).unwrap();
            n += 1;
        }
        n
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
        // The writer dies (its lock goes with it) while copying the next
        // event: the bytes are there, the end does not count them.
        let end = j.current.end;
        j.current.map[end..end + 10].copy_from_slice(b"{\"id\":\"tor");
        drop(j);
        let (j, left) = Journal::open(dir.path()).unwrap();
        assert_eq!(left.events, written);
        assert_eq!(left.unreadable, 0, "what lies beyond the end is not read");
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
        j.rotate(0).unwrap();
        append(&mut j, &all[4..]);
        assert_eq!(files(dir.path()), 2);
        j.release(3);
        assert_eq!(j.closed.len(), 1, "the first file still holds event 4");
        assert!(j.spare.is_none());
        j.release(4);
        assert!(j.closed.is_empty());
        assert!(j.spare.is_some(), "kept, rewound, to be the next file");
        assert_eq!(files(dir.path()), 2);
        assert!(!j.current.is_empty());
        j.release(10);
        assert!(j.current.is_empty(), "the current file is rewound");
        // Written over from the start: only what came after counts, and
        // nothing of the spare's.
        append(&mut j, &all[..1]);
        drop(j);
        let (j, left) = Journal::open(dir.path()).unwrap();
        assert_eq!(left.events, all[..1], "only what was appended after");
        assert_eq!(left.unreadable, 0);
        assert_eq!(left.files, 2);
        j.close();
        assert_eq!(files(dir.path()), 0);
    }

    #[test]
    fn under_load_two_files_take_turns() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _) = Journal::open(dir.path()).unwrap();
        let line = text(&events(1));
        let mut names = std::collections::BTreeSet::new();
        let mut inodes = std::collections::BTreeSet::new();
        // Each file filled, then taken by the sinks while the next fills.
        for _ in 0..6 {
            fill(&mut j, &line);
            names.insert(j.current.path.clone());
            #[cfg(unix)]
            inodes.insert(std::os::unix::fs::MetadataExt::ino(
                &j.current.file.metadata().unwrap(),
            ));
            j.append_lines(&line, 1).unwrap();
            j.release(j.appended() - 1);
            assert!(files(dir.path()) <= 2, "a third file was made");
        }
        assert_eq!(j.number, 7, "each file took the next number");
        assert_eq!(names.len(), 6, "{names:?}");
        #[cfg(unix)]
        assert_eq!(inodes.len(), 2, "the same two files, renamed");
        // A crash now hands over the current file's one event only: nothing
        // of the files the sinks took, the spare's included.
        drop(j);
        let (j, left) = Journal::open(dir.path()).unwrap();
        assert_eq!(left.events.len(), 1);
        assert_eq!(left.unreadable, 0);
        j.close();
        assert_eq!(files(dir.path()), 0);
    }

    #[test]
    fn a_full_file_continues_in_the_next_and_a_huge_event_gets_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _) = Journal::open(dir.path()).unwrap();
        let line = text(&events(1));
        let fit = fill(&mut j, &line);
        assert_eq!(fit, ((SEGMENT_BYTES - HEADER) / line.len()) as u64);
        assert_eq!(j.appended(), fit);
        assert_eq!(files(dir.path()), 1);
        j.append_lines(&line, 1).unwrap();
        assert_eq!(files(dir.path()), 2, "the next event starts a second file");
        let mut huge = Event::new(EventKind::Request);
        huge.arguments = Some(serde_json::json!({ "blob": "x".repeat(SEGMENT_BYTES) }));
        let huge = vec![Line::of(&huge)];
        append(&mut j, &huge);
        assert_eq!(files(dir.path()), 3);
        let appended = j.appended();
        drop(j);
        let (j, left) = Journal::open(dir.path()).unwrap();
        assert_eq!(left.events.len() as u64, appended);
        assert_eq!(left.events.last(), huge.last());
        assert_eq!(left.files, 3);
        j.close();
        assert_eq!(files(dir.path()), 0);
    }

    #[test]
    fn a_file_that_cannot_be_made_appends_nothing_and_the_next_try_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let journal = dir.path().join("journal");
        let (mut j, _) = Journal::open(&journal).unwrap();
        let line = text(&events(1));
        let fit = fill(&mut j, &line);
        // The next file cannot be made (its directory is gone).
        std::fs::remove_dir_all(&journal).unwrap();
        let err = j.append_lines(&line, 1).unwrap_err();
        assert!(format!("{err:#}").contains("cannot create"), "{err:#}");
        assert_eq!(j.appended(), fit, "nothing counts as appended");
        std::fs::create_dir(&journal).unwrap();
        assert_eq!(j.append_lines(&line, 1).unwrap(), fit + 1);
        assert_eq!(files(&journal), 1, "the next file, made now");
        j.close();
    }

    #[test]
    fn a_plain_file_of_lines_is_read_too() {
        // What gateways that wrote a line per `write` left, torn end and all.
        let dir = tempfile::tempdir().unwrap();
        let written = events(3);
        let mut plain = text(&written);
        plain.extend_from_slice(b"{\"id\":\"tor");
        std::fs::File::create(dir.path().join("0000000000000001-1-000001.log"))
            .unwrap()
            .write_all(&plain)
            .unwrap();
        // A file made but never written (its space allocated).
        std::fs::write(
            dir.path().join("0000000000000002-2-000001.log"),
            [0u8; 4096],
        )
        .unwrap();
        let (j, left) = Journal::open(dir.path()).unwrap();
        assert_eq!(left.events, written);
        assert_eq!(left.unreadable, 1);
        assert_eq!(left.files, 2);
        j.close();
        assert_eq!(files(dir.path()), 0);
    }
}
