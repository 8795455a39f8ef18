//! JSON Lines files rotated by size: `FILE` is written, and once it would grow
//! past `max_bytes` it becomes `FILE.1` (older ones shift to `.2` … `.keep`;
//! the oldest is deleted). Every batch is written with one `write` and flushed
//! to the operating system before it is acknowledged.

use super::{Line, Sink};
use anyhow::Context as _;
use futures::future::BoxFuture;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};

pub struct Jsonl {
    path: PathBuf,
    max_bytes: u64,
    keep: usize,
    file: File,
    size: u64,
}

impl Jsonl {
    pub fn open(path: PathBuf, max_bytes: u64, keep: usize) -> anyhow::Result<Jsonl> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let file = append(&path)?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(Jsonl {
            path,
            max_bytes: max_bytes.max(1),
            keep,
            file,
            size,
        })
    }

    fn rotate(&mut self) -> anyhow::Result<()> {
        let numbered = |n: usize| -> PathBuf {
            let mut p = self.path.clone().into_os_string();
            p.push(format!(".{n}"));
            p.into()
        };
        if self.keep == 0 {
            let _ = std::fs::remove_file(&self.path);
        } else {
            let _ = std::fs::remove_file(numbered(self.keep));
            for n in (1..self.keep).rev() {
                let _ = std::fs::rename(numbered(n), numbered(n + 1));
            }
            std::fs::rename(&self.path, numbered(1))
                .with_context(|| format!("cannot rotate {}", self.path.display()))?;
        }
        self.file = append(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

fn append(path: &Path) -> anyhow::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))
}

impl Sink for Jsonl {
    fn name(&self) -> &'static str {
        "jsonl"
    }

    fn write<'a>(&'a mut self, events: &'a [Line]) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let text = super::json_lines(events);
            if self.size > 0 && self.size + text.len() as u64 > self.max_bytes {
                self.rotate()?;
            }
            // A local file write of a batch is short; doing it in place keeps the
            // order of batches without a second queue.
            tokio::task::block_in_place(|| self.file.write_all(&text))
                .with_context(|| format!("cannot write {}", self.path.display()))?;
            self.size += text.len() as u64;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{Event, EventKind};

    #[tokio::test(flavor = "multi_thread")]
    async fn files_rotate_and_keep_only_so_many() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit/audit.jsonl");
        let mut sink = Jsonl::open(path.clone(), 600, 2).unwrap();
        let mut ids = Vec::new();
        for _ in 0..20 {
            let e = Event::new(EventKind::Request);
            ids.push(e.id.clone());
            sink.write(&[Line::of(&e)]).await.unwrap();
        }
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        let current = read(&path);
        let one = read(&dir.path().join("audit/audit.jsonl.1"));
        let two = read(&dir.path().join("audit/audit.jsonl.2"));
        assert!(!dir.path().join("audit/audit.jsonl.3").exists());
        assert!(current.len() <= 600 && !one.is_empty() && !two.is_empty());
        // The newest events are in the current file, each a whole JSON line.
        let last: Event = serde_json::from_str(current.lines().last().unwrap()).unwrap();
        assert_eq!(&last.id, ids.last().unwrap());
        for line in one.lines().chain(two.lines()) {
            serde_json::from_str::<Event>(line).unwrap();
        }
    }
}
