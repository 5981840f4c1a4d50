//! The recording's writer task: appends lines to the file, rotating it at
//! `record.max_bytes`.
//!
//! Its one job is to put queued lines on disk in order. It runs off the
//! request path (blocking writes go to the blocking pool), and it must never
//! let the file grow past `max_bytes`: a line that would is written to a
//! fresh file after renaming the full one to `PATH.1` (replacing an older
//! `.1`), so at most twice `max_bytes` of recordings exist on disk.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Lines written per trip to the blocking pool.
const BATCH: usize = 256;

/// The file being appended to, and its size.
pub struct Rotating {
    path: PathBuf,
    max_bytes: u64,
    out: BufWriter<File>,
    size: u64,
}

/// What became of one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    Yes,
    /// Larger than `max_bytes` on its own, or the write failed.
    Dropped,
}

impl Rotating {
    /// Opens `path` for appending (created when missing).
    pub fn open(path: &Path, max_bytes: u64) -> std::io::Result<Rotating> {
        let file = append(path)?;
        let size = file.metadata()?.len();
        Ok(Rotating {
            path: path.to_owned(),
            max_bytes,
            out: BufWriter::new(file),
            size,
        })
    }

    /// `PATH.1`, where a full file goes.
    pub fn rotated_path(path: &Path) -> PathBuf {
        let mut name = path.as_os_str().to_owned();
        name.push(".1");
        PathBuf::from(name)
    }

    /// Appends one line (a newline is added).
    pub fn write_line(&mut self, line: &str) -> Written {
        let len = line.len() as u64 + 1;
        if len > self.max_bytes {
            return Written::Dropped;
        }
        if self.size + len > self.max_bytes
            && let Err(error) = self.rotate()
        {
            tracing::warn!(%error, path = %self.path.display(), "cannot rotate the recording");
            return Written::Dropped;
        }
        let result = self
            .out
            .write_all(line.as_bytes())
            .and_then(|()| self.out.write_all(b"\n"));
        match result {
            Ok(()) => {
                self.size += len;
                Written::Yes
            }
            Err(error) => {
                tracing::warn!(%error, path = %self.path.display(), "recording write failed");
                // Part of the line may be on disk: trust the file's size.
                self.size = std::fs::metadata(&self.path).map_or(self.size, |m| m.len());
                Written::Dropped
            }
        }
    }

    pub fn flush(&mut self) {
        if let Err(error) = self.out.flush() {
            tracing::warn!(%error, path = %self.path.display(), "recording flush failed");
        }
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        self.out.flush()?;
        std::fs::rename(&self.path, Self::rotated_path(&self.path))?;
        self.out = BufWriter::new(append(&self.path)?);
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
                match task.file.write_line(line) {
                    Written::Yes => task.written.increment(1),
                    Written::Dropped => task.dropped.increment(1),
                }
            }
            task.file.flush();
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
            assert_eq!(file.write_line(&format!("line-{i:04}")), Written::Yes);
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
        assert_eq!(file.write_line("small"), Written::Yes);
        assert_eq!(file.write_line(&"x".repeat(30)), Written::Dropped);
        file.flush();
        assert_eq!(lines(&path), ["small"]);
        assert!(!Rotating::rotated_path(&path).exists());
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn appends_to_an_existing_file_and_counts_its_size() {
        let path = temp("append");
        std::fs::write(&path, "old-line1\n").unwrap();
        let mut file = Rotating::open(&path, 25).unwrap();
        assert_eq!(file.write_line("new-line1"), Written::Yes);
        // 10 + 10 + 10 > 25: rotates, keeping both earlier lines in `.1`.
        assert_eq!(file.write_line("new-line2"), Written::Yes);
        file.flush();
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
}
