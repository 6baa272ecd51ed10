//! The real `pyro-agent` binary in `host_compat` mode (`--listen-unix`), driven through
//! the real [`GuestClient`]. The agent is found via `PYRO_AGENT_BIN`, else built with
//! `cargo build -p pyro-agent` into the workspace's target directory.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use pyro_core::guest::{Capability, EntryKind, ExecRequest, GuestClient, GuestError, MIN_SUPPORTED_PROTOCOL_VERSION, PROTOCOL_VERSION};
use pyro_protocol::{read_frame, write_frame, Frame, FrameKind, Hello, Response};
use pyro_test::process_gone;
use tokio::net::UnixStream;

fn agent_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("PYRO_AGENT_BIN") {
            return PathBuf::from(bin);
        }
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().parent().unwrap().to_path_buf();
        let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace.join("target"));
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        // Always (re)build: a no-op when fresh, and never a stale agent.
        let status =
            Command::new(cargo).args(["build", "--quiet", "-p", "pyro-agent"]).current_dir(&workspace).status().expect("running cargo to build pyro-agent");
        assert!(status.success(), "building pyro-agent failed");
        let bin = target.join("debug").join("pyro-agent");
        assert!(bin.exists(), "{} missing after build", bin.display());
        bin
    })
    .clone()
}

/// A running agent with a connected client; the agent is killed on drop.
struct Agent {
    child: Child,
    socket: PathBuf,
    root: PathBuf,
    client: GuestClient,
    hello: Hello,
    _dir: tempfile::TempDir,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Agent {
    async fn start() -> Agent {
        Self::start_announcing(None).await
    }

    /// Starts an agent that pretends to be older (`PYRO_AGENT_TEST_ANNOUNCE`, honoured in
    /// host-compat mode only) and connects to it.
    async fn start_announcing(announce: Option<&str>) -> Agent {
        let (child, socket, root, dir) = Self::spawn(announce);
        let stream = connect_socket(&socket).await;
        let (client, hello) = GuestClient::connect(stream, Duration::from_secs(10)).await.expect("hello");
        Agent { child, socket, root, client, hello, _dir: dir }
    }

    fn spawn(announce: Option<&str>) -> (Child, PathBuf, PathBuf, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        let socket = dir.path().join("agent.sock");
        let mut command = Command::new(agent_bin());
        command.arg("--listen-unix").arg(&socket).arg("--cwd-root").arg(&root).stdin(Stdio::null());
        match announce {
            Some(announce) => command.env("PYRO_AGENT_TEST_ANNOUNCE", announce),
            None => command.env_remove("PYRO_AGENT_TEST_ANNOUNCE"),
        };
        let child = command.spawn().expect("spawning pyro-agent");
        (child, socket, root, dir)
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    fn p(&self, rel: &str) -> String {
        self.path(rel).to_str().unwrap().to_string()
    }
}

async fn connect_socket(socket: &Path) -> UnixStream {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match UnixStream::connect(socket).await {
            Ok(stream) => return stream,
            Err(e) if Instant::now() > deadline => panic!("agent socket never came up: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

fn cmd(command: &str) -> ExecRequest {
    ExecRequest { command: command.to_string(), env: BTreeMap::new(), cwd: None, secret_env: BTreeMap::new(), timeout_ms: 30_000, max_output_bytes: 64 << 20 }
}

fn mode_of(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

/// Deterministic pseudo-random bytes (xorshift), not valid UTF-8 in general.
fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e3779b97f4a7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

async fn wait_for_file(path: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            if text.ends_with('\n') {
                return text;
            }
        }
        assert!(Instant::now() < deadline, "{} never appeared", path.display());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn hello_reports_versions_and_ping_works() {
    let agent = Agent::start().await;
    assert_eq!(agent.hello.protocol_version, PROTOCOL_VERSION);
    assert_eq!(agent.hello.agent_version, env!("CARGO_PKG_VERSION"));
    assert!(!agent.hello.kernel_release.is_empty());
    assert_eq!(agent.client.hello(), &agent.hello);
    assert_eq!(agent.hello.known_capabilities(), Capability::ALL);
    agent.client.ping().await.unwrap();
}

#[tokio::test]
async fn exec_propagates_exit_codes_and_signals() {
    let agent = Agent::start().await;
    let out = agent.client.exec(cmd("exit 7")).await.unwrap();
    assert_eq!(out.result.exit_code, 7);
    assert!(!out.result.timed_out);
    let out = agent.client.exec(cmd("kill -TERM $$")).await.unwrap();
    assert_eq!(out.result.exit_code, 128 + 15);
    let out = agent.client.exec(cmd("true")).await.unwrap();
    assert_eq!(out.result.exit_code, 0);
}

#[tokio::test]
async fn exec_separates_streams_and_applies_env_and_cwd() {
    let agent = Agent::start().await;
    let mut request = cmd("echo out; echo err >&2; pwd; echo \"$FOO\"; read x; echo \"read=$?\"");
    request.env.insert("FOO".into(), "bar baz".into());
    let out = agent.client.exec(request).await.unwrap();
    let root = agent.root.display();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), format!("out\n{root}\nbar baz\nread=1\n"));
    assert_eq!(out.stderr, b"err\n");
    assert_eq!(out.result.stdout_bytes, format!("out\n{root}\nbar baz\nread=1\n").len() as u64);
    assert_eq!(out.result.stderr_bytes, 4);

    let mut request = cmd("pwd");
    request.cwd = Some("made/on/demand".into());
    let out = agent.client.exec(request).await.unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim_end(), agent.p("made/on/demand"));
}

#[tokio::test]
async fn exec_streams_large_output_intact_and_caps_it() {
    let agent = Agent::start().await;
    let data = noise(10 << 20);
    std::fs::write(agent.path("big"), &data).unwrap();

    let out = agent.client.exec(cmd("cat big")).await.unwrap();
    assert_eq!(out.result.exit_code, 0);
    assert_eq!(out.stdout.len(), data.len());
    assert!(out.stdout == data, "10 MiB of stdout came back altered");
    assert_eq!(out.result.stdout_bytes, data.len() as u64);
    assert!(!out.result.stdout_truncated);

    let mut capped = cmd("cat big; echo done >&2");
    capped.max_output_bytes = 1 << 20;
    let mut chunks = 0usize;
    let live = |_chunk: pyro_core::guest::OutputChunk<'_>| {};
    let out = agent.client.exec_streaming(capped.clone(), Some(&live)).await.unwrap();
    assert_eq!(out.stdout.len(), 1 << 20);
    assert!(out.stdout[..] == data[..1 << 20]);
    assert_eq!(out.result.stdout_bytes, data.len() as u64);
    assert!(out.result.stdout_truncated);
    assert_eq!(out.stderr, b"done\n");
    assert!(!out.result.stderr_truncated);

    // Live chunks arrive in pieces of at most 64 KiB.
    let result = agent
        .client
        .exec_with(capped, |chunk| {
            if let pyro_core::guest::OutputChunk::Stdout(bytes) = chunk {
                assert!(bytes.len() <= 64 * 1024);
                chunks += 1;
            }
        })
        .await
        .unwrap();
    assert!(chunks >= 16, "expected many chunks, got {chunks}");
    assert_eq!(result.stdout_bytes, data.len() as u64);
}

#[tokio::test]
async fn exec_output_is_binary_safe() {
    let agent = Agent::start().await;
    let out = agent.client.exec(cmd(r"printf '\377\376\000abc\200'; printf '\351\000' >&2")).await.unwrap();
    assert_eq!(out.stdout, vec![0xff, 0xfe, 0x00, b'a', b'b', b'c', 0x80]);
    assert_eq!(out.stderr, vec![0xe9, 0x00]);
}

#[tokio::test]
async fn exec_timeout_kills_the_whole_process_group() {
    let agent = Agent::start().await;
    let mut request = cmd("(sleep 1; touch late) & echo started; sleep 30");
    request.timeout_ms = 300;
    let started = Instant::now();
    let out = agent.client.exec(request).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(5), "timeout took {:?}", started.elapsed());
    assert_eq!(out.result.exit_code, 124);
    assert!(out.result.timed_out);
    assert_eq!(out.stdout, b"started\n");
    assert!(out.stderr.ends_with(b"command timed out after 0.3s\n"), "{:?}", String::from_utf8_lossy(&out.stderr));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!agent.path("late").exists(), "a background child of the timed-out command survived");

    let mut request = cmd("sleep 5");
    request.timeout_ms = 1000;
    let out = agent.client.exec(request).await.unwrap();
    assert_eq!(out.stderr, b"command timed out after 1s\n");
}

#[tokio::test]
async fn a_slow_exec_does_not_block_fast_ones() {
    let agent = Agent::start().await;
    let client = agent.client.clone();
    let slow = tokio::spawn(async move { client.exec(cmd("while [ ! -e go ]; do sleep 0.02; done; echo slow")).await });
    let mut fast = Vec::new();
    for i in 0..7 {
        let client = agent.client.clone();
        fast.push(tokio::spawn(async move { client.exec(cmd(&format!("echo fast{i}"))).await }));
    }
    for (i, task) in fast.into_iter().enumerate() {
        let out = tokio::time::timeout(Duration::from_secs(10), task).await.expect("a fast exec was blocked").unwrap().unwrap();
        assert_eq!(out.stdout, format!("fast{i}\n").as_bytes());
    }
    // Every fast command finished while the slow one is still waiting for its cue.
    assert!(!slow.is_finished());
    std::fs::write(agent.path("go"), b"").unwrap();
    let out = tokio::time::timeout(Duration::from_secs(10), slow).await.unwrap().unwrap().unwrap();
    assert_eq!(out.stdout, b"slow\n");
}

#[tokio::test]
async fn write_file_is_atomic_and_keeps_modes() {
    let agent = Agent::start().await;
    let existing = agent.path("tool.sh");
    std::fs::write(&existing, b"old").unwrap();
    std::fs::set_permissions(&existing, std::fs::Permissions::from_mode(0o755)).unwrap();
    let result = agent.client.write_file(&agent.p("tool.sh"), b"#!/bin/sh\necho new\n", Some(0o600), false).await.unwrap();
    assert_eq!(result.mode, 0o755);
    assert_eq!(result.bytes_written, 19);
    assert_eq!(mode_of(&existing), 0o755);
    assert_eq!(std::fs::read(&existing).unwrap(), b"#!/bin/sh\necho new\n");

    agent.client.write_file(&agent.p("plain.txt"), b"x", None, false).await.unwrap();
    assert_eq!(mode_of(&agent.path("plain.txt")), 0o644);
    agent.client.write_file(&agent.p("private"), b"y", Some(0o600), false).await.unwrap();
    assert_eq!(mode_of(&agent.path("private")), 0o600);

    // Large content goes up in many frames.
    let big = noise(3 << 20);
    let result = agent.client.write_file(&agent.p("deep/er/big.bin"), &big, None, true).await.unwrap();
    assert_eq!(result.bytes_written, big.len() as u64);
    assert!(std::fs::read(agent.path("deep/er/big.bin")).unwrap() == big);

    let err = agent.client.write_file(&agent.p("missing/parent/f"), b"z", None, false).await.unwrap_err();
    assert!(err.to_string().starts_with("parent directory does not exist: "), "{err}");
    assert!(matches!(err, GuestError::Agent(_)));
    let err = agent.client.write_file(&agent.p("deep"), b"z", None, false).await.unwrap_err();
    assert_eq!(err.to_string(), format!("not a regular file: {}", agent.p("deep")));

    let leftovers: Vec<_> = std::fs::read_dir(&agent.root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".pyro-write-"))
        .collect();
    assert!(leftovers.is_empty(), "temp files left behind: {leftovers:?}");
}

#[tokio::test]
async fn write_file_refuses_symlinked_parents() {
    let agent = Agent::start().await;
    std::fs::create_dir(agent.path("real")).unwrap();
    std::os::unix::fs::symlink(agent.path("real"), agent.path("link")).unwrap();
    let target = agent.p("link/f.txt");
    let err = agent.client.write_file(&target, b"nope", None, true).await.unwrap_err();
    assert_eq!(err.to_string(), format!("path would traverse through a symlinked parent: {target}"));
    assert!(!agent.path("real/f.txt").exists());

    // A symlink as the target itself is not a regular file either.
    std::fs::write(agent.path("real/file"), b"keep").unwrap();
    std::os::unix::fs::symlink(agent.path("real/file"), agent.path("filelink")).unwrap();
    let err = agent.client.write_file(&agent.p("filelink"), b"nope", None, false).await.unwrap_err();
    assert!(err.to_string().starts_with("not a regular file: "), "{err}");
    assert_eq!(std::fs::read(agent.path("real/file")).unwrap(), b"keep");
}

#[tokio::test]
async fn list_never_follows_symlinks() {
    let agent = Agent::start().await;
    std::fs::create_dir_all(agent.path("t/a")).unwrap();
    std::fs::create_dir_all(agent.path("t/b")).unwrap();
    std::fs::write(agent.path("t/a/f"), b"hello").unwrap();
    std::fs::write(agent.path("t/b/inner"), b"i").unwrap();
    std::os::unix::fs::symlink("../b", agent.path("t/a/ln")).unwrap();
    let fifo = std::ffi::CString::new(agent.p("t/fifo")).unwrap();
    // SAFETY: `fifo` is a NUL-terminated path that outlives the call.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);

    let listing = agent.client.list(&agent.p("t"), true).await.unwrap();
    assert_eq!(listing.root.kind, EntryKind::Directory);
    let names: Vec<_> = listing.entries.iter().map(|e| e.path.strip_prefix(&agent.p("t/")).unwrap().to_string()).collect();
    assert_eq!(names, ["a", "a/f", "a/ln", "b", "b/inner", "fifo"]);
    let by_name = |n: &str| listing.entries.iter().find(|e| e.path == agent.p(&format!("t/{n}"))).unwrap().clone();
    assert_eq!(by_name("a/f").kind, EntryKind::File);
    assert_eq!(by_name("a/f").size_bytes, 5);
    let ln = by_name("a/ln");
    assert_eq!(ln.kind, EntryKind::Symlink);
    assert_eq!(ln.link_target.as_deref(), Some("../b"));
    assert_eq!(ln.size_bytes, 4);
    assert_eq!(by_name("fifo").kind, EntryKind::Other);
    assert_eq!(by_name("a").size_bytes, 0);

    let shallow = agent.client.list(&agent.p("t"), false).await.unwrap();
    assert_eq!(shallow.entries.len(), 3);
    let link = agent.client.list(&agent.p("t/a/ln"), true).await.unwrap();
    assert_eq!(link.root.kind, EntryKind::Symlink);
    assert!(link.entries.is_empty());

    let err = agent.client.list(&agent.p("nope"), false).await.unwrap_err();
    assert_eq!(err.to_string(), format!("path does not exist: {}", agent.p("nope")));
}

#[tokio::test]
async fn read_file_caps_and_refuses_non_files() {
    let agent = Agent::start().await;
    std::fs::write(agent.path("f"), b"0123456789").unwrap();
    let read = agent.client.read_file(&agent.p("f"), 4).await.unwrap();
    assert_eq!(read.content, b"0123");
    assert_eq!(read.size_bytes, 10);
    assert!(read.truncated);
    let read = agent.client.read_file(&agent.p("f"), 1 << 20).await.unwrap();
    assert_eq!(read.content, b"0123456789");
    assert!(!read.truncated);
    let err = agent.client.read_file(&agent.root.to_string_lossy(), 10).await.unwrap_err();
    assert_eq!(err.to_string(), format!("not a regular file: {}", agent.root.display()));
    let err = agent.client.read_file(&agent.p("missing"), 10).await.unwrap_err();
    assert_eq!(err.to_string(), format!("path does not exist: {}", agent.p("missing")));
}

/// Tar builder helpers that can also write names the `tar` crate refuses to.
fn header(kind: tar::EntryType, name: &[u8], mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(1_000_000);
    let field = &mut h.as_old_mut().name;
    field.fill(0);
    field[..name.len()].copy_from_slice(name);
    h
}

/// kind, name, mode, content, link target.
type Member<'a> = (tar::EntryType, &'a str, u32, &'a [u8], Option<&'a str>);

fn archive(members: &[Member<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (kind, name, mode, data, link) in members {
        let mut h = header(*kind, name.as_bytes(), *mode, data.len() as u64);
        if let Some(link) = link {
            h.set_link_name(link).unwrap();
        }
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap()
}

#[tokio::test]
async fn tar_import_applies_the_safety_rules() {
    use tar::EntryType as T;
    let agent = Agent::start().await;
    let good = archive(&[
        (T::Directory, "./", 0o755, b"", None),
        (T::Directory, "./lib/", 0o755, b"", None),
        (T::Regular, "./lib/x", 0o640, b"X", None),
        (T::Directory, "./sub/", 0o750, b"", None),
        (T::Symlink, "./sub/ln", 0o777, b"", Some("../lib/x")),
        (T::Link, "./sub/hard", 0o640, b"", Some("./lib/x")),
        (T::Regular, "bin/run", 0o755, b"#!/bin/sh\n", None),
    ]);
    let result = agent.client.tar_import("dest", &good[..]).await.unwrap();
    assert_eq!(result.entry_count, 7);
    assert_eq!(result.bytes_written, 11);
    let dest = agent.path("dest");
    assert_eq!(std::fs::read(dest.join("sub/ln")).unwrap(), b"X");
    assert_eq!(std::fs::read_link(dest.join("sub/ln")).unwrap(), Path::new("../lib/x"));
    assert_eq!(mode_of(&dest.join("lib/x")), 0o640);
    assert_eq!(mode_of(&dest.join("sub")), 0o750);
    assert_eq!(mode_of(&dest.join("bin/run")), 0o755);
    let x = std::fs::metadata(dest.join("lib/x")).unwrap();
    assert_eq!(x.mtime(), 1_000_000);
    assert_eq!(std::fs::metadata(dest.join("sub")).unwrap().mtime(), 1_000_000);
    assert_eq!(std::fs::metadata(dest.join("sub/hard")).unwrap().ino(), x.ino());

    // Importing again merges directories and replaces files.
    agent.client.tar_import(&dest.to_string_lossy(), &good[..]).await.unwrap();

    let cases: Vec<(Vec<u8>, String)> = vec![
        (archive(&[(T::Symlink, "esc", 0o777, b"", Some("../../etc"))]), "symlink esc escapes the destination".into()),
        (archive(&[(T::Regular, "../x", 0o644, b"evil", None)]), "unsafe archive member path: ../x".into()),
        (archive(&[(T::Regular, "a/../../x", 0o644, b"evil", None)]), "unsafe archive member path: a/../../x".into()),
        (archive(&[(T::Symlink, "abs", 0o777, b"", Some("/etc/passwd"))]), "symlink abs has an absolute target: /etc/passwd".into()),
        (archive(&[(T::Fifo, "pipe", 0o644, b"", None)]), "unsupported archive member type: pipe".into()),
        (archive(&[(T::Link, "h", 0o644, b"", Some("../outside"))]), "hard link h points outside the destination: ../outside".into()),
        (archive(&[(T::Regular, "escape/owned", 0o644, b"evil", None)]), "archive member would traverse through a symlink: escape/owned".into()),
    ];
    let outside = agent.root.parent().unwrap().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::create_dir(agent.path("bad")).unwrap();
    std::os::unix::fs::symlink(&outside, agent.path("bad/escape")).unwrap();
    for (bytes, expected) in cases {
        let err = agent.client.tar_import(&agent.p("bad"), &bytes[..]).await.unwrap_err();
        assert_eq!(err.to_string(), expected);
    }
    assert!(!agent.root.join("x").exists() && !agent.root.parent().unwrap().join("x").exists());
    assert!(!outside.join("owned").exists());
    let names: Vec<_> = std::fs::read_dir(agent.path("bad")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, ["escape"], "a refused archive left members behind");
}

fn set_mtime(path: &Path, secs: u64) {
    let file = std::fs::File::open(path).unwrap();
    file.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(secs)).unwrap();
}

#[tokio::test]
async fn tar_export_then_import_round_trips() {
    let agent = Agent::start().await;
    let src = agent.path("src");
    std::fs::create_dir_all(src.join("dir/nested")).unwrap();
    std::fs::create_dir_all(src.join("bin")).unwrap();
    std::fs::write(src.join("bin/tool"), b"#!/bin/sh\n").unwrap();
    std::fs::set_permissions(src.join("bin/tool"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(src.join("secret"), b"s3cr3t").unwrap();
    std::fs::set_permissions(src.join("secret"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let big = noise(3 << 20);
    std::fs::write(src.join("dir/nested/big.bin"), &big).unwrap();
    std::fs::hard_link(src.join("bin/tool"), src.join("dir/hard")).unwrap();
    std::os::unix::fs::symlink("dir/nested/big.bin", src.join("link")).unwrap();
    let long_name = format!("{}/{}", "d".repeat(90), "f".repeat(150));
    std::fs::create_dir(src.join("d".repeat(90))).unwrap();
    std::fs::write(src.join(&long_name), b"long").unwrap();
    for (i, f) in ["bin/tool", "secret", "dir/nested/big.bin"].iter().enumerate() {
        set_mtime(&src.join(f), 1_500_000_000 + i as u64);
    }
    std::fs::set_permissions(src.join("dir"), std::fs::Permissions::from_mode(0o700)).unwrap();
    set_mtime(&src.join("dir/nested"), 1_400_000_000);

    let mut tarball = Vec::new();
    let exported = agent.client.tar_export(&src.to_string_lossy(), &mut tarball).await.unwrap();
    assert_eq!(exported.kind, EntryKind::Directory);
    // bin, bin/tool, dir, dir/hard, dir/nested, dir/nested/big.bin, d…, d…/f…, link, secret
    assert_eq!(exported.entry_count, 10);
    assert_eq!(exported.bytes_written, (10 + 6 + big.len() + 4) as u64);

    // Members are relative, sorted, the second link to bin/tool is a hard-link member.
    let mut reader = tar::Archive::new(&tarball[..]);
    let members: Vec<(String, tar::EntryType)> = reader
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.path().unwrap().to_string_lossy().into_owned(), e.header().entry_type())
        })
        .collect();
    assert_eq!(members[0], ("bin/".to_string(), tar::EntryType::Directory));
    assert!(members.contains(&("dir/hard".to_string(), tar::EntryType::Link)));
    assert!(members.contains(&(long_name.clone(), tar::EntryType::Regular)));

    let imported = agent.client.tar_import(&agent.p("dst"), &tarball[..]).await.unwrap();
    assert_eq!(imported.entry_count, exported.entry_count);
    assert_eq!(imported.bytes_written, exported.bytes_written);
    let dst = agent.path("dst");
    for f in ["bin/tool", "secret", "dir/nested/big.bin", long_name.as_str()] {
        assert!(std::fs::read(src.join(f)).unwrap() == std::fs::read(dst.join(f)).unwrap(), "{f} differs");
    }
    for f in ["bin/tool", "secret", "dir", "dir/nested", "dir/nested/big.bin"] {
        assert_eq!(mode_of(&dst.join(f)), mode_of(&src.join(f)), "mode of {f}");
        let (a, b) = (std::fs::metadata(src.join(f)).unwrap(), std::fs::metadata(dst.join(f)).unwrap());
        assert_eq!(a.mtime(), b.mtime(), "mtime of {f}");
    }
    assert_eq!(std::fs::read_link(dst.join("link")).unwrap(), Path::new("dir/nested/big.bin"));
    assert_eq!(std::fs::metadata(dst.join("dir/hard")).unwrap().ino(), std::fs::metadata(dst.join("bin/tool")).unwrap().ino(), "hard link not preserved");

    // A single file exports as one member named by its basename.
    let mut single = Vec::new();
    let one = agent.client.tar_export(&src.join("secret").to_string_lossy(), &mut single).await.unwrap();
    assert_eq!((one.kind, one.entry_count, one.bytes_written), (EntryKind::File, 1, 6));
    let mut reader = tar::Archive::new(&single[..]);
    let names: Vec<_> = reader.entries().unwrap().map(|e| e.unwrap().path().unwrap().into_owned()).collect();
    assert_eq!(names, [PathBuf::from("secret")]);

    let err = agent.client.tar_export(&agent.p("nope"), &mut Vec::new()).await.unwrap_err();
    assert_eq!(err.to_string(), format!("path does not exist: {}", agent.p("nope")));
}

#[tokio::test]
async fn dropping_an_exec_cancels_it_in_the_guest() {
    let agent = Agent::start().await;
    let client = agent.client.clone();
    let task = tokio::spawn(async move { client.exec(cmd("sleep 30 & echo $! > pid; (sleep 1; touch late) & wait")).await });
    let pid: i32 = wait_for_file(&agent.path("pid")).await.trim().parse().unwrap();
    assert!(!process_gone(pid));
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    let deadline = Instant::now() + Duration::from_secs(5);
    while !process_gone(pid) {
        assert!(Instant::now() < deadline, "the cancelled command's process {pid} is still running");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(!agent.path("late").exists(), "a child of the cancelled command survived");
    // The connection is still fine.
    agent.client.ping().await.unwrap();
    let out = agent.client.exec(cmd("echo still here")).await.unwrap();
    assert_eq!(out.stdout, b"still here\n");
}

#[tokio::test]
async fn pending_calls_fail_when_the_channel_dies() {
    let mut agent = Agent::start().await;
    let client = agent.client.clone();
    let pending = tokio::spawn(async move { client.exec(cmd("sleep 30")).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    agent.child.kill().unwrap();
    let err = tokio::time::timeout(Duration::from_secs(5), pending).await.unwrap().unwrap().unwrap_err();
    assert!(matches!(err, GuestError::ChannelClosed));
    assert_eq!(err.to_string(), "guest channel closed");
    tokio::time::timeout(Duration::from_secs(5), agent.client.closed()).await.unwrap();
    assert!(agent.client.is_closed());
    assert!(matches!(agent.client.ping().await, Err(GuestError::ChannelClosed)));
}

#[tokio::test]
async fn shutdown_ends_only_the_session_in_host_mode() {
    let mut agent = Agent::start().await;
    agent.client.shutdown().await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), agent.client.closed()).await.unwrap();
    assert!(agent.child.try_wait().unwrap().is_none(), "host-mode agent exited on shutdown");
    let (again, _) = GuestClient::connect(connect_socket(&agent.socket).await, Duration::from_secs(5)).await.unwrap();
    again.ping().await.unwrap();
}

#[tokio::test]
async fn malformed_requests_get_clear_errors() {
    let agent = Agent::start().await;
    let mut stream = connect_socket(&agent.socket).await;
    let hello = read_frame(&mut stream).await.unwrap().unwrap();
    assert_eq!(hello.kind, FrameKind::Hello);

    // A knock gets another Hello.
    write_frame(&mut stream, &Frame::empty(0, FrameKind::Hello)).await.unwrap();
    assert_eq!(read_frame(&mut stream).await.unwrap().unwrap().kind, FrameKind::Hello);

    // A newer host's request is answered `unsupported`, naming it.
    let frame = Frame { stream: 1, kind: FrameKind::Request, payload: br#"{"op":"format_disk","disk":"/dev/vda"}"#.to_vec() };
    write_frame(&mut stream, &frame).await.unwrap();
    let reply = read_frame(&mut stream).await.unwrap().unwrap();
    assert_eq!((reply.stream, reply.kind), (1, FrameKind::Response));
    match reply.parse_json::<Response>().unwrap() {
        Response::Unsupported { op, message } => {
            assert_eq!(op, "format_disk");
            assert!(message.contains("unknown request"), "{message}");
        }
        other => panic!("expected unsupported, got {other:?}"),
    }

    let requests: [(u32, &[u8], &str); 3] =
        [(2, b"not json", "malformed request"), (3, br#"{"op":"read_file","path":"/x"}"#, "max_bytes"), (0, br#"{"op":"ping"}"#, "reserved")];
    for (stream_id, payload, needle) in requests {
        let frame = Frame { stream: stream_id, kind: FrameKind::Request, payload: payload.to_vec() };
        write_frame(&mut stream, &frame).await.unwrap();
        let reply = read_frame(&mut stream).await.unwrap().unwrap();
        assert_eq!((reply.stream, reply.kind), (stream_id, FrameKind::Response));
        match reply.parse_json::<Response>().unwrap() {
            Response::Error { message } => assert!(message.contains(needle), "{message:?} lacks {needle:?}"),
            other => panic!("expected an error, got {other:?}"),
        }
    }
    // The session survives all of that.
    let ping = Frame::json(9, FrameKind::Request, &pyro_protocol::Request::Ping);
    write_frame(&mut stream, &ping).await.unwrap();
    let reply = read_frame(&mut stream).await.unwrap().unwrap();
    assert_eq!(reply.parse_json::<Response>().unwrap(), Response::Ok);
}

/// Issue 8 item 7: an agent announcing an older protocol with fewer capabilities keeps
/// serving what it has; what it lacks fails as `unavailable` on the host, before
/// anything is sent (and the agent itself refuses it too, for a host that would not check).
#[tokio::test]
async fn an_older_agent_serves_what_it_has_and_the_rest_is_unavailable() {
    let agent = Agent::start_announcing(Some("1:exec,fs_read,fs_list")).await;
    assert_eq!(agent.hello.protocol_version, 1);
    assert_eq!(agent.hello.known_capabilities(), [Capability::Exec, Capability::FsRead, Capability::FsList]);
    let client = &agent.client;
    assert!(client.supports(Capability::Exec) && !client.supports(Capability::FsWrite));

    // What it has still works.
    client.ping().await.unwrap();
    let out = client.exec(cmd("printf old > old.txt; echo ran")).await.unwrap();
    assert_eq!((out.result.exit_code, &out.stdout[..]), (0, &b"ran\n"[..]));
    assert_eq!(client.read_file(&agent.p("old.txt"), 100).await.unwrap().content, b"old");
    let listing = client.list(&agent.p(""), false).await.unwrap();
    assert!(listing.entries.iter().any(|e| e.path.ends_with("/old.txt")));

    // What it lacks fails as unavailable, with a message that says what to do.
    let missing = [
        ("write_file", client.write_file(&agent.p("new.txt"), b"x", None, false).await.map(drop)),
        ("tar_import", client.tar_import(&agent.p(""), &b""[..]).await.map(drop)),
        ("tar_export", client.tar_export(&agent.p(""), tokio::io::sink()).await.map(drop)),
        ("shutdown", client.shutdown().await),
    ];
    for (op, result) in missing {
        let err = result.unwrap_err();
        assert!(err.is_unavailable(), "{op}: {err:?}");
        let text = err.to_string();
        assert!(text.contains(&format!("does not support {op}")), "{text}");
        assert!(text.contains("protocol 1") && text.contains("pyro workspace reset"), "{text}");
    }
    assert!(!agent.path("new.txt").exists(), "an unavailable write reached the agent");

    // The session is intact, and the agent refuses the same request by itself.
    client.ping().await.unwrap();
    let mut raw = connect_socket(&agent.socket).await;
    let hello = read_frame(&mut raw).await.unwrap().unwrap();
    let raw_hello: Hello = hello.parse_json().unwrap();
    assert_eq!(raw_hello.capabilities.as_deref(), Some(&["exec".to_string(), "fs_read".into(), "fs_list".into()][..]));
    let request = pyro_protocol::Request::TarExport { path: agent.p("") };
    write_frame(&mut raw, &Frame::json(3, FrameKind::Request, &request)).await.unwrap();
    let reply = read_frame(&mut raw).await.unwrap().unwrap();
    assert!(matches!(reply.parse_json::<Response>().unwrap(), Response::Unsupported { ref op, .. } if op == "tar_export"));
}

/// A protocol 1 Hello has no `capabilities` field: it implies everything protocol 1 had.
#[tokio::test]
async fn a_protocol_1_agent_without_capabilities_keeps_everything_it_had() {
    let agent = Agent::start_announcing(Some("1")).await;
    assert_eq!((agent.hello.protocol_version, &agent.hello.capabilities), (1, &None));
    assert_eq!(agent.hello.known_capabilities(), Capability::PROTOCOL_1);
    agent.client.write_file(&agent.p("a.txt"), b"hi", None, false).await.unwrap();
    let mut archive = Vec::new();
    agent.client.tar_export(&agent.p("a.txt"), &mut archive).await.unwrap();
    assert!(!archive.is_empty());
}

/// An agent older than [`MIN_SUPPORTED_PROTOCOL_VERSION`] is refused at the handshake,
/// with a typed error that says how to update.
#[tokio::test]
async fn an_agent_older_than_supported_is_refused() {
    let (mut child, socket, _root, _dir) = Agent::spawn(Some("0:exec"));
    let err = GuestClient::connect(connect_socket(&socket).await, Duration::from_secs(10)).await.unwrap_err();
    let _ = child.kill();
    let _ = child.wait();
    assert!(matches!(err, GuestError::ProtocolMismatch { agent: 0, min_supported: MIN_SUPPORTED_PROTOCOL_VERSION, current: PROTOCOL_VERSION }), "{err:?}");
    assert!(err.to_string().contains("pyro workspace reset"), "{err}");
}

// ---- PTY shells ----

fn open_request(id: &str, cwd: &str) -> pyro_protocol::ShellOpenRequest {
    pyro_protocol::ShellOpenRequest { shell_id: id.into(), cwd: cwd.into(), cols: 120, rows: 30, secret_env: BTreeMap::new() }
}

async fn type_line(client: &GuestClient, id: &str, line: &str) {
    client.shell_write(pyro_protocol::ShellWriteRequest { shell_id: id.into(), input: format!("{line}\n") }).await.unwrap();
}

async fn read_at(client: &GuestClient, id: &str, cursor: u64, max_chars: u64, idle_ms: Option<u64>) -> pyro_protocol::ShellReadResult {
    client.shell_read(pyro_protocol::ShellReadRequest { shell_id: id.into(), cursor, max_chars, wait_for_idle_ms: idle_ms }).await.unwrap()
}

/// Reads from `cursor` until the output read so far contains `needle`; returns it and the
/// next cursor.
async fn read_until(client: &GuestClient, id: &str, mut cursor: u64, needle: &str) -> (String, u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = String::new();
    while !seen.contains(needle) {
        assert!(Instant::now() < deadline, "shell output never contained {needle:?}; got {seen:?}");
        let r = read_at(client, id, cursor, 65_536, Some(200)).await;
        seen.push_str(&r.output);
        cursor = r.next_cursor;
    }
    (seen, cursor)
}

#[tokio::test]
async fn a_shell_outlives_the_connection_that_opened_it() {
    let agent = Agent::start().await;
    let info = agent.client.shell_open(open_request("a1", &agent.p("new/dir"))).await.unwrap();
    assert_eq!(info.state, pyro_protocol::ShellState::Running);
    assert!(agent.path("new/dir").is_dir(), "the cwd is created");
    type_line(&agent.client, "a1", "echo \"in $(pwd) term=$TERM answer=$((6*7))\"").await;
    // A second connection (another CLI process) finds the same shell and its output.
    let (other, _) = GuestClient::connect(connect_socket(&agent.socket).await, Duration::from_secs(10)).await.unwrap();
    drop(agent.client.clone());
    let (seen, cursor) = read_until(&other, "a1", 0, "answer=42").await;
    assert!(seen.contains(&format!("in {} term=xterm-256color", agent.p("new/dir"))), "{seen:?}");
    assert!(seen.contains("pyro$ "), "{seen:?}");
    // A cursor never repeats output: reading from the end returns nothing new.
    let again = read_at(&other, "a1", cursor, 100, None).await;
    assert_eq!((again.cursor, again.output.as_str()), (cursor, ""));
    type_line(&other, "a1", "exit 3").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let ended = loop {
        let r = read_at(&other, "a1", cursor, 65_536, Some(100)).await;
        if r.shell.state == pyro_protocol::ShellState::Exited {
            break r.shell;
        }
        assert!(Instant::now() < deadline, "the shell never exited");
    };
    assert_eq!(ended.exit_code, Some(3));
    let err = other.shell_write(pyro_protocol::ShellWriteRequest { shell_id: "a1".into(), input: "x".into() }).await.unwrap_err();
    assert_eq!(err.to_string(), "shell 'a1' is not running");
    other.shell_close("a1").await.unwrap();
    let err = other.shell_read(pyro_protocol::ShellReadRequest { shell_id: "a1".into(), cursor: 0, max_chars: 1, wait_for_idle_ms: None }).await.unwrap_err();
    assert_eq!(err.to_string(), "shell 'a1' does not exist");
}

#[tokio::test]
async fn cursor_reads_after_scrollback_overflow_are_exact() {
    let agent = Agent::start().await;
    let c = &agent.client;
    c.shell_open(open_request("o1", &agent.p(""))).await.unwrap();
    // ~6.9 MB of numbered lines (PTY line ends are \r\n): more than the 4 MiB (+1 MiB) kept.
    type_line(c, "o1", "stty -echo; seq 1 900000; echo END-$((40+2))").await;
    let (_, seen_to) = read_until(c, "o1", 0, "END-42\r\n").await;
    let end = read_at(c, "o1", seen_to, 65_536, Some(300)).await.shell.end_cursor;
    let first = read_at(c, "o1", 0, 10, None).await;
    assert!(first.cursor > 0, "the oldest output was dropped, so a read from 0 starts later");
    assert_eq!(first.output.chars().count(), 10);
    // Read everything kept from there, in pieces, each starting exactly where the last ended.
    let mut kept = String::new();
    let mut cursor = first.cursor;
    while cursor < end {
        let r = read_at(c, "o1", cursor, 100_000, None).await;
        assert_eq!(r.cursor, cursor, "pieces are contiguous");
        kept.push_str(&r.output);
        cursor = r.next_cursor;
    }
    assert_eq!(kept.chars().count() as u64, end - first.cursor);
    assert!(kept.starts_with(&first.output));
    // The kept text is a contiguous run of the numbers ending at 900000.
    let numbers: Vec<u64> = kept.split("\r\n").skip(1).filter_map(|l| l.parse().ok()).collect();
    assert!(kept.ends_with("900000\r\nEND-42\r\n\u{1b}[?2004hpyro$ "), "{:?}", &kept[kept.len() - 40..]);
    assert_eq!(*numbers.last().unwrap(), 900_000);
    assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "no line lost or repeated");
    assert!(kept.len() >= 4 << 20 && kept.len() <= 5 << 20, "scrollback holds {} bytes", kept.len());
    // Any cursor inside reads exactly the characters at that offset.
    for offset in [0u64, 1, 12_345, end - first.cursor - 7] {
        let r = read_at(c, "o1", first.cursor + offset, 7, None).await;
        let expected: String = kept.chars().skip(offset as usize).take(7).collect();
        assert_eq!(r.output, expected, "offset {offset}");
    }
    c.shell_close("o1").await.unwrap();
}

#[tokio::test]
async fn secrets_printed_in_a_shell_are_redacted() {
    let agent = Agent::start().await;
    let c = &agent.client;
    let value = "hunter2-shell-VALUE";
    c.install_secrets(vec![pyro_protocol::SecretValue { name: "API_TOKEN".into(), value: value.into() }]).await.unwrap();
    let mut open = open_request("s1", &agent.p(""));
    open.secret_env = BTreeMap::from([("API_TOKEN".into(), "TOKEN".into())]);
    c.shell_open(open).await.unwrap();
    // Whole, and in two halves written separately.
    type_line(c, "s1", "echo \"whole=$TOKEN\"; printf 'split=%s' \"${TOKEN:0:7}\"; sleep 0.3; printf '%s\\n' \"${TOKEN:7}\"; echo DONE-$((1+1))").await;
    let (seen, _) = read_until(c, "s1", 0, "DONE-2\r\n").await;
    assert!(seen.contains("whole=[REDACTED]") && seen.contains("split=[REDACTED]"), "{seen:?}");
    assert!(!seen.contains("hunter2"), "{seen:?}");
    c.shell_close("s1").await.unwrap();
}

#[tokio::test]
async fn a_flooding_shell_keeps_the_agent_responsive_and_bounded() {
    let agent = Agent::start().await;
    let c = &agent.client;
    c.shell_open(open_request("f1", &agent.p(""))).await.unwrap();
    type_line(c, "f1", "yes").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..5 {
        let started = Instant::now();
        let out = c.exec(cmd("echo alive")).await.unwrap();
        assert_eq!(out.stdout, b"alive\n");
        assert!(started.elapsed() < Duration::from_secs(5), "exec took {:?} during the flood", started.elapsed());
        // An idle wait returns once its budget is available, even though output never stops.
        let r = read_at(c, "f1", 0, 1000, Some(500)).await;
        assert_eq!(r.output.chars().count(), 1000);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let status = std::fs::read_to_string(format!("/proc/{}/status", agent.child.id())).unwrap();
    let rss_kib: u64 = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok()).unwrap();
    assert!(rss_kib < 64 * 1024, "agent RSS {rss_kib} KiB while a shell floods");
    c.shell_signal(pyro_protocol::ShellSignalRequest { shell_id: "f1".into(), signal: pyro_protocol::ShellSignal::Int }).await.unwrap();
    let end = read_at(c, "f1", 0, 1, None).await.shell.end_cursor;
    type_line(c, "f1", "echo STOPPED").await;
    read_until(c, "f1", end, "STOPPED\r\n").await;
    let closed = c.shell_close("f1").await.unwrap();
    assert_eq!(closed.shell_id, "f1");
}

#[tokio::test]
async fn shell_faults_are_one_clear_line() {
    let agent = Agent::start().await;
    let c = &agent.client;
    let err = c.shell_write(pyro_protocol::ShellWriteRequest { shell_id: "nope".into(), input: "x".into() }).await.unwrap_err();
    assert_eq!(err.to_string(), "shell 'nope' does not exist");
    c.shell_open(open_request("d1", &agent.p(""))).await.unwrap();
    assert_eq!(c.shell_open(open_request("d1", &agent.p(""))).await.unwrap_err().to_string(), "shell 'd1' already exists");
    let mut zero = open_request("z1", &agent.p(""));
    zero.cols = 0;
    assert_eq!(c.shell_open(zero).await.unwrap_err().to_string(), "cols and rows must be positive");
    let err =
        c.shell_read(pyro_protocol::ShellReadRequest { shell_id: "d1".into(), cursor: 0, max_chars: 10, wait_for_idle_ms: Some(60_000) }).await.unwrap_err();
    assert_eq!(err.to_string(), "wait_for_idle_ms must be between 1 and 10000");
    c.shell_close("d1").await.unwrap();
}
