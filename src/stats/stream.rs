//! Timing of LLM event streams: time to first token, the gaps between
//! tokens and the decode rate, measured per answer from its bytes and the
//! instants its frames arrived, and kept per backend and role beside the
//! head latency.
//!
//! Measuring is split in two so the client's frames never wait for it: on
//! the path only `(end offset, arrival instant)` of each data frame is
//! noted (and the bytes kept, capped); when the stream has ended, off the
//! path, [`measure`] reads its events with [`crate::sse`] and maps each
//! event's end offset to the frame that completed it ([`arrival`]). An
//! event counts when its dispatching blank line arrived, as a client's
//! `EventSource` would deliver it.
//!
//! * **TTFT**: from the request going out (the instant head latency is
//!   measured from) to the first event that [`crate::sse::carries_output`].
//! * **ITL**: the gaps between consecutive output-carrying events. Events
//!   in one frame arrived together: their gap is zero, as the client saw it.
//! * **Decode rate**: `(completion_tokens - 1) / (last output event - first
//!   output event)`, with `completion_tokens` from the stream's last
//!   `usage` (OpenAI sends it with `stream_options.include_usage`). The
//!   first token is excluded because its time is the TTFT. Streams without
//!   `usage`, with fewer than two tokens or with all output in one instant
//!   give no rate; answers that are not event streams give none of this.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::window::latency_histogram;
use super::{Role, StatsTask};
use crate::split::Backend;
use crate::sse;

/// Largest copy of one event stream kept for timing it. Events past it are
/// not timed (the first token and the gaps before it still are); a
/// completion of this size is far beyond what LLM servers stream.
pub const MAX_TIMED_BYTES: usize = 4 * 1024 * 1024;

/// Decode rates are kept in thousandths of a token per second.
const RATE_SCALE: f64 = 1000.0;

/// What one answer's event stream showed.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamSample {
    /// Time to the first output-carrying event.
    pub ttft: Duration,
    /// Gaps between consecutive output-carrying events.
    pub gaps: Vec<Duration>,
    /// Output tokens per second after the first (see the module doc).
    pub tokens_per_second: Option<f64>,
}

/// The instant the byte before `end` arrived: the arrival of the first
/// frame whose cumulative end offset reaches `end`. `frames` holds
/// `(cumulative end offset, arrival)` in stream order; `None` when `end`
/// lies past them (or is 0).
pub fn arrival(frames: &[(usize, Instant)], end: usize) -> Option<Instant> {
    if end == 0 {
        return None;
    }
    let at = frames.partition_point(|&(frame_end, _)| frame_end < end);
    frames.get(at).map(|&(_, instant)| instant)
}

/// Times one event stream whose request went out at `started`; `None`
/// when no event carried output.
pub fn measure(started: Instant, body: &[u8], frames: &[(usize, Instant)]) -> Option<StreamSample> {
    let mut first: Option<Instant> = None;
    let mut last: Option<Instant> = None;
    let mut gaps = Vec::new();
    let mut completion_tokens = None;
    for event in sse::events(body) {
        if event.data.contains("\"usage\"")
            && let Some(tokens) = usage_tokens(&event.data)
        {
            completion_tokens = Some(tokens);
        }
        if !sse::carries_output(&event.data) {
            continue;
        }
        let Some(at) = arrival(frames, event.end) else {
            break;
        };
        if let Some(previous) = last {
            gaps.push(at.saturating_duration_since(previous));
        }
        first.get_or_insert(at);
        last = Some(at);
    }
    let first = first?;
    let span = last.unwrap_or(first).saturating_duration_since(first);
    let tokens_per_second = completion_tokens
        .filter(|&n| n >= 2 && !span.is_zero())
        .map(|n| (n - 1) as f64 / span.as_secs_f64());
    Some(StreamSample {
        ttft: first.saturating_duration_since(started),
        gaps,
        tokens_per_second,
    })
}

/// `usage.completion_tokens` of an OpenAI chunk, when it says.
fn usage_tokens(data: &str) -> Option<u64> {
    let chunk: serde_json::Value = serde_json::from_str(data).ok()?;
    chunk.get("usage")?.get("completion_tokens")?.as_u64()
}

/// The streams one backend answered in one role, in one window.
#[derive(Debug, Clone)]
pub struct StreamStats {
    /// Streams with at least one output-carrying event.
    pub streams: u64,
    /// Time to first token, in microseconds.
    pub ttft_us: Histogram<u64>,
    /// Inter-token gaps, in microseconds.
    pub itl_us: Histogram<u64>,
    /// Decode rates, in thousandths of a token per second.
    pub rate_milli: Histogram<u64>,
}

impl Default for StreamStats {
    fn default() -> Self {
        Self {
            streams: 0,
            ttft_us: latency_histogram(),
            itl_us: latency_histogram(),
            rate_milli: Histogram::new_with_bounds(1, 1_000_000_000, 2)
                .expect("constant histogram bounds are valid"),
        }
    }
}

impl StreamStats {
    pub fn record(&mut self, sample: &StreamSample) {
        self.streams += 1;
        self.ttft_us.saturating_record(micros(sample.ttft));
        for gap in &sample.gaps {
            self.itl_us.saturating_record(micros(*gap));
        }
        if let Some(rate) = sample.tokens_per_second {
            let milli = (rate * RATE_SCALE).round().max(1.0) as u64;
            self.rate_milli.saturating_record(milli);
        }
    }

    pub fn merge(&mut self, other: &StreamStats) {
        self.streams += other.streams;
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.ttft_us.add(&other.ttft_us);
        let _ = self.itl_us.add(&other.itl_us);
        let _ = self.rate_milli.add(&other.rate_milli);
    }

    /// Adds `other` into `into`, creating it on the first streams seen.
    pub fn merge_into(into: &mut Option<Box<StreamStats>>, other: Option<&StreamStats>) {
        if let Some(other) = other {
            into.get_or_insert_default().merge(other);
        }
    }
}

/// Interpolation-free percentile of a µs histogram, in milliseconds.
fn ms(h: &Histogram<u64>, q: f64) -> Option<f64> {
    (!h.is_empty()).then(|| h.value_at_quantile(q) as f64 / 1000.0)
}

/// The streams of one backend and role as `/status` and validation
/// reports show them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamReport {
    /// Event-stream answers with at least one output-carrying event.
    pub streams: u64,
    pub ttft_p50_ms: Option<f64>,
    pub ttft_p99_ms: Option<f64>,
    pub itl_p50_ms: Option<f64>,
    pub itl_p99_ms: Option<f64>,
    /// Median decode rate over the streams that reported `usage`.
    pub tokens_per_second_p50: Option<f64>,
    /// The slowest streams' rate: 10% of streams decoded slower.
    pub tokens_per_second_p10: Option<f64>,
}

impl StreamReport {
    pub fn of(stats: &StreamStats) -> Self {
        let rate = |q| {
            (!stats.rate_milli.is_empty())
                .then(|| stats.rate_milli.value_at_quantile(q) as f64 / RATE_SCALE)
        };
        Self {
            streams: stats.streams,
            ttft_p50_ms: ms(&stats.ttft_us, 0.50),
            ttft_p99_ms: ms(&stats.ttft_us, 0.99),
            itl_p50_ms: ms(&stats.itl_us, 0.50),
            itl_p99_ms: ms(&stats.itl_us, 0.99),
            tokens_per_second_p50: rate(0.50),
            tokens_per_second_p10: rate(0.10),
        }
    }
}

fn micros(d: Duration) -> u64 {
    d.as_micros().max(1) as u64
}

impl StatsTask {
    /// Counts one timed stream into the metrics and every window.
    pub(super) fn on_stream(&mut self, backend: Backend, role: Role, sample: &StreamSample) {
        let m = &self.metrics.streams;
        let (b, r) = (backend.index(), role.index());
        m.ttft[b][r].record(sample.ttft.as_secs_f64());
        for gap in &sample.gaps {
            m.itl[b][r].record(gap.as_secs_f64());
        }
        if let Some(rate) = sample.tokens_per_second {
            m.tokens_per_second[b][r].record(rate);
        }
        for w in self.windows() {
            let stats = super::role_stats(w, backend, role);
            stats.stream.get_or_insert_default().record(sample);
        }
    }
}

#[cfg(test)]
mod tests;
