//! `pyro … | head -1`: a stdout closed before (or while) pyro writes ends it quietly with
//! status 0, never with a panic. Needs no guest: private, empty state and cache dirs.

use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Command, Output, Stdio};

use pyro_test::Home;

fn pyro(args: &[&str], home: &Home) -> Command {
    let mut cmd = home.command(args);
    cmd.stderr(Stdio::piped());
    cmd
}

/// A pipe whose read end is already closed: every write to the other end fails with EPIPE.
fn closed_pipe() -> OwnedFd {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe(2) writes.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: pipe2 just returned these descriptors, owned by nothing else.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(read);
    write
}

fn assert_quiet(args: &[&str], out: &Output) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "pyro {args:?} panicked on a closed stdout: {stderr}");
    assert!(stderr.trim().is_empty(), "pyro {args:?} wrote to stderr: {stderr}");
    assert_eq!(out.status.code(), Some(0), "pyro {args:?}: {stderr}");
}

const COMMANDS: &[&[&str]] =
    &[&["doctor"], &["doctor", "--json"], &["env", "list"], &["env", "list", "--json"], &["workspace", "list"], &["workspace", "list", "--json"]];

#[test]
fn a_closed_stdout_is_a_quiet_exit() {
    for args in COMMANDS {
        let home = Home::new(crate::PYRO);
        let out = pyro(args, &home).stdout(Stdio::from(closed_pipe())).output().unwrap();
        assert_quiet(args, &out);
    }
}

#[test]
fn a_stdout_closed_after_one_byte_is_a_quiet_exit() {
    // `| head -c 1`: the reader takes one byte, then goes away.
    for args in COMMANDS {
        let home = Home::new(crate::PYRO);
        let mut child = pyro(args, &home).stdout(Stdio::piped()).spawn().unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let mut byte = [0u8; 1];
        let _ = stdout.read(&mut byte);
        drop(stdout);
        let out = child.wait_with_output().unwrap();
        assert_quiet(args, &out);
    }
}
