"""`tools/list` per profile and per protocol revision: names, order, schemas and
annotations pinned by the committed snapshots in snapshots/ (rewrite them with
PYRO_MCP_UPDATE_SNAPSHOTS=1 after adding tools, and review the diff)."""

import asyncio
import json
import os

import pytest

from conftest import MODES, PROFILES, PROTOCOL, SNAPSHOTS, connect

# The reference's order of the full profile (43 tools), plus `workspace_network_log`
# (beside `workspace_logs`).
FULL_ORDER = [
    "vm_run", "vm_list_environments", "vm_create", "vm_start", "vm_exec", "vm_stop", "vm_delete", "vm_status",
    "vm_network_info", "vm_reap_expired", "workspace_create", "workspace_list", "workspace_update", "workspace_exec",
    "workspace_sync_push", "workspace_status", "workspace_stop", "workspace_start", "workspace_logs", "workspace_network_log", "workspace_export",
    "workspace_diff", "workspace_file_list", "workspace_file_read", "workspace_file_write", "workspace_patch_apply",
    "workspace_disk_export", "workspace_disk_list", "workspace_disk_read", "snapshot_create", "snapshot_list",
    "snapshot_delete", "workspace_reset", "shell_open", "shell_read", "shell_write", "shell_signal", "shell_close",
    "service_start", "service_list", "service_status", "service_logs", "service_stop", "workspace_delete",
]
CORE = [
    "vm_run", "workspace_create", "workspace_list", "workspace_update", "workspace_exec", "workspace_sync_push",
    "workspace_status", "workspace_logs", "workspace_export", "workspace_diff", "workspace_file_list",
    "workspace_file_read", "workspace_file_write", "workspace_patch_apply", "workspace_reset", "workspace_delete",
]
READ_ONLY = ("_list", "_status", "_read", "_logs", "_diff", "_network_info", "_network_log", "vm_list_environments")
DESTRUCTIVE = ("_delete", "_reset", "_stop", "vm_reap_expired")


def listing(profile, mode):
    async def run():
        async with connect(profile, mode) as client:
            assert client.server_info.name == "pyro_mcp"
            assert client.protocol_version == PROTOCOL[mode]
            return client.server_info.version, (await client.list_tools()).tools

    return asyncio.run(run())


def shape(tools):
    return [t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in tools]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("profile", PROFILES)
def test_tools_match_the_snapshot(profile, mode):
    version, tools = listing(profile, mode)
    assert version == os.environ.get("PYRO_VERSION", version)
    got = shape(tools)
    path = SNAPSHOTS / f"tools-{profile}.json"
    if os.environ.get("PYRO_MCP_UPDATE_SNAPSHOTS") == "1" and mode == "legacy":
        path.write_text(json.dumps(got, indent=2, sort_keys=True) + "\n")
    assert got == json.loads(path.read_text()), f"tools/list of {profile} changed; see {path}"


@pytest.mark.parametrize("profile", PROFILES)
def test_names_order_annotations_and_descriptions(profile):
    _, tools = listing(profile, "legacy")
    names = [t.name for t in tools]
    expected = {"vm-run": ["vm_run"], "workspace-core": CORE, "workspace-full": FULL_ORDER}[profile]
    assert names == expected, "tools are missing or out of the reference's order"
    for tool in tools:
        a = tool.annotations
        assert a is not None and a.title and tool.title == a.title, tool.name
        assert tool.output_schema and tool.output_schema["type"] == "object"
        assert a.read_only_hint == tool.name.endswith(READ_ONLY), tool.name
        if tool.name.endswith(DESTRUCTIVE) or tool.name == "snapshot_delete":
            assert a.destructive_hint is True, tool.name
        assert a.idempotent_hint is not None, tool.name
        for prop, schema in tool.input_schema.get("properties", {}).items():
            assert schema.get("description"), f"{tool.name}.{prop} has no description"


def test_core_narrows_create_and_exec():
    _, core = listing("workspace-core", "legacy")
    _, full = listing("workspace-full", "legacy")
    props = lambda tools, name: set(next(t for t in tools if t.name == name).input_schema["properties"])
    assert props(full, "workspace_create") - props(core, "workspace_create") == {"network_policy", "allow_hosts", "secrets"}
    assert props(full, "workspace_exec") - props(core, "workspace_exec") == {"secret_env"}
    create = next(t for t in full if t.name == "workspace_create").input_schema
    assert create["required"] == ["environment"]
    assert create["properties"]["vcpu_count"]["default"] == 1
    assert create["properties"]["mem_mib"]["default"] == 1024
    assert create["properties"]["network_policy"]["default"] == "off"
