//! The environment cache's fault handling through the CLI, without building images:
//! interrupted installs are never reported installed and `prune` removes them; a cached
//! artifact whose digest no longer matches is reported and refused.

use std::process::Output;

use pyro_test::Home;
use serde_json::Value;

use crate::fixtures;

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&out.stdout)))
}

/// A well-formed install of `debian:12-base` with small stand-in artifacts.
fn fake_install(home: &Home) -> std::path::PathBuf {
    let dir = fixtures::install_dir(&home.environments());
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("vmlinux"), b"kernel bytes").unwrap();
    std::fs::write(dir.join("rootfs.ext4"), vec![7u8; 4096]).unwrap();
    fixtures::store_manifest(&dir, "oci://127.0.0.1:5000/pyro/pyro-environment-debian-12-base@sha256:0", 0.0, String::new());
    dir
}

#[test]
fn interrupted_installs_are_not_installed_and_prune_removes_them() {
    let home = Home::new(crate::PYRO);
    let root = home.environments();
    std::fs::create_dir_all(root.join(".partial-debian_12-1.0.0-x1y2z3/rootfs.ext4.tmp")).unwrap();
    std::fs::create_dir_all(root.join("debian_12-build-1.0.0")).unwrap(); // killed before environment.json
    std::fs::create_dir_all(root.join("ubuntu_24.04-1.0.0")).unwrap(); // not in the catalog
    fake_install(&home);

    let list = json(&home.raw(&["env", "list", "--json"]));
    let state = |name: &str| list["environments"].as_array().unwrap().iter().find(|e| e["name"] == name).unwrap().clone();
    assert_eq!(state("debian:12")["installed"], false);
    assert_eq!(state("debian:12-build")["installed"], false);
    assert_eq!(state("debian:12-build")["state"], "corrupt");
    assert_eq!(state("debian:12-base")["installed"], true);

    let pruned = json(&home.raw(&["env", "prune", "--json"]));
    assert_eq!(pruned["count"], 3, "{pruned}");
    let names: Vec<String> =
        std::fs::read_dir(&root).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| !n.ends_with(".lock")).collect();
    assert_eq!(names, vec!["debian_12-base-1.0.0".to_string()], "the valid install survives");
    assert_eq!(json(&home.raw(&["env", "prune", "--json"]))["count"], 0);
}

#[test]
fn a_cached_image_whose_digest_changed_is_reported_not_used() {
    let home = Home::new(crate::PYRO);
    let dir = fake_install(&home);
    assert_eq!(json(&home.raw(&["env", "inspect", "debian:12-base", "--verify", "--json"]))["installed"], true);
    // Same size, different bytes, new mtime: the kind of damage a disk error leaves.
    let rootfs = dir.join("rootfs.ext4");
    let mut bytes = std::fs::read(&rootfs).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&rootfs, bytes).unwrap();
    let inspect = json(&home.raw(&["env", "inspect", "debian:12-base", "--json"]));
    assert_eq!(inspect["installed"], false);
    let problem = inspect["problem"].as_str().unwrap();
    assert!(problem.contains("rootfs.ext4") && problem.contains("corrupt"), "{problem}");

    let out = home.raw(&["run", "debian:12-base", "--", "true"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("[error] environment 'debian:12-base' is unusable"), "{stderr}");
}

#[test]
fn a_corrupt_workspace_record_breaks_only_its_own_row() {
    let home = Home::new(crate::PYRO);
    let broken = home.state().join("workspaces/0123456789ab");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join("workspace.json"), b"{ not json").unwrap();
    let out = home.raw(&["workspace", "list", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let list = json(&out);
    assert_eq!(list["count"], 1);
    assert_eq!(list["workspaces"][0]["state"], "error");
    assert!(list["workspaces"][0]["error"].as_str().unwrap().contains("corrupt"));
    let status = home.raw(&["workspace", "status", "0123456789ab", "--json"]);
    assert_eq!(status.status.code(), Some(1));
    assert!(json(&status)["error"].as_str().unwrap().contains("is corrupt"));
}
