"""The SDK without guests: the wheel's layout, typed errors, create_server, and the
child process that lives and dies with its parent."""

import inspect
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import pyro_mcp
from pyro_mcp import InvalidArgumentError, NotFoundError, Pyro, PyroError, create_server
from conftest import venv_pyro

CONTRACT_METHODS = """
list_environments pull_environment inspect_environment prune_environments create_vm create_workspace
list_workspaces push_workspace_sync stop_workspace start_workspace list_workspace_files read_workspace_file
write_workspace_file export_workspace apply_workspace_patch export_workspace_disk list_workspace_disk
read_workspace_disk diff_workspace create_snapshot list_snapshots delete_snapshot reset_workspace start_service
list_services status_service logs_service stop_service open_shell read_shell write_shell signal_shell close_shell
start_vm exec_vm exec_workspace stop_vm delete_vm delete_workspace status_vm status_workspace update_workspace
logs_workspace network_info_vm reap_expired run_in_vm create_server
""".split()


def test_the_wheel_installs_pyro_and_its_agent_on_path():
    out = subprocess.run([venv_pyro(), "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"pyro {pyro_mcp.__version__}"
    assert os.access(os.path.join(os.path.dirname(venv_pyro()), "pyro-agent"), os.X_OK)
    assert os.path.isfile(os.path.join(os.path.dirname(pyro_mcp.__file__), "py.typed"))


def test_every_contract_method_exists_with_its_keywords_and_defaults():
    for name in CONTRACT_METHODS:
        method = getattr(Pyro, name)
        assert method.__doc__, f"{name} has no docstring"
    sig = lambda name: inspect.signature(getattr(Pyro, name)).parameters  # noqa: E731
    assert sig("read_shell")["max_chars"].default == 65536 and sig("read_shell")["wait_for_idle_ms"].default is None
    assert sig("start_service")["ready_timeout_seconds"].default == 30 and sig("start_service")["cwd"].default == "/workspace"
    assert sig("logs_service")["tail_lines"].default == 200 and sig("logs_service")["all"].default is False
    assert sig("create_workspace")["network_policy"].default == "off" and sig("create_workspace")["mem_mib"].default == 1024
    assert sig("run_in_vm")["vcpu_count"].default == 1 and sig("run_in_vm")["allow_host_compat"].default is False
    assert sig("reset_workspace")["snapshot"].default == "baseline"
    assert sig("signal_shell")["signal_name"].default == "INT"
    assert inspect.signature(create_server).parameters["profile"].default == "workspace-full"


def test_errors_are_typed_by_kind_with_the_cli_message(pyro):
    with pytest.raises(NotFoundError) as missing:
        pyro.status_workspace("000000000000")
    assert str(missing.value) == "workspace '000000000000' does not exist" and missing.value.kind == "not_found"
    assert isinstance(missing.value, ValueError) and isinstance(missing.value, PyroError)
    with pytest.raises(InvalidArgumentError):
        pyro.create_workspace("debian:12", mem_mib=1)
    with pytest.raises(NotFoundError):
        pyro.inspect_environment("no-such:env")
    with pytest.raises(InvalidArgumentError, match="readiness.type must be one of"):
        pyro.start_service("000000000000", "app", command="true", readiness={"type": "socket"})
    # The child survives bad calls.
    assert pyro.list_workspaces() == {"count": 0, "workspaces": []}


def test_results_are_shaped_like_the_cli_json(pyro, tmp_path):
    env = {**os.environ, "PYRO_STATE_DIR": str(tmp_path / "state")}
    cli = json.loads(subprocess.run([venv_pyro(), "env", "list", "--json"], capture_output=True, text=True, check=True, env=env).stdout)
    assert pyro.list_environments() == cli
    assert pyro.list_workspaces() == json.loads(
        subprocess.run([venv_pyro(), "workspace", "list", "--json"], capture_output=True, text=True, check=True, env=env).stdout
    )


def test_create_server_rejects_an_unknown_profile_with_the_reference_message():
    with pytest.raises(InvalidArgumentError) as bad:
        create_server(profile="bogus")
    assert str(bad.value) == "unknown MCP profile 'bogus'; expected one of: vm-run, workspace-core, workspace-full"
    with pytest.raises(ValueError):
        Pyro().create_server(profile="nope")


def test_create_server_runs_the_same_server_as_pyro_mcp_serve():
    script = "from pyro_mcp import create_server; raise SystemExit(create_server(profile='vm-run').run())"
    request = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}}
    listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
    notice = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    stdin = "".join(json.dumps(m) + "\n" for m in (request, notice, listing))
    out = subprocess.run([sys.executable, "-c", script], input=stdin, capture_output=True, text=True, timeout=60)
    replies = [json.loads(line) for line in out.stdout.splitlines()]
    assert replies[0]["result"]["serverInfo"]["name"] == "pyro_mcp"
    assert [t["name"] for t in replies[1]["result"]["tools"]] == ["vm_run"]


def test_killing_the_python_process_leaves_no_pyro_child(tmp_path):
    script = textwrap.dedent(
        f"""
        import sys, time
        from pyro_mcp import Pyro
        p = Pyro(state_dir={str(tmp_path / 'state')!r})
        p.list_workspaces()
        print(p._bridge._process.pid, flush=True)
        time.sleep(600)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    os.kill(child, 0)  # alive while its parent is
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    for _ in range(200):
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return
        # Reaped by init once it exits; a zombie still answers kill(0) until then.
        with open(f"/proc/{child}/stat") as stat:
            if stat.read().split(")")[-1].split()[0] == "Z":
                return
        time.sleep(0.1)
    pytest.fail(f"pyro child {child} outlived its killed parent")


def test_a_closed_pyro_starts_a_new_child_on_the_next_call(pyro):
    pyro.list_workspaces()
    first = pyro._bridge._process.pid
    pyro.close()
    assert pyro.list_workspaces()["count"] == 0
    assert pyro._bridge._process.pid != first
