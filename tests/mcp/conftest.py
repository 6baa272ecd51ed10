"""Shared helpers of the MCP tests: start `pyro mcp serve` (the binary in $PYRO_BIN) with
the real `mcp` client package, in either lifecycle, on a private state dir."""

import contextlib
import json
import os
import tempfile
from pathlib import Path

import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters

HERE = Path(__file__).parent
SNAPSHOTS = HERE / "snapshots"
PROFILES = ["vm-run", "workspace-core", "workspace-full"]
# "legacy" = the initialize handshake (2025-11-25); "auto" probes `server/discover` and so
# speaks the stateless 2026-07-28 revision (per-request _meta, no initialize).
MODES = ["legacy", "auto"]
PROTOCOL = {"legacy": "2025-11-25", "auto": "2026-07-28"}
GUESTS = os.environ.get("PYRO_MCP_GUEST_TESTS") == "1"
needs_guests = pytest.mark.skipif(not GUESTS, reason="boots real guests; set PYRO_MCP_GUEST_TESTS=1 (scripts/test.sh does)")


def pyro_bin() -> str:
    path = os.environ.get("PYRO_BIN")
    if not path:
        pytest.fail("PYRO_BIN must name the pyro binary under test")
    return path


@contextlib.asynccontextmanager
async def connect(profile: str, mode: str = "legacy", state_dir: str | None = None):
    """A connected client of `pyro mcp serve --profile PROFILE`."""
    with contextlib.ExitStack() as stack:
        if state_dir is None:
            state_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="pyro-mcp-state-"))
        env = {**os.environ, "PYRO_STATE_DIR": state_dir}
        params = StdioServerParameters(command=pyro_bin(), args=["mcp", "serve", "--profile", profile], env=env)
        async with Client(params, mode=mode) as client:
            yield client


def structured(result):
    """The structured content of a successful call, failing with the error text otherwise."""
    text = result.content[0].text if result.content else ""
    assert not result.is_error, text
    assert json.loads(text) == result.structured_content, "the text item must hold the same JSON"
    return result.structured_content


def error_of(result):
    """(text, structured content) of a failed call."""
    assert result.is_error, result
    assert len(result.content) == 1
    return result.content[0].text, result.structured_content
