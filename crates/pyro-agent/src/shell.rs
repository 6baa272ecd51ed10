//! Persistent PTY shells (`shell_*` requests). A shell and its PTY live in the agent for
//! the VM's life, in a global table, so it outlives the host call (and CLI process) that
//! opened it and any later call can read or type into it.
//!
//! * Open: `openpty` with the requested size; `bash --noprofile --norc -i` (else
//!   `/bin/sh -i`) in a new session with the PTY as its controlling terminal,
//!   `TERM=xterm-256color`, `PS1='pyro$ '`; the cwd is created if missing.
//! * One reader task per shell drains the PTY master into a bounded [`Scrollback`]
//!   through the secrets [`Redactor`](crate::secrets::Redactor) and an incremental UTF-8
//!   decoder, and bumps a `watch` generation; idle waits sleep on that watch (no polling).
//!   It yields after every chunk, so a flooding shell (`yes`) cannot starve other requests.
//! * One waiter task per shell reaps the process (`tokio::process`, i.e. `waitpid` on its
//!   pid; PID 1's reaper only reaps orphans re-parented to it, never the server's own
//!   children) and records the exit code.
//! * Cursors count characters (Unicode scalar values) of everything the shell printed
//!   since it opened, after redaction.
//!
//! Imports only the bottom floor (`request`, `secrets`).

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyro_protocol::{ShellInfo, ShellOpenRequest, ShellReadRequest, ShellReadResult, ShellSignal, ShellSignalRequest, ShellState, ShellWriteRequest};
use tokio::io::unix::AsyncFd;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::request::ReqCtx;
use crate::secrets::{self, Redactor};

/// Scrollback kept per shell (bytes of UTF-8 text); older output is dropped.
const SCROLLBACK_BYTES: usize = 4 << 20;
/// Growth allowed past [`SCROLLBACK_BYTES`] before the front is cut (amortises the cut).
const SCROLLBACK_SLACK: usize = 1 << 20;
/// Most characters in one read response: with JSON escaping (at most 6 bytes per
/// character) it stays well inside one 1 MiB frame. The host asks again for more.
const MAX_READ_CHARS: u64 = 128 * 1024;
/// Longest a read waits in total, however long output keeps trickling in (the host's
/// call deadline is longer).
const MAX_READ_WAIT: Duration = Duration::from_secs(30);
/// Longest `wait_for_idle_ms` accepted.
const MAX_IDLE_MS: u64 = 10_000;
/// Shells one VM may hold (each may keep [`SCROLLBACK_BYTES`] + slack).
const MAX_SHELLS: usize = 32;
/// Longest a write waits for the shell to take its input.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long close waits after HUP, and again after KILL.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// Bytes per PTY read.
const CHUNK: usize = 64 * 1024;
/// After every this many bytes read, the reader pauses for [`FLOOD_PAUSE`]: a flood
/// (`yes`) is then held back by the PTY (the writer blocks), leaving the guest's CPU to
/// other requests. Caps one shell's output at about 16 MiB/s, far above what a reader of
/// a 4 MiB scrollback can use.
const FLOOD_BYTES: usize = 64 * 1024;
/// See [`FLOOD_BYTES`].
const FLOOD_PAUSE: Duration = Duration::from_millis(4);

/// Everything a shell printed, bounded: the newest [`SCROLLBACK_BYTES`] (up to
/// [`SCROLLBACK_SLACK`] more) of text, addressed by character cursors that keep counting
/// from the shell's start.
#[derive(Debug)]
pub struct Scrollback {
    text: String,
    /// Characters in `text` (equal to `text.len()` while it is all ASCII).
    chars: usize,
    /// Cursor of the first character in `text`.
    base: u64,
    cap: usize,
    slack: usize,
}

impl Scrollback {
    /// An empty scrollback keeping about `cap` bytes (at most `cap + slack`).
    pub fn new(cap: usize, slack: usize) -> Self {
        Self { text: String::new(), chars: 0, base: 0, cap, slack }
    }

    /// Cursor after the last character ever appended.
    pub fn end(&self) -> u64 {
        self.base + self.chars as u64
    }

    /// Cursor of the oldest character kept.
    pub fn start(&self) -> u64 {
        self.base
    }

    /// Appends text, dropping the oldest once past the cap.
    pub fn push(&mut self, text: &str) {
        self.text.push_str(text);
        self.chars += text.chars().count();
        if self.text.len() > self.cap + self.slack {
            let mut cut = self.text.len() - self.cap;
            while !self.text.is_char_boundary(cut) {
                cut += 1;
            }
            let dropped = if self.is_ascii() { cut } else { self.text[..cut].chars().count() };
            self.text.drain(..cut);
            self.chars -= dropped;
            self.base += dropped as u64;
        }
    }

    fn is_ascii(&self) -> bool {
        self.text.len() == self.chars
    }

    /// Byte offset of the `n`th kept character (`n <= chars`).
    fn byte_at(&self, n: usize) -> usize {
        if self.is_ascii() {
            n
        } else {
            self.text.char_indices().nth(n).map_or(self.text.len(), |(i, _)| i)
        }
    }

    /// Up to `max` characters from `cursor`: where they really start (`cursor` clamped to
    /// the kept range) and the text.
    pub fn read(&self, cursor: u64, max: u64) -> (u64, &str) {
        let start = cursor.clamp(self.base, self.end());
        let skip = (start - self.base) as usize;
        let take = max.min(self.end() - start) as usize;
        let from = self.byte_at(skip);
        let to = if self.is_ascii() { skip + take } else { from + self.text[from..].char_indices().nth(take).map_or(self.text.len() - from, |(i, _)| i) };
        (start, &self.text[from..to])
    }
}

/// Incremental UTF-8 decoding: a sequence split across chunks waits for its end; invalid
/// bytes become U+FFFD.
#[derive(Debug, Default)]
pub struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    /// Decodes the next chunk.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        let mut input = std::mem::take(&mut self.pending);
        input.extend_from_slice(bytes);
        let mut out = String::with_capacity(input.len());
        let mut rest = &input[..];
        loop {
            match std::str::from_utf8(rest) {
                Ok(valid) => {
                    out.push_str(valid);
                    break;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    out.push_str(std::str::from_utf8(valid).unwrap_or_default());
                    match e.error_len() {
                        Some(n) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            rest = &after[n..];
                        }
                        None => {
                            self.pending = after.to_vec();
                            break;
                        }
                    }
                }
            }
        }
        out
    }

    /// Ends the stream: an unfinished sequence is invalid.
    pub fn finish(&mut self) -> String {
        if std::mem::take(&mut self.pending).is_empty() {
            String::new()
        } else {
            char::REPLACEMENT_CHARACTER.to_string()
        }
    }
}

/// How the shell's process ended.
#[derive(Debug, Clone, Copy)]
struct Exit {
    code: i32,
    at: Instant,
}

#[derive(Debug)]
struct State {
    scrollback: Scrollback,
    exit: Option<Exit>,
    /// The reader saw the end of the PTY (every slave descriptor closed).
    drained: bool,
}

struct Shell {
    id: String,
    cwd: String,
    cols: u16,
    rows: u16,
    /// Shell process id = its session and process-group id while unreaped.
    pid: i32,
    master: Arc<AsyncFd<OwnedFd>>,
    state: Mutex<State>,
    /// Bumped on every change (output, exit, end of output): what waits sleep on.
    changed: watch::Sender<u64>,
    reader: tokio::task::JoinHandle<()>,
}

impl Shell {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn info_of(&self, state: &State) -> ShellInfo {
        ShellInfo {
            shell_id: self.id.clone(),
            cwd: self.cwd.clone(),
            cols: self.cols,
            rows: self.rows,
            state: if state.exit.is_some() { ShellState::Exited } else { ShellState::Running },
            exit_code: state.exit.map(|e| e.code),
            ended_ms_ago: state.exit.map(|e| e.at.elapsed().as_millis() as u64),
            end_cursor: state.scrollback.end(),
        }
    }

    fn info(&self) -> ShellInfo {
        self.info_of(&self.lock())
    }

    fn bump(&self) {
        self.changed.send_modify(|g| *g = g.wrapping_add(1));
    }

    /// Sends `signal` to the PTY's foreground process group (the shell's own group when
    /// there is none); an error once the shell has exited (its ids may be reused).
    fn signal(&self, signal: i32) -> Result<(), String> {
        let state = self.lock();
        if state.exit.is_some() {
            return Err(not_running(&self.id));
        }
        // SAFETY: tcgetpgrp on the master descriptor we own; killpg is a plain syscall on a
        // group that exists while the shell (checked above, under the lock) is unreaped.
        unsafe {
            let fg = libc::tcgetpgrp(self.master.as_raw_fd());
            let group = if fg > 0 { fg } else { self.pid };
            if libc::killpg(group, signal) != 0 {
                return Err(format!("cannot signal shell '{}': {}", self.id, io::Error::last_os_error()));
            }
        }
        Ok(())
    }

    /// HUP (then KILL) to the shell's own session group and to the foreground group.
    fn signal_all(&self, signal: i32) {
        let state = self.lock();
        if state.exit.is_some() {
            return;
        }
        // SAFETY: as in `signal`: our master descriptor, groups of an unreaped shell.
        unsafe {
            let fg = libc::tcgetpgrp(self.master.as_raw_fd());
            if fg > 0 && fg != self.pid {
                libc::killpg(fg, signal);
            }
            libc::killpg(self.pid, signal);
        }
        drop(state);
    }

    /// Waits until the process is reaped, at most `within`.
    async fn exited_within(&self, within: Duration) -> bool {
        let mut rx = self.changed.subscribe();
        let deadline = Instant::now() + within;
        loop {
            if self.lock().exit.is_some() {
                return true;
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return self.lock().exit.is_some(),
            }
        }
    }
}

/// The VM's shells by id.
static SHELLS: Mutex<BTreeMap<String, Arc<Shell>>> = Mutex::new(BTreeMap::new());
/// Ids being opened (reserved so two racing opens of one id cannot both succeed).
static OPENING: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

fn table() -> std::sync::MutexGuard<'static, BTreeMap<String, Arc<Shell>>> {
    SHELLS.lock().unwrap_or_else(|e| e.into_inner())
}

fn get(id: &str) -> Result<Arc<Shell>, String> {
    table().get(id).cloned().ok_or_else(|| unknown(id))
}

/// The agent's message for an id it does not hold (the host matches it exactly).
pub fn unknown(id: &str) -> String {
    format!("shell '{id}' does not exist")
}

fn not_running(id: &str) -> String {
    format!("shell '{id}' is not running")
}

fn valid_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return Err(format!("invalid shell id {id:?}"));
    }
    Ok(())
}

/// Releases an id reserved in [`OPENING`] when dropped.
struct Reservation(String);

impl Drop for Reservation {
    fn drop(&mut self) {
        OPENING.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.0);
    }
}

fn reserve(id: &str) -> Result<Reservation, String> {
    let mut opening = OPENING.lock().unwrap_or_else(|e| e.into_inner());
    let shells = table();
    if shells.contains_key(id) || opening.contains(id) {
        return Err(format!("shell '{id}' already exists"));
    }
    if shells.len() + opening.len() >= MAX_SHELLS {
        return Err(format!("this workspace already has {MAX_SHELLS} shells; close one first"));
    }
    opening.insert(id.to_string());
    Ok(Reservation(id.to_string()))
}

/// A PTY pair with the given size: (master, slave), both close-on-exec, master
/// non-blocking.
fn open_pty(cols: u16, rows: u16) -> io::Result<(OwnedFd, OwnedFd)> {
    let size = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
    let (mut master, mut slave): (RawFd, RawFd) = (-1, -1);
    // SAFETY: openpty writes two descriptors into the out pointers; name and termios are
    // optional (null); the winsize pointer is valid for the call.
    let rc = unsafe { libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), &size) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: openpty succeeded: both descriptors are new and owned by nobody else.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    for fd in [master.as_raw_fd(), slave.as_raw_fd()] {
        // SAFETY: fcntl on descriptors we own.
        if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    // SAFETY: fcntl on the master descriptor we own.
    unsafe {
        let flags = libc::fcntl(master.as_raw_fd(), libc::F_GETFL);
        if flags < 0 || libc::fcntl(master.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok((master, slave))
}

/// The interactive shell program and its arguments.
fn program() -> (&'static str, &'static [&'static str]) {
    if Path::new("/bin/bash").exists() {
        ("/bin/bash", &["--noprofile", "--norc", "-i"])
    } else {
        ("/bin/sh", &["-i"])
    }
}

/// Opens a shell.
pub async fn open(open: ShellOpenRequest, req: &ReqCtx) -> Result<ShellInfo, String> {
    valid_id(&open.shell_id)?;
    if open.cols == 0 || open.rows == 0 {
        return Err("cols and rows must be positive".into());
    }
    if open.cwd.contains('\0') {
        return Err("cwd must not contain NUL bytes".into());
    }
    let reservation = reserve(&open.shell_id)?;
    let cwd = req.ctx.resolve(&open.cwd)?;
    tokio::fs::create_dir_all(&cwd).await.map_err(|e| format!("cannot create working directory {}: {e}", cwd.display()))?;
    let secret_env = secrets::env_for(&open.secret_env)?;
    let (master, slave) = open_pty(open.cols, open.rows).map_err(|e| format!("cannot open a pseudo-terminal: {e}"))?;
    let stdio = |fd: &OwnedFd| fd.try_clone().map(Stdio::from).map_err(|e| format!("cannot duplicate the pseudo-terminal: {e}"));
    let (program, args) = program();
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .envs(secret_env)
        .env("TERM", "xterm-256color")
        .env("PS1", "pyro$ ")
        .env("PROMPT_COMMAND", "")
        .current_dir(&cwd)
        .stdin(stdio(&slave)?)
        .stdout(stdio(&slave)?)
        .stderr(stdio(&slave)?);
    // SAFETY: runs in the forked child before exec and only calls async-signal-safe
    // functions (setsid, ioctl): a new session whose controlling terminal is the PTY
    // already on fd 0.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY as _, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn().map_err(|e| format!("cannot start {program}: {e}"))?;
    drop(command); // closes the parent's copies of the slave
    drop(slave);
    let pid = child.id().map(|p| p as i32).ok_or("the shell exited before it started")?;
    // SAFETY: `master` owns a valid descriptor and keeps returning it from as_raw_fd.
    let master = unsafe { AsyncFd::register(master) }.map_err(|e| format!("cannot watch the pseudo-terminal: {}", e.into_parts().1))?;
    let master = Arc::new(master);
    let (changed, _) = watch::channel(0u64);
    let shell = Arc::new_cyclic(|weak: &std::sync::Weak<Shell>| {
        let reader = tokio::spawn(pump(weak.clone(), master.clone()));
        Shell {
            id: open.shell_id.clone(),
            cwd: cwd.to_string_lossy().into_owned(),
            cols: open.cols,
            rows: open.rows,
            pid,
            master,
            state: Mutex::new(State { scrollback: Scrollback::new(SCROLLBACK_BYTES, SCROLLBACK_SLACK), exit: None, drained: false }),
            changed,
            reader,
        }
    });
    let weak = Arc::downgrade(&shell);
    tokio::spawn(async move {
        let status = child.wait().await;
        let code = match status {
            Ok(status) => {
                use std::os::unix::process::ExitStatusExt;
                status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
            }
            Err(_) => -1,
        };
        if let Some(shell) = weak.upgrade() {
            shell.lock().exit = Some(Exit { code, at: Instant::now() });
            shell.bump();
        }
    });
    table().insert(open.shell_id.clone(), shell.clone());
    drop(reservation);
    Ok(shell.info())
}

/// The reader task: PTY master → redactor → UTF-8 → scrollback, until the PTY ends or
/// the shell is closed.
async fn pump(shell: std::sync::Weak<Shell>, master: Arc<AsyncFd<OwnedFd>>) {
    let mut redactor: Redactor = secrets::redactor();
    let mut utf8 = Utf8Stream::default();
    let mut buf = vec![0u8; CHUNK];
    let mut since_pause = 0usize;
    let append = |text: String| {
        let Some(shell) = shell.upgrade() else { return false };
        if !text.is_empty() {
            shell.lock().scrollback.push(&text);
            shell.bump();
        }
        true
    };
    loop {
        let Ok(mut guard) = master.readable().await else { break };
        let read = guard.try_io(|fd| {
            // SAFETY: reads into a buffer we own, of its length, from our descriptor.
            let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        });
        let n = match read {
            Err(_would_block) => continue,
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => n,
            Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
            // EIO: every slave descriptor is closed (the shell and its children are gone).
            Ok(Err(_)) => break,
        };
        let clean = redactor.push(&buf[..n]);
        if !append(utf8.push(&clean)) {
            return;
        }
        since_pause += n;
        if since_pause >= FLOOD_BYTES {
            since_pause = 0;
            tokio::time::sleep(FLOOD_PAUSE).await;
        } else {
            // A flood must not starve the other requests on this single-threaded runtime.
            tokio::task::yield_now().await;
        }
    }
    let mut tail = utf8.push(&redactor.finish());
    tail.push_str(&utf8.finish());
    append(tail);
    if let Some(shell) = shell.upgrade() {
        shell.lock().drained = true;
        shell.bump();
    }
}

/// Reads output from a cursor, optionally waiting for the output to go idle first.
pub async fn read(read: ShellReadRequest) -> Result<ShellReadResult, String> {
    if read.max_chars == 0 {
        return Err("max_chars must be positive".into());
    }
    let shell = get(&read.shell_id)?;
    let max = read.max_chars.min(MAX_READ_CHARS);
    if let Some(idle_ms) = read.wait_for_idle_ms {
        if !(1..=MAX_IDLE_MS).contains(&idle_ms) {
            return Err(format!("wait_for_idle_ms must be between 1 and {MAX_IDLE_MS}"));
        }
        wait_for_idle(&shell, read.cursor, max, Duration::from_millis(idle_ms)).await;
    }
    let state = shell.lock();
    let (cursor, output) = state.scrollback.read(read.cursor, max);
    let output = output.to_string();
    let next_cursor = cursor + output.chars().count() as u64;
    Ok(ShellReadResult { shell: shell.info_of(&state), cursor, next_cursor, output })
}

/// Returns once no output arrived for `idle`, `max` characters are available from
/// `cursor`, the shell ended and its output is drained, or [`MAX_READ_WAIT`] passed.
async fn wait_for_idle(shell: &Shell, cursor: u64, max: u64, idle: Duration) {
    let mut rx = shell.changed.subscribe();
    let cap = Instant::now() + MAX_READ_WAIT;
    let mut deadline = Instant::now() + idle;
    loop {
        {
            let state = shell.lock();
            let from = cursor.max(state.scrollback.start());
            if (state.exit.is_some() && state.drained) || state.scrollback.end().saturating_sub(from) >= max {
                return;
            }
        }
        match tokio::time::timeout_at(deadline.min(cap), rx.changed()).await {
            Ok(Ok(())) => deadline = Instant::now() + idle,
            Ok(Err(_)) | Err(_) => return,
        }
    }
}

/// Types `input` into the shell.
pub async fn write(write: ShellWriteRequest) -> Result<ShellInfo, String> {
    let shell = get(&write.shell_id)?;
    if shell.lock().exit.is_some() {
        return Err(not_running(&shell.id));
    }
    let mut rest = write.input.as_bytes();
    let deadline = Instant::now() + WRITE_TIMEOUT;
    while !rest.is_empty() {
        let ready = tokio::time::timeout_at(deadline, shell.master.writable()).await;
        let Ok(Ok(mut guard)) = ready else {
            return Err(format!("shell '{}' did not take its input within {}s", shell.id, WRITE_TIMEOUT.as_secs()));
        };
        let written = guard.try_io(|fd| {
            // SAFETY: writes from a live slice, of its length, to our descriptor.
            let n = unsafe { libc::write(fd.as_raw_fd(), rest.as_ptr().cast(), rest.len()) };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        });
        match written {
            Err(_would_block) => continue,
            Ok(Ok(n)) => rest = &rest[n..],
            Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
            Ok(Err(e)) => return Err(format!("cannot write to shell '{}': {e}", shell.id)),
        }
    }
    Ok(shell.info())
}

/// Signals the shell's foreground process group.
pub async fn signal(signal: ShellSignalRequest) -> Result<ShellInfo, String> {
    let shell = get(&signal.shell_id)?;
    let number = match signal.signal {
        ShellSignal::Hup => libc::SIGHUP,
        ShellSignal::Int => libc::SIGINT,
        ShellSignal::Term => libc::SIGTERM,
        ShellSignal::Kill => libc::SIGKILL,
    };
    shell.signal(number)?;
    Ok(shell.info())
}

/// Ends the shell (HUP, then KILL after a grace period) and frees its scrollback.
pub async fn close(shell_id: &str) -> Result<ShellInfo, String> {
    let shell = get(shell_id)?;
    shell.signal_all(libc::SIGHUP);
    if !shell.exited_within(CLOSE_GRACE).await {
        shell.signal_all(libc::SIGKILL);
        shell.exited_within(CLOSE_GRACE).await;
    }
    shell.reader.abort();
    let info = shell.info();
    let removed = table().remove(shell_id);
    drop(removed);
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn scrollback_cursors_survive_overflow_exactly() {
        let mut s = Scrollback::new(10, 5);
        s.push("0123456789");
        s.push("abcde");
        assert_eq!((s.start(), s.end()), (0, 15), "within cap + slack nothing is dropped");
        s.push("f");
        assert_eq!((s.start(), s.end()), (6, 16));
        assert_eq!(s.read(0, 100), (6, "6789abcdef"), "a cursor that fell out starts at the oldest kept character");
        assert_eq!(s.read(8, 3), (8, "89a"));
        assert_eq!(s.read(99, 3), (16, ""), "a cursor past the end is the end");
    }

    #[test]
    fn scrollback_counts_characters_not_bytes() {
        let mut s = Scrollback::new(8, 0);
        s.push("héllo");
        assert_eq!(s.end(), 5);
        assert_eq!(s.read(1, 2), (1, "él"));
        s.push("✓✓✓");
        // 6 + 9 bytes > 8: cut on a character boundary.
        assert_eq!(s.end(), 8);
        let (start, text) = s.read(0, 100);
        assert_eq!(text.chars().count() as u64, s.end() - start);
        assert!("héllo✓✓✓".ends_with(text));
    }

    proptest! {
        #[test]
        fn scrollback_matches_a_model(chunks in proptest::collection::vec("[a-zé✓\n]{0,20}", 0..40), cursor in 0u64..400, max in 1u64..50) {
            let mut s = Scrollback::new(32, 7);
            let mut all = String::new();
            for chunk in &chunks {
                s.push(chunk);
                all.push_str(chunk);
            }
            let chars: Vec<char> = all.chars().collect();
            prop_assert_eq!(s.end(), chars.len() as u64);
            let (start, text) = s.read(cursor, max);
            prop_assert!(start >= s.start() && start <= s.end());
            prop_assert!(start == cursor || cursor < s.start() || cursor > s.end());
            let expected: String = chars[start as usize..].iter().take(max as usize).collect();
            prop_assert_eq!(text, expected);
            prop_assert!(s.text.len() <= 32 + 7 + 3);
        }

        #[test]
        fn utf8_stream_matches_lossy_decoding(bytes in proptest::collection::vec(any::<u8>(), 0..64), cuts in proptest::collection::vec(0usize..64, 0..6)) {
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(bytes.len())).collect();
            cuts.sort_unstable();
            let mut d = Utf8Stream::default();
            let mut out = String::new();
            let mut at = 0;
            for cut in cuts.into_iter().chain([bytes.len()]) {
                out.push_str(&d.push(&bytes[at..cut]));
                at = cut;
            }
            out.push_str(&d.finish());
            prop_assert_eq!(out, String::from_utf8_lossy(&bytes).into_owned());
        }
    }
}
