//! The interactive-shell tools: open a PTY shell in a started workspace, read its output
//! by cursor (raw or plain-rendered, optionally after an idle wait), type into it, signal
//! it and close it. Each is a thin call of the [`Pyro`] method `pyro workspace shell …`
//! uses; shell output goes through the inline-output cap like command output.

use std::collections::BTreeMap;
use std::sync::Arc;

use pyro_core::workspace::shells::{OpenShellOptions, ReadShellOptions};
use pyro_core::Pyro;
use schemars::JsonSchema;
use serde::Deserialize;

use super::def::{default_workspace_path, tool, Call, Effect, Spec, ToolDef};

/// The shell tools, in any order (profiles order them).
pub(crate) fn tools() -> Vec<ToolDef> {
    let spec = |name, title, description, effect, idempotent| Spec { name, title, description, effect, idempotent };
    vec![
        tool(
            spec("shell_open", "Open a shell in a workspace", "Open a persistent interactive shell inside one workspace.", Effect::Additive, false),
            |pyro: Arc<Pyro>, a: Open, _: Call| async move {
                let options = OpenShellOptions { cwd: a.cwd, cols: a.cols, rows: a.rows, secret_env: a.secret_env.unwrap_or_default() };
                pyro.open_shell(&a.workspace_id, &options).await
            },
        ),
        tool(
            spec("shell_read", "Read a shell's output", "Read merged PTY output from a workspace shell.", Effect::ReadOnly, true),
            |pyro: Arc<Pyro>, a: Read, _: Call| async move {
                let options = ReadShellOptions { cursor: a.cursor, max_chars: a.max_chars, plain: a.plain, wait_for_idle_ms: a.wait_for_idle_ms };
                pyro.read_shell(&a.workspace_id, &a.shell_id, &options).await
            },
        ),
        tool(
            spec("shell_write", "Type into a shell", "Write text input to a persistent workspace shell.", Effect::Additive, false),
            |pyro: Arc<Pyro>, a: Write, _: Call| async move { pyro.write_shell(&a.workspace_id, &a.shell_id, &a.input, a.append_newline).await },
        ),
        tool(
            spec("shell_signal", "Signal a shell", "Send a signal to the shell process group.", Effect::Destructive, false),
            |pyro: Arc<Pyro>, a: Signal, _: Call| async move { pyro.signal_shell(&a.workspace_id, &a.shell_id, &a.signal_name).await },
        ),
        tool(
            spec("shell_close", "Close a shell", "Close a persistent workspace shell.", Effect::Destructive, true),
            |pyro: Arc<Pyro>, a: ShellId, _: Call| async move { pyro.close_shell(&a.workspace_id, &a.shell_id).await },
        ),
    ]
}

fn default_cols() -> i64 {
    120
}

fn default_rows() -> i64 {
    30
}

fn default_max_chars() -> i64 {
    65536
}

fn default_true() -> bool {
    true
}

fn default_signal() -> String {
    "INT".into()
}

/// Arguments of `shell_open`.
#[derive(Debug, Deserialize, JsonSchema)]
struct Open {
    /// The workspace's id (the workspace must be started).
    workspace_id: String,
    /// Working directory of the shell, under `/workspace`.
    #[serde(default = "default_workspace_path")]
    cwd: String,
    /// Terminal columns.
    #[serde(default = "default_cols")]
    cols: i64,
    /// Terminal rows.
    #[serde(default = "default_rows")]
    rows: i64,
    /// Workspace secrets to put in the shell's environment: secret name → environment variable.
    #[serde(default)]
    secret_env: Option<BTreeMap<String, String>>,
}

/// Arguments of `shell_read`.
#[derive(Debug, Deserialize, JsonSchema)]
struct Read {
    /// The workspace's id.
    workspace_id: String,
    /// The shell's id (from `shell_open`).
    shell_id: String,
    /// Character offset into everything the shell printed; pass the last `next_cursor` to read on.
    #[serde(default)]
    cursor: i64,
    /// Most characters to return.
    #[serde(default = "default_max_chars")]
    max_chars: i64,
    /// Render terminal control sequences away (recommended for reading, with `wait_for_idle_ms` 300).
    #[serde(default)]
    plain: bool,
    /// First wait until no new output arrived for this many milliseconds (1–10000).
    #[serde(default)]
    wait_for_idle_ms: Option<i64>,
}

/// Arguments of `shell_write`.
#[derive(Debug, Deserialize, JsonSchema)]
struct Write {
    /// The workspace's id.
    workspace_id: String,
    /// The shell's id.
    shell_id: String,
    /// Text to type into the shell.
    input: String,
    /// Press Enter after the text.
    #[serde(default = "default_true")]
    append_newline: bool,
}

/// Arguments of `shell_signal`.
#[derive(Debug, Deserialize, JsonSchema)]
struct Signal {
    /// The workspace's id.
    workspace_id: String,
    /// The shell's id.
    shell_id: String,
    /// `HUP`, `INT`, `TERM` or `KILL`.
    #[serde(default = "default_signal")]
    signal_name: String,
}

/// Arguments of `shell_close`.
#[derive(Debug, Deserialize, JsonSchema)]
struct ShellId {
    /// The workspace's id.
    workspace_id: String,
    /// The shell's id.
    shell_id: String,
}
