//! `pyro doctor` names missing host tools as issues, and says what isolates guests.

use std::os::unix::fs::PermissionsExt;

use pyro_test::Home;
use serde_json::Value;

/// A QEMU 7.1 (before `-netdev stream`) in `bin`.
fn old_qemu(bin: &std::path::Path) -> std::path::PathBuf {
    let qemu = bin.join("qemu-system-x86_64-7.1");
    std::fs::write(&qemu, "#!/bin/sh\necho 'QEMU emulator version 7.1.0'\n").unwrap();
    std::fs::set_permissions(&qemu, std::fs::Permissions::from_mode(0o755)).unwrap();
    qemu
}

#[test]
fn a_missing_qemu_img_is_an_issue() {
    let home = Home::new(crate::PYRO);
    // A QEMU that answers --version, with no qemu-img beside it or on PATH.
    let bin = home.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let qemu = bin.join("qemu-system-x86_64");
    std::fs::write(&qemu, "#!/bin/sh\necho 'QEMU emulator version 7.2.0'\n").unwrap();
    std::fs::set_permissions(&qemu, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("/bin/cp", bin.join("cp")).unwrap();
    let out = home.command(&["doctor", "--json"]).env("PATH", &bin).env("PYRO_QEMU", &qemu).output().unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&out.stdout)));
    let issues: Vec<&str> = report["issues"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(issues.iter().any(|i| i.starts_with("qemu-img is not installed")), "{issues:?}");
    assert_eq!(report["selected"]["backend"], "qemu-tcg");
    assert_eq!(report["selected"]["isolation"], "tcg");
    assert!(report["selected"]["isolation_detail"].as_str().unwrap().contains("not KVM"));
    // QEMU 7.2 has `-netdev stream`: networked guests work on it, not (yet) on Firecracker.
    let net = &report["networking"];
    assert_eq!((net["qemu"]["link"].as_str(), net["qemu"]["available"].as_bool()), (Some("netdev-stream"), Some(true)), "{net}");
    assert_eq!((net["firecracker"]["link"].as_str(), net["firecracker"]["available"].as_bool()), (Some("tap"), Some(false)), "{net}");
    assert_eq!(report["capabilities"]["guest_network"], true);
    let old = home.command(&["doctor", "--json"]).env("PATH", &bin).env("PYRO_QEMU", old_qemu(&bin)).output().unwrap();
    let old: Value = serde_json::from_slice(&old.stdout).unwrap();
    assert_eq!(old["networking"]["qemu"]["available"], false, "{old}");
    assert!(old["networking"]["qemu"]["missing"][0].as_str().unwrap().contains("QEMU 7.2 or newer"), "{old}");
    // The roots doctor reported on were created private.
    for root in [home.cache(), home.state()] {
        assert_eq!(std::fs::metadata(&root).unwrap().permissions().mode() & 0o777, 0o700, "{}", root.display());
    }
}
