//! Guest networking through the `pyro` CLI in real guests: the policy gateway inside a
//! private two-namespace network ([`TestNet`]: only addresses inside it are targeted),
//! a real egress check against this machine's package mirror, published ports (the
//! `python3 -m http.server` story), and bad input refused with nothing created.
//!
//! Guests have no HTTP client in every image, so they speak HTTP through bash's
//! `/dev/tcp`, each connection bounded by `timeout`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use pyro_test::netns::{TestNet, HOST_OWN, LOOPBACK_NAME, OTHER_NAME, PRIVATE, PRIVATE_NAME, PUBLIC, PUBLIC_NAME, PUBLIC_OTHER};
use pyro_test::{wait_for, Required, Sandbox};
use serde_json::Value;

/// A bash command printing the answer to `GET /` from `host:port` (status line first),
/// or `refused <host>` when the connection fails.
fn http_get(host: &str, port: u16) -> String {
    format!("if exec 3<>/dev/tcp/{host}/{port}; then printf 'GET / HTTP/1.0\\r\\nHost: {host}\\r\\n\\r\\n' >&3; timeout 10 cat <&3; exec 3>&-; else echo 'refused {host}'; fi")
}

/// Opens 300 TCP connections at once (more than the gateway's 256 flows) and sends 200
/// DNS queries for names the host cannot resolve quickly (more than its 32 lookups in
/// flight); prints how many sockets it opened. No single quotes: it runs as `perl -e '…'`.
const FLOOD_PL: &str = r#"use IO::Socket::INET;
my @s;
for (1..300) { my $c = IO::Socket::INET->new(PeerAddr => "PUBLIC", PeerPort => PORT, Blocking => 0); push @s, $c if $c; }
my $u = IO::Socket::INET->new(PeerAddr => "10.0.2.2", PeerPort => 53, Proto => "udp") or die "udp: $!";
for my $i (1..200) { $u->send(pack("n6", $i, 0x0100, 1, 0, 0, 0) . chr(9) . sprintf("flood%04d", $i) . chr(5) . "pyro1" . chr(4) . "test" . chr(0) . pack("n2", 1, 1)); }
sleep 4;
print scalar(@s), "\n";"#;

/// Runs `script` (bash) in the workspace and returns its stdout.
fn ws_bash(sb: &Sandbox, id: &str, script: &str) -> String {
    let out = sb.ws(&["exec", id, "--timeout-seconds", "60", "--", "bash", "-c", script]);
    out["stdout"].as_str().unwrap_or_default().to_string()
}

fn log_rules(log: &Value) -> Vec<(String, String)> {
    log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "denied")
        .map(|e| (e["destination"].as_str().unwrap_or_default().to_string(), e["rule"].as_str().unwrap_or_default().to_string()))
        .collect()
}

fn test_net(tag: &str) -> Option<TestNet> {
    match TestNet::new(tag) {
        Ok(net) => Some(net),
        Err(reason) => Required::IN_CI.skip(&format!("the test network cannot be built here: {reason}")),
    }
}

#[test]
#[ignore = "boots real guests in network namespaces; run by scripts/test.sh"]
fn egress_reaches_public_addresses_and_nothing_else() {
    let Some(net) = test_net("e") else { return };
    let sb = Sandbox::in_netns(crate::PYRO, &net.host_ns);
    let port = net.http_port;

    // `pyro run --network`: a public address answers, by address and by name.
    let run = sb.raw(&["run", "--network", "debian:12", "--", "bash", "-c", &format!("{}; {}", http_get(PUBLIC, port), http_get(PUBLIC_NAME, port))]);
    sb.expect_success(&run);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert_eq!(stdout.matches("HTTP/1.0 200 OK").count(), 2, "{stdout}\n{}", sb.diagnostics());
    assert!(stdout.contains(&format!("internet {PUBLIC}")), "{stdout}");

    // An `egress` workspace: public works; private, the host's own address, the gateway
    // and a name for the host's loopback do not.
    let id = sb.ws(&["create", "debian:12", "--network-policy", "egress"])["workspace_id"].as_str().unwrap().to_string();
    let status = sb.ws(&["status", &id]);
    assert_eq!((status["network_enabled"].as_bool(), status["guest_ip"].as_str()), (Some(true), Some("10.0.2.15")), "{status}");
    assert_eq!(status["network"]["gateway_ip"], "10.0.2.2");
    let public = ws_bash(&sb, &id, &http_get(PUBLIC, port));
    assert!(public.starts_with("HTTP/1.0 200 OK") && public.contains(&format!("internet {PUBLIC}")), "{public}");
    for (target, what) in [(PRIVATE, "private"), (PRIVATE_NAME, "private by name"), (HOST_OWN, "host address"), ("10.0.2.2", "gateway")] {
        let out = ws_bash(&sb, &id, &http_get(target, port));
        assert!(out.contains(&format!("refused {target}")), "{what}: {out}");
    }
    // The guest's own loopback is its own: a name for 127.0.0.1 never reaches the host's
    // server listening there.
    let loopback = ws_bash(&sb, &id, &http_get(LOOPBACK_NAME, port));
    assert!(loopback.contains("refused") && !loopback.contains("host-loopback"), "{loopback}");
    // DNS is the gateway's: names resolve through the host's resolver.
    let resolved = ws_bash(&sb, &id, &format!("cat /etc/resolv.conf; getent hosts {PUBLIC_NAME}"));
    assert!(resolved.contains("nameserver 10.0.2.2") && resolved.contains(PUBLIC), "{resolved}");

    // Every refusal is in the network log, with its rule and the name it was asked by.
    let log = wait_for(Duration::from_secs(10), || {
        let log = sb.ws(&["network", "log", &id]);
        (log["denied_flows"].as_u64() >= Some(4)).then_some(log)
    })
    .expect("the refusals reach the network log");
    let rules = log_rules(&log);
    for (destination, rule) in [(PRIVATE, "private"), (HOST_OWN, "host_address"), ("10.0.2.2", "gateway")] {
        assert!(rules.contains(&(destination.to_string(), rule.to_string())), "{destination} {rule}: {log}");
    }
    assert!(log["entries"].as_array().unwrap().iter().any(|e| e["name"] == PRIVATE_NAME), "{log}");
    assert!(log["allowed_flows"].as_u64() >= Some(1), "{log}");
    let counted = sb.ws(&["status", &id]);
    assert_eq!(counted["network"]["denied_flows"], log["denied_flows"], "{counted}");
    let human = sb.raw(&["workspace", "network", "log", &id]);
    sb.expect_success(&human);
    assert!(
        String::from_utf8_lossy(&human.stdout).contains(&format!("denied tcp {PRIVATE}:{port} name={PRIVATE_NAME} rule=private")),
        "{}",
        pyro_test::describe(&human)
    );

    // A guest flooding SYNs and DNS queries meets the gateway's bounds: the excess is
    // dropped and logged, and the network keeps working.
    let flood = ws_bash(&sb, &id, &format!("perl -e '{}'", FLOOD_PL.replace("PUBLIC", PUBLIC).replace("PORT", &port.to_string())));
    assert!(flood.trim().parse::<u32>().is_ok_and(|n| n >= 256), "{flood}");
    let log = wait_for(Duration::from_secs(20), || {
        let log = sb.ws(&["network", "log", &id]);
        let drops: Vec<String> =
            log["entries"].as_array().unwrap().iter().filter(|e| e["kind"] == "dropped").map(|e| e["rule"].as_str().unwrap().to_string()).collect();
        (drops.iter().any(|r| r == "tcp_flows") && drops.iter().any(|r| r == "dns_in_flight")).then_some(log)
    })
    .expect("the dropped SYNs and DNS queries are logged");
    assert!(log["dropped_events"].as_u64() > Some(0), "{log}");
    let after = ws_bash(&sb, &id, &http_get(PUBLIC, port));
    assert!(after.starts_with("HTTP/1.0 200 OK"), "the network works after the flood: {after}");

    // An allow-list admits only its entries (the fixed deny rules still hold).
    let allowed = sb.ws(&["create", "debian:12", "--network-policy", "egress", "--allow-host", PUBLIC_NAME, "--allow-host", "10.77.0.0/16"])["workspace_id"]
        .as_str()
        .unwrap()
        .to_string();
    let by_name = ws_bash(&sb, &allowed, &http_get(PUBLIC_NAME, port));
    assert!(by_name.starts_with("HTTP/1.0 200 OK"), "{by_name}");
    for target in [OTHER_NAME, PUBLIC_OTHER, PRIVATE] {
        let out = ws_bash(&sb, &allowed, &http_get(target, port));
        assert!(out.contains(&format!("refused {target}")), "{target}: {out}");
    }
    let log = wait_for(Duration::from_secs(10), || {
        let log = sb.ws(&["network", "log", &allowed]);
        (log["denied_flows"].as_u64() >= Some(3)).then_some(log)
    })
    .expect("the allow-list refusals reach the log");
    let rules = log_rules(&log);
    assert!(rules.contains(&(PUBLIC_OTHER.to_string(), "not_allowed".to_string())), "{log}");
    assert!(rules.contains(&(PRIVATE.to_string(), "private".to_string())), "{log}");

    // `off`: no NIC at all.
    let off = sb.ws(&["create", "debian:12"])["workspace_id"].as_str().unwrap().to_string();
    assert_eq!(ws_bash(&sb, &off, "ls /sys/class/net").trim(), "lo");
    let off_status = sb.ws(&["status", &off]);
    assert_eq!((off_status["network_enabled"].as_bool(), off_status["network"].is_null()), (Some(false), true), "{off_status}");
    assert!(sb.ws_err(&["network", "log", &off]).contains("has no network"));
}

/// The first `http://` mirror host of the host's apt sources.
fn apt_mirror() -> Option<String> {
    let mut texts = vec![std::fs::read_to_string("/etc/apt/sources.list").unwrap_or_default()];
    for entry in std::fs::read_dir("/etc/apt/sources.list.d").into_iter().flatten().flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "list" || e == "sources") {
            texts.push(std::fs::read_to_string(path).unwrap_or_default());
        }
    }
    texts.iter().flat_map(|t| t.lines()).filter(|l| !l.trim_start().starts_with('#')).find_map(|line| {
        let at = line.find("http://")?;
        let rest = &line[at + "http://".len()..];
        Some(rest.split(['/', ' ', ':']).next()?.to_string()).filter(|h| !h.is_empty())
    })
}

#[test]
#[ignore = "boots a real guest and reaches this machine's package mirror; run by scripts/test.sh"]
fn a_guest_reaches_the_package_mirror_by_name() {
    let Some(mirror) = apt_mirror() else {
        return Required::IN_CI.skip("no http:// mirror in the host's apt sources").unwrap_or(());
    };
    let sb = Sandbox::new(crate::PYRO);
    let script = format!(
        "getent hosts {mirror} && exec 3<>/dev/tcp/{mirror}/80 && printf 'HEAD / HTTP/1.1\\r\\nHost: {mirror}\\r\\nConnection: close\\r\\n\\r\\n' >&3 && timeout 20 head -n 1 <&3"
    );
    let out = sb.raw(&["run", "--network", "debian:12", "--", "bash", "-c", &script]);
    sb.expect_success(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut lines = stdout.lines();
    assert!(lines.next().is_some_and(|l| l.ends_with(&mirror)), "the mirror's name resolves in the guest: {stdout}");
    assert!(lines.next().is_some_and(|l| l.starts_with("HTTP/1.")), "the mirror answers HTTP: {stdout}");
}

/// `GET /` on the host's `127.0.0.1:port`: the status line, or `None` when refused.
fn host_get(port: u16) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(5)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    stream.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    answer.lines().next().map(str::to_string)
}

/// The story's `service start` (`ID` stands for the workspace id).
const STORY_START: [&str; 10] = [
    "service",
    "start",
    "ID",
    "web",
    "--publish",
    "18080:8000",
    "--ready-http",
    "http://127.0.0.1:8000/",
    "--",
    "python3 -m http.server 8000 --bind 127.0.0.1",
];

fn host_port(record: &Value) -> u16 {
    record["published_ports"][0]["host_port"].as_u64().unwrap() as u16
}

#[test]
#[ignore = "boots a real guest; run by scripts/test.sh"]
fn a_published_http_server_is_reachable_from_the_host_until_it_stops() {
    let sb = Sandbox::new(crate::PYRO);
    let created = sb.ws(&["create", "debian:12-build", "--network-policy", "egress+published-ports"]);
    let id = created["workspace_id"].as_str().unwrap().to_string();
    assert_eq!(created["network_policy"], "egress+published-ports");

    // The story: a server on guest loopback, published on 127.0.0.1:18080.
    let web = sb.ws(&STORY_START.map(|a| if a == "ID" { id.as_str() } else { a }));
    assert_eq!(web["state"], "running", "{web}\n{}", sb.diagnostics());
    assert_eq!(web["published_ports"], serde_json::json!([{"host": "127.0.0.1", "host_port": 18080, "guest_port": 8000, "protocol": "tcp"}]));
    assert_eq!(host_get(18080).as_deref(), Some("HTTP/1.0 200 OK"));
    // Reading logs and status never disturbs the listener.
    sb.ws(&["service", "logs", &id, "web"]);
    let listed = sb.ws(&["service", "list", &id]);
    assert_eq!(listed["services"][0]["published_ports"][0]["host_port"], 18080, "{listed}");
    assert_eq!(host_get(18080).as_deref(), Some("HTTP/1.0 200 OK"));
    let human = sb.raw(&["workspace", "service", "list", &id]);
    assert!(String::from_utf8_lossy(&human.stdout).contains("published=127.0.0.1:18080->8000/tcp"), "{}", pyro_test::describe(&human));

    // Without a host port an ephemeral one is chosen and reported.
    let eph =
        sb.ws(&["service", "start", &id, "eph", "--publish", "8001", "--ready-tcp", "127.0.0.1:8001", "--", "python3 -m http.server 8001 --bind 127.0.0.1"]);
    let eph_port = host_port(&eph);
    assert!(eph_port >= 1025, "{eph}");
    assert_eq!(host_get(eph_port).as_deref(), Some("HTTP/1.0 200 OK"));

    // A host port already taken fails the start and stops the service.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port().to_string();
    let mapping = format!("{taken_port}:8002");
    let failed = sb.ws_err(&["service", "start", &id, "taken", "--publish", &mapping, "--", "python3 -m http.server 8002 --bind 127.0.0.1"]);
    assert!(failed.contains(&format!("127.0.0.1:{taken_port}")) && failed.contains("published_port_failed"), "{failed}");
    let record = sb.ws(&["service", "status", &id, "taken"]);
    assert_eq!((record["state"].as_str(), record["stop_reason"].as_str()), (Some("failed"), Some("published_port_failed")), "{record}");
    drop(taken);

    // The port closes when the service stops, and when a service exits by itself.
    sb.ws(&["service", "stop", &id, "web"]);
    assert_eq!(host_get(18080), None, "the listener closes with the service");
    sb.ws(&["exec", &id, "--", "bash", "-c", "kill $(pgrep -f 'http.server 8001')"]);
    let closed = wait_for(Duration::from_secs(30), || host_get(eph_port).is_none().then_some(()));
    assert!(closed.is_some(), "the listener closes when its service exits");

    // A stopped workspace holds no listener either.
    let again = sb.ws(&STORY_START.map(|a| if a == "ID" { id.as_str() } else { a }));
    assert_eq!(again["state"], "running", "{again}");
    assert_eq!(host_get(18080).as_deref(), Some("HTTP/1.0 200 OK"));
    sb.ws(&["stop", &id]);
    assert_eq!(host_get(18080), None, "stopping the workspace closes its listeners");

    // Bad input: one line, nothing started.
    sb.ws(&["start", &id]);
    let bad = [
        (vec!["service", "start", &id, "x", "--publish", "80:8000", "--", "true"], "published host_port must be between 1025 and 65535"),
        (vec!["service", "start", &id, "x", "--publish", "a:b", "--", "true"], "published ports must use GUEST_PORT or HOST_PORT:GUEST_PORT"),
        (vec!["service", "start", &id, "x", "--publish", "9000", "--publish", "9000", "--", "true"], "must not repeat the same host/guest port mapping"),
    ];
    for (args, expected) in bad {
        let message = sb.ws_err(&args);
        assert!(message.contains(expected), "{args:?}: {message}");
    }
    let list = sb.ws(&["service", "list", &id]);
    assert!(list["services"].as_array().unwrap().iter().all(|s| s["service_name"] != "x"), "{list}");
}
