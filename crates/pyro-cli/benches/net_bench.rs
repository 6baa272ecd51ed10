//! Guest networking speed (not a test): TCP throughput from a guest to a server through
//! the policy gateway, TCP connect latency, and a published port's request latency, each
//! beside the same client and server over a plain loopback connection on the host.
//!
//! `cargo bench -p pyro-cli --bench net_bench` (needs root for its network namespaces and
//! `scripts/setup.sh` first; uses `debian:12-build` for its Python). The servers sit in
//! the test's own internet namespace ([`pyro_test::netns::TestNet`]); the same Python
//! client runs in the guest and on the host. `PYRO_BENCH_MIB` sets the bytes sent
//! (default 64 MiB), `PYRO_BENCH_RUNS` the connects and requests timed (default 50).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pyro_test::bench::median;
use pyro_test::netns::{TestNet, PUBLIC};
use pyro_test::Sandbox;

const ENV: &str = "debian:12-build";
const SINK_PORT: u16 = 9000;
const ACCEPT_PORT: u16 = 9001;

/// Reads each connection to its end and answers how many bytes came.
const SINK_SERVER: &str = "import socket, sys, threading
s = socket.create_server((sys.argv[1], int(sys.argv[2])), reuse_port=True)
def serve(c):
    n = 0
    while True:
        b = c.recv(1 << 20)
        if not b: break
        n += len(b)
    c.sendall(str(n).encode()); c.close()
while True:
    c, _ = s.accept(); threading.Thread(target=serve, args=(c,), daemon=True).start()
";

/// Accepts and closes at once.
const ACCEPT_SERVER: &str = "import socket, sys
s = socket.create_server((sys.argv[1], int(sys.argv[2])), reuse_port=True, backlog=128)
while True:
    c, _ = s.accept(); c.close()
";

/// `HOST SINK_PORT ACCEPT_PORT MIB RUNS`: prints `mib_per_s connect_median_ms`.
const CLIENT: &str = "import socket, sys, time
host, sink, accept, mib, runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
chunk = b'x' * (1 << 16)
c = socket.create_connection((host, sink))
t = time.monotonic()
for _ in range(mib * 16): c.sendall(chunk)
c.shutdown(socket.SHUT_WR)
got = int(c.recv(64))
elapsed = time.monotonic() - t
assert got == mib << 20, got
times = []
for _ in range(runs):
    t = time.monotonic(); k = socket.create_connection((host, accept)); times.append(time.monotonic() - t); k.close()
times.sort()
print(f'{mib / elapsed:.1f} {times[len(times) // 2] * 1000:.2f}')
";

/// Servers started by the bench, stopped however it ends.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn spawn(mut command: Command) -> Child {
    command.stdin(Stdio::null()).stdout(Stdio::null()).spawn().expect("a bench server starts")
}

/// The servers of one side (`bind` address, spawned through `wrap`).
fn servers(bind: &str, wrap: impl Fn() -> Command) -> Vec<Child> {
    [SINK_SERVER, ACCEPT_SERVER]
        .iter()
        .zip([SINK_PORT, ACCEPT_PORT])
        .map(|(script, port)| {
            let mut command = wrap();
            command.args(["-c", script, bind, &port.to_string()]);
            spawn(command)
        })
        .collect()
}

/// `(MiB/s, connect median)` as the client printed them.
fn figures(text: &str) -> (f64, f64) {
    let mut parts = text.split_whitespace().map(|p| p.parse::<f64>().unwrap_or_else(|_| panic!("client printed {text:?}")));
    (parts.next().unwrap(), parts.next().unwrap())
}

/// Median wall time of `runs` `GET /` requests to `127.0.0.1:port`.
fn request_latency(port: u16, runs: usize) -> Duration {
    let samples = (0..runs)
        .map(|_| {
            let start = Instant::now();
            let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
            stream.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
            let mut answer = Vec::new();
            stream.read_to_end(&mut answer).unwrap();
            assert!(answer.starts_with(b"HTTP/1.0 200"), "{}", String::from_utf8_lossy(&answer));
            start.elapsed()
        })
        .collect();
    median(samples)
}

fn main() {
    let net = TestNet::new("b").unwrap_or_else(|e| panic!("net_bench needs its network namespaces: {e}"));
    let mib: u32 = std::env::var("PYRO_BENCH_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(64);
    let runs: usize = std::env::var("PYRO_BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(50);
    let mut children = Children(servers(PUBLIC, || net.command_in_inet_ns("python3")));
    children.0.extend(servers("127.0.0.1", || Command::new("python3")));
    std::thread::sleep(Duration::from_secs(1));

    let sb = Sandbox::in_netns(env!("CARGO_BIN_EXE_pyro"), &net.host_ns);
    let id = sb.ws(&["create", ENV, "--network-policy", "egress"])["workspace_id"].as_str().unwrap().to_string();
    let args = |host: &str| [host.to_string(), SINK_PORT.to_string(), ACCEPT_PORT.to_string(), mib.to_string(), runs.to_string()];
    sb.ws(&["file", "write", &id, "client.py", "--text", CLIENT]);
    let guest = sb.ws(&["exec", &id, "--timeout-seconds", "600", "--", &format!("python3 client.py {}", args(PUBLIC).join(" "))]);
    let (guest_mib, guest_connect) = figures(guest["stdout"].as_str().unwrap_or_else(|| panic!("{guest}")));
    let host = Command::new("python3").arg("-c").arg(CLIENT).args(args("127.0.0.1")).output().unwrap();
    let (host_mib, host_connect) = figures(&String::from_utf8_lossy(&host.stdout));

    sb.ws(&["delete", &id]);

    // Published ports listen on the loopback of the namespace pyro runs in: this one.
    let sb = Sandbox::new(env!("CARGO_BIN_EXE_pyro"));
    let id = sb.ws(&["create", ENV, "--network-policy", "egress+published-ports"])["workspace_id"].as_str().unwrap().to_string();
    let web = sb.ws(&[
        "service",
        "start",
        &id,
        "web",
        "--publish",
        "8000",
        "--ready-http",
        "http://127.0.0.1:8000/",
        "--",
        "python3 -m http.server 8000 --bind 127.0.0.1",
    ]);
    let published = web["published_ports"][0]["host_port"].as_u64().unwrap() as u16;
    let local = tempfile::tempdir().unwrap();
    let mut local_web = Command::new("python3");
    std::fs::write(local.path().join("index.html"), "ok\n").unwrap();
    local_web.args(["-m", "http.server", "18765", "--bind", "127.0.0.1", "--directory"]).arg(local.path()).stderr(Stdio::null());
    children.0.push(spawn(local_web));
    std::thread::sleep(Duration::from_secs(1));
    request_latency(published, 3); // warm-up
    let published_latency = request_latency(published, runs);
    let local_latency = request_latency(18765, runs);

    println!("{:<44} {:>14} {:>14}", "", "through pyro", "host loopback");
    println!("{:<44} {:>9.1} MiB/s {:>8.1} MiB/s", format!("TCP throughput, {mib} MiB guest -> server"), guest_mib, host_mib);
    println!("{:<44} {:>11.2} ms {:>11.2} ms", format!("TCP connect, median of {runs}"), guest_connect, host_connect);
    println!("{:<44} {:>11.2?} {:>11.2?}", format!("HTTP GET via published port, median of {runs}"), published_latency, local_latency);
    sb.ws(&["delete", &id]);
}
