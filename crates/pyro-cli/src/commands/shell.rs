//! `pyro workspace shell open|read|write|signal|close`: persistent PTY shells of a started
//! workspace. Human summaries go to stderr (reference §5.17), so stdout carries only what
//! a script wants: the shell id (`--id-only`) or the shell's output (`read`).

use pyro_core::workspace::shells::{OpenShellOptions, ReadShellOptions, ShellStatus};
use pyro_core::{Pyro, Result};
use serde::Serialize;

use crate::cli::ShellCommand;
use crate::output::{print_json, raw_stdout, say, tell};
use crate::settings;

/// `True`/`False`, as the original's lines print booleans.
fn py_bool(value: bool) -> &'static str {
    if value {
        "True"
    } else {
        "False"
    }
}

/// The summary line of open/write/signal/close.
fn summary(action: &str, s: &ShellStatus) {
    tell!(
        "[workspace-shell-{action}] workspace_id={} shell_id={} state={} cwd={} cols={} rows={} execution_mode={}",
        s.workspace_id,
        s.shell_id,
        s.state,
        s.cwd,
        s.cols,
        s.rows,
        s.execution_mode
    );
}

fn emit<T: Serialize>(json: bool, value: &T, action: &str, shell: impl FnOnce(&T) -> &ShellStatus) {
    if json {
        print_json(value);
    } else {
        summary(action, shell(value));
    }
}

/// Runs one `workspace shell` subcommand.
pub async fn run(pyro: &Pyro, command: ShellCommand, json: bool) -> Result<i32> {
    match command {
        ShellCommand::Open { id, cwd, cols, rows, secret_env, id_only } => {
            let options = OpenShellOptions { cwd, cols, rows, secret_env: settings::secret_env(&secret_env)? };
            let shell = pyro.open_shell(&id.workspace_id, &options).await?;
            if id_only {
                say!("{}", shell.shell_id);
            } else {
                emit(json, &shell, "open", |s| s);
            }
        }
        ShellCommand::Read { shell, cursor, max_chars, plain, wait_for_idle_ms } => {
            let options = ReadShellOptions { cursor, max_chars, plain, wait_for_idle_ms };
            let r = pyro.read_shell(&shell.id.workspace_id, &shell.shell_id, &options).await?;
            if json {
                print_json(&r);
            } else {
                raw_stdout(r.output.as_bytes());
                tell!(
                    "[workspace-shell-read] workspace_id={} shell_id={} state={} cursor={} next_cursor={} truncated={} plain={} wait_for_idle_ms={} execution_mode={}",
                    r.shell.workspace_id,
                    r.shell.shell_id,
                    r.shell.state,
                    r.cursor,
                    r.next_cursor,
                    py_bool(r.truncated),
                    py_bool(r.plain),
                    r.wait_for_idle_ms.map_or("None".to_string(), |ms| ms.to_string()),
                    r.shell.execution_mode
                );
            }
        }
        ShellCommand::Write { shell, input, no_newline } => {
            let r = pyro.write_shell(&shell.id.workspace_id, &shell.shell_id, &input, !no_newline).await?;
            emit(json, &r, "write", |r| &r.shell);
        }
        ShellCommand::Signal { shell, signal } => {
            let r = pyro.signal_shell(&shell.id.workspace_id, &shell.shell_id, &signal).await?;
            emit(json, &r, "signal", |r| &r.shell);
        }
        ShellCommand::Close(shell) => {
            let r = pyro.close_shell(&shell.id.workspace_id, &shell.shell_id).await?;
            emit(json, &r, "close", |r| &r.shell);
        }
    }
    Ok(0)
}
