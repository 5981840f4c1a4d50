//! The live routing decision the rollout controller publishes and the data
//! path reads on every request: the candidate's weight and whether to
//! mirror. Plain atomics: a read costs two relaxed loads, no lock, and the
//! controller's write is visible to the next request.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

#[derive(Debug)]
pub struct Routing {
    /// Candidate share in basis points (0..=10_000).
    weight_bp: AtomicU32,
    /// Mirror requests to the other backend. Off after a rollback (the
    /// candidate gets nothing) and after promotion (nothing left to compare).
    mirroring: AtomicBool,
}

impl Routing {
    pub fn new(weight_bp: u32, mirroring: bool) -> Self {
        Self {
            weight_bp: AtomicU32::new(weight_bp.min(10_000)),
            mirroring: AtomicBool::new(mirroring),
        }
    }

    pub fn weight_bp(&self) -> u32 {
        self.weight_bp.load(Ordering::Relaxed)
    }

    pub fn mirroring(&self) -> bool {
        self.mirroring.load(Ordering::Relaxed)
    }

    pub fn set(&self, weight_bp: u32, mirroring: bool) {
        self.weight_bp
            .store(weight_bp.min(10_000), Ordering::Relaxed);
        self.mirroring.store(mirroring, Ordering::Relaxed);
    }
}
