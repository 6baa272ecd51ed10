//! [`Home`]: a private cache and state dir for CLI tests that need no images.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

/// A cache and state directory pair for one `pyro` "user": `DIR/cache` and `DIR/state`,
/// neither created until something writes there. Commands run with the registry and
/// log settings of the caller's environment removed.
pub struct Home {
    /// The directory holding `cache/` and `state/` (free for other scratch files).
    pub dir: tempfile::TempDir,
    bin: PathBuf,
}

impl Home {
    /// A fresh home running the `pyro` binary at `bin` (in pyro-cli's tests,
    /// `env!("CARGO_BIN_EXE_pyro")`).
    pub fn new(bin: impl Into<PathBuf>) -> Self {
        Self { dir: tempfile::tempdir().unwrap(), bin: bin.into() }
    }

    /// The top directory, [`Home::dir`]'s path.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `PYRO_CACHE_DIR` of every command.
    pub fn cache(&self) -> PathBuf {
        self.path().join("cache")
    }

    /// `PYRO_STATE_DIR` of every command.
    pub fn state(&self) -> PathBuf {
        self.path().join("state")
    }

    /// Where installed environments live in the cache (`environments/linux-x86_64`).
    pub fn environments(&self) -> PathBuf {
        self.cache().join("environments").join("linux-x86_64")
    }

    /// `pyro ARGS` on this home, stdin closed, not started yet.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.args(args)
            .env("PYRO_CACHE_DIR", self.cache())
            .env("PYRO_STATE_DIR", self.state())
            .env_remove("PYRO_ENV_REGISTRY")
            .env_remove("PYRO_ENV_REGISTRY_USERNAME")
            .env_remove("PYRO_ENV_REGISTRY_PASSWORD")
            .env_remove("PYRO_LOG")
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `pyro ARGS` to completion and returns what it printed.
    pub fn raw(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("pyro runs")
    }

    /// Runs a `--json` command expected to succeed and returns its JSON.
    pub fn ok_json(&self, args: &[&str]) -> Value {
        let out = self.raw(args);
        assert!(out.status.success(), "pyro {args:?} failed: {}", describe(&out));
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("pyro {args:?} printed no JSON ({e}): {}", describe(&out)))
    }

    /// Runs a `--json` command expected to fail and returns its one-line error.
    pub fn err_json(&self, args: &[&str]) -> String {
        let out = self.raw(args);
        assert!(!out.status.success(), "pyro {args:?} unexpectedly succeeded: {}", describe(&out));
        let value: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("no JSON error ({e}): {}", describe(&out)));
        assert_eq!(value["ok"], Value::Bool(false), "{value}");
        let message = value["error"].as_str().expect("error message").to_string();
        assert!(!message.contains('\n'), "error is not one line: {message:?}");
        message
    }
}

/// A finished command's status, stdout and stderr, for a failure message.
pub fn describe(out: &Output) -> String {
    format!("status {:?}\nstdout: {}\nstderr: {}", out.status, String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}
