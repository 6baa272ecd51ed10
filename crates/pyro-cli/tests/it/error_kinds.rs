//! `error_kind` in `--json` failures: the stable class the MCP server and the Python SDK
//! map from, checked through the CLI for each way a user meets it. The kinds that need no
//! guest run in a plain `cargo test`; the state-dependent ones boot a real guest.

use pyro_test::Sandbox;
use serde_json::Value;

/// Runs `pyro ARGS` (with `--json` put first, as a global flag) expecting a failure;
/// returns `(error, error_kind)`.
fn failure(sb: &Sandbox, args: &[&str]) -> (String, String) {
    let mut full = vec!["--json"];
    full.extend_from_slice(args);
    let out = sb.raw(&full);
    assert_eq!(out.status.code(), Some(1), "pyro {full:?} should fail: {}", String::from_utf8_lossy(&out.stdout));
    assert!(out.stderr.is_empty(), "--json failures print nothing on stderr: {}", String::from_utf8_lossy(&out.stderr));
    let value: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("JSON error for {full:?}: {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(value["ok"], false);
    (value["error"].as_str().unwrap().to_string(), value["error_kind"].as_str().unwrap().to_string())
}

#[test]
fn kinds_that_need_no_guest() {
    let sb = Sandbox::new(crate::PYRO);
    let cases: &[(&[&str], &str, &str)] = &[
        (&["workspace", "status", "000000000000"], "not_found", "workspace '000000000000' does not exist"),
        (&["workspace", "delete", "../../etc"], "not_found", "does not exist"),
        (&["run", "debian:13", "--", "true"], "not_found", "unknown environment 'debian:13'"),
        (&["run", "debian:12", "--mem-mib", "64", "--", "true"], "invalid_argument", "mem_mib must be between 256 and 32768"),
        (&["workspace", "create", "debian:12", "--network-policy", "bogus"], "invalid_argument", "network_policy must be one of"),
        (
            &["workspace", "create", "debian:12", "--network-policy", "egress", "--allow-host", "not a host!"],
            "invalid_argument",
            "allow-host entry 'not a host!' is neither a host name nor a CIDR",
        ),
        (&["workspace", "create", "debian:12", "--allow-host", "example.com"], "invalid_argument", "--allow-host needs network_policy 'egress'"),
        (
            &["workspace", "create", "debian:12", "--network-policy", "egress", "--allow-host", "10.0.0.0/33"],
            "invalid_argument",
            "neither a host name nor a CIDR",
        ),
        (&["workspace", "create", "debian:12", "--secret", "1BAD=x"], "invalid_argument", "secret name must match"),
        (
            &["workspace", "service", "start", "000000000000", "web", "--ready-file", "a", "--ready-tcp", "h:1", "--", "true"],
            "invalid_argument",
            "choose at most one",
        ),
        (&["workspace", "service", "start", "000000000000", "web", "--publish", "80:8080", "--", "true"], "invalid_argument", "host_port must be between 1025"),
    ];
    for (args, kind, message) in cases {
        let (error, error_kind) = failure(&sb, args);
        assert_eq!(&error_kind, kind, "{args:?}: {error}");
        assert!(error.contains(message), "{args:?}: {error}");
    }
    // Nothing was half-created by any of them.
    let workspaces = sb.state.path().join("workspaces");
    assert!(!workspaces.exists() || std::fs::read_dir(&workspaces).unwrap().count() == 0, "no half-made workspace");
}

#[test]
fn json_is_global_and_still_accepted_after_the_subcommand() {
    let sb = Sandbox::new(crate::PYRO);
    for args in [&["--json", "workspace", "list"][..], &["workspace", "--json", "list"], &["workspace", "list", "--json"]] {
        let out = sb.raw(args);
        assert!(out.status.success(), "{args:?}");
        let value: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{args:?}: {}", String::from_utf8_lossy(&out.stdout)));
        assert_eq!(value["count"], 0, "{args:?}");
    }
}

#[test]
#[ignore = "boots a real guest; run by scripts/test.sh"]
fn kinds_that_depend_on_a_workspace_state() {
    let sb = Sandbox::new(crate::PYRO);
    let seed = sb.seed("kinds", &[("a.txt", "a\n", 0o644)]);
    let id = sb.create(&seed, "kinds", &[]);
    let (error, kind) = failure(&sb, &["workspace", "disk", "list", &id]);
    assert_eq!((kind.as_str(), error.contains("require state=stopped")), ("wrong_state", true), "{error}");
    sb.ws(&["snapshot", "create", &id, "one"]);
    let (error, kind) = failure(&sb, &["workspace", "snapshot", "create", &id, "one"]);
    assert_eq!(kind, "conflict", "{error}");
    let existing = sb.host.path().join("exists.txt");
    std::fs::write(&existing, "keep").unwrap();
    let (error, kind) = failure(&sb, &["workspace", "export", &id, "a.txt", "--output", existing.to_str().unwrap()]);
    assert_eq!(kind, "conflict", "{error}");
    assert_eq!(std::fs::read_to_string(&existing).unwrap(), "keep", "nothing lost");
    let (error, kind) = failure(&sb, &["workspace", "snapshot", "delete", &id, "nope"]);
    assert_eq!(kind, "not_found", "{error}");
    sb.ws(&["stop", &id]);
    let (error, kind) = failure(&sb, &["workspace", "exec", &id, "--", "true"]);
    assert_eq!(kind, "wrong_state", "{error}");
    assert!(error.contains("must be in 'started' state"), "{error}");
    sb.ws(&["delete", &id]);
}
