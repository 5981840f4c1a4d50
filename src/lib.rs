//! understudy: a shadow-traffic reverse proxy for ML model rollouts.
//!
//! Modules follow a request's path:
//!
//! * [`listener`] accepts client connections (HTTP/1.1 and h2c) and hands
//!   each request to [`proxy`], which picks the serving backend with
//!   [`split`] (weights published by [`rollout`] through [`routing`]),
//!   forwards through [`upstream`] pools and streams the answer back;
//!   [`trace_context`] carries the client's W3C trace to both backends;
//!   [`capture`] keeps capped copies of both bodies on the way and shares
//!   them with the mirror and the recording.
//! * [`mirror`] replays the copy to the other backend off the client's
//!   path, then [`compare`]s the two answers the way ML needs (large pairs
//!   on low-priority threads of its own); [`budget`] bounds the bytes all
//!   mirrors hold together.
//! * [`stats`] owns every counter and histogram (fed by a channel), and
//!   [`telemetry`] exports them to Prometheus; [`admin`] serves metrics,
//!   [`status`] JSON and rollout control on a separate port. [`labels`]
//!   holds the closed sets behind every metric label and counter array (a
//!   leaf that every layer uses); [`sse`] reads LLM servers' event
//!   streams; [`units`] writes percentages, milliseconds
//!   and durations for people, and [`box_error`] names the one boxed error.
//! * [`rollout`] judges each step on the stats' window and moves the weight;
//!   [`config`] validates the TOML; [`server`] wires it all together and
//!   shuts it down in order; [`reload`] applies a changed config file (on
//!   SIGHUP or `POST /reload`); [`error`] maps the proxy's own failures to
//!   status codes.
//! * [`cli`], [`demo`] and [`toy`] (built-in model servers) serve the binary.
//! * [`record`] samples live requests into a JSONL file (off the hot path);
//!   [`validate`] replays such a file against both backends and runs the
//!   rollout judge on the result, for CI.
//! * [`fleet`] (cargo feature `fleet`) runs one rollout across many
//!   replicas through etcd: shared evidence, one fenced leader, one state.
//!
//! `compare`, `split`, `stats`, `capture`, `config` and `labels` import
//! nothing of the request path (`listener`, `proxy`, `mirror`, `record`) or
//! the control plane (`rollout`, `fleet`, `admin`, `server`): they are
//! reused by validation runs. `tests/architecture.rs` checks that, and that
//! the modules import each other without a cycle.
#![forbid(unsafe_code)]

pub mod access_log;
pub mod admin;
pub mod box_error;
pub mod budget;
pub mod capture;
pub mod cli;
pub mod compare;
pub mod config;
pub mod demo;
pub mod error;
#[cfg(feature = "fleet")]
pub mod fleet;
#[cfg(test)]
mod full_fs;
pub mod labels;
mod lines;
pub mod listener;
pub mod mirror;
pub mod proxy;
pub mod record;
pub mod reload;
pub mod rollout;
pub mod routing;
pub mod send_timeout;
pub mod server;
pub mod split;
pub mod sse;
pub mod stats;
pub mod status;
pub mod telemetry;
pub mod tls;
pub mod toy;
pub mod trace_context;
pub mod units;
pub mod upstream;
pub mod validate;
