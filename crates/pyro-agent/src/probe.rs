//! Readiness probes of services, run inside the guest so they see what the service sees
//! (guest loopback, guest files): a file that exists, a TCP port that accepts, an HTTP
//! GET that answers 200–399, a command that exits 0. Each attempt has its own short
//! timeout; the service module decides how often to try and for how long.
//!
//! The HTTP probe is a minimal HTTP/1.1 GET over a plain TCP stream (only the status line
//! is read), which keeps an HTTP client library out of the static agent.
//!
//! Floor above `launch.rs`, which starts probe commands as it starts services.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use pyro_protocol::ReadinessProbe;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::launch::Launcher;

/// One TCP connect attempt.
const TCP_TIMEOUT: Duration = Duration::from_secs(1);
/// One HTTP attempt, connect to status line.
const HTTP_TIMEOUT: Duration = Duration::from_secs(2);
/// One probe command.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes read looking for the HTTP status line.
const MAX_STATUS_LINE: usize = 8 * 1024;

/// Where an HTTP probe connects and what it asks for.
#[derive(Debug, PartialEq, Eq)]
pub struct HttpTarget {
    /// `host:port` to connect to.
    pub address: String,
    /// `Host` header value.
    pub host_header: String,
    /// Request target (path and query).
    pub path: String,
}

/// Parses an `http://` URL; anything else is refused with a one-line reason.
pub fn parse_http_url(url: &str) -> Result<HttpTarget, String> {
    let url = url.trim();
    let rest = match url.get(..7) {
        Some(scheme) if scheme.eq_ignore_ascii_case("http://") => &url[7..],
        _ => return Err(format!("readiness.url must be an http:// URL (the guest probe speaks plain HTTP): {url}")),
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let authority = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    if authority.is_empty() {
        return Err(format!("readiness.url has no host: {url}"));
    }
    let has_port = match authority.rfind(':') {
        Some(colon) => !authority[colon..].contains(']'),
        None => false,
    };
    let address = if has_port { authority.to_string() } else { format!("{authority}:80") };
    let address = address.replace(['[', ']'], "");
    let path = tail.split('#').next().unwrap_or("");
    let path = if path.is_empty() {
        "/".to_string()
    } else if path.starts_with('?') {
        format!("/{path}")
    } else {
        path.to_string()
    };
    if path.bytes().any(|b| b.is_ascii_control() || b == b' ') || authority.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err(format!("readiness.url must not contain spaces or control characters: {url}"));
    }
    Ok(HttpTarget { address: rsplit_address(&address), host_header: authority.to_string(), path })
}

/// `::1:8080` (brackets stripped) back to something `TcpStream::connect` parses.
fn rsplit_address(address: &str) -> String {
    match address.rsplit_once(':') {
        Some((host, port)) if host.contains(':') => format!("[{host}]:{port}"),
        _ => address.to_string(),
    }
}

/// Checks a probe before the service starts, so a bad one creates nothing.
pub fn validate(probe: &ReadinessProbe) -> Result<(), String> {
    match probe {
        ReadinessProbe::Http { url } => parse_http_url(url).map(|_| ()),
        ReadinessProbe::File { path } if path.contains('\0') => Err("readiness.path must not contain NUL bytes".into()),
        ReadinessProbe::Command { command } if command.contains('\0') => Err("readiness.command must not contain NUL bytes".into()),
        _ => Ok(()),
    }
}

/// The environment a probe command gets: the service's own.
pub struct ProbeEnv<'a> {
    /// Working directory.
    pub cwd: &'a Path,
    /// Starts probe commands with the service's variables (request env and mapped secrets).
    pub launcher: &'a Launcher<'a>,
    /// Base for relative file paths.
    pub root: &'a Path,
}

/// One attempt: true when the service is ready.
pub async fn ready(probe: &ReadinessProbe, env: &ProbeEnv<'_>) -> bool {
    match probe {
        ReadinessProbe::File { path } => {
            let path: PathBuf = env.root.join(path);
            tokio::fs::symlink_metadata(&path).await.is_ok()
        }
        ReadinessProbe::Tcp { address } => matches!(tokio::time::timeout(TCP_TIMEOUT, TcpStream::connect(address.as_str())).await, Ok(Ok(_))),
        ReadinessProbe::Http { url } => match parse_http_url(url) {
            Ok(target) => tokio::time::timeout(HTTP_TIMEOUT, http_status(&target)).await.ok().flatten().is_some_and(|s| (200..400).contains(&s)),
            Err(_) => false,
        },
        ReadinessProbe::Command { command } => run_command(command, env).await,
    }
}

/// Sends one GET and returns the status code of the answer's status line.
async fn http_status(target: &HttpTarget) -> Option<u16> {
    let mut stream = TcpStream::connect(target.address.as_str()).await.ok()?;
    let request = format!("GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: pyro-agent\r\nAccept: */*\r\nConnection: close\r\n\r\n", target.path, target.host_header);
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 512];
    while !buf.contains(&b'\n') && buf.len() < MAX_STATUS_LINE {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    parse_status_line(&buf)
}

/// `HTTP/1.1 204 No Content` → 204.
fn parse_status_line(bytes: &[u8]) -> Option<u16> {
    let line = bytes.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut words = line.split_ascii_whitespace();
    if !words.next()?.starts_with("HTTP/") {
        return None;
    }
    let code = words.next()?;
    (code.len() == 3).then(|| code.parse().ok()).flatten()
}

/// Runs a probe command in its own process group; the group is killed at the timeout.
async fn run_command(command: &str, env: &ProbeEnv<'_>) -> bool {
    let child = env.launcher.spawn(command, env.cwd, |command| {
        command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).process_group(0).kill_on_drop(true);
    });
    let Ok(mut child) = child else { return false };
    let pgid = child.id().map(|id| id as i32);
    match tokio::time::timeout(COMMAND_TIMEOUT, child.wait()).await {
        Ok(status) => status.is_ok_and(|s| s.success()),
        Err(_) => {
            if let Some(pgid) = pgid {
                // SAFETY: plain syscall; the leader is not reaped yet, so the group is ours.
                unsafe { libc::kill(-pgid, libc::SIGKILL) };
            }
            let _ = child.wait().await;
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_urls_become_targets() {
        let t = parse_http_url("http://127.0.0.1:8080/health?x=1#frag").unwrap();
        assert_eq!(t, HttpTarget { address: "127.0.0.1:8080".into(), host_header: "127.0.0.1:8080".into(), path: "/health?x=1".into() });
        let t = parse_http_url("HTTP://localhost").unwrap();
        assert_eq!((t.address.as_str(), t.path.as_str()), ("localhost:80", "/"));
        assert_eq!(parse_http_url("http://[::1]:9000/").unwrap().address, "[::1]:9000");
        assert_eq!(parse_http_url("http://[::1]/").unwrap().address, "[::1]:80");
        assert_eq!(parse_http_url("http://h?q").unwrap().path, "/?q");
        assert!(parse_http_url("https://example.com").unwrap_err().contains("http://"));
        assert!(parse_http_url("http:///x").is_err());
        assert!(parse_http_url("http://h/a b").is_err());
    }

    #[test]
    fn status_lines_parse() {
        assert_eq!(parse_status_line(b"HTTP/1.1 204 No Content\r\nx"), Some(204));
        assert_eq!(parse_status_line(b"HTTP/1.0 302\r\n"), Some(302));
        assert_eq!(parse_status_line(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(parse_status_line(b"HTTP/1.1 20000 x"), None);
        assert_eq!(parse_status_line(b""), None);
    }

    #[tokio::test]
    async fn probes_see_files_ports_and_commands() {
        let dir = std::env::temp_dir().join(format!("pyro-probe-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let vars = [("READY".to_string(), "1".to_string())];
        let launcher = Launcher::new(&vars).await;
        let env = ProbeEnv { cwd: &dir, launcher: &launcher, root: &dir };
        let file = ReadinessProbe::File { path: "flag".into() };
        assert!(!ready(&file, &env).await);
        std::fs::write(dir.join("flag"), "").unwrap();
        assert!(ready(&file, &env).await);
        assert!(ready(&ReadinessProbe::Command { command: "test \"$READY\" = 1 && test -e flag".into() }, &env).await);
        assert!(!ready(&ReadinessProbe::Command { command: "exit 3".into() }, &env).await);

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move {
            for status in ["200 OK", "500 Internal Server Error"] {
                let (mut sock, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 1024];
                let _ = sock.read(&mut buf).await;
                let _ = sock.write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes()).await;
            }
        });
        assert!(ready(&ReadinessProbe::Http { url: format!("http://{address}/") }, &env).await);
        assert!(!ready(&ReadinessProbe::Http { url: format!("http://{address}/") }, &env).await);
        server.await.unwrap();
        assert!(!ready(&ReadinessProbe::Tcp { address: address.clone() }, &env).await, "the listener is gone");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
