//! [`TestNet`]: a private two-namespace network for guest-networking tests and benches.
//!
//! ```text
//!   netns "<name>-host" (pyro runs here)          netns "<name>-inet" (the test's internet)
//!   veth 198.51.100.1/24, 10.77.0.1/24  <──veth──>  198.51.100.2/24, 198.51.100.4/24 (public-looking)
//!   default route via 198.51.100.2                    10.77.0.2/24 (private)
//!   lo: a server on 127.0.0.1:PORT                    servers on 0.0.0.0:PORT
//! ```
//!
//! `/etc/netns/<host ns>/hosts` (which `ip netns exec` binds over `/etc/hosts`) names the
//! addresses, so the gateway's DNS answers them through the host's resolver. Nothing
//! outside the two namespaces is ever addressed. Dropping it stops the servers and
//! removes both namespaces (which removes the veth pair).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The public-looking address of the test's internet.
pub const PUBLIC: &str = "198.51.100.2";
/// A second public-looking address there (not on an allow-list).
pub const PUBLIC_OTHER: &str = "198.51.100.4";
/// Its private address (RFC 1918).
pub const PRIVATE: &str = "10.77.0.2";
/// The pyro namespace's own address (one of "the host's own addresses").
pub const HOST_OWN: &str = "198.51.100.1";
/// Names in the pyro namespace's hosts file.
pub const PUBLIC_NAME: &str = "public.pyro.test";
/// A name for [`PUBLIC_OTHER`].
pub const OTHER_NAME: &str = "other.pyro.test";
/// A name for [`PRIVATE`].
pub const PRIVATE_NAME: &str = "private.pyro.test";
/// A name that resolves to the host's loopback.
pub const LOOPBACK_NAME: &str = "loopback.pyro.test";

/// Two namespaces joined by a veth pair, with HTTP servers; see the module docs.
pub struct TestNet {
    /// The namespace pyro runs in.
    pub host_ns: String,
    /// The test's internet.
    pub inet_ns: String,
    /// Port of the HTTP servers (on every address of the internet namespace, and on
    /// loopback in the pyro namespace).
    pub http_port: u16,
    servers: Vec<Child>,
    etc_dir: PathBuf,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip").args(args).stdin(Stdio::null()).output().map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

impl TestNet {
    /// Builds the network (needs root and `ip`); `Err` says why it cannot be built here.
    pub fn new(tag: &str) -> Result<Self, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("network namespaces need root".into());
        }
        let id = format!("{tag}{}", std::process::id() % 100_000);
        let (host_ns, inet_ns) = (format!("pyro-{id}-h"), format!("pyro-{id}-i"));
        let (veth_host, veth_inet) = (format!("pv{id}h"), format!("pv{id}i"));
        let etc_dir = PathBuf::from("/etc/netns").join(&host_ns);
        let mut net = TestNet { host_ns: host_ns.clone(), inet_ns: inet_ns.clone(), http_port: 8080, servers: Vec::new(), etc_dir: etc_dir.clone() };
        ip(&["netns", "add", &host_ns])?;
        ip(&["netns", "add", &inet_ns])?;
        ip(&["link", "add", &veth_host, "netns", &host_ns, "type", "veth", "peer", "name", &veth_inet, "netns", &inet_ns])?;
        for (ns, dev, addrs) in [
            (&host_ns, &veth_host, vec![format!("{HOST_OWN}/24"), "10.77.0.1/24".to_string()]),
            (&inet_ns, &veth_inet, vec![format!("{PUBLIC}/24"), format!("{PUBLIC_OTHER}/24"), format!("{PRIVATE}/24")]),
        ] {
            for addr in &addrs {
                ip(&["-n", ns, "addr", "add", addr, "dev", dev])?;
            }
            ip(&["-n", ns, "link", "set", dev, "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        ip(&["-n", &host_ns, "route", "add", "default", "via", PUBLIC])?;
        std::fs::create_dir_all(&etc_dir).map_err(|e| format!("{}: {e}", etc_dir.display()))?;
        let hosts = format!("127.0.0.1 localhost\n{PUBLIC} {PUBLIC_NAME}\n{PUBLIC_OTHER} {OTHER_NAME}\n{PRIVATE} {PRIVATE_NAME}\n127.0.0.1 {LOOPBACK_NAME}\n");
        std::fs::write(etc_dir.join("hosts"), hosts).map_err(|e| e.to_string())?;
        // Servers answer which address they were reached on, so a test can tell them apart.
        let inet = net.spawn_in(&inet_ns, &net.server_script("0.0.0.0", "internet"))?;
        net.servers.push(inet);
        let local = net.spawn_in(&host_ns, &net.server_script("127.0.0.1", "host-loopback"))?;
        net.servers.push(local);
        for _ in 0..100 {
            if net.exec_in(&inet_ns, &["python3", "-c", &format!("import socket; socket.create_connection(('{PUBLIC}', {}), 1)", net.http_port)]) {
                return Ok(net);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err("the test servers did not start".into())
    }

    fn server_script(&self, bind: &str, who: &str) -> String {
        format!(
            "import http.server\n\
             class H(http.server.BaseHTTPRequestHandler):\n\
             \x20   def do_GET(self):\n\
             \x20       body = ('{who} ' + self.connection.getsockname()[0] + '\\n').encode()\n\
             \x20       self.send_response(200); self.send_header('Content-Length', str(len(body))); self.end_headers(); self.wfile.write(body)\n\
             \x20   def log_message(self, *a): pass\n\
             http.server.ThreadingHTTPServer(('{bind}', {}), H).serve_forever()\n",
            self.http_port
        )
    }

    fn spawn_in(&self, ns: &str, script: &str) -> Result<Child, String> {
        Command::new("ip")
            .args(["netns", "exec", ns, "python3", "-c", script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start a test server: {e}"))
    }

    fn exec_in(&self, ns: &str, args: &[&str]) -> bool {
        Command::new("ip").args(["netns", "exec", ns]).args(args).stdin(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
    }

    /// `program ARGS` inside the test's internet (not started yet).
    pub fn command_in_inet_ns(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.inet_ns, program]);
        cmd
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        for server in &mut self.servers {
            let _ = server.kill();
            let _ = server.wait();
        }
        let _ = ip(&["netns", "del", &self.inet_ns]);
        let _ = ip(&["netns", "del", &self.host_ns]);
        let _ = std::fs::remove_dir_all(&self.etc_dir);
    }
}
