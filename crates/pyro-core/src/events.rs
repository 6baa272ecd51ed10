//! What the core reports while an operation runs, as typed values: phase changes,
//! download and build progress, and live guest output. The core never formats these
//! for a person; each face renders them its own way (the CLI as `[run] phase=…` lines on
//! stderr, the MCP server as progress notifications, the SDK as callbacks).
//!
//! This module sits on the bottom floor: it depends on nothing else in the crate.

use std::path::PathBuf;

use serde::Serialize;

/// Receives the [`Event`]s of one operation, in order.
pub type Progress<'a> = &'a (dyn Fn(&Event) + Send + Sync);

/// A [`Progress`] that drops every event.
pub fn ignore(_: &Event) {}

/// A chunk of live command output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputChunk<'a> {
    /// Bytes the command wrote to standard output.
    Stdout(&'a [u8]),
    /// Bytes the command wrote to standard error.
    Stderr(&'a [u8]),
}

/// Receives live command output (stdout/stderr chunks) while a command runs; `None`
/// collects it into the result only.
pub type OutputSink<'a> = Option<&'a (dyn Fn(OutputChunk<'_>) + Send + Sync)>;

/// One thing that happened during an operation. Serialised with an `event` tag
/// (`{"event": "run_start", "vm_id": …}`) for faces that forward events as data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// `run`: the VM of `environment` is being created.
    RunCreate {
        /// Environment name.
        environment: String,
    },
    /// `run`: the VM is booting on `backend`.
    RunStart {
        /// The new VM's id.
        vm_id: String,
        /// Backend name (`qemu-tcg`, `firecracker`, …).
        backend: &'static str,
        /// Isolation the backend gives (`kvm`, `tcg`, `none`).
        isolation: &'static str,
    },
    /// `run`: the guest is up and the command is running in it.
    RunExecute {
        /// The VM's id.
        vm_id: String,
        /// How the guest came up: `restored` (from a warm template) or `booted`.
        start_mode: String,
        /// Milliseconds from the VMM's launch to the agent's hello.
        boot_ms: Option<u64>,
    },
    /// A warm template is being built (once per environment, backend and size; later
    /// starts restore it instead of booting).
    TemplateBuild {
        /// Environment name.
        environment: String,
        /// Virtual CPUs.
        vcpu_count: u32,
        /// Memory in MiB.
        mem_mib: u32,
        /// Disk layout (`ephemeral` or `workspace`).
        kind: &'static str,
    },
    /// The warm template is saved.
    TemplateReady {
        /// Environment name.
        environment: String,
        /// How long building it took.
        build_ms: u64,
        /// Size of the saved state.
        state_bytes: u64,
    },
    /// `workspace create`: the workspace's guest is booting.
    WorkspaceBoot {
        /// The new workspace's id.
        workspace_id: String,
        /// Backend name.
        backend: &'static str,
        /// Isolation the backend gives.
        isolation: &'static str,
    },
    /// The one-time check whether KVM really boots guests on this host is running.
    KvmCheck,
    /// An environment is being installed.
    PullInstall {
        /// Environment name.
        environment: String,
    },
    /// The installed environment was built with another guest agent and is rebuilt.
    PullAgentChanged {
        /// Environment name.
        environment: String,
    },
    /// The environment is being downloaded from a registry.
    PullDownload {
        /// Environment name.
        environment: String,
        /// Registry location.
        registry: String,
    },
    /// One layer of the environment arrived from the registry.
    PullLayer {
        /// 1-based layer number.
        index: usize,
        /// Number of layers.
        count: usize,
        /// Layer size in bytes.
        bytes: u64,
    },
    /// The registry could not be used, so the environment is built locally instead.
    PullRegistryUnavailable {
        /// Why the registry could not be used.
        reason: String,
    },
    /// The environment is being built locally.
    PullBuild {
        /// Environment name.
        environment: String,
    },
    /// The guest kernel is being compiled (once per host; minutes).
    KernelBuild {
        /// The kernel source tree.
        source: PathBuf,
    },
    /// One line of a local build's log.
    BuildLog {
        /// The build step (`build-kernel`, `build-rootfs`).
        step: &'static str,
        /// The line, as the build tool wrote it (untrusted text).
        line: String,
    },
    /// The environment is installed and ready.
    PullReady {
        /// Environment name.
        environment: String,
    },
    /// `env publish`: one artifact layer was pushed.
    PublishLayer {
        /// Artifact name.
        name: String,
        /// Its size in bytes.
        bytes: u64,
    },
    /// `env publish`: the manifest was pushed.
    PublishManifest {
        /// The reference pushed.
        reference: String,
        /// The manifest digest.
        digest: String,
    },
}
