//! Times the serving backend's event-stream answers (time to first token,
//! inter-token latency, decode rate) without holding the client's frames:
//! the tee only notes when each frame passed, and the stream is read and
//! timed in a task of its own once it has ended.

use http::HeaderMap;
use tokio::time::Instant;

use crate::capture::{Arrivals, FrameClock};
use crate::split::Backend;
use crate::sse;
use crate::stats::stream::{self, MAX_TIMED_BYTES};
use crate::stats::{Event, Role, StatsHandle};

/// A clock for the serving answer with `headers`, when it is an event
/// stream; `started` is the instant its head latency is measured from.
pub(super) fn clock(
    headers: &HeaderMap,
    stats: &StatsHandle,
    backend: Backend,
    started: Instant,
) -> Option<FrameClock> {
    let content_type = headers.get(http::header::CONTENT_TYPE)?;
    if !sse::is_event_stream(content_type.as_bytes()) {
        return None;
    }
    let stats = stats.clone();
    Some(FrameClock::new(MAX_TIMED_BYTES, move |seen: Arrivals| {
        // Reading the events parses each one's JSON: never on the frame's
        // way to the client. Outside a runtime (a body dropped at shutdown)
        // the stream goes untimed.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Some(sample) = stream::measure(started, &seen.body, &seen.frames) {
                    stats.record(Event::Stream {
                        backend,
                        role: Role::Serve,
                        sample: Box::new(sample),
                    });
                }
            });
        }
    }))
}
