//! The shadow's byte budget (`shadow.max_buffered_bytes`): one counter of
//! the bytes that mirrors in flight hold — the captured request and
//! serving-response copies and the other backend's answer — so that memory
//! with mirroring on stays within a known distance of memory without it,
//! whatever the payload size or the candidate's speed.
//!
//! Each mirror takes one [`Reservation`], shared by everything that holds
//! its bytes, grows it as bytes arrive (or up front when a length is
//! declared) and gives it all back when the last holder lets go. A growth
//! that would pass the budget is refused: the holder then stops copying and
//! the mirror is given up, never the client's request. It must never block
//! and never take a lock: it is called for every captured chunk.
//!
//! A mirror is admitted only when its bytes will fit, judged before it
//! starts: it reserves, up front, what a recent mirror held at its end
//! (its answers included), and its copies draw on that before taking more.
//! Without that, a burst of requests would start a mirror each (a request
//! copy costs next to nothing), send them all to the other backend, and
//! find the budget gone only when the answers arrived, after the other
//! backend had done the work. Before any mirror has ended, a mirror is
//! admitted while half the budget is free.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Bytes held by all mirrors, against a limit that a reload may change.
#[derive(Debug)]
pub struct ByteBudget {
    used: AtomicUsize,
    limit: AtomicUsize,
    /// What recent mirrors held at their end: the largest, decaying by a
    /// sixteenth at each mirror that ends, so it follows the answers'
    /// size up at once and down over a few dozen mirrors.
    typical: AtomicUsize,
}

impl ByteBudget {
    pub fn new(limit: usize) -> Arc<ByteBudget> {
        Arc::new(ByteBudget {
            used: AtomicUsize::new(0),
            limit: AtomicUsize::new(limit),
            typical: AtomicUsize::new(0),
        })
    }

    /// Applies a reloaded limit; bytes already held stay held, and new ones
    /// are refused until the total is back under the new limit.
    pub fn set_limit(&self, limit: usize) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// Bytes held (or reserved ahead for mirrors running) right now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// What a mirror is expected to hold: what recent ones held at their
    /// end; 0 before any mirror has ended.
    pub fn typical(&self) -> usize {
        self.typical.load(Ordering::Relaxed)
    }

    /// Whether mirrors hold half the budget or more: with no estimate of a
    /// mirror's size yet, new mirrors are then not started, so the half
    /// left is for the answers of the ones already running.
    pub fn half_spent(&self) -> bool {
        self.used() >= self.limit() / 2
    }

    /// A reservation for a new mirror, with what a mirror is expected to
    /// hold reserved ahead; `None` when that does not fit, so the mirror is
    /// not started.
    pub fn admit(self: &Arc<Self>) -> Option<Arc<Reservation>> {
        let expected = self.typical();
        if expected == 0 {
            return (!self.half_spent()).then(|| self.reservation());
        }
        self.take(expected).then(|| self.holding_ahead(expected))
    }

    /// A new, empty reservation on this budget for one mirror.
    pub fn reservation(self: &Arc<Self>) -> Arc<Reservation> {
        self.holding_ahead(0)
    }

    /// A reservation of `ahead` bytes already taken from the budget.
    fn holding_ahead(self: &Arc<Self>, ahead: usize) -> Arc<Reservation> {
        Arc::new(Reservation {
            budget: self.clone(),
            held: AtomicUsize::new(ahead),
            ahead: AtomicUsize::new(ahead),
        })
    }

    fn take(&self, bytes: usize) -> bool {
        let limit = self.limit();
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|total| *total <= limit)
            })
            .is_ok()
    }

    fn give_back(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// Learns from a mirror that ended holding `bytes`.
    fn learn(&self, bytes: usize) {
        let _ = self
            .typical
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |typical| {
                Some(bytes.max(typical - typical / 16))
            });
    }
}

/// The bytes one mirror holds. Shared (in an `Arc`) by the request copy,
/// the serving-response copy and the shadow exchange; released when the
/// last of them is dropped, which is when the mirror's bytes are gone.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<ByteBudget>,
    /// Taken from the budget, `ahead` included.
    held: AtomicUsize,
    /// Reserved at admission and not yet drawn on by a copy.
    ahead: AtomicUsize,
}

impl Reservation {
    /// Reserves `bytes` more, drawing first on what was reserved ahead;
    /// `false` (and nothing reserved) when the budget cannot take the rest.
    pub fn grow(&self, bytes: usize) -> bool {
        if bytes == 0 {
            return true;
        }
        let before = self
            .ahead
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |ahead| {
                Some(ahead - ahead.min(bytes))
            })
            .unwrap_or(0);
        let drawn = before.min(bytes);
        let rest = bytes - drawn;
        if rest > 0 {
            if !self.budget.take(rest) {
                self.ahead.fetch_add(drawn, Ordering::AcqRel);
                return false;
            }
            self.held.fetch_add(rest, Ordering::AcqRel);
        }
        true
    }

    /// Bytes this reservation holds, what was reserved ahead included.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Acquire)
    }

    /// Bytes the mirror's copies hold.
    fn drawn(&self) -> usize {
        self.held()
            .saturating_sub(self.ahead.load(Ordering::Acquire))
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let drawn = self.drawn();
        if drawn > 0 {
            self.budget.learn(drawn);
        }
        self.budget.give_back(*self.held.get_mut());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_past_the_limit_is_refused_and_reserves_nothing() {
        let budget = ByteBudget::new(100);
        let a = budget.reservation();
        assert!(a.grow(60));
        let b = budget.reservation();
        assert!(!b.grow(41));
        assert_eq!(b.held(), 0);
        assert!(b.grow(40));
        assert_eq!(budget.used(), 100);
    }

    #[test]
    fn dropping_the_last_holder_gives_every_byte_back() {
        let budget = ByteBudget::new(100);
        let shared = budget.reservation();
        let holder = shared.clone();
        assert!(shared.grow(30));
        assert!(holder.grow(50));
        drop(shared);
        assert_eq!(budget.used(), 80, "one holder still has the mirror's bytes");
        drop(holder);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn a_mirror_is_admitted_with_what_recent_ones_held_reserved_ahead() {
        let budget = ByteBudget::new(1000);
        // No mirror has ended yet: admitted while half the budget is free.
        let first = budget.admit().expect("an empty budget admits");
        assert_eq!(budget.used(), 0);
        assert!(first.grow(300));
        drop(first);
        assert_eq!(budget.typical(), 300);
        assert_eq!(budget.used(), 0);

        let a = budget.admit().expect("300 fits");
        assert_eq!(budget.used(), 300, "reserved before a byte is copied");
        let b = budget.admit().expect("600 fits");
        let c = budget.admit().expect("900 fits");
        assert!(budget.admit().is_none(), "a fourth mirror would not fit");
        // Copies draw on what was reserved ahead first.
        assert!(a.grow(200));
        assert!(a.grow(100));
        assert_eq!(budget.used(), 900);
        assert!(a.grow(100), "the last 100 of the budget");
        assert!(!b.grow(400), "past the limit even with 300 ahead");
        assert_eq!(b.held(), 300, "a refused growth reserves nothing");
        assert!(b.grow(300), "what was ahead is still there after a refusal");
        drop((a, b, c));
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn the_estimate_follows_larger_mirrors_at_once_and_smaller_ones_slowly() {
        let budget = ByteBudget::new(1 << 30);
        let ended = |bytes: usize| {
            let r = budget.reservation();
            assert!(r.grow(bytes));
        };
        ended(1600);
        ended(3200);
        assert_eq!(budget.typical(), 3200);
        ended(100);
        assert_eq!(budget.typical(), 3000);
        for _ in 0..60 {
            ended(100);
        }
        assert!(budget.typical() < 200, "{}", budget.typical());
        // A mirror given up before it copied anything teaches nothing.
        let before = budget.typical();
        drop(budget.admit());
        assert_eq!(budget.typical(), before);
    }

    #[test]
    fn half_the_budget_held_stops_new_mirrors() {
        let budget = ByteBudget::new(100);
        let held = budget.reservation();
        assert!(held.grow(49));
        assert!(!budget.half_spent());
        assert!(held.grow(1));
        assert!(budget.half_spent());
        drop(held);
        assert!(!budget.half_spent());
    }

    #[test]
    fn a_lowered_limit_refuses_new_bytes_until_enough_are_released() {
        let budget = ByteBudget::new(100);
        let held = budget.reservation();
        assert!(held.grow(80));
        budget.set_limit(50);
        let other = budget.reservation();
        assert!(!other.grow(1));
        drop(held);
        assert!(other.grow(50));
    }
}
