//! The rollout: judging each step on the stats' window and moving the
//! candidate's weight, durably.
//!
//! * [`judge`] (window statistics → verdict) and [`machine`] (verdicts and
//!   operator commands → phase and weight) are the pure core: synchronous,
//!   no I/O, no clocks, no tasks, so `validate` and the seeded simulations
//!   (`sim*`, tests only) run the very same decisions.
//! * [`controller`] is the async shell around them: once a second it feeds
//!   the machine the step's window and the time, and applies what changed
//!   to the routing, the metrics and the log. `durable` and [`persist`]
//!   keep the state file on disk current; `webhook` posts phase changes to
//!   `rollout.webhook` from a task the server spawns.
//!
//! Nothing here is on the data path: the proxy reads the weight through
//! `routing`, never by calling into this module.

pub mod judge;
pub mod machine;

pub mod controller;
mod durable;
pub mod persist;
#[cfg(test)]
mod sim;
#[cfg(test)]
mod sim_latency;
#[cfg(test)]
mod sim_rows;
mod webhook;

pub use controller::{RolloutHandle, RolloutStartError, RolloutTask, start};
pub use webhook::WebhookTask;
