//! Archive member-path rules both ends of the channel enforce: the host when it prepares
//! or extracts archives, the agent when it imports them. Purely lexical (never consults a
//! filesystem), so host and guest can never disagree about what a name means.

/// Why a relative name could not be normalised inside its root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escape {
    /// The name is absolute.
    Absolute,
    /// A `..` climbs above the root at some point.
    AboveRoot,
}

/// Normalises a `/`-separated relative name below a root: empty and `.` components are
/// dropped, `..` removes the previous component. Returns the remaining normal components
/// (empty means the root itself). Fails for absolute names and for names whose `..`
/// would ever climb above the root, even if later components come back down.
pub fn normalize_relative(name: &[u8]) -> Result<Vec<&[u8]>, Escape> {
    if name.first() == Some(&b'/') {
        return Err(Escape::Absolute);
    }
    resolve_from(Vec::new(), name)
}

/// Resolves the relative `target` of a symlink located in directory `parent` (normal
/// components relative to the root). Same rules as [`normalize_relative`].
pub fn resolve_link_target<'a>(parent: &[&'a [u8]], target: &'a [u8]) -> Result<Vec<&'a [u8]>, Escape> {
    if target.first() == Some(&b'/') {
        return Err(Escape::Absolute);
    }
    resolve_from(parent.to_vec(), target)
}

fn resolve_from<'a>(mut stack: Vec<&'a [u8]>, name: &'a [u8]) -> Result<Vec<&'a [u8]>, Escape> {
    for component in name.split(|&b| b == b'/') {
        match component {
            b"" | b"." => {}
            b".." => {
                if stack.pop().is_none() {
                    return Err(Escape::AboveRoot);
                }
            }
            normal => stack.push(normal),
        }
    }
    Ok(stack)
}

/// True when a symlink target uses `..` only as leading components (`../../a/b`, `a/b`),
/// never after a normal component (`a/../b`). Together with [`resolve_link_target`]
/// staying inside the root, this makes the link safe even when some of its components are
/// themselves symlinks created by the same archive: every `..` is applied to the real
/// directory holding the link, never to a place reached through another link.
pub fn dotdot_only_leading(target: &[u8]) -> bool {
    let mut seen_normal = false;
    for component in target.split(|&b| b == b'/') {
        match component {
            b"" | b"." => {}
            b".." if seen_normal => return false,
            b".." => {}
            _ => seen_normal = true,
        }
    }
    true
}
