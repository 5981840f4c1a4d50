//! Whether a request is mirrored: decided from its head alone, before the
//! copy costs anything, in the order that sheds the cheapest way first.

use std::sync::Arc;

use tokio::sync::OwnedSemaphorePermit;

use super::Mirror;
use crate::budget::Reservation;
use crate::config;
use crate::stats::ShadowResult;

/// Decides what happens to a copy of this request.
pub enum MirrorPlan {
    /// Mirroring is off (no candidate, percent 0, rolled back, promoted).
    Off,
    /// Not drawn by `shadow.percent`.
    NotSampled,
    /// Not mirrored, for a reason that is counted.
    Skip(ShadowResult),
    /// Mirrored, holding one of the `shadow.max_in_flight` permits and its
    /// share of the byte budget (what a mirror is expected to hold,
    /// reserved ahead).
    Go(OwnedSemaphorePermit, Arc<Reservation>),
}

impl MirrorPlan {
    /// The access log's `shadow` field.
    pub fn label(&self) -> &'static str {
        match self {
            MirrorPlan::Off => "off",
            MirrorPlan::NotSampled => "not_sampled",
            MirrorPlan::Skip(result) => result.as_str(),
            MirrorPlan::Go(..) => "mirrored",
        }
    }
}

impl Mirror {
    /// Plans the mirror of a request to `path` whose body declares
    /// `declared` bytes (when it has a valid `Content-Length`). `mirroring`
    /// says whether there is another backend and the rollout mirrors now.
    pub fn plan(
        &self,
        shadow: &config::Shadow,
        mirroring: bool,
        path: &str,
        declared: Option<u64>,
    ) -> MirrorPlan {
        if !mirroring || shadow.percent <= 0.0 {
            return MirrorPlan::Off;
        }
        if !shadow.routes.is_empty() && !shadow.routes.iter().any(|r| r.matches(path)) {
            return MirrorPlan::Skip(ShadowResult::SkippedRoute);
        }
        if shadow.percent < 100.0 && rand::random::<f64>() * 100.0 >= shadow.percent {
            return MirrorPlan::NotSampled;
        }
        if declared.is_some_and(|len| len > shadow.max_body_bytes as u64) {
            return MirrorPlan::Skip(ShadowResult::SkippedBody);
        }
        // Shed before it costs anything: with the comparison queue full, or
        // no room in the byte budget for what a mirror holds (see
        // `budget`), the other backend's answer could only be dropped.
        if self.comparisons_saturated() {
            return MirrorPlan::Skip(ShadowResult::DroppedBusy);
        }
        let Some(bytes) = self.budget().admit() else {
            return MirrorPlan::Skip(ShadowResult::DroppedBudget);
        };
        match self.try_reserve() {
            Some(permit) => MirrorPlan::Go(permit, bytes),
            None => MirrorPlan::Skip(ShadowResult::DroppedOverload),
        }
    }
}
