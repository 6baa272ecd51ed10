//! How a request's command string becomes a process, with the environment a login shell
//! would give it but without a login shell per command:
//!
//! * a plain command (words of safe characters only, the first neither a shell builtin,
//!   keyword nor assignment, found on `PATH`) is executed directly, argv as the shell
//!   would have split it, `PWD` set as the shell would have set it;
//! * anything else runs under `/bin/sh -c`;
//!
//! both with the login shell's umask and a clean environment of the cached login
//! environment ([`login_env`]), then the request's variables (which win, even over a
//! `PATH` that `/etc/profile` would have reset). When the login environment cannot be
//! computed or cached, or the request sets `HOME` (a login shell would read that home's
//! `.profile`), the command runs under `/bin/sh -lc` as it always did.
//!
//! Floor above [`login_env`]; imports nothing else from the agent.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::process::{Child, Command};

use crate::login_env::{self, LoginEnv};

/// Characters that mean nothing to the shell inside a word: a command made of such words
/// (separated by spaces or tabs) is split by the shell exactly at the blanks.
fn is_plain(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_-./:,+@%=".contains(c)
}

/// Builtins and reserved words of dash (Debian's `/bin/sh`): the shell runs these itself,
/// so they are never executed directly.
const SHELL_WORDS: &[&str] = &[
    ".", ":", "[", "alias", "bg", "break", "case", "cd", "chdir", "command", "continue", "do", "done", "echo", "elif", "else", "esac", "eval", "exec", "exit",
    "export", "false", "fc", "fg", "fi", "for", "getopts", "hash", "if", "in", "jobs", "kill", "local", "printf", "pwd", "read", "readonly", "return", "set",
    "shift", "test", "then", "times", "trap", "true", "type", "ulimit", "umask", "unalias", "unset", "until", "wait", "while",
];

/// The words of `command` when it can be executed without a shell.
fn plain_words(command: &str) -> Option<Vec<&str>> {
    if !command.chars().all(|c| is_plain(c) || c == ' ' || c == '\t') {
        return None;
    }
    let words: Vec<&str> = command.split([' ', '\t']).filter(|w| !w.is_empty()).collect();
    let first = *words.first()?;
    // `true` and `false` without arguments do exactly what the shell's builtins do.
    let same_as_builtin = words.len() == 1 && (first == "true" || first == "false");
    if first.contains('=') || (SHELL_WORDS.contains(&first) && !same_as_builtin) {
        return None;
    }
    Some(words)
}

fn is_executable_file(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The program the shell would run for `word` in `cwd` with this `PATH`.
fn resolve(word: &str, path: Option<&std::ffi::OsStr>, cwd: &Path) -> Option<PathBuf> {
    if word.contains('/') {
        let program = cwd.join(word);
        return is_executable_file(&program).then_some(program);
    }
    let path = path?.to_str()?;
    // An empty entry is the working directory, as for the shell.
    path.split(':').map(|dir| cwd.join(dir).join(word)).find(|p| is_executable_file(p))
}

/// The variable `name` as this command will see it: the request's, else the login one.
fn lookup<'a>(name: &str, login: &'a LoginEnv, env: &'a [(String, String)]) -> Option<&'a std::ffi::OsStr> {
    match env.iter().rev().find(|(k, _)| k == name) {
        Some((_, v)) => Some(v.as_ref()),
        None => login.vars.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_os_str()),
    }
}

/// The command run directly, when it is plain and found; `None` otherwise.
fn direct(command: &str, login: &LoginEnv, env: &[(String, String)], cwd: &Path) -> Option<Command> {
    // The shell would keep a valid requested `PWD`; leave that subtlety to the shell.
    if env.iter().any(|(k, _)| k == "PWD") {
        return None;
    }
    let words = plain_words(command)?;
    let program = resolve(words[0], lookup("PATH", login, env), cwd)?;
    // The shell exports the physical working directory as `PWD`.
    let pwd = std::fs::canonicalize(cwd).ok()?;
    let mut cmd = Command::new(program);
    cmd.arg0(words[0]).args(&words[1..]).env_clear().envs(login.vars.iter().cloned()).envs(env.iter().cloned()).env("PWD", pwd);
    Some(cmd)
}

/// Starts commands with the request's variables `env` (in order; later entries win) on
/// top of the login environment looked up when it was made.
pub struct Launcher<'a> {
    env: &'a [(String, String)],
    /// `None`: every command gets a login shell of its own.
    login: Option<Arc<LoginEnv>>,
}

impl<'a> Launcher<'a> {
    /// A launcher for commands with the variables `env`.
    pub async fn new(env: &'a [(String, String)]) -> Self {
        let login = if env.iter().any(|(k, _)| k == "HOME") { None } else { login_env::get().await };
        Self { env, login }
    }

    /// Starts `command` in `cwd`; `configure` sets up everything else (stdio, process
    /// group, ...) and is applied to each way of starting it that is tried.
    pub fn spawn(&self, command: &str, cwd: &Path, configure: impl Fn(&mut Command)) -> Result<Child, String> {
        let start = |mut cmd: Command| {
            cmd.current_dir(cwd);
            configure(&mut cmd);
            cmd.spawn()
        };
        let env = self.env.iter().cloned();
        let Some(login) = &self.login else {
            let mut cmd = Command::new("/bin/sh");
            cmd.arg("-lc").arg(command).envs(env);
            return start(cmd).map_err(|e| format!("cannot start /bin/sh: {e}"));
        };
        let start_as_login = |mut cmd: Command| {
            let umask = login.umask as libc::mode_t;
            // SAFETY: runs in the forked child before exec and only calls umask(2), which
            // is async-signal-safe.
            unsafe {
                cmd.pre_exec(move || {
                    libc::umask(umask);
                    Ok(())
                });
            }
            start(cmd)
        };
        if let Some(cmd) = direct(command, login, self.env, cwd) {
            // A failed exec (say, a script without a `#!` line) is left to the shell, which
            // knows what to do with it.
            if let Ok(child) = start_as_login(cmd) {
                return Ok(child);
            }
        }
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c").arg(command).env_clear().envs(login.vars.iter().cloned()).envs(env);
        start_as_login(cmd).map_err(|e| format!("cannot start /bin/sh: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_commands_skip_the_shell() {
        assert_eq!(plain_words("true"), Some(vec!["true"]));
        assert_eq!(plain_words("  git\tstatus --short "), Some(vec!["git", "status", "--short"]));
        assert_eq!(plain_words("dd if=/dev/zero of=x bs=1k count=1"), Some(vec!["dd", "if=/dev/zero", "of=x", "bs=1k", "count=1"]));
        for shell in ["true x", "false 1", "echo hi", "cd /", "FOO=1 env", "env $HOME", "ls *", "a | b", "a; b", "a\nb", "~/bin/x", "'quoted'", "", "  ", "if"]
        {
            assert_eq!(plain_words(shell), None, "{shell:?}");
        }
    }

    #[test]
    fn resolution_follows_path_and_skips_non_executables() {
        let dir = std::env::temp_dir().join(format!("pyro-launch-{}", std::process::id()));
        let (a, b) = (dir.join("a"), dir.join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        std::fs::write(a.join("tool"), "").unwrap();
        std::fs::write(b.join("tool"), "").unwrap();
        std::fs::set_permissions(b.join("tool"), std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = format!("{}:{}", a.display(), b.display());
        assert_eq!(resolve("tool", Some(path.as_ref()), &dir), Some(b.join("tool")));
        assert_eq!(resolve("missing", Some(path.as_ref()), &dir), None);
        assert_eq!(resolve("./b/tool", None, &dir), Some(dir.join("./b/tool")));
        assert_eq!(resolve("tool", None, &dir), None);
        // An empty PATH entry is the working directory.
        assert_eq!(resolve("tool", Some(":".as_ref()), &b), Some(b.join("tool")));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
