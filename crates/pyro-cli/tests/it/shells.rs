//! PTY shells end to end through the `pyro` CLI in a real guest: a shell outlives the CLI
//! process that opened it, cursors after a scrollback overflow are exact, a secret printed
//! in a shell is `[REDACTED]`, faults are one clear line, and stop/start forgets shells.
//!
//! They boot real guests, so they are `#[ignore]`d in a plain `cargo test` and run by
//! `scripts/test.sh`.

use std::time::{Duration, Instant};

use pyro_test::Sandbox;
use serde_json::Value;

/// `pyro workspace shell ARGS --json`.
fn shell(sb: &Sandbox, args: &[&str]) -> Value {
    let mut full = vec!["shell"];
    full.extend_from_slice(args);
    sb.ws(&full)
}

/// Plain idle reads from `cursor` until the output contains `needle` (generous: guests
/// under TCG are slow); returns everything read and the next cursor.
fn read_until(sb: &Sandbox, id: &str, sid: &str, mut cursor: u64, needle: &str) -> (String, u64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seen = String::new();
    while !seen.contains(needle) {
        assert!(Instant::now() < deadline, "shell output never contained {needle:?}; got {seen:?}\n{}", sb.diagnostics());
        let c = cursor.to_string();
        let r = shell(sb, &["read", id, sid, "--cursor", &c, "--plain", "--wait-for-idle-ms", "300", "--max-chars", "1000000"]);
        seen.push_str(r["output"].as_str().unwrap());
        cursor = r["next_cursor"].as_u64().unwrap();
    }
    (seen, cursor)
}

/// Runs `pyro workspace shell ARGS` (human mode) expecting failure; returns stderr.
fn fails(sb: &Sandbox, args: &[&str]) -> String {
    let mut full = vec!["workspace", "shell"];
    full.extend_from_slice(args);
    let out = sb.raw(&full);
    assert_eq!(out.status.code(), Some(1), "pyro {full:?} should fail: {}", String::from_utf8_lossy(&out.stdout));
    assert!(out.stdout.is_empty(), "nothing on stdout: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8(out.stderr).unwrap()
}

#[test]
#[ignore = "boots a real guest; run by scripts/test.sh"]
fn shells_outlive_their_cli_process_and_fail_clearly() {
    let sb = Sandbox::new(crate::PYRO);
    let seed = sb.seed("shells", &[("hello.txt", "hello from the seed\n", 0o644)]);
    let id = sb.create(&seed, "shells", &[]);

    // Open in one process (it exits), type in a second, read in a third.
    let out = sb.raw(&["workspace", "shell", "open", &id, "--cwd", "/workspace/made/here", "--id-only"]);
    sb.expect_success(&out);
    let sid = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(sid.len(), 12, "{sid:?}");
    let input = "pwd; cat ../../hello.txt; echo \"term=$TERM sum=$((40+2))\"";
    let written = shell(&sb, &["write", &id, &sid, "--input", input]);
    assert_eq!((written["input_length"].as_u64(), written["append_newline"].as_bool()), (Some(input.chars().count() as u64), Some(true)));
    let (seen, cursor) = read_until(&sb, &id, &sid, 0, "sum=42\n");
    assert!(seen.contains("/workspace/made/here\nhello from the seed\nterm=xterm-256color sum=42\n"), "{seen:?}");
    assert!(!seen.contains('\u{1b}') && !seen.contains('\r'), "plain output has no controls: {seen:?}");

    // Human output: raw text on stdout, the summary line on stderr.
    let out = sb.raw(&["workspace", "shell", "read", &id, &sid, "--cursor", "0"]);
    sb.expect_success(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("sum=42\r\n"));
    let line = String::from_utf8(out.stderr).unwrap();
    assert!(
        line.starts_with(&format!("[workspace-shell-read] workspace_id={id} shell_id={sid} state=running cursor=0 next_cursor="))
            && line.contains("truncated=False plain=False wait_for_idle_ms=None execution_mode=guest_vsock"),
        "{line}"
    );

    // Signals go to the foreground job: INT stops a sleep, the shell lives on.
    shell(&sb, &["write", &id, &sid, "--input", "sleep 300"]);
    std::thread::sleep(Duration::from_millis(500));
    let signalled = shell(&sb, &["signal", &id, &sid]);
    assert_eq!((signalled["signal"].as_str(), signalled["state"].as_str()), (Some("INT"), Some("running")));
    shell(&sb, &["write", &id, &sid, "--input", "echo after-$((1+1))"]);
    let (_, cursor) = read_until(&sb, &id, &sid, cursor, "after-2\n");

    // Faults: one clear line, exit 1, nothing created.
    let line = |err: &str| err.lines().count() == 1;
    for (args, message) in [
        (vec!["read", &id, "0123456789ab"], format!("shell '0123456789ab' does not exist in workspace '{id}'")),
        (vec!["open", &id, "--cols", "0"], "cols must be positive".to_string()),
        (vec!["open", &id, "--rows", "-5"], "rows must be positive".to_string()),
        (vec!["signal", &id, &sid, "--signal", "USR1"], "signal_name must be one of: HUP, INT, TERM, KILL".to_string()),
        (vec!["read", &id, &sid, "--wait-for-idle-ms", "0"], "wait_for_idle_ms must be between 1 and 10000".to_string()),
        (vec!["read", &id, &sid, "--wait-for-idle-ms", "10001"], "wait_for_idle_ms must be between 1 and 10000".to_string()),
        (vec!["read", &id, &sid, "--cursor", "-1"], "cursor must not be negative".to_string()),
        (vec!["read", &id, &sid, "--max-chars", "0"], "max_chars must be positive".to_string()),
    ] {
        let err = fails(&sb, &args);
        assert!(line(&err) && err == format!("[error] {message}\n"), "{args:?}: {err}");
    }
    let shells_dir = sb.state.path().join("workspaces").join(&id).join("shells");
    assert_eq!(std::fs::read_dir(&shells_dir).unwrap().count(), 1, "failed opens left no record");

    // An ended shell says how it ended.
    shell(&sb, &["write", &id, &sid, "--input", "exit 3"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let ended = loop {
        let c = cursor.to_string();
        let r = shell(&sb, &["read", &id, &sid, "--cursor", &c, "--wait-for-idle-ms", "200"]);
        if r["state"] == "exited" {
            break r;
        }
        assert!(Instant::now() < deadline, "the shell never exited: {r}\n{}", sb.diagnostics());
    };
    assert_eq!(ended["exit_code"], 3);
    assert!(ended["ended_at"].as_f64().unwrap() >= ended["started_at"].as_f64().unwrap(), "{ended}");
    assert!(fails(&sb, &["write", &id, &sid, "--input", "x"]).contains(&format!("shell '{sid}' is not running")));
    assert_eq!(shell(&sb, &["close", &id, &sid])["closed"], true);
    assert!(fails(&sb, &["close", &id, &sid]).contains("does not exist"));

    // Shells die with the VM: stop/start forgets their records.
    let other = shell(&sb, &["open", &id])["shell_id"].as_str().unwrap().to_string();
    assert_eq!(sb.ws(&["stop", &id])["state"], "stopped");
    assert_eq!(sb.ws(&["start", &id])["state"], "started");
    assert!(fails(&sb, &["read", &id, &other]).contains(&format!("shell '{other}' does not exist in workspace '{id}'")));
}

#[test]
#[ignore = "boots a real guest; run by scripts/test.sh"]
fn shell_scrollback_overflow_is_exact_and_secrets_are_redacted() {
    let sb = Sandbox::new(crate::PYRO);
    let seed = sb.seed("overflow", &[("x", "x\n", 0o644)]);
    let value = "hunter2-in-a-SHELL";
    let created = sb.ws(&["create", "debian:12", "--seed-path", seed.to_str().unwrap(), "--secret", &format!("API_TOKEN={value}")]);
    let id = created["workspace_id"].as_str().unwrap().to_string();
    let sid = shell(&sb, &["open", &id, "--secret-env", "API_TOKEN=TOKEN"])["shell_id"].as_str().unwrap().to_string();

    // A value printed whole and in two halves is redacted at the source.
    shell(
        &sb,
        &[
            "write",
            &id,
            &sid,
            "--input",
            "echo \"whole=$TOKEN\"; printf 'split=%s' \"${TOKEN:0:6}\"; sleep 1; printf '%s\\n' \"${TOKEN:6}\"; echo done-$((2+2))",
        ],
    );
    let (seen, _) = read_until(&sb, &id, &sid, 0, "done-4\n");
    assert!(seen.contains("whole=[REDACTED]\nsplit=[REDACTED]\n"), "{seen:?}");
    let raw = shell(&sb, &["read", &id, &sid]);
    assert!(!raw.to_string().contains("hunter2"), "{raw}");

    // ~6.9 MB of numbered lines: more than the 4 MiB (+1 MiB slack) the agent keeps.
    shell(&sb, &["write", &id, &sid, "--input", "stty -echo; seq 1 900000; echo end-$((40+2))"]);
    let deadline = Instant::now() + Duration::from_secs(300);
    let end = loop {
        // A cursor past the end reads nothing and reports the end; the wait lets output settle.
        let probe = shell(&sb, &["read", &id, &sid, "--cursor", "999999999999", "--wait-for-idle-ms", "1000"]);
        let end = probe["cursor"].as_u64().unwrap();
        let last = shell(&sb, &["read", &id, &sid, "--cursor", &end.saturating_sub(40).to_string()]);
        if last["output"].as_str().unwrap().contains("end-42\r\n") {
            break end;
        }
        assert!(Instant::now() < deadline, "seq never finished\n{}", sb.diagnostics());
    };
    let first = shell(&sb, &["read", &id, &sid, "--cursor", "0", "--max-chars", "10"]);
    let start = first["cursor"].as_u64().unwrap();
    assert!(start > 0 && first["truncated"] == true, "a cursor that fell out starts at the oldest kept character: {first}");
    // Everything kept, read in pieces that start exactly where the previous one ended.
    let mut kept = String::new();
    let mut cursor = start;
    while cursor < end {
        let r = shell(&sb, &["read", &id, &sid, "--cursor", &cursor.to_string(), "--max-chars", "1000000"]);
        assert_eq!(r["cursor"].as_u64(), Some(cursor), "pieces are contiguous");
        kept.push_str(r["output"].as_str().unwrap());
        cursor = r["next_cursor"].as_u64().unwrap();
    }
    assert_eq!(kept.chars().count() as u64, end - start);
    assert!(kept.starts_with(first["output"].as_str().unwrap()));
    let numbers: Vec<u64> = kept.split("\r\n").skip(1).filter_map(|l| l.parse().ok()).collect();
    assert_eq!(numbers.last(), Some(&900_000));
    assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "no line lost or repeated in the kept window");
    for offset in [0u64, 1, 54_321, end - start - 9] {
        let r = shell(&sb, &["read", &id, &sid, "--cursor", &(start + offset).to_string(), "--max-chars", "9"]);
        let expected: String = kept.chars().skip(offset as usize).take(9).collect();
        assert_eq!(r["output"].as_str(), Some(expected.as_str()), "offset {offset}");
    }
    assert_eq!(shell(&sb, &["close", &id, &sid])["closed"], true);
}
