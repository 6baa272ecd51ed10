//! Host-side normalisation of guest paths.
//!
//! Every path a caller names inside a workspace (file list/read/write, patch labels,
//! export, sync destinations, shell/service working directories, readiness files) goes
//! through [`normalize_workspace_path`] or [`normalize_destination`] before it reaches the
//! guest: the result is an absolute, lexically normalised path that is `/workspace` itself
//! or lies below `/workspace/`. Unlike the original implementation, `..` segments are
//! resolved lexically instead of being rejected outright, so `a/../b` is accepted as
//! `/workspace/b` while anything that resolves outside `/workspace` is still refused.
//!
//! The offline disk tools read the stopped workspace's whole root filesystem, so
//! [`normalize_disk_path`] lets absolute paths name anything in it.

use crate::error::Error;

/// The directory every workspace path is confined to.
pub const WORKSPACE_ROOT: &str = "/workspace";

/// Normalises a path for file operations inside `/workspace`.
///
/// Whitespace around the input is trimmed; relative paths are taken relative to
/// `/workspace`; `.` and empty segments are dropped; `..` is resolved lexically (and
/// stops at `/`). The result must be `/workspace` or lie below `/workspace/`.
///
/// # Errors
/// [`Error::InvalidArgument`] with `workspace path must not be empty`,
/// `workspace path must not contain NUL bytes` or
/// `workspace path must stay inside /workspace`.
pub fn normalize_workspace_path(input: &str) -> Result<String, Error> {
    confined(input, "workspace path")
}

/// Normalises a destination path (sync `--dest`, export sources, `cwd`s, readiness files).
///
/// Same rules as [`normalize_workspace_path`], with messages naming a
/// `workspace destination`.
///
/// # Errors
/// [`Error::InvalidArgument`] with `workspace destination must not be empty`,
/// `workspace destination must not contain NUL bytes` or
/// `workspace destination must stay inside /workspace`.
pub fn normalize_destination(input: &str) -> Result<String, Error> {
    confined(input, "workspace destination")
}

/// Normalises a path for the offline disk tools (list/read on a stopped workspace's rootfs).
///
/// Relative paths are taken relative to `/workspace`; absolute paths may name anything in
/// the root filesystem. `.` and empty segments are dropped and `..` is collapsed lexically,
/// clamped at `/` (`/workspace/../etc/shadow` → `/etc/shadow`, `/..` → `/`).
///
/// # Errors
/// [`Error::InvalidArgument`] with `disk path must not be empty` or
/// `disk path must not contain NUL bytes`.
pub fn normalize_disk_path(input: &str) -> Result<String, Error> {
    let trimmed = checked_trim(input, "disk path")?;
    Ok(normalize_trimmed(trimmed))
}

/// Returns `abs` relative to `/workspace` (`/workspace/a/b` → `a/b`, `/workspace` → ``),
/// or `None` when `abs` is not `/workspace` or below `/workspace/`.
///
/// Expects an already normalised path; it does no normalisation itself.
pub fn relative_to_workspace(abs: &str) -> Option<&str> {
    let rest = abs.strip_prefix(WORKSPACE_ROOT)?;
    if rest.is_empty() {
        Some("")
    } else {
        rest.strip_prefix('/')
    }
}

/// Applies the `/workspace` confinement rules, naming the value `what` in messages.
fn confined(input: &str, what: &str) -> Result<String, Error> {
    let trimmed = checked_trim(input, what)?;
    let normalized = normalize_trimmed(trimmed);
    if relative_to_workspace(&normalized).is_some() {
        Ok(normalized)
    } else {
        Err(Error::InvalidArgument(format!("{what} must stay inside {WORKSPACE_ROOT}")))
    }
}

/// Trims `input` and rejects empty values and NUL bytes.
fn checked_trim<'a>(input: &'a str, what: &str) -> Result<&'a str, Error> {
    let trimmed = input.trim();
    if trimmed.is_empty() {
        return Err(Error::InvalidArgument(format!("{what} must not be empty")));
    }
    if trimmed.contains('\0') {
        return Err(Error::InvalidArgument(format!("{what} must not contain NUL bytes")));
    }
    Ok(trimmed)
}

/// Normalises a trimmed path; whitespace that normalisation leaves at the end (`a /` →
/// `/workspace/a `) is trimmed too, so normalising a result again changes nothing.
fn normalize_trimmed(trimmed: &str) -> String {
    let mut normalized = lexical_absolute(trimmed);
    loop {
        let end = normalized.trim_end();
        if end.len() == normalized.len() {
            return normalized;
        }
        normalized = lexical_absolute(end);
    }
}

/// Makes `path` absolute (relative paths start at `/workspace`) and resolves `.`, `..` and
/// repeated separators lexically; `..` at the root stays at the root.
fn lexical_absolute(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    let relative = !path.starts_with('/');
    let base = if relative { WORKSPACE_ROOT } else { "" };
    for segment in base.split('/').chain(path.split('/')) {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            other => segments.push(other),
        }
    }
    if segments.is_empty() {
        return "/".to_owned();
    }
    let mut out = String::with_capacity(path.len() + WORKSPACE_ROOT.len() + 1);
    for segment in segments {
        out.push('/');
        out.push_str(segment);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ok(input: &str) -> String {
        normalize_workspace_path(input).unwrap()
    }

    fn err(input: &str) -> String {
        normalize_workspace_path(input).unwrap_err().to_string()
    }

    #[test]
    fn workspace_paths_are_normalised() {
        assert_eq!(ok("a"), "/workspace/a");
        assert_eq!(ok("./a"), "/workspace/a");
        assert_eq!(ok("."), "/workspace");
        assert_eq!(ok("workspace"), "/workspace/workspace");
        assert_eq!(ok("/workspace/./x//y"), "/workspace/x/y");
        assert_eq!(ok("  /workspace/x/  "), "/workspace/x");
        assert_eq!(ok("/workspace"), "/workspace");
        assert_eq!(ok("/workspace/"), "/workspace");
        assert_eq!(ok("a/../b"), "/workspace/b");
        assert_eq!(ok("a/b/.."), "/workspace/a");
        assert_eq!(ok("a/.."), "/workspace");
        assert_eq!(ok("/workspace/a/../../workspace/c"), "/workspace/c");
        assert_eq!(ok("/../workspace/a"), "/workspace/a");
        assert_eq!(ok("..."), "/workspace/...");
        assert_eq!(ok("a b/ c"), "/workspace/a b/ c");
        assert_eq!(ok("a /"), "/workspace/a");
        assert_eq!(ok("a / /"), "/workspace/a");
        assert_eq!(ok("a..b"), "/workspace/a..b");
    }

    #[test]
    fn workspace_paths_must_stay_inside() {
        let outside = "workspace path must stay inside /workspace";
        for input in ["/workspacex", "/workspacex/a", "/etc/passwd", "/", "../x", "..", "/workspace/../etc", "a/../../b"] {
            assert_eq!(err(input), outside, "{input}");
        }
        assert_eq!(err(""), "workspace path must not be empty");
        assert_eq!(err(" \t\n"), "workspace path must not be empty");
        assert_eq!(err("a\0b"), "workspace path must not contain NUL bytes");
    }

    #[test]
    fn destinations_use_their_own_messages() {
        assert_eq!(normalize_destination("src").unwrap(), "/workspace/src");
        assert_eq!(normalize_destination(" ").unwrap_err().to_string(), "workspace destination must not be empty");
        assert_eq!(normalize_destination("/tmp").unwrap_err().to_string(), "workspace destination must stay inside /workspace");
        assert_eq!(normalize_destination("\0").unwrap_err().to_string(), "workspace destination must not contain NUL bytes");
    }

    #[test]
    fn disk_paths_may_leave_the_workspace() {
        let disk = |s: &str| normalize_disk_path(s).unwrap();
        assert_eq!(disk("a"), "/workspace/a");
        assert_eq!(disk("."), "/workspace");
        assert_eq!(disk(".."), "/");
        assert_eq!(disk("../etc"), "/etc");
        assert_eq!(disk("/workspace/../etc/shadow"), "/etc/shadow");
        assert_eq!(disk("/.."), "/");
        assert_eq!(disk("/"), "/");
        assert_eq!(disk("//etc//./hosts/"), "/etc/hosts");
        assert_eq!(normalize_disk_path("  ").unwrap_err().to_string(), "disk path must not be empty");
        assert_eq!(normalize_disk_path("/a\0").unwrap_err().to_string(), "disk path must not contain NUL bytes");
    }

    #[test]
    fn relative_to_workspace_strips_the_root() {
        assert_eq!(relative_to_workspace("/workspace"), Some(""));
        assert_eq!(relative_to_workspace("/workspace/a/b"), Some("a/b"));
        assert_eq!(relative_to_workspace("/workspacex"), None);
        assert_eq!(relative_to_workspace("/etc"), None);
        assert_eq!(relative_to_workspace("/"), None);
    }

    fn assert_well_formed(path: &str) {
        assert!(path.starts_with('/'), "{path:?}");
        assert!(!path.contains("//"), "{path:?}");
        assert!(path == "/" || !path.ends_with('/'), "{path:?}");
        assert!(path.split('/').all(|s| s != ".." && s != "."), "{path:?}");
    }

    /// Paths built from segments that exercise the interesting cases.
    fn path_strategy() -> impl Strategy<Value = String> {
        let segment = prop_oneof![
            Just(String::new()),
            Just(".".to_owned()),
            Just("..".to_owned()),
            Just("workspace".to_owned()),
            Just("workspacex".to_owned()),
            Just("...".to_owned()),
            "[a-z .]{1,4}",
        ];
        (any::<bool>(), proptest::collection::vec(segment, 0..8)).prop_map(|(absolute, segs)| {
            let joined = segs.join("/");
            if absolute {
                format!("/{joined}")
            } else {
                joined
            }
        })
    }

    proptest! {
        #[test]
        fn workspace_results_are_confined_and_idempotent(input in path_strategy()) {
            if let Ok(path) = normalize_workspace_path(&input) {
                assert_well_formed(&path);
                prop_assert!(path == "/workspace" || path.starts_with("/workspace/"));
                prop_assert_eq!(normalize_workspace_path(&path).unwrap(), path.clone());
                prop_assert_eq!(normalize_destination(&path).unwrap(), path.clone());
                prop_assert_eq!(normalize_disk_path(&path).unwrap(), path);
            }
        }

        #[test]
        fn disk_results_are_well_formed_and_idempotent(input in path_strategy()) {
            if let Ok(path) = normalize_disk_path(&input) {
                assert_well_formed(&path);
                prop_assert!(!path.split('/').any(|s| s == ".."));
                prop_assert_eq!(normalize_disk_path(&path).unwrap(), path);
            }
        }

        #[test]
        fn workspace_rule_agrees_with_disk_rule(input in path_strategy()) {
            // The confined rules accept exactly the disk results that lie inside /workspace.
            match (normalize_workspace_path(&input), normalize_disk_path(&input)) {
                (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
                (Err(_), Ok(b)) => prop_assert!(relative_to_workspace(&b).is_none()),
                (Ok(_), Err(_)) => prop_assert!(false, "disk rule rejected a workspace path"),
                (Err(_), Err(_)) => {}
            }
        }

        #[test]
        fn arbitrary_strings_never_panic(input in any::<String>()) {
            let _ = normalize_workspace_path(&input);
            let _ = normalize_destination(&input);
            if let Ok(path) = normalize_disk_path(&input) {
                assert_well_formed(&path);
                prop_assert_eq!(normalize_disk_path(&path).unwrap(), path);
            }
            if let Ok(path) = normalize_workspace_path(&input) {
                prop_assert!(relative_to_workspace(&path).is_some());
                prop_assert_eq!(normalize_workspace_path(&path).unwrap(), path);
            }
        }
    }
}
