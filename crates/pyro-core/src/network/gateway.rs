//! The supervisor's gateway task: connects to the VMM's end of the guest NIC
//! ([`crate::vmm::LaunchSpec::network_socket`]) and runs the `pyro-net` gateway on it for the VM's life,
//! its events going to the network log.

use std::path::{Path, PathBuf};

use std::time::Duration;

use tokio::net::UnixStream;
use tokio::sync::mpsc;

use super::NetworkSettings;

/// How long the VMM may take to open its end of the NIC after the agent channel is up.
const CONNECT_WITHIN: Duration = Duration::from_secs(10);
/// Events queued for the log writer at most; the gateway drops what does not fit.
const EVENT_QUEUE: usize = 1024;

/// Runs the gateway of the VM in `vm_dir` until the VMM closes the NIC.
pub async fn serve(vm_dir: PathBuf, socket: PathBuf, settings: NetworkSettings) {
    let link = match connect(&socket).await {
        Ok(link) => link,
        Err(e) => {
            tracing::warn!("guest network unavailable: cannot connect to {}: {e}", socket.display());
            return;
        }
    };
    let (events, rx) = mpsc::channel(EVENT_QUEUE);
    let log = tokio::spawn(super::log::record_events(vm_dir, rx));
    let gateway = pyro_net::Gateway::new(super::addresses(), settings.policy(), pyro_net::Limits::default(), events);
    if let Err(e) = gateway.run(link).await {
        tracing::warn!("guest network ended: {e}");
    }
    let _ = log.await;
}

async fn connect(socket: &Path) -> std::io::Result<UnixStream> {
    let deadline = tokio::time::Instant::now() + CONNECT_WITHIN;
    loop {
        match UnixStream::connect(socket).await {
            Ok(stream) => return Ok(stream),
            Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}
