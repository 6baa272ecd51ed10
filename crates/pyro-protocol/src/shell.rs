//! Payloads of the `shell_*` requests: persistent PTY shells that live in the agent for the
//! VM's life, so any number of later host calls (each its own CLI process) can read and
//! write the same shell. Kept apart from `message.rs` so the shell surface reads in one
//! place; the enums there carry these types.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// [`crate::Request::ShellOpen`]: start `bash --noprofile --norc -i` (else `/bin/sh -i`) on a
/// new PTY in its own session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShellOpenRequest {
    /// Id chosen by the host (unique in the VM).
    pub shell_id: String,
    /// Working directory (created if missing).
    pub cwd: String,
    /// Terminal columns (positive).
    pub cols: u16,
    /// Terminal rows (positive).
    pub rows: u16,
    /// Installed secrets to put in the shell's environment: secret name → variable.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secret_env: BTreeMap<String, String>,
}

/// [`crate::Request::ShellRead`]: output from a cursor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShellReadRequest {
    /// Shell id.
    pub shell_id: String,
    /// Character offset into everything the shell printed (redacted) since it opened.
    pub cursor: u64,
    /// Most characters to return (the agent may return fewer: one response is one frame).
    pub max_chars: u64,
    /// Wait until no output arrived for this long (or `max_chars` are available, or the
    /// shell ended) before answering; `None` answers at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_for_idle_ms: Option<u64>,
}

/// [`crate::Request::ShellWrite`]: bytes for the shell's terminal input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShellWriteRequest {
    /// Shell id.
    pub shell_id: String,
    /// Exactly what to type (the host adds any newline).
    pub input: String,
}

/// A signal a shell's foreground process group can be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ShellSignal {
    /// `SIGHUP`.
    Hup,
    /// `SIGINT`.
    Int,
    /// `SIGTERM`.
    Term,
    /// `SIGKILL`.
    Kill,
}

impl ShellSignal {
    /// Every signal, in the order messages list them.
    pub const ALL: [ShellSignal; 4] = [ShellSignal::Hup, ShellSignal::Int, ShellSignal::Term, ShellSignal::Kill];

    /// The name without `SIG` (`HUP`, `INT`, `TERM`, `KILL`).
    pub fn name(self) -> &'static str {
        match self {
            ShellSignal::Hup => "HUP",
            ShellSignal::Int => "INT",
            ShellSignal::Term => "TERM",
            ShellSignal::Kill => "KILL",
        }
    }

    /// The signal called `name` (exact, upper case).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// [`crate::Request::ShellSignal`]: signal the foreground process group of a shell's PTY.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShellSignalRequest {
    /// Shell id.
    pub shell_id: String,
    /// The signal.
    pub signal: ShellSignal,
}

/// Whether a shell's process still runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShellState {
    /// The shell process runs.
    Running,
    /// The shell process ended (see `exit_code`).
    Exited,
}

impl ShellState {
    /// The word results use.
    pub fn name(self) -> &'static str {
        match self {
            ShellState::Running => "running",
            ShellState::Exited => "exited",
        }
    }
}

/// One shell as the agent knows it ([`crate::Response::Shell`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShellInfo {
    /// Shell id.
    pub shell_id: String,
    /// Working directory it started in.
    pub cwd: String,
    /// Terminal columns.
    pub cols: u16,
    /// Terminal rows.
    pub rows: u16,
    /// Running or exited.
    pub state: ShellState,
    /// Exit code once exited (128+N when killed by signal N).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Milliseconds since the process ended, measured on the guest's monotonic clock (the
    /// host turns it into a timestamp; the guest's wall clock may be off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_ms_ago: Option<u64>,
    /// Characters the shell printed since it opened (the end of its output).
    pub end_cursor: u64,
}

/// [`crate::Response::ShellRead`]: a slice of a shell's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShellReadResult {
    /// The shell after the read.
    pub shell: ShellInfo,
    /// Where the output really starts: the requested cursor, or the oldest character
    /// still kept when the requested one fell out of the scrollback (or the end, when it
    /// lay beyond it).
    pub cursor: u64,
    /// Cursor after the last returned character (`cursor` + its length in characters).
    pub next_cursor: u64,
    /// The output, redacted of every installed secret.
    pub output: String,
}
