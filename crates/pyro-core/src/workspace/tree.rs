//! Snapshot trees read from workspace archives, and the diff between two of them for
//! `workspace diff`.
//!
//! A [`Tree`] maps relative paths to files, symlinks (target) and directories. A file is
//! either held with its bytes ([`Node::File`]) or known by size and SHA-256 only
//! ([`Node::Hashed`]): reading never holds a whole workspace in memory. [`diff`] compares
//! a baseline with the current tree: every file, symlink and *leaf* (empty) directory is
//! an entry; non-empty directories are not. Text changes come with git-style patches
//! (`diff --git`, mode headers, 3 lines of context, `\ No newline at end of file`
//! markers) that `git apply` and `workspace patch apply` accept and that reproduce the
//! current files exactly. [`diff_archives`] diffs two archives on disk, fetching the
//! bytes of changed text files (at most [`MAX_PATCH_FILE_BYTES`] each,
//! [`MAX_PATCH_TOTAL_BYTES`] in all) in a second pass; larger, binary or over-budget
//! files are reported as changed without a patch, by hash.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;
use std::time::{Duration, Instant};

use pyro_protocol::archive_rules::{MemberRules, Reason, Rules};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use similar::{Algorithm, DiffOp, DiffTag};

use super::archive::{check_entry, Member, MemberKind, Refused, TarGuard, TarLimits};
use crate::error::{Error, IoContext, Result};

/// Prefix of the paths reported in [`DiffEntry::path`].
const WORKSPACE_ROOT: &str = "/workspace";

/// Lines of context around each hunk.
const CONTEXT_LINES: usize = 3;

/// How long the line diff of one file may search for a minimal edit script before it
/// settles for a correct but longer one.
const DIFF_DEADLINE: Duration = Duration::from_secs(2);

/// Largest file whose bytes are kept for a text patch; larger files are compared by hash.
pub const MAX_PATCH_FILE_BYTES: u64 = 1 << 20;

/// File bytes [`diff_archives`] holds for patches altogether; changed text files past it
/// are reported without a patch.
pub const MAX_PATCH_TOTAL_BYTES: u64 = 128 << 20;

/// One node of a [`Tree`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A regular file held with its content.
    File {
        /// Its content.
        bytes: Vec<u8>,
        /// Permission bits.
        mode: u32,
    },
    /// A regular file known by size and digest only (binary, larger than
    /// [`MAX_PATCH_FILE_BYTES`], or not needed for a patch).
    Hashed {
        /// Its size in bytes.
        size: u64,
        /// SHA-256 of its content.
        sha256: [u8; 32],
        /// Permission bits.
        mode: u32,
        /// Whether the content is text (UTF-8, no NUL, at most [`MAX_PATCH_FILE_BYTES`]),
        /// i.e. could be fetched for a patch.
        text: bool,
    },
    /// A symbolic link.
    Symlink {
        /// Its target, as stored (lossily decoded if not UTF-8).
        target: String,
    },
    /// A directory (explicit archive member).
    Dir {
        /// Permission bits.
        mode: u32,
    },
}

impl Node {
    fn artifact_type(&self) -> ArtifactType {
        match self {
            Node::File { .. } | Node::Hashed { .. } => ArtifactType::File,
            Node::Symlink { .. } => ArtifactType::Symlink,
            Node::Dir { .. } => ArtifactType::Directory,
        }
    }

    /// A regular file's content and mode.
    fn file(&self) -> Option<(Content<'_>, u32)> {
        match self {
            Node::File { bytes, mode } => Some((Content::Bytes(bytes), *mode)),
            Node::Hashed { size, sha256, mode, .. } => Some((Content::Hashed(*size, sha256), *mode)),
            _ => None,
        }
    }
}

/// A file's content as a [`Node`] knows it.
enum Content<'a> {
    Bytes(&'a [u8]),
    Hashed(u64, &'a [u8; 32]),
}

impl Content<'_> {
    fn same_as(&self, other: &Content<'_>) -> bool {
        match (self, other) {
            (Content::Bytes(a), Content::Bytes(b)) => a == b,
            (Content::Hashed(sa, ha), Content::Hashed(sb, hb)) => sa == sb && ha == hb,
            (Content::Bytes(bytes), Content::Hashed(size, hash)) | (Content::Hashed(size, hash), Content::Bytes(bytes)) => {
                bytes.len() as u64 == *size && Sha256::digest(bytes)[..] == hash[..]
            }
        }
    }

    /// The content as text, when held.
    fn text(&self) -> Option<&str> {
        match self {
            Content::Bytes(bytes) => as_text(bytes),
            Content::Hashed(..) => None,
        }
    }
}

/// A workspace snapshot: relative path (no leading slash, `/`-separated) → node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tree(pub BTreeMap<String, Node>);

/// What reading a file member found.
struct Scanned {
    size: u64,
    sha256: [u8; 32],
    /// The content is text of at most [`MAX_PATCH_FILE_BYTES`] (then held in the scratch
    /// buffer).
    text: bool,
}

/// Reads an archive through a [`TarGuard`] and the guest member rules, calling `visit`
/// for every member; file members come hashed, with their content in the scratch slice
/// when it is a text-patch candidate.
fn for_each_member(reader: impl Read, limits: TarLimits, mut visit: impl FnMut(Member, Option<Scanned>, &[u8]) -> Result<()>) -> Result<()> {
    let failed = |e: io::Error| match Refused::from_io(&e) {
        Some(refused) => refused.into(),
        None => Error::Io { context: "read workspace archive".into(), source: e },
    };
    let mut rules = MemberRules::new(Rules::HOST_FROM_GUEST);
    let mut archive = tar::Archive::new(TarGuard::new(reader, limits));
    let mut chunk = vec![0u8; 64 << 10];
    let mut scratch = Vec::new();
    for entry in archive.entries().map_err(failed)? {
        let mut entry = entry.map_err(failed)?;
        let Some(member) = check_entry(&mut rules, &entry)? else { continue };
        let scanned = match member.kind {
            MemberKind::File { size } => {
                let scanned = scan_file(&mut entry, size, &mut chunk, &mut scratch).map_err(failed)?;
                if scanned.size != size {
                    return Err(Error::InvalidArgument(format!(
                        "workspace archive is truncated: {} holds {} of {size} bytes",
                        String::from_utf8_lossy(&member.name),
                        scanned.size
                    )));
                }
                Some(scanned)
            }
            _ => None,
        };
        let content: &[u8] = if scanned.as_ref().is_some_and(|s| s.text) { &scratch } else { &[] };
        visit(member, scanned, content)?;
    }
    Ok(())
}

/// Hashes the rest of a file member, keeping it in `scratch` while it may still be a
/// text-patch candidate.
fn scan_file(data: &mut impl Read, declared: u64, chunk: &mut [u8], scratch: &mut Vec<u8>) -> io::Result<Scanned> {
    scratch.clear();
    let mut keep = declared <= MAX_PATCH_FILE_BYTES;
    if keep {
        scratch.reserve(declared as usize);
    }
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    loop {
        let n = match data.read(chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&chunk[..n]);
        size += n as u64;
        if keep {
            if size <= MAX_PATCH_FILE_BYTES {
                scratch.extend_from_slice(&chunk[..n]);
            } else {
                keep = false;
                scratch.clear();
            }
        }
    }
    let text = keep && as_text(scratch).is_some();
    if !text {
        scratch.clear();
    }
    Ok(Scanned { size, sha256: hasher.finalize().into(), text })
}

impl Tree {
    /// Reads an uncompressed tar as produced by the agent's `TarExport` or by
    /// [`super::archive::prepare_source`], within the default [`TarLimits`]. Text files
    /// of at most [`MAX_PATCH_FILE_BYTES`] are held with their bytes, every other file is
    /// [`Node::Hashed`] (see [`Tree::from_tar_with`]).
    pub fn from_tar(reader: impl Read) -> Result<Tree> {
        Self::from_tar_with(reader, TarLimits::default(), true)
    }

    /// Reads an archive through a [`TarGuard`] with `limits`. Names follow the archive
    /// member rules (a leading `./` is ignored, `./` itself skipped, absolute or escaping
    /// names refused, only the member types the agent emits); hard-link members take the
    /// node and mode of their target; symlink targets are kept whatever they are (they
    /// are only compared). With `keep_text`, text files of at most
    /// [`MAX_PATCH_FILE_BYTES`] are [`Node::File`]s; every other file (all of them
    /// without `keep_text`) is a [`Node::Hashed`], so memory stays bounded by the number
    /// of members, not their size.
    pub fn from_tar_with(reader: impl Read, limits: TarLimits, keep_text: bool) -> Result<Tree> {
        let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
        for_each_member(reader, limits, |member, scanned, content| {
            let name = String::from_utf8_lossy(&member.name).into_owned();
            let node = match member.kind {
                MemberKind::Dir => Node::Dir { mode: member.mode },
                MemberKind::File { .. } => {
                    let s = scanned.expect("file members are scanned");
                    if keep_text && s.text {
                        Node::File { bytes: content.to_vec(), mode: member.mode }
                    } else {
                        Node::Hashed { size: s.size, sha256: s.sha256, mode: member.mode, text: s.text }
                    }
                }
                MemberKind::Symlink { target } => Node::Symlink { target: String::from_utf8_lossy(&target).into_owned() },
                MemberKind::HardLink { target } => {
                    let target = String::from_utf8_lossy(&target).into_owned();
                    match nodes.get(&target) {
                        Some(node @ (Node::File { .. } | Node::Hashed { .. } | Node::Symlink { .. })) => node.clone(),
                        _ => {
                            let reason = Reason::HardLinkNotEarlier { target };
                            return Err(Rules::HOST_FROM_GUEST.refusal(name.as_bytes(), reason).into());
                        }
                    }
                }
            };
            nodes.insert(name, node);
            Ok(())
        })?;
        Ok(Tree(nodes))
    }

    /// The nodes, keyed by relative path.
    pub fn nodes(&self) -> &BTreeMap<String, Node> {
        &self.0
    }

    /// The diff entries of this tree: files, symlinks and leaf directories.
    fn entries(&self) -> BTreeMap<&str, &Node> {
        self.0.iter().filter(|(path, node)| !matches!(node, Node::Dir { .. }) || !self.has_children(path)).map(|(path, node)| (path.as_str(), node)).collect()
    }

    fn has_children(&self, path: &str) -> bool {
        let prefix = format!("{path}/");
        self.0.range(prefix.clone()..).next().is_some_and(|(k, _)| k.starts_with(&prefix))
    }
}

/// Diffs the archive `current` against `baseline` (both uncompressed tars on disk, read
/// within `limits`) without holding either tree's contents: both are first read as
/// hashes; then the bytes of text files that differ from the other side (at most
/// [`MAX_PATCH_FILE_BYTES`] each, [`MAX_PATCH_TOTAL_BYTES`] in all, in path order) are
/// fetched in a second pass so that they get patches. The result is what [`diff`] gives
/// for the fully read trees, except that files past those limits are changed without a
/// patch.
pub fn diff_archives(baseline: &Path, current: &Path, limits: TarLimits) -> Result<TreeDiff> {
    let open = |path: &Path| File::open(path).map(BufReader::new).ctx("open", path);
    let mut old = Tree::from_tar_with(open(baseline)?, limits, false)?;
    let mut new = Tree::from_tar_with(open(current)?, limits, false)?;
    let paths: BTreeSet<&String> = old.0.keys().chain(new.0.keys()).collect();
    let needs = |this: Option<&Node>, other: Option<&Node>| match this {
        Some(Node::Hashed { size, text: true, .. }) => {
            let same = match (this.and_then(Node::file), other.and_then(Node::file)) {
                (Some((a, _)), Some((b, _))) => a.same_as(&b),
                _ => false,
            };
            (!same).then_some(*size)
        }
        _ => None,
    };
    let mut budget = MAX_PATCH_TOTAL_BYTES;
    let mut chosen: Vec<(String, bool, bool)> = Vec::new();
    let mut wanted: HashSet<[u8; 32]> = HashSet::new();
    for path in paths {
        let (a, b) = (old.0.get(path), new.0.get(path));
        let (need_a, need_b) = (needs(a, b), needs(b, a));
        if need_a.is_none() && need_b.is_none() {
            continue;
        }
        let cost = need_a.unwrap_or(0) + need_b.unwrap_or(0);
        if cost > budget {
            continue;
        }
        budget -= cost;
        for (node, needed) in [(a, need_a), (b, need_b)] {
            if let (Some(Node::Hashed { sha256, .. }), Some(_)) = (node, needed) {
                wanted.insert(*sha256);
            }
        }
        chosen.push((path.clone(), need_a.is_some(), need_b.is_some()));
    }
    let mut found: HashMap<[u8; 32], Vec<u8>> = HashMap::new();
    for archive in [baseline, current] {
        if found.len() == wanted.len() {
            break;
        }
        for_each_member(open(archive)?, limits, |_, scanned, content| {
            if let Some(s) = scanned.filter(|s| s.text && wanted.contains(&s.sha256)) {
                found.entry(s.sha256).or_insert_with(|| content.to_vec());
            }
            Ok(())
        })?;
    }
    let hydrate = |node: Option<&mut Node>| {
        if let Some(node) = node {
            if let Node::Hashed { sha256, mode, .. } = node {
                if let Some(bytes) = found.get(sha256) {
                    *node = Node::File { bytes: bytes.clone(), mode: *mode };
                }
            }
        }
    };
    for (path, need_old, need_new) in chosen {
        if need_old {
            hydrate(old.0.get_mut(&path));
        }
        if need_new {
            hydrate(new.0.get_mut(&path));
        }
    }
    Ok(diff(&old, &new))
}

/// How an entry changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiffStatus {
    /// Only in the current tree.
    Added,
    /// In both, same kind, different content, target or executable bit.
    Modified,
    /// Only in the baseline.
    Deleted,
    /// In both with different kinds (file, directory, symlink).
    TypeChanged,
}

/// What kind of artifact an entry is (the current kind, or the baseline's for deletions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArtifactType {
    /// Regular file.
    File,
    /// Leaf (empty) directory.
    Directory,
    /// Symbolic link.
    Symlink,
}

/// One changed path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiffEntry {
    /// Absolute guest path (`/workspace/<relative>`).
    pub path: String,
    /// How it changed.
    pub status: DiffStatus,
    /// What it is.
    pub artifact_type: ArtifactType,
    /// The git-style patch section for this path, when the change is expressible as one
    /// (text files, mode-only changes).
    pub text_patch: Option<String>,
}

/// Counters over [`TreeDiff::entries`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DiffSummary {
    /// All entries.
    pub total: u64,
    /// `added` entries.
    pub added: u64,
    /// `modified` entries.
    pub modified: u64,
    /// `deleted` entries.
    pub deleted: u64,
    /// `type_changed` entries.
    pub type_changed: u64,
    /// Entries with a patch.
    pub text_patched: u64,
    /// Entries without one (binary files, symlinks, directories, type changes).
    pub non_text: u64,
}

/// The result of [`diff`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TreeDiff {
    /// Whether anything changed.
    pub changed: bool,
    /// Counters.
    pub summary: DiffSummary,
    /// Changed paths in path order.
    pub entries: Vec<DiffEntry>,
    /// All entries' patches concatenated in path order: one multi-file git patch.
    pub patch: String,
}

/// Compares `baseline` with `current`.
///
/// Files are compared by content (bytes, or size and SHA-256 for [`Node::Hashed`]) and
/// by executable bit (the only mode bit a git patch can carry); a mode-only change is
/// `modified` with an `old mode`/`new mode` patch. Symlink retargets are `modified`
/// without a patch; a kind change is `type_changed` without a patch; directories only
/// appear when they are leaves (added/deleted empty directories). A file is text when it
/// is held with its bytes, has no NUL byte and is valid UTF-8; text files (both sides for
/// modifications) get a patch, an added or deleted empty file a header-only one.
pub fn diff(baseline: &Tree, current: &Tree) -> TreeDiff {
    let old_entries = baseline.entries();
    let new_entries = current.entries();
    let mut paths: Vec<&str> = old_entries.keys().chain(new_entries.keys()).copied().collect();
    paths.sort_unstable();
    paths.dedup();
    let mut entries = Vec::new();
    let mut summary = DiffSummary::default();
    for rel in paths {
        let (status, artifact_type, text_patch) = match (old_entries.get(rel), new_entries.get(rel)) {
            (None, None) => continue,
            (None, Some(new)) => {
                let patch = new.file().and_then(|(content, mode)| content.text().map(|text| file_patch(rel, None, Some((text, mode)))));
                (DiffStatus::Added, new.artifact_type(), patch)
            }
            (Some(old), None) => {
                let patch = old.file().and_then(|(content, mode)| content.text().map(|text| file_patch(rel, Some((text, mode)), None)));
                (DiffStatus::Deleted, old.artifact_type(), patch)
            }
            (Some(old), Some(new)) => match (old.file(), new.file()) {
                (Some((a, ma)), Some((b, mb))) => {
                    let mode_changed = is_executable(ma) != is_executable(mb);
                    let same = a.same_as(&b);
                    if same && !mode_changed {
                        continue;
                    }
                    let patch = if same {
                        Some(mode_header(rel, ma, mb))
                    } else {
                        match (a.text(), b.text()) {
                            (Some(ta), Some(tb)) => Some(file_patch(rel, Some((ta, ma)), Some((tb, mb)))),
                            _ => None,
                        }
                    };
                    (DiffStatus::Modified, ArtifactType::File, patch)
                }
                _ => match (old, new) {
                    (Node::Dir { .. }, Node::Dir { .. }) => continue,
                    (Node::Symlink { target: a }, Node::Symlink { target: b }) => {
                        if a == b {
                            continue;
                        }
                        (DiffStatus::Modified, ArtifactType::Symlink, None)
                    }
                    _ => (DiffStatus::TypeChanged, new.artifact_type(), None),
                },
            },
        };
        summary.total += 1;
        match status {
            DiffStatus::Added => summary.added += 1,
            DiffStatus::Modified => summary.modified += 1,
            DiffStatus::Deleted => summary.deleted += 1,
            DiffStatus::TypeChanged => summary.type_changed += 1,
        }
        let text_patch = text_patch.filter(|p| !p.is_empty());
        if text_patch.is_some() {
            summary.text_patched += 1;
        } else {
            summary.non_text += 1;
        }
        entries.push(DiffEntry { path: format!("{WORKSPACE_ROOT}/{rel}"), status, artifact_type, text_patch });
    }
    let patch: String = entries.iter().filter_map(|e| e.text_patch.as_deref()).collect();
    TreeDiff { changed: !entries.is_empty(), summary, entries, patch }
}

/// The content as text: valid UTF-8 without NUL bytes.
fn as_text(bytes: &[u8]) -> Option<&str> {
    std::str::from_utf8(bytes).ok().filter(|s| !s.contains('\0'))
}

fn is_executable(mode: u32) -> bool {
    mode & 0o100 != 0
}

/// git's file mode for a regular file with these permission bits.
fn git_mode(mode: u32) -> &'static str {
    if is_executable(mode) {
        "100755"
    } else {
        "100644"
    }
}

/// A path as git writes it after `a/`/`b/`: C-quoted when it holds a quote, a backslash
/// or a control character.
fn git_path(prefix: &str, rel: &str) -> String {
    let needs_quoting = rel.chars().any(|c| c == '"' || c == '\\' || (c as u32) < 0x20 || c == '\x7f');
    if !needs_quoting {
        return format!("{prefix}{rel}");
    }
    let mut out = String::from("\"");
    out.push_str(prefix);
    for c in rel.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\x0b' => out.push_str("\\v"),
            '\x0c' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c == '\x7f' => out.push_str(&format!("\\{:03o}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn diff_git_line(rel: &str) -> String {
    format!("diff --git {} {}\n", git_path("a/", rel), git_path("b/", rel))
}

/// A header-only section for a mode change.
fn mode_header(rel: &str, old_mode: u32, new_mode: u32) -> String {
    format!("{}old mode {}\nnew mode {}\n", diff_git_line(rel), git_mode(old_mode), git_mode(new_mode))
}

/// The git section for a text file added (`old` = None), deleted (`new` = None) or
/// modified.
fn file_patch(rel: &str, old: Option<(&str, u32)>, new: Option<(&str, u32)>) -> String {
    let mut out = diff_git_line(rel);
    match (old, new) {
        (None, Some((_, mode))) => out.push_str(&format!("new file mode {}\n", git_mode(mode))),
        (Some((_, mode)), None) => out.push_str(&format!("deleted file mode {}\n", git_mode(mode))),
        (Some((_, a)), Some((_, b))) if is_executable(a) != is_executable(b) => {
            out.push_str(&format!("old mode {}\nnew mode {}\n", git_mode(a), git_mode(b)));
        }
        _ => {}
    }
    let old_text = old.map_or("", |(t, _)| t);
    let new_text = new.map_or("", |(t, _)| t);
    if old_text == new_text {
        // An empty file added or deleted: git writes no `---`/`+++` lines and no hunks.
        return out;
    }
    let old_label = if old.is_some() { git_path("a/", rel) } else { "/dev/null".into() };
    let new_label = if new.is_some() { git_path("b/", rel) } else { "/dev/null".into() };
    out.push_str(&format!("--- {old_label}\n+++ {new_label}\n"));
    push_hunks(&mut out, old_text, new_text);
    out
}

/// Splits after every `\n` (only): `\r` stays part of its line, as in git.
fn split_lines(text: &str) -> Vec<&str> {
    text.split_inclusive('\n').collect()
}

/// Appends the unified hunks turning `old` into `new`.
fn push_hunks(out: &mut String, old: &str, new: &str) {
    let a = split_lines(old);
    let b = split_lines(new);
    let deadline = Instant::now() + DIFF_DEADLINE;
    let ops = similar::capture_diff_slices_deadline(Algorithm::Myers, &a, &b, Some(deadline));
    for group in similar::group_diff_ops(ops, CONTEXT_LINES) {
        let (Some(first), Some(last)) = (group.first(), group.last()) else { continue };
        let old_range = first.old_range().start..last.old_range().end;
        let new_range = first.new_range().start..last.new_range().end;
        out.push_str(&format!("@@ -{} +{} @@\n", hunk_range(old_range), hunk_range(new_range)));
        for op in &group {
            push_op(out, op, &a, &b);
        }
    }
}

/// `start,len` as in a hunk header (1-based; an empty range names the line before it;
/// `,1` omitted).
fn hunk_range(range: std::ops::Range<usize>) -> String {
    match range.len() {
        0 => format!("{},0", range.start),
        1 => format!("{}", range.start + 1),
        n => format!("{},{n}", range.start + 1),
    }
}

fn push_op(out: &mut String, op: &DiffOp, a: &[&str], b: &[&str]) {
    let (tag, old_range, new_range) = op.as_tag_tuple();
    match tag {
        DiffTag::Equal => old_range.for_each(|i| push_line(out, ' ', a[i])),
        DiffTag::Delete => old_range.for_each(|i| push_line(out, '-', a[i])),
        DiffTag::Insert => new_range.for_each(|i| push_line(out, '+', b[i])),
        DiffTag::Replace => {
            old_range.for_each(|i| push_line(out, '-', a[i]));
            new_range.for_each(|i| push_line(out, '+', b[i]));
        }
    }
}

fn push_line(out: &mut String, prefix: char, line: &str) {
    out.push(prefix);
    out.push_str(line);
    if !line.ends_with('\n') {
        out.push_str("\n\\ No newline at end of file\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;
    use std::process::Command;
    use tar::{EntryType, Header};

    fn file(text: &str) -> Node {
        Node::File { bytes: text.as_bytes().to_vec(), mode: 0o644 }
    }

    fn exe(text: &str) -> Node {
        Node::File { bytes: text.as_bytes().to_vec(), mode: 0o755 }
    }

    fn link(target: &str) -> Node {
        Node::Symlink { target: target.into() }
    }

    fn dir() -> Node {
        Node::Dir { mode: 0o755 }
    }

    fn tree(items: &[(&str, Node)]) -> Tree {
        Tree(items.iter().map(|(k, v)| (k.to_string(), v.clone())).collect())
    }

    fn statuses(d: &TreeDiff) -> Vec<(&str, DiffStatus, ArtifactType, bool)> {
        d.entries.iter().map(|e| (e.path.as_str(), e.status, e.artifact_type, e.text_patch.is_some())).collect()
    }

    #[test]
    fn tree_from_tar_resolves_hard_links_and_keeps_symlinks() {
        let mut builder = tar::Builder::new(Vec::new());
        let mut add = |name: &str, kind: EntryType, mode: u32, link: Option<&str>, data: &[u8]| {
            let mut h = Header::new_ustar();
            h.set_entry_type(kind);
            h.set_mode(mode);
            h.set_size(data.len() as u64);
            match link {
                Some(l) => builder.append_link(&mut h, name, l).unwrap(),
                None => builder.append_data(&mut h, name, data).unwrap(),
            }
        };
        add("./", EntryType::Directory, 0o755, None, b"");
        add("./src/", EntryType::Directory, 0o750, None, b"");
        add("./src/main.sh", EntryType::Regular, 0o755, None, b"echo hi\n");
        add("bin/run", EntryType::Link, 0o755, Some("src/main.sh"), b"");
        add("abs", EntryType::Symlink, 0o777, Some("/usr/bin/python3"), b"");
        add("rel", EntryType::Symlink, 0o777, Some("../outside"), b"");
        let bytes = builder.into_inner().unwrap();
        let t = Tree::from_tar(bytes.as_slice()).unwrap();
        assert_eq!(
            t,
            tree(&[
                ("abs", link("/usr/bin/python3")),
                ("bin/run", exe("echo hi\n")),
                ("rel", link("../outside")),
                ("src", Node::Dir { mode: 0o750 }),
                ("src/main.sh", exe("echo hi\n")),
            ])
        );

        let mut builder = tar::Builder::new(Vec::new());
        let mut h = Header::new_gnu();
        h.set_entry_type(EntryType::Link);
        h.set_size(0);
        builder.append_link(&mut h, "x", "missing").unwrap();
        let err = Tree::from_tar(builder.into_inner().unwrap().as_slice()).unwrap_err();
        assert_eq!(err.to_string(), "hard link x must point at an earlier file member: missing");
    }

    #[test]
    fn diff_classifies_every_kind_of_change() {
        let baseline = tree(&[
            ("bin.dat", Node::File { bytes: vec![0, 1, 2], mode: 0o644 }),
            ("gone.txt", file("bye\n")),
            ("kept/", dir()),
            ("kept/same.txt", file("same\n")),
            ("leaf", dir()),
            ("link", link("a")),
            ("mode.sh", file("x\n")),
            ("nonempty", dir()),
            ("nonempty/f", file("f\n")),
            ("text.txt", file("one\ntwo\n")),
            ("turns-dir", file("t\n")),
        ]);
        let current = tree(&[
            ("bin.dat", Node::File { bytes: vec![0, 1, 3], mode: 0o644 }),
            ("kept/", dir()),
            ("kept/same.txt", file("same\n")),
            ("link", link("b")),
            ("mode.sh", exe("x\n")),
            ("new-empty", dir()),
            ("new.txt", file("new\n")),
            ("nonempty", Node::Dir { mode: 0o700 }),
            ("nonempty/f", file("f\n")),
            ("text.txt", file("one\nthree")),
            ("turns-dir", dir()),
            ("turns-dir/inner", file("i\n")),
        ]);
        let d = diff(&baseline, &current);
        assert!(d.changed);
        use ArtifactType as A;
        use DiffStatus as S;
        assert_eq!(
            statuses(&d),
            [
                ("/workspace/bin.dat", S::Modified, A::File, false),
                ("/workspace/gone.txt", S::Deleted, A::File, true),
                ("/workspace/leaf", S::Deleted, A::Directory, false),
                ("/workspace/link", S::Modified, A::Symlink, false),
                ("/workspace/mode.sh", S::Modified, A::File, true),
                ("/workspace/new-empty", S::Added, A::Directory, false),
                ("/workspace/new.txt", S::Added, A::File, true),
                ("/workspace/text.txt", S::Modified, A::File, true),
                // A file replaced by a non-empty directory: the directory is no entry, so
                // the file is deleted and the directory's contents are added.
                ("/workspace/turns-dir", S::Deleted, A::File, true),
                ("/workspace/turns-dir/inner", S::Added, A::File, true),
            ]
        );
        let s = d.summary;
        assert_eq!((s.total, s.added, s.modified, s.deleted, s.type_changed), (10, 3, 4, 3, 0));
        assert_eq!((s.text_patched, s.non_text), (6, 4));
        let mode_patch = d.entries[4].text_patch.as_deref().unwrap();
        assert_eq!(mode_patch, "diff --git a/mode.sh b/mode.sh\nold mode 100644\nnew mode 100755\n");
        let text_patch = d.entries[7].text_patch.as_deref().unwrap();
        assert_eq!(
            text_patch,
            "diff --git a/text.txt b/text.txt\n--- a/text.txt\n+++ b/text.txt\n@@ -1,2 +1,2 @@\n one\n-two\n+three\n\\ No newline at end of file\n"
        );
        assert_eq!(
            d.entries[1].text_patch.as_deref().unwrap(),
            "diff --git a/gone.txt b/gone.txt\ndeleted file mode 100644\n--- a/gone.txt\n+++ /dev/null\n@@ -1 +0,0 @@\n-bye\n"
        );
        assert_eq!(d.patch, d.entries.iter().filter_map(|e| e.text_patch.clone()).collect::<String>());
        let json = serde_json::to_value(&d).unwrap();
        assert_eq!(json["entries"][0]["status"], "modified");
        assert_eq!(json["entries"][2]["artifact_type"], "directory");
        assert_eq!(json["summary"]["text_patched"], 6);
    }

    #[test]
    fn type_changes_empty_files_and_no_change() {
        let baseline = tree(&[("a", file("x\n")), ("b", link("t")), ("c", dir()), ("e", file(""))]);
        let current = tree(&[("a", link("x")), ("b", file("t\n")), ("c", file("")), ("f", Node::File { bytes: vec![], mode: 0o755 })]);
        let d = diff(&baseline, &current);
        use ArtifactType as A;
        use DiffStatus as S;
        assert_eq!(
            statuses(&d),
            [
                ("/workspace/a", S::TypeChanged, A::Symlink, false),
                ("/workspace/b", S::TypeChanged, A::File, false),
                ("/workspace/c", S::TypeChanged, A::File, false),
                ("/workspace/e", S::Deleted, A::File, true),
                ("/workspace/f", S::Added, A::File, true),
            ]
        );
        assert_eq!(d.entries[3].text_patch.as_deref(), Some("diff --git a/e b/e\ndeleted file mode 100644\n"));
        assert_eq!(d.entries[4].text_patch.as_deref(), Some("diff --git a/f b/f\nnew file mode 100755\n"));
        assert_eq!(d.summary.type_changed, 3);

        let same = diff(&baseline, &baseline.clone());
        assert!(!same.changed);
        assert_eq!(same.summary, DiffSummary::default());
        assert_eq!(same.patch, "");
        // Permission bits other than the executable bit are not a change (git cannot
        // carry them), neither are directory modes.
        let d =
            diff(&tree(&[("a", file("x")), ("d", dir())]), &tree(&[("a", Node::File { bytes: b"x".to_vec(), mode: 0o600 }), ("d", Node::Dir { mode: 0o700 })]));
        assert!(!d.changed);
    }

    #[test]
    fn binary_and_non_utf8_files_are_non_text() {
        let baseline = tree(&[("a.bin", Node::File { bytes: b"\xff\xfe".to_vec(), mode: 0o644 }), ("z", file("nul"))]);
        let current = tree(&[
            ("a.bin", Node::File { bytes: b"\xff\xfd".to_vec(), mode: 0o755 }),
            ("n.bin", Node::File { bytes: b"a\0b".to_vec(), mode: 0o644 }),
            ("z", Node::File { bytes: b"nul\0".to_vec(), mode: 0o644 }),
        ]);
        let d = diff(&baseline, &current);
        assert!(d.entries.iter().all(|e| e.text_patch.is_none()));
        assert_eq!((d.summary.text_patched, d.summary.non_text), (0, 3));
        assert_eq!(d.patch, "");
        // A binary file whose only change is the executable bit still gets a mode patch.
        let d = diff(&tree(&[("b", Node::File { bytes: vec![0], mode: 0o644 })]), &tree(&[("b", Node::File { bytes: vec![0], mode: 0o755 })]));
        assert_eq!(d.patch, "diff --git a/b b/b\nold mode 100644\nnew mode 100755\n");
    }

    #[test]
    fn hunks_have_three_lines_of_context_and_standard_headers() {
        let old: String = (1..=20).map(|i| format!("line {i}\n")).collect();
        let new = old.replace("line 2\n", "line two\n").replace("line 18\n", "").replace("line 10\n", "line 10\nextra\n");
        let d = diff(&tree(&[("f", file(&old))]), &tree(&[("f", file(&new))]));
        let patch = d.patch;
        let headers: Vec<&str> = patch.lines().filter(|l| l.starts_with("@@")).collect();
        assert_eq!(headers, ["@@ -1,5 +1,5 @@", "@@ -8,6 +8,7 @@", "@@ -15,6 +16,5 @@"]);
        // Added file and a path needing quotes.
        let d = diff(&Tree::default(), &tree(&[("we\"ird\tname", file("a\nb\n"))]));
        assert_eq!(
            d.patch,
            "diff --git \"a/we\\\"ird\\tname\" \"b/we\\\"ird\\tname\"\nnew file mode 100644\n--- /dev/null\n+++ \"b/we\\\"ird\\tname\"\n@@ -0,0 +1,2 @@\n+a\n+b\n"
        );
    }

    /// Writes `t`'s files into `dir` (text files only; symlinks and leaf dirs too).
    fn materialise(dir: &Path, t: &Tree) {
        for (rel, node) in t.nodes() {
            let path = dir.join(rel);
            match node {
                Node::Dir { .. } => fs::create_dir_all(&path).unwrap(),
                Node::File { bytes, mode } => {
                    fs::create_dir_all(path.parent().unwrap()).unwrap();
                    fs::write(&path, bytes).unwrap();
                    fs::set_permissions(&path, fs::Permissions::from_mode(*mode)).unwrap();
                }
                Node::Symlink { target } => std::os::unix::fs::symlink(target, &path).unwrap(),
                Node::Hashed { .. } => unreachable!("test trees hold their bytes"),
            }
        }
    }

    fn git(dir: &Path, args: &[&str]) {
        let out = Command::new("git").args(args).current_dir(dir).output().expect("git runs");
        assert!(out.status.success(), "git {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    #[test]
    fn git_apply_reproduces_the_current_tree() {
        let long: String = (1..=30).map(|i| format!("row {i}\n")).collect();
        let baseline = tree(&[
            ("README.md", file("# Title\n\nsome text\n")),
            ("src/app.py", file(&long)),
            ("src/nonl.txt", file("a\nb\nc")),
            ("src/addnl.txt", file("a\nb")),
            ("crlf.txt", file("one\r\ntwo\r\nthree\r\n")),
            ("cr.txt", file("a\rb\nc\n")),
            ("old.txt", file("remove me\nplease")),
            ("empty-gone", file("")),
            ("dir with space/f.txt", file("x\n")),
            ("tool.sh", file("#!/bin/sh\necho 1\n")),
            ("chmod-only.sh", file("#!/bin/sh\n")),
            ("unexec.sh", exe("#!/bin/sh\n")),
            ("becomes-empty.txt", file("content\n")),
            ("ünïcode.txt", file("é\n")),
        ]);
        let changed_long = long.replace("row 3\n", "row three\n").replace("row 25\n", "").replace("row 30\n", "row 30");
        let current = tree(&[
            ("README.md", file("# Title\n\nsome text\nmore\n")),
            ("src/app.py", file(&changed_long)),
            ("src/nonl.txt", file("a\nB\nc")),
            ("src/addnl.txt", file("a\nb\n")),
            ("crlf.txt", file("one\r\n2\r\nthree\r\n")),
            ("cr.txt", file("a\rB\nc\n")),
            ("new/nested/file.rs", file("fn main() {}")),
            ("new-empty.txt", file("")),
            ("dir with space/f.txt", file("y\n")),
            ("tool.sh", exe("#!/bin/sh\necho 2\n")),
            ("chmod-only.sh", exe("#!/bin/sh\n")),
            ("unexec.sh", file("#!/bin/sh\n")),
            ("becomes-empty.txt", file("")),
            ("ünïcode.txt", file("ê\n")),
        ]);
        let d = diff(&baseline, &current);
        assert_eq!(d.summary.non_text, 0, "{:#?}", d.entries);
        assert_eq!(d.summary.text_patched, d.summary.total);

        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path();
        git(repo, &["init", "-q"]);
        git(repo, &["config", "core.autocrlf", "false"]);
        materialise(repo, &baseline);
        fs::write(repo.join(".git/patch.diff"), &d.patch).unwrap();
        git(repo, &["apply", "--whitespace=nowarn", ".git/patch.diff"]);

        let mut on_disk = Vec::new();
        for entry in walk(repo) {
            let rel = entry.strip_prefix(repo).unwrap().to_str().unwrap().to_string();
            if rel.starts_with(".git") || entry.is_dir() {
                continue;
            }
            let meta = fs::metadata(&entry).unwrap();
            on_disk.push((rel, fs::read(&entry).unwrap(), meta.permissions().mode() & 0o100 != 0));
        }
        on_disk.sort();
        let expected: Vec<_> = current
            .nodes()
            .iter()
            .map(|(rel, node)| match node {
                Node::File { bytes, mode } => (rel.clone(), bytes.clone(), mode & 0o100 != 0),
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(on_disk, expected);
        // And the patch applies in reverse back to the baseline.
        git(repo, &["apply", "-R", ".git/patch.diff"]);
        assert_eq!(fs::read(repo.join("src/app.py")).unwrap(), long.as_bytes());
        assert!(!repo.join("new-empty.txt").exists());
        assert!(repo.join("empty-gone").exists());
    }

    fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                out.extend(walk(&path));
            }
            out.push(path);
        }
        out
    }

    /// (name, content, mode); a content of `None` makes a hard link to the previous file.
    type Spec = Vec<(String, Option<Vec<u8>>, u32)>;

    fn tar_of(files: &Spec) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        let mut last: Option<&str> = None;
        for (name, content, mode) in files {
            let mut h = Header::new_ustar();
            h.set_mode(*mode);
            match (content, last) {
                (None, Some(target)) => {
                    h.set_entry_type(EntryType::Link);
                    h.set_size(0);
                    builder.append_link(&mut h, name, target).unwrap();
                }
                (content, _) => {
                    let data = content.clone().unwrap_or_default();
                    h.set_entry_type(EntryType::Regular);
                    h.set_size(data.len() as u64);
                    builder.append_data(&mut h, name, data.as_slice()).unwrap();
                    last = Some(name);
                }
            }
        }
        builder.into_inner().unwrap()
    }

    fn via_archives(old: &Spec, new: &Spec) -> TreeDiff {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("a.tar"), tmp.path().join("b.tar"));
        fs::write(&a, tar_of(old)).unwrap();
        fs::write(&b, tar_of(new)).unwrap();
        diff_archives(&a, &b, TarLimits::default()).unwrap()
    }

    fn in_memory(old: &Spec, new: &Spec) -> TreeDiff {
        diff(&Tree::from_tar(tar_of(old).as_slice()).unwrap(), &Tree::from_tar(tar_of(new).as_slice()).unwrap())
    }

    #[test]
    fn files_past_the_patch_limit_are_changed_without_a_patch() {
        let big = "line\n".repeat((MAX_PATCH_FILE_BYTES / 5) as usize + 1).into_bytes();
        let mut bigger = big.clone();
        bigger.extend_from_slice(b"more\n");
        let old: Spec = vec![("big.txt".into(), Some(big.clone()), 0o644), ("same.txt".into(), Some(big), 0o644)];
        let new: Spec = vec![("big.txt".into(), Some(bigger), 0o644), ("same.txt".into(), old[1].1.clone(), 0o755)];
        let d = via_archives(&old, &new);
        assert_eq!(
            statuses(&d),
            [("/workspace/big.txt", DiffStatus::Modified, ArtifactType::File, false), ("/workspace/same.txt", DiffStatus::Modified, ArtifactType::File, true)]
        );
        assert_eq!(d.patch, "diff --git a/same.txt b/same.txt\nold mode 100644\nnew mode 100755\n");
        let t = Tree::from_tar(tar_of(&old).as_slice()).unwrap();
        assert!(t.nodes().values().all(|n| matches!(n, Node::Hashed { text: false, .. })));
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn content() -> impl Strategy<Value = Option<Vec<u8>>> {
            prop_oneof![
                4 => proptest::collection::vec(prop_oneof![Just(b'a'), Just(b'b'), Just(b'\n')], 0..24).prop_map(Some),
                1 => proptest::collection::vec(any::<u8>(), 0..8).prop_map(Some),
                1 => Just(None),
            ]
        }

        fn spec() -> impl Strategy<Value = Spec> {
            let name = proptest::sample::select(vec!["a.txt", "b", "d/c.txt", "d/e/f", "g.bin"]);
            proptest::collection::btree_map(name, (content(), proptest::sample::select(vec![0o644u32, 0o755])), 0..5)
                .prop_map(|m| m.into_iter().map(|(k, (c, mode))| (k.to_string(), c, mode)).collect())
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 200, failure_persistence: None, ..ProptestConfig::default() })]

            /// For workspaces without large files, reading hashes and fetching only changed
            /// text files gives exactly the diff of the fully read trees.
            #[test]
            fn diff_archives_matches_the_in_memory_diff(old in spec(), new in spec()) {
                prop_assert_eq!(via_archives(&old, &new), in_memory(&old, &new));
            }
        }
    }
}
