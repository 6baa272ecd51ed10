//! Member rules shared with the agent's importer: names, parents, symlinks, hard links
//! and member types.

use std::collections::HashMap;
use std::io::Read;

use pyro_protocol::member_path::{dotdot_only_leading, normalize_relative, resolve_link_target};
use tar::EntryType;

use super::{invalid, lossy};
use crate::error::Result;

/// How symlink targets are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SymlinkPolicy {
    /// Targets must be relative, non-empty, resolve inside the root and use `..` only as
    /// leading components — what the guest importer accepts.
    Contained,
    /// Any non-empty target: the archive is only read (diff trees) or recreated where
    /// nothing is ever written through a link (host export).
    Any,
}

/// What kind of member a normalised name currently denotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Seen {
    Dir,
    File,
    Symlink,
}

/// A validated, normalised archive member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Member {
    /// Normal `/`-separated components, no leading `./`, no trailing slash.
    pub(crate) name: Vec<u8>,
    /// What it is.
    pub(crate) kind: MemberKind,
    /// Permission bits (`& 0o7777`).
    pub(crate) mode: u32,
    /// Modification time, Unix seconds.
    pub(crate) mtime: u64,
}

impl Member {
    pub(super) fn file_size(&self) -> u64 {
        match self.kind {
            MemberKind::File { size } => size,
            _ => 0,
        }
    }
}

/// The type of a [`Member`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MemberKind {
    /// A directory.
    Dir,
    /// A regular file of `size` bytes (the member's data).
    File { size: u64 },
    /// A symbolic link with its raw target.
    Symlink { target: Vec<u8> },
    /// A hard link to the earlier non-directory member `target` (normalised name).
    HardLink { target: Vec<u8> },
}

/// Validates a stream of archive members against the rules shared with the agent.
#[derive(Debug)]
pub(crate) struct MemberRules {
    policy: SymlinkPolicy,
    /// Only the member types the guest agent emits (no sparse or contiguous files, no
    /// global pax headers): the archive came from the guest.
    guest: bool,
    /// Every normalised name seen so far (members and their implied parents).
    seen: HashMap<Vec<u8>, Seen>,
}

impl MemberRules {
    pub(crate) fn new(policy: SymlinkPolicy) -> Self {
        Self { policy, guest: false, seen: HashMap::new() }
    }

    /// Rules for an archive streamed by the guest agent (export, diff, snapshots): any
    /// symlink target (it is only compared, or recreated where nothing is written through
    /// it), and only the member types the agent emits.
    pub(crate) fn guest() -> Self {
        Self { policy: SymlinkPolicy::Any, guest: true, seen: HashMap::new() }
    }

    /// Checks one entry of a `tar::Archive`; `Ok(None)` means "skip it" (`./`, global pax
    /// headers).
    pub(crate) fn check_entry<R: Read>(&mut self, entry: &tar::Entry<'_, R>) -> Result<Option<Member>> {
        let header = entry.header();
        let kind = header.entry_type();
        if kind.is_pax_global_extensions() && !self.guest {
            return Ok(None);
        }
        let name = entry.path_bytes();
        let link = entry.link_name_bytes();
        // An unparsable mode (some writers leave the field blank) gets the usual default.
        let mode = header.mode().unwrap_or(if kind.is_dir() { 0o755 } else { 0o644 });
        let mtime = header.mtime().unwrap_or(0);
        self.check(&name, kind, link.as_deref(), mode & 0o7777, mtime, entry.size())
    }

    /// Checks one member given its raw parts.
    pub(crate) fn check(
        &mut self,
        raw: &[u8],
        kind: EntryType,
        link: Option<&[u8]>,
        mode: u32,
        mtime: u64,
        size: u64,
    ) -> Result<Option<Member>> {
        let name = lossy(raw);
        if self.guest && !matches!(kind, EntryType::Regular | EntryType::Directory | EntryType::Symlink | EntryType::Link) {
            return Err(invalid(format!("unsupported archive member type: {name}")));
        }
        let unsafe_path = || invalid(format!("unsafe archive member path: {name}"));
        if raw.contains(&0) || link.is_some_and(|l| l.contains(&0)) {
            return Err(unsafe_path());
        }
        let components = normalize_relative(raw).map_err(|_| unsafe_path())?;
        // Pre-POSIX archives mark directories with a trailing slash on a regular member.
        let is_dir = kind.is_dir() || (matches!(kind, EntryType::Regular) && raw.ends_with(b"/") && size == 0);
        if components.is_empty() {
            return if is_dir { Ok(None) } else { Err(unsafe_path()) };
        }
        let rel = components.join(&b'/');
        // Parents: never below a symlink or a file.
        let mut prefix: Vec<u8> = Vec::new();
        for component in &components[..components.len() - 1] {
            if !prefix.is_empty() {
                prefix.push(b'/');
            }
            prefix.extend_from_slice(component);
            match self.seen.get(&prefix) {
                Some(Seen::Symlink) => {
                    return Err(invalid(format!("archive member would traverse through a symlink: {name}")))
                }
                Some(Seen::File) => {
                    return Err(invalid(format!(
                        "archive member {name} conflicts with the earlier file {}",
                        lossy(&prefix)
                    )))
                }
                Some(Seen::Dir) => {}
                None => {
                    self.seen.insert(prefix.clone(), Seen::Dir);
                }
            }
        }
        let existing = self.seen.get(&rel).copied();
        let not_over_dir = || {
            if existing == Some(Seen::Dir) {
                Err(invalid(format!("archive member {name} conflicts with an earlier directory")))
            } else {
                Ok(())
            }
        };
        let (member_kind, seen) = match kind {
            _ if is_dir => {
                if existing.is_some_and(|s| s != Seen::Dir) {
                    return Err(invalid(format!("directory {name} conflicts with an earlier file or symlink")));
                }
                (MemberKind::Dir, Seen::Dir)
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                not_over_dir()?;
                (MemberKind::File { size }, Seen::File)
            }
            EntryType::Symlink => {
                let target = link.unwrap_or_default();
                if target.is_empty() {
                    return Err(invalid(format!("symlink {name} has an empty target")));
                }
                if self.policy == SymlinkPolicy::Contained {
                    if resolve_link_target(&components[..components.len() - 1], target).is_err() {
                        return Err(invalid(format!("symlink {name} escapes the workspace")));
                    }
                    if !dotdot_only_leading(target) {
                        return Err(invalid(format!(
                            "symlink {name} has a target with `..` after a directory name: {}",
                            lossy(target)
                        )));
                    }
                }
                not_over_dir()?;
                (MemberKind::Symlink { target: target.to_vec() }, Seen::Symlink)
            }
            EntryType::Link => {
                let target = link.unwrap_or_default();
                let bad = || invalid(format!("hard link {name} must point at an earlier file member: {}", lossy(target)));
                let target_components = normalize_relative(target).map_err(|_| bad())?;
                let target_rel = target_components.join(&b'/');
                let target_seen = match self.seen.get(&target_rel) {
                    Some(s @ (Seen::File | Seen::Symlink)) if !target_rel.is_empty() => *s,
                    _ => return Err(bad()),
                };
                not_over_dir()?;
                (MemberKind::HardLink { target: target_rel }, target_seen)
            }
            _ => return Err(invalid(format!("unsupported archive member type: {name}"))),
        };
        self.seen.insert(rel.clone(), seen);
        Ok(Some(Member { name: rel, kind: member_kind, mode, mtime }))
    }
}
