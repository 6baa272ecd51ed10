//! Host processes pyro owns (supervisors, VMMs), identified by pid *and* kernel start
//! time, so a pid the kernel has since handed to another process is never signalled.

use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::fsutil::write_atomic;

/// A process as the kernel knows it: pid plus start time (clock ticks since boot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessIdentity {
    /// Process id.
    pub pid: u32,
    /// Field 22 of `/proc/<pid>/stat`: when the process started, in clock ticks since boot.
    pub start_time: u64,
}

/// The fields of `/proc/<pid>/stat` after the command name: (state, start time).
fn stat_of(pid: u32) -> Option<(char, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat)
}

/// Parses state and start time out of a `/proc/<pid>/stat` line. The command name in
/// parentheses may itself contain spaces or parentheses, so fields count from the last `)`.
fn parse_stat(stat: &str) -> Option<(char, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state); field 22 (starttime) is fields[19].
    let state = fields.first()?.chars().next()?;
    let start_time = fields.get(19)?.parse().ok()?;
    Some((state, start_time))
}

impl ProcessIdentity {
    /// The identity of the running process `pid`, if it exists.
    pub fn of(pid: u32) -> Option<Self> {
        stat_of(pid).map(|(_, start_time)| Self { pid, start_time })
    }

    /// Whether this very process still runs (same pid, same start time, not a zombie).
    pub fn is_alive(&self) -> bool {
        matches!(stat_of(self.pid), Some((state, start)) if start == self.start_time && state != 'Z' && state != 'X')
    }

    /// Sends `signal` if this process still runs; returns whether it was sent.
    pub fn signal(&self, signal: i32) -> bool {
        if !self.is_alive() {
            return false;
        }
        // SAFETY: plain signal delivery to a process whose identity (pid and start time)
        // was checked just now.
        unsafe { libc::kill(self.pid as i32, signal) == 0 }
    }

    /// SIGKILLs this process if it still runs and waits up to `wait` for it to be gone.
    /// Returns false if it was still alive after the wait.
    pub async fn kill_and_wait(&self, wait: Duration) -> bool {
        if !self.signal(libc::SIGKILL) {
            return true;
        }
        let deadline = Instant::now() + wait;
        while self.is_alive() {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// Records this identity in `path` (atomically, 0600).
    pub fn store(&self, path: &Path) -> Result<()> {
        write_atomic(path, &serde_json::to_vec(self).expect("identity serialises"))
    }

    /// The identity recorded in `path`, if any.
    pub fn load(path: &Path) -> Option<Self> {
        serde_json::from_slice(&std::fs::read(path).ok()?).ok()
    }
}

/// Whether the peer of a unix socket runs as this process's user (the sockets in the
/// state directory serve nobody else).
pub fn same_user(stream: &tokio::net::UnixStream) -> bool {
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    stream.peer_cred().is_ok_and(|cred| cred.uid() == me)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_hostile_command_names() {
        let line = "1234 (a) b (c) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(parse_stat(line), Some(('S', 987654)));
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) R 1"), None);
    }

    #[test]
    fn own_identity_is_alive_and_a_changed_start_time_is_not() {
        let me = ProcessIdentity::of(std::process::id()).expect("own stat");
        assert!(me.is_alive());
        let reused = ProcessIdentity { start_time: me.start_time + 1, ..me };
        assert!(!reused.is_alive());
        assert!(!reused.signal(0));
    }
}
