//! `host_compat`: the pyro agent as a plain host process. No isolation at all — only on
//! explicit opt-in (`--allow-host-compat`).

use std::path::Path;
use std::time::Duration;

use super::spawn::spawn_confined;
use super::{connect_when_listening, remove_stale, LaunchSpec, Launched};
use crate::error::{IoContext, Result};

/// Starts `agent --listen-unix <channel socket> --cwd-root <vm_dir>/root` and connects.
pub async fn launch(agent: &Path, spec: &LaunchSpec, connect_timeout: Duration) -> Result<Launched> {
    let socket = spec.channel_socket();
    remove_stale(&socket);
    let root = spec.vm_dir.join("root");
    std::fs::create_dir_all(&root).ctx("create", &root)?;
    let args = vec!["--listen-unix".into(), socket.display().to_string(), "--cwd-root".into(), root.display().to_string()];
    let mut child = spawn_confined(agent, args, false, &spec.vmm_log(), &spec.serial_log())?;
    let channel = connect_when_listening(&mut child, &socket, connect_timeout, "the host agent", &spec.serial_log()).await?;
    let vmm_pid = child.id();
    Ok(Launched { child, vmm_pid, channel })
}
