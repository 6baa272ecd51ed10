//! Firecracker backend against the real binary.
//!
//! The development and CI hosts expose a nested `/dev/kvm` on which a guest kernel does
//! not get far, so this proves what can be proven there: Firecracker accepts the launch
//! config we generate, starts the VM (API reports `Running`), opens the vsock socket and
//! logs, and stops cleanly. On a host where the guest does boot, the empty test rootfs
//! has no init, so the guest panics and Firecracker exits; that is accepted too.
//!
//! Needs the `firecracker` binary (found via `locate()`, else fetched once with
//! `scripts/fetch-firecracker.sh`), `/dev/kvm`, a guest kernel (`PYRO_TEST_KERNEL`, a
//! pyro kernel build in the cache, or `~/.cache/pyro-dev/vmlinux`) and `mkfs.ext4`.
//! Missing prerequisites skip the test with a reason, unless `PYRO_REQUIRE_FIRECRACKER=1`.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use pyro_core::vmm::firecracker::{self, Firecracker};
use pyro_core::vmm::LaunchSpec;
use pyro_core::Error;
use pyro_test::{make_ext4, mkfs_ext4, process_gone, Required};

/// Skips (returns `None`) with a printed reason, or panics when Firecracker is required.
fn skip<T>(reason: &str) -> Option<T> {
    Required::FIRECRACKER.skip(reason)
}

/// The Firecracker binary, fetching it once if absent.
fn binary() -> Option<PathBuf> {
    static FETCHED: OnceLock<Option<PathBuf>> = OnceLock::new();
    FETCHED
        .get_or_init(|| {
            if let Some(path) = firecracker::locate() {
                return Some(path);
            }
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/fetch-firecracker.sh");
            eprintln!("firecracker not found; running {}", script.display());
            match std::process::Command::new("bash").arg(&script).status() {
                Ok(status) if status.success() => firecracker::locate(),
                Ok(status) => {
                    eprintln!("fetch-firecracker.sh failed ({status})");
                    None
                }
                Err(e) => {
                    eprintln!("cannot run fetch-firecracker.sh: {e}");
                    None
                }
            }
        })
        .clone()
}

/// A guest kernel Firecracker can load.
fn kernel() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("PYRO_TEST_KERNEL").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    let mut candidates = Vec::new();
    if let Ok(dirs) = pyro_core::paths::Dirs::from_env() {
        if let Ok(entries) = std::fs::read_dir(dirs.build()) {
            let mut builds: Vec<PathBuf> =
                entries.flatten().filter(|e| e.file_name().to_string_lossy().starts_with("kernel-")).map(|e| e.path().join("vmlinux")).collect();
            builds.sort();
            candidates.extend(builds.into_iter().rev());
        }
    }
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(Path::new(&home).join(".cache/pyro-dev/vmlinux"));
    }
    candidates.push("/root/.cache/pyro-dev/vmlinux".into());
    candidates.into_iter().find(|p| p.is_file())
}

fn kvm_usable() -> bool {
    std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_ok()
}

fn spec(vm_dir: &Path, kernel: &Path, disk: &Path, debug_console: bool) -> LaunchSpec {
    LaunchSpec {
        vm_dir: vm_dir.to_path_buf(),
        kernel: kernel.to_path_buf(),
        disk: disk.to_path_buf(),
        vcpu_count: 1,
        mem_mib: 128,
        debug_console,
        restore: None,
        network: false,
    }
}

/// Whether the guest kernel printed its banner (only possible where KVM really works).
fn guest_booted(spec: &LaunchSpec) -> bool {
    std::fs::read_to_string(spec.serial_log()).is_ok_and(|s| s.contains("Linux version"))
}

#[test]
fn config_has_the_firecracker_1_12_shape() {
    let s = spec(Path::new("/vm"), Path::new("/k/vmlinux"), Path::new("/vm/rootfs.ext4"), false);
    let config = Firecracker::new("/usr/bin/firecracker").config(&s);
    let top: Vec<&str> = config.as_object().unwrap().keys().map(String::as_str).collect();
    let mut sorted = top.clone();
    sorted.sort();
    assert_eq!(sorted, ["boot-source", "drives", "logger", "machine-config", "vsock"]);

    let boot = &config["boot-source"];
    assert_eq!(boot.as_object().unwrap().len(), 2);
    assert_eq!(boot["kernel_image_path"], "/k/vmlinux");
    let args = boot["boot_args"].as_str().unwrap();
    assert!(args.starts_with("console=ttyS0 "), "{args}");
    assert!(args.contains("root=/dev/vda"), "{args}");
    assert!(args.contains("init=/opt/pyro/bin/pyro-agent"), "{args}");
    assert!(args.contains("i8042.noaux"), "{args}");
    assert!(args.ends_with(" 8250.nr_uarts=0"), "{args}");

    let drives = config["drives"].as_array().unwrap();
    assert_eq!(drives.len(), 1);
    assert_eq!(drives[0], serde_json::json!({"drive_id": "rootfs", "path_on_host": "/vm/rootfs.ext4", "is_root_device": true, "is_read_only": false}));
    assert_eq!(config["machine-config"], serde_json::json!({"vcpu_count": 1, "mem_size_mib": 128, "smt": false}));
    assert_eq!(config["vsock"], serde_json::json!({"guest_cid": 3, "uds_path": "/vm/agent.sock"}));
    assert_eq!(config["logger"], serde_json::json!({"log_path": "/vm/firecracker.log", "level": "Info"}));
    assert!(config.get("network-interfaces").is_none());

    let debug = spec(Path::new("/vm"), Path::new("/k/vmlinux"), Path::new("/vm/rootfs.ext4"), true);
    let args = Firecracker::new("firecracker").config(&debug)["boot-source"]["boot_args"].as_str().unwrap().to_string();
    assert!(args.contains("loglevel=7"), "{args}");
    assert!(!args.contains("nr_uarts"), "{args}");
}

#[test]
fn write_config_creates_the_config_and_log_file() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec(dir.path(), Path::new("/k/vmlinux"), &dir.path().join("rootfs.ext4"), false);
    let fc = Firecracker::new("firecracker");
    let path = fc.write_config(&s).unwrap();
    assert_eq!(path, dir.path().join("firecracker-config.json"));
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("\n  \"boot-source\": {"), "pretty JSON expected:\n{text}");
    let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(parsed, fc.config(&s));
    assert!(dir.path().join("firecracker.log").is_file());
}

#[tokio::test]
async fn rejected_config_fails_launch_with_the_reason() {
    let Some(bin) = binary().or_else(|| skip("no firecracker binary (run scripts/fetch-firecracker.sh)")) else { return };
    let dir = tempfile::tempdir().unwrap();
    let s = spec(dir.path(), &dir.path().join("no-such-vmlinux"), &dir.path().join("no-such-disk"), false);
    let started = std::time::Instant::now();
    let err = Firecracker::new(bin).launch(&s).await.expect_err("a config naming missing files must be rejected");
    let msg = err.to_string();
    eprintln!("rejected launch: {msg}");
    assert!(matches!(err, Error::Vmm(_)), "{err:?}");
    assert!(msg.starts_with("firecracker exited during startup"), "{msg}");
    assert!(!msg.contains('\n'), "one-line message expected: {msg}");
    assert!(started.elapsed() < Duration::from_secs(5), "should fail early, took {:?}", started.elapsed());
}

#[tokio::test]
async fn firecracker_accepts_our_launch_config() {
    let Some(bin) = binary().or_else(|| skip("no firecracker binary (run scripts/fetch-firecracker.sh)")) else { return };
    let Some(kernel) = kernel().or_else(|| skip("no guest kernel (set PYRO_TEST_KERNEL)")) else { return };
    if !kvm_usable() {
        skip::<()>("/dev/kvm is not usable");
        return;
    }
    let fc = Firecracker::new(&bin);
    let version = fc.version().unwrap();
    eprintln!("binary {} reports {version}; kernel {}", bin.display(), kernel.display());
    assert!(version.starts_with("Firecracker v1."), "{version}");

    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.ext4");
    if mkfs_ext4().is_none() {
        skip::<()>("mkfs.ext4 is not available");
        return;
    }
    make_ext4(&base, "16M", None);
    let vm_dir = dir.path().join("vm");
    std::fs::create_dir(&vm_dir).unwrap();
    let disk = firecracker::prepare_disk(&base, &vm_dir).unwrap();
    assert_eq!(std::fs::read(&base).unwrap(), std::fs::read(&disk).unwrap());
    let s = spec(&vm_dir, &kernel, &disk, true);

    let mut child = match fc.launch(&s).await {
        Ok(child) => child,
        Err(e) if guest_booted(&s) => {
            eprintln!("guest booted and stopped before the API check (init-less rootfs): {e}");
            return;
        }
        Err(e) => panic!("launch failed: {e}"),
    };
    let pid = child.id().expect("running child has a pid");
    assert!(vm_dir.join("firecracker-config.json").is_file());

    let api = firecracker::api_socket(&s);
    match firecracker::instance_info(&api).await {
        Ok(info) => {
            eprintln!("GET / -> {info}");
            assert_eq!(info["state"], "Running", "{info}");
            assert_eq!(format!("Firecracker v{}", info["vmm_version"].as_str().unwrap()), version);
            assert!(info["id"].is_string(), "{info}");
            assert!(child.try_wait().unwrap().is_none(), "firecracker exited");
            assert!(s.channel_socket().exists(), "vsock UDS missing");

            // The HTTP client reports Firecracker's refusals with their fault message.
            let err = firecracker::api_request(&api, "PUT", "/actions", Some(&serde_json::json!({"action_type": "InstanceStart"})))
                .await
                .expect_err("a second InstanceStart must be refused");
            eprintln!("PUT /actions InstanceStart -> {err}");
            assert!(err.to_string().contains("HTTP 400"), "{err}");

            // No agent in this rootfs (and no booting guest here): the handshake times out.
            let err = firecracker::connect_agent(&s, Duration::from_millis(500)).await.expect_err("no agent to answer");
            eprintln!("connect_agent -> {err}");
            assert!(err.to_string().contains("vsock port 5005"), "{err}");
        }
        Err(e) if guest_booted(&s) => eprintln!("guest booted and stopped (init-less rootfs): {e}"),
        Err(e) => panic!("API did not answer: {e}"),
    }

    let log = std::fs::read_to_string(firecracker::log_file(&s)).unwrap();
    assert!(log.lines().count() > 0, "firecracker.log is empty");
    assert!(log.contains("Successfully started microvm that was configured from one single json"), "config-file boot not logged:\n{log}");

    let started = std::time::Instant::now();
    firecracker::stop(&mut child, &s).await.unwrap();
    eprintln!("stopped in {:?}", started.elapsed());
    assert!(child.try_wait().unwrap().is_some(), "firecracker still running after stop");
    assert!(process_gone(pid as i32), "pid {pid} still exists");
    assert!(!api.exists() && !s.channel_socket().exists(), "sockets not removed");
}
