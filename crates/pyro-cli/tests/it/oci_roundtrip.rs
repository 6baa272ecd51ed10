//! End to end through the `pyro` binary: `env publish` to, and `env pull` from, a local
//! Docker distribution registry (`/usr/bin/docker-registry`, started by the test on a free
//! loopback port with storage in a temp dir), including a corrupted blob and the error
//! paths. Without the registry binary the registry cases are skipped (they fail under
//! `CI=true`).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pyro_core::environments::{sha256_file, KERNEL_FILE, MANIFEST_FILE, ROOTFS_FILE};
use pyro_test::{describe, make_ext4, mkfs_ext4, Home, Required};
use serde_json::Value;
use tempfile::TempDir;

use crate::fixtures;

const REGISTRY_BIN: &str = "/usr/bin/docker-registry";
const ENVIRONMENT: &str = "debian:12-base";
const REPOSITORY: &str = "pyro/pyro-environment-debian-12-base";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A running `docker-registry`, killed on drop.
struct LocalRegistry {
    child: Child,
    port: u16,
    dir: TempDir,
}

impl LocalRegistry {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let storage = dir.path().join("storage");
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: pyro-test-secret\n",
                storage.display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&config)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        let mut registry = Self { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if http_status(port, "/v2/") == Some(200) {
                break;
            }
            if let Ok(Some(status)) = registry.child.try_wait() {
                panic!("docker-registry exited with {status}: {}", registry.log());
            }
            assert!(Instant::now() < deadline, "docker-registry did not answer /v2/ within 20 s: {}", registry.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        registry
    }

    fn location(&self) -> String {
        format!("http://127.0.0.1:{}/pyro", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// The stored data of blob `digest` (`sha256:…`).
    fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
        self.dir.path().join("storage/docker/registry/v2/blobs/sha256").join(&hex[..2]).join(hex).join("data")
    }
}

impl Drop for LocalRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Status code of a plain HTTP GET on the loopback port, if anything answers.
fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n").ok()?;
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.split_whitespace().nth(1)?.parse().ok()
}

fn install_dir(home: &Home) -> PathBuf {
    fixtures::install_dir(&home.environments())
}

/// Writes a fake but well-formed install of `debian:12-base` into `home`'s cache.
fn install_fixture(home: &Home) -> (String, String) {
    let dir = install_dir(home);
    std::fs::create_dir_all(&dir).unwrap();
    let kernel: Vec<u8> = (0..6 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(dir.join(KERNEL_FILE), &kernel).unwrap();

    let scratch = tempfile::tempdir().unwrap();
    let tree = scratch.path().join("tree");
    std::fs::create_dir_all(tree.join("opt/pyro/bin")).unwrap();
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    let agent = tree.join("opt/pyro/bin/pyro-agent");
    std::fs::write(&agent, b"\x7fELF fake pyro-agent for the OCI round-trip test\n").unwrap();
    std::fs::write(tree.join("etc/os-release"), "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\n").unwrap();
    let rootfs = dir.join(ROOTFS_FILE);
    make_ext4(&rootfs, "8M", Some(&tree));

    let manifest = fixtures::store_manifest(&dir, "local-build", 1_700_000_000.0, sha256_file(&agent).unwrap());
    (manifest.artifacts[KERNEL_FILE].sha256.clone(), manifest.artifacts[ROOTFS_FILE].sha256.clone())
}

fn partial_dirs(home: &Home) -> Vec<String> {
    std::fs::read_dir(home.environments())
        .map(|entries| entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| n.starts_with(".partial-")).collect())
        .unwrap_or_default()
}

#[test]
fn publish_pull_verify_and_reject_corruption() {
    if !Required::IN_CI.check(Path::new(REGISTRY_BIN).is_file(), REGISTRY_BIN) || !Required::IN_CI.check(mkfs_ext4().is_some(), "mkfs.ext4") {
        return;
    }
    let registry = LocalRegistry::start();
    let location = registry.location();

    // (1) Publish the fixture.
    let publisher = Home::new(crate::PYRO);
    let (kernel_sha, rootfs_sha) = install_fixture(&publisher);
    assert_eq!(publisher.ok_json(&["env", "inspect", ENVIRONMENT, "--verify", "--json"])["installed"], Value::Bool(true));
    let started = Instant::now();
    let published = publisher.ok_json(&["env", "publish", ENVIRONMENT, "--registry", &location, "--json"]);
    let publish_time = started.elapsed();
    let reference = published["reference"].as_str().unwrap().to_string();
    let digest = published["digest"].as_str().unwrap().to_string();
    assert_eq!(reference, format!("127.0.0.1:{}/{REPOSITORY}:1.0.0", registry.port));
    assert!(digest.starts_with("sha256:") && digest.len() == 71, "{digest}");
    assert_eq!(sha256_file(&registry.blob_path(&digest)).unwrap(), digest["sha256:".len()..], "the registry stores the manifest we reported");

    // Human mode reports each layer and the pushed reference; publishing the same install
    // again yields the same digest (layers are reproducible).
    let out = publisher.raw(&["env", "publish", ENVIRONMENT, "--registry", &location]);
    assert!(out.status.success(), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for file in ["vmlinux", "rootfs.ext4", "environment-metadata.json"] {
        assert!(stderr.contains(&format!("[publish] layer {file} ")), "{stderr}");
    }
    assert!(stderr.contains(&format!("[publish] pushed {reference} {digest}")), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains(&digest));

    // The stored manifest is an OCI image manifest with the agreed layout.
    let manifest: Value = serde_json::from_slice(&std::fs::read(registry.blob_path(&digest)).unwrap()).unwrap();
    assert_eq!(manifest["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(manifest["config"]["mediaType"], "application/vnd.oci.image.config.v1+json");
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 3);
    assert!(layers.iter().all(|l| l["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"));
    let config: Value = serde_json::from_slice(&std::fs::read(registry.blob_path(manifest["config"]["digest"].as_str().unwrap())).unwrap()).unwrap();
    assert_eq!((config["architecture"].as_str(), config["os"].as_str()), (Some("amd64"), Some("linux")));
    assert_eq!(config["config"]["Labels"]["io.pyro.environment"], ENVIRONMENT);
    assert_eq!(config["config"]["Labels"]["io.pyro.environment.version"], "1.0.0");

    // (2) Pull into an empty cache.
    let puller = Home::new(crate::PYRO);
    let started = Instant::now();
    let pulled = puller.ok_json(&["env", "pull", ENVIRONMENT, "--source", "registry", "--registry", &location, "--json"]);
    let pull_time = started.elapsed();
    eprintln!("timing: publish {publish_time:?}, pull {pull_time:?} (8 MiB ext4 fixture, local registry)");
    assert_eq!(pulled["installed"], Value::Bool(true), "{pulled}");
    assert_eq!(pulled["already_installed"], Value::Bool(false), "{pulled}");
    assert_eq!(pulled["source_digest"].as_str(), Some(digest.as_str()), "{pulled}");
    let info = puller.ok_json(&["env", "inspect", ENVIRONMENT, "--verify", "--json"]);
    assert_eq!(info["installed"], Value::Bool(true), "{info}");
    assert_eq!(info["source"].as_str(), Some(format!("oci://127.0.0.1:{}/{REPOSITORY}@{digest}", registry.port).as_str()), "{info}");
    assert_eq!(info["kernel"]["sha256"].as_str(), Some(kernel_sha.as_str()));
    assert_eq!(info["rootfs"]["sha256"].as_str(), Some(rootfs_sha.as_str()));
    for file in [KERNEL_FILE, ROOTFS_FILE] {
        let (a, b) = (std::fs::read(install_dir(&publisher).join(file)).unwrap(), std::fs::read(install_dir(&puller).join(file)).unwrap());
        assert!(a == b, "pulled {file} differs from the published one");
    }
    let mut files: Vec<String> = std::fs::read_dir(install_dir(&puller)).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    files.sort();
    assert_eq!(files, [MANIFEST_FILE, ROOTFS_FILE, KERNEL_FILE], "no temp files are left in the install");
    assert!(partial_dirs(&puller).is_empty());

    // (3) A second pull is a no-op.
    let again = puller.ok_json(&["env", "pull", ENVIRONMENT, "--source", "registry", "--registry", &location, "--json"]);
    assert_eq!(again["already_installed"], Value::Bool(true), "{again}");

    // Human mode prints the layer progress.
    let out = puller.raw(&["env", "pull", ENVIRONMENT, "--force", "--source", "registry", "--registry", &location]);
    assert!(out.status.success(), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for i in 1..=3 {
        assert!(stderr.contains(&format!("[pull] layer {i}/3 ")), "{stderr}");
    }

    // HTTPS against the plain-HTTP registry says what to do.
    let plain = location.trim_start_matches("http://");
    let message = puller.err_json(&["env", "pull", ENVIRONMENT, "--force", "--source", "registry", "--registry", plain, "--json"]);
    assert!(message.contains("TLS handshake failed") && message.contains(&format!("use {location}")), "{message}");

    // An environment that was never published is a clear 404.
    let message = puller.err_json(&["env", "pull", "debian:12", "--source", "registry", "--registry", &location, "--json"]);
    assert_eq!(message, format!("environment image 127.0.0.1:{}/pyro/pyro-environment-debian-12:1.0.0 not found in registry", registry.port));

    // (4) Corrupt the rootfs layer in the registry's storage (same length, other bytes).
    let rootfs_layer =
        layers.iter().find(|l| l["annotations"]["org.opencontainers.image.title"] == ROOTFS_FILE).unwrap_or(&layers[1])["digest"].as_str().unwrap().to_string();
    let blob = registry.blob_path(&rootfs_layer);
    let mut data = std::fs::read(&blob).unwrap();
    let middle = data.len() / 2;
    for byte in &mut data[middle..middle + 16] {
        *byte ^= 0xA5;
    }
    std::fs::write(&blob, &data).unwrap();

    let victim = Home::new(crate::PYRO);
    let message = victim.err_json(&["env", "pull", ENVIRONMENT, "--force", "--source", "registry", "--registry", &location, "--json"]);
    assert!(message.starts_with(&format!("OCI blob digest mismatch for {rootfs_layer}; got sha256:")), "{message}");
    let info = victim.ok_json(&["env", "inspect", ENVIRONMENT, "--json"]);
    assert_eq!(info["installed"], Value::Bool(false), "{info}");
    victim.ok_json(&["env", "prune", "--json"]);
    assert!(partial_dirs(&victim).is_empty(), "{:?}", partial_dirs(&victim));
    assert!(!install_dir(&victim).exists());

    // Human mode: one `[error]` line on stderr, non-zero exit.
    let out = victim.raw(&["env", "pull", ENVIRONMENT, "--source", "registry", "--registry", &location]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("[error]")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("OCI blob digest mismatch"), "{stderr}");
    drop(registry);
}

#[test]
fn unreachable_registry_is_a_one_line_error() {
    let home = Home::new(crate::PYRO);
    let location = format!("http://127.0.0.1:{}/pyro", free_port());
    let started = Instant::now();
    let message = home.err_json(&["env", "pull", ENVIRONMENT, "--source", "registry", "--registry", &location, "--json"]);
    assert!(message.starts_with(&format!("registry {location} is unreachable: ")), "{message}");
    assert!(started.elapsed() < Duration::from_secs(15), "the probe should give up quickly");

    let out = home.raw(&["env", "pull", ENVIRONMENT, "--source", "registry", "--registry", &location]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.starts_with("[error] registry ") && last.contains("unreachable"), "{stderr}");
    assert!(partial_dirs(&home).is_empty());

    // Something that accepts connections but never answers times out quickly.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let location = format!("http://{}/pyro", silent.local_addr().unwrap());
    let started = Instant::now();
    let message = home.err_json(&["env", "pull", ENVIRONMENT, "--source", "registry", "--registry", &location, "--json"]);
    assert_eq!(message, format!("registry {location} is unreachable: no answer within 3 s"));
    assert!(started.elapsed() < Duration::from_secs(15), "the probe should give up quickly");
    drop(silent);

    let message = home.err_json(&["env", "pull", ENVIRONMENT, "--source", "registry", "--registry", "ftp://example", "--json"]);
    assert!(message.contains("unsupported scheme"), "{message}");
}

#[test]
fn unknown_environment_lists_valid_names() {
    let home = Home::new(crate::PYRO);
    let expected = "unknown environment 'ubuntu:24.04'; expected one of: debian:12, debian:12-base, debian:12-build";
    let message = home.err_json(&["env", "pull", "ubuntu:24.04", "--source", "registry", "--registry", "http://127.0.0.1:9/pyro", "--json"]);
    assert_eq!(message, expected);
    let message = home.err_json(&["env", "publish", "ubuntu:24.04", "--registry", "http://127.0.0.1:9/pyro", "--json"]);
    assert_eq!(message, expected);
}
