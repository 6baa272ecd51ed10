//! Errors of the guest channel.

use std::path::PathBuf;
use std::time::Duration;

use pyro_protocol::FrameError;

/// Why a call to the guest agent failed. `Display` is a user-facing one-liner.
#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    /// The connection to the agent is gone (VM stopped, agent died, channel closed);
    /// every pending and later call fails with this.
    #[error("guest channel closed")]
    ChannelClosed,
    /// No Hello arrived within the deadline given to [`super::GuestClient::connect`]:
    /// the VM is still booting, or the agent or the supervisor in front of it is stopped
    /// or hung (a stopped supervisor still accepts connections).
    #[error("the guest agent did not say hello within {} (the VM or its supervisor is not responding)", seconds(.0))]
    HelloTimeout(Duration),
    /// A call hit its host-side deadline; it was cancelled in the guest.
    #[error("the guest agent did not answer {op} within {}", seconds(after))]
    Timeout {
        /// The call (`exec`, `read_file`, …).
        op: &'static str,
        /// The deadline.
        after: Duration,
    },
    /// A streaming call (tar import/export) made no progress for too long; it was
    /// cancelled in the guest.
    #[error("the guest agent made no progress on {op} for {}", seconds(idle))]
    Stalled {
        /// The call.
        op: &'static str,
        /// How long nothing moved.
        idle: Duration,
    },
    /// The caller did not consume a call's data for too long (its queue stayed full), so
    /// the host stopped buffering it and cancelled the call to keep the other calls on the
    /// connection going.
    #[error("{op} was cancelled: its output was not consumed for {}", seconds(after))]
    SlowConsumer {
        /// The call.
        op: &'static str,
        /// How long the queue stayed full.
        after: Duration,
    },
    /// The agent speaks a protocol version older than the oldest this pyro supports.
    #[error(
        "guest agent speaks protocol version {agent}, older than the oldest this pyro supports ({min_supported}; \
         current {current}); {UPDATE_HINT}"
    )]
    ProtocolMismatch {
        /// The agent's version.
        agent: u32,
        /// [`pyro_protocol::MIN_SUPPORTED_PROTOCOL_VERSION`].
        min_supported: u32,
        /// Ours ([`pyro_protocol::PROTOCOL_VERSION`]).
        current: u32,
    },
    /// The agent cannot serve an operation: it did not announce the capability (it is
    /// older than this pyro), or it answered that it does not know the request. Nothing
    /// was done in the guest.
    #[error(
        "the guest agent (pyro-agent {agent_version}, protocol {agent_protocol}) does not support {op}: {reason}; \
         this pyro speaks protocol {}. {UPDATE_HINT}",
        pyro_protocol::PROTOCOL_VERSION
    )]
    Unavailable {
        /// The call (`exec`, `tar_export`, …).
        op: String,
        /// The agent's protocol version (from its Hello).
        agent_protocol: u32,
        /// The agent's version string (from its Hello).
        agent_version: String,
        /// Why: the missing capability, or the agent's own answer.
        reason: String,
    },
    /// The agent answered with a response kind this pyro does not know (a newer agent).
    /// Only that call failed; the connection stays usable.
    #[error("the guest agent answered {op} with an unknown response kind {tag:?} (it speaks a newer protocol than this pyro)")]
    UnknownResponse {
        /// The call.
        op: &'static str,
        /// The response's `result` tag.
        tag: String,
    },
    /// The agent refused or failed the request; the message is the agent's own.
    #[error("{0}")]
    Agent(String),
    /// The agent answered something that makes no sense for the request.
    #[error("guest agent protocol error: {0}")]
    Protocol(String),
    /// The byte stream to the agent failed or carried undecodable frames.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// Connecting to the guest channel's socket failed.
    #[error("cannot connect to the guest channel {}: {source}", path.display())]
    Connect {
        /// Socket path.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Firecracker's vsock bridge did not accept the port.
    #[error("vsock unix bridge rejected port {port}: {line}")]
    VsockRejected {
        /// Guest port asked for.
        port: u32,
        /// What the bridge answered instead of `OK …`.
        line: String,
    },
    /// A local reader or writer (archive source or destination) failed.
    #[error("{context}: {source}")]
    Local {
        /// What was being done.
        context: &'static str,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// How to move a workspace onto the current agent: the workspace disk keeps the agent it
/// was created with, and `reset` rebuilds the disk from the installed environment.
pub const UPDATE_HINT: &str = "A workspace keeps the guest agent its disk was created with; to move it onto the current \
     agent, `pyro workspace snapshot create <id> <name>` then `pyro workspace reset <id> --snapshot <name>` \
     (if the environment itself was installed with an older agent, reinstall it first: `pyro env pull <environment> --force`)";

fn seconds(d: &Duration) -> String {
    let (secs, millis) = (d.as_secs(), d.subsec_millis());
    if millis == 0 {
        format!("{secs}s")
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

impl GuestError {
    /// True when the channel itself is unusable (as opposed to a refused request).
    pub fn is_channel_error(&self) -> bool {
        matches!(self, Self::ChannelClosed | Self::Frame(_) | Self::Connect { .. } | Self::VsockRejected { .. })
    }

    /// True when the agent lacks the operation ([`GuestError::Unavailable`]); the core
    /// reports it with kind `unavailable`.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }
}
