"""Stories 1 and 5 of the reference (§10) through the `workspace-full` profile in real
guests: a service with file readiness and its logs (cold-start validation), and a shell
read plain with idle waits plus snapshot and reset (review and evaluation). Skipped
unless PYRO_MCP_GUEST_TESTS=1."""

import asyncio

from conftest import connect, needs_guests, structured
from test_stories import call, create, seed


@needs_guests
def test_story_cold_start_validation(tmp_path):
    async def run():
        async with connect("workspace-full") as client:
            s = seed(
                tmp_path / "seed",
                {
                    "README.md": ("# cold start\n", 0o644),
                    "validate.sh": ("#!/bin/sh\nset -e\necho validation=pass > validation-report.txt\necho validated\n", 0o755),
                    "serve.sh": (
                        "#!/bin/sh\necho 'service started'\necho service=ready > service-state.txt\ntouch .app-ready\nwhile true; do sleep 60; done\n",
                        0o755,
                    ),
                },
            )
            ws = await create(client, s, "cold-start-validation")
            try:
                validated = await call(client, "workspace_exec", workspace_id=ws, command="sh validate.sh")
                assert (validated["exit_code"], validated["stdout"], validated["execution_mode"]) == (0, "validated\n", "guest_vsock")
                started = await call(client, "service_start", workspace_id=ws, service_name="app", command="sh serve.sh", ready_file=".app-ready")
                assert started["state"] == "running", started
                assert started["ready_at"] is not None
                listed = await call(client, "service_list", workspace_id=ws)
                assert (listed["count"], listed["running_count"], [x["service_name"] for x in listed["services"]]) == (1, 1, ["app"])
                probe = await call(client, "workspace_exec", workspace_id=ws, command="cat service-state.txt")
                assert probe["stdout"] == "service=ready\n"
                logs = await call(client, "service_logs", workspace_id=ws, service_name="app", tail_lines=20)
                assert "service started" in logs["stdout"] and logs["truncated"] is False
                assert (await call(client, "service_status", workspace_id=ws, service_name="app"))["state"] == "running"
                out = tmp_path / "validation-report.txt"
                await call(client, "workspace_export", workspace_id=ws, path="validation-report.txt", output_path=str(out))
                assert out.read_text() == "validation=pass\n"
                assert (await call(client, "service_stop", workspace_id=ws, service_name="app"))["state"] == "stopped"
                # Two readiness probes at once are named, not silently resolved.
                bad = await client.call_tool("service_start", {"workspace_id": ws, "service_name": "x", "command": "true", "ready_file": "a", "ready_tcp": "b:1"})
                assert bad.is_error and bad.structured_content["error_kind"] == "invalid_argument"
            finally:
                await call(client, "workspace_delete", workspace_id=ws)

    asyncio.run(run())


@needs_guests
def test_story_review_eval(tmp_path):
    async def run():
        async with connect("workspace-full") as client:
            s = seed(
                tmp_path / "seed",
                {
                    "CHECKLIST.md": ("# Review checklist\n\n- artifact says PASS\n", 0o644),
                    "artifact.txt": ("PASS\n", 0o644),
                    "review.sh": ("#!/bin/sh\ngrep -qx PASS artifact.txt || exit 1\necho review=pass > review-report.txt\n", 0o755),
                },
            )
            ws = await create(client, s, "review-eval")
            try:
                await call(client, "snapshot_create", workspace_id=ws, snapshot_name="pre-review")
                shell = await call(client, "shell_open", workspace_id=ws)
                sid = shell["shell_id"]
                assert (shell["cwd"], shell["cols"], shell["rows"], shell["state"]) == ("/workspace", 120, 30, "running")
                first = await call(client, "shell_read", workspace_id=ws, shell_id=sid, plain=True, wait_for_idle_ms=300)
                assert first["plain"] is True and first["wait_for_idle_ms"] == 300
                written = await call(client, "shell_write", workspace_id=ws, shell_id=sid, input="cat CHECKLIST.md")
                assert (written["input_length"], written["append_newline"]) == (len("cat CHECKLIST.md"), True)
                text = ""
                cursor = first["next_cursor"]
                for _ in range(20):  # the idle wait may end before cat's output arrives on a slow host
                    read = await call(client, "shell_read", workspace_id=ws, shell_id=sid, cursor=cursor, plain=True, wait_for_idle_ms=300)
                    text += read["output"]
                    cursor = read["next_cursor"]
                    if "Review checklist" in text:
                        break
                assert "Review checklist" in text, text
                assert "\x1b" not in text, "plain output has no escape sequences"
                assert (await call(client, "shell_close", workspace_id=ws, shell_id=sid))["closed"] is True
                gone = await client.call_tool("shell_read", {"workspace_id": ws, "shell_id": sid})
                assert gone.is_error and gone.structured_content["error_kind"] == "not_found"
                assert (await call(client, "workspace_exec", workspace_id=ws, command="sh review.sh"))["exit_code"] == 0
                await call(client, "workspace_file_write", workspace_id=ws, path="artifact.txt", text="FAIL\n")
                reset = await call(client, "workspace_reset", workspace_id=ws, snapshot="pre-review")
                assert reset["workspace_reset"]["snapshot_name"] == "pre-review", reset
                assert (await call(client, "workspace_file_read", workspace_id=ws, path="artifact.txt"))["content"] == "PASS\n"
                assert (await call(client, "workspace_exec", workspace_id=ws, command="sh review.sh"))["exit_code"] == 0
                out = tmp_path / "review-report.txt"
                await call(client, "workspace_export", workspace_id=ws, path="review-report.txt", output_path=str(out))
                assert out.read_text() == "review=pass\n"
            finally:
                await call(client, "workspace_delete", workspace_id=ws)

    asyncio.run(run())
