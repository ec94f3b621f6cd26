//! Training checkpoints: written atomically as a directory, found again by `--resume latest`.
//!
//! ```text
//! RUN/checkpoints/step_00000100/
//!     model.safetensors       the weights, open_clip names (usable by every inference command)
//!     optimizer.safetensors   AdamW moments `exp_avg.<param>`, `exp_avg_sq.<param>`
//!     state.json              step, optimiser steps, data position, settings that must not change
//! ```
//! The directory is assembled under a hidden temporary name and renamed into place, so a checkpoint either
//! exists completely or not at all, whenever the process is killed.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::TrainError;

/// The file holding the weights inside a checkpoint directory.
pub const MODEL_FILE: &str = "model.safetensors";
/// The file holding the optimiser moments.
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
/// The file holding [`TrainState`].
pub const STATE_FILE: &str = "state.json";

/// Everything besides tensors that a resumed run needs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrainState {
    /// Optimiser steps completed.
    pub step: u64,
    /// Position of the data loader after the last batch used (loader-specific JSON).
    pub data: serde_json::Value,
    /// The model config the weights belong to (open_clip JSON).
    pub model_config: serde_json::Value,
    /// Seed of the run.
    pub seed: u64,
    /// Loss of the last step, for the record.
    pub last_loss: Option<f64>,
}

/// The checkpoint directory name of `step`.
pub fn checkpoint_name(step: u64) -> String {
    format!("step_{step:08}")
}

/// `RUN/checkpoints`.
pub fn checkpoints_dir(run: &Path) -> PathBuf {
    run.join("checkpoints")
}

/// Complete checkpoints of a run, oldest first, as (step, directory).
pub fn list_checkpoints(run: &Path) -> Result<Vec<(u64, PathBuf)>, TrainError> {
    let dir = checkpoints_dir(run);
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let entries = fs::read_dir(&dir).map_err(|e| TrainError::io(&dir, e))?;
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| TrainError::io(&dir, e))?;
        let name = entry.file_name().to_string_lossy().to_string();
        let Some(step) = name
            .strip_prefix("step_")
            .and_then(|s| s.parse::<u64>().ok())
        else {
            continue;
        };
        let path = entry.path();
        if path.join(STATE_FILE).is_file() {
            found.push((step, path));
        }
    }
    found.sort();
    Ok(found)
}

/// The newest complete checkpoint of a run, if any.
pub fn latest_checkpoint(run: &Path) -> Result<Option<PathBuf>, TrainError> {
    Ok(list_checkpoints(run)?.pop().map(|(_, p)| p))
}

/// Write a checkpoint directory atomically: `fill` writes the files into a temporary directory, which is then
/// renamed to `RUN/checkpoints/step_N` (replacing an older one of the same step). Returns the final path.
pub fn write_checkpoint_dir(
    run: &Path,
    step: u64,
    fill: impl FnOnce(&Path) -> Result<(), TrainError>,
) -> Result<PathBuf, TrainError> {
    let dir = checkpoints_dir(run);
    fs::create_dir_all(&dir).map_err(|e| TrainError::io(&dir, e))?;
    let name = checkpoint_name(step);
    let final_path = dir.join(&name);
    let temp = dir.join(format!(".{name}.partial-{}", std::process::id()));
    if temp.exists() {
        fs::remove_dir_all(&temp).map_err(|e| TrainError::io(&temp, e))?;
    }
    fs::create_dir(&temp).map_err(|e| TrainError::io(&temp, e))?;
    if let Err(err) = fill(&temp) {
        let _ = fs::remove_dir_all(&temp);
        return Err(err);
    }
    if final_path.exists() {
        let old = dir.join(format!(".{name}.old-{}", std::process::id()));
        fs::rename(&final_path, &old).map_err(|e| TrainError::io(&final_path, e))?;
        fs::rename(&temp, &final_path).map_err(|e| TrainError::io(&final_path, e))?;
        let _ = fs::remove_dir_all(&old);
    } else {
        fs::rename(&temp, &final_path).map_err(|e| TrainError::io(&final_path, e))?;
    }
    // Make the rename itself durable.
    if let Ok(d) = fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(final_path)
}

/// Remove leftovers of interrupted writes and all but the newest `keep` checkpoints (`keep == 0` keeps all).
pub fn prune_checkpoints(run: &Path, keep: usize) -> Result<(), TrainError> {
    let dir = checkpoints_dir(run);
    if let Ok(entries) = fs::read_dir(&dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if name.starts_with('.') && (name.contains(".partial-") || name.contains(".old-")) {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }
    if keep == 0 {
        return Ok(());
    }
    let all = list_checkpoints(run)?;
    let excess = all.len().saturating_sub(keep);
    for (_, path) in all.into_iter().take(excess) {
        fs::remove_dir_all(&path).map_err(|e| TrainError::io(&path, e))?;
    }
    Ok(())
}

/// Read `state.json` of a checkpoint directory.
pub fn read_state(checkpoint: &Path) -> Result<TrainState, TrainError> {
    let path = checkpoint.join(STATE_FILE);
    let text = fs::read_to_string(&path).map_err(|e| TrainError::io(&path, e))?;
    serde_json::from_str(&text).map_err(|e| TrainError::Checkpoint {
        path,
        reason: format!("malformed state: {e}"),
    })
}

/// Write `state.json` into a checkpoint directory being filled.
pub fn write_state(dir: &Path, state: &TrainState) -> Result<(), TrainError> {
    let path = dir.join(STATE_FILE);
    let json = serde_json::to_vec_pretty(state).map_err(|e| TrainError::Checkpoint {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    coca_fs::write_atomic(&path, |w| -> Result<(), TrainError> {
        std::io::Write::write_all(w, &json).map_err(|e| TrainError::io(&path, e))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(step: u64) -> TrainState {
        TrainState {
            step,
            data: serde_json::json!({"epoch": 0}),
            model_config: serde_json::json!({}),
            seed: 1,
            last_loss: None,
        }
    }

    #[test]
    fn failed_writes_leave_no_checkpoint_and_latest_is_newest() {
        let run = tempfile::tempdir().unwrap();
        assert!(latest_checkpoint(run.path()).unwrap().is_none());
        write_checkpoint_dir(run.path(), 5, |d| write_state(d, &state(5))).unwrap();
        write_checkpoint_dir(run.path(), 12, |d| write_state(d, &state(12))).unwrap();
        let failed = write_checkpoint_dir(run.path(), 20, |d| {
            write_state(d, &state(20))?;
            Err(TrainError::Interrupted)
        });
        assert!(failed.is_err());
        let latest = latest_checkpoint(run.path()).unwrap().unwrap();
        assert!(latest.ends_with("step_00000012"));
        assert_eq!(read_state(&latest).unwrap().step, 12);
        // A directory without state.json (a torn copy) never counts.
        fs::create_dir_all(checkpoints_dir(run.path()).join("step_00000099")).unwrap();
        assert!(latest_checkpoint(run.path())
            .unwrap()
            .unwrap()
            .ends_with("step_00000012"));
    }

    #[test]
    fn pruning_keeps_the_newest() {
        let run = tempfile::tempdir().unwrap();
        for step in [1, 2, 3, 4] {
            write_checkpoint_dir(run.path(), step, |d| write_state(d, &state(step))).unwrap();
        }
        prune_checkpoints(run.path(), 2).unwrap();
        let steps: Vec<u64> = list_checkpoints(run.path())
            .unwrap()
            .into_iter()
            .map(|(s, _)| s)
            .collect();
        assert_eq!(steps, vec![3, 4]);
    }
}
