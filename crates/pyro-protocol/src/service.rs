//! Service payloads: long-running named processes the agent starts in their own session,
//! watches until they end and captures the output of into bounded logs, so a service
//! outlives the call that started it and the host never polls PIDs.
//!
//! The requests are [`crate::Request::ServiceStart`], [`crate::Request::ServiceList`],
//! [`crate::Request::ServiceLogs`] and [`crate::Request::ServiceStop`] (capability
//! `service`); the answers carry a [`ServiceInfo`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// When a service counts as ready. Probes run in the guest; the JSON shape is the one
/// the host's option type uses (`{"type": "file", "path": …}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ReadinessProbe {
    /// Ready when this absolute guest path exists.
    File {
        /// Absolute guest path.
        path: String,
    },
    /// Ready when `host:port` accepts a TCP connection (within 1 s per attempt).
    Tcp {
        /// `host:port`.
        address: String,
    },
    /// Ready when an HTTP/1.1 GET of this `http://` URL answers 200–399 (2 s per attempt).
    Http {
        /// The URL.
        url: String,
    },
    /// Ready when this command (`/bin/sh -lc`, service cwd and environment) exits 0
    /// (10 s per attempt).
    Command {
        /// The command line.
        command: String,
    },
}

/// Starts a service and waits for its readiness (or its failure).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStartRequest {
    /// Service name (`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`).
    pub name: String,
    /// Shell command line, run with `/bin/sh -lc`.
    pub command: String,
    /// Absolute working directory (created if missing).
    pub cwd: String,
    /// Extra environment variables.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Installed secrets to put in the service's environment: secret name → variable.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secret_env: BTreeMap<String, String>,
    /// The probe; `None` = ready as soon as the process is started.
    #[serde(default)]
    pub readiness: Option<ReadinessProbe>,
    /// Give up on readiness after this long (the group is then stopped, `readiness_timeout`).
    pub ready_timeout_ms: u64,
    /// Pause between probe attempts.
    pub ready_interval_ms: u64,
}

/// Lifecycle state of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceState {
    /// The process runs.
    Running,
    /// It ended by itself (`exit_code` says how).
    Exited,
    /// It was stopped on request (`stop_reason` `sigterm` or `sigkill`).
    Stopped,
    /// It never became ready (`stop_reason` `process_exited_before_ready` or
    /// `readiness_timeout`).
    Failed,
}

impl ServiceState {
    /// The lower-case name results carry.
    pub fn name(self) -> &'static str {
        match self {
            ServiceState::Running => "running",
            ServiceState::Exited => "exited",
            ServiceState::Stopped => "stopped",
            ServiceState::Failed => "failed",
        }
    }
}

/// What the agent knows about one service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceInfo {
    /// Service name.
    pub name: String,
    /// State now.
    pub state: ServiceState,
    /// Guest PID of the service's shell (its session and process group leader).
    pub pid: Option<u32>,
    /// Unix milliseconds (guest clock) of the start.
    pub started_at_ms: u64,
    /// Unix milliseconds when the probe first succeeded (or of the start, without a probe).
    pub ready_at_ms: Option<u64>,
    /// Unix milliseconds when the process ended.
    pub ended_at_ms: Option<u64>,
    /// Exit code once ended; 128+N when killed by signal N.
    pub exit_code: Option<i32>,
    /// `sigterm`, `sigkill`, `process_exited_before_ready` or `readiness_timeout`.
    pub stop_reason: Option<String>,
    /// Stdout bytes produced so far (after redaction, including dropped ones).
    pub stdout_bytes: u64,
    /// Stderr bytes produced so far (after redaction, including dropped ones).
    pub stderr_bytes: u64,
}

/// Result of [`crate::Request::ServiceList`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceListResult {
    /// Every service of this VM's lifetime the agent still holds, sorted by name.
    pub services: Vec<ServiceInfo>,
}

/// Result of [`crate::Request::ServiceLogs`]; the log bytes came before it as
/// [`crate::DataChannel::Stdout`] and [`crate::DataChannel::Stderr`] data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceLogsResult {
    /// The service.
    pub service: ServiceInfo,
    /// Stdout held more lines than asked for, or lost its oldest bytes to the cap.
    pub stdout_truncated: bool,
    /// Stderr held more lines than asked for, or lost its oldest bytes to the cap.
    pub stderr_truncated: bool,
}
