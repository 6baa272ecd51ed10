//! The Python SDK as a user gets it: the wheel `scripts/build-wheel.sh` wrote to `dist/`
//! is installed into a fresh venv (with pytest), and pytest runs `tests/sdk/` with that
//! venv's Python — `pyro --version` from the venv, the contract's methods, typed errors,
//! `create_server`, the child dying with its parent, and the five stories of the
//! reference in real guests. `scripts/test.sh` builds the wheel first.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The repository root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The one wheel in `dist/`.
fn wheel() -> PathBuf {
    let dist = root().join("dist");
    let wheels: Vec<PathBuf> = std::fs::read_dir(&dist)
        .map(|entries| entries.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "whl")).collect())
        .unwrap_or_default();
    assert_eq!(wheels.len(), 1, "expected exactly one wheel in {} (run scripts/build-wheel.sh): {wheels:?}", dist.display());
    wheels.into_iter().next().unwrap_or_default()
}

/// A fresh venv with the wheel and pytest installed, made once per test run.
fn venv_python() -> &'static Path {
    static VENV: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &VENV
        .get_or_init(|| {
            let dir = tempfile::tempdir().expect("temp dir");
            let venv = dir.path().join("venv");
            let made = Command::new("python3").arg("-m").arg("venv").arg(&venv).status().expect("python3 runs");
            assert!(made.success(), "python3 -m venv failed");
            let pip = Command::new(venv.join("bin/pip"))
                .args(["install", "--quiet", "--disable-pip-version-check"])
                .arg(wheel())
                .arg("pytest")
                .output()
                .expect("pip runs");
            assert!(pip.status.success(), "pip install of the wheel failed:\n{}", String::from_utf8_lossy(&pip.stderr));
            (dir, venv.join("bin/python"))
        })
        .1
}

/// Runs pytest on `tests` in the venv; `guests` enables the guest tests.
fn pytest(tests: &[&str], guests: bool) {
    let status = Command::new(venv_python())
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .args(tests)
        .current_dir(root().join("tests/sdk"))
        .env("PYRO_SDK_GUEST_TESTS", if guests { "1" } else { "0" })
        .status()
        .expect("pytest runs");
    assert!(status.success(), "pytest {tests:?} failed (output above)");
}

#[test]
#[ignore = "needs the wheel from scripts/build-wheel.sh; run by scripts/test.sh"]
fn the_wheel_installs_pyro_and_the_sdk_into_a_fresh_venv() {
    let version = Command::new(venv_python().with_file_name("pyro")).arg("--version").output().expect("the venv's pyro runs");
    assert_eq!(String::from_utf8_lossy(&version.stdout).trim(), format!("pyro {}", env!("CARGO_PKG_VERSION")));
    pytest(&["test_sdk.py"], false);
}

#[test]
#[ignore = "needs the wheel from scripts/build-wheel.sh and boots real guests; run by scripts/test.sh"]
fn the_five_stories_through_the_sdk() {
    pytest(&["test_stories.py"], true);
}
