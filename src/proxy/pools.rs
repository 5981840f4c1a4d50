//! The connection pools of one data-plane worker: for each backend, one
//! pool for serving clients and one for shadow traffic, so a flood of
//! mirrors can never take the connections that serve clients.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;

use super::body::LimitedBody;
use super::prebuffer::Prebuffered;
use crate::capture::TeeBody;
use crate::config;
use crate::upstream::{ClientTls, Upstream};

/// A client's request body on its way to the serving backend. Boxed
/// because hyper's per-connection request channel allocates its slots in
/// blocks of 32 requests: a 240-byte body inline makes that about 15 KiB per
/// upstream connection, boxed about 8 KiB (measured with massif: the largest
/// item of peak memory at 1,000 connections). One small allocation per
/// request buys it.
pub type UploadBody = Box<Prebuffered<ClientBody>>;

/// A client's request body held to the listener's limits, tee'd for the
/// mirror and the recording when they want a copy.
pub type ClientBody = TeeBody<LimitedBody<Incoming>>;

/// The most a shadow connection buffers of an answer before it is copied
/// (or given up) within the byte budget: hundreds of mirrors may be in
/// flight, each on its own connection, and hyper's default of about
/// 400 KiB each would be far more than the budget the copies respect.
/// Reading a 500 KB answer in 16 KiB pieces costs a few more reads.
const SHADOW_READ_BUFFER: usize = 16 * 1024;

/// The most a serving connection reads of an answer at once. Each piece
/// hyper hands out keeps its read buffer alive, and a slow client's answer
/// holds one piece read ahead (`proxy::read_ahead`) and one in its write
/// buffer: at hyper's default of about 400 KiB that would be close to a
/// megabyte per slow reader, at this size a few hundred KiB at most.
const SERVING_READ_BUFFER: usize = 64 * 1024;

/// One backend's two pools: serving and shadowing.
pub(super) struct Pools {
    pub serve: Upstream<UploadBody>,
    pub shadow: Arc<Upstream<Full<Bytes>>>,
}

impl Pools {
    /// Each worker has its own pools, so the serving pool takes its share
    /// of the backend's `max_connections` and `pool_max_idle`: without the
    /// division it kept 256 idle connections on every worker, 4,096 on 16
    /// cores. The shadow pool keeps `pool_max_idle` per worker, because it
    /// is bounded by `shadow.max_in_flight` instead (whose excess is
    /// dropped, not queued) and any one worker may carry most of those
    /// mirrors: with half the idle connections per worker, the slow-
    /// candidate benchmark closed and reopened 150-220 connections a
    /// second to the candidate instead of about 25.
    fn new(backend: &config::Backend, tls: &ClientTls, workers: usize) -> Self {
        let workers = workers.max(1);
        let serving_share = config::Backend {
            pool_max_idle: backend.pool_max_idle.div_ceil(workers),
            ..backend.clone()
        };
        Self {
            serve: Upstream::sharing(&serving_share, tls)
                .with_max_in_flight(backend.max_connections.div_ceil(workers))
                .with_max_read_buffer(SERVING_READ_BUFFER),
            shadow: Arc::new(
                Upstream::sharing(backend, tls).with_max_read_buffer(SHADOW_READ_BUFFER),
            ),
        }
    }
}

/// Both backends' pools.
pub(super) struct BackendPools {
    pub stable: Pools,
    pub candidate: Option<Pools>,
}

impl BackendPools {
    pub fn new(backends: &Backends, workers: usize) -> Self {
        Self {
            stable: Pools::new(&backends.stable.0, &backends.stable.1, workers),
            candidate: backends
                .candidate
                .as_ref()
                .map(|(backend, tls)| Pools::new(backend, tls, workers)),
        }
    }
}

/// The backends as configured at start, each with its live TLS files,
/// which every worker's pools share.
pub(super) struct Backends {
    pub stable: (config::Backend, ClientTls),
    pub candidate: Option<(config::Backend, ClientTls)>,
}

impl Backends {
    pub fn new(
        stable: &config::Backend,
        candidate: Option<&config::Backend>,
    ) -> Result<Self, crate::tls::TlsError> {
        let live = |backend: &config::Backend| -> Result<_, crate::tls::TlsError> {
            Ok((backend.clone(), ClientTls::new(backend)?))
        };
        Ok(Self {
            stable: live(stable)?,
            candidate: candidate.map(live).transpose()?,
        })
    }
}
