"""Bad calls are `isError` results carrying the CLI's one-line message and the error kind,
never a crash of the server (no guest is booted)."""

import asyncio

import pytest

from conftest import MODES, connect, error_of


@pytest.mark.parametrize("mode", MODES)
def test_bad_calls_are_tool_errors_and_the_server_keeps_serving(mode):
    async def run():
        async with connect("workspace-core", mode) as client:
            text, data = error_of(await client.call_tool("no_such_tool", {}))
            assert text == "Unknown tool: no_such_tool" and data["error_kind"] == "not_found"
            # workspace_stop exists in the full profile only.
            text, _ = error_of(await client.call_tool("workspace_stop", {"workspace_id": "x"}))
            assert text == "Unknown tool: workspace_stop"

            text, data = error_of(await client.call_tool("vm_run", {"environment": "debian:12"}))
            assert text == "Error executing tool vm_run: invalid arguments: missing field `command`"
            assert data == {"error": "invalid arguments: missing field `command`", "error_kind": "invalid_argument"}

            text, data = error_of(await client.call_tool("workspace_file_read", {"workspace_id": "abc", "path": "x", "max_bytes": "lots"}))
            assert text.startswith("Error executing tool workspace_file_read: invalid arguments: invalid type: string")
            assert data["error_kind"] == "invalid_argument"

            text, data = error_of(await client.call_tool("workspace_status", {"workspace_id": "000000000000"}))
            assert text == "Error executing tool workspace_status: workspace '000000000000' does not exist"
            assert data == {"error": "workspace '000000000000' does not exist", "error_kind": "not_found"}

            # The same validation the CLI does, with the same message.
            text, data = error_of(await client.call_tool("vm_run", {"environment": "nope:1", "command": "true"}))
            assert text.startswith("Error executing tool vm_run: unknown environment 'nope:1'; expected one of: ")
            assert data["error_kind"] == "not_found"
            text, data = error_of(await client.call_tool("vm_run", {"environment": "debian:12", "command": "true", "vcpu_count": "99"}))
            assert data["error_kind"] == "invalid_argument", "a numeric string is coerced, then validated"

            listed = await client.call_tool("workspace_list", {})
            assert not listed.is_error and listed.structured_content["workspaces"] == []

    asyncio.run(run())
