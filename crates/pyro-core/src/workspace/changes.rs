//! Change tracking: diff against the create-time baseline, named snapshots, and reset.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::archive::spool_tar;
use super::record::{is_valid_key, WorkspaceState, NAME_PATTERN};
use super::tree::{diff_archives, TreeDiff};
use super::{guest_error, history, status_of, workspace_limits, Workspace, WorkspaceManager, WorkspaceStatus, WORKSPACE_ROOT};
use crate::error::{Error, IoContext, Result};
use crate::fsutil::{unix_now, write_atomic};
use crate::guest::GuestClient;
use crate::vm::{self, record::VmRecord};

/// The implicit snapshot every workspace has.
pub const BASELINE: &str = "baseline";

/// Result of `workspace diff`.
#[derive(Debug, Clone, Serialize)]
pub struct WorkspaceDiff {
    /// Id.
    pub workspace_id: String,
    /// Entries, summary and the combined patch.
    #[serde(flatten)]
    pub diff: TreeDiff,
}

/// One snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotInfo {
    /// Name (`baseline` for the implicit one).
    pub snapshot_name: String,
    /// `baseline` or `named`.
    pub kind: String,
    /// Unix seconds.
    pub created_at: f64,
    /// Archive size in bytes.
    pub size_bytes: u64,
}

/// Result of `snapshot create` / `snapshot delete`.
#[derive(Debug, Clone, Serialize)]
pub struct SnapshotResult {
    /// Id.
    pub workspace_id: String,
    /// The snapshot.
    pub snapshot: SnapshotInfo,
    /// True for delete.
    pub deleted: bool,
}

/// Result of `snapshot list`.
#[derive(Debug, Clone, Serialize)]
pub struct SnapshotList {
    /// Id.
    pub workspace_id: String,
    /// Count.
    pub count: usize,
    /// `baseline` first, then named snapshots oldest first.
    pub snapshots: Vec<SnapshotInfo>,
}

/// Result of `workspace reset`: the status plus what was restored.
#[derive(Debug, Clone, Serialize)]
pub struct ResetResult {
    /// Status after the reset.
    #[serde(flatten)]
    pub status: WorkspaceStatus,
    /// What was restored.
    pub workspace_reset: SnapshotInfo,
}

fn snapshots_dir(dir: &Path) -> PathBuf {
    dir.join("snapshots")
}

fn validate_snapshot_name(name: &str) -> Result<String> {
    let name = name.trim();
    if name.is_empty() {
        return Err(Error::InvalidArgument("snapshot_name must not be empty".into()));
    }
    if !is_valid_key(name) {
        return Err(Error::InvalidArgument(format!("snapshot_name must match {NAME_PATTERN}")));
    }
    Ok(name.to_string())
}

/// Streams `/workspace` out of the guest into a new temporary file in `dir`, within
/// [`workspace_limits`] (a stream past them is cancelled and its partial file removed).
async fn export_tree(client: &GuestClient, dir: &Path) -> Result<tempfile::NamedTempFile> {
    let (spooled, _) = spool_tar(dir, workspace_limits(), |sink| async move { client.tar_export(WORKSPACE_ROOT, sink).await.map_err(guest_error) }).await?;
    Ok(spooled)
}

impl WorkspaceManager {
    /// Compares `/workspace` with the create-time baseline.
    pub async fn diff(&self, id: &str) -> Result<WorkspaceDiff> {
        let ws = self.open(id).await?;
        let client = self.guest(&ws, "workspace_diff").await?;
        let current = export_tree(&client, &ws.dir).await?;
        let diff = diff_archives(&ws.baseline(), current.path(), workspace_limits())?;
        Ok(WorkspaceDiff { workspace_id: id.into(), diff })
    }

    /// Captures `/workspace` under `name`.
    pub async fn create_snapshot(&self, id: &str, name: &str) -> Result<SnapshotResult> {
        let name = validate_snapshot_name(name)?;
        if name == BASELINE {
            return Err(Error::InvalidArgument("snapshot name 'baseline' is reserved".into()));
        }
        let ws = self.open(id).await?;
        let dir = snapshots_dir(&ws.dir);
        let archive = dir.join(format!("{name}.tar"));
        if archive.exists() {
            return Err(Error::Conflict(format!("snapshot '{name}' already exists in workspace '{id}'")));
        }
        let client = self.guest(&ws, "workspace_snapshot_create").await?;
        std::fs::create_dir_all(&dir).ctx("create", &dir)?;
        let staging = export_tree(&client, &dir).await?;
        let info = SnapshotInfo {
            snapshot_name: name.clone(),
            kind: "named".into(),
            created_at: unix_now(),
            size_bytes: std::fs::metadata(staging.path()).map(|m| m.len()).unwrap_or(0),
        };
        // The archive lands first, without replacing one a racing create stored; the
        // record, which makes the snapshot visible, follows.
        staging.persist_noclobber(&archive).map_err(|e| match e.error.kind() {
            std::io::ErrorKind::AlreadyExists => Error::Conflict(format!("snapshot '{name}' already exists in workspace '{id}'")),
            _ => Error::io("store", &archive, e.error),
        })?;
        if let Err(e) = write_atomic(&dir.join(format!("{name}.json")), &serde_json::to_vec_pretty(&info).expect("snapshot info serialises")) {
            let _ = std::fs::remove_file(&archive);
            return Err(e);
        }
        self.touch(id)?;
        Ok(SnapshotResult { workspace_id: id.into(), snapshot: info, deleted: false })
    }

    /// `baseline` plus the named snapshots.
    pub async fn list_snapshots(&self, id: &str) -> Result<SnapshotList> {
        let ws = self.open(id).await?;
        let mut snapshots = vec![self.baseline_info(&ws)];
        let mut named: Vec<SnapshotInfo> = std::fs::read_dir(snapshots_dir(&ws.dir))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .filter_map(|e| serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok())
            .collect();
        named.sort_by(|a, b| a.created_at.total_cmp(&b.created_at).then(a.snapshot_name.cmp(&b.snapshot_name)));
        snapshots.extend(named);
        Ok(SnapshotList { workspace_id: id.into(), count: snapshots.len(), snapshots })
    }

    fn baseline_info(&self, ws: &Workspace) -> SnapshotInfo {
        SnapshotInfo {
            snapshot_name: BASELINE.into(),
            kind: BASELINE.into(),
            created_at: ws.record.created_at,
            size_bytes: std::fs::metadata(ws.baseline()).map(|m| m.len()).unwrap_or(0),
        }
    }

    fn snapshot(&self, ws: &Workspace, name: &str) -> Result<(SnapshotInfo, PathBuf)> {
        if name == BASELINE {
            return Ok((self.baseline_info(ws), ws.baseline()));
        }
        let name = validate_snapshot_name(name)?;
        let dir = snapshots_dir(&ws.dir);
        let missing =
            || Error::not_found_because("snapshot", name.as_str(), format!("snapshot '{name}' does not exist in workspace '{}'", ws.record.workspace_id));
        let info: SnapshotInfo = serde_json::from_slice(&std::fs::read(dir.join(format!("{name}.json"))).map_err(|_| missing())?).map_err(|_| missing())?;
        Ok((info, dir.join(format!("{name}.tar"))))
    }

    /// Deletes a named snapshot (`baseline` cannot be deleted).
    pub async fn delete_snapshot(&self, id: &str, name: &str) -> Result<SnapshotResult> {
        if name.trim() == BASELINE {
            return Err(Error::InvalidArgument("the baseline snapshot cannot be deleted".into()));
        }
        let ws = self.open(id).await?;
        let (info, archive) = self.snapshot(&ws, name.trim())?;
        std::fs::remove_file(&archive).ctx("remove", &archive)?;
        let meta = archive.with_extension("json");
        std::fs::remove_file(&meta).ctx("remove", &meta)?;
        self.touch(id)?;
        Ok(SnapshotResult { workspace_id: id.into(), snapshot: info, deleted: true })
    }

    /// Recreates the sandbox from the environment and restores `/workspace` from a
    /// snapshot; history is cleared and `reset_count` bumped.
    pub async fn reset(&self, id: &str, snapshot: &str) -> Result<ResetResult> {
        // Held through teardown, the new disk and the boot: a racing start or reset waits.
        let _lifecycle = self.lifecycle_lock(id).await?;
        let ws = self.open(id).await?;
        let (info, archive) = self.snapshot(&ws, snapshot.trim())?;
        let installed = self.vms.ensure_installed(&ws.record.environment, &crate::events::ignore).await?;
        self.forget_services(&ws).await?;
        let vm_record = VmRecord::load(&ws.vm_dir())?;
        // The disk is about to be replaced: never under a guest that would not stop.
        if !vm::stop_supervisor(&vm_record, vm::Teardown::Discard).await {
            return Err(Error::Vmm(format!("workspace '{id}' would not stop; it was not reset")));
        }
        vm::refreshed(&ws.vm_dir())?;
        self.update_record(id, |r| {
            r.state = WorkspaceState::Stopped;
            Ok(())
        })?;
        let mut vm_record = VmRecord::load(&ws.vm_dir())?;
        vm_record.launch.restore = self.fresh_disk(&ws, &installed, vm_record.backend, vm_record.launch.debug_console, &crate::events::ignore).await?;
        vm_record.save()?;
        let client = self.boot(&ws).await?;
        let file = tokio::fs::File::open(&archive).await.ctx("open", &archive)?;
        client.tar_import(WORKSPACE_ROOT, file).await.map_err(guest_error)?;
        history::clear(&ws.dir)?;
        let (_, record) = self.update_record(id, |r| {
            let now = unix_now();
            r.state = WorkspaceState::Started;
            r.reset_count += 1;
            r.last_reset_at = Some(now);
            r.last_activity_at = now;
            r.command_count = 0;
            r.last_command = None;
            r.last_error = None;
            Ok(())
        })?;
        Ok(ResetResult { status: status_of(&record, vm_record.backend.name(), vm_record.dir()), workspace_reset: info })
    }
}
