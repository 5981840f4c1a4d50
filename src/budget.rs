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

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Bytes held by all mirrors, against a limit that a reload may change.
#[derive(Debug)]
pub struct ByteBudget {
    used: AtomicUsize,
    limit: AtomicUsize,
}

impl ByteBudget {
    pub fn new(limit: usize) -> Arc<ByteBudget> {
        Arc::new(ByteBudget {
            used: AtomicUsize::new(0),
            limit: AtomicUsize::new(limit),
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

    /// Bytes held right now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Whether mirrors hold half the budget or more: new mirrors are then
    /// not started, so the half left is for the answers of the ones
    /// already running rather than given up after the other backend has
    /// done its work.
    pub fn half_spent(&self) -> bool {
        self.used() >= self.limit() / 2
    }

    /// A new, empty reservation on this budget for one mirror.
    pub fn reservation(self: &Arc<Self>) -> Arc<Reservation> {
        Arc::new(Reservation {
            budget: self.clone(),
            held: AtomicUsize::new(0),
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
}

/// The bytes one mirror holds. Shared (in an `Arc`) by the request copy,
/// the serving-response copy and the shadow exchange; released when the
/// last of them is dropped, which is when the mirror's bytes are gone.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<ByteBudget>,
    held: AtomicUsize,
}

impl Reservation {
    /// Reserves `bytes` more; `false` (and nothing reserved) when the
    /// budget cannot take them.
    pub fn grow(&self, bytes: usize) -> bool {
        if bytes == 0 {
            return true;
        }
        if !self.budget.take(bytes) {
            return false;
        }
        self.held.fetch_add(bytes, Ordering::AcqRel);
        true
    }

    /// Bytes this reservation holds.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Acquire)
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
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
