//! Lexical handling of absolute paths, never consulting the filesystem: file writes and
//! imports resolve `..` before their symlinked-parent checks, and the importer joins
//! checked member names to its destination. (Member names and link targets themselves
//! are `pyro_protocol::member_path`'s, through the shared archive rules.)

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Lexically normalises an absolute path (`..` at `/` stays at `/`).
pub fn normalize_absolute(path: &Path) -> PathBuf {
    let mut stack: Vec<&[u8]> = Vec::new();
    for component in path.as_os_str().as_bytes().split(|&b| b == b'/') {
        match component {
            b"" | b"." => {}
            b".." => {
                stack.pop();
            }
            normal => stack.push(normal),
        }
    }
    join_components(Path::new("/"), &stack)
}

/// `root` joined with normal components.
pub fn join_components(root: &Path, components: &[&[u8]]) -> PathBuf {
    let mut out = root.to_path_buf();
    for c in components {
        out.push(OsStr::from_bytes(c));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use pyro_protocol::member_path::{dotdot_only_leading, normalize_relative, resolve_link_target, Escape};

    /// Reference model: a real-looking absolute walk that starts at `/r1/r2/dest` and lets
    /// `..` climb towards `/` (where it sticks, like the kernel).
    fn model_escapes(name: &[u8]) -> (bool, Vec<Vec<u8>>) {
        let mut stack: Vec<Vec<u8>> = vec![b"r1".to_vec(), b"r2".to_vec(), b"dest".to_vec()];
        let mut escaped = false;
        for c in name.split(|&b| b == b'/') {
            match c {
                b"" | b"." => {}
                b".." => {
                    stack.pop();
                }
                n => stack.push(n.to_vec()),
            }
            if stack.len() < 3 || stack[..3] != [b"r1".to_vec(), b"r2".to_vec(), b"dest".to_vec()] {
                escaped = true;
            }
        }
        (escaped, stack.split_off(3.min(stack.len())))
    }

    fn name_strategy() -> impl Strategy<Value = Vec<u8>> {
        let component = prop_oneof![
            Just(b"a".to_vec()),
            Just(b"b".to_vec()),
            Just(b"dest".to_vec()),
            Just(b"..".to_vec()),
            Just(b".".to_vec()),
            Just(b"".to_vec()),
            Just(b"...".to_vec()),
            Just(b"..a".to_vec()),
        ];
        (proptest::bool::weighted(0.1), proptest::collection::vec(component, 0..8)).prop_map(|(abs, parts)| {
            let mut name = if abs { b"/".to_vec() } else { Vec::new() };
            name.extend(parts.join(&b'/'));
            name
        })
    }

    proptest! {
        #[test]
        fn normalisation_matches_a_real_walk(name in name_strategy()) {
            let result = normalize_relative(&name);
            if name.first() == Some(&b'/') {
                prop_assert_eq!(result, Err(Escape::Absolute));
            } else {
                let (escaped, model) = model_escapes(&name);
                match result {
                    Err(e) => {
                        prop_assert_eq!(e, Escape::AboveRoot);
                        prop_assert!(escaped, "rejected a contained name {:?}", String::from_utf8_lossy(&name));
                    }
                    Ok(components) => {
                        prop_assert!(!escaped, "accepted an escaping name {:?}", String::from_utf8_lossy(&name));
                        let got: Vec<Vec<u8>> = components.iter().map(|c| c.to_vec()).collect();
                        prop_assert_eq!(got, model);
                    }
                }
            }
        }

        #[test]
        fn normalised_components_are_normal_and_idempotent(name in name_strategy()) {
            if let Ok(components) = normalize_relative(&name) {
                for c in &components {
                    prop_assert!(!c.is_empty() && *c != b"." && *c != b".." && !c.contains(&b'/'));
                }
                let joined = components.join(&b'/');
                prop_assert_eq!(normalize_relative(&joined).unwrap(), components);
            }
        }

        #[test]
        fn link_targets_resolve_like_the_joined_name(
            parent in proptest::collection::vec(prop_oneof![Just(&b"x"[..]), Just(&b"y"[..])], 0..4),
            target in name_strategy(),
        ) {
            let resolved = resolve_link_target(&parent, &target);
            let mut joined = parent.join(&b'/');
            if !joined.is_empty() { joined.push(b'/'); }
            joined.extend_from_slice(&target);
            if target.first() == Some(&b'/') {
                prop_assert_eq!(resolved, Err(Escape::Absolute));
            } else {
                prop_assert_eq!(resolved, normalize_relative(&joined));
            }
        }

        #[test]
        fn absolute_normalisation_has_no_dot_components(name in name_strategy()) {
            let mut abs = b"/".to_vec();
            abs.extend(&name);
            let n = normalize_absolute(Path::new(OsStr::from_bytes(&abs)));
            let bytes = n.as_os_str().as_bytes();
            prop_assert!(bytes.starts_with(b"/"));
            for c in bytes[1..].split(|&b| b == b'/') {
                prop_assert!(c != b"." && c != b"..");
                prop_assert!(!c.is_empty() || bytes == b"/");
            }
        }
    }

    #[test]
    fn examples() {
        assert_eq!(normalize_relative(b"./").unwrap(), Vec::<&[u8]>::new());
        assert_eq!(normalize_relative(b"./a/./b/").unwrap(), vec![&b"a"[..], &b"b"[..]]);
        assert_eq!(normalize_relative(b"../x"), Err(Escape::AboveRoot));
        assert_eq!(normalize_relative(b"a/../../x"), Err(Escape::AboveRoot));
        assert_eq!(normalize_relative(b"/etc"), Err(Escape::Absolute));
        assert_eq!(resolve_link_target(&[b"sub"], b"../lib/x").unwrap(), vec![&b"lib"[..], &b"x"[..]]);
        assert_eq!(resolve_link_target(&[], b"../../etc"), Err(Escape::AboveRoot));
        assert!(dotdot_only_leading(b"../../a/b"));
        assert!(dotdot_only_leading(b"./../a"));
        assert!(!dotdot_only_leading(b"a/../b"));
        assert_eq!(normalize_absolute(Path::new("/a/../../b/./c")), PathBuf::from("/b/c"));
    }
}
