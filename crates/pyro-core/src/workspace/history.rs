//! Command history: `commands/NNNNNN.json` plus raw `.stdout`/`.stderr` per exec.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::record::CommandSummary;
use crate::error::{Error, IoContext, Result};
use crate::fsutil::{unix_now, write_atomic};

/// One recorded command with its output.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// Sequence, command, cwd, exit code and duration.
    #[serde(flatten)]
    pub summary: CommandSummary,
    /// Unix seconds when recorded.
    pub recorded_at: f64,
    /// Stdout (lossy UTF-8 in JSON).
    #[serde(skip_deserializing, serialize_with = "crate::vm::lossy")]
    pub stdout: Vec<u8>,
    /// Stderr.
    #[serde(skip_deserializing, serialize_with = "crate::vm::lossy")]
    pub stderr: Vec<u8>,
}

/// Result of `workspace logs`.
#[derive(Debug, Clone, Serialize)]
pub struct WorkspaceLogs {
    /// Id.
    pub workspace_id: String,
    /// Entries.
    pub count: usize,
    /// Oldest first.
    pub entries: Vec<HistoryEntry>,
}

fn commands_dir(dir: &Path) -> std::path::PathBuf {
    dir.join("commands")
}

/// Records one command (called under the workspace lock).
pub fn append(dir: &Path, summary: &CommandSummary, stdout: &[u8], stderr: &[u8]) -> Result<()> {
    let commands = commands_dir(dir);
    std::fs::create_dir_all(&commands).ctx("create", &commands)?;
    let stem = commands.join(format!("{:06}", summary.sequence));
    write_atomic(&stem.with_extension("stdout"), stdout)?;
    write_atomic(&stem.with_extension("stderr"), stderr)?;
    let entry = HistoryEntry { summary: summary.clone(), recorded_at: unix_now(), stdout: Vec::new(), stderr: Vec::new() };
    write_atomic(&stem.with_extension("json"), &serde_json::to_vec_pretty(&entry).expect("entries serialise"))
}

/// Reads the whole history, oldest first.
pub fn read(dir: &Path, workspace_id: &str) -> Result<WorkspaceLogs> {
    let commands = commands_dir(dir);
    let mut files: Vec<_> =
        std::fs::read_dir(&commands).into_iter().flatten().flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "json")).collect();
    files.sort();
    let mut entries = Vec::new();
    for file in files {
        let bytes = std::fs::read(&file).ctx("read", &file)?;
        let mut entry: HistoryEntry =
            serde_json::from_slice(&bytes).map_err(|e| Error::Corrupt(format!("history entry {} is corrupt: {e}", file.display())))?;
        entry.stdout = std::fs::read(file.with_extension("stdout")).unwrap_or_default();
        entry.stderr = std::fs::read(file.with_extension("stderr")).unwrap_or_default();
        entries.push(entry);
    }
    Ok(WorkspaceLogs { workspace_id: workspace_id.into(), count: entries.len(), entries })
}

/// Forgets the history (reset).
pub fn clear(dir: &Path) -> Result<()> {
    let commands = commands_dir(dir);
    match std::fs::remove_dir_all(&commands) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io("remove", &commands, e)),
        _ => Ok(()),
    }
}
