//! Capped copies of the bodies that stream through the proxy, and how a
//! copy reaches whoever needs it (a mirror, the recorder, or both).
//!
//! [`TeeBody`] passes every frame on as it arrives (nothing is held back
//! from the peer) and, when capturing, keeps the data frames until the cap;
//! the finished copy is handed over once, through a oneshot, when the
//! stream ends. Past the cap the copy is dropped at once and
//! [`Captured::Overflow`] is sent, so a 100 MB upload costs no more memory
//! than a small one. A body whose source errors sends
//! [`Captured::Broken`]; one dropped before its end sends nothing: the
//! receiver sees the channel closed. [`share`] gives one copy to two
//! receivers. A [`FrameClock`] may ride along to note when each frame
//! passed (event-stream timing).
//!
//! A copy never changes what the peer receives, and it never waits: this
//! module knows nothing of who reads the copy, and imports nothing of the
//! proxy, the mirror or the recorder (only the shadow's byte [`budget`]).
//!
//! [`budget`]: crate::budget

mod clock;
mod tee;
#[cfg(test)]
pub(crate) mod tests;

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::sync::oneshot;

use crate::budget::Reservation;

pub use clock::{Arrivals, FrameClock};
pub use tee::TeeBody;

/// The copy of a body, once the stream has ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Captured {
    Complete {
        body: Bytes,
        /// Trailers, when the body ended with them (gRPC status lives here).
        trailers: Option<http::HeaderMap>,
    },
    /// The body was larger than the cap; no copy was kept.
    Overflow,
    /// The body's source failed before its end (the peer broke off
    /// mid-body): the copy is incomplete and was dropped.
    Broken,
    /// The copy did not fit the shadow's byte budget and was dropped.
    OverBudget,
}

/// Collects data frames up to a cap.
struct Capture {
    /// A copy, never a slice: a chunk is a slice of its connection's whole
    /// read buffer (8 KiB or more), and a mirror keeps the copy until its
    /// comparison — 50 ms or more beside a slow candidate. A slice would pin
    /// that buffer for all that time and make the connection allocate a new
    /// one (massif, 512 mirrors in flight: ~16 KiB pinned per mirror, the
    /// request's and the response's). Copied as the chunks pass, so the
    /// usual one-chunk body costs one allocation of its own size.
    body: BytesMut,
    /// The body's declared length (capped), reserved at the first chunk so
    /// a body sent in many chunks still takes one allocation of its size,
    /// not up to twice that by doubling.
    expected: usize,
    trailers: Option<http::HeaderMap>,
    limit: usize,
    /// The mirror's share of the shadow's byte budget, when the copy is
    /// for a mirror, and how much of it this copy has taken.
    budget: Option<(Arc<Reservation>, usize)>,
    done: oneshot::Sender<Captured>,
}

impl Capture {
    /// A capture of a body of `declared` bytes (0 when unknown), with the
    /// receiver its copy goes to. `None` when the declared length alone
    /// does not fit the budget (the receiver is then told so).
    fn start(
        declared: u64,
        limit: usize,
        reservation: Option<Arc<Reservation>>,
    ) -> (Option<Self>, oneshot::Receiver<Captured>) {
        let (done, receiver) = oneshot::channel();
        let expected = usize::try_from(declared).unwrap_or(usize::MAX);
        let mut capture = Capture {
            body: BytesMut::new(),
            // Past the cap nothing is kept, so nothing is reserved either.
            expected: if expected > limit { 0 } else { expected },
            trailers: None,
            limit,
            budget: reservation.map(|r| (r, 0)),
            done,
        };
        if capture.account() {
            (Some(capture), receiver)
        } else {
            capture.give_up(Captured::OverBudget);
            (None, receiver)
        }
    }

    /// Adds a chunk; returns `None` (after reporting why) once the body no
    /// longer fits the cap or the budget, or nobody waits for the copy.
    fn push(self, chunk: &Bytes) -> Option<Self> {
        let mut this = self;
        if this.done.is_closed() {
            // The mirror gave up (its other side broke or did not fit):
            // copying on would only hold bytes nobody reads.
            return None;
        }
        if this.body.len() + chunk.len() > this.limit {
            this.give_up(Captured::Overflow);
            return None;
        }
        if this.body.capacity() == 0 {
            this.body.reserve(this.expected.max(chunk.len()));
        } else {
            this.body.reserve(chunk.len());
        }
        if !this.account() {
            this.give_up(Captured::OverBudget);
            return None;
        }
        this.body.extend_from_slice(chunk);
        Some(this)
    }

    /// Takes budget for the buffer's capacity: what it really holds, not
    /// just its length. `false` when the budget cannot take it.
    fn account(&mut self) -> bool {
        let capacity = self.body.capacity().max(self.expected);
        match &mut self.budget {
            Some((reservation, taken)) if capacity > *taken => {
                if !reservation.grow(capacity - *taken) {
                    return false;
                }
                *taken = capacity;
                true
            }
            _ => true,
        }
    }

    /// Drops the copy and tells the receiver why.
    fn give_up(self, why: Captured) {
        let _ = self.done.send(why);
    }

    fn finish(self) {
        let _ = self.done.send(Captured::Complete {
            body: self.body.freeze(),
            trailers: self.trailers,
        });
    }
}

/// Gives a captured copy to a second receiver too, when `also` is set: the
/// mirror and the recorder each need the same body. Costs one small task,
/// only for requests that are both mirrored and recorded.
pub fn share(
    copy: oneshot::Receiver<Captured>,
    also: bool,
) -> (
    oneshot::Receiver<Captured>,
    Option<oneshot::Receiver<Captured>>,
) {
    if !also {
        return (copy, None);
    }
    let (first_tx, first) = oneshot::channel();
    let (second_tx, second) = oneshot::channel();
    tokio::spawn(async move {
        // A copy that never completes closes both receivers, as it would
        // have closed the one.
        if let Ok(captured) = copy.await {
            let _ = first_tx.send(captured.clone());
            let _ = second_tx.send(captured);
        }
    });
    (first, Some(second))
}
