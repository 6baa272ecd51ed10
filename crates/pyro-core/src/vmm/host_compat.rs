//! `host_compat`: the pyro agent as a plain host process. No isolation at all — only on
//! explicit opt-in (`--allow-host-compat`).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;


use super::{connect_when_listening, remove_stale, Launched, LaunchSpec};
use crate::error::{IoContext, Result};

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
    let channel = connect_when_listening(&mut child, &socket, connect_timeout, "the host agent", &spec.serial_log()).await?;
    Ok(Launched { child, channel })
}
