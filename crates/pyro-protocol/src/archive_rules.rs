//! Archive member rules, one pure implementation for both ends of the channel: the host
//! when it packs seeds and syncs or reads what the guest streams back, the agent when it
//! imports. Which member types, names and link targets are accepted, and the refusal
//! message for each of the others, is decided only here, so host and agent refuse the
//! same members by construction; callers only decode tar headers and touch their own
//! filesystems. No I/O and no tar crate: a member is its raw name, typeflag byte, link
//! name and size.
//!
//! The rules: a leading `./` is ignored and `.`/`./` is the root itself; absolute names,
//! names with NUL bytes and names whose `..` climbs out are refused; symlinks must have a
//! non-empty target and, wherever later members could be written through them (all
//! [`Rules`] but [`Rules::HOST_FROM_GUEST`]), one that resolves lexically from the link's
//! own directory inside the root with `..` only as leading components; hard links must
//! name a non-empty path inside the root; fifos, devices and other special members are
//! refused. [`MemberRules`] adds what a stream of members
//! implies, for a reader that cannot look at a filesystem: no member below an earlier
//! symlink or file, no file over an earlier directory, hard links only to an earlier
//! file or symlink member.

use std::collections::HashMap;
use std::fmt;

use crate::member_path::{dotdot_only_leading, normalize_relative, resolve_link_target, Escape};

/// What a tar typeflag byte denotes, as far as the rules are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberType {
    /// `0` or NUL: a regular file.
    Regular,
    /// `7` (contiguous) or `S` (GNU sparse): file data a tar reader can extract, which
    /// the agent never emits.
    OtherFile,
    /// `5`: a directory.
    Directory,
    /// `2`: a symbolic link.
    Symlink,
    /// `1`: a hard link.
    HardLink,
    /// `g`: archive-wide pax metadata, not a member.
    GlobalHeader,
    /// Anything else: fifos, devices, volume labels.
    Unsupported,
}

impl MemberType {
    /// The type a header's typeflag byte names.
    pub fn from_typeflag(flag: u8) -> Self {
        match flag {
            b'0' | b'\0' => MemberType::Regular,
            b'7' | b'S' => MemberType::OtherFile,
            b'5' => MemberType::Directory,
            b'2' => MemberType::Symlink,
            b'1' => MemberType::HardLink,
            b'g' => MemberType::GlobalHeader,
            _ => MemberType::Unsupported,
        }
    }
}

/// How symlink targets are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SymlinkPolicy {
    /// Targets must be relative, resolve inside the root and use `..` only as leading
    /// components: what may be written where later members could be written through it.
    Contained,
    /// Any non-empty target: the archive is only read (diff trees) or recreated where
    /// nothing is ever written through a link (host export).
    Any,
}

/// Whose words a [`Refusal`] uses. The host and the agent phrased their messages
/// differently before the rules were shared, and users and tests rely on both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wording {
    /// The host: the root is "the workspace", conflicts are with "earlier" members.
    Host,
    /// The agent's importer: the root is "the destination", conflicts are with
    /// "existing" entries on disk.
    Agent,
}

/// One set of member rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    symlinks: SymlinkPolicy,
    /// Only the member types the agent emits (regular files, directories, symlinks, hard
    /// links): the archive came from the guest.
    agent_types_only: bool,
    wording: Wording,
}

impl Rules {
    /// The host packing a seed or sync source for the guest's importer.
    pub const HOST_SOURCE: Rules = Rules { symlinks: SymlinkPolicy::Contained, agent_types_only: false, wording: Wording::Host };
    /// The host reading an archive the guest agent streamed (export, diff, snapshots):
    /// any symlink target (it is only compared, or recreated where nothing is written
    /// through it), and only the member types the agent emits.
    pub const HOST_FROM_GUEST: Rules = Rules { symlinks: SymlinkPolicy::Any, agent_types_only: true, wording: Wording::Host };
    /// The agent's `TarImport`.
    pub const AGENT_IMPORT: Rules = Rules { symlinks: SymlinkPolicy::Contained, agent_types_only: false, wording: Wording::Agent };

    /// A refusal of the member `name` in these rules' words, for what a caller finds on
    /// its own filesystem (say an existing symlink in the way).
    pub fn refusal(&self, name: &[u8], reason: Reason) -> Refusal {
        Refusal { name: lossy(name), reason, wording: self.wording }
    }

    /// Checks one member on its own (see the module docs).
    pub fn check<'a>(&self, member: &RawMember<'a>) -> Result<Verdict<'a>, Refusal> {
        match self.locate(member)? {
            Located::Skip => Ok(Verdict::Skip),
            Located::Root => Ok(Verdict::Root),
            Located::Below { components, is_dir } => {
                let shape = self.shape(member, &components, is_dir)?;
                Ok(Verdict::Member(Checked { components, shape }))
            }
        }
    }

    /// Member type filter and name rules.
    fn locate<'a>(&self, member: &RawMember<'a>) -> Result<Located<'a>, Refusal> {
        let kind = member.kind;
        if kind == MemberType::GlobalHeader && !self.agent_types_only {
            return Ok(Located::Skip);
        }
        let agent_type = matches!(kind, MemberType::Regular | MemberType::Directory | MemberType::Symlink | MemberType::HardLink);
        if self.agent_types_only && !agent_type {
            return Err(self.refusal(member.name, Reason::UnsupportedType));
        }
        let unsafe_path = || self.refusal(member.name, Reason::UnsafePath);
        if member.name.contains(&0) || member.link.is_some_and(|l| l.contains(&0)) {
            return Err(unsafe_path());
        }
        let components = normalize_relative(member.name).map_err(|_| unsafe_path())?;
        // Pre-POSIX archives mark directories with a trailing slash on a regular member.
        let is_dir = kind == MemberType::Directory || (kind == MemberType::Regular && member.name.ends_with(b"/") && member.size == 0);
        if components.is_empty() {
            return if is_dir { Ok(Located::Root) } else { Err(unsafe_path()) };
        }
        Ok(Located::Below { components, is_dir })
    }

    /// Member type and link target rules, for a member at `components`.
    fn shape<'a>(&self, member: &RawMember<'a>, components: &[&'a [u8]], is_dir: bool) -> Result<Shape<'a>, Refusal> {
        let refuse = |reason| Err(self.refusal(member.name, reason));
        let target = member.link.unwrap_or_default();
        match member.kind {
            _ if is_dir => Ok(Shape::Dir),
            MemberType::Regular | MemberType::OtherFile => Ok(Shape::File { size: member.size }),
            MemberType::Symlink => {
                if target.is_empty() {
                    return refuse(Reason::EmptySymlinkTarget);
                }
                if self.symlinks == SymlinkPolicy::Contained {
                    match resolve_link_target(&components[..components.len() - 1], target) {
                        Ok(_) => {}
                        Err(Escape::Absolute) => return refuse(Reason::AbsoluteSymlinkTarget { target: lossy(target) }),
                        Err(Escape::AboveRoot) => return refuse(Reason::SymlinkEscapes),
                    }
                    if !dotdot_only_leading(target) {
                        return refuse(Reason::SymlinkDotDot { target: lossy(target) });
                    }
                }
                Ok(Shape::Symlink { target })
            }
            MemberType::HardLink => match normalize_relative(target) {
                Ok(target) if !target.is_empty() => Ok(Shape::HardLink { target }),
                _ => refuse(Reason::HardLinkOutside { target: lossy(target) }),
            },
            _ => refuse(Reason::UnsupportedType),
        }
    }
}

enum Located<'a> {
    Skip,
    Root,
    Below { components: Vec<&'a [u8]>, is_dir: bool },
}

/// A member as its header declares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawMember<'a> {
    /// The raw name (after any pax or GNU long-name extension).
    pub name: &'a [u8],
    /// What its typeflag says it is.
    pub kind: MemberType,
    /// The raw link name, if the header has one.
    pub link: Option<&'a [u8]>,
    /// The size of its data in the archive.
    pub size: u64,
}

/// What [`Rules::check`] makes of a member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict<'a> {
    /// Not a member (a global pax header): skip it.
    Skip,
    /// The root directory itself (`./`, `a/..`): it exists already, nothing to create.
    Root,
    /// A member below the root.
    Member(Checked<'a>),
}

/// An accepted member below the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked<'a> {
    /// Its normal name components (none empty, `.` or `..`).
    pub components: Vec<&'a [u8]>,
    /// What to create there.
    pub shape: Shape<'a>,
}

/// What an accepted member is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shape<'a> {
    /// A directory.
    Dir,
    /// A regular file with `size` bytes of data.
    File {
        /// Its size in bytes.
        size: u64,
    },
    /// A symbolic link with this raw target.
    Symlink {
        /// The target, verbatim.
        target: &'a [u8],
    },
    /// A hard link to the member at these normal components (relative to the root).
    HardLink {
        /// The target's normal name components.
        target: Vec<&'a [u8]>,
    },
}

/// Why a member is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// A fifo, device or other member type that cannot be recreated (or that the agent
    /// never emits, for archives from the guest).
    UnsupportedType,
    /// An absolute name, one with NUL bytes, one whose `..` climbs out, or the root
    /// itself as a non-directory.
    UnsafePath,
    /// A symlink without a target.
    EmptySymlinkTarget,
    /// A symlink with an absolute target.
    AbsoluteSymlinkTarget {
        /// The target.
        target: String,
    },
    /// A symlink whose target climbs out of the root.
    SymlinkEscapes,
    /// A symlink target with `..` after a normal component.
    SymlinkDotDot {
        /// The target.
        target: String,
    },
    /// A hard link whose target is empty, absolute or outside the root.
    HardLinkOutside {
        /// The target.
        target: String,
    },
    /// A hard link whose target is not an earlier file or symlink member.
    HardLinkNotEarlier {
        /// The target.
        target: String,
    },
    /// A member below a symlink.
    TraversesSymlink,
    /// A member below a file.
    BelowFile {
        /// The file in the way.
        file: String,
    },
    /// A non-directory where there is a directory.
    OverDirectory,
    /// A directory where there is a file or symlink.
    DirectoryOverFile,
}

/// A refused member: its name, why, and the words for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    name: String,
    reason: Reason,
    wording: Wording,
}

impl Refusal {
    /// Why the member is refused.
    pub fn reason(&self) -> &Reason {
        &self.reason
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = &self.name;
        let host = self.wording == Wording::Host;
        match &self.reason {
            Reason::UnsupportedType => write!(f, "unsupported archive member type: {name}"),
            Reason::UnsafePath => write!(f, "unsafe archive member path: {name}"),
            Reason::EmptySymlinkTarget => write!(f, "symlink {name} has an empty target"),
            Reason::AbsoluteSymlinkTarget { .. } if host => {
                write!(f, "symlink {name} escapes the workspace")
            }
            Reason::AbsoluteSymlinkTarget { target } => {
                write!(f, "symlink {name} has an absolute target: {target}")
            }
            Reason::SymlinkEscapes if host => write!(f, "symlink {name} escapes the workspace"),
            Reason::SymlinkEscapes => write!(f, "symlink {name} escapes the destination"),
            Reason::SymlinkDotDot { target } => {
                write!(f, "symlink {name} has a target with `..` after a directory name: {target}")
            }
            Reason::HardLinkOutside { target } if !host => {
                write!(f, "hard link {name} points outside the destination: {target}")
            }
            Reason::HardLinkOutside { target } | Reason::HardLinkNotEarlier { target } => {
                write!(f, "hard link {name} must point at an earlier file member: {target}")
            }
            Reason::TraversesSymlink => {
                write!(f, "archive member would traverse through a symlink: {name}")
            }
            Reason::BelowFile { file } if host => write!(f, "archive member {name} conflicts with the earlier file {file}"),
            Reason::BelowFile { file } => write!(f, "archive member {name} conflicts with existing file {file}"),
            Reason::OverDirectory if host => write!(f, "archive member {name} conflicts with an earlier directory"),
            Reason::OverDirectory => write!(f, "archive member {name} conflicts with an existing directory"),
            Reason::DirectoryOverFile if host => write!(f, "directory {name} conflicts with an earlier file or symlink"),
            Reason::DirectoryOverFile => write!(f, "directory {name} conflicts with an existing file or symlink"),
        }
    }
}

impl std::error::Error for Refusal {}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// What kind of member a normalised name currently denotes in a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// A directory (a member, or implied by a member below it).
    Dir,
    /// A regular file, or a hard link to one.
    File,
    /// A symlink, or a hard link to one.
    Symlink,
}

/// A validated, normalised member of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Normal `/`-separated components, no leading `./`, no trailing slash.
    pub name: Vec<u8>,
    /// What it is.
    pub kind: MemberKind,
    /// Permission bits, as the caller decoded them.
    pub mode: u32,
    /// Modification time, Unix seconds.
    pub mtime: u64,
}

impl Member {
    /// The bytes of data a file member carries (0 for the others).
    pub fn file_size(&self) -> u64 {
        match self.kind {
            MemberKind::File { size } => size,
            _ => 0,
        }
    }
}

/// The type of a [`Member`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberKind {
    /// A directory.
    Dir,
    /// A regular file of `size` bytes (the member's data).
    File {
        /// Its size in bytes.
        size: u64,
    },
    /// A symbolic link with its raw target.
    Symlink {
        /// The target, verbatim.
        target: Vec<u8>,
    },
    /// A hard link to the earlier non-directory member `target` (normalised name).
    HardLink {
        /// The target's normalised name.
        target: Vec<u8>,
    },
}

/// [`Rules`] over a stream of members, remembering every name seen, for readers that
/// cannot consult a filesystem (the host packing, diffing or exporting archives).
#[derive(Debug, Clone)]
pub struct MemberRules {
    rules: Rules,
    /// Every normalised name seen so far (members and their implied parents).
    seen: HashMap<Vec<u8>, Seen>,
}

impl MemberRules {
    /// A stream checked with `rules`.
    pub fn new(rules: Rules) -> Self {
        Self { rules, seen: HashMap::new() }
    }

    /// The rules applied to each member.
    pub fn rules(&self) -> Rules {
        self.rules
    }

    /// Checks the next member of the stream; `Ok(None)` means "skip it" (`./`, global pax
    /// headers). `mode` and `mtime` are carried into the [`Member`].
    pub fn check(&mut self, raw: &RawMember<'_>, mode: u32, mtime: u64) -> Result<Option<Member>, Refusal> {
        let refuse = |reason| Err(self.rules.refusal(raw.name, reason));
        let (components, is_dir) = match self.rules.locate(raw)? {
            Located::Skip | Located::Root => return Ok(None),
            Located::Below { components, is_dir } => (components, is_dir),
        };
        let rel = components.join(&b'/');
        // Parents: never below a symlink or a file.
        let mut prefix: Vec<u8> = Vec::new();
        for component in &components[..components.len() - 1] {
            if !prefix.is_empty() {
                prefix.push(b'/');
            }
            prefix.extend_from_slice(component);
            match self.seen.get(&prefix) {
                Some(Seen::Symlink) => return refuse(Reason::TraversesSymlink),
                Some(Seen::File) => return refuse(Reason::BelowFile { file: lossy(&prefix) }),
                Some(Seen::Dir) => {}
                None => {
                    self.seen.insert(prefix.clone(), Seen::Dir);
                }
            }
        }
        let shape = self.rules.shape(raw, &components, is_dir)?;
        let existing = self.seen.get(&rel).copied();
        let over_dir = existing == Some(Seen::Dir);
        let (kind, seen) = match shape {
            Shape::Dir if existing.is_some_and(|s| s != Seen::Dir) => return refuse(Reason::DirectoryOverFile),
            Shape::Dir => (MemberKind::Dir, Seen::Dir),
            Shape::HardLink { target } => {
                let target_rel = target.join(&b'/');
                let target_seen = match self.seen.get(&target_rel) {
                    Some(s @ (Seen::File | Seen::Symlink)) => *s,
                    _ => return refuse(Reason::HardLinkNotEarlier { target: lossy(raw.link.unwrap_or_default()) }),
                };
                if over_dir {
                    return refuse(Reason::OverDirectory);
                }
                (MemberKind::HardLink { target: target_rel }, target_seen)
            }
            _ if over_dir => return refuse(Reason::OverDirectory),
            Shape::File { size } => (MemberKind::File { size }, Seen::File),
            Shape::Symlink { target } => (MemberKind::Symlink { target: target.to_vec() }, Seen::Symlink),
        };
        self.seen.insert(rel.clone(), seen);
        Ok(Some(Member { name: rel, kind, mode, mtime }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::model_resolve;
    use proptest::prelude::*;

    fn raw<'a>(name: &'a str, kind: MemberType, link: Option<&'a str>) -> RawMember<'a> {
        RawMember { name: name.as_bytes(), kind, link: link.map(str::as_bytes), size: 0 }
    }

    /// The message each side gives for a stream of members (the last one refused).
    fn refused(rules: Rules, members: &[RawMember<'_>]) -> String {
        let mut stream = MemberRules::new(rules);
        for m in members {
            if let Err(e) = stream.check(m, 0o644, 0) {
                return e.to_string();
            }
        }
        panic!("accepted {members:?}")
    }

    #[test]
    fn typeflags() {
        use MemberType::*;
        let got: Vec<_> = b"0\x0075S21g346xLKV".iter().map(|&b| MemberType::from_typeflag(b)).collect();
        assert_eq!(
            got,
            [
                Regular,
                Regular,
                OtherFile,
                Directory,
                OtherFile,
                Symlink,
                HardLink,
                GlobalHeader,
                Unsupported,
                Unsupported,
                Unsupported,
                Unsupported,
                Unsupported,
                Unsupported,
                Unsupported
            ]
        );
    }

    /// The messages are a user contract: pinned for both wordings.
    #[test]
    fn messages_in_both_wordings() {
        use MemberType::*;
        let both = |members: &[RawMember<'_>]| {
            let host = refused(Rules::HOST_SOURCE, members);
            let agent = match Rules::AGENT_IMPORT.check(members.last().unwrap()) {
                Err(e) => e.to_string(),
                Ok(v) => format!("accepted: {v:?}"),
            };
            (host, agent)
        };
        let same = |members: &[RawMember<'_>], message: &str| assert_eq!(both(members), (message.into(), message.into()));
        same(&[raw("../x", Regular, None)], "unsafe archive member path: ../x");
        same(&[raw("/etc/passwd", Regular, None)], "unsafe archive member path: /etc/passwd");
        same(&[raw(".", Regular, None)], "unsafe archive member path: .");
        same(&[raw("a/..", Symlink, Some("b"))], "unsafe archive member path: a/..");
        same(&[raw("n\0", Regular, None)], "unsafe archive member path: n\0");
        same(&[raw("p", Unsupported, None)], "unsupported archive member type: p");
        same(&[raw("l", Symlink, Some(""))], "symlink l has an empty target");
        same(&[raw("l", Symlink, Some("a/../b"))], "symlink l has a target with `..` after a directory name: a/../b");
        assert_eq!(both(&[raw("l", Symlink, Some("../x"))]), ("symlink l escapes the workspace".into(), "symlink l escapes the destination".into()));
        assert_eq!(both(&[raw("l", Symlink, Some("/x"))]), ("symlink l escapes the workspace".into(), "symlink l has an absolute target: /x".into()));
        assert_eq!(
            both(&[raw("h", HardLink, Some("../o"))]),
            ("hard link h must point at an earlier file member: ../o".into(), "hard link h points outside the destination: ../o".into())
        );
        let host = |members: &[RawMember<'_>]| refused(Rules::HOST_SOURCE, members);
        assert_eq!(host(&[raw("h", HardLink, Some("later")), raw("later", Regular, None)]), "hard link h must point at an earlier file member: later");
        assert_eq!(host(&[raw("d/", Directory, None), raw("h", HardLink, Some("d"))]), "hard link h must point at an earlier file member: d");
        assert_eq!(host(&[raw("l", Symlink, Some("sub")), raw("l/x", Regular, None)]), "archive member would traverse through a symlink: l/x");
        assert_eq!(host(&[raw("f", Regular, None), raw("f/x", Regular, None)]), "archive member f/x conflicts with the earlier file f");
        assert_eq!(host(&[raw("d/", Directory, None), raw("d", Regular, None)]), "archive member d conflicts with an earlier directory");
        assert_eq!(host(&[raw("f", Regular, None), raw("f/", Directory, None)]), "directory f/ conflicts with an earlier file or symlink");
        let agent = |reason| Rules::AGENT_IMPORT.refusal(b"m", reason).to_string();
        assert_eq!(agent(Reason::TraversesSymlink), "archive member would traverse through a symlink: m");
        assert_eq!(agent(Reason::BelowFile { file: "f".into() }), "archive member m conflicts with existing file f");
        assert_eq!(agent(Reason::OverDirectory), "archive member m conflicts with an existing directory");
        assert_eq!(agent(Reason::DirectoryOverFile), "directory m conflicts with an existing file or symlink");
        assert_eq!(refused(Rules::HOST_FROM_GUEST, &[raw("s", OtherFile, None)]), "unsupported archive member type: s");
        assert_eq!(refused(Rules::HOST_FROM_GUEST, &[raw("g", GlobalHeader, None)]), "unsupported archive member type: g");
    }

    #[test]
    fn verdicts() {
        use MemberType::*;
        let check = |m| Rules::AGENT_IMPORT.check(&m);
        assert_eq!(check(raw("./", Directory, None)), Ok(Verdict::Root));
        assert_eq!(check(raw("g", GlobalHeader, None)), Ok(Verdict::Skip));
        let member = |components: &[&'static str], shape| {
            let components = components.iter().map(|c| c.as_bytes()).collect();
            Ok(Verdict::Member(Checked { components, shape }))
        };
        assert_eq!(check(raw("./a/b/", Regular, None)), member(&["a", "b"], Shape::Dir));
        assert_eq!(check(raw("a", OtherFile, None)), member(&["a"], Shape::File { size: 0 }));
        assert_eq!(check(raw("s/l", Symlink, Some("../t"))), member(&["s", "l"], Shape::Symlink { target: b"../t" }));
        assert_eq!(check(raw("h", HardLink, Some("./d/f"))), member(&["h"], Shape::HardLink { target: vec![&b"d"[..], &b"f"[..]] }));
        let mut stream = MemberRules::new(Rules::HOST_FROM_GUEST);
        let any = stream.check(&raw("l", Symlink, Some("/etc/../..")), 0o777, 5).unwrap().unwrap();
        assert_eq!(any.kind, MemberKind::Symlink { target: b"/etc/../..".to_vec() });
        let hard = stream.check(&raw("h", HardLink, Some("l")), 0o644, 6).unwrap().unwrap();
        assert_eq!((hard.kind, hard.mode, hard.mtime), (MemberKind::HardLink { target: b"l".to_vec() }, 0o644, 6));
        assert_eq!(stream.check(&raw("./", Directory, None), 0, 0), Ok(None));
    }

    fn name() -> impl Strategy<Value = String> {
        let segment = prop_oneof![Just("a"), Just("b"), Just(".."), Just("."), Just(""), Just("c d")];
        (prop_oneof![Just(""), Just("/"), Just("./")], proptest::collection::vec(segment, 1..=5))
            .prop_map(|(prefix, segments)| format!("{prefix}{}", segments.join("/")))
    }

    fn member_type() -> impl Strategy<Value = MemberType> {
        use MemberType::*;
        prop_oneof![
            4 => Just(Regular),
            2 => Just(Directory),
            2 => Just(Symlink),
            2 => Just(HardLink),
            1 => Just(OtherFile),
            1 => Just(GlobalHeader),
            1 => Just(Unsupported),
        ]
    }

    fn raw_member() -> impl Strategy<Value = (MemberType, String, String, u64)> {
        (member_type(), name(), name(), 0u64..2)
    }

    fn as_raw((kind, name, link, size): &(MemberType, String, String, u64)) -> RawMember<'_> {
        RawMember { name: name.as_bytes(), kind: *kind, link: Some(link.as_bytes()), size: *size }
    }

    proptest! {
        // No regression files: a failing case is reported in the test output instead.
        #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

        /// A file member is accepted exactly when its name resolves (by `std::path`)
        /// inside the root to something other than the root, with those components.
        #[test]
        fn file_names_follow_lexical_resolution(name in name()) {
            let raw = RawMember { name: name.as_bytes(), kind: MemberType::Regular, link: None, size: 1 };
            let model = model_resolve(&[], &name).filter(|c| !c.is_empty());
            match (Rules::AGENT_IMPORT.check(&raw), model) {
                (Ok(Verdict::Member(checked)), Some(model)) => {
                    let got: Vec<String> = checked.components.iter().map(|c| lossy(c)).collect();
                    prop_assert_eq!(got, model);
                    prop_assert_eq!(checked.shape, Shape::File { size: 1 });
                }
                (Err(e), None) => prop_assert_eq!(e.reason(), &Reason::UnsafePath),
                (got, model) => prop_assert!(false, "{:?}: got {:?}, model {:?}", name, got, model),
            }
        }

        /// Whatever the host lets through when packing for the guest, the agent's importer
        /// accepts too, at the same place and as the same kind: host and agent cannot
        /// disagree about a member the host sends.
        #[test]
        fn the_agent_accepts_what_the_host_packs(members in proptest::collection::vec(raw_member(), 1..8)) {
            let mut host = MemberRules::new(Rules::HOST_SOURCE);
            for m in &members {
                let raw = as_raw(m);
                let Ok(packed) = host.check(&raw, 0o644, 0) else { break };
                let agent = Rules::AGENT_IMPORT.check(&raw);
                match (packed, agent) {
                    (None, Ok(Verdict::Skip | Verdict::Root)) => {}
                    (Some(member), Ok(Verdict::Member(checked))) => {
                        prop_assert_eq!(&member.name, &checked.components.join(&b'/'));
                        let same_kind = matches!(
                            (&member.kind, &checked.shape),
                            (MemberKind::Dir, Shape::Dir)
                                | (MemberKind::File { .. }, Shape::File { .. })
                                | (MemberKind::Symlink { .. }, Shape::Symlink { .. })
                                | (MemberKind::HardLink { .. }, Shape::HardLink { .. })
                        );
                        prop_assert!(same_kind, "{:?} vs {:?}", member, checked);
                    }
                    (packed, agent) => prop_assert!(false, "{:?}: host {:?}, agent {:?}", raw, packed, agent),
                }
            }
        }

        /// Both sides refuse the same single members for the same reason (only the host,
        /// which cannot see the guest's disk, also refuses a hard link to a file that is not
        /// an earlier member); only the words may differ, and every message names the member.
        #[test]
        fn same_refusals_on_both_sides(m in raw_member()) {
            let raw = as_raw(&m);
            let host = MemberRules::new(Rules::HOST_SOURCE).check(&raw, 0o644, 0);
            let agent = Rules::AGENT_IMPORT.check(&raw);
            match (host, agent) {
                (Ok(_), Ok(_)) => {}
                (Err(h), Err(a)) => {
                    prop_assert_eq!(h.reason(), a.reason());
                    prop_assert!(h.to_string().contains(&m.1) && a.to_string().contains(&m.1), "{} / {}", h, a);
                }
                (Err(h), Ok(_)) if matches!(h.reason(), Reason::HardLinkNotEarlier { .. }) => {}
                (h, a) => prop_assert!(false, "{:?}: host {:?}, agent {:?}", raw, h, a),
            }
        }

        /// Reading the guest's archives, any non-empty symlink target is kept verbatim.
        #[test]
        fn guest_archives_keep_any_symlink_target(target in name().prop_filter("non-empty", |t| !t.is_empty())) {
            let raw = RawMember { name: b"d/l", kind: MemberType::Symlink, link: Some(target.as_bytes()), size: 0 };
            let member = MemberRules::new(Rules::HOST_FROM_GUEST).check(&raw, 0o777, 0).unwrap().unwrap();
            prop_assert_eq!(member.kind, MemberKind::Symlink { target: target.into_bytes() });
        }
    }
}
