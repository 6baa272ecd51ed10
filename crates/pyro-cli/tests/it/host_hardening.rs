//! The host against its guests and against crashes, with real guests through the CLI:
//! a killed supervisor takes its VMM along and `start` recovers; racing starts boot one
//! VM; a stopped supervisor fails calls within a deadline; a console flood stays capped
//! on disk; Ctrl-C during `create` leaves nothing; state is private; the VMM is confined;
//! a 2 GiB guest file does not blow up `diff`.
//!
//! They boot real guests, so they are `#[ignore]`d in a plain `cargo test` and run by
//! `scripts/test.sh`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use pyro_test::{processes_with, vmm_pid, wait_for, Sandbox};
use serde_json::Value;

const ENV: &str = "debian:12-base";

fn create(sb: &Sandbox) -> String {
    let created = sb.ws(&["create", ENV]);
    assert_eq!(created["state"], "started", "{created}");
    created["workspace_id"].as_str().unwrap().to_string()
}

fn vm_dir(sb: &Sandbox, id: &str) -> PathBuf {
    sb.state.path().join("workspaces").join(id).join("vm")
}

fn supervisor_pid(sb: &Sandbox, id: &str) -> i32 {
    let record: Value = serde_json::from_slice(&std::fs::read(vm_dir(sb, id).join("vm.json")).unwrap()).unwrap();
    record["supervisor_pid"].as_i64().expect("a started workspace has a supervisor") as i32
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode() & 0o7777
}

fn signal(pid: i32, sig: i32) {
    // SAFETY: plain signal delivery to a pid this test read from pyro's own records.
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0, "signal {sig} to {pid}");
}

#[test]
#[ignore = "boots real guests; run by scripts/test.sh"]
fn killing_the_supervisor_takes_its_vmm_along_and_start_recovers() {
    let sb = Sandbox::new(crate::PYRO);
    let id = create(&sb);
    sb.ws(&["file", "write", &id, "kept.txt", "--text", "kept\n"]);
    assert!(vmm_pid(sb.state.path()).is_some(), "a VMM runs\n{}", sb.diagnostics());
    signal(supervisor_pid(&sb, &id), libc::SIGKILL);
    let gone = wait_for(Duration::from_secs(30), || {
        (processes_with(sb.state.path(), "qemu-system").is_empty() && processes_with(sb.state.path(), "__vmm-guard").is_empty()).then_some(())
    });
    assert!(gone.is_some(), "the VMM (or its guard) outlived its supervisor\n{}", sb.diagnostics());
    assert_eq!(sb.ws(&["status", &id])["state"], "stopped");
    let started = sb.ws(&["start", &id]);
    assert_eq!(started["state"], "started", "{started}");
    assert_eq!(sb.ws(&["file", "read", &id, "kept.txt"])["content"], "kept\n");
    assert_eq!(processes_with(sb.state.path(), "qemu-system").len(), 1, "exactly one VMM after the restart");
}

#[test]
#[ignore = "boots real guests; run by scripts/test.sh"]
fn two_racing_starts_boot_one_vm() {
    let sb = Sandbox::new(crate::PYRO);
    let id = create(&sb);
    assert_eq!(sb.ws(&["stop", &id])["state"], "stopped");
    let start = || sb.command(&["workspace", "start", &id, "--json"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let (a, b) = (start(), start());
    for child in [a, b] {
        let out = child.wait_with_output().unwrap();
        let value: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        assert_eq!(value["state"], "started", "{}\n{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr), sb.diagnostics());
    }
    assert_eq!(processes_with(sb.state.path(), "__supervise").len(), 1, "one supervisor");
    assert_eq!(processes_with(sb.state.path(), "qemu-system").len(), 1, "one VMM");
    assert_eq!(sb.ws(&["exec", &id, "--", "echo ok"])["stdout"], "ok\n");
}

#[test]
#[ignore = "boots a real guest; run by scripts/test.sh"]
fn a_stopped_supervisor_fails_calls_within_a_deadline() {
    let sb = Sandbox::new(crate::PYRO);
    let id = create(&sb);
    let supervisor = supervisor_pid(&sb, &id);
    signal(supervisor, libc::SIGSTOP);
    let mut child = sb.command(&["workspace", "exec", &id, "--json", "--", "true"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    // Generous: the deadline is seconds; this only catches "waits forever".
    let finished = wait_for(Duration::from_secs(120), || child.try_wait().unwrap());
    if finished.is_none() {
        let _ = child.kill();
    }
    signal(supervisor, libc::SIGCONT);
    let status = finished.expect("exec against a stopped supervisor returned");
    let out = child.wait_with_output().unwrap();
    assert_eq!(status.code(), Some(1));
    let value: Value = serde_json::from_slice(&out.stdout).expect("a JSON error");
    assert!(value["error"].as_str().unwrap().contains("did not answer"), "{value}");
    // Resumed, it serves again.
    assert_eq!(sb.ws(&["exec", &id, "--", "echo back"])["stdout"], "back\n");
}

#[test]
#[ignore = "boots a real guest; run by scripts/test.sh"]
fn a_guest_flooding_its_console_is_capped_on_disk() {
    let sb = Sandbox::new(crate::PYRO);
    let id = create(&sb);
    let flood = "head -c 67108864 /dev/zero | tr '\\0' x > /dev/hvc0; echo flooded";
    let exec = sb.ws(&["exec", &id, "--timeout-seconds", "900", "--", flood]);
    assert_eq!(exec["stdout"], "flooded\n", "{exec}");
    let dir = vm_dir(&sb, &id);
    let size = |name: &str| std::fs::metadata(dir.join(name)).map(|m| m.len()).unwrap_or(0);
    let on_disk = size("serial.log") + size("serial.log.old");
    assert!(on_disk <= 2 << 20, "the console log holds {on_disk} bytes");
    assert!(on_disk > 0, "the console log kept the latest output");
    // The guest still answers, and its log keeps growing only by rotation.
    assert_eq!(sb.ws(&["exec", &id, "--", "echo alive"])["stdout"], "alive\n");
}

#[test]
#[ignore = "boots a real guest; run by scripts/test.sh"]
fn ctrl_c_during_create_leaves_nothing_behind() {
    let sb = Sandbox::new(crate::PYRO);
    let mut child = sb.command(&["workspace", "create", ENV, "--json"]).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    // Interrupt once the guest is booting.
    let booting = wait_for(Duration::from_secs(120), || vmm_pid(sb.state.path()));
    assert!(booting.is_some(), "create never started a VMM");
    signal(child.id() as i32, libc::SIGINT);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "interrupted create exits 130");
    let gone = wait_for(Duration::from_secs(30), || processes_with(sb.state.path(), "qemu-system").is_empty().then_some(()));
    assert!(gone.is_some(), "a VMM survived the interrupted create");
    assert!(processes_with(sb.state.path(), "__supervise").is_empty(), "a supervisor survived");
    let left: Vec<_> = std::fs::read_dir(sb.state.path().join("workspaces")).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    assert_eq!(sb.ws(&["list"])["count"], 0);
}

#[test]
#[ignore = "boots a real guest; run by scripts/test.sh"]
fn state_is_private_and_the_vmm_confined() {
    let sb = Sandbox::new(crate::PYRO);
    let id = create(&sb);
    let ws = sb.state.path().join("workspaces").join(&id);
    assert_eq!(mode(sb.state.path()), 0o700, "state root");
    for dir in [sb.state.path().join("workspaces"), ws.clone(), ws.join("vm")] {
        assert_eq!(mode(&dir) & 0o077, 0, "{} is open to others", dir.display());
    }
    for file in ["rootfs.ext4", "baseline.tar", "workspace.json", "vm/vm.json", "vm/serial.log", "vm/control.sock", "vm/agent.sock"] {
        let path = ws.join(file);
        if path.exists() {
            assert_eq!(mode(&path) & 0o077, 0, "{} is open to others ({:o})", path.display(), mode(&path));
        }
    }
    let cache = std::env::var_os("PYRO_CACHE_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/pyro"));
    assert_eq!(mode(&cache) & 0o077, 0, "cache root {}", cache.display());

    let vmm = vmm_pid(sb.state.path()).expect("a VMM");
    let status = std::fs::read_to_string(format!("/proc/{vmm}/status")).unwrap();
    let field = |name: &str| status.lines().find(|l| l.starts_with(name)).unwrap_or("").split_whitespace().nth(1).unwrap_or("").to_string();
    assert_eq!(field("Seccomp:"), "2", "QEMU runs under its seccomp sandbox");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        assert_ne!(field("Uid:"), "0", "a VMM started by root dropped its privileges");
    }
    let environ = std::fs::read(format!("/proc/{vmm}/environ")).unwrap_or_default();
    let vars: Vec<&[u8]> = environ.split(|b| *b == 0).filter(|v| !v.is_empty()).collect();
    assert!(vars.iter().all(|v| v.starts_with(b"PATH=")), "the VMM got only PATH: {}", String::from_utf8_lossy(&environ));
    let fds: Vec<String> = std::fs::read_dir(format!("/proc/{vmm}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .map(|p| p.display().to_string())
        .collect();
    assert!(!fds.iter().any(|f| f.contains("supervisor.log")), "the VMM inherited the supervisor's log: {fds:?}");
}

#[test]
#[ignore = "boots a real guest; run by scripts/test.sh"]
fn a_2_gib_guest_file_neither_blows_host_memory_nor_panics_diff() {
    let sb = Sandbox::new(crate::PYRO);
    let id = create(&sb);
    sb.ws(&["file", "write", &id, "notes.txt", "--text", "small change\n"]);
    let made = sb.ws(&["exec", &id, "--", "truncate -s 2G big.bin && echo made"]);
    assert_eq!(made["stdout"], "made\n", "{made}");
    let out = sb.raw(&["workspace", "diff", &id, "--json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    let diff: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("no JSON: {}\n{stderr}\n{}", String::from_utf8_lossy(&out.stdout), sb.diagnostics()));
    let entries = diff["entries"].as_array().unwrap_or_else(|| panic!("{diff}"));
    let big = entries.iter().find(|e| e["path"] == "/workspace/big.bin").unwrap_or_else(|| panic!("{diff}"));
    assert_eq!(big["status"], "added");
    assert!(big["text_patch"].is_null(), "a 2 GiB file gets no patch");
    assert!(diff["patch"].as_str().unwrap().contains("+small change"), "the small text file is still patched");
    // The largest child reaped so far (the CLI above is one) stayed far below 2 GiB.
    // SAFETY: getrusage fills the zeroed struct we pass.
    let peak_kib = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage);
        usage.ru_maxrss
    };
    eprintln!("diff of a 2 GiB guest file: largest pyro process peaked at {peak_kib} KiB");
    assert!(peak_kib < 512 * 1024, "a pyro process peaked at {peak_kib} KiB");
}
