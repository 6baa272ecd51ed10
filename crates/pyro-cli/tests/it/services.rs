//! Workspace services through the `pyro` CLI in a real guest: HTTP and TCP readiness
//! against listeners on guest loopback (Perl, which every Debian rootfs has), redacted
//! secrets in logs, failures (missing command, readiness timeout) as `failed` records,
//! bad input as one clear line with nothing created, and records that say what happened
//! when the workspace stops or its VMM is killed.

use std::time::Duration;

use pyro_test::{vmm_pid, wait_for, Sandbox};
use serde_json::Value;

/// A tiny HTTP server on 127.0.0.1:$1 that answers every request `200 ok`.
const SERVE_PL: &str = r#"use IO::Socket::INET;
my $s = IO::Socket::INET->new(LocalAddr => "127.0.0.1", LocalPort => $ARGV[0], Listen => 8, ReuseAddr => 1) or die "listen: $!";
print "listening on $ARGV[0]\n";
$| = 1;
while (my $c = $s->accept) { my $line = <$c>; print $c "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"; close $c; }
"#;

const SECRET: &str = "s3cr3t-value-42";

fn service_names(list: &Value) -> Vec<String> {
    list["services"].as_array().unwrap().iter().map(|s| s["service_name"].as_str().unwrap().to_string()).collect()
}

#[test]
#[ignore = "boots a real guest; run by scripts/test.sh"]
fn services_probe_fail_redact_and_outlive_nothing() {
    let sb = Sandbox::new(crate::PYRO);
    let seed = sb.seed("services", &[("serve.pl", SERVE_PL, 0o644)]);
    let out = sb.raw(&[
        "workspace",
        "create",
        "debian:12",
        "--seed-path",
        seed.to_str().unwrap(),
        "--name",
        "services",
        "--secret",
        &format!("API_TOKEN={SECRET}"),
        "--id-only",
    ]);
    sb.expect_success(&out);
    let id = String::from_utf8(out.stdout).unwrap().trim().to_string();

    // HTTP and TCP probes against listeners on guest loopback.
    let web = sb.ws(&["service", "start", &id, "web", "--ready-http", "http://127.0.0.1:8080/", "--", "perl serve.pl 8080"]);
    assert_eq!(web["state"], "running", "{web}\n{}", sb.diagnostics());
    assert!(web["ready_at"].is_number() && web["pid"].is_number(), "{web}");
    let tcp = sb.ws(&["service", "start", &id, "tcp", "--ready-tcp", "127.0.0.1:8081", "--ready-interval-ms", "100", "--", "sleep 1; exec perl serve.pl 8081"]);
    assert_eq!(tcp["state"], "running", "{tcp}");
    assert_eq!(tcp["readiness"], serde_json::json!({"type": "tcp", "address": "127.0.0.1:8081"}));
    let cmd = sb.ws(&["service", "start", &id, "cmd", "--ready-command", "test -e cmd-ready", "--", "touch cmd-ready; exec sleep 600"]);
    assert_eq!(cmd["state"], "running", "{cmd}");

    // A secret printed by a service is redacted in its logs, and nowhere in the CLI output.
    let leak = sb.ws(&[
        "service",
        "start",
        &id,
        "leak",
        "--secret-env",
        "API_TOKEN=TOKEN",
        "--ready-file",
        "leak-ready",
        "--",
        "echo token=$TOKEN; echo err=$TOKEN >&2; touch leak-ready; exec sleep 600",
    ]);
    assert_eq!(leak["state"], "running", "{leak}");
    let logs = sb.ws(&["service", "logs", &id, "leak", "--all"]);
    assert_eq!((logs["stdout"].as_str(), logs["stderr"].as_str()), (Some("token=[REDACTED]\n"), Some("err=[REDACTED]\n")), "{logs}");
    assert_eq!((logs["truncated"].clone(), logs["tail_lines"].clone()), (Value::Bool(false), Value::Null));
    let human = sb.raw(&["workspace", "service", "logs", &id, "leak"]);
    sb.expect_success(&human);
    let (stdout, stderr) = (String::from_utf8_lossy(&human.stdout), String::from_utf8_lossy(&human.stderr));
    assert_eq!(stdout, "token=[REDACTED]\n");
    assert!(
        stderr.contains("err=[REDACTED]") && stderr.contains("[workspace-service-logs] workspace_id=") && stderr.contains("service_name=leak state=running"),
        "{stderr}"
    );
    assert!(!stdout.contains(SECRET) && !stderr.contains(SECRET));

    // A command that does not exist fails before ready, with its stderr in the logs.
    let missing = sb.ws(&["service", "start", &id, "missing", "--ready-file", "never", "--", "no-such-command-xyz"]);
    assert_eq!(
        (missing["state"].as_str(), missing["stop_reason"].as_str(), missing["exit_code"].as_i64()),
        (Some("failed"), Some("process_exited_before_ready"), Some(127)),
        "{missing}"
    );
    let missing_logs = sb.ws(&["service", "logs", &id, "missing"]);
    assert!(missing_logs["stderr"].as_str().unwrap().contains("no-such-command-xyz"), "{missing_logs}");
    let slow = sb.ws(&["service", "start", &id, "slow", "--ready-file", "never", "--ready-timeout-seconds", "1", "--", "exec sleep 600"]);
    assert_eq!((slow["state"].as_str(), slow["stop_reason"].as_str()), (Some("failed"), Some("readiness_timeout")), "{slow}");

    // A service that ends by itself is `exited` with its code; tails say when they cut.
    sb.ws(&["service", "start", &id, "quick", "--", "echo one; echo two; exit 3"]);
    let quick = wait_for(Duration::from_secs(30), || {
        let s = sb.ws(&["service", "status", &id, "quick"]);
        (s["state"] == "exited").then_some(s)
    })
    .expect("the quick service is seen to exit");
    assert_eq!(quick["exit_code"], 3);
    let tail = sb.ws(&["service", "logs", &id, "quick", "--tail-lines", "1"]);
    assert_eq!((tail["stdout"].as_str(), tail["truncated"].as_bool(), tail["tail_lines"].as_u64()), (Some("two\n"), Some(true), Some(1)), "{tail}");

    // Bad input: one clear line, exit 1, nothing created.
    let before = sb.ws(&["service", "list", &id]);
    let bad = [
        (vec!["service", "start", &id, "_bad", "--", "true"], "service_name must match ^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"),
        (vec!["service", "start", &id, "web", "--", "true"], "service 'web' is already running in workspace"),
        (
            vec!["service", "start", &id, "x", "--ready-file", "a", "--ready-tcp", "h:1", "--", "true"],
            "choose at most one of --ready-file, --ready-tcp, --ready-http, or --ready-command",
        ),
        (vec!["service", "start", &id, "x", "--ready-tcp", "nohost", "--", "true"], "readiness.address must be in HOST:PORT format"),
        (vec!["service", "start", &id, "x", "--ready-timeout-seconds", "0", "--", "true"], "ready_timeout_seconds must be positive"),
        (vec!["service", "start", &id, "x", "--ready-interval-ms", "0", "--", "true"], "ready_interval_ms must be positive"),
        (vec!["service", "start", &id, "x", "--publish", "8080", "--", "true"], "published ports require workspace network_policy 'egress+published-ports'"),
        (vec!["service", "start", &id, "x", "--secret-env", "NOPE", "--", "true"], "secret_env references unknown workspace secret 'NOPE'"),
        (vec!["service", "start", &id, "x", "--cwd", "/etc", "--", "true"], "workspace destination must stay inside /workspace"),
        (vec!["service", "status", &id, "nope"], "service 'nope' does not exist in workspace"),
        (vec!["service", "logs", &id, "web", "--tail-lines", "0"], "tail_lines must be positive"),
        (vec!["service", "stop", &id, "nope"], "service 'nope' does not exist in workspace"),
    ];
    for (args, expected) in bad {
        let message = sb.ws_err(&args);
        assert!(message.contains(expected), "{args:?}: {message}");
    }
    let human = sb.raw(&["workspace", "service", "start", &id, "x", "--ready-file", "a", "--ready-http", "http://h/", "--", "true"]);
    assert_eq!(human.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&human.stderr), "[error] choose at most one of --ready-file, --ready-tcp, --ready-http, or --ready-command\n");
    assert_eq!(sb.ws(&["service", "list", &id])["services"], before["services"], "failed starts created nothing");

    // Counts: list and workspace status/list agree.
    let list = sb.ws(&["service", "list", &id]);
    assert_eq!(service_names(&list), ["cmd", "leak", "missing", "quick", "slow", "tcp", "web"]);
    assert_eq!((list["count"].as_u64(), list["running_count"].as_u64()), (Some(7), Some(4)), "{list}");
    let status = sb.ws(&["status", &id]);
    assert_eq!((status["service_count"].as_u64(), status["running_service_count"].as_u64()), (Some(7), Some(4)), "{status}");
    let human = sb.raw(&["workspace", "service", "list", &id]);
    assert!(String::from_utf8_lossy(&human.stdout).contains("web [running] cwd=/workspace\n"));

    // Stop: TERM to the group; the port is free again; an ended service is unchanged.
    let stopped = sb.ws(&["service", "stop", &id, "web"]);
    assert_eq!((stopped["state"].as_str(), stopped["stop_reason"].as_str()), (Some("stopped"), Some("sigterm")), "{stopped}");
    let free = sb.ws(&["exec", &id, "--", "perl -MIO::Socket::INET -e 'exit(IO::Socket::INET->new(PeerAddr => \"127.0.0.1:8080\") ? 1 : 0)'"]);
    assert_eq!(free["exit_code"], 0, "nothing listens on 8080 after the stop");
    assert_eq!(sb.ws(&["service", "stop", &id, "quick"])["state"], "exited");

    // Stopping the workspace stops its services and says so.
    assert_eq!(sb.ws(&["stop", &id])["running_service_count"], 0);
    let after_stop = sb.ws(&["service", "status", &id, "tcp"]);
    assert_eq!((after_stop["state"].as_str(), after_stop["stop_reason"].as_str()), (Some("stopped"), Some("workspace_stopped")), "{after_stop}");
    assert_eq!(sb.ws(&["service", "status", &id, "quick"])["state"], "exited", "ended services keep their record");
    assert!(sb.ws_err(&["service", "logs", &id, "quick"]).contains("must be in 'started' state before service operations"));

    // Killing the VMM under running services leaves records that say what happened.
    assert_eq!(sb.ws(&["start", &id])["state"], "started");
    let web = sb.ws(&["service", "start", &id, "web", "--ready-http", "http://127.0.0.1:8080/", "--", "perl serve.pl 8080"]);
    assert_eq!(web["state"], "running", "a stopped service's name can be started again: {web}");
    assert_eq!(sb.ws(&["status", &id])["running_service_count"], 1);
    let vmm = vmm_pid(sb.state.path()).expect("a VMM process for the workspace");
    // SAFETY: kill(2) with a pid we found and a valid signal number.
    unsafe { libc::kill(vmm, libc::SIGKILL) };
    let status = wait_for(Duration::from_secs(60), || {
        let s = sb.ws(&["status", &id]);
        (s["state"] == "stopped").then_some(s)
    })
    .expect("status notices the dead VMM");
    assert_eq!((status["service_count"].as_u64(), status["running_service_count"].as_u64()), (Some(7), Some(0)), "{status}");
    let crashed = sb.ws(&["service", "status", &id, "web"]);
    assert_eq!((crashed["state"].as_str(), crashed["stop_reason"].as_str()), (Some("stopped"), Some("workspace_stopped")), "{crashed}");
    assert!(crashed["ended_at"].is_number(), "{crashed}");
}
