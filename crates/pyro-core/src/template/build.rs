//! Building a warm template: boot a guest to its agent's hello on the disk layout its
//! users will have and save its whole state (QEMU migration through a
//! descriptor pyro hands over, so QEMU needs no access to the cache).

use std::os::fd::AsFd;
use std::path::Path;
use std::time::{Duration, Instant};

use pyro_protocol::{read_frame, write_frame, ExecRequest, Frame, FrameKind, Request};
use serde_json::json;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

use super::key::{qemu_for, TemplateKey};
use super::record::TemplateMeta;
use super::spec::{TemplateFor, TemplateKind, STATE_FILE};
use crate::error::{Error, Result};
use crate::fsutil::unix_now;
use crate::network::NetworkSettings;
use crate::vm::record::VmRecord;
use crate::vm::supervisor;
use crate::vmm::qmp::Qmp;
use crate::vmm::saved_state;
use crate::vmm::select::Selection;
use crate::vmm::{kill_group, LaunchSpec};

/// How long answers to the boot's last knocks may take to arrive before the state is
/// saved, so that the saved channel holds no half-sent frame.
const QUIET_PERIOD: Duration = Duration::from_millis(400);
/// Upper bound on saving one state (a few tens of MB at memory speed).
const SAVE_TIMEOUT: Duration = Duration::from_secs(120);

/// Builds the template of `spec` in `staging` (its disk, its state) and describes it.
pub(super) async fn build(spec: &TemplateFor<'_>, key: &TemplateKey, staging: &Path) -> Result<TemplateMeta> {
    let started = Instant::now();
    let qemu = qemu_for(spec.backend)?;
    let disk = staging.join(spec.kind.disk_file());
    match spec.kind {
        TemplateKind::Ephemeral => {
            qemu.prepare_disk(&spec.installed.rootfs, staging)?;
        }
        TemplateKind::Workspace => crate::guest_disk::grown_copy(&spec.installed.rootfs, &disk)?,
    }
    // Sockets and logs go to a short private directory: a unix socket path has at most
    // 107 bytes, and the cache may sit deep in the tree.
    let run_dir = tempfile::Builder::new().prefix("pyro-template-").tempdir().map_err(|e| Error::io("create", "a temporary directory", e))?;
    let launch = LaunchSpec {
        vm_dir: run_dir.path().to_path_buf(),
        kernel: spec.installed.kernel.clone(),
        disk,
        vcpu_count: spec.vcpu_count,
        mem_mib: spec.mem_mib,
        debug_console: false,
        restore: None,
        network: spec.network,
    };
    let selection = Selection { backend: spec.backend, reason: "warm template build".into() };
    let mut record = VmRecord::new("template0000".into(), spec.installed, launch.clone(), 600, selection, false);
    // The template's guest configures its NIC like any networked guest (each start then
    // gives it a fresh MAC); no gateway serves it while it is being saved.
    record.network = spec.network.then(NetworkSettings::default);
    let (mut child, _hello, channel) =
        supervisor::boot(&record, supervisor::boot_timeout()).await.map_err(|reason| Error::Vmm(format!("the template's guest did not boot: {reason}")))?;
    let saved = save_state(&launch, channel, &staging.join(STATE_FILE)).await;
    kill_group(&mut child);
    let _ = child.wait().await;
    let (state_sha256, state_bytes) = saved.map_err(|e| Error::Vmm(format!("{e}; serial log: {}", supervisor::serial_tail(&record))))?;
    Ok(TemplateMeta { key: key.clone(), state_sha256, state_bytes, created_at: unix_now(), build_ms: started.elapsed().as_millis() as u64 })
}

/// Runs one command in the template's guest before it is saved, so that what every
/// first command needs (the shell, the C library, the login environment) is already in
/// the restored guest's memory instead of being read from disk.
async fn warm_up(read: &mut OwnedReadHalf, write: &mut OwnedWriteHalf) -> Result<()> {
    const STREAM: u32 = 1;
    let request = Request::Exec(ExecRequest {
        command: "true".into(),
        env: Default::default(),
        cwd: None,
        timeout_ms: 30_000,
        max_output_bytes: 1 << 16,
        secret_env: Default::default(),
    });
    let failed = |e: String| Error::Vmm(format!("the template's guest did not run its first command: {e}"));
    write_frame(write, &Frame::json(STREAM, FrameKind::Request, &request)).await.map_err(|e| failed(e.to_string()))?;
    let answered = async {
        loop {
            match read_frame(read).await {
                Ok(Some(frame)) if frame.stream == STREAM && frame.kind == FrameKind::Response => return Ok(()),
                Ok(Some(_)) => continue,
                Ok(None) => return Err(failed("the channel closed".into())),
                Err(e) => return Err(failed(e.to_string())),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), answered).await.map_err(|_| failed("no answer within 60s".into()))?
}

/// Migrates the guest's state into `state` (QEMU stops the guest at the end);
/// returns its digest and size. The agent channel stays connected until it is saved.
async fn save_state(launch: &LaunchSpec, channel: UnixStream, state: &Path) -> Result<(String, u64)> {
    let (mut read, mut write) = channel.into_split();
    warm_up(&mut read, &mut write).await?;
    let _ = tokio::time::timeout(QUIET_PERIOD, async { while let Ok(Some(_)) = read_frame(&mut read).await {} }).await;
    let mut qmp = Qmp::connect(&launch.monitor_socket(), Duration::from_secs(10)).await?;
    // The guest is not paused first: a state saved from a running guest restores
    // running (QEMU stops it for the final pass). Migration is throttled by default; an
    // idle guest can go at memory speed.
    qmp.execute("migrate-set-parameters", json!({ "max-bandwidth": 64u64 << 30 })).await?;
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().map_err(|e| Error::Vmm(format!("cannot make a socket pair: {e}")))?;
    qmp.pass_fd("pyro-state", theirs.as_fd()).await?;
    drop(theirs);
    ours.set_nonblocking(true).map_err(|e| Error::Vmm(format!("cannot set up the state socket: {e}")))?;
    let ours = UnixStream::from_std(ours).map_err(|e| Error::Vmm(format!("cannot set up the state socket: {e}")))?;
    qmp.execute("migrate", json!({ "uri": "fd:pyro-state" })).await?;
    let saved = tokio::time::timeout(SAVE_TIMEOUT, saved_state::save(ours, state))
        .await
        .map_err(|_| Error::Vmm(format!("saving the template's state took longer than {}s", SAVE_TIMEOUT.as_secs())))??;
    // The stream ended; QEMU must also call the migration complete.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = qmp.execute("query-migrate", json!({})).await?;
        match status.get("status").and_then(|s| s.as_str()).unwrap_or("") {
            "completed" => return Ok(saved),
            "failed" | "cancelled" => {
                let why = status.get("error-desc").and_then(|s| s.as_str()).unwrap_or("no reason given");
                return Err(Error::Vmm(format!("QEMU could not save the template's state: {why}")));
            }
            _ if Instant::now() >= deadline => return Err(Error::Vmm("QEMU never reported the template's state as saved".into())),
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}
