//! The rollout state on disk: written atomically on every change, read once
//! at start.
//!
//! A write goes to a temp file in the same directory, is fsynced, renamed
//! over the old file, and the directory is fsynced, so a crash at any point
//! leaves either the old or the new state, never a torn one. The file names
//! the backends it belongs to; a state for other backends is refused rather
//! than applied (it would move traffic to the wrong candidate).

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::machine::RolloutState;

/// Bumped when the file's shape changes incompatibly.
const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
struct StateFile {
    format: u32,
    /// `stable=URL candidate=URL` of the config that wrote it.
    identity: String,
    state: RolloutState,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read rollout state file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("rollout state file {path} is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error(
        "rollout state file {path} belongs to another rollout: it has \"{found}\", the config has \"{expected}\"; \
         start with --reset-state to discard it"
    )]
    OtherRollout {
        path: PathBuf,
        found: String,
        expected: String,
    },
}

/// Reads the state for `identity`; `Ok(None)` when there is no file yet.
pub fn load(path: &Path, identity: &str) -> Result<Option<RolloutState>, LoadError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(LoadError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    let corrupt = |reason: String| LoadError::Corrupt {
        path: path.to_owned(),
        reason,
    };
    let file: StateFile = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
    if file.format != FORMAT_VERSION {
        return Err(corrupt(format!(
            "format {} is not the supported {FORMAT_VERSION}",
            file.format
        )));
    }
    if !(0.0..=100.0).contains(&file.state.weight) {
        return Err(corrupt(format!(
            "weight {} is out of range",
            file.state.weight
        )));
    }
    if file.identity != identity {
        return Err(LoadError::OtherRollout {
            path: path.to_owned(),
            found: file.identity,
            expected: identity.to_owned(),
        });
    }
    Ok(Some(file.state))
}

/// Writes the state atomically (temp file, fsync, rename, fsync directory).
/// `Ok` means the new state survives a crash or power loss; any failure
/// along the way (a full disk, a failed fsync) is an error, and the temp
/// file is removed so a full disk gets its space back.
pub fn save(path: &Path, identity: &str, state: &RolloutState) -> std::io::Result<()> {
    let file = StateFile {
        format: FORMAT_VERSION,
        identity: identity.to_owned(),
        state: state.clone(),
    };
    let bytes = serde_json::to_vec_pretty(&file).map_err(std::io::Error::other)?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "understudy-state.json".into());
    let temp = dir.join(format!(".{name}.tmp"));
    let written = (|| {
        let mut out = std::fs::File::create(&temp)?;
        out.write_all(&bytes)?;
        out.sync_all()
    })();
    if let Err(error) = written.and_then(|()| std::fs::rename(&temp, path)) {
        let _ = std::fs::remove_file(&temp);
        return Err(error);
    }
    // The rename is durable only once the directory entry is on disk; until
    // then a crash may bring back the old file, so this failing is a failed
    // save too.
    std::fs::File::open(&dir)?.sync_all()
}

/// Moves a corrupt state file aside (`NAME.corrupt`) so it is kept for a
/// post-mortem but never read again.
pub fn quarantine(path: &Path) -> std::io::Result<PathBuf> {
    let mut aside = path.as_os_str().to_owned();
    aside.push(".corrupt");
    let aside = PathBuf::from(aside);
    std::fs::rename(path, &aside)?;
    Ok(aside)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollout::machine::{Phase, RolloutMachine, RolloutSettings};

    fn state() -> RolloutState {
        let settings = RolloutSettings {
            steps: vec![5.0, 25.0, 50.0, 100.0],
            thresholds: Default::default(),
            max_step_duration: None,
        };
        RolloutMachine::new(settings, 1_000).state().clone()
    }

    #[test]
    fn saved_state_loads_back_identically() {
        let dir = tempdir();
        let path = dir.join("state.json");
        let mut s = state();
        s.phase = Phase::Canary;
        s.weight = 25.0;
        save(&path, "id", &s).unwrap();
        assert_eq!(load(&path, "id").unwrap(), Some(s));
    }

    #[test]
    fn missing_file_is_a_fresh_start() {
        let dir = tempdir();
        assert_eq!(load(&dir.join("none.json"), "id").unwrap(), None);
    }

    #[test]
    fn state_of_other_backends_is_refused_with_both_identities() {
        let dir = tempdir();
        let path = dir.join("state.json");
        save(&path, "stable=a candidate=b", &state()).unwrap();
        let error = load(&path, "stable=a candidate=c").unwrap_err();
        let message = error.to_string();
        assert!(matches!(error, LoadError::OtherRollout { .. }));
        assert!(
            message.contains("candidate=b") && message.contains("candidate=c"),
            "{message}"
        );
        assert!(message.contains("--reset-state"), "{message}");
    }

    #[test]
    fn truncated_or_garbage_files_are_corrupt() {
        let dir = tempdir();
        let path = dir.join("state.json");
        save(&path, "id", &state()).unwrap();
        let text = std::fs::read(&path).unwrap();
        std::fs::write(&path, &text[..text.len() / 2]).unwrap();
        assert!(matches!(load(&path, "id"), Err(LoadError::Corrupt { .. })));
        std::fs::write(&path, b"\x00\xffgarbage").unwrap();
        assert!(matches!(load(&path, "id"), Err(LoadError::Corrupt { .. })));
        let aside = quarantine(&path).unwrap();
        assert!(aside.exists() && !path.exists());
    }

    fn tempdir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "understudy-persist-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
