//! End-to-end tests of `pyro run`, `doctor` and the VM lifecycle in real guests.
//!
//! They boot real microVMs (QEMU/TCG on machines whose KVM cannot boot guests), so they
//! are `#[ignore]`d in a plain `cargo test` and run by `scripts/test.sh`, after
//! `scripts/setup.sh --no-run` installed `debian:12` and `debian:12-base`.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use pyro_test::{make_ext4, processes_with, wait_for, Sandbox};
use serde_json::Value;

use crate::fixtures;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
#[ignore = "boots a real guest; run by scripts/test.sh"]
fn git_version_runs_inside_our_guest_kernel() {
    let sb = Sandbox::new(crate::PYRO);
    let out = sb.raw(&["run", "debian:12", "--", "git --version && uname -r && cat /proc/1/comm"]);
    sb.expect_success(&out);
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("git version 2."), "{stdout}");
    let host = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_ne!(lines[1], host.trim(), "uname -r must be the guest kernel, not the host's");
    assert!(lines[1].starts_with("6.1."), "guest kernel is our Debian 6.1 build: {stdout}");
    assert_eq!(lines[2], "pyro-agent", "our agent is PID 1");
    let stderr = text(&out.stderr);
    assert!(stderr.contains("[run] phase=create environment=debian:12"), "{stderr}");
    assert!(stderr.contains("execution_mode=guest_vsock exit_code=0"), "{stderr}");
    assert_eq!(std::fs::read_dir(sb.vms_dir()).map(|d| d.count()).unwrap_or(0), 0, "the VM is cleaned up");
}

#[test]
#[ignore = "boots a real guest; run by scripts/test.sh"]
fn exit_codes_timeouts_and_json() {
    let sb = Sandbox::new(crate::PYRO);
    let out = sb.raw(&["run", "debian:12-base", "--json", "--", "echo out; echo err >&2; exit 7"]);
    assert_eq!(out.status.code(), Some(7), "{}\n{}", text(&out.stderr), sb.diagnostics());
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON result");
    assert_eq!(v["exit_code"], 7);
    assert_eq!(v["stdout"], "out\n");
    assert_eq!(v["stderr"], "err\n");
    assert_eq!(v["execution_mode"], "guest_vsock");
    assert_eq!(v["cleanup"]["deleted"], true);

    let out = sb.raw(&["run", "debian:12-base", "--timeout-seconds", "2", "--", "sleep 60"]);
    assert_eq!(out.status.code(), Some(124), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("command timed out after 2s"), "{}", text(&out.stderr));
}

#[test]
#[ignore = "boots a real guest; run by scripts/test.sh"]
fn large_and_binary_output_survive() {
    let sb = Sandbox::new(crate::PYRO);
    let out = sb.raw(&["run", "debian:12-base", "--", "head -c 10485760 /dev/urandom | tee /tmp/x | sha256sum >&2; cat /tmp/x"]);
    sb.expect_success(&out);
    assert_eq!(out.stdout.len(), 10 * 1024 * 1024);
    use sha2::Digest;
    let digest = hex::encode(sha2::Sha256::digest(&out.stdout));
    assert!(text(&out.stderr).contains(&digest), "stdout arrived intact");

    let out = sb.raw(&["run", "debian:12-base", "--json", "--", "printf '\\377\\376ok'"]);
    sb.expect_success(&out);
    let v: Value = serde_json::from_slice(&out.stdout).expect("non-UTF-8 output still gives valid JSON");
    assert_eq!(v["stdout"], "\u{fffd}\u{fffd}ok");
}

#[test]
#[ignore = "boots real guests; run by scripts/test.sh"]
fn ten_runs_at_once_all_succeed() {
    let sb = Sandbox::new(crate::PYRO);
    let children: Vec<_> = (0..10)
        .map(|i| {
            sb.command(&["run", "debian:12-base", "--mem-mib", "256", "--", &format!("echo run-{i}")])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (i, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        sb.expect_success(&out);
        assert_eq!(text(&out.stdout), format!("run-{i}\n"));
    }
}

#[test]
#[ignore = "boots a real guest; run by scripts/test.sh"]
fn killing_the_cli_leaves_nothing_behind() {
    let sb = Sandbox::new(crate::PYRO);
    let mut child = sb.command(&["run", "debian:12-base", "--", "sleep 120"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let vm_dir = wait_for(Duration::from_secs(300), || {
        std::fs::read_dir(sb.vms_dir()).ok()?.flatten().map(|e| e.path()).find(|p| p.join("supervisor.json").exists() && ready(p))
    })
    .unwrap_or_else(|| panic!("VM never became ready\n{}", sb.diagnostics()));
    child.kill().unwrap();
    child.wait().unwrap();
    let gone = wait_for(Duration::from_secs(60), || (!vm_dir.exists()).then_some(()));
    assert!(gone.is_some(), "supervisor removed the VM after its owner died\n{}", sb.diagnostics());
    let stray = [processes_with(&vm_dir, ""), processes_with(&vm_dir, "__vmm-guard")].concat();
    assert!(stray.is_empty(), "no stray VMM, guard or supervisor: {stray:?}");
}

#[test]
fn bad_input_gets_one_clear_line() {
    let sb = Sandbox::new(crate::PYRO);
    let cases: &[(&[&str], &str)] = &[
        (&["run", "debian:13", "--", "true"], "unknown environment 'debian:13'; expected one of: debian:12, debian:12-base, debian:12-build"),
        (&["run", "debian:12"], "command is required after `--`"),
        (&["run", "debian:12", "--vcpu-count", "9", "--", "true"], "vcpu_count must be between 1 and 8"),
        (&["run", "debian:12", "--mem-mib", "64", "--", "true"], "mem_mib must be between 256 and 32768"),
        (&["run", "debian:12", "--timeout-seconds", "0", "--", "true"], "timeout_seconds must be positive"),
        (&["run", "debian:12", "--backend", "vmware", "--", "true"], "unknown backend 'vmware'"),
    ];
    for (args, message) in cases {
        let out = sb.raw(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let stderr = text(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "one line for {args:?}: {stderr}");
        assert!(stderr.starts_with("[error] ") && stderr.contains(message), "{args:?}: {stderr}");
        let mut json_args = args.to_vec();
        json_args.insert(2, "--json");
        let out = sb.raw(&json_args);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("JSON error for {json_args:?}: {}", text(&out.stdout)));
        assert_eq!(v["ok"], false);
        assert!(v["error"].as_str().unwrap().contains(message));
    }
    assert!(!sb.vms_dir().exists() || std::fs::read_dir(sb.vms_dir()).unwrap().count() == 0, "no half-created VM");
}

#[test]
#[ignore = "boots a real guest for the KVM check; run by scripts/test.sh"]
fn doctor_explains_the_backend_choice() {
    let sb = Sandbox::new(crate::PYRO);
    let out = sb.raw(&["doctor", "--json"]);
    sb.expect_success(&out);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let backend = v["selected"]["backend"].as_str().expect("a backend is selected");
    assert!(["qemu-tcg", "qemu-kvm", "firecracker"].contains(&backend), "{v}");
    if v["kvm"]["boots_guest"] == false {
        assert_eq!(backend, "qemu-tcg", "KVM that does not boot must not be chosen");
        assert!(v["selected"]["reason"].as_str().unwrap().contains("KVM"), "{v}");
    }
    assert_eq!(v["capabilities"]["guest_exec"], true);
    let human = text(&sb.raw(&["doctor"]).stdout);
    assert!(human.contains(&format!("Backend: {backend}")), "{human}");
}

fn ready(vm_dir: &Path) -> bool {
    std::fs::read_to_string(vm_dir.join("supervisor.json")).map(|s| s.contains("\"ready\"")).unwrap_or(false)
}

#[test]
#[ignore = "boots a real guest kernel; run by scripts/test.sh"]
fn a_kernel_panic_is_reported_with_the_serial_log_not_as_a_timeout() {
    // An install of debian:12-base whose rootfs has no init: our real kernel boots and panics.
    let real = pyro_core::Pyro::from_env().unwrap().inspect_environment("debian:12-base", false).unwrap();
    let kernel = real.kernel.expect("debian:12-base is installed (scripts/setup.sh)").path;
    let cache = tempfile::tempdir().unwrap();
    let dir = fixtures::install_dir(&cache.path().join("environments/linux-x86_64"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(&kernel, dir.join("vmlinux")).unwrap();
    make_ext4(&dir.join("rootfs.ext4"), "16M", None);
    fixtures::store_manifest(&dir, "oci://test/no-init", 0.0, String::new());

    let sb = Sandbox::new(crate::PYRO);
    let out =
        sb.command(&["run", "debian:12-base", "--", "true"]).env("PYRO_CACHE_DIR", cache.path()).env("PYRO_BOOT_TIMEOUT_SECONDS", "600").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("guest boot failed") && stderr.contains("Kernel panic"), "{stderr}");
    assert!(!stderr.contains("did not answer within"), "reported as a panic, not a timeout: {stderr}");
    assert_eq!(std::fs::read_dir(sb.vms_dir()).map(|d| d.count()).unwrap_or(0), 0, "the failed VM was cleaned up");
}
