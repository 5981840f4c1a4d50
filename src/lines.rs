//! Whole lines to a file, with an exact count of the lines that reached it.
//!
//! The access log and the recording write JSON lines in batches. A write
//! that fails halfway (a full disk, a revoked permission) must be counted
//! line by line: the lines before the failure are in the file, the rest are
//! lost, and a line cut in the middle is removed again so the file stays
//! valid JSONL. This module only buffers and writes; it never retries and
//! never decides what a lost line means.

use std::fs::File;
use std::io::{self, Write};

/// Lines waiting to be written, stored back to back.
#[derive(Default)]
pub struct LineBuffer {
    bytes: Vec<u8>,
    /// Where each line (with its newline) ends in `bytes`.
    ends: Vec<usize>,
}

/// What one [`LineBuffer::write_to`] achieved.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Lines now complete in the output.
    pub written: u64,
    /// Lines not (or only partly) written.
    pub lost: u64,
    /// Bytes of a partly written line at the end of the output, to cut off.
    pub torn_bytes: u64,
    pub error: Option<io::Error>,
}

impl LineBuffer {
    /// Adds `line` and a newline.
    pub fn push(&mut self, line: &str) {
        self.bytes.extend_from_slice(line.as_bytes());
        self.bytes.push(b'\n');
        self.ends.push(self.bytes.len());
    }

    /// Bytes buffered.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Writes every buffered line to `out` (stopping at the first error)
    /// and empties the buffer.
    pub fn write_to(&mut self, out: &mut impl Write) -> Outcome {
        let mut done = 0;
        let mut error = None;
        while done < self.bytes.len() {
            match out.write(&self.bytes[done..]) {
                Ok(0) => {
                    error = Some(io::Error::from(io::ErrorKind::WriteZero));
                    break;
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        if error.is_none() {
            error = out.flush().err();
        }
        let complete = self.ends.partition_point(|&end| end <= done);
        let complete_bytes = complete.checked_sub(1).map_or(0, |i| self.ends[i]);
        let outcome = Outcome {
            written: complete as u64,
            lost: (self.ends.len() - complete) as u64,
            torn_bytes: (done - complete_bytes) as u64,
            error,
        };
        self.bytes.clear();
        self.ends.clear();
        outcome
    }
}

/// Removes the last `torn` bytes of `file` (a line cut by a failed write).
/// Shrinking frees space, so this works on a full disk too.
pub fn cut_torn_tail(file: &File, torn: u64) -> io::Result<()> {
    if torn == 0 {
        return Ok(());
    }
    let len = file.metadata()?.len();
    file.set_len(len.saturating_sub(torn))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Accepts `room` bytes, then fails like a full disk.
    struct Disk {
        data: Vec<u8>,
        room: usize,
    }

    impl Write for Disk {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let n = buf.len().min(self.room - self.data.len());
            if n == 0 {
                return Err(io::Error::from_raw_os_error(28));
            }
            self.data.extend_from_slice(&buf[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn three_lines() -> LineBuffer {
        let mut lines = LineBuffer::default();
        for line in ["aaaa", "bbbb", "cccc"] {
            lines.push(line);
        }
        lines
    }

    #[test]
    fn a_write_cut_mid_line_counts_the_whole_lines_before_it() {
        let mut disk = Disk {
            data: Vec::new(),
            room: 7,
        };
        let outcome = three_lines().write_to(&mut disk);
        assert_eq!(
            (outcome.written, outcome.lost, outcome.torn_bytes),
            (1, 2, 2)
        );
        assert!(outcome.error.is_some());
        assert_eq!(disk.data, b"aaaa\nbb");
    }

    #[test]
    fn a_write_ending_on_a_line_boundary_leaves_nothing_torn() {
        let mut disk = Disk {
            data: Vec::new(),
            room: 10,
        };
        let outcome = three_lines().write_to(&mut disk);
        assert_eq!(
            (outcome.written, outcome.lost, outcome.torn_bytes),
            (2, 1, 0)
        );
        let mut roomy = Disk {
            data: Vec::new(),
            room: 100,
        };
        let mut lines = three_lines();
        let outcome = lines.write_to(&mut roomy);
        assert_eq!((outcome.written, outcome.lost), (3, 0));
        assert!(outcome.error.is_none() && lines.is_empty());
    }
}
