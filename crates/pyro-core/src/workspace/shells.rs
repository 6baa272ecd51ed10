//! Persistent PTY shells of a started workspace (`workspace shell open|read|write|signal|
//! close`, SDK `open_shell` …). The shell and its scrollback live in the guest agent, so a
//! shell outlives the CLI call that opened it; the host keeps a small record per shell
//! (`shells/<id>.json`: id, cwd, size, start time) so it knows which shells belong to the
//! workspace. Shells die with the VM: stop, start and reset remove every record
//! (`forget_shells` in `mod.rs`, which must not import this file; delete removes the
//! directory).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::paths::normalize_destination;
use super::terminal::render_plain;
use super::{guest_error, Workspace, WorkspaceManager, SHELLS_DIR, WORKSPACE_ROOT};
use crate::error::{Error, IoContext, Result};
use crate::fsutil::{unix_now, write_atomic};
use crate::guest::{GuestClient, GuestError, ShellInfo, ShellOpenRequest, ShellReadRequest, ShellSignal, ShellSignalRequest, ShellState, ShellWriteRequest};
use crate::vm::record::{new_id, validate_id};

/// Default terminal columns.
pub const DEFAULT_COLS: i64 = 120;
/// Default terminal rows.
pub const DEFAULT_ROWS: i64 = 30;
/// Largest terminal dimension accepted.
pub const MAX_DIMENSION: i64 = 10_000;
/// Default `max_chars` of a read.
pub const DEFAULT_MAX_CHARS: i64 = 65_536;
/// Largest `wait_for_idle_ms`.
pub const MAX_WAIT_FOR_IDLE_MS: i64 = 10_000;
/// Largest input of one write (bytes, newline included).
pub const MAX_INPUT_BYTES: usize = 256 * 1024;

/// `open_shell` parameters, with the contract's defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct OpenShellOptions {
    /// Working directory in `/workspace` (created if missing).
    pub cwd: String,
    /// Terminal columns.
    pub cols: i64,
    /// Terminal rows.
    pub rows: i64,
    /// Workspace secrets to put in the shell's environment: secret name → variable.
    pub secret_env: BTreeMap<String, String>,
}

impl Default for OpenShellOptions {
    fn default() -> Self {
        Self { cwd: WORKSPACE_ROOT.into(), cols: DEFAULT_COLS, rows: DEFAULT_ROWS, secret_env: BTreeMap::new() }
    }
}

/// `read_shell` parameters, with the contract's defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ReadShellOptions {
    /// Character offset into everything the shell printed.
    pub cursor: i64,
    /// Most characters to return.
    pub max_chars: i64,
    /// Render terminal control sequences away ([`render_plain`]).
    pub plain: bool,
    /// Wait until no output arrived for this many milliseconds (1–10000) first.
    pub wait_for_idle_ms: Option<i64>,
}

impl Default for ReadShellOptions {
    fn default() -> Self {
        Self { cursor: 0, max_chars: DEFAULT_MAX_CHARS, plain: false, wait_for_idle_ms: None }
    }
}

/// What the host remembers of a shell.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ShellRecord {
    shell_id: String,
    cwd: String,
    cols: u16,
    rows: u16,
    started_at: f64,
}

/// A shell's fields, in every shell result.
#[derive(Debug, Clone, Serialize)]
pub struct ShellStatus {
    /// Workspace id.
    pub workspace_id: String,
    /// Shell id.
    pub shell_id: String,
    /// Working directory it started in.
    pub cwd: String,
    /// Terminal columns.
    pub cols: u16,
    /// Terminal rows.
    pub rows: u16,
    /// `running` or `exited`.
    pub state: &'static str,
    /// When it was opened (Unix seconds).
    pub started_at: f64,
    /// When its process ended (Unix seconds).
    pub ended_at: Option<f64>,
    /// Exit code of its process once ended (128+N when killed by signal N).
    pub exit_code: Option<i32>,
    /// `guest_vsock`.
    pub execution_mode: &'static str,
}

/// Result of `read_shell`.
#[derive(Debug, Clone, Serialize)]
pub struct ShellRead {
    /// The shell.
    #[serde(flatten)]
    pub shell: ShellStatus,
    /// Where `output` really starts: the cursor asked for, or the oldest character still
    /// kept when that one fell out of the scrollback (the end when it lay past it).
    pub cursor: u64,
    /// Cursor for the next read.
    pub next_cursor: u64,
    /// The output (rendered when `plain`).
    pub output: String,
    /// Output was skipped (the cursor fell out of the scrollback) or more is available
    /// after `next_cursor` (or plain rendering was cut to `max_chars`).
    pub truncated: bool,
    /// Plain rendering asked for.
    pub plain: bool,
    /// The idle wait asked for.
    pub wait_for_idle_ms: Option<u64>,
}

/// Result of `write_shell`.
#[derive(Debug, Clone, Serialize)]
pub struct ShellWritten {
    /// The shell.
    #[serde(flatten)]
    pub shell: ShellStatus,
    /// Characters of input, without the appended newline.
    pub input_length: usize,
    /// A newline was appended.
    pub append_newline: bool,
}

/// Result of `signal_shell`.
#[derive(Debug, Clone, Serialize)]
pub struct ShellSignalled {
    /// The shell.
    #[serde(flatten)]
    pub shell: ShellStatus,
    /// `HUP`, `INT`, `TERM` or `KILL`.
    pub signal: &'static str,
}

/// Result of `close_shell`.
#[derive(Debug, Clone, Serialize)]
pub struct ShellClosed {
    /// The shell's last state.
    #[serde(flatten)]
    pub shell: ShellStatus,
    /// Always true.
    pub closed: bool,
}

fn dimension(name: &str, value: i64) -> Result<u16> {
    if value <= 0 {
        return Err(Error::InvalidArgument(format!("{name} must be positive")));
    }
    if value > MAX_DIMENSION {
        return Err(Error::InvalidArgument(format!("{name} must be at most {MAX_DIMENSION}")));
    }
    Ok(value as u16)
}

/// The signal named `name` (case-insensitive), with the contract's message otherwise.
pub fn parse_signal(name: &str) -> Result<ShellSignal> {
    ShellSignal::from_name(&name.trim().to_ascii_uppercase()).ok_or_else(|| {
        let names: Vec<&str> = ShellSignal::ALL.iter().map(|s| s.name()).collect();
        Error::InvalidArgument(format!("signal_name must be one of: {}", names.join(", ")))
    })
}

/// Validated read parameters: (cursor, max_chars, wait_for_idle_ms).
fn read_params(options: &ReadShellOptions) -> Result<(u64, u64, Option<u64>)> {
    let cursor = u64::try_from(options.cursor).map_err(|_| Error::InvalidArgument("cursor must not be negative".into()))?;
    let max_chars = u64::try_from(options.max_chars).ok().filter(|m| *m > 0).ok_or_else(|| Error::InvalidArgument("max_chars must be positive".into()))?;
    let wait = match options.wait_for_idle_ms {
        None => None,
        Some(ms) if (1..=MAX_WAIT_FOR_IDLE_MS).contains(&ms) => Some(ms as u64),
        Some(_) => return Err(Error::InvalidArgument(format!("wait_for_idle_ms must be between 1 and {MAX_WAIT_FOR_IDLE_MS}"))),
    };
    Ok((cursor, max_chars, wait))
}

/// Reads of one `read_shell` (the agent caps each answer; more are asked for until the
/// budget is met or the output is exhausted).
const MAX_GUEST_READS: usize = 64;

fn shells_dir(dir: &Path) -> PathBuf {
    dir.join(SHELLS_DIR)
}

/// Keeps `len` characters of `text`; true when something was cut.
fn cut_chars(text: &mut String, len: u64) -> bool {
    match text.char_indices().nth(usize::try_from(len).unwrap_or(usize::MAX)) {
        Some((at, _)) => {
            text.truncate(at);
            true
        }
        None => false,
    }
}

impl WorkspaceManager {
    fn unknown_shell(id: &str, shell_id: &str) -> Error {
        Error::not_found_because("shell", shell_id, format!("shell '{shell_id}' does not exist in workspace '{id}'"))
    }

    fn shell_record(&self, ws: &Workspace, shell_id: &str) -> Result<ShellRecord> {
        let id = &ws.record.workspace_id;
        validate_id(shell_id).map_err(|_| Self::unknown_shell(id, shell_id))?;
        let bytes = std::fs::read(shells_dir(&ws.dir).join(format!("{shell_id}.json"))).map_err(|_| Self::unknown_shell(id, shell_id))?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Corrupt(format!("shell record {shell_id} of workspace {id} is corrupt: {e}")))
    }

    fn status_of(ws: &Workspace, record: &ShellRecord, info: &ShellInfo) -> ShellStatus {
        let ended_at = info.ended_ms_ago.map(|ago| (unix_now() - ago as f64 / 1000.0).max(record.started_at));
        ShellStatus {
            workspace_id: ws.record.workspace_id.clone(),
            shell_id: record.shell_id.clone(),
            cwd: record.cwd.clone(),
            cols: record.cols,
            rows: record.rows,
            state: info.state.name(),
            started_at: record.started_at,
            ended_at,
            exit_code: info.exit_code,
            execution_mode: "guest_vsock",
        }
    }

    /// The core error for a failed shell call: a shell the agent does not hold (its record
    /// is stale) is not found, a shell that ended is in the wrong state.
    fn shell_error(ws: &Workspace, shell_id: &str, e: GuestError) -> Error {
        match e {
            GuestError::Agent(message) if message == format!("shell '{shell_id}' does not exist") => {
                let _ = std::fs::remove_file(shells_dir(&ws.dir).join(format!("{shell_id}.json")));
                Self::unknown_shell(&ws.record.workspace_id, shell_id)
            }
            GuestError::Agent(message) if message == format!("shell '{shell_id}' is not running") => Error::wrong_state("running", "exited", message),
            other => guest_error(other),
        }
    }

    /// The workspace, its guest and the record of one of its shells.
    async fn shell_target(&self, id: &str, shell_id: &str, op: &str) -> Result<(Workspace, GuestClient, ShellRecord)> {
        let ws = self.open(id).await?;
        let client = self.guest(&ws, op).await?;
        let record = self.shell_record(&ws, shell_id)?;
        Ok((ws, client, record))
    }

    /// Opens a PTY shell in the started workspace.
    pub async fn open_shell(&self, id: &str, options: &OpenShellOptions) -> Result<ShellStatus> {
        let cols = dimension("cols", options.cols)?;
        let rows = dimension("rows", options.rows)?;
        let cwd = normalize_destination(&options.cwd)?;
        let ws = self.open(id).await?;
        let secret_env = self.secret_env(&ws, &options.secret_env)?;
        let client = self.guest(&ws, "shell_open").await?;
        let shell_id = new_id();
        let request = ShellOpenRequest { shell_id: shell_id.clone(), cwd: cwd.clone(), cols, rows, secret_env };
        let info = client.shell_open(request).await.map_err(guest_error)?;
        let record = ShellRecord { shell_id, cwd, cols, rows, started_at: unix_now() };
        let dir = shells_dir(&ws.dir);
        std::fs::create_dir_all(&dir).ctx("create", &dir)?;
        write_atomic(&dir.join(format!("{}.json", record.shell_id)), &serde_json::to_vec_pretty(&record).expect("records serialise"))?;
        self.touch(id)?;
        Ok(Self::status_of(&ws, &record, &info))
    }

    /// Reads a shell's output from a cursor (see [`ReadShellOptions`]).
    pub async fn read_shell(&self, id: &str, shell_id: &str, options: &ReadShellOptions) -> Result<ShellRead> {
        let (asked, max_chars, wait) = read_params(options)?;
        let (ws, client, record) = self.shell_target(id, shell_id, "shell_read").await?;
        let mut output = String::new();
        let mut start = None;
        let mut next = asked;
        let mut remaining = max_chars;
        let mut info;
        let mut reads = 0;
        loop {
            let request =
                ShellReadRequest { shell_id: shell_id.into(), cursor: next, max_chars: remaining, wait_for_idle_ms: if reads == 0 { wait } else { None } };
            let r = client.shell_read(request).await.map_err(|e| Self::shell_error(&ws, shell_id, e))?;
            reads += 1;
            info = r.shell;
            if start.is_some() && r.cursor != next {
                // The scrollback moved past us between two reads: stop before the gap, so
                // the result stays one contiguous, truthful slice.
                break;
            }
            start.get_or_insert(r.cursor);
            let got = r.next_cursor - r.cursor;
            output.push_str(&r.output);
            next = r.next_cursor;
            remaining -= got;
            if remaining == 0 || got == 0 || next >= info.end_cursor || reads >= MAX_GUEST_READS {
                break;
            }
        }
        let cursor = start.unwrap_or(asked);
        let mut truncated = cursor > asked || next < info.end_cursor;
        if options.plain {
            output = render_plain(&output);
            truncated |= cut_chars(&mut output, max_chars);
        }
        Ok(ShellRead {
            shell: Self::status_of(&ws, &record, &info),
            cursor,
            next_cursor: next,
            output,
            truncated,
            plain: options.plain,
            wait_for_idle_ms: wait,
        })
    }

    /// Types `input` (plus a newline when `append_newline`) into a shell.
    pub async fn write_shell(&self, id: &str, shell_id: &str, input: &str, append_newline: bool) -> Result<ShellWritten> {
        let mut text = input.to_string();
        if append_newline {
            text.push('\n');
        }
        if text.len() > MAX_INPUT_BYTES {
            return Err(Error::InvalidArgument(format!("input must be at most {MAX_INPUT_BYTES} bytes")));
        }
        let (ws, client, record) = self.shell_target(id, shell_id, "shell_write").await?;
        let info = client.shell_write(ShellWriteRequest { shell_id: shell_id.into(), input: text }).await.map_err(|e| Self::shell_error(&ws, shell_id, e))?;
        self.touch(id)?;
        Ok(ShellWritten { shell: Self::status_of(&ws, &record, &info), input_length: input.chars().count(), append_newline })
    }

    /// Sends `HUP`, `INT`, `TERM` or `KILL` to the shell's foreground process group.
    pub async fn signal_shell(&self, id: &str, shell_id: &str, signal_name: &str) -> Result<ShellSignalled> {
        let signal = parse_signal(signal_name)?;
        let (ws, client, record) = self.shell_target(id, shell_id, "shell_signal").await?;
        let info = client.shell_signal(ShellSignalRequest { shell_id: shell_id.into(), signal }).await.map_err(|e| Self::shell_error(&ws, shell_id, e))?;
        self.touch(id)?;
        Ok(ShellSignalled { shell: Self::status_of(&ws, &record, &info), signal: signal.name() })
    }

    /// Ends a shell, frees its scrollback in the guest and removes its record.
    pub async fn close_shell(&self, id: &str, shell_id: &str) -> Result<ShellClosed> {
        let (ws, client, record) = self.shell_target(id, shell_id, "shell_close").await?;
        let info = client.shell_close(shell_id).await.map_err(|e| Self::shell_error(&ws, shell_id, e))?;
        let path = shells_dir(&ws.dir).join(format!("{shell_id}.json"));
        std::fs::remove_file(&path).ctx("remove", &path)?;
        self.touch(id)?;
        let mut shell = Self::status_of(&ws, &record, &info);
        if info.state == ShellState::Running {
            // Closing ended it even if the agent answered before it saw the exit.
            shell.state = ShellState::Exited.name();
        }
        Ok(ShellClosed { shell, closed: true })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message<T: std::fmt::Debug>(r: Result<T>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn arguments_fail_with_the_contract_messages() {
        assert_eq!(message(dimension("cols", 0)), "cols must be positive");
        assert_eq!(message(dimension("rows", -3)), "rows must be positive");
        assert_eq!(dimension("cols", 120).unwrap(), 120);
        let read = |cursor, max_chars, wait| read_params(&ReadShellOptions { cursor, max_chars, plain: false, wait_for_idle_ms: wait });
        assert_eq!(message(read(-1, 10, None)), "cursor must not be negative");
        assert_eq!(message(read(0, 0, None)), "max_chars must be positive");
        assert_eq!(message(read(0, 10, Some(0))), "wait_for_idle_ms must be between 1 and 10000");
        assert_eq!(message(read(0, 10, Some(10_001))), "wait_for_idle_ms must be between 1 and 10000");
        assert_eq!(read(5, 10, Some(300)).unwrap(), (5, 10, Some(300)));
        assert_eq!(message(parse_signal("USR1")), "signal_name must be one of: HUP, INT, TERM, KILL");
        assert_eq!(parse_signal("term").unwrap(), ShellSignal::Term);
    }

    #[test]
    fn plain_output_is_cut_on_characters() {
        let mut text = "héllo".to_string();
        assert!(cut_chars(&mut text, 2));
        assert_eq!(text, "hé");
        assert!(!cut_chars(&mut text, 2));
    }

    #[test]
    fn defaults_are_the_contracts() {
        let open: OpenShellOptions = serde_json::from_str("{}").unwrap();
        assert_eq!((open.cwd.as_str(), open.cols, open.rows), ("/workspace", 120, 30));
        let read: ReadShellOptions = serde_json::from_str(r#"{"plain": true}"#).unwrap();
        assert_eq!((read.cursor, read.max_chars, read.plain, read.wait_for_idle_ms), (0, 65_536, true, None));
    }
}
