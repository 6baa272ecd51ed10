//! Core [`Event`]s as MCP progress notifications, sent only when the request carried a
//! progress token. The core calls its progress callback synchronously; the callback
//! queues a message and one task per call forwards the queue to the client in order, so
//! a slow client never blocks the guest work.

use pyro_core::events::Event;
use rmcp::model::{ProgressNotificationParam, ProgressToken};
use rmcp::service::Peer;
use rmcp::RoleServer;
use tokio::sync::mpsc;

/// The sending half of one call's progress queue.
#[derive(Clone)]
pub(crate) struct ProgressSender {
    queue: mpsc::UnboundedSender<String>,
}

impl ProgressSender {
    /// Starts forwarding progress for `token` to `peer`; the forwarder ends when the
    /// last sender is dropped (the call is over).
    pub fn start(peer: Peer<RoleServer>, token: ProgressToken) -> Self {
        let (queue, mut messages) = mpsc::unbounded_channel::<String>();
        tokio::spawn(async move {
            let mut count = 0u32;
            while let Some(message) = messages.recv().await {
                count += 1;
                let param = ProgressNotificationParam::new(token.clone(), f64::from(count)).with_message(message);
                if let Err(error) = peer.notify_progress(param).await {
                    tracing::debug!(%error, "progress notification not delivered");
                    break;
                }
            }
        });
        Self { queue }
    }

    /// Queues the message for `event`.
    pub fn send(&self, event: &Event) {
        let _ = self.queue.send(message(event));
    }
}

/// One line for a person watching the call (the MCP face's rendering of core events).
pub(crate) fn message(event: &Event) -> String {
    match event {
        Event::RunCreate { environment } => format!("creating a VM from {environment}"),
        Event::RunStart { vm_id, backend, isolation } => format!("booting VM {vm_id} on {backend} (isolation: {isolation})"),
        Event::RunExecute { vm_id, start_mode, .. } => format!("running the command in VM {vm_id} ({start_mode})"),
        Event::TemplateBuild { environment, vcpu_count, mem_mib, .. } => {
            format!("building a warm template of {environment} ({vcpu_count} vCPU, {mem_mib} MiB) once; later starts restore it")
        }
        Event::TemplateReady { environment, build_ms, .. } => format!("warm template of {environment} ready after {build_ms} ms"),
        Event::WorkspaceBoot { workspace_id, backend, isolation } => format!("booting workspace {workspace_id} on {backend} (isolation: {isolation})"),
        Event::KvmCheck => "checking once whether KVM boots guests on this host".into(),
        Event::PullInstall { environment } => format!("installing environment {environment}"),
        Event::PullAgentChanged { environment } => format!("{environment} was built with a different pyro-agent; rebuilding it"),
        Event::PullDownload { environment, registry } => format!("downloading {environment} from {registry}"),
        Event::PullLayer { index, count, bytes } => format!("downloaded layer {index}/{count} ({bytes} bytes)"),
        Event::PullRegistryUnavailable { reason } => format!("registry unavailable ({reason}); building locally"),
        Event::PullBuild { environment } => format!("building environment {environment} locally"),
        Event::KernelBuild { .. } => "building the guest kernel (a few minutes, once per host)".into(),
        Event::BuildLog { step, line } => format!("{step}: {line}"),
        Event::PullReady { environment } => format!("environment {environment} is ready"),
        Event::PublishLayer { name, bytes } => format!("pushed layer {name} ({bytes} bytes)"),
        Event::PublishManifest { reference, digest } => format!("pushed {reference} ({digest})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_phases_read_as_sentences() {
        assert_eq!(message(&Event::RunCreate { environment: "debian:12".into() }), "creating a VM from debian:12");
        let start = Event::RunStart { vm_id: "abc".into(), backend: "qemu-tcg", isolation: "tcg" };
        assert_eq!(message(&start), "booting VM abc on qemu-tcg (isolation: tcg)");
    }
}
