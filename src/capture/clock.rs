//! [`FrameClock`]: the arrival instant of each data frame of a body, noted
//! as the frame passes (one clock read and one small push per frame), with
//! a capped copy of the bytes, handed to a sink when the body ends or is
//! dropped. What the instants mean is the sink's business.

use bytes::{Bytes, BytesMut};
use tokio::time::Instant;

/// What a [`FrameClock`] saw of one body.
#[derive(Debug, Default)]
pub struct Arrivals {
    /// The body's bytes, up to the clock's cap.
    pub body: Bytes,
    /// `(end offset, arrival)` of each data frame kept in `body`: the
    /// offset just past the frame's last byte, and when the frame passed.
    pub frames: Vec<(usize, Instant)>,
}

type Sink = Box<dyn FnOnce(Arrivals) + Send>;

/// Notes when a body's data frames pass. The first frame that would take
/// the copy past the cap stops the noting; what was noted before stays.
pub struct FrameClock {
    seen: Arrivals,
    body: BytesMut,
    cap: usize,
    full: bool,
    sink: Option<Sink>,
}

impl FrameClock {
    /// A clock whose findings go to `sink` once, when the body ends (or
    /// the clock is dropped with it).
    pub fn new(cap: usize, sink: impl FnOnce(Arrivals) + Send + 'static) -> Self {
        Self {
            seen: Arrivals::default(),
            body: BytesMut::new(),
            cap,
            full: false,
            sink: Some(Box::new(sink)),
        }
    }

    /// Notes a data frame passing now.
    pub fn observe(&mut self, data: &[u8]) {
        if self.full || data.is_empty() {
            return;
        }
        if self.body.len() + data.len() > self.cap {
            self.full = true;
            return;
        }
        let now = Instant::now();
        self.body.extend_from_slice(data);
        self.seen.frames.push((self.body.len(), now));
    }
}

impl Drop for FrameClock {
    fn drop(&mut self) {
        if let Some(sink) = self.sink.take() {
            let mut seen = std::mem::take(&mut self.seen);
            seen.body = std::mem::take(&mut self.body).freeze();
            sink(seen);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    fn clock(cap: usize) -> (FrameClock, Arc<Mutex<Option<Arrivals>>>) {
        let seen = Arc::new(Mutex::new(None));
        let into = seen.clone();
        let clock = FrameClock::new(cap, move |a| *into.lock().unwrap() = Some(a));
        (clock, seen)
    }

    #[test]
    fn frames_are_noted_with_their_end_offsets_and_handed_on_when_dropped() {
        let (mut c, seen) = clock(100);
        let before = Instant::now();
        c.observe(b"data: a\n");
        c.observe(b"");
        c.observe(b"\n");
        assert!(seen.lock().unwrap().is_none(), "handed on before the end");
        drop(c);
        let a = seen.lock().unwrap().take().expect("handed on once dropped");
        assert_eq!(&a.body[..], b"data: a\n\n");
        let ends: Vec<usize> = a.frames.iter().map(|f| f.0).collect();
        assert_eq!(ends, [8, 9]);
        assert!(a.frames.iter().all(|f| f.1 >= before));
        assert!(a.frames[0].1 <= a.frames[1].1);
    }

    #[test]
    fn past_the_cap_noting_stops_and_what_was_noted_stays() {
        let (mut c, seen) = clock(10);
        c.observe(b"12345678");
        c.observe(b"too much");
        c.observe(b"9");
        drop(c);
        let a = seen.lock().unwrap().take().expect("handed on");
        assert_eq!(&a.body[..], b"12345678");
        assert_eq!(a.frames.len(), 1);
    }
}
