//! The fast exec path in real guests: commands get the environment a login shell would
//! give them without a login shell each (computed once, recomputed when a profile file
//! changes), and what an exec or file write reported done survives a killed VMM.
//!
//! They boot real guests, so they are `#[ignore]`d in a plain `cargo test` and run by
//! `scripts/test.sh` after `scripts/setup.sh --no-run`.

use std::time::Duration;

use pyro_test::{vmm_pid, wait_for, Sandbox};

/// `pyro workspace exec ID -- COMMAND`, which must succeed; its stdout.
fn run(sb: &Sandbox, id: &str, command: &str) -> String {
    let exec = sb.ws(&["exec", id, "--", command]);
    assert_eq!(exec["exit_code"], 0, "{command}: {exec}");
    exec["stdout"].as_str().unwrap().to_string()
}

/// An `env` listing as sorted lines, without the variables each shell sets for itself.
fn env_lines(listing: &str) -> Vec<String> {
    let mut lines: Vec<String> = listing.lines().filter(|l| !["_=", "SHLVL=", "OLDPWD="].iter().any(|p| l.starts_with(p))).map(String::from).collect();
    lines.sort();
    lines
}

/// The environment three ways: `env` run directly, under `sh -c` (a pipe) and under a
/// login shell of its own. All the same, or the login environment is not what a login
/// shell gives.
fn assert_login_env_everywhere(sb: &Sandbox, id: &str) -> Vec<String> {
    let direct = env_lines(&run(sb, id, "env"));
    let shell = env_lines(&run(sb, id, "env | cat"));
    let login = env_lines(&run(sb, id, "sh -lc env"));
    assert_eq!(direct, shell, "env without a shell vs under sh -c");
    assert_eq!(direct, login, "env vs a login shell's env");
    assert!(direct.contains(&"PWD=/workspace".to_string()), "{direct:?}");
    direct
}

#[test]
#[ignore = "boots a real guest; run by scripts/test.sh"]
fn commands_get_the_login_environment_computed_once() {
    let sb = Sandbox::new(crate::PYRO);
    let seed = sb.seed("login-env", &[("note.txt", "hi\n", 0o644)]);
    let id = sb.create(&seed, "login-env", &[]);
    let before = assert_login_env_everywhere(&sb, &id);
    assert!(before.iter().any(|l| l.starts_with("PATH=/usr/local/sbin:")), "{before:?}");

    // An edited ~/.profile and a new /etc/profile.d script reach the very next command.
    run(&sb, &id, "echo 'export FOO=bar' >> /root/.profile");
    assert_eq!(run(&sb, &id, "printenv FOO"), "bar\n");
    run(&sb, &id, "echo 'export FROM_PROFILE_D=yes' > /etc/profile.d/pyro-test.sh");
    assert_eq!(run(&sb, &id, "printenv FROM_PROFILE_D"), "yes\n");
    let after = assert_login_env_everywhere(&sb, &id);
    assert!(after.contains(&"FOO=bar".to_string()) && after.contains(&"FROM_PROFILE_D=yes".to_string()), "{after:?}");

    // Computed once: a profile that counts its runs ran once for four commands.
    run(&sb, &id, "echo 'echo run >> /tmp/profile-runs' >> /root/.profile");
    for _ in 0..3 {
        run(&sb, &id, "true");
    }
    assert_eq!(run(&sb, &id, "cat /tmp/profile-runs"), "run\n");
    // The profile's umask is carried too, to direct execs and shells alike.
    run(&sb, &id, "echo 'umask 027' >> /root/.profile");
    assert_eq!(run(&sb, &id, "touch masked && stat -c %a masked"), "640\n");
    assert_eq!(run(&sb, &id, "umask"), "0027\n");
    // Shell syntax, builtins and scripts without `#!` still behave as under the shell.
    assert_eq!(run(&sb, &id, "echo 'a\\tb'"), "a\tb\n", "dash's echo, not /bin/echo");
    run(&sb, &id, "printf 'echo from a script without a shebang\\n' > plain && chmod +x plain");
    assert_eq!(run(&sb, &id, "./plain"), "from a script without a shebang\n");
    let missing = sb.ws(&["exec", &id, "--", "no-such-command"]);
    assert_eq!(missing["exit_code"], 127, "{missing}");
    assert_eq!(sb.ws(&["exec", &id, "--", "false"])["exit_code"], 1);
    // A profile that prints, or defines a function, gets a login shell per command again.
    run(&sb, &id, "echo 'echo hello from the profile' >> /root/.profile");
    assert_eq!(run(&sb, &id, "printenv FOO"), "hello from the profile\nbar\n");
    run(&sb, &id, "sed -i '/hello from the profile/d' /root/.profile && echo 'greet() { echo hi; }' >> /root/.profile");
    assert_eq!(run(&sb, &id, "greet"), "hi\n");
}

/// SIGKILLs the workspace's VMM (the host page cache survives, the guest's does not) and
/// starts the workspace again.
fn kill_vmm_and_start(sb: &Sandbox, id: &str) {
    let vmm = vmm_pid(sb.state.path()).expect("a VMM process for the workspace");
    // SAFETY: kill(2) with a pid we found and a valid signal number.
    unsafe { libc::kill(vmm, libc::SIGKILL) };
    wait_for(Duration::from_secs(60), || (sb.ws(&["status", id])["state"] == "stopped").then_some(())).expect("status notices the dead VMM");
    assert_eq!(sb.ws(&["start", id])["state"], "started");
}

#[test]
#[ignore = "boots a real guest; run by scripts/test.sh"]
fn work_reported_done_survives_a_killed_vmm() {
    let sb = Sandbox::new(crate::PYRO);
    let seed = sb.seed("durable", &[("old.txt", "old\n", 0o644), ("keep.txt", "keep\n", 0o644)]);
    let id = sb.create(&seed, "durable", &[]);
    // One kind of work per VMM life, killed right after the answer, so no later request
    // flushes what an earlier one left behind. Metadata only (no file data):
    run(&sb, &id, "mkdir -p meta/sub && mv keep.txt meta/kept.txt && chmod 700 meta && rm old.txt && touch meta/empty");
    kill_vmm_and_start(&sb, &id);
    assert_eq!(
        run(&sb, &id, "test -d meta/sub && test -e meta/empty && test ! -e old.txt && test ! -e keep.txt && stat -c %a meta && cat meta/kept.txt"),
        "700\nkeep\n"
    );
    // File data written by a command:
    run(&sb, &id, "printf 'exec data' > data.txt");
    kill_vmm_and_start(&sb, &id);
    assert_eq!(run(&sb, &id, "cat data.txt"), "exec data");
    // File writes: a new file in a new directory, and a replaced file.
    sb.ws(&["file", "write", &id, "new-dir/written.txt", "--text", "file data"]);
    sb.ws(&["file", "write", &id, "meta/kept.txt", "--text", "rewritten"]);
    kill_vmm_and_start(&sb, &id);
    assert_eq!(run(&sb, &id, "cat new-dir/written.txt; echo; cat meta/kept.txt"), "file data\nrewritten");
}
