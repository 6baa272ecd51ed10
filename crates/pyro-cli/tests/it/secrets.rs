//! Workspace secrets through the CLI in a real guest: a value reaches a command only
//! through `--secret-env`, never appears in any output (exec, service logs), JSON result,
//! history entry, host record or log, nor anywhere in the stopped workspace's disk, and
//! survives stop/start and reset.

use std::time::Duration;

use pyro_test::{wait_for, Sandbox};

const VALUE: &str = "pyro-s3cret-4f9c2e";
const FILE_VALUE: &str = "from-a-file-77aa31";

/// Every file under `dir`, recursively.
fn files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[test]
#[ignore = "boots a real guest; run by scripts/test.sh"]
fn a_secret_reaches_only_its_command_and_is_redacted_everywhere() {
    let sb = Sandbox::new(crate::PYRO);
    let seed = sb.seed("secrets", &[("a.txt", "a\n", 0o644)]);
    let secret_file = sb.host.path().join("token.txt");
    std::fs::write(&secret_file, FILE_VALUE).unwrap();
    let secret_arg = format!("API_TOKEN={VALUE}");
    let file_arg = format!("FILE_TOKEN={}", secret_file.display());
    let created = sb.ws(&["create", "debian:12", "--seed-path", seed.to_str().unwrap(), "--secret", &secret_arg, "--secret-file", &file_arg]);
    let id = created["workspace_id"].as_str().unwrap().to_string();
    assert_eq!(created["secrets"], serde_json::json!([{"name": "API_TOKEN", "source_kind": "literal"}, {"name": "FILE_TOKEN", "source_kind": "file"}]));

    // Mapped: the command sees the value, its output shows only [REDACTED].
    let check = format!("test \"$API_TOKEN\" = '{VALUE}' && test \"$OTHER\" = '{FILE_VALUE}' && echo same");
    let exec = sb.ws(&["exec", &id, "--secret-env", "API_TOKEN", "--secret-env", "FILE_TOKEN=OTHER", "--", &check]);
    assert_eq!(exec["stdout"], "same\n", "the values reached the command: {exec}");
    let exec = sb.ws(&["exec", &id, "--secret-env", "API_TOKEN", "--", "echo \"token=$API_TOKEN\""]);
    assert_eq!(exec["stdout"], "token=[REDACTED]\n");
    // Printed in two halves, with a pause between the writes: still redacted.
    let halves = format!("printf '%s' '{}'; sleep 0.5; printf '%s\\n' '{}' >&1", &VALUE[..8], &VALUE[8..]);
    let exec = sb.ws(&["exec", &id, "--", &halves]);
    assert_eq!(exec["stdout"], "[REDACTED]\n", "{exec}");
    // Not mapped: not in the environment at all.
    let exec = sb.ws(&["exec", &id, "--", "env | grep -c TOKEN || true"]);
    assert_eq!(exec["stdout"], "0\n");
    // A command line typed with the value in it is not recorded with it.
    let typed = format!("echo {VALUE}; printf '%s' '{VALUE}' | wc -c");
    let exec = sb.ws(&["exec", &id, "--", &typed]);
    assert_eq!(exec["stdout"], format!("[REDACTED]\n{}\n", VALUE.len()), "{exec}");
    assert!(!exec["command"].as_str().unwrap().contains(VALUE), "the result's command line is redacted: {exec}");
    let human = sb.raw(&["workspace", "exec", &id, "--", &typed]);
    assert!(!contains(&human.stdout, VALUE) && !contains(&human.stderr, VALUE), "human output is redacted");

    // Unknown secret: one clear line, nothing run.
    let error = sb.ws_err(&["exec", &id, "--secret-env", "NOPE", "--", "true"]);
    assert_eq!(error, "secret_env references unknown workspace secret 'NOPE'");

    // Survives stop/start.
    sb.ws(&["stop", &id]);
    let disk = sb.host.path().join("disk.ext4");
    sb.ws(&["disk", "export", &id, "--output", disk.to_str().unwrap()]);
    let image = std::fs::read(&disk).unwrap();
    assert!(!contains(&image, VALUE) && !contains(&image, FILE_VALUE), "a secret value is in the guest's disk image");
    std::fs::remove_file(&disk).unwrap();
    sb.ws(&["start", &id]);
    let exec = sb.ws(&["exec", &id, "--secret-env", "API_TOKEN", "--", &format!("test \"$API_TOKEN\" = '{VALUE}' && echo again")]);
    assert_eq!(exec["stdout"], "again\n");

    // A service sees a mapped value too, and its logs show only [REDACTED]; a reset
    // keeps the secrets and clears the service history.
    let service = sb.ws(&["service", "start", &id, "app", "--secret-env", "API_TOKEN", "--", "echo \"svc=$API_TOKEN\"; sleep 600"]);
    assert_eq!(service["state"], "running", "{service}");
    let logs = wait_for(Duration::from_secs(30), || {
        let logs = sb.ws(&["service", "logs", &id, "app"]);
        logs["stdout"].as_str().is_some_and(|s| s.contains("svc=")).then_some(logs)
    })
    .expect("the service printed its line");
    assert_eq!(logs["stdout"], "svc=[REDACTED]\n", "{logs}");
    let reset = sb.ws(&["reset", &id]);
    assert_eq!(reset["workspace_reset"]["snapshot_name"], "baseline");
    assert_eq!(sb.ws(&["service", "list", &id])["count"], 0, "reset clears the service history");
    let exec = sb.ws(&["exec", &id, "--secret-env", "API_TOKEN", "--", &format!("test \"$API_TOKEN\" = '{VALUE}' && echo after-reset")]);
    assert_eq!(exec["stdout"], "after-reset\n");

    // Nowhere on the host but the 0600 secret files: not in records, history or logs.
    let logs = sb.raw(&["workspace", "logs", &id, "--json"]);
    assert!(!contains(&logs.stdout, VALUE), "history holds no value");
    let status = sb.raw(&["workspace", "status", &id, "--json"]);
    assert!(!contains(&status.stdout, VALUE));
    for file in files(sb.state.path()) {
        let bytes = std::fs::read(&file).unwrap_or_default();
        let is_secret_file = file.parent().is_some_and(|p| p.ends_with("secrets")) && file.extension().is_some_and(|e| e == "secret");
        if is_secret_file {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600, "{}", file.display());
            continue;
        }
        if file.extension().is_some_and(|e| e == "ext4" || e == "qcow2") {
            continue; // the live disk: checked above through the export of the stopped disk
        }
        assert!(!contains(&bytes, VALUE) && !contains(&bytes, FILE_VALUE), "a secret value is in {}", file.display());
    }
    let dir = sb.state.path().join("workspaces").join(&id);
    sb.ws(&["delete", &id]);
    assert!(!dir.exists(), "delete removes the secret files with the workspace");
}

#[test]
fn bad_secrets_are_refused_before_anything_is_created() {
    let sb = Sandbox::new(crate::PYRO);
    let not_utf8 = sb.host.path().join("binary");
    std::fs::write(&not_utf8, b"\xff\xfe").unwrap();
    let big = sb.host.path().join("big");
    std::fs::write(&big, "x".repeat(65537)).unwrap();
    let bin_arg = format!("B={}", not_utf8.display());
    let big_arg = format!("B={}", big.display());
    let cases: &[(&[&str], &str)] = &[
        (&["--secret", "NOEQUALS"], "workspace secrets must use NAME=VALUE"),
        (&["--secret", "A=1", "--secret", "A=2"], "duplicate secret name: A"),
        (&["--secret", "A="], "secret 'A' must not be empty"),
        (&["--secret-file", "A"], "workspace secret files must use NAME=PATH"),
        (&["--secret-file", "A=/nonexistent/file"], "secret file for 'A' does not exist: /nonexistent/file"),
        (&["--secret-file", &bin_arg], "secret 'B' must be valid UTF-8 text"),
        (&["--secret-file", &big_arg], "secret 'B' must be at most 65536 bytes"),
    ];
    for (flags, message) in cases {
        let mut args = vec!["create", "debian:12"];
        args.extend_from_slice(flags);
        assert_eq!(sb.ws_err(&args), *message, "{flags:?}");
    }
    for (flags, message) in [
        (&["--secret-env", "=X"][..], "workspace secret env mappings must name a secret"),
        (&["--secret-env", "A="], "workspace secret env mappings must name an environment variable"),
        (&["--secret-env", "A", "--secret-env", "A=B"], "workspace secret env mapping references 'A' more than once"),
    ] {
        let mut args = vec!["exec", "000000000000"];
        args.extend_from_slice(flags);
        args.extend(["--", "true"]);
        assert_eq!(sb.ws_err(&args), message, "{flags:?}");
    }
    let workspaces = sb.state.path().join("workspaces");
    assert!(!workspaces.exists() || std::fs::read_dir(&workspaces).unwrap().count() == 0, "no half-made workspace");
}
