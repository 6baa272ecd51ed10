//! [`Sandbox`]: the state of one guest-booting CLI test.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use crate::home::describe;
use crate::host::tail;

/// A private state dir and a host scratch dir for one test that drives real guests
/// through the `pyro` binary; the image cache is the user's (built by scripts/setup.sh).
/// Dropping it deletes every workspace still listed, so no guest outlives its test.
pub struct Sandbox {
    /// `PYRO_STATE_DIR` of every command this sandbox runs.
    pub state: tempfile::TempDir,
    /// Scratch space on the host: seed trees ([`Sandbox::seed`]), exports.
    pub host: tempfile::TempDir,
    bin: PathBuf,
    /// Network namespace every command runs in (`ip netns exec`), if any.
    netns: Option<String>,
}

impl Sandbox {
    /// A fresh sandbox running the `pyro` binary at `bin` (in pyro-cli's tests,
    /// `env!("CARGO_BIN_EXE_pyro")`).
    pub fn new(bin: impl Into<PathBuf>) -> Self {
        Self { state: tempfile::tempdir().unwrap(), host: tempfile::tempdir().unwrap(), bin: bin.into(), netns: None }
    }

    /// A fresh sandbox whose commands run in the network namespace `netns` (so its
    /// guests' traffic leaves from there).
    pub fn in_netns(bin: impl Into<PathBuf>, netns: &str) -> Self {
        let mut sandbox = Self::new(bin);
        sandbox.netns = Some(netns.to_string());
        sandbox
    }

    /// `pyro ARGS` on this sandbox's state dir, stdin closed, not started yet.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = match &self.netns {
            Some(netns) => {
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", netns]).arg(&self.bin);
                cmd
            }
            None => Command::new(&self.bin),
        };
        cmd.args(args).env("PYRO_STATE_DIR", self.state.path()).stdin(Stdio::null());
        cmd
    }

    /// Runs `pyro ARGS` to completion and returns what it printed.
    pub fn raw(&self, args: &[&str]) -> Output {
        self.raw_env(args, &[])
    }

    /// Runs `pyro ARGS` with extra environment variables `env`.
    pub fn raw_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = self.command(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().expect("pyro runs")
    }

    /// Runs `pyro workspace ARGS --json` and returns the JSON, failing with diagnostics.
    pub fn ws(&self, args: &[&str]) -> Value {
        let full = with_json(args);
        let out = self.raw(&full);
        let text = String::from_utf8_lossy(&out.stdout);
        let value: Value = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("pyro {full:?} printed no JSON: {text}\nstderr: {}\n{}", String::from_utf8_lossy(&out.stderr), self.diagnostics()));
        assert!(value.get("ok") != Some(&Value::Bool(false)), "pyro {full:?} failed: {value}\n{}", self.diagnostics());
        value
    }

    /// Runs `pyro workspace ARGS --json` expecting a failure; returns the error message.
    pub fn ws_err(&self, args: &[&str]) -> String {
        let full = with_json(args);
        let out = self.raw(&full);
        assert_eq!(out.status.code(), Some(1), "pyro {full:?} should fail: {}", String::from_utf8_lossy(&out.stdout));
        let value: Value = serde_json::from_slice(&out.stdout).expect("JSON error");
        assert_eq!(value["ok"], false);
        value["error"].as_str().unwrap().to_string()
    }

    /// Writes `files` (path, content, mode) under `host/NAME` and returns that directory,
    /// to pass as `--seed-path`.
    pub fn seed(&self, name: &str, files: &[(&str, &str, u32)]) -> PathBuf {
        let dir = self.host.path().join(name);
        for (path, content, mode) in files {
            let p = dir.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, content).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode)).unwrap();
        }
        dir
    }

    /// Creates a started `debian:12` workspace named `name` from `seed` with `labels`
    /// (`KEY=VALUE`); returns its id.
    pub fn create(&self, seed: &Path, name: &str, labels: &[&str]) -> String {
        let mut args = vec!["create", "debian:12", "--seed-path", seed.to_str().unwrap(), "--name", name];
        for label in labels {
            args.extend(["--label", label]);
        }
        let created = self.ws(&args);
        assert_eq!(created["state"], "started");
        created["workspace_id"].as_str().unwrap().to_string()
    }

    /// Exports `path` of workspace `id` to the host and returns its text.
    pub fn export_text(&self, id: &str, path: &str) -> String {
        let out = self.host.path().join(format!("export-{}-{}", id, path.replace('/', "_")));
        self.ws(&["export", id, path, "--output", out.to_str().unwrap()]);
        std::fs::read_to_string(out).unwrap()
    }

    /// Where `pyro run` keeps its one-shot VMs (`STATE/vms`).
    pub fn vms_dir(&self) -> PathBuf {
        self.state.path().join("vms")
    }

    /// Fails with `out` and the diagnostics unless the command succeeded.
    pub fn expect_success(&self, out: &Output) {
        assert!(out.status.success(), "pyro failed: {}\n{}", describe(out), self.diagnostics());
    }

    /// The tails of the serial, VMM and supervisor logs of every VM still present (one-shot
    /// VMs and workspaces), to explain boot trouble in a failure message.
    pub fn diagnostics(&self) -> String {
        let runs = std::fs::read_dir(self.vms_dir()).into_iter().flatten().flatten().map(|e| e.path());
        let workspaces = std::fs::read_dir(self.state.path().join("workspaces")).into_iter().flatten().flatten().map(|e| e.path().join("vm"));
        let mut out = String::new();
        for vm in runs.chain(workspaces) {
            for file in ["serial.log", "vmm.log", "supervisor.log", "supervisor.json"] {
                out.push_str(&format!("--- {} {file}\n{}\n", vm.display(), tail(&vm.join(file), 15)));
            }
        }
        out
    }
}

/// `workspace ARGS --json`, with `--json` before a trailing `-- CMD`.
pub fn with_json<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let split = args.iter().position(|a| *a == "--").unwrap_or(args.len());
    let mut full = vec!["workspace"];
    full.extend_from_slice(&args[..split]);
    full.push("--json");
    full.extend_from_slice(&args[split..]);
    full
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // Never leave guests running behind a test.
        if let Ok(list) = serde_json::from_slice::<Value>(&self.raw(&["workspace", "list", "--json"]).stdout) {
            for w in list["workspaces"].as_array().into_iter().flatten() {
                self.raw(&["workspace", "delete", w["workspace_id"].as_str().unwrap_or_default()]);
            }
        }
    }
}
