//! Rendering conventions shared by every command: `--json` prints pretty JSON with sorted
//! keys on stdout; failures print `[error] <message>` on stderr, or
//! `{"ok": false, "error": <message>}` on stdout with `--json`.
//!
//! Every write of the CLI goes through here:
//! - Human lines ([`say!`], [`tell!`], [`print_error`]) pass through [`sanitize`], so text
//!   that came from a guest (names, link targets, error messages, serial tails, diff
//!   bodies) cannot drive the user's terminal. JSON is printed exactly (serde escapes C0
//!   controls itself). The raw output of a guest command ([`raw_stdout`], [`raw_stderr`])
//!   passes through untouched, as a terminal would show it.
//! - A closed stdout (`pyro doctor | head -1`) ends the process quietly with status 0
//!   instead of panicking; SIGPIPE stays ignored because pyro also writes to sockets.
//!   Failed writes to stderr are ignored.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

use pyro_core::events::Event;
use serde::Serialize;

/// Prints one sanitised line on stdout: `say!("x={}", x)`.
macro_rules! say {
    () => {
        $crate::output::line("")
    };
    ($($arg:tt)*) => {
        $crate::output::line(&format!($($arg)*))
    };
}

/// Prints one sanitised line on stderr: `tell!("[run] exit_code={}", code)`.
macro_rules! tell {
    ($($arg:tt)*) => {
        $crate::output::err_line(&format!($($arg)*))
    };
}

pub(crate) use {say, tell};

/// Whether `c` can move the cursor, rewrite the screen or talk to the terminal: C0
/// controls other than `\n` and `\t`, DEL, C1 controls, and the bidirectional overrides
/// and isolates that reorder what a reviewer sees.
fn is_terminal_control(c: char) -> bool {
    matches!(c, '\u{0}'..='\u{8}' | '\u{b}'..='\u{1f}' | '\u{7f}'..='\u{9f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Renders terminal controls visibly (`\x1b`, `\r`-as-`\x0d`, `\u{9b}`, `\u{202e}`);
/// keeps `\n`, `\t`, the `\r` of a `\r\n` line end (serial consoles write those; it
/// cannot hide anything) and everything printable as is.
pub fn sanitize(text: &str) -> Cow<'_, str> {
    if !has_terminal_controls(text) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if !is_terminal_control(c) || (c == '\r' && chars.peek() == Some(&'\n')) {
            out.push(c);
        } else if (c as u32) < 0x80 {
            let _ = write!(out, "\\x{:02x}", c as u32);
        } else {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
    }
    Cow::Owned(out)
}

/// Whether [`sanitize`] would change `text`.
pub fn has_terminal_controls(text: &str) -> bool {
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if is_terminal_control(c) && !(c == '\r' && chars.peek() == Some(&'\n')) {
            return true;
        }
    }
    false
}

/// Set once stdout is found closed by [`raw_stdout_or_drop`].
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

/// Writes `bytes` to stdout and flushes; a closed pipe exits quietly with status 0, any
/// other failure exits 1 with one line on stderr.
fn write_stdout(bytes: &[u8]) {
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        std::process::exit(0);
    }
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(bytes).and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        let _ = writeln!(std::io::stderr(), "[error] cannot write to stdout: {e}");
        std::process::exit(1);
    }
}

/// Prints `text` (sanitised) and a newline on stdout. Use [`say!`].
pub fn line(text: &str) {
    let mut text = sanitize(text).into_owned();
    text.push('\n');
    write_stdout(text.as_bytes());
}

/// Prints `text` (sanitised) on stdout without adding a newline.
pub fn part(text: &str) {
    write_stdout(sanitize(text).as_bytes());
}

/// Prints `text` (sanitised) and a newline on stderr, ignoring failures. Use [`tell!`].
pub fn err_line(text: &str) {
    let mut text = sanitize(text).into_owned();
    text.push('\n');
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

/// Passes a guest command's stdout (or file content) through untouched.
pub fn raw_stdout(bytes: &[u8]) {
    write_stdout(bytes);
}

/// Like [`raw_stdout`], for output streamed while a VM is still running: a closed stdout
/// drops the rest instead of exiting, so the command still cleans up after itself.
pub fn raw_stdout_or_drop(bytes: &[u8]) {
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut out = std::io::stdout().lock();
    if out.write_all(bytes).and_then(|()| out.flush()).is_err() {
        STDOUT_CLOSED.store(true, Ordering::Relaxed);
    }
}

/// Passes a guest command's stderr through untouched, ignoring failures.
pub fn raw_stderr(bytes: &[u8]) {
    let _ = std::io::stderr().lock().write_all(bytes);
}

/// Prints `value` as pretty JSON with sorted keys.
pub fn print_json<T: Serialize>(value: &T) {
    // Converting through `Value` (a BTreeMap without `preserve_order`) sorts the keys.
    let value = serde_json::to_value(value).expect("results always serialise");
    let mut text = serde_json::to_string_pretty(&value).expect("JSON values always print");
    text.push('\n');
    write_stdout(text.as_bytes());
}

/// Reports a failure in the mode the command was asked for; `kind` is the error's
/// [`pyro_core::Error::kind`].
pub fn print_error(message: &str, kind: &str, json: bool) {
    if json {
        print_json(&serde_json::json!({ "ok": false, "error": message, "error_kind": kind }));
    } else {
        err_line(&format!("[error] {message}"));
    }
}

/// A progress sink: each core [`Event`] as one sanitised stderr line in human mode,
/// nothing with `--json`.
pub fn progress(json: bool) -> impl Fn(&Event) + Send + Sync {
    move |event: &Event| {
        if !json {
            err_line(&event_line(event));
        }
    }
}

/// The CLI's line for a core event (`[run] phase=create environment=debian:12`).
pub fn event_line(event: &Event) -> String {
    match event {
        Event::RunCreate { environment } => format!("[run] phase=create environment={environment}"),
        Event::RunStart { vm_id, backend, isolation } => format!("[run] phase=start vm_id={vm_id} backend={backend} isolation={isolation}"),
        Event::RunExecute { vm_id, start_mode, boot_ms } => match boot_ms {
            Some(ms) => format!("[run] phase=execute vm_id={vm_id} start={start_mode} boot_ms={ms}"),
            None => format!("[run] phase=execute vm_id={vm_id} start={start_mode}"),
        },
        Event::TemplateBuild { environment, vcpu_count, mem_mib, kind } => {
            format!("[warm] building the {kind} template of {environment} ({vcpu_count} vCPU, {mem_mib} MiB) once; later starts restore it")
        }
        Event::TemplateReady { environment, build_ms, state_bytes } => format!("[warm] template of {environment} ready ({build_ms} ms, {state_bytes} bytes)"),
        Event::WorkspaceBoot { workspace_id, backend, isolation } => {
            format!("[workspace] phase=boot workspace_id={workspace_id} backend={backend} isolation={isolation}")
        }
        Event::KvmCheck => "[backend] checking once whether KVM boots guests on this host".into(),
        Event::PullInstall { environment } => format!("[pull] phase=install environment={environment}"),
        Event::PullAgentChanged { environment } => format!("[pull] {environment} was built with a different pyro-agent; rebuilding it"),
        Event::PullDownload { environment, registry } => format!("[pull] phase=download environment={environment} registry={registry}"),
        Event::PullLayer { index, count, bytes } => format!("[pull] layer {index}/{count} {bytes} bytes"),
        Event::PullRegistryUnavailable { reason } => format!("[pull] registry unavailable ({reason}); building locally"),
        Event::PullBuild { environment } => format!("[pull] phase=build environment={environment}"),
        Event::KernelBuild { source } => format!("[pull] building guest kernel from {} (a few minutes, once)", source.display()),
        Event::BuildLog { line, .. } => line.clone(),
        Event::PullReady { environment } => format!("[pull] phase=ready environment={environment}"),
        Event::PublishLayer { name, bytes } => format!("[publish] layer {name} {bytes} bytes"),
        Event::PublishManifest { reference, digest } => format!("[publish] pushed {reference} {digest}"),
    }
}

/// "yes"/"no" for human output.
pub fn yes_no(value: bool) -> &'static str {
    if value {
        "yes"
    } else {
        "no"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_are_rendered_visibly() {
        assert_eq!(sanitize("plain\ttext\nnext é ✓"), "plain\ttext\nnext é ✓");
        assert!(matches!(sanitize("plain"), Cow::Borrowed(_)));
        assert_eq!(sanitize("\u{1b}[2J\u{1b}]52;c;aGk=\u{7}"), "\\x1b[2J\\x1b]52;c;aGk=\\x07");
        assert_eq!(sanitize("over\rwrite\u{8}\u{0}\u{7f}"), "over\\x0dwrite\\x08\\x00\\x7f");
        assert_eq!(sanitize("serial line\r\nnext\r"), "serial line\r\nnext\\x0d");
        assert!(!has_terminal_controls("a\r\nb") && has_terminal_controls("a\rb") && has_terminal_controls("a\r"));
        assert_eq!(sanitize("c1 \u{9b}31m \u{85} \u{80}"), "c1 \\u{9b}31m \\u{85} \\u{80}");
        assert_eq!(sanitize("a\u{202e}b\u{2066}c"), "a\\u{202e}b\\u{2066}c");
        assert!(has_terminal_controls("x\u{1b}") && !has_terminal_controls("x\n\ty"));
    }

    #[test]
    fn every_char_that_survives_is_harmless() {
        for c in (0..=0x3000u32).filter_map(char::from_u32) {
            let shown = sanitize(&c.to_string()).into_owned();
            assert!(shown.chars().all(|s| s == '\n' || s == '\t' || !s.is_control()), "{c:?} -> {shown:?}");
            assert_eq!(has_terminal_controls(&c.to_string()), shown != c.to_string());
        }
    }
}
