//! Warm starts in real guests: restored siblings do not share random state, clock or
//! machine id; a corrupt template is detected, never used, and replaced; a rebuilt
//! environment gets a new template (and `env prune` removes the old one); concurrent
//! first starts build one template; `--cold` and `PYRO_WARM_START=0` boot a kernel;
//! `workspace reset` of a restored workspace brings back exactly the chosen snapshot.

use std::path::{Path, PathBuf};
use std::process::Output;

use pyro_test::Sandbox;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// How the guest of a `pyro run` came up, from its `[run] phase=execute … start=…` line.
fn start_mode(out: &Output) -> String {
    let stderr = text(&out.stderr);
    let line = stderr.lines().find(|l| l.starts_with("[run] phase=execute")).unwrap_or_else(|| panic!("no execute phase line: {stderr}"));
    line.split_whitespace().find_map(|w| w.strip_prefix("start=")).unwrap_or_else(|| panic!("no start= in {line}")).to_string()
}

fn host_now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64()
}

/// A private cache holding the user's `debian:12-base` install and built kernel as hard
/// links (no copies, no rebuild), plus the KVM check, so templates made here are this
/// test's alone.
struct PrivateCache {
    dir: tempfile::TempDir,
}

impl PrivateCache {
    fn new() -> Self {
        let user = dirs_cache();
        let dir = tempfile::tempdir_in(user.parent().unwrap()).unwrap();
        let envs = dir.path().join("environments/linux-x86_64");
        std::fs::create_dir_all(&envs).unwrap();
        for entry in std::fs::read_dir(user.join("environments/linux-x86_64")).unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("debian_12-base") {
                link_tree(&entry.path(), &envs.join(&name));
            }
        }
        std::fs::create_dir_all(dir.path().join("build")).unwrap();
        for entry in std::fs::read_dir(user.join("build")).unwrap().flatten() {
            if entry.file_name().to_string_lossy().starts_with("kernel-") {
                link_tree(&entry.path(), &dir.path().join("build").join(entry.file_name()));
            }
        }
        let _ = std::fs::copy(user.join("kvm-boot-check.json"), dir.path().join("kvm-boot-check.json"));
        Self { dir }
    }

    fn path(&self) -> &str {
        self.dir.path().to_str().unwrap()
    }

    /// The template directories in this cache.
    fn templates(&self) -> Vec<PathBuf> {
        let root = self.dir.path().join("templates/linux-x86_64");
        let mut out: Vec<PathBuf> = std::fs::read_dir(&root)
            .into_iter()
            .flatten()
            .flatten()
            .flat_map(|env| std::fs::read_dir(env.path()).into_iter().flatten().flatten().map(|e| e.path()))
            .filter(|p| p.is_dir() && !p.file_name().unwrap().to_string_lossy().starts_with('.'))
            .collect();
        out.sort();
        out
    }
}

fn dirs_cache() -> PathBuf {
    std::env::var_os("PYRO_CACHE_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/pyro"))
}

fn link_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            link_tree(&entry.path(), &target);
        } else {
            std::fs::hard_link(entry.path(), &target).unwrap();
        }
    }
}

#[test]
#[ignore = "boots real guests; run by scripts/test.sh"]
fn restored_siblings_get_their_own_randomness_clock_and_machine_id() {
    let sb = Sandbox::new(crate::PYRO);
    let probe = "head -c 32 /dev/urandom | od -An -tx1 -v | tr -d ' \\n'; echo; date +%s.%N; cat /run/machine-id";
    let mut seen = Vec::new();
    for _ in 0..2 {
        let before = host_now();
        let out = sb.raw(&["run", "debian:12-base", "--", probe]);
        let after = host_now();
        sb.expect_success(&out);
        assert_eq!(start_mode(&out), "restored", "{}", text(&out.stderr));
        let stdout = text(&out.stdout);
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.len(), 3, "{stdout}");
        let guest_time: f64 = lines[1].parse().unwrap();
        assert!(guest_time >= before - 2.0 && guest_time <= after + 2.0, "guest clock {guest_time} is not the host's ({before}..{after})");
        assert_eq!(lines[2].len(), 32, "a machine id: {stdout}");
        seen.push((lines[0].to_string(), lines[2].to_string()));
    }
    assert_ne!(seen[0].0, seen[1].0, "two guests restored from one template read the same random bytes");
    assert_ne!(seen[0].1, seen[1].1, "two restored guests share a machine id");
}

#[test]
#[ignore = "boots real guests; run by scripts/test.sh"]
fn cold_flag_and_warm_start_off_boot_a_kernel() {
    let sb = Sandbox::new(crate::PYRO);
    let out = sb.raw(&["run", "debian:12-base", "--cold", "--", "true"]);
    sb.expect_success(&out);
    assert_eq!(start_mode(&out), "booted");
    let out = sb.raw_env(&["run", "debian:12-base", "--", "true"], &[("PYRO_WARM_START", "0")]);
    sb.expect_success(&out);
    assert_eq!(start_mode(&out), "booted");
    assert!(!text(&out.stderr).contains("[warm]"), "no template is built when warm starts are off");
}

#[test]
#[ignore = "boots real guests; run by scripts/test.sh"]
fn a_corrupt_template_is_never_used_and_a_rebuilt_environment_gets_a_new_one() {
    let sb = Sandbox::new(crate::PYRO);
    let cache = PrivateCache::new();
    let run = || sb.raw_env(&["run", "debian:12-base", "--", "echo ok"], &[("PYRO_CACHE_DIR", cache.path())]);

    let first = run();
    sb.expect_success(&first);
    assert!(text(&first.stderr).contains("[warm] building the ephemeral template of debian:12-base"), "{}", text(&first.stderr));
    assert_eq!(start_mode(&first), "restored");
    let templates = cache.templates();
    assert_eq!(templates.len(), 1, "{templates:?}");
    let state = templates[0].join("state.bin");
    let mode = std::fs::metadata(&state).unwrap().permissions();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(mode.mode() & 0o222, 0, "template files are read-only");

    // Flip one byte in the middle of the saved state.
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut bytes = std::fs::read(&state).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x5a;
    std::fs::write(&state, &bytes).unwrap();
    let corrupt = run();
    sb.expect_success(&corrupt);
    assert_eq!(text(&corrupt.stdout), "ok\n");
    assert_eq!(start_mode(&corrupt), "booted", "a corrupt template is not restored");
    let warnings: Vec<String> = text(&corrupt.stderr).lines().filter(|l| l.contains("warm start failed")).map(str::to_string).collect();
    assert_eq!(warnings.len(), 1, "one stderr line says so: {}", text(&corrupt.stderr));
    assert!(warnings[0].contains("does not match its record"), "{}", warnings[0]);
    assert!(cache.templates().is_empty(), "the corrupt template was removed");

    let rebuilt = run();
    sb.expect_success(&rebuilt);
    assert!(text(&rebuilt.stderr).contains("[warm] building"), "{}", text(&rebuilt.stderr));
    assert_eq!(start_mode(&rebuilt), "restored");
    let before = cache.templates();
    assert_eq!(before.len(), 1);

    // Rebuild the environment: the next run must not restore the old template.
    let pull = sb.raw_env(&["env", "pull", "debian:12-base", "--force"], &[("PYRO_CACHE_DIR", cache.path())]);
    sb.expect_success(&pull);
    let after_pull = run();
    sb.expect_success(&after_pull);
    assert!(text(&after_pull.stderr).contains("[warm] building"), "a new template for the new install: {}", text(&after_pull.stderr));
    assert_eq!(start_mode(&after_pull), "restored");
    let after = cache.templates();
    assert_eq!(after.len(), 1, "the outdated template was removed: {after:?}");
    assert_ne!(after, before);

    // A leftover of an interrupted build is pruned with `env prune`.
    let leftover = after[0].parent().unwrap().join(".build-0123456789abcdef-1");
    std::fs::create_dir(&leftover).unwrap();
    let prune = sb.raw_env(&["env", "prune", "--json"], &[("PYRO_CACHE_DIR", cache.path())]);
    sb.expect_success(&prune);
    let report: serde_json::Value = serde_json::from_slice(&prune.stdout).unwrap();
    let deleted: Vec<&str> = report["deleted_templates"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(deleted.len(), 1, "{report}");
    assert!(deleted[0].ends_with(".build-0123456789abcdef-1"), "{report}");
    assert!(!leftover.exists());
    assert_eq!(cache.templates(), after, "the current template is kept");
}

#[test]
#[ignore = "boots real guests; run by scripts/test.sh"]
fn concurrent_first_starts_build_one_template() {
    let sb = Sandbox::new(crate::PYRO);
    let cache = PrivateCache::new();
    let children: Vec<_> = (0..4)
        .map(|i| {
            let mut cmd = sb.command(&["run", "debian:12-base", "--mem-mib", "512", "--", &format!("echo run-{i}")]);
            cmd.env("PYRO_CACHE_DIR", cache.path()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
            cmd.spawn().unwrap()
        })
        .collect();
    let outputs: Vec<Output> = children.into_iter().map(|c| c.wait_with_output().unwrap()).collect();
    let mut builds = 0;
    for (i, out) in outputs.iter().enumerate() {
        sb.expect_success(out);
        assert_eq!(text(&out.stdout), format!("run-{i}\n"));
        assert_eq!(start_mode(out), "restored", "{}", text(&out.stderr));
        builds += text(&out.stderr).matches("[warm] building").count();
    }
    assert_eq!(builds, 1, "one build for four concurrent first starts");
    assert_eq!(cache.templates().len(), 1);
}

#[test]
#[ignore = "boots real guests; run by scripts/test.sh"]
fn reset_of_a_restored_workspace_brings_back_exactly_the_snapshot() {
    let sb = Sandbox::new(crate::PYRO);
    let seed = sb.seed("seed", &[("a.txt", "seeded\n", 0o644)]);
    let created = sb.ws(&["create", "debian:12-base", "--seed-path", seed.to_str().unwrap()]);
    let id = created["workspace_id"].as_str().unwrap().to_string();
    let vm_record = sb.state.path().join("workspaces").join(&id).join("vm/vm.json");
    let start_mode = || -> String {
        let record: serde_json::Value = serde_json::from_slice(&std::fs::read(&vm_record).unwrap()).unwrap();
        record["start_mode"].as_str().unwrap_or_default().to_string()
    };
    assert_eq!(start_mode(), "restored", "{}", sb.diagnostics());
    sb.ws(&["exec", &id, "--", "echo one > a.txt; mkdir -p d && echo two > d/b.txt"]);
    sb.ws(&["snapshot", "create", &id, "chosen"]);
    sb.ws(&["exec", &id, "--", "echo changed > a.txt; rm -r d; echo extra > c.txt"]);
    let reset = sb.ws(&["reset", &id, "--snapshot", "chosen"]);
    assert_eq!(reset["workspace_reset"]["snapshot_name"], "chosen");
    assert_eq!(start_mode(), "restored", "reset restores the template too: {}", sb.diagnostics());
    let listing = sb.ws(&["exec", &id, "--", "find . -type f | sort | xargs -n1 sh -c 'echo \"$0: $(cat \"$0\")\"'"]);
    assert_eq!(listing["stdout"], "./a.txt: one\n./d/b.txt: two\n", "{listing}");
    // The guest after the reset is a fresh one: its random state is its own.
    let one = sb.ws(&["exec", &id, "--", "head -c 16 /dev/urandom | od -An -tx1"]);
    let two = sb.ws(&["exec", &id, "--", "head -c 16 /dev/urandom | od -An -tx1"]);
    assert_ne!(one["stdout"], two["stdout"]);
}

#[test]
#[ignore = "boots real guests; run by scripts/test.sh"]
fn a_build_killed_half_way_leaves_nothing_a_later_start_uses() {
    use std::io::BufRead;
    let sb = Sandbox::new(crate::PYRO);
    let cache = PrivateCache::new();
    let mut child = sb
        .command(&["run", "debian:12-base", "--", "true"])
        .env("PYRO_CACHE_DIR", cache.path())
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    for line in std::io::BufReader::new(stderr).lines() {
        if line.unwrap().contains("[warm] building") {
            break;
        }
    }
    // Somewhere in the boot or the save of the template.
    std::thread::sleep(std::time::Duration::from_millis(700));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(cache.templates().is_empty(), "no template is installed by a killed build");

    let out = sb.raw_env(&["run", "debian:12-base", "--", "echo after"], &[("PYRO_CACHE_DIR", cache.path())]);
    sb.expect_success(&out);
    assert_eq!(text(&out.stdout), "after\n");
    assert!(text(&out.stderr).contains("[warm] building"), "the next start builds anew: {}", text(&out.stderr));
    assert_eq!(start_mode(&out), "restored");
    let env_dir = cache.templates()[0].parent().unwrap().to_path_buf();
    let leftovers: Vec<String> =
        std::fs::read_dir(&env_dir).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| n.starts_with(".build-")).collect();
    assert!(leftovers.is_empty(), "the killed build's staging directory was cleared: {leftovers:?}");
}

#[test]
#[ignore = "boots real guests; run by scripts/test.sh"]
fn a_full_disk_while_saving_a_template_still_boots_cold() {
    let sb = Sandbox::new(crate::PYRO);
    let cache = PrivateCache::new();
    // Templates go to a 16 MiB filesystem: the saved state (tens of MB) cannot fit.
    let templates = cache.dir.path().join("templates");
    std::fs::create_dir_all(&templates).unwrap();
    let mounted = std::process::Command::new("mount").args(["-t", "tmpfs", "-o", "size=16m", "tmpfs"]).arg(&templates).status().is_ok_and(|s| s.success());
    if !mounted {
        pyro_test::Required::IN_CI.skip::<()>("mounting a small tmpfs needs root");
        return;
    }
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(templates.clone());
    let out = sb.raw_env(&["run", "debian:12-base", "--", "echo still"], &[("PYRO_CACHE_DIR", cache.path())]);
    sb.expect_success(&out);
    assert_eq!(text(&out.stdout), "still\n");
    assert_eq!(start_mode(&out), "booted");
    let stderr = text(&out.stderr);
    assert!(stderr.contains("no warm template") && stderr.contains("booting cold"), "{stderr}");
    assert!(cache.templates().is_empty());
}
