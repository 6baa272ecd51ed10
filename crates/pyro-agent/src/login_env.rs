//! The login environment: what a command would get from a login shell (`/bin/sh -lc`),
//! computed by running that login shell once and cached until one of the files a login
//! shell reads changes.
//!
//! The agent runs the login shell with `exec <this binary> --print-env`, which prints the
//! umask and the environment the profile scripts left behind ([`print_env`]). Per-shell
//! variables (`PWD`, `OLDPWD`, `SHLVL`, `_`) are dropped: the shell that runs a command
//! sets its own. Every use re-checks a fingerprint of the profile files (path, device,
//! inode, size, mtime and ctime of `/etc/profile`, `/etc/profile.d` and its entries,
//! `$HOME/.profile`, `/etc/environment`), a few `stat`s, so an edited `~/.profile` is seen
//! by the next command.
//!
//! What a cache cannot carry makes it give up (commands then get a login shell each, as
//! before): profile scripts that print anything (every command's output would start with
//! it), fail, or define shell functions or aliases (a command could use them).
//!
//! Bottom floor: imports nothing from the agent.

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;

/// The hidden agent flag that prints the umask and environment ([`print_env`]).
pub const PRINT_ENV_FLAG: &str = "--print-env";

/// What [`print_env`] starts with, before the umask in octal and a NUL.
const HEADER: &[u8] = b"pyro-login-env umask=";

/// Variables a shell sets for itself; never taken from the login shell's output.
const PER_SHELL: [&str; 4] = ["PWD", "OLDPWD", "SHLVL", "_"];

/// How long the login shell may take before the agent gives up on it (and commands fall
/// back to a login shell of their own).
const COMPUTE_TIMEOUT: Duration = Duration::from_secs(30);

/// Environment variables in the order they are applied.
pub type Env = Vec<(OsString, OsString)>;

/// What a login shell leaves a command.
#[derive(Debug, PartialEq, Eq)]
pub struct LoginEnv {
    /// The exported variables, without the per-shell ones.
    pub vars: Env,
    /// The file mode creation mask.
    pub umask: u32,
}

/// `--print-env`: writes [`HEADER`], this process's umask in octal and a NUL, then every
/// variable of its environment as `KEY=VALUE\0`.
pub fn print_env() {
    // SAFETY: umask(2) cannot fail; the old mask is put back at once.
    let mask = unsafe {
        let mask = libc::umask(0);
        libc::umask(mask);
        mask
    };
    let mut out = HEADER.to_vec();
    out.extend_from_slice(format!("{mask:o}\0").as_bytes());
    for (key, value) in std::env::vars_os() {
        out.extend_from_slice(key.as_bytes());
        out.push(b'=');
        out.extend_from_slice(value.as_bytes());
        out.push(0);
    }
    let mut stdout = std::io::stdout().lock();
    if stdout.write_all(&out).and_then(|()| stdout.flush()).is_err() {
        std::process::exit(1);
    }
}

/// What identifies one file a login shell may read: absent files count too (creating one
/// changes the fingerprint).
#[derive(Debug, PartialEq, Eq)]
struct FileStamp {
    path: PathBuf,
    /// (device, inode, size, mtime ns, ctime ns), or `None` when the path does not exist.
    stat: Option<(u64, u64, u64, i128, i128)>,
}

fn stamp(path: PathBuf) -> FileStamp {
    let stat = std::fs::metadata(&path).ok().map(|m| {
        let ns = |secs: i64, nsec: i64| i128::from(secs) * 1_000_000_000 + i128::from(nsec);
        (m.dev(), m.ino(), m.size(), ns(m.mtime(), m.mtime_nsec()), ns(m.ctime(), m.ctime_nsec()))
    });
    FileStamp { path, stat }
}

/// The files a login `/bin/sh` reads (plus `/etc/environment`), stamped now. `homes` are
/// the home directories whose `.profile` counts.
fn fingerprint(homes: &[OsString]) -> Vec<FileStamp> {
    let mut stamps = vec![stamp("/etc/profile".into()), stamp("/etc/environment".into()), stamp("/etc/profile.d".into())];
    if let Ok(entries) = std::fs::read_dir("/etc/profile.d") {
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        stamps.extend(paths.into_iter().map(stamp));
    }
    stamps.extend(homes.iter().map(profile_stamp));
    stamps
}

fn profile_stamp(home: &OsString) -> FileStamp {
    stamp(Path::new(home).join(".profile"))
}

/// The home directories whose `.profile` a login shell may read: the agent's `$HOME` (the
/// login shell starts with it) and the one the profile scripts left, when they changed it.
fn homes(env: Option<&LoginEnv>) -> Vec<OsString> {
    let mut homes: Vec<OsString> = std::env::var_os("HOME").into_iter().collect();
    if let Some(home) = env.and_then(|env| env.vars.iter().find(|(k, _)| k == "HOME")).map(|(_, v)| v.clone()) {
        if !homes.contains(&home) {
            homes.push(home);
        }
    }
    homes
}

/// Reads `--print-env` output; `None` when anything else was printed before it.
fn parse(output: &[u8]) -> Option<LoginEnv> {
    let rest = output.strip_prefix(HEADER)?;
    let end = rest.iter().position(|&b| b == 0)?;
    let umask = u32::from_str_radix(std::str::from_utf8(&rest[..end]).ok()?, 8).ok()?;
    let vars = rest[end + 1..]
        .split(|&b| b == 0)
        .filter_map(|entry| {
            let eq = entry.iter().position(|&b| b == b'=')?;
            let (key, value) = (&entry[..eq], &entry[eq + 1..]);
            (!key.is_empty() && !PER_SHELL.iter().any(|p| p.as_bytes() == key)).then(|| (OsString::from_vec(key.to_vec()), OsString::from_vec(value.to_vec())))
        })
        .collect();
    Some(LoginEnv { vars, umask })
}

/// Whether a profile file may define shell functions or aliases (`()` or the word
/// `alias` outside comment lines): a command started by that login shell could use them.
fn defines_functions_or_aliases(stamps: &[FileStamp]) -> bool {
    let suspicious = |line: &str| line.contains("()") || line.split(|c: char| !c.is_ascii_alphanumeric() && c != '_').any(|word| word == "alias");
    stamps.iter().filter(|s| s.stat.is_some()).any(|s| {
        std::fs::read(&s.path).is_ok_and(|text| String::from_utf8_lossy(&text).lines().map(str::trim_start).any(|l| !l.starts_with('#') && suspicious(l)))
    })
}

/// Runs the login shell once and reads what it leaves; `None` when it fails or prints
/// anything of its own.
async fn compute() -> Option<LoginEnv> {
    let exe = std::env::current_exe().ok()?;
    let exe = exe.to_str()?;
    let script = format!("exec '{}' {PRINT_ENV_FLAG}", exe.replace('\'', r"'\''"));
    let child = tokio::process::Command::new("/bin/sh")
        .arg("-lc")
        .arg(script)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .ok()?;
    let output = tokio::time::timeout(COMPUTE_TIMEOUT, child.wait_with_output()).await.ok()?.ok()?;
    if !output.status.success() || !output.stderr.is_empty() {
        return None;
    }
    parse(&output.stdout)
}

/// The last computation and the fingerprint it was made under.
struct Cached {
    stamps: Vec<FileStamp>,
    /// `None` when the login shell cannot be cached (commands then get their own).
    env: Option<Arc<LoginEnv>>,
}

static CACHE: Mutex<Option<Cached>> = Mutex::const_new(None);

/// The login environment, recomputed when the profile files changed since the last time;
/// `None` when it cannot be computed or cached.
pub async fn get() -> Option<Arc<LoginEnv>> {
    // Held across the computation: concurrent first commands run one login shell, not many.
    let mut cache = CACHE.lock().await;
    if let Some(cached) = cache.as_ref() {
        if cached.stamps == fingerprint(&homes(cached.env.as_deref())) {
            return cached.env.clone();
        }
    }
    // Stamped before the login shell runs: an edit made while it runs is seen next time.
    let agent_homes = homes(None);
    let mut stamps = fingerprint(&agent_homes);
    let env = compute().await;
    // A `$HOME` the profile scripts moved adds that home's `.profile`.
    stamps.extend(homes(env.as_ref()).iter().skip(agent_homes.len()).map(profile_stamp));
    let env = env.filter(|_| !defines_functions_or_aliases(&stamps)).map(Arc::new);
    *cache = Some(Cached { stamps, env: env.clone() });
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_drops_per_shell_variables_and_keeps_odd_values() {
        let env = parse(b"pyro-login-env umask=27\0PATH=/bin\0PWD=/x\0SHLVL=1\0_=/usr/bin/env\0OLDPWD=/\0EMPTY=\0EQ=a=b\0NL=a\nb\0\0=bad\0noequals\0").unwrap();
        let keys: Vec<_> = env.vars.iter().map(|(k, v)| format!("{}={}", k.to_string_lossy(), v.to_string_lossy())).collect();
        assert_eq!(keys, ["PATH=/bin", "EMPTY=", "EQ=a=b", "NL=a\nb"]);
        assert_eq!(env.umask, 0o027);
        assert_eq!(parse(b"welcome!\npyro-login-env umask=22\0PATH=/bin\0"), None, "the profile printed something");
    }

    #[test]
    fn functions_and_aliases_are_noticed_outside_comments() {
        let dir = std::env::temp_dir().join(format!("pyro-login-env-fn-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let check = |text: &str| {
            std::fs::write(dir.join(".profile"), text).unwrap();
            defines_functions_or_aliases(&[stamp(dir.join(".profile"))])
        };
        assert!(!check("# alias ll='ls -l'\n#f() { :; }\nexport PATH=\"$(id -u):$PATH\"\numask 022\n"));
        assert!(check("  alias ll='ls -l'\n"));
        assert!(check("greet() { echo hi; }\n"));
        assert!(check("greet () { echo hi; }\n"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn fingerprint_sees_a_changed_profile() {
        let dir = std::env::temp_dir().join(format!("pyro-login-env-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let home = vec![dir.clone().into_os_string()];
        let absent = fingerprint(&home);
        std::fs::write(dir.join(".profile"), "export A=1\n").unwrap();
        let created = fingerprint(&home);
        assert_ne!(absent, created);
        std::fs::write(dir.join(".profile"), "export A=12\n").unwrap();
        assert_ne!(created, fingerprint(&home));
        assert_eq!(fingerprint(&home), fingerprint(&home));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
