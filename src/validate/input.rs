//! Reads the `--requests` file line by line into requests to replay: the
//! recording format (`record::format`), or with `--path` bare JSON request
//! bodies.
//!
//! Its one job is turning lines into requests. A line that cannot be used
//! is reported on stderr with its number and skipped (counted); it never
//! stops the run. It must never hold the whole file in memory: recordings
//! can be a gigabyte.

use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderValue, Method};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::record::format::{Record, Replayable};

/// How lines are read.
#[derive(Debug, Clone)]
pub enum Mode {
    /// Each line is a recorded request.
    Recorded,
    /// Each line is a JSON request body, POSTed to this path.
    Bodies(PathAndQuery),
}

/// One request to replay, with the line it came from (1-based).
#[derive(Debug, Clone)]
pub struct Numbered {
    pub line: usize,
    pub request: Replayable,
}

/// The open `--requests` file.
pub struct Input {
    reader: BufReader<tokio::fs::File>,
    mode: Mode,
    line: usize,
    /// Lines that could not be used.
    pub skipped: u64,
}

impl Input {
    /// Opens the file; the error names it.
    pub async fn open(path: &std::path::Path, mode: Mode) -> Result<Input, String> {
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|e| format!("cannot read --requests {}: {e}", path.display()))?;
        Ok(Input {
            reader: BufReader::new(file),
            mode,
            line: 0,
            skipped: 0,
        })
    }

    /// The next usable request; `Ok(None)` at the end of the file. Broken
    /// lines are reported and skipped; only an I/O error ends the reading.
    pub async fn next(&mut self) -> Result<Option<Numbered>, String> {
        let mut buf = Vec::new();
        loop {
            buf.clear();
            let n =
                self.reader.read_until(b'\n', &mut buf).await.map_err(|e| {
                    format!("reading --requests failed after line {}: {e}", self.line)
                })?;
            if n == 0 {
                return Ok(None);
            }
            self.line += 1;
            let text = trim(&buf);
            // Blank lines (a trailing newline, a separator) carry nothing.
            if text.is_empty() {
                continue;
            }
            match parse(text, &self.mode) {
                Ok(request) => {
                    return Ok(Some(Numbered {
                        line: self.line,
                        request,
                    }));
                }
                Err(reason) => {
                    self.skipped += 1;
                    eprintln!("line {}: skipped: {reason}", self.line);
                }
            }
        }
    }
}

fn trim(line: &[u8]) -> &[u8] {
    let start = line
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(line.len());
    let end = line
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    &line[start..end]
}

fn parse(text: &[u8], mode: &Mode) -> Result<Replayable, String> {
    match mode {
        Mode::Recorded => Record::parse_line(text)?.replayable(),
        Mode::Bodies(path) => {
            serde_json::from_slice::<serde_json::Value>(text)
                .map_err(|e| format!("not a JSON request body: {e}"))?;
            let mut headers = HeaderMap::new();
            headers.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            // Sent as written: the bytes are exactly the line.
            Ok(Replayable {
                method: Method::POST,
                path_and_query: path.clone(),
                headers,
                body: Bytes::copy_from_slice(text),
                request_id: None,
            })
        }
    }
}

/// Counts the lines of a file (for the progress line), off the runtime.
pub async fn count_lines(path: &std::path::Path) -> Option<u64> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut file = std::fs::File::open(path).ok()?;
        let mut buf = vec![0u8; 1 << 16];
        let (mut lines, mut last) = (0u64, b'\n');
        loop {
            let n = file.read(&mut buf).ok()?;
            if n == 0 {
                break;
            }
            lines += buf[..n].iter().filter(|b| **b == b'\n').count() as u64;
            last = buf[n - 1];
        }
        Some(lines + u64::from(last != b'\n'))
    })
    .await
    .ok()
    .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read_all(text: &[u8], mode: Mode) -> (Vec<usize>, u64) {
        let path = std::env::temp_dir().join(format!(
            "understudy-input-{}-{}.jsonl",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::write(&path, text).unwrap();
        let mut input = Input::open(&path, mode).await.unwrap();
        let mut lines = Vec::new();
        while let Some(n) = input.next().await.unwrap() {
            lines.push(n.line);
        }
        std::fs::remove_file(&path).unwrap();
        (lines, input.skipped)
    }

    #[tokio::test]
    async fn broken_lines_are_skipped_with_their_numbers_and_blank_ones_ignored() {
        let text = b"{\"method\":\"POST\",\"path\":\"/a\",\"body\":{}}\n\
            {broken\n\
            \n\
            \xff\xfe\n\
            {\"method\":\"GET\",\"path\":\"/b\"}\n";
        let (lines, skipped) = read_all(text, Mode::Recorded).await;
        assert_eq!(lines, [1, 5]);
        assert_eq!(skipped, 2);
    }

    #[tokio::test]
    async fn bare_bodies_are_posted_as_json_to_the_path() {
        let path = PathAndQuery::from_static("/v2/models/m/infer");
        let text = b"{\"inputs\":[]}\nnot json\n[1,2]";
        let (lines, skipped) = read_all(text, Mode::Bodies(path.clone())).await;
        assert_eq!((lines, skipped), (vec![1, 3], 1));
        let file = std::env::temp_dir().join(format!("understudy-count-{}", std::process::id()));
        std::fs::write(&file, text).unwrap();
        assert_eq!(count_lines(&file).await, Some(3), "no trailing newline");
        std::fs::write(&file, b"a\n\nb\n").unwrap();
        assert_eq!(count_lines(&file).await, Some(3));
        std::fs::remove_file(&file).unwrap();
        let request = parse(b"{\"inputs\": []}", &Mode::Bodies(path)).unwrap();
        assert_eq!(request.method, Method::POST);
        assert_eq!(request.path_and_query.as_str(), "/v2/models/m/infer");
        assert_eq!(request.headers["content-type"], "application/json");
        assert_eq!(&request.body[..], b"{\"inputs\": []}");
    }
}
