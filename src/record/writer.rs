//! The recording's writer task: appends lines to the file, rotating it at
//! `record.max_bytes`.
//!
//! Its one job is to put queued lines on disk in order. It runs off the
//! request path (blocking writes go to the blocking pool), and it must never
//! let the file grow past `max_bytes`: a line that would is written to a
//! fresh file after renaming the full one to `PATH.1` (replacing an older
//! `.1`), so at most twice `max_bytes` of recordings exist on disk. A line
//! counts as written only once it is whole in the file: a failed write (a
//! full disk) counts the rest of its lines as dropped and cuts a partly
//! written line off again, so the file stays valid JSONL.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::lines::{self, LineBuffer};

/// Lines written per trip to the blocking pool.
const BATCH: usize = 256;
/// Buffered bytes that trigger a write: a few syscalls per batch, and a
/// bounded buffer however large the recorded bodies are.
const FLUSH_AT: usize = 64 * 1024;

/// The file being appended to, and its size.
pub struct Rotating {
    path: PathBuf,
    max_bytes: u64,
    file: File,
    /// Bytes in the file.
    size: u64,
    buffer: LineBuffer,
    tally: Tally,
}

/// Lines written and dropped since the last [`Rotating::take_tally`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub written: u64,
    /// Larger than `max_bytes` on their own, or their write failed.
    pub dropped: u64,
}

impl Rotating {
    /// Opens `path` for appending (created when missing).
    pub fn open(path: &Path, max_bytes: u64) -> std::io::Result<Rotating> {
        let file = append(path)?;
        let size = file.metadata()?.len();
        Ok(Rotating {
            path: path.to_owned(),
            max_bytes,
            file,
            size,
            buffer: LineBuffer::default(),
            tally: Tally::default(),
        })
    }

    /// `PATH.1`, where a full file goes.
    pub fn rotated_path(path: &Path) -> PathBuf {
        let mut name = path.as_os_str().to_owned();
        name.push(".1");
        PathBuf::from(name)
    }

    /// Queues one line (a newline is added); it is counted once
    /// [`flush`](Self::flush) has written it, or dropped.
    pub fn write_line(&mut self, line: &str) {
        let len = line.len() as u64 + 1;
        if len > self.max_bytes {
            self.tally.dropped += 1;
            return;
        }
        if self.size + self.buffer.len() as u64 + len > self.max_bytes {
            self.flush();
            if let Err(error) = self.rotate() {
                tracing::warn!(%error, path = %self.path.display(), "cannot rotate the recording");
                self.tally.dropped += 1;
                return;
            }
        }
        self.buffer.push(line);
        if self.buffer.len() >= FLUSH_AT {
            self.flush();
        }
    }

    /// Writes the queued lines and counts them.
    pub fn flush(&mut self) {
        if self.buffer.is_empty() {
            return;
        }
        let outcome = self.buffer.write_to(&mut self.file);
        self.tally.written += outcome.written;
        self.tally.dropped += outcome.lost;
        if let Some(error) = outcome.error {
            tracing::warn!(%error, path = %self.path.display(), lost = outcome.lost,
                "recording write failed");
            if let Err(error) = lines::cut_torn_tail(&self.file, outcome.torn_bytes) {
                tracing::warn!(%error, path = %self.path.display(), "cannot remove a torn recording line");
            }
        }
        // The file's own size: after a failure, what is left of the batch.
        self.size = self.file.metadata().map_or(self.size, |m| m.len());
    }

    /// What was written and dropped since the last call.
    pub fn take_tally(&mut self) -> Tally {
        std::mem::take(&mut self.tally)
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        std::fs::rename(&self.path, Self::rotated_path(&self.path))?;
        self.file = append(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

fn append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// The task that owns the file.
pub struct RecorderTask {
    pub(super) lines: mpsc::Receiver<String>,
    pub(super) file: Rotating,
    pub(super) written: metrics::Counter,
    pub(super) dropped: metrics::Counter,
}

impl RecorderTask {
    /// Writes lines until shutdown, then what is still queued, and flushes.
    pub async fn run(mut self, shutdown: CancellationToken) {
        loop {
            let mut batch = Vec::new();
            let last = tokio::select! {
                n = self.lines.recv_many(&mut batch, BATCH) => n == 0,
                _ = shutdown.cancelled() => {
                    while let Ok(line) = self.lines.try_recv() {
                        batch.push(line);
                    }
                    true
                }
            };
            let Some(task) = self.write(batch).await else {
                return;
            };
            self = task;
            if last {
                break;
            }
        }
    }

    /// Writes a batch on the blocking pool so a slow disk never stalls a
    /// runtime worker; `None` if the blocking task panicked.
    async fn write(self, batch: Vec<String>) -> Option<RecorderTask> {
        tokio::task::spawn_blocking(move || {
            let mut task = self;
            for line in &batch {
                task.file.write_line(line);
            }
            task.file.flush();
            let tally = task.file.take_tally();
            task.written.increment(tally.written);
            task.dropped.increment(tally.dropped);
            task
        })
        .await
        .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "understudy-record-{name}-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("traffic.jsonl")
    }

    fn lines(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn rotates_to_dot_one_before_exceeding_max_bytes() {
        let path = temp("rotate");
        // Each line is 10 bytes with its newline; 3 fit in 35 bytes.
        let mut file = Rotating::open(&path, 35).unwrap();
        for i in 0..7 {
            file.write_line(&format!("line-{i:04}"));
            file.flush();
            assert!(std::fs::metadata(&path).unwrap().len() <= 35);
        }
        let rotated = Rotating::rotated_path(&path);
        // 0-2 went to the first file, 3-5 to the second, which replaced
        // the first as `.1`; 6 starts the third.
        assert_eq!(lines(&rotated), ["line-0003", "line-0004", "line-0005"]);
        assert_eq!(lines(&path), ["line-0006"]);
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn a_line_larger_than_max_bytes_is_dropped_and_the_file_kept() {
        let path = temp("huge");
        let mut file = Rotating::open(&path, 20).unwrap();
        file.write_line("small");
        file.write_line(&"x".repeat(30));
        file.flush();
        let tally = file.take_tally();
        assert_eq!((tally.written, tally.dropped), (1, 1));
        assert_eq!(lines(&path), ["small"]);
        assert!(!Rotating::rotated_path(&path).exists());
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn appends_to_an_existing_file_and_counts_its_size() {
        let path = temp("append");
        std::fs::write(&path, "old-line1\n").unwrap();
        let mut file = Rotating::open(&path, 25).unwrap();
        file.write_line("new-line1");
        // 10 + 10 + 10 > 25: rotates, keeping both earlier lines in `.1`.
        file.write_line("new-line2");
        file.flush();
        assert_eq!(file.take_tally().written, 2);
        assert_eq!(
            lines(&Rotating::rotated_path(&path)),
            ["old-line1", "new-line1"]
        );
        assert_eq!(lines(&path), ["new-line2"]);
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[tokio::test]
    async fn the_task_writes_queued_lines_and_counts_them() {
        let path = temp("task");
        let metrics = crate::telemetry::Metrics::new();
        let (tx, rx) = mpsc::channel(8);
        let task = RecorderTask {
            lines: rx,
            file: Rotating::open(&path, 1 << 20).unwrap(),
            written: metrics.record[0].clone(),
            dropped: metrics.record[1].clone(),
        };
        tx.send("a".into()).await.unwrap();
        tx.send("b".into()).await.unwrap();
        drop(tx);
        task.run(CancellationToken::new()).await;
        assert_eq!(lines(&path), ["a", "b"]);
        let text = metrics.render();
        assert!(
            text.contains("understudy_record_total{result=\"written\"} 2"),
            "{text}"
        );
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    /// Sends `n` lines of `tag` through a task and returns what it counted.
    async fn run_task(file: Rotating, tag: &str, n: usize) -> (Rotating, u64, u64) {
        let metrics = crate::telemetry::Metrics::new();
        let (tx, rx) = mpsc::channel(n.max(1));
        let task = RecorderTask {
            lines: rx,
            file,
            written: metrics.record[0].clone(),
            dropped: metrics.record[1].clone(),
        };
        for i in 0..n {
            // Not a divisor of the page size: some line is cut by the full disk.
            tx.send(format!("{tag}-{i:05}-{}", "x".repeat(85)))
                .await
                .unwrap();
        }
        drop(tx);
        let task = task.write_all_queued().await;
        let text = metrics.render();
        let count = |result: &str| {
            let series = format!("understudy_record_total{{result=\"{result}\"}}");
            text.lines()
                .find_map(|l| l.strip_prefix(&series)?.trim().parse::<u64>().ok())
                .unwrap()
        };
        (task.file, count("written"), count("dropped"))
    }

    impl RecorderTask {
        /// Runs until the queue is empty and closed; returns the task.
        async fn write_all_queued(mut self) -> RecorderTask {
            loop {
                let mut batch = Vec::new();
                if self.lines.recv_many(&mut batch, BATCH).await == 0 {
                    return self;
                }
                self = self.write(batch).await.unwrap();
            }
        }
    }

    #[tokio::test]
    async fn a_full_disk_counts_exactly_the_lines_in_the_file() {
        let Some(fs) = crate::full_fs::FullFs::mount("record") else {
            // Every write to /dev/full fails: all dropped, none written.
            let file = Rotating::open(Path::new("/dev/full"), 1 << 40).unwrap();
            let (_, written, dropped) = run_task(file, "full", 300).await;
            assert_eq!((written, dropped), (0, 300));
            return;
        };
        let path = fs.path("traffic.jsonl");
        let file = Rotating::open(&path, 1 << 30).unwrap();
        let (file, written, dropped) = run_task(file, "before", 10).await;
        assert_eq!((written, dropped), (10, 0));
        fs.fill();
        let (file, written, dropped) = run_task(file, "full", 300).await;
        assert_eq!(written + dropped, 300);
        assert!(dropped > 0, "the disk was full, yet nothing was dropped");
        let on_disk = lines(&path);
        assert_eq!(on_disk.len() as u64, 10 + written, "counted {written}");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.ends_with('\n'), "a torn line is left at the end");
        let whole = |l: &String| l.ends_with(&"x".repeat(85)) && l.split('-').count() == 3;
        assert!(on_disk.iter().all(whole), "a torn line is left");
        fs.free();
        let (_, written, dropped) = run_task(file, "after", 20).await;
        assert_eq!((written, dropped), (20, 0));
        assert_eq!(lines(&path).len(), on_disk.len() + 20);
    }
}
