//! Services: named long-running processes that live as long as the VM, not as long as
//! the call that started them. Each is its command, started by `launch.rs` (with the
//! login environment, directly or under `/bin/sh`), in a session (and process group) of
//! its own; two tasks pump its stdout and stderr through a secret redactor into bounded
//! ring logs (oldest bytes dropped past [`LOG_CAP`], counted); a waiter task owns
//! the child and records its exit the moment it happens, so the state never comes from
//! PID polling and a recycled PID can never be mistaken for the service. Signals go to
//! the group only while its leader is unreaped (checked and sent without yielding on the
//! agent's single-threaded runtime), so they can only ever reach the service's own group.
//!
//! `start` waits for the readiness probe (see `probe.rs`); a service that dies first or
//! never gets ready is a `failed` record, not an error.

use std::collections::{BTreeMap, VecDeque};
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pyro_protocol::{DataChannel, ServiceInfo, ServiceListResult, ServiceLogsResult, ServiceStartRequest, ServiceState};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::watch;

use crate::launch::Launcher;
use crate::probe::{self, ProbeEnv};
use crate::request::{Ctx, ReqCtx};
use crate::secrets;

/// Bytes kept per stream of each service; older output is dropped (and reported).
pub const LOG_CAP: usize = 1 << 20;
/// Services held at once (ended ones are forgotten, oldest first, to make room).
const MAX_SERVICES: usize = 32;
/// Log bytes per data frame.
const LOG_CHUNK: usize = 64 * 1024;
/// How long a readiness failure waits after SIGTERM before SIGKILL.
const FAILED_GRACE: Duration = Duration::from_secs(5);
/// How long to wait for the group leader after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// A byte log that keeps the newest [`LOG_CAP`] bytes.
#[derive(Debug, Default)]
struct Ring {
    buf: VecDeque<u8>,
    /// Bytes dropped from the front.
    dropped: u64,
}

impl Ring {
    fn push(&mut self, bytes: &[u8]) {
        let bytes = if bytes.len() > LOG_CAP {
            self.dropped += (bytes.len() - LOG_CAP) as u64;
            &bytes[bytes.len() - LOG_CAP..]
        } else {
            bytes
        };
        let over = (self.buf.len() + bytes.len()).saturating_sub(LOG_CAP);
        if over > 0 {
            self.buf.drain(..over);
            self.dropped += over as u64;
        }
        self.buf.extend(bytes);
    }

    fn total(&self) -> u64 {
        self.dropped + self.buf.len() as u64
    }

    /// The last `lines` lines (everything held when `None`), and whether anything before
    /// them is not included (more lines held, or bytes dropped).
    fn tail(&self, lines: Option<u64>) -> (Vec<u8>, bool) {
        let all: Vec<u8> = self.buf.iter().copied().collect();
        let Some(lines) = lines else {
            return (all, self.dropped > 0);
        };
        // A final newline ends the last line; it does not start another.
        let body = all.strip_suffix(b"\n").unwrap_or(&all);
        let mut seen = 0u64;
        let mut start = 0;
        if lines == 0 {
            start = all.len();
        } else {
            for (i, &b) in body.iter().enumerate().rev() {
                if b == b'\n' {
                    seen += 1;
                    if seen == lines {
                        start = i + 1;
                        break;
                    }
                }
            }
        }
        let cut = start > 0;
        (all[start..].to_vec(), cut || self.dropped > 0)
    }
}

/// What changes over a service's life.
#[derive(Debug)]
struct Status {
    state: ServiceState,
    ready_at_ms: Option<u64>,
    ended_at_ms: Option<u64>,
    exit_code: Option<i32>,
    stop_reason: Option<&'static str>,
    /// Set by a stop request: the reason the exit will be recorded with.
    stopping: Option<&'static str>,
    stdout: Ring,
    stderr: Ring,
}

/// One service.
#[derive(Debug)]
struct Service {
    name: String,
    /// PID of the shell: also its session and process group id.
    pid: u32,
    started_at_ms: u64,
    status: Mutex<Status>,
    /// Becomes true once the waiter has reaped the shell.
    exited: watch::Receiver<bool>,
}

impl Service {
    fn status(&self) -> MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn info(&self) -> ServiceInfo {
        let s = self.status();
        ServiceInfo {
            name: self.name.clone(),
            state: s.state,
            pid: Some(self.pid),
            started_at_ms: self.started_at_ms,
            ready_at_ms: s.ready_at_ms,
            ended_at_ms: s.ended_at_ms,
            exit_code: s.exit_code,
            stop_reason: s.stop_reason.map(str::to_string),
            stdout_bytes: s.stdout.total(),
            stderr_bytes: s.stderr.total(),
        }
    }

    /// Sends `signal` to the service's process group, unless its leader is already
    /// reaped (the group id could then name someone else). Never yields between the
    /// check and the kill, so the waiter cannot reap in between.
    fn signal(&self, signal: i32) -> bool {
        let status = self.status();
        if status.ended_at_ms.is_some() {
            return false;
        }
        // SAFETY: plain syscall; the leader is unreaped (checked above under the lock the
        // waiter takes after reaping), so the group id is still this service's.
        unsafe { libc::kill(-(self.pid as i32), signal) == 0 }
    }

    async fn wait_exit(&self, within: Duration) -> bool {
        let mut exited = self.exited.clone();
        let ended = tokio::time::timeout(within, exited.wait_for(|e| *e)).await.is_ok();
        ended
    }

    /// TERM, up to `grace`, then KILL; `stopping` reasons are kept current for the waiter.
    async fn terminate(&self, grace: Duration, mark: bool) {
        if !self.signal(libc::SIGTERM) {
            return;
        }
        if self.wait_exit(grace).await {
            return;
        }
        if mark {
            self.status().stopping = Some("sigkill");
        }
        if self.signal(libc::SIGKILL) {
            self.wait_exit(KILL_WAIT).await;
        }
    }
}

/// Every service of this VM's lifetime, by name.
static SERVICES: Mutex<BTreeMap<String, Arc<Service>>> = Mutex::new(BTreeMap::new());

fn table() -> MutexGuard<'static, BTreeMap<String, Arc<Service>>> {
    SERVICES.lock().unwrap_or_else(|e| e.into_inner())
}

fn find(name: &str) -> Result<Arc<Service>, String> {
    table().get(name).cloned().ok_or_else(|| format!("service '{name}' does not exist"))
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// `^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`.
fn valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphanumeric()) && name.len() <= 64 && bytes.all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

fn validate(req: &ServiceStartRequest) -> Result<(), String> {
    if !valid_name(&req.name) {
        return Err("service_name must match ^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$".into());
    }
    if req.command.trim().is_empty() {
        return Err("command must not be empty".into());
    }
    if req.command.contains('\0') || req.cwd.contains('\0') {
        return Err("command and cwd must not contain NUL bytes".into());
    }
    for (key, value) in &req.env {
        if key.is_empty() || key.contains(['=', '\0']) || value.contains('\0') {
            return Err(format!("invalid environment variable: {key:?}"));
        }
    }
    if req.ready_timeout_ms == 0 || req.ready_interval_ms == 0 {
        return Err("ready_timeout_ms and ready_interval_ms must be positive".into());
    }
    req.readiness.as_ref().map_or(Ok(()), probe::validate)
}

/// Makes room for `name`: refuses a running namesake, forgets an ended one, and when the
/// table is full forgets the service that ended first.
fn make_room(table: &mut BTreeMap<String, Arc<Service>>, name: &str) -> Result<(), String> {
    if let Some(existing) = table.get(name) {
        if existing.status().ended_at_ms.is_none() {
            return Err(format!("service '{name}' is already running"));
        }
        table.remove(name);
    }
    if table.len() >= MAX_SERVICES {
        let oldest = table.values().filter_map(|s| s.status().ended_at_ms.map(|at| (at, s.name.clone()))).min();
        match oldest {
            Some((_, old)) => {
                table.remove(&old);
            }
            None => return Err(format!("too many running services (at most {MAX_SERVICES})")),
        }
    }
    Ok(())
}

/// Copies one output pipe, redacted, into the service's log.
async fn pump<R: AsyncRead + Unpin>(mut pipe: R, service: Arc<Service>, channel: DataChannel) {
    let mut redactor = secrets::redactor();
    let mut buf = vec![0u8; LOG_CHUNK];
    loop {
        let n = match pipe.read(&mut buf).await {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => 0,
        };
        let clean = if n == 0 { redactor.finish() } else { redactor.push(&buf[..n]) };
        {
            let mut status = service.status();
            let ring = if channel == DataChannel::Stdout { &mut status.stdout } else { &mut status.stderr };
            ring.push(&clean);
        }
        if n == 0 {
            return;
        }
    }
}

/// Starts a service and waits for its readiness.
pub async fn start(req: ServiceStartRequest, ctx: &Ctx) -> Result<ServiceInfo, String> {
    validate(&req)?;
    let cwd = ctx.default_cwd.join(&req.cwd);
    tokio::fs::create_dir_all(&cwd).await.map_err(|e| format!("cannot create working directory {}: {e}", cwd.display()))?;
    let mut env: Vec<(String, String)> = req.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    env.extend(secrets::env_for(&req.secret_env)?);
    let launcher = Launcher::new(&env).await;

    // No await from the check to the insert: a racing start of the same name cannot slip in.
    let service = {
        let mut table = table();
        make_room(&mut table, &req.name)?;
        let mut child = launcher.spawn(&req.command, &cwd, |command| {
            command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(false);
            // SAFETY: the closure runs in the forked child before exec and only calls
            // setsid(2), which is async-signal-safe.
            unsafe {
                command.pre_exec(|| if libc::setsid() < 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) });
            }
        })?;
        let pid = child.id().ok_or("the service exited before it was recorded")?;
        let (exit_tx, exit_rx) = watch::channel(false);
        let status = Status {
            state: ServiceState::Running,
            ready_at_ms: None,
            ended_at_ms: None,
            exit_code: None,
            stop_reason: None,
            stopping: None,
            stdout: Ring::default(),
            stderr: Ring::default(),
        };
        let service = Arc::new(Service { name: req.name.clone(), pid, started_at_ms: now_ms(), status: Mutex::new(status), exited: exit_rx });
        if let Some(out) = child.stdout.take() {
            tokio::spawn(pump(out, service.clone(), DataChannel::Stdout));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(pump(err, service.clone(), DataChannel::Stderr));
        }
        let waited = service.clone();
        tokio::spawn(async move {
            let result = child.wait().await;
            {
                let mut s = waited.status();
                s.ended_at_ms = Some(now_ms());
                s.exit_code = Some(match result {
                    Ok(status) => status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
                    Err(_) => -1,
                });
                if s.state == ServiceState::Running {
                    (s.state, s.stop_reason) = match s.stopping {
                        Some(reason) => (ServiceState::Stopped, Some(reason)),
                        None => (ServiceState::Exited, None),
                    };
                }
            }
            let _ = exit_tx.send(true);
        });
        table.insert(req.name.clone(), service.clone());
        service
    };

    let Some(probe) = &req.readiness else {
        service.status().ready_at_ms = Some(service.started_at_ms);
        return Ok(service.info());
    };
    let penv = ProbeEnv { cwd: &cwd, launcher: &launcher, root: &ctx.default_cwd };
    let deadline = Instant::now() + Duration::from_millis(req.ready_timeout_ms);
    let interval = Duration::from_millis(req.ready_interval_ms);
    let mut exited = service.exited.clone();
    loop {
        if *exited.borrow() {
            fail(&service, "process_exited_before_ready");
            break;
        }
        if probe::ready(probe, &penv).await {
            let mut s = service.status();
            if s.ready_at_ms.is_none() {
                s.ready_at_ms = Some(now_ms());
            }
            break;
        }
        let now = Instant::now();
        if now >= deadline {
            let timed_out = {
                let mut s = service.status();
                let running = s.state == ServiceState::Running;
                if running {
                    (s.state, s.stop_reason) = (ServiceState::Failed, Some("readiness_timeout"));
                }
                running
            };
            if timed_out {
                service.terminate(FAILED_GRACE, false).await;
            } else {
                fail(&service, "process_exited_before_ready");
            }
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(interval.min(deadline - now)) => {}
            _ = exited.wait_for(|e| *e) => {}
        }
    }
    Ok(service.info())
}

/// A service that ended by itself before it was ready.
fn fail(service: &Service, reason: &'static str) {
    let mut s = service.status();
    if matches!(s.state, ServiceState::Exited | ServiceState::Running) {
        (s.state, s.stop_reason) = (ServiceState::Failed, Some(reason));
    }
}

/// Every service, sorted by name.
pub fn list() -> ServiceListResult {
    let services: Vec<Arc<Service>> = table().values().cloned().collect();
    ServiceListResult { services: services.iter().map(|s| s.info()).collect() }
}

/// Sends the service's logs as data frames and returns its record.
pub async fn logs(name: &str, tail_lines: Option<u64>, req: &ReqCtx) -> Result<ServiceLogsResult, String> {
    let service = find(name)?;
    let ((stdout, stdout_truncated), (stderr, stderr_truncated)) = {
        let s = service.status();
        (s.stdout.tail(tail_lines), s.stderr.tail(tail_lines))
    };
    for (channel, bytes) in [(DataChannel::Stdout, &stdout), (DataChannel::Stderr, &stderr)] {
        for chunk in bytes.chunks(LOG_CHUNK) {
            req.send_data(channel, chunk).await?;
        }
    }
    Ok(ServiceLogsResult { service: service.info(), stdout_truncated, stderr_truncated })
}

/// Stops a running service (TERM, `grace_ms`, KILL); an ended one is returned unchanged.
pub async fn stop(name: &str, grace_ms: u64) -> Result<ServiceInfo, String> {
    let service = find(name)?;
    let running = {
        let mut s = service.status();
        let running = s.state == ServiceState::Running;
        if running {
            s.stopping = Some("sigterm");
        }
        running
    };
    if running {
        service.terminate(Duration::from_millis(grace_ms), true).await;
    }
    Ok(service.info())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn ring(text: &str) -> Ring {
        let mut r = Ring::default();
        r.push(text.as_bytes());
        r
    }

    fn tail(r: &Ring, n: Option<u64>) -> (String, bool) {
        let (bytes, truncated) = r.tail(n);
        (String::from_utf8(bytes).unwrap(), truncated)
    }

    #[test]
    fn tails_count_lines_from_the_end() {
        let r = ring("a\nb\nc\n");
        assert_eq!(tail(&r, Some(2)), ("b\nc\n".into(), true));
        assert_eq!(tail(&r, Some(3)), ("a\nb\nc\n".into(), false));
        assert_eq!(tail(&r, Some(9)), ("a\nb\nc\n".into(), false));
        assert_eq!(tail(&r, None), ("a\nb\nc\n".into(), false));
        assert_eq!(tail(&ring("a\nb\nc"), Some(2)), ("b\nc".into(), true));
        assert_eq!(tail(&ring(""), Some(2)), ("".into(), false));
        assert_eq!(tail(&ring("x\n"), Some(0)), ("".into(), true));
    }

    #[test]
    fn the_ring_keeps_the_newest_bytes() {
        let mut r = Ring::default();
        let line = vec![b'x'; 1023].into_iter().chain([b'\n']).collect::<Vec<u8>>();
        for _ in 0..2048 {
            r.push(&line);
        }
        assert_eq!(r.buf.len(), LOG_CAP);
        assert_eq!(r.dropped, 1 << 20);
        assert_eq!(r.total(), 2 << 20);
        let (all, truncated) = r.tail(None);
        assert!(truncated && all.len() == LOG_CAP);
        r.push(&vec![b'y'; LOG_CAP + 5]);
        assert_eq!(r.buf.iter().filter(|&&b| b == b'y').count(), LOG_CAP);
        assert_eq!(r.total(), (3 << 20) + 5);
    }

    #[test]
    fn names_follow_the_pattern() {
        assert!(valid_name("app") && valid_name("a.b_c-1") && valid_name(&"a".repeat(64)));
        assert!(!valid_name("") && !valid_name("-a") && !valid_name("a b") && !valid_name(&"a".repeat(65)));
    }

    fn request(name: &str, command: &str, readiness: Option<pyro_protocol::ReadinessProbe>) -> ServiceStartRequest {
        ServiceStartRequest {
            name: name.into(),
            command: command.into(),
            cwd: ".".into(),
            env: BTreeMap::new(),
            secret_env: BTreeMap::new(),
            readiness,
            ready_timeout_ms: 3_000,
            ready_interval_ms: 20,
        }
    }

    #[tokio::test]
    async fn services_start_get_ready_fail_and_stop() {
        let root = std::env::temp_dir().join(format!("pyro-service-{}", std::process::id()));
        std::fs::create_dir_all(&root).unwrap();
        let ctx = Ctx { default_cwd: PathBuf::from(&root), durable: false };
        let file = |p: &str| Some(pyro_protocol::ReadinessProbe::File { path: p.into() });

        let up = start(request("up", "echo hello; echo oops >&2; touch ready; exec sleep 30", file("ready")), &ctx).await.unwrap();
        assert_eq!((up.state, up.ready_at_ms.is_some()), (ServiceState::Running, true), "{up:?}");
        let again = start(request("up", "true", None), &ctx).await.unwrap_err();
        assert_eq!(again, "service 'up' is already running");
        let stopped = stop("up", 2_000).await.unwrap();
        assert_eq!((stopped.state, stopped.stop_reason.as_deref(), stopped.exit_code), (ServiceState::Stopped, Some("sigterm"), Some(128 + 15)));
        let logs_of = |name: &'static str| {
            let s = find(name).unwrap();
            let st = s.status();
            (String::from_utf8(st.stdout.tail(None).0).unwrap(), String::from_utf8(st.stderr.tail(None).0).unwrap())
        };
        assert_eq!(logs_of("up"), ("hello\n".into(), "oops\n".into()));

        let missing = start(request("missing", "no-such-command-anywhere", file("never")), &ctx).await.unwrap();
        assert_eq!((missing.state, missing.stop_reason.as_deref(), missing.exit_code), (ServiceState::Failed, Some("process_exited_before_ready"), Some(127)));
        assert!(logs_of("missing").1.contains("no-such-command-anywhere"), "{:?}", logs_of("missing"));

        let mut slow = request("slow", "sleep 30", file("never"));
        slow.ready_timeout_ms = 200;
        let slow = start(slow, &ctx).await.unwrap();
        assert_eq!((slow.state, slow.stop_reason.as_deref()), (ServiceState::Failed, Some("readiness_timeout")));

        let done = start(request("done", "exit 3", None), &ctx).await.unwrap();
        assert_eq!(done.state, ServiceState::Running);
        find("done").unwrap().wait_exit(Duration::from_secs(5)).await;
        let done = stop("done", 100).await.unwrap();
        assert_eq!((done.state, done.exit_code, done.stop_reason), (ServiceState::Exited, Some(3), None));
        assert!(list().services.iter().map(|s| s.name.as_str()).eq(["done", "missing", "slow", "up"]));
        assert_eq!(stop("nope", 1).await.unwrap_err(), "service 'nope' does not exist");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
