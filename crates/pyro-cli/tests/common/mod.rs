//! The test sandbox shared by the guest-booting CLI tests: a private state dir, a host
//! scratch dir, `pyro workspace … --json` helpers with diagnostics (the guest's serial
//! log tail) in every failure, and cleanup of every workspace left behind.
#![allow(dead_code)] // each test binary uses its own subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub struct Sandbox {
    pub state: tempfile::TempDir,
    pub host: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Self {
        Self { state: tempfile::tempdir().unwrap(), host: tempfile::tempdir().unwrap() }
    }

    pub fn raw(&self, args: &[&str]) -> Output {
        self.raw_env(args, &[])
    }

    /// `pyro ARGS` on this sandbox's state dir, stdin closed, not started yet.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pyro"));
        cmd.args(args).env("PYRO_STATE_DIR", self.state.path()).stdin(Stdio::null());
        cmd
    }

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
        let value: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("pyro {full:?} printed no JSON: {text}\nstderr: {}\n{}", String::from_utf8_lossy(&out.stderr), self.diagnostics()));
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

    pub fn create(&self, seed: &Path, name: &str, labels: &[&str]) -> String {
        let mut args = vec!["create", "debian:12", "--seed-path", seed.to_str().unwrap(), "--name", name];
        for label in labels {
            args.extend(["--label", label]);
        }
        let created = self.ws(&args);
        assert_eq!(created["state"], "started");
        created["workspace_id"].as_str().unwrap().to_string()
    }

    pub fn export_text(&self, id: &str, path: &str) -> String {
        let out = self.host.path().join(format!("export-{}-{}", id, path.replace('/', "_")));
        self.ws(&["export", id, path, "--output", out.to_str().unwrap()]);
        std::fs::read_to_string(out).unwrap()
    }

    pub fn diagnostics(&self) -> String {
        let mut out = String::new();
        for ws in std::fs::read_dir(self.state.path().join("workspaces")).into_iter().flatten().flatten() {
            for file in ["serial.log", "vmm.log", "supervisor.log", "supervisor.json"] {
                let text = std::fs::read_to_string(ws.path().join("vm").join(file)).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(12).collect();
                out.push_str(&format!("--- {} {file}\n{}\n", ws.path().display(), tail.into_iter().rev().collect::<Vec<_>>().join("\n")));
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


/// The pid of a VMM (QEMU or Firecracker) whose command line names `state` (not the
/// guard pyro may run in front of it).
pub fn vmm_pid(state: &Path) -> Option<i32> {
    let mut vmms = processes_with(state, "qemu-system");
    vmms.extend(processes_with(state, "firecracker"));
    vmms.into_iter().next()
}

/// Every live process whose command line names `state` and contains `what`; the VMM
/// guard (`pyro __vmm-guard qemu-system…`) counts only when `what` names it.
pub fn processes_with(state: &Path, what: &str) -> Vec<i32> {
    let needle = state.to_string_lossy().into_owned();
    pids().into_iter().filter(|pid| {
        let text = cmdline(*pid);
        let guard = text.contains("__vmm-guard") && !what.contains("__vmm-guard");
        text.contains(what) && text.contains(&needle) && !guard && !is_zombie(*pid)
    }).collect()
}

fn pids() -> Vec<i32> {
    std::fs::read_dir("/proc").into_iter().flatten().flatten().filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok()).collect()
}

fn cmdline(pid: i32) -> String {
    String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default()).replace('\0', " ")
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map(|s| s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z')).unwrap_or(true)
}

/// Polls `probe` every 200 ms until it returns a value or `limit` passes.
pub fn wait_for<T>(limit: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(v) = probe() {
            return Some(v);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    None
}
