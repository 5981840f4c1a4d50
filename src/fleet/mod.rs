//! Fleet mode: many replicas run one rollout together through etcd.
//!
//! Every replica publishes its step window under `PREFIX/replicas/ID` with
//! its lease; one leader (a Txn on the leader key's create revision) merges
//! the live replicas' windows and runs the same judge as single-node mode;
//! every leader write is fenced on that create revision, so a paused or
//! partitioned old leader can never overwrite the state. The rollout state
//! lives in etcd and every replica applies it from a watch; operator
//! commands on any replica are compare-and-swap writes of that state. The
//! local state file is kept as a cache for a restart while etcd is away.

mod document;
mod report;
mod store;
mod task;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use http::StatusCode;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

pub use document::{Evidence, FleetState, Keys};
pub use report::{Merged, Report, WireWindow, merge};
pub use task::FleetTask;

use crate::config::Fleet;
use crate::rollout::RolloutHandle;
use crate::rollout::machine::Command;
use crate::stats::StatsHandle;
use crate::telemetry::Metrics;

/// An operator command waits at most this long for etcd.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) type CommandResult = Result<Value, (StatusCode, String)>;

pub(crate) struct CommandRequest {
    command: Command,
    reply: oneshot::Sender<CommandResult>,
}

/// What `/status` shows of the fleet, refreshed by the task.
pub(crate) struct FleetShared {
    status: Mutex<Value>,
}

impl FleetShared {
    fn lock_status(&self) -> MutexGuard<'_, Value> {
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The admin API's way into the fleet; cheap to clone.
#[derive(Clone)]
pub struct FleetHandle {
    shared: Arc<FleetShared>,
    commands: mpsc::Sender<CommandRequest>,
}

impl FleetHandle {
    /// Runs an operator command through etcd, so it reaches every replica.
    pub async fn command(&self, command: Command) -> CommandResult {
        let (reply, answer) = oneshot::channel();
        let unavailable = || {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "fleet mode: etcd did not take the command in time; the rollout is unchanged"
                    .to_owned(),
            )
        };
        self.commands
            .send(CommandRequest { command, reply })
            .await
            .map_err(|_| unavailable())?;
        match tokio::time::timeout(COMMAND_TIMEOUT, answer).await {
            Ok(Ok(result)) => result,
            _ => Err(unavailable()),
        }
    }

    /// The `fleet` part of `GET /status`.
    pub fn status_json(&self) -> Value {
        self.shared.lock_status().clone()
    }
}

/// Puts the rollout under the fleet's control: commands go through etcd
/// from now on. The returned task must run for the fleet to work.
pub fn start(
    config: &Fleet,
    rollout: &RolloutHandle,
    stats: StatsHandle,
    metrics: &Metrics,
) -> FleetTask {
    let (commands, requests) = mpsc::channel(16);
    let shared = Arc::new(FleetShared {
        status: Mutex::new(Value::Null),
    });
    rollout.attach_fleet(FleetHandle {
        shared: shared.clone(),
        commands,
    });
    FleetTask::new(
        config.clone(),
        rollout.clone(),
        stats,
        metrics.fleet_gauges(),
        shared,
        requests,
    )
}
