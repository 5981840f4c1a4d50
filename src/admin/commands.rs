//! `POST /rollout/{command}`: the operator's rollout commands over HTTP.
//!
//! Parses the command and its body, then sends it to the fleet in fleet
//! mode (so that it reaches every replica through etcd) or else to the
//! local controller. Every way a command can fail is one [`CommandError`],
//! and [`CommandError::status`] is the one place that picks its HTTP
//! status.

use http::StatusCode;
use serde_json::Value;

use super::AdminState;
use crate::rollout::machine::{self, Command};

/// Why a rollout command did not happen.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The config has no `[rollout]`: there is nothing to command.
    #[error("no rollout is configured: add a [rollout] section to the config")]
    NoRollout,
    /// Not one of the commands.
    #[error("unknown rollout command {0:?}: use pause, resume, promote, rollback or weight")]
    Unknown(String),
    /// `weight` without a body like `{"percent": 10}`.
    #[error("expected JSON like {{\"percent\": 10}}{0}")]
    BadBody(String),
    /// The rollout's phase does not allow the command.
    #[error(transparent)]
    Refused(#[from] machine::CommandError),
    /// Fleet mode: the fleet refused the command or could not take it now.
    #[cfg(feature = "fleet")]
    #[error(transparent)]
    Fleet(#[from] crate::fleet::FleetCommandError),
}

impl CommandError {
    /// The HTTP status that tells the operator what to do: fix the request
    /// (400, 404), look at the rollout first (409), or try again shortly
    /// (503).
    pub fn status(&self) -> StatusCode {
        match self {
            CommandError::NoRollout | CommandError::Refused(_) => StatusCode::CONFLICT,
            CommandError::Unknown(_) => StatusCode::NOT_FOUND,
            CommandError::BadBody(_) => StatusCode::BAD_REQUEST,
            #[cfg(feature = "fleet")]
            CommandError::Fleet(error) => {
                use crate::fleet::FleetCommandError as Fleet;
                match error {
                    Fleet::Refused(_) | Fleet::Contended => StatusCode::CONFLICT,
                    Fleet::NoState | Fleet::Unreachable | Fleet::TimedOut => {
                        StatusCode::SERVICE_UNAVAILABLE
                    }
                }
            }
        }
    }
}

/// Runs `command` (the path segment after `/rollout/`) with its JSON body;
/// the answer is the rollout's status after it.
pub async fn run(state: &AdminState, command: &str, body: &[u8]) -> Result<Value, CommandError> {
    let Some(rollout) = &state.rollout else {
        return Err(CommandError::NoRollout);
    };
    let command = parse(command, body)?;
    #[cfg(feature = "fleet")]
    if let Some(fleet) = &state.fleet {
        let mut status = fleet.command(command).await?;
        status["fleet"] = fleet.status_json();
        return Ok(status);
    }
    Ok(rollout.command(command)?)
}

/// The command named `command`, with its argument from `body`.
fn parse(command: &str, body: &[u8]) -> Result<Command, CommandError> {
    Ok(match command {
        "pause" => Command::Pause,
        "resume" => Command::Resume,
        "promote" => Command::Promote,
        "rollback" => Command::Rollback,
        "weight" => {
            let value: Value = serde_json::from_slice(body)
                .map_err(|e| CommandError::BadBody(format!(": {e}")))?;
            let percent = value["percent"]
                .as_f64()
                .ok_or_else(|| CommandError::BadBody(String::new()))?;
            Command::SetWeight(percent)
        }
        other => return Err(CommandError::Unknown(other.to_owned())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_by_name_and_weight_reads_its_percent() {
        assert_eq!(parse("pause", b"").unwrap(), Command::Pause);
        assert_eq!(parse("resume", b"").unwrap(), Command::Resume);
        assert_eq!(parse("promote", b"").unwrap(), Command::Promote);
        assert_eq!(parse("rollback", b"").unwrap(), Command::Rollback);
        let weight = parse("weight", br#"{"percent": 12.5}"#).unwrap();
        assert_eq!(weight, Command::SetWeight(12.5));
    }

    #[test]
    fn each_failure_has_its_status_and_message() {
        let unknown = parse("jump", b"").unwrap_err();
        assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            unknown.to_string(),
            "unknown rollout command \"jump\": use pause, resume, promote, rollback or weight"
        );
        let not_json = parse("weight", b"ten").unwrap_err();
        assert_eq!(not_json.status(), StatusCode::BAD_REQUEST);
        let message = not_json.to_string();
        assert!(
            message.starts_with("expected JSON like {\"percent\": 10}: "),
            "{message}"
        );
        let no_percent = parse("weight", br#"{"pct": 10}"#).unwrap_err();
        assert_eq!(no_percent.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            no_percent.to_string(),
            "expected JSON like {\"percent\": 10}"
        );
        assert_eq!(CommandError::NoRollout.status(), StatusCode::CONFLICT);
        let refused = CommandError::from(machine::CommandError::AlreadyPaused);
        assert_eq!(refused.status(), StatusCode::CONFLICT);
        assert_eq!(refused.to_string(), "the rollout is already paused");
    }

    #[cfg(feature = "fleet")]
    #[test]
    fn fleet_failures_are_409_on_their_merits_and_503_when_etcd_is_away() {
        use crate::fleet::FleetCommandError as Fleet;
        let status = |e: Fleet| CommandError::from(e).status();
        let refused = Fleet::Refused(machine::CommandError::AlreadyPaused);
        assert_eq!(status(refused), StatusCode::CONFLICT);
        assert_eq!(status(Fleet::Contended), StatusCode::CONFLICT);
        for away in [Fleet::NoState, Fleet::Unreachable, Fleet::TimedOut] {
            assert_eq!(status(away), StatusCode::SERVICE_UNAVAILABLE);
        }
    }
}
