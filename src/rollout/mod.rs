//! Rollout decisions: the judge (window statistics → verdict) and the rollout
//! state machine (verdicts and operator commands → phase and weight).
//!
//! Everything here is pure and synchronous: no I/O, no clocks, no tasks. The
//! async controller shell feeds it windows and the current time and applies
//! the changes it returns.

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
