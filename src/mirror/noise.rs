//! The noise floor: a sample of mirrored requests that stable serves is sent
//! to stable a second time, and the two stable answers are compared with
//! the same comparator — a stable-vs-stable pair. Its match rate is how
//! often stable agrees with itself, the floor a candidate's match rate is
//! read against when the model is not deterministic.
//!
//! The second request rides on the mirror it samples: it is sent with the
//! same request body copy, under the same deadline (`shadow.timeout`), into
//! the same share of the byte budget, on the stable backend's shadow pool,
//! and holds a permit of the same `shadow.max_in_flight` pool of its own; it
//! is shed (and counted) when no permit is left or half the budget is in
//! use, never queued. Only requests served by stable are sampled: the pair
//! then compares the answer the client got with a second one, and a
//! request the weighted split sent to the candidate sends nothing more.
//! The second answer's status and latency are not part of stable's traffic
//! figures; its outcome is counted as a stable-vs-stable comparison only.

use std::sync::Arc;

use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{HeaderMap, Request};
use http_body_util::Full;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use super::pair::Answer;
use super::shadow::exchange;
use super::{Mirror, MirrorJob};
use crate::budget::Reservation;
use crate::compare::{Comparator, Outcome};
use crate::split::Backend;
use crate::stats::noise_fields::FieldDiff;
use crate::stats::{Event, StatsHandle};
use crate::upstream::Upstream;

/// `compare.noise_percent` and what a pair's field diff needs.
#[derive(Debug)]
pub struct NoiseSettings {
    /// Share of mirrored, stable-served requests sent to stable twice.
    pub percent: f64,
    pub fields: FieldDiff,
}

impl NoiseSettings {
    /// `None` when `compare.noise_percent` is 0 (off).
    pub fn from_config(compare: &crate::config::Compare) -> Option<Arc<NoiseSettings>> {
        (compare.noise_percent > 0.0).then(|| {
            Arc::new(NoiseSettings {
                percent: compare.noise_percent,
                fields: FieldDiff::new(&compare.spec),
            })
        })
    }
}

/// The second stable request of a mirror.
pub struct NoiseJob {
    /// The stable backend's shadow pool.
    pub target: Arc<Upstream<Full<Bytes>>>,
    pub settings: Arc<NoiseSettings>,
    /// A permit of the mirror pool of its own, held until the mirror ends.
    pub permit: OwnedSemaphorePermit,
}

impl Mirror {
    /// Whether a mirror that is starting also sends its request to stable a
    /// second time: sampled by `percent` among requests stable serves, and
    /// shed like a mirror when the pool, the budget or the comparison queue
    /// is full (counted as dropped).
    pub fn plan_noise(
        &self,
        settings: Option<&Arc<NoiseSettings>>,
        serving: Backend,
        stable_shadow: &Arc<Upstream<Full<Bytes>>>,
    ) -> Option<NoiseJob> {
        let settings = settings?;
        if serving != Backend::Stable
            || (settings.percent < 100.0 && rand::random::<f64>() * 100.0 >= settings.percent)
        {
            return None;
        }
        let permit = (!self.comparisons_saturated() && !self.budget().half_spent())
            .then(|| self.try_reserve())
            .flatten();
        let Some(permit) = permit else {
            self.stats.record(Event::NoiseDropped);
            return None;
        };
        Some(NoiseJob {
            target: stable_shadow.clone(),
            settings: settings.clone(),
            permit,
        })
    }
}

/// Sends the second stable request and collects its answer (up to the
/// cap, within the mirror's byte budget). Nothing is recorded here.
pub(super) async fn send(
    job: &MirrorJob,
    noise: &NoiseJob,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let mut request = Request::new(Full::new(body));
    *request.method_mut() = job.method.clone();
    *request.uri_mut() = noise.target.uri_for(job.path_and_query.as_ref());
    *request.headers_mut() = headers;
    *request.version_mut() = noise.target.version();
    let started = Instant::now();
    let mut head = None;
    let exchange = exchange(job, &noise.target, request, Backend::Stable, &mut head);
    match tokio::time::timeout_at(started + job.timeout, exchange).await {
        Ok(Ok(collected)) if collected.over_budget => Answer::OverBudget,
        Ok(Ok(collected)) => Answer::Response {
            status: head.map_or(0, |h| h.status),
            body: collected.body,
            truncated: collected.truncated,
            grpc_failed: collected.grpc_failed,
        },
        Ok(Err(_)) | Err(_) => Answer::Failed,
    }
}

/// The serving stable answer and the second one, to be judged.
pub(super) struct NoisePair {
    served: Answer,
    second: Answer,
    comparator: Arc<Comparator>,
    /// The request's path: it tells a gRPC call from a REST one.
    path: Option<PathAndQuery>,
    settings: Arc<NoiseSettings>,
    stats: StatsHandle,
    /// Released when the pair (and so its bodies) is dropped.
    _bytes: Arc<Reservation>,
}

impl NoisePair {
    pub fn new(
        job: &MirrorJob,
        noise: &NoiseJob,
        (served, second): (Answer, Answer),
        stats: StatsHandle,
    ) -> Self {
        Self {
            served,
            second,
            comparator: job.comparator.clone(),
            path: job.path_and_query.clone(),
            settings: noise.settings.clone(),
            stats,
            _bytes: job.reservation.clone(),
        }
    }

    pub fn body_len(&self) -> usize {
        self.served.body_len().max(self.second.body_len())
    }

    /// Compares the two stable answers as a stable-vs-candidate pair is
    /// compared (the served one in the stable place), diffs their fields
    /// when both are JSON, and records one event.
    pub fn judge(self) {
        if matches!(self.second, Answer::OverBudget) || matches!(self.served, Answer::OverBudget) {
            return self.stats.record(Event::NoiseDropped);
        }
        let (Some(served), Some(second)) = (self.served.observed(), self.second.observed()) else {
            return self.stats.record(Event::Noise {
                outcome: Outcome::Uncomparable,
                fields: None,
            });
        };
        let path = self.path.as_ref().map_or("/", |p| p.path());
        let outcome = self.comparator.compare_call(path, &served, &second).outcome;
        let fields = match (&self.served, &self.second) {
            (
                Answer::Response {
                    body: a,
                    truncated: false,
                    grpc_failed: false,
                    ..
                },
                Answer::Response {
                    body: b,
                    truncated: false,
                    grpc_failed: false,
                    ..
                },
            ) if matches!(outcome, Outcome::Match | Outcome::Mismatch) => self
                .settings
                .fields
                .differing(a, b)
                .map(Vec::into_boxed_slice),
            _ => None,
        };
        self.stats.record(Event::Noise { outcome, fields });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::ByteBudget;
    use crate::config::{ComparePriority, Config};
    use crate::mirror::compare_pool::ComparePool;
    use crate::telemetry::Metrics;

    #[tokio::test]
    async fn only_stable_served_requests_are_sampled_and_a_full_pool_sheds() {
        let config = Config::parse(
            "[backends.stable]\nurl = \"http://127.0.0.1:9\"\n\
             [backends.candidate]\nurl = \"http://127.0.0.1:9\"\n\
             [compare]\nnoise_percent = 100\n",
            "t",
        )
        .unwrap();
        let settings = NoiseSettings::from_config(&config.compare).unwrap();
        let target = Arc::new(Upstream::new(&config.stable).unwrap());
        let (stats, _task) = crate::stats::channel(Arc::new(Metrics::new()), 1);
        let pool = ComparePool::start(1, 4, ComparePriority::Normal);
        let mirror = Mirror::new(2, ByteBudget::new(1 << 20), pool, stats);
        let plan = |serving| mirror.plan_noise(Some(&settings), serving, &target);
        assert!(plan(Backend::Candidate).is_none());
        assert!(mirror.plan_noise(None, Backend::Stable, &target).is_none());
        let first = plan(Backend::Stable).expect("sampled at 100%");
        let second = plan(Backend::Stable).expect("a second permit");
        // Each second request holds a permit of the mirror pool: with both
        // taken, the next is shed.
        assert!(plan(Backend::Stable).is_none());
        drop((first, second));
        assert!(plan(Backend::Stable).is_some());
        let off = Config::parse("[backends.stable]\nurl = \"http://127.0.0.1:9\"\n", "t").unwrap();
        assert!(NoiseSettings::from_config(&off.compare).is_none());
    }
}
