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
//!
//! Files by concern: `session` (the etcd session, lease and watch),
//! `view` (what this replica knows of the fleet), `leader` (campaign,
//! judgement and fencing), `commands` (operator commands as
//! compare-and-swap writes), `replica` (what ties the view to the local
//! rollout), `store` (the etcd calls), `document` and `report` (what is
//! stored). The admin API reaches the fleet through [`FleetHandle`].

mod commands;
mod document;
mod leader;
mod replica;
mod report;
mod session;
mod store;
mod view;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

pub use document::{Evidence, FleetState, Keys};
pub use report::{Merged, Report, WireWindow, merge};
pub use session::FleetTask;

use crate::config::Fleet;
use crate::rollout::RolloutHandle;
use crate::rollout::machine::{self, Command};
use crate::stats::StatsHandle;
use crate::telemetry::Metrics;

/// An operator command waits at most this long for etcd.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the fleet did not take an operator command.
#[derive(Debug, thiserror::Error)]
pub enum FleetCommandError {
    /// The rollout's phase does not allow it.
    #[error(transparent)]
    Refused(#[from] machine::CommandError),
    /// Other writers kept changing the fleet's state under it.
    #[error("the fleet's rollout state kept changing; try the command again")]
    Contended,
    /// No leader has written the fleet's first state yet.
    #[error("the fleet has no rollout state yet (no leader has started it); try again in a moment")]
    NoState,
    /// This replica has no etcd session.
    #[error(
        "etcd is unreachable: the fleet's rollout cannot change now (serving on the last known weight)"
    )]
    Unreachable,
    /// The fleet task did not answer within [`COMMAND_TIMEOUT`].
    #[error("fleet mode: etcd did not take the command in time; the rollout is unchanged")]
    TimedOut,
}

pub(crate) struct CommandRequest {
    command: Command,
    reply: oneshot::Sender<Result<Value, FleetCommandError>>,
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
    /// The answer is the rollout's status once the command applies here.
    pub async fn command(&self, command: Command) -> Result<Value, FleetCommandError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(CommandRequest { command, reply })
            .await
            .map_err(|_| FleetCommandError::TimedOut)?;
        match tokio::time::timeout(COMMAND_TIMEOUT, answer).await {
            Ok(Ok(result)) => result,
            _ => Err(FleetCommandError::TimedOut),
        }
    }

    /// The `fleet` part of `GET /status`.
    pub fn status_json(&self) -> Value {
        self.shared.lock_status().clone()
    }
}

/// Puts `rollout` under the fleet's control. Operator commands must go
/// through the returned handle from now on, and the returned task must run
/// for the fleet to work: it decides the rollout's state instead of the
/// local controller's task.
pub fn start(
    config: &Fleet,
    rollout: &RolloutHandle,
    stats: StatsHandle,
    metrics: &Metrics,
) -> (FleetHandle, FleetTask) {
    let (commands, requests) = mpsc::channel(16);
    let shared = Arc::new(FleetShared {
        status: Mutex::new(Value::Null),
    });
    let handle = FleetHandle {
        shared: shared.clone(),
        commands,
    };
    let task = FleetTask::new(
        config.clone(),
        rollout.clone(),
        stats,
        metrics.fleet_gauges(),
        shared,
        requests,
    );
    (handle, task)
}
