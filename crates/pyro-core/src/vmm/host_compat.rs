//! `host_compat`: the pyro agent as a plain host process. No isolation at all — only on
//! explicit opt-in (`--allow-host-compat`).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::net::UnixStream;

use super::{remove_stale, Launched, LaunchSpec};
use crate::error::{Error, IoContext, Result};

/// Starts `agent --listen-unix <channel socket> --cwd-root <vm_dir>/root` and connects.
pub async fn launch(agent: &Path, spec: &LaunchSpec, connect_timeout: Duration) -> Result<Launched> {
    let socket = spec.channel_socket();
    remove_stale(&socket);
    let root = spec.vm_dir.join("root");
    std::fs::create_dir_all(&root).ctx("create", &root)?;
    let log = std::fs::File::create(spec.serial_log()).ctx("create", spec.serial_log())?;
    let mut child = tokio::process::Command::new(agent)
        .arg("--listen-unix")
        .arg(&socket)
        .arg("--cwd-root")
        .arg(&root)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .ctx("start", agent)?;
    let deadline = tokio::time::Instant::now() + connect_timeout;
    loop {
        if let Ok(stream) = UnixStream::connect(&socket).await {
            return Ok(Launched { child, channel: stream });
        }
        if let Some(status) = child.try_wait().ctx("wait for", agent)? {
            return Err(Error::Vmm(format!("host agent exited during startup ({status})")));
        }
        if tokio::time::Instant::now() >= deadline {
            let _ = child.start_kill();
            return Err(Error::Vmm("host agent did not open its socket in time".into()));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
