//! `Exec`: the command (started by [`launch`]: with the login environment, directly or
//! under `/bin/sh`) in its own process group, output streamed as it arrives, timeout and
//! cancellation kill the whole group.

use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use pyro_protocol::{DataChannel, ExecRequest, ExecResult};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::watch;

use crate::launch::Launcher;
use crate::request::ReqCtx;
use crate::secrets;

/// Largest stdout/stderr chunk per data frame.
const CHUNK: usize = 64 * 1024;

/// After the shell exits, how long to keep reading output that background processes
/// still hold open before returning (they keep running; only forwarding stops).
const DRAIN_GRACE: Duration = Duration::from_millis(200);

/// Kills a process group when dropped, unless disarmed (the command finished on its own).
struct GroupKiller {
    pgid: Option<i32>,
}

impl GroupKiller {
    fn kill(&self) {
        if let Some(pgid) = self.pgid {
            // SAFETY: plain syscall; the group exists as long as its leader is unreaped.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
        }
    }
}

impl GroupKiller {
    fn kill_and_forget(mut self) {
        self.kill();
        self.pgid = None;
    }
}

impl Drop for GroupKiller {
    fn drop(&mut self) {
        self.kill();
    }
}

struct Pumped {
    /// Bytes produced (after redaction).
    total: u64,
    /// Bytes sent to the host.
    forwarded: u64,
    truncated: bool,
    last_forwarded: Option<u8>,
}

impl Pumped {
    /// Forwards `bytes` within the cap; false when the session is gone.
    async fn forward(&mut self, bytes: &[u8], channel: DataChannel, cap: u64, req: &ReqCtx) -> bool {
        self.total += bytes.len() as u64;
        let room = cap.saturating_sub(self.forwarded).min(bytes.len() as u64) as usize;
        if room < bytes.len() {
            self.truncated = true;
        }
        if room == 0 {
            return true;
        }
        self.forwarded += room as u64;
        self.last_forwarded = Some(bytes[room - 1]);
        req.send_data(channel, &bytes[..room]).await.is_ok()
    }
}

/// Forwards one output pipe, redacted of every installed secret, as data frames: at
/// most `cap` bytes, counting the rest.
async fn pump<R: AsyncRead + Unpin>(mut pipe: R, channel: DataChannel, cap: u64, req: &ReqCtx, mut stop: watch::Receiver<bool>) -> Pumped {
    let mut buf = vec![0u8; CHUNK];
    let mut p = Pumped { total: 0, forwarded: 0, truncated: false, last_forwarded: None };
    let mut redactor = secrets::redactor();
    loop {
        let n = tokio::select! {
            biased;
            r = pipe.read(&mut buf) => match r {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => 0,
            },
            _ = stop.wait_for(|stop| *stop) => 0,
        };
        if n == 0 {
            let tail = redactor.finish();
            p.forward(&tail, channel, cap, req).await;
            return p;
        }
        let clean = redactor.push(&buf[..n]);
        if !p.forward(&clean, channel, cap, req).await {
            return p;
        }
    }
}

/// `1s`, `0.5s`, `1.25s`: seconds without a needless fraction.
pub fn format_seconds(ms: u64) -> String {
    let (secs, millis) = (ms / 1000, ms % 1000);
    if millis == 0 {
        format!("{secs}s")
    } else {
        let frac = format!("{millis:03}");
        format!("{secs}.{}s", frac.trim_end_matches('0'))
    }
}

fn validate(req: &ExecRequest) -> Result<(), String> {
    if req.command.contains('\0') {
        return Err("command must not contain NUL bytes".into());
    }
    for (key, value) in &req.env {
        if key.is_empty() || key.contains('=') || key.contains('\0') {
            return Err(format!("invalid environment variable name: {key:?}"));
        }
        if value.contains('\0') {
            return Err(format!("environment variable {key} must not contain NUL bytes"));
        }
    }
    Ok(())
}

/// Runs the command and streams its output; the result closes the stream.
pub async fn run(exec: ExecRequest, req: &ReqCtx) -> Result<ExecResult, String> {
    validate(&exec)?;
    let cwd = match exec.cwd.as_deref() {
        None | Some("") => req.ctx.default_cwd.clone(),
        Some(dir) => req.ctx.default_cwd.join(dir),
    };
    if let Err(e) = tokio::fs::create_dir_all(&cwd).await {
        return Err(format!("cannot create working directory {}: {e}", cwd.display()));
    }
    let mut env: Vec<(String, String)> = exec.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    env.extend(secrets::env_for(&exec.secret_env)?);
    let started = Instant::now();
    let mut child = Launcher::new(&env).await.spawn(&exec.command, &cwd, |command| {
        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0).kill_on_drop(true);
    })?;
    // From here on, dropping this future (cancel, session end) kills the whole group.
    let pgid = child.id().map(|id| id as i32);
    let mut killer = GroupKiller { pgid };
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let (stop_tx, stop_rx) = watch::channel(false);
    let cap = exec.max_output_bytes;
    let pumps =
        async { tokio::join!(pump(stdout, DataChannel::Stdout, cap, req, stop_rx.clone()), pump(stderr, DataChannel::Stderr, cap, req, stop_rx.clone()),) };
    tokio::pin!(pumps);

    let waiter = async {
        let status = if exec.timeout_ms == 0 {
            child.wait().await
        } else {
            match tokio::time::timeout(Duration::from_millis(exec.timeout_ms), child.wait()).await {
                Ok(status) => status,
                Err(_) => {
                    GroupKiller { pgid }.kill_and_forget();
                    return (child.wait().await, true);
                }
            }
        };
        (status, false)
    };
    tokio::pin!(waiter);

    let mut pumped = None;
    let (status, timed_out) = loop {
        tokio::select! {
            r = &mut pumps, if pumped.is_none() => pumped = Some(r),
            w = &mut waiter => break w,
        }
    };
    // The leader is reaped: the group id may be reused, so never signal it again. Any
    // background processes it left behind keep running (e.g. a server started with `&`).
    killer.pgid = None;
    let (out, err) = match pumped {
        Some(r) => r,
        None => match tokio::time::timeout(DRAIN_GRACE, &mut pumps).await {
            Ok(r) => r,
            Err(_) => {
                let _ = stop_tx.send(true);
                pumps.await
            }
        },
    };
    let status = status.map_err(|e| format!("waiting for the command failed: {e}"))?;

    let mut stderr_bytes = err.total;
    let exit_code = if timed_out {
        let mut line = String::new();
        if err.last_forwarded.is_some_and(|b| b != b'\n') {
            line.push('\n');
        }
        line.push_str(&format!("command timed out after {}\n", format_seconds(exec.timeout_ms)));
        stderr_bytes += line.len() as u64;
        // Always forwarded, even past the cap: it explains the exit code.
        let _ = req.send_data(DataChannel::Stderr, line.as_bytes()).await;
        124
    } else if let Some(code) = status.code() {
        code
    } else {
        128 + status.signal().unwrap_or(0)
    };
    Ok(ExecResult {
        exit_code,
        duration_ms: started.elapsed().as_millis() as u64,
        timed_out,
        stdout_bytes: out.total,
        stderr_bytes,
        stdout_truncated: out.truncated,
        stderr_truncated: err.truncated,
    })
}

#[cfg(test)]
mod tests {
    use super::format_seconds;

    #[test]
    fn seconds_formatting() {
        assert_eq!(format_seconds(30_000), "30s");
        assert_eq!(format_seconds(500), "0.5s");
        assert_eq!(format_seconds(1_250), "1.25s");
        assert_eq!(format_seconds(1_001), "1.001s");
    }
}
