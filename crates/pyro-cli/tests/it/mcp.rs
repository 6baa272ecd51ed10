//! `pyro mcp serve` driven by real MCP clients: the Python `mcp` package (PyPI) runs the
//! tests under `tests/mcp/` (tools/list snapshots per profile and protocol revision, bad
//! calls as `isError` results, stories 2–4 through `workspace-core` and 1 and 5 — a
//! service, a shell, snapshot and reset — through `workspace-full` in real guests), and
//! the MCP Inspector's CLI (npm) lists the tools. `scripts/mcp-test-env.sh` installs both
//! once under pyro's cache dir.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The installed clients: the test venv's python and the inspector's binary (if npm
/// could install it), installing them on first use.
fn clients() -> (String, Option<String>) {
    let out = Command::new("bash").arg(root().join("scripts/mcp-test-env.sh")).output().expect("bash runs");
    assert!(out.status.success(), "scripts/mcp-test-env.sh failed (it needs PyPI once):\n{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines = text.lines().map(str::trim);
    let python = lines.next().unwrap_or_default().to_string();
    let inspector = lines.next().filter(|l| !l.is_empty()).map(str::to_string);
    (python, inspector)
}

/// Runs pytest on `tests` with the binary under test; `guests` enables the guest tests.
fn pytest(tests: &[&str], guests: bool) {
    let dir = root().join("tests/mcp");
    let status = Command::new(clients().0)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .args(tests)
        .current_dir(&dir)
        .env("PYRO_BIN", crate::PYRO)
        .env("PYRO_VERSION", env!("CARGO_PKG_VERSION"))
        .env("PYRO_MCP_GUEST_TESTS", if guests { "1" } else { "0" })
        .status()
        .expect("pytest runs");
    assert!(status.success(), "pytest {tests:?} failed (output above)");
}

#[test]
fn tools_list_and_errors_through_the_python_client() {
    pytest(&["test_tools_list.py", "test_errors.py"], false);
}

#[test]
#[ignore = "boots real guests; run by scripts/test.sh"]
fn stories_two_to_four_through_workspace_core() {
    pytest(&["test_stories.py"], true);
}

#[test]
#[ignore = "boots real guests; run by scripts/test.sh"]
fn stories_one_and_five_through_workspace_full() {
    pytest(&["test_stories_full.py"], true);
}

#[test]
fn the_mcp_inspector_cli_lists_the_tools() {
    let Some(inspector) = clients().1 else {
        eprintln!("skipped: the MCP Inspector is not installed here (npm unavailable)");
        return;
    };
    let state = tempfile::tempdir().unwrap();
    let out = Command::new(&inspector)
        .args(["--cli", crate::PYRO, "mcp", "serve", "--profile", "workspace-core", "--method", "tools/list"])
        .env("PYRO_STATE_DIR", state.path())
        .output()
        .expect("the inspector runs");
    assert!(out.status.success(), "inspector failed: {}", String::from_utf8_lossy(&out.stderr));
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("the inspector prints JSON");
    let names: Vec<&str> = listed["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names.len(), 16);
    assert_eq!((names[0], names[15]), ("vm_run", "workspace_delete"));
}
