//! Host side of workspace seeding, sync and export.
//!
//! * [`prepare_source`] turns a seed or sync source (nothing, a directory, or a
//!   `.tar`/`.tar.gz`/`.tgz` file) into a clean, uncompressed tar on disk that the guest
//!   agent's `TarImport` accepts member for member.
//! * [`extract_export`] recreates a file, symlink or directory tree from the archive the
//!   agent's `TarExport` streams back.
//!
//! Every archive member goes through the same rules as the agent's importer
//! (`crates/pyro-agent/src/tar_import.rs`): `.`/`./` entries are dropped, a leading `./` is
//! ignored, absolute names and names whose `..` climbs out are refused, no member may sit
//! below an earlier symlink or file, symlinks must resolve (lexically, from their own
//! directory, `..` only as leading components) inside the root, hard links must name an
//! earlier non-directory member, and fifos/devices are refused. Everything is streamed:
//! no archive is ever held in memory.

use pyro_protocol::member_path::{dotdot_only_leading, normalize_relative, resolve_link_target};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{CString, OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tar::{EntryType, Header};

use crate::error::{Error, IoContext, Result};
use crate::guest::EntryKind;

/// Permission bits kept when recreating exported files on the host: everything except
/// set-user-ID and set-group-ID.
const HOST_MODE_MASK: u32 = 0o1777;

/// How `/workspace` (or a sync destination) was filled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SeedMode {
    /// No source: an empty archive.
    Empty,
    /// A host directory, packed recursively.
    Directory,
    /// A host `.tar`, `.tar.gz` or `.tgz` file, validated and normalised.
    TarArchive,
}

impl SeedMode {
    /// The wire name (`empty`, `directory`, `tar_archive`).
    pub fn name(self) -> &'static str {
        match self {
            SeedMode::Empty => "empty",
            SeedMode::Directory => "directory",
            SeedMode::TarArchive => "tar_archive",
        }
    }
}

impl std::fmt::Display for SeedMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A seed or sync source packed into a clean, uncompressed tar file, ready to be uploaded
/// with `TarImport`. The temporary archive is removed when this value is dropped.
#[derive(Debug)]
pub struct PreparedArchive {
    /// What kind of source it was.
    pub mode: SeedMode,
    /// The resolved (`~`-expanded, canonical) host path of the source, if any.
    pub source_path: Option<PathBuf>,
    /// The uncompressed tar on disk.
    pub archive: PathBuf,
    /// Members in the archive (directories, files, symlinks and hard links).
    pub entry_count: u64,
    /// Regular-file bytes in the archive.
    pub bytes: u64,
    _temp: tempfile::TempPath,
}

/// What [`extract_export`] recreated on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ExportSummary {
    /// Archive members recreated.
    pub entry_count: u64,
    /// Regular-file bytes written.
    pub bytes_written: u64,
}

/// Expands a leading `~` (alone or followed by `/`) to the user's home directory.
pub fn expand_user(path: &Path) -> PathBuf {
    let bytes = path.as_os_str().as_bytes();
    if bytes == b"~" || bytes.starts_with(b"~/") {
        if let Some(home) = dirs::home_dir() {
            let mut rest = &bytes[1..];
            while let Some(r) = rest.strip_prefix(b"/") {
                rest = r;
            }
            return if rest.is_empty() { home } else { home.join(OsStr::from_bytes(rest)) };
        }
    }
    path.to_path_buf()
}

/// Packs a seed or sync source into a clean, uncompressed tar created in `temp_dir`.
///
/// `None` gives an empty archive. A path is `~`-expanded and canonicalised; a directory
/// has its contents packed recursively (sorted names, symlinks kept as symlinks, hard
/// links inside the tree as hard-link members, modes and mtimes kept, owner 0:0, fifos,
/// sockets and devices skipped); a `.tar`/`.tar.gz`/`.tgz` file (gzip detected by its
/// magic bytes) is validated and every member rewritten. Both go through the archive
/// member rules, so the guest sees only members it accepts.
pub fn prepare_source(source: Option<&Path>, temp_dir: &Path) -> Result<PreparedArchive> {
    let resolved = match source {
        None => None,
        Some(raw) => Some(resolve_source(raw)?),
    };
    let temp = tempfile::Builder::new()
        .prefix(".pyro-seed-")
        .suffix(".tar")
        .tempfile_in(temp_dir)
        .ctx("create temporary archive in", temp_dir)?;
    let (file, temp_path) = temp.into_parts();
    let archive_path = temp_path.to_path_buf();
    let own_id = file.metadata().map(|m| (m.dev(), m.ino())).ctx("inspect", &archive_path)?;
    let mut writer = ArchiveWriter::new(BufWriter::new(file));
    let mode = match &resolved {
        None => SeedMode::Empty,
        Some((path, SeedMode::Directory)) => {
            let mut packer = DirPacker {
                writer: &mut writer,
                rules: MemberRules::new(SymlinkPolicy::Contained),
                links: HashMap::new(),
                skip: own_id,
                archive_path: &archive_path,
            };
            packer.walk(path, b"")?;
            SeedMode::Directory
        }
        Some((path, mode)) => {
            normalise_archive(path, &mut writer, &archive_path)?;
            *mode
        }
    };
    let (entry_count, bytes) = (writer.entries, writer.bytes);
    let mut out = writer.builder.into_inner().ctx("write", &archive_path)?;
    out.flush().ctx("write", &archive_path)?;
    Ok(PreparedArchive {
        mode,
        source_path: resolved.map(|(p, _)| p),
        archive: archive_path,
        entry_count,
        bytes,
        _temp: temp_path,
    })
}

/// Expands, canonicalises and classifies a source path.
fn resolve_source(raw: &Path) -> Result<(PathBuf, SeedMode)> {
    let expanded = expand_user(raw);
    let canonical = match fs::canonicalize(&expanded) {
        Ok(p) => p,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let shown = std::path::absolute(&expanded).unwrap_or(expanded);
            return Err(Error::InvalidArgument(format!("seed_path {} does not exist", shown.display())));
        }
        Err(e) => return Err(Error::io("resolve", expanded, e)),
    };
    let meta = fs::metadata(&canonical).ctx("inspect", &canonical)?;
    if meta.is_dir() {
        return Ok((canonical, SeedMode::Directory));
    }
    if meta.is_file() && (has_archive_suffix(&canonical) || has_archive_suffix(&expanded)) {
        return Ok((canonical, SeedMode::TarArchive));
    }
    Err(Error::InvalidArgument("seed_path must be a directory or a .tar/.tar.gz/.tgz archive".into()))
}

fn has_archive_suffix(path: &Path) -> bool {
    let Some(name) = path.file_name() else { return false };
    let name = name.as_bytes().to_ascii_lowercase();
    [&b".tar"[..], b".tar.gz", b".tgz"].iter().any(|s| name.len() > s.len() && name.ends_with(s))
}

/// Rewrites every member of a (possibly gzipped) tar file through the member rules.
fn normalise_archive<W: Write>(path: &Path, writer: &mut ArchiveWriter<W>, archive_path: &Path) -> Result<()> {
    let mut file = File::open(path).ctx("open", path)?;
    let mut magic = [0u8; 2];
    let mut got = 0;
    while got < magic.len() {
        match file.read(&mut magic[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io("read", path, e)),
        }
    }
    file.seek(SeekFrom::Start(0)).ctx("read", path)?;
    let reader: Box<dyn Read> = if got == 2 && magic == [0x1f, 0x8b] {
        Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(file)))
    } else {
        Box::new(BufReader::new(file))
    };
    let invalid = |e: io::Error| {
        Error::InvalidArgument(format!("seed_path {} is not a valid tar archive: {e}", path.display()))
    };
    let mut rules = MemberRules::new(SymlinkPolicy::Contained);
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries().map_err(invalid)? {
        let mut entry = entry.map_err(invalid)?;
        let Some(member) = rules.check_entry(&entry)? else { continue };
        let size = member.file_size();
        let mut data = Exact::new(&mut entry, size);
        if let Err(e) = writer.append(&member, &mut data) {
            return Err(if data.failed { invalid(e) } else { Error::io("write", archive_path, e) });
        }
    }
    Ok(())
}

/// Packs a host directory's contents.
struct DirPacker<'a, W: Write> {
    writer: &'a mut ArchiveWriter<W>,
    rules: MemberRules,
    /// (device, inode) of multiply-linked files already packed → their member name.
    links: HashMap<(u64, u64), Vec<u8>>,
    /// The temporary archive itself, in case it lives inside the packed tree.
    skip: (u64, u64),
    archive_path: &'a Path,
}

impl<W: Write> DirPacker<'_, W> {
    fn walk(&mut self, dir: &Path, prefix: &[u8]) -> Result<()> {
        let mut names: Vec<OsString> = fs::read_dir(dir)
            .and_then(|it| it.map(|e| e.map(|e| e.file_name())).collect())
            .ctx("read directory", dir)?;
        names.sort();
        for name in names {
            let path = dir.join(&name);
            let meta = fs::symlink_metadata(&path).ctx("inspect", &path)?;
            let mut rel = prefix.to_vec();
            rel.extend_from_slice(name.as_bytes());
            let mode = meta.mode() & 0o7777;
            let mtime = meta.mtime().max(0) as u64;
            let ft = meta.file_type();
            if ft.is_dir() {
                let member = self.rules.check(&rel, EntryType::Directory, None, mode, mtime, 0)?;
                if let Some(member) = member {
                    self.writer.append(&member, io::empty()).ctx("write", self.archive_path)?;
                }
                rel.push(b'/');
                self.walk(&path, &rel)?;
            } else if ft.is_symlink() {
                let target = fs::read_link(&path).ctx("read symlink", &path)?.into_os_string().into_vec();
                let member = self.rules.check(&rel, EntryType::Symlink, Some(&target), mode, mtime, 0)?;
                if let Some(member) = member {
                    self.writer.append(&member, io::empty()).ctx("write", self.archive_path)?;
                }
            } else if ft.is_file() {
                let id = (meta.dev(), meta.ino());
                if id == self.skip {
                    continue;
                }
                if meta.nlink() > 1 {
                    if let Some(first) = self.links.get(&id) {
                        let first = first.clone();
                        let member = self.rules.check(&rel, EntryType::Link, Some(&first), mode, mtime, 0)?;
                        if let Some(member) = member {
                            self.writer.append(&member, io::empty()).ctx("write", self.archive_path)?;
                        }
                        continue;
                    }
                    self.links.insert(id, rel.clone());
                }
                let Some(member) = self.rules.check(&rel, EntryType::Regular, None, mode, mtime, meta.len())? else {
                    continue;
                };
                let file = OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
                    .open(&path)
                    .ctx("open", &path)?;
                let mut data = Exact::new(file, meta.len());
                if let Err(e) = self.writer.append(&member, &mut data) {
                    return Err(if data.failed {
                        Error::io("read", &path, e)
                    } else {
                        Error::io("write", self.archive_path, e)
                    });
                }
            }
            // Fifos, sockets and devices cannot be imported by the guest: skipped.
        }
        Ok(())
    }
}

/// Writes normalised members as a tar stream (GNU headers, long names via the GNU
/// extension, owner 0:0).
struct ArchiveWriter<W: Write> {
    builder: tar::Builder<W>,
    entries: u64,
    bytes: u64,
}

impl<W: Write> ArchiveWriter<W> {
    fn new(out: W) -> Self {
        Self { builder: tar::Builder::new(out), entries: 0, bytes: 0 }
    }

    /// Appends one member; `data` must yield exactly the member's size for files.
    fn append(&mut self, member: &Member, data: impl Read) -> io::Result<()> {
        let mut header = Header::new_gnu();
        header.set_mode(member.mode);
        header.set_mtime(member.mtime);
        header.set_uid(0);
        header.set_gid(0);
        header.set_size(0);
        let name = Path::new(OsStr::from_bytes(&member.name));
        match &member.kind {
            MemberKind::Dir => {
                header.set_entry_type(EntryType::Directory);
                let mut dir_name = member.name.clone();
                dir_name.push(b'/');
                self.builder.append_data(&mut header, Path::new(OsStr::from_bytes(&dir_name)), io::empty())?;
            }
            MemberKind::File { size } => {
                header.set_entry_type(EntryType::Regular);
                header.set_size(*size);
                self.builder.append_data(&mut header, name, data)?;
                self.bytes += size;
            }
            MemberKind::Symlink { target } => {
                header.set_entry_type(EntryType::Symlink);
                self.builder.append_link(&mut header, name, Path::new(OsStr::from_bytes(target)))?;
            }
            MemberKind::HardLink { target } => {
                header.set_entry_type(EntryType::Link);
                self.builder.append_link(&mut header, name, Path::new(OsStr::from_bytes(target)))?;
            }
        }
        self.entries += 1;
        Ok(())
    }
}

/// Reads exactly `remaining` bytes, failing if the source runs short (the header already
/// announced the size); remembers whether the failure came from the source.
struct Exact<R> {
    inner: R,
    remaining: u64,
    failed: bool,
}

impl<R> Exact<R> {
    fn new(inner: R, remaining: u64) -> Self {
        Self { inner, remaining, failed: false }
    }
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let want = buf.len().min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        match self.inner.read(&mut buf[..want]) {
            Ok(0) => {
                self.failed = true;
                Err(io::Error::new(io::ErrorKind::UnexpectedEof, "file shrank while being archived"))
            }
            Ok(n) => {
                self.remaining -= n as u64;
                Ok(n)
            }
            Err(e) => {
                if e.kind() != io::ErrorKind::Interrupted {
                    self.failed = true;
                }
                Err(e)
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Member rules

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
enum Seen {
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
    fn file_size(&self) -> u64 {
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
    /// Every normalised name seen so far (members and their implied parents).
    seen: HashMap<Vec<u8>, Seen>,
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn invalid(message: String) -> Error {
    Error::InvalidArgument(message)
}

impl MemberRules {
    pub(crate) fn new(policy: SymlinkPolicy) -> Self {
        Self { policy, seen: HashMap::new() }
    }

    /// Checks one entry of a `tar::Archive`; `Ok(None)` means "skip it" (`./`, global pax
    /// headers).
    pub(crate) fn check_entry<R: Read>(&mut self, entry: &tar::Entry<'_, R>) -> Result<Option<Member>> {
        let header = entry.header();
        let kind = header.entry_type();
        if kind.is_pax_global_extensions() {
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


// ---------------------------------------------------------------------------------------
// Export

/// Recreates what the guest's `TarExport` streamed for `workspace export` at `output`.
///
/// `output` must not exist; its parent directories are created. Everything is extracted
/// into a temporary sibling and renamed into place at the end (without replacing anything
/// that appeared meanwhile), so a failure leaves nothing behind. A directory export
/// recreates the tree (modes without set-id bits, mtimes, symlinks, hard links); a file
/// export needs exactly one regular-file member, a symlink export exactly one symlink.
/// Member names follow the archive rules; symlink targets are recreated verbatim (nothing
/// is ever written through a link, and no member may sit below one).
pub fn extract_export(archive: impl Read, output: &Path, kind: EntryKind) -> Result<ExportSummary> {
    if matches!(kind, EntryKind::Other) {
        return Err(invalid("only files, symlinks and directories can be exported".into()));
    }
    ensure_absent(output)?;
    let parent = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent).ctx("create directory", &parent)?;
    let staging = tempfile::Builder::new().prefix(".pyro-export-").tempdir_in(&parent).ctx("create a directory in", &parent)?;
    let root = staging.path().join("out");
    fs::create_dir(&root).ctx("create directory", &root)?;
    let result = extract_into(archive, &root, kind).and_then(|(summary, source)| {
        rename_noreplace(&source, output)?;
        Ok(summary)
    });
    if result.is_err() {
        unlock_tree(staging.path());
    }
    result
}

fn ensure_absent(output: &Path) -> Result<()> {
    match fs::symlink_metadata(output) {
        Ok(_) => Err(invalid(format!("output_path already exists: {}", output.display()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("inspect", output, e)),
    }
}

/// Extracts into the fresh directory `root`; returns the summary and what to rename.
fn extract_into(archive: impl Read, root: &Path, kind: EntryKind) -> Result<(ExportSummary, PathBuf)> {
    let mut extractor = Extractor {
        root: root.to_path_buf(),
        rules: MemberRules::new(SymlinkPolicy::Any),
        made_dirs: HashSet::new(),
        dir_meta: BTreeMap::new(),
        members: Vec::new(),
        summary: ExportSummary { entry_count: 0, bytes_written: 0 },
    };
    let bad = |e: io::Error| invalid(format!("exported archive is not a valid tar archive: {e}"));
    let mut tar = tar::Archive::new(archive);
    for entry in tar.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let Some(member) = extractor.rules.check_entry(&entry)? else { continue };
        extractor.member(&member, &mut entry)?;
    }
    extractor.finish()?;
    let source = match kind {
        EntryKind::Directory => root.to_path_buf(),
        EntryKind::File | EntryKind::Symlink => {
            let what = if kind == EntryKind::File { "file" } else { "symlink" };
            if extractor.members.len() != 1 {
                return Err(invalid(format!(
                    "expected exactly one archive member for {what} export, got {}",
                    extractor.members.len()
                )));
            }
            let (name, member_kind) = &extractor.members[0];
            match (kind, member_kind) {
                (EntryKind::File, Seen::File) | (EntryKind::Symlink, Seen::Symlink) => {}
                (EntryKind::File, _) => return Err(invalid("exported archive did not contain a regular file".into())),
                _ => return Err(invalid("exported archive did not contain a symlink".into())),
            }
            root.join(OsStr::from_bytes(name))
        }
        EntryKind::Other => unreachable!("rejected above"),
    };
    Ok((extractor.summary, source))
}

struct Extractor {
    root: PathBuf,
    rules: MemberRules,
    /// Directories known to exist (relative names).
    made_dirs: HashSet<Vec<u8>>,
    /// Directory modes and mtimes, applied deepest-first at the end.
    dir_meta: BTreeMap<Vec<u8>, (u32, u64)>,
    /// Extracted members in order (name, what it became).
    members: Vec<(Vec<u8>, Seen)>,
    summary: ExportSummary,
}

impl Extractor {
    fn full(&self, rel: &[u8]) -> PathBuf {
        self.root.join(OsStr::from_bytes(rel))
    }

    /// Creates the member's missing parents (the rules guarantee they are not links).
    fn parents(&mut self, rel: &[u8]) -> Result<()> {
        let Some(pos) = rel.iter().rposition(|&b| b == b'/') else { return Ok(()) };
        let parent = &rel[..pos];
        if !self.made_dirs.contains(parent) {
            let path = self.full(parent);
            fs::create_dir_all(&path).ctx("create directory", &path)?;
            self.made_dirs.insert(parent.to_vec());
        }
        Ok(())
    }

    /// Removes an earlier non-directory member of the same name.
    fn clear(&self, path: &Path) -> Result<()> {
        match fs::symlink_metadata(path) {
            Ok(_) => fs::remove_file(path).ctx("replace", path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("inspect", path, e)),
        }
    }

    fn member(&mut self, member: &Member, data: &mut impl Read) -> Result<()> {
        let rel = member.name.as_slice();
        self.parents(rel)?;
        let path = self.full(rel);
        let seen = match &member.kind {
            MemberKind::Dir => {
                if !self.made_dirs.contains(rel) {
                    match fs::create_dir(&path) {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                        Err(e) => return Err(Error::io("create directory", &path, e)),
                    }
                    self.made_dirs.insert(rel.to_vec());
                }
                self.dir_meta.insert(rel.to_vec(), (member.mode & HOST_MODE_MASK, member.mtime));
                Seen::Dir
            }
            MemberKind::File { size } => {
                self.clear(&path)?;
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
                    .open(&path)
                    .ctx("create", &path)?;
                let mut exact = Exact::new(data, *size);
                if let Err(e) = io::copy(&mut exact, &mut file) {
                    return Err(if exact.failed {
                        invalid(format!("exported archive is not a valid tar archive: {e}"))
                    } else {
                        Error::io("write", &path, e)
                    });
                }
                file.set_permissions(fs::Permissions::from_mode(member.mode & HOST_MODE_MASK)).ctx("set the mode of", &path)?;
                drop(file);
                set_mtime(&path, member.mtime).ctx("set the mtime of", &path)?;
                self.summary.bytes_written += size;
                Seen::File
            }
            MemberKind::Symlink { target } => {
                self.clear(&path)?;
                std::os::unix::fs::symlink(OsStr::from_bytes(target), &path).ctx("create symlink", &path)?;
                set_mtime(&path, member.mtime).ctx("set the mtime of", &path)?;
                Seen::Symlink
            }
            MemberKind::HardLink { target } => {
                let target_path = self.full(target);
                if target_path != path {
                    self.clear(&path)?;
                    fs::hard_link(&target_path, &path).ctx("create hard link", &path)?;
                }
                let meta = fs::symlink_metadata(&path).ctx("inspect", &path)?;
                if meta.file_type().is_symlink() {
                    Seen::Symlink
                } else {
                    Seen::File
                }
            }
        };
        self.members.push((rel.to_vec(), seen));
        self.summary.entry_count += 1;
        Ok(())
    }

    /// Applies directory modes and mtimes, deepest first.
    fn finish(&mut self) -> Result<()> {
        let mut dirs: Vec<_> = std::mem::take(&mut self.dir_meta).into_iter().collect();
        dirs.sort_by_key(|(rel, _)| std::cmp::Reverse(rel.split(|&b| b == b'/').count()));
        for (rel, (mode, mtime)) in dirs {
            let path = self.full(&rel);
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).ctx("set the mode of", &path)?;
            set_mtime(&path, mtime).ctx("set the mtime of", &path)?;
        }
        Ok(())
    }
}

/// Renames `from` to `to` unless `to` exists (atomically where the filesystem supports
/// `RENAME_NOREPLACE`).
fn rename_noreplace(from: &Path, to: &Path) -> Result<()> {
    let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).map_err(|e| Error::io("rename to", to, io::Error::other(e)));
    let (cf, ct) = (c(from)?, c(to)?);
    // SAFETY: two valid NUL-terminated paths.
    let rc = unsafe { libc::renameat2(libc::AT_FDCWD, cf.as_ptr(), libc::AT_FDCWD, ct.as_ptr(), libc::RENAME_NOREPLACE) };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EEXIST) => Err(invalid(format!("output_path already exists: {}", to.display()))),
        Some(libc::EINVAL) | Some(libc::ENOSYS) => {
            ensure_absent(to)?;
            fs::rename(from, to).ctx("rename to", to)
        }
        _ => Err(Error::io("rename to", to, err)),
    }
}

/// Best effort: makes every directory below `path` writable again so a failed export's
/// staging directory can be removed.
fn unlock_tree(path: &Path) {
    let Ok(meta) = fs::symlink_metadata(path) else { return };
    if !meta.is_dir() {
        return;
    }
    let _ = fs::set_permissions(path, fs::Permissions::from_mode((meta.mode() & 0o7777) | 0o700));
    if let Ok(entries) = fs::read_dir(path) {
        for entry in entries.flatten() {
            unlock_tree(&entry.path());
        }
    }
}

/// Sets the modification time without following symlinks (access time untouched).
fn set_mtime(path: &Path, mtime: u64) -> io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let times = [
        libc::timespec { tv_sec: 0, tv_nsec: libc::UTIME_OMIT },
        libc::timespec { tv_sec: mtime.min(i64::MAX as u64) as _, tv_nsec: 0 },
    ];
    // SAFETY: valid C string and a two-element timespec array.
    let rc = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;
    use std::process::Command;

    /// (name, entry type byte, link name, mode, uid, size) of every member.
    fn members(path: &Path) -> Vec<(String, u8, Option<String>, u32, u64, u64)> {
        let mut archive = tar::Archive::new(File::open(path).unwrap());
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (
                    lossy(&e.path_bytes()),
                    h.entry_type().as_byte(),
                    e.link_name_bytes().map(|l| lossy(&l)),
                    h.mode().unwrap(),
                    h.uid().unwrap(),
                    e.size(),
                )
            })
            .collect()
    }

    fn names(path: &Path) -> Vec<String> {
        members(path).into_iter().map(|m| m.0).collect()
    }

    fn message(r: Result<PreparedArchive>) -> String {
        r.expect_err("should fail").to_string()
    }

    /// A tar whose members are written with raw header names (the tar crate refuses
    /// unsafe ones through its safe API).
    fn raw_tar(path: &Path, members: &[(&str, EntryType, Option<&str>, &[u8])]) {
        let mut builder = tar::Builder::new(File::create(path).unwrap());
        for (name, kind, link, data) in members {
            let mut header = Header::new_gnu();
            {
                let gnu = header.as_gnu_mut().unwrap();
                gnu.name[..name.len()].copy_from_slice(name.as_bytes());
                if let Some(link) = link {
                    gnu.linkname[..link.len()].copy_from_slice(link.as_bytes());
                }
            }
            header.set_entry_type(*kind);
            header.set_mode(0o644);
            header.set_size(data.len() as u64);
            header.set_cksum();
            builder.append(&header, *data).unwrap();
        }
        builder.finish().unwrap();
    }

    #[test]
    fn empty_source_gives_an_empty_archive() {
        let tmp = tempfile::tempdir().unwrap();
        let prepared = prepare_source(None, tmp.path()).unwrap();
        assert_eq!(prepared.mode, SeedMode::Empty);
        assert_eq!((prepared.entry_count, prepared.bytes), (0, 0));
        assert!(prepared.source_path.is_none());
        assert!(names(&prepared.archive).is_empty());
        assert_eq!(fs::metadata(&prepared.archive).unwrap().len() % 512, 0);
        let path = prepared.archive.clone();
        drop(prepared);
        assert!(!path.exists(), "the temporary archive is removed on drop");
        assert_eq!(serde_json::to_string(&SeedMode::TarArchive).unwrap(), "\"tar_archive\"");
    }

    #[test]
    fn directory_seed_keeps_symlinks_hard_links_modes_and_mtimes() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        fs::create_dir_all(src.join("node_modules/pkg")).unwrap();
        fs::create_dir_all(src.join("node_modules/.bin")).unwrap();
        fs::create_dir_all(src.join("empty")).unwrap();
        fs::write(src.join("node_modules/pkg/x"), "#!/bin/sh\necho x\n").unwrap();
        fs::set_permissions(src.join("node_modules/pkg/x"), fs::Permissions::from_mode(0o755)).unwrap();
        symlink("../pkg/x", src.join("node_modules/.bin/x")).unwrap();
        fs::write(src.join("a.txt"), "hello\n").unwrap();
        fs::hard_link(src.join("a.txt"), src.join("b.txt")).unwrap();
        set_mtime(&src.join("a.txt"), 1_000_000).unwrap();
        Command::new("mkfifo").arg(src.join("fifo")).status().unwrap();

        let prepared = prepare_source(Some(&src), tmp.path()).unwrap();
        assert_eq!(prepared.mode, SeedMode::Directory);
        assert_eq!(prepared.source_path.as_deref(), Some(fs::canonicalize(&src).unwrap().as_path()));
        let got = members(&prepared.archive);
        let expected_names =
            ["a.txt", "b.txt", "empty/", "node_modules/", "node_modules/.bin/", "node_modules/.bin/x", "node_modules/pkg/", "node_modules/pkg/x"];
        assert_eq!(got.iter().map(|m| m.0.as_str()).collect::<Vec<_>>(), expected_names);
        assert_eq!(got[0].1, b'0');
        assert_eq!((got[1].1, got[1].2.as_deref()), (b'1', Some("a.txt")));
        assert_eq!((got[5].1, got[5].2.as_deref()), (b'2', Some("../pkg/x")));
        assert_eq!(got[7].3, 0o755);
        assert!(got.iter().all(|m| m.4 == 0), "owner 0:0");
        assert_eq!(prepared.entry_count, 8);
        assert_eq!(prepared.bytes, 6 + 17);
        let mut archive = tar::Archive::new(File::open(&prepared.archive).unwrap());
        let first = archive.entries().unwrap().next().unwrap().unwrap();
        assert_eq!(first.header().mtime().unwrap(), 1_000_000);
    }

    #[test]
    fn directory_seed_rejects_escaping_symlinks() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        fs::create_dir_all(src.join("sub")).unwrap();
        symlink("../../outside", src.join("sub/evil")).unwrap();
        assert_eq!(message(prepare_source(Some(&src), tmp.path())), "symlink sub/evil escapes the workspace");
        fs::remove_file(src.join("sub/evil")).unwrap();
        symlink("/etc/passwd", src.join("abs")).unwrap();
        assert_eq!(message(prepare_source(Some(&src), tmp.path())), "symlink abs escapes the workspace");
        fs::remove_file(src.join("abs")).unwrap();
        symlink("sub/../sub", src.join("odd")).unwrap();
        assert!(message(prepare_source(Some(&src), tmp.path())).contains("has a target with `..` after a directory name"));
    }

    #[test]
    fn tarball_with_leading_dot_slash_is_normalised() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        fs::create_dir_all(src.join("dir")).unwrap();
        fs::write(src.join("dir/f.txt"), "content").unwrap();
        symlink("dir/f.txt", src.join("link")).unwrap();
        let tgz = tmp.path().join("Seed.TGZ");
        let status = Command::new("tar").arg("-C").arg(&src).arg("-czf").arg(&tgz).arg(".").status().unwrap();
        assert!(status.success());
        let prepared = prepare_source(Some(&tgz), tmp.path()).unwrap();
        assert_eq!(prepared.mode, SeedMode::TarArchive);
        let mut got = names(&prepared.archive);
        got.sort();
        assert_eq!(got, ["dir/", "dir/f.txt", "link"]);
        assert_eq!((prepared.entry_count, prepared.bytes), (3, 7));

        // Gzip is recognised by its magic bytes, not by the name.
        let misnamed = tmp.path().join("plain.tar");
        fs::copy(&tgz, &misnamed).unwrap();
        assert_eq!(prepare_source(Some(&misnamed), tmp.path()).unwrap().entry_count, 3);
        // An uncompressed tar.
        let tar_path = tmp.path().join("x.tar");
        assert!(Command::new("tar").arg("-C").arg(&src).arg("-cf").arg(&tar_path).arg("dir").status().unwrap().success());
        assert_eq!(names(&prepare_source(Some(&tar_path), tmp.path()).unwrap().archive), ["dir/", "dir/f.txt"]);
    }

    #[test]
    fn unsafe_tar_members_are_rejected() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path().join("t.tar");
        let check = |members: &[(&str, EntryType, Option<&str>, &[u8])]| {
            raw_tar(&t, members);
            message(prepare_source(Some(&t), tmp.path()))
        };
        assert_eq!(check(&[("../evil", EntryType::Regular, None, b"x")]), "unsafe archive member path: ../evil");
        assert_eq!(check(&[("a/../../evil", EntryType::Regular, None, b"x")]), "unsafe archive member path: a/../../evil");
        assert_eq!(check(&[("/etc/passwd", EntryType::Regular, None, b"x")]), "unsafe archive member path: /etc/passwd");
        assert_eq!(check(&[(".", EntryType::Regular, None, b"x")]), "unsafe archive member path: .");
        assert_eq!(check(&[("a/..", EntryType::Symlink, Some("b"), b"")]), "unsafe archive member path: a/..");
        assert_eq!(check(&[("l", EntryType::Symlink, Some("../x"), b"")]), "symlink l escapes the workspace");
        assert_eq!(check(&[("l", EntryType::Symlink, Some("/x"), b"")]), "symlink l escapes the workspace");
        assert_eq!(check(&[("l", EntryType::Symlink, Some(""), b"")]), "symlink l has an empty target");
        assert_eq!(check(&[("p", EntryType::Fifo, None, b"")]), "unsupported archive member type: p");
        assert_eq!(check(&[("c", EntryType::Char, None, b"")]), "unsupported archive member type: c");
        assert_eq!(
            check(&[("h", EntryType::Link, Some("later"), b""), ("later", EntryType::Regular, None, b"x")]),
            "hard link h must point at an earlier file member: later"
        );
        assert_eq!(
            check(&[("d/", EntryType::Directory, None, b""), ("h", EntryType::Link, Some("d"), b"")]),
            "hard link h must point at an earlier file member: d"
        );
        assert_eq!(
            check(&[("l", EntryType::Symlink, Some("sub"), b""), ("l/x", EntryType::Regular, None, b"x")]),
            "archive member would traverse through a symlink: l/x"
        );
        assert_eq!(
            check(&[("f", EntryType::Regular, None, b"x"), ("f/x", EntryType::Regular, None, b"x")]),
            "archive member f/x conflicts with the earlier file f"
        );
        assert_eq!(
            check(&[("d/", EntryType::Directory, None, b""), ("d", EntryType::Regular, None, b"x")]),
            "archive member d conflicts with an earlier directory"
        );
        fs::write(&t, b"this is not a tar archive, not at all; it is long enough to fill a header block?".repeat(10)).unwrap();
        assert!(message(prepare_source(Some(&t), tmp.path())).starts_with("seed_path "));
    }

    #[test]
    fn safe_tar_members_are_rewritten_cleanly() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path().join("t.tar");
        raw_tar(
            &t,
            &[
                ("./", EntryType::Directory, None, b""),
                (".", EntryType::Directory, None, b""),
                ("./a//b/../c.txt", EntryType::Regular, None, b"abc"),
                ("./a/h", EntryType::Link, Some("./a/c.txt"), b""),
                ("a/up", EntryType::Symlink, Some("../a/c.txt"), b""),
                ("a/dot", EntryType::Symlink, Some("."), b""),
            ],
        );
        let prepared = prepare_source(Some(&t), tmp.path()).unwrap();
        let got: Vec<_> = members(&prepared.archive).into_iter().map(|m| (m.0, m.1, m.2)).collect();
        assert_eq!(
            got,
            [
                ("a/c.txt".to_string(), b'0', None),
                ("a/h".to_string(), b'1', Some("a/c.txt".to_string())),
                ("a/up".to_string(), b'2', Some("../a/c.txt".to_string())),
                ("a/dot".to_string(), b'2', Some(".".to_string())),
            ]
        );
        assert_eq!((prepared.entry_count, prepared.bytes), (4, 3));
    }

    #[test]
    fn long_names_survive_normalisation() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        let deep = format!("{}/{}", "d".repeat(120), "f".repeat(150));
        fs::create_dir_all(src.join("d".repeat(120))).unwrap();
        fs::write(src.join(&deep), "x").unwrap();
        let target = format!("{}/{}", "d".repeat(120), "f".repeat(150));
        symlink(&target, src.join("l")).unwrap();
        let prepared = prepare_source(Some(&src), tmp.path()).unwrap();
        let got = members(&prepared.archive);
        assert_eq!(got[1].0, deep);
        assert_eq!(got[2].2.as_deref(), Some(target.as_str()));
    }

    #[test]
    fn bad_source_paths_have_clear_messages() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("nope");
        assert_eq!(
            message(prepare_source(Some(&missing), tmp.path())),
            format!("seed_path {} does not exist", missing.display())
        );
        let zip = tmp.path().join("x.zip");
        fs::write(&zip, "PK").unwrap();
        assert_eq!(
            message(prepare_source(Some(&zip), tmp.path())),
            "seed_path must be a directory or a .tar/.tar.gz/.tgz archive"
        );
        assert!(has_archive_suffix(Path::new("A.Tar.Gz")));
        assert!(!has_archive_suffix(Path::new(".tar")));
        if let Some(home) = dirs::home_dir() {
            assert_eq!(expand_user(Path::new("~/x/y")), home.join("x/y"));
            assert_eq!(expand_user(Path::new("~")), home);
        }
        assert_eq!(expand_user(Path::new("~other/x")), PathBuf::from("~other/x"));
    }

    fn seeded_archive(tmp: &Path) -> PreparedArchive {
        let src = tmp.join("src");
        fs::create_dir_all(src.join("sub/empty")).unwrap();
        fs::create_dir_all(src.join("ro")).unwrap();
        fs::write(src.join("sub/run.sh"), "#!/bin/sh\n").unwrap();
        fs::set_permissions(src.join("sub/run.sh"), fs::Permissions::from_mode(0o750)).unwrap();
        fs::hard_link(src.join("sub/run.sh"), src.join("run-link")).unwrap();
        symlink("sub/run.sh", src.join("ln")).unwrap();
        fs::write(src.join("ro/f"), "r").unwrap();
        set_mtime(&src.join("sub/run.sh"), 1_234_567).unwrap();
        set_mtime(&src.join("sub/empty"), 7_654_321).unwrap();
        fs::set_permissions(src.join("ro"), fs::Permissions::from_mode(0o555)).unwrap();
        let prepared = prepare_source(Some(&src), tmp).unwrap();
        fs::set_permissions(src.join("ro"), fs::Permissions::from_mode(0o755)).unwrap();
        prepared
    }

    #[test]
    fn directory_export_recreates_the_tree() {
        let tmp = tempfile::tempdir().unwrap();
        let prepared = seeded_archive(tmp.path());
        let out = tmp.path().join("new/parent/out");
        let summary = extract_export(File::open(&prepared.archive).unwrap(), &out, EntryKind::Directory).unwrap();
        assert_eq!(summary, ExportSummary { entry_count: 7, bytes_written: 11 });
        let meta = fs::metadata(out.join("sub/run.sh")).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o750);
        assert_eq!(meta.mtime(), 1_234_567);
        assert_eq!(fs::metadata(out.join("run-link")).unwrap().ino(), meta.ino());
        assert_eq!(fs::read_link(out.join("ln")).unwrap(), Path::new("sub/run.sh"));
        assert_eq!(fs::metadata(out.join("sub/empty")).unwrap().mtime(), 7_654_321);
        assert_eq!(fs::metadata(out.join("ro")).unwrap().mode() & 0o777, 0o555);
        assert_eq!(fs::read_to_string(out.join("ro/f")).unwrap(), "r");
        let leftovers: Vec<_> = fs::read_dir(tmp.path().join("new/parent")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(leftovers, [OsString::from("out")]);
        fs::set_permissions(out.join("ro"), fs::Permissions::from_mode(0o755)).unwrap();

        // The output must not exist.
        let err = extract_export(File::open(&prepared.archive).unwrap(), &out, EntryKind::Directory).unwrap_err();
        assert_eq!(err.to_string(), format!("output_path already exists: {}", out.display()));
    }

    #[test]
    fn export_keeps_any_symlink_target_but_never_writes_through_links() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path().join("t.tar");
        raw_tar(&t, &[("venv/python", EntryType::Symlink, Some("/usr/bin/python3"), b"")]);
        let out = tmp.path().join("out");
        extract_export(File::open(&t).unwrap(), &out, EntryKind::Directory).unwrap();
        assert_eq!(fs::read_link(out.join("venv/python")).unwrap(), Path::new("/usr/bin/python3"));

        raw_tar(&t, &[("l", EntryType::Symlink, Some("/tmp"), b""), ("l/x", EntryType::Regular, None, b"x")]);
        let out = tmp.path().join("out2");
        let err = extract_export(File::open(&t).unwrap(), &out, EntryKind::Directory).unwrap_err();
        assert_eq!(err.to_string(), "archive member would traverse through a symlink: l/x");
        assert!(!out.exists());
    }

    #[test]
    fn failed_export_leaves_nothing_behind() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path().join("t.tar");
        raw_tar(
            &t,
            &[
                ("ro/", EntryType::Directory, None, b""),
                ("ro/f", EntryType::Regular, None, b"data"),
                ("../evil", EntryType::Regular, None, b"x"),
            ],
        );
        let parent = tmp.path().join("exports");
        let out = parent.join("out");
        let err = extract_export(File::open(&t).unwrap(), &out, EntryKind::Directory).unwrap_err();
        assert_eq!(err.to_string(), "unsafe archive member path: ../evil");
        assert!(!out.exists());
        assert_eq!(fs::read_dir(&parent).unwrap().count(), 0, "no staging directory left");
        assert!(!tmp.path().join("evil").exists());

        // A truncated archive fails too, leaving nothing.
        let bytes = fs::read(&t).unwrap();
        let cut = tmp.path().join("cut.tar");
        fs::write(&cut, &bytes[..512 + 512 + 100]).unwrap();
        assert!(extract_export(File::open(&cut).unwrap(), &out, EntryKind::Directory).is_err());
        assert_eq!(fs::read_dir(&parent).unwrap().count(), 0);
    }

    #[test]
    fn file_and_symlink_exports() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path().join("t.tar");
        raw_tar(&t, &[("app.py", EntryType::Regular, None, b"print(1)\n")]);
        let out = tmp.path().join("o/app-copy.py");
        let summary = extract_export(File::open(&t).unwrap(), &out, EntryKind::File).unwrap();
        assert_eq!(summary, ExportSummary { entry_count: 1, bytes_written: 9 });
        assert_eq!(fs::read_to_string(&out).unwrap(), "print(1)\n");
        assert_eq!(fs::read_dir(tmp.path().join("o")).unwrap().count(), 1);

        let out = tmp.path().join("l");
        raw_tar(&t, &[("cur", EntryType::Symlink, Some("/abs/target"), b"")]);
        extract_export(File::open(&t).unwrap(), &out, EntryKind::Symlink).unwrap();
        assert_eq!(fs::read_link(&out).unwrap(), Path::new("/abs/target"));

        let out = tmp.path().join("f2");
        let err = extract_export(File::open(&t).unwrap(), &out, EntryKind::File).unwrap_err();
        assert_eq!(err.to_string(), "exported archive did not contain a regular file");
        raw_tar(&t, &[("a", EntryType::Regular, None, b"1"), ("b", EntryType::Regular, None, b"2")]);
        let err = extract_export(File::open(&t).unwrap(), &out, EntryKind::File).unwrap_err();
        assert_eq!(err.to_string(), "expected exactly one archive member for file export, got 2");
        raw_tar(&t, &[("a", EntryType::Regular, None, b"1")]);
        let err = extract_export(File::open(&t).unwrap(), &out, EntryKind::Symlink).unwrap_err();
        assert_eq!(err.to_string(), "exported archive did not contain a symlink");
        assert!(!out.exists());
        assert_eq!(fs::read_dir(tmp.path()).unwrap().filter(|e| e.as_ref().unwrap().file_name().as_bytes().starts_with(b".pyro-export-")).count(), 0);
    }

    /// Property tests for the member rules, each checked against an independent reference
    /// model built on `std::path::Path::components` (not on the code under test).
    mod props {
        use super::*;
        use proptest::collection::vec;
        use proptest::prelude::*;
        use proptest::sample::{select, Index};
        use std::path::Component;

        fn config(cases: u32) -> ProptestConfig {
            // No regression files: a failing case is reported in the test output instead.
            ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
        }

        const SEGMENTS: &[&str] = &["a", "b", "..", ".", "", "c d"];

        /// Random segments joined with `/`, optionally prefixed with `/` or `./`.
        fn raw_name() -> impl Strategy<Value = String> {
            (select(vec!["", "/", "./"]), vec(select(SEGMENTS), 1..=6))
                .prop_map(|(prefix, segments)| format!("{prefix}{}", segments.join("/")))
        }

        /// A symlink's parent: mostly harmless segments, sometimes any raw name.
        fn parent_dir() -> impl Strategy<Value = String> {
            let plain = vec(select(vec!["a", "b", "c d", ".", ""]), 1..=3).prop_map(|segments| segments.join("/"));
            prop_oneof![3 => plain, 1 => raw_name()]
        }

        /// Reference lexical resolution of `name` from the directory `base`: `None` when
        /// `name` is absolute or when one of its `..` would climb above the root (even if
        /// later components come back down).
        fn model_resolve(base: &[String], name: &str) -> Option<Vec<String>> {
            let mut stack = base.to_vec();
            for component in Path::new(name).components() {
                match component {
                    Component::Prefix(_) | Component::RootDir => return None,
                    Component::CurDir => {}
                    Component::ParentDir => {
                        stack.pop()?;
                    }
                    Component::Normal(s) => stack.push(s.to_str().unwrap().to_owned()),
                }
            }
            Some(stack)
        }

        /// Reference for the documented symlink rule (module docs and `SymlinkPolicy::
        /// Contained`): "`..` only as leading components".
        fn model_dotdot_only_leading(target: &str) -> bool {
            let components: Vec<Component> = Path::new(target).components().collect();
            let leading = components.iter().take_while(|c| matches!(c, Component::CurDir | Component::ParentDir)).count();
            !components[leading..].contains(&Component::ParentDir)
        }

        /// The data of every member, in order.
        fn member_data(path: &Path) -> Vec<Vec<u8>> {
            let mut archive = tar::Archive::new(File::open(path).unwrap());
            archive
                .entries()
                .unwrap()
                .map(|e| {
                    let mut data = Vec::new();
                    e.unwrap().read_to_end(&mut data).unwrap();
                    data
                })
                .collect()
        }

        /// Names in `dir` other than `keep`.
        fn extra_entries(dir: &Path, keep: &[&str]) -> Vec<OsString> {
            fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .filter(|n| !keep.iter().any(|k| n == OsStr::new(k)))
                .collect()
        }

        // ---- Property 3: directory round trip -------------------------------------------

        #[derive(Debug, Clone)]
        struct Tree {
            /// Directories (segments below the root) and their modes.
            dirs: Vec<(Vec<&'static str>, u32)>,
            /// Files: parent directory (root or one of `dirs`), name, bytes, mode.
            files: Vec<(Index, &'static str, Vec<u8>, u32)>,
            /// Symlinks: parent directory, name, what they point at (a directory, a file or
            /// a missing name), whether the target climbs only as far as needed.
            links: Vec<(Index, &'static str, Index, bool)>,
            /// A hard link `hl` in some directory to one of the files.
            hard_link: Option<(Index, Index)>,
        }

        fn tree() -> impl Strategy<Value = Tree> {
            let dir = (vec(select(vec!["a", "b", "c d"]), 1..=3), select(vec![0o755u32, 0o750, 0o700]));
            let file = (any::<Index>(), select(vec!["f", "g", "h.txt"]), vec(any::<u8>(), 0..64), select(vec![0o644u32, 0o755]));
            let link = (any::<Index>(), select(vec!["l1", "l2"]), any::<Index>(), any::<bool>());
            (vec(dir, 0..4), vec(file, 0..5), vec(link, 0..3), proptest::option::of((any::<Index>(), any::<Index>())))
                .prop_map(|(dirs, files, links, hard_link)| Tree { dirs, files, links, hard_link })
        }

        fn join(segments: &[String]) -> String {
            segments.join("/")
        }

        /// A relative symlink target from directory `from` to `to` (both below the root),
        /// `..` only leading.
        fn relative(from: &[String], to: &[String], minimal: bool) -> String {
            let common = if minimal { from.iter().zip(to).take_while(|(a, b)| a == b).count() } else { 0 };
            let mut parts = vec![".."; from.len() - common];
            parts.extend(to[common..].iter().map(String::as_str));
            if parts.is_empty() {
                ".".into()
            } else {
                parts.join("/")
            }
        }

        fn build(tree: &Tree, src: &Path) {
            fs::create_dir(src).unwrap();
            let strings = |segments: &[&str]| segments.iter().map(|s| s.to_string()).collect::<Vec<_>>();
            let mut dirs: Vec<Vec<String>> = vec![Vec::new()];
            for (segments, _) in &tree.dirs {
                fs::create_dir_all(src.join(segments.join("/"))).unwrap();
                dirs.push(strings(segments));
            }
            let mut files: Vec<Vec<String>> = Vec::new();
            for (at, name, data, mode) in &tree.files {
                let mut path = at.get::<Vec<String>>(&dirs).clone();
                path.push(name.to_string());
                let full = src.join(join(&path));
                fs::write(&full, data).unwrap();
                fs::set_permissions(&full, fs::Permissions::from_mode(*mode)).unwrap();
                if !files.contains(&path) {
                    files.push(path);
                }
            }
            let mut targets: Vec<Vec<String>> = dirs.iter().chain(&files).cloned().collect();
            targets.push(vec!["missing".into()]);
            for (at, name, to, minimal) in &tree.links {
                let dir = at.get::<Vec<String>>(&dirs);
                let full = src.join(join(dir)).join(name);
                if fs::symlink_metadata(&full).is_ok() {
                    continue;
                }
                symlink(relative(dir, to.get::<Vec<String>>(&targets), *minimal), &full).unwrap();
            }
            if let (Some((at, to)), false) = (&tree.hard_link, files.is_empty()) {
                let full = src.join(join(at.get::<Vec<String>>(&dirs))).join("hl");
                if fs::symlink_metadata(&full).is_err() {
                    fs::hard_link(src.join(join(to.get::<Vec<String>>(&files))), &full).unwrap();
                }
            }
            for (segments, mode) in &tree.dirs {
                fs::set_permissions(src.join(segments.join("/")), fs::Permissions::from_mode(*mode)).unwrap();
            }
        }

        #[derive(Debug, PartialEq)]
        enum Node {
            Dir { mode: u32, mtime: i64 },
            /// `first_name`: the smallest name sharing this file's inode.
            File { data: Vec<u8>, mode: u32, mtime: i64, first_name: String },
            Symlink { target: OsString, mtime: i64 },
        }

        /// Everything below `root` (not `root` itself), by relative name.
        fn snapshot(root: &Path) -> BTreeMap<String, Node> {
            fn walk(dir: &Path, prefix: &str, out: &mut BTreeMap<String, (Node, u64)>) {
                for entry in fs::read_dir(dir).unwrap() {
                    let entry = entry.unwrap();
                    let rel = format!("{prefix}{}", entry.file_name().to_str().unwrap());
                    let meta = fs::symlink_metadata(entry.path()).unwrap();
                    let node = if meta.is_dir() {
                        walk(&entry.path(), &format!("{rel}/"), out);
                        Node::Dir { mode: meta.mode() & 0o7777, mtime: meta.mtime() }
                    } else if meta.file_type().is_symlink() {
                        Node::Symlink { target: fs::read_link(entry.path()).unwrap().into_os_string(), mtime: meta.mtime() }
                    } else {
                        let data = fs::read(entry.path()).unwrap();
                        Node::File { data, mode: meta.mode() & 0o7777, mtime: meta.mtime(), first_name: String::new() }
                    };
                    out.insert(rel, (node, meta.ino()));
                }
            }
            let mut raw = BTreeMap::new();
            walk(root, "", &mut raw);
            let mut first: HashMap<u64, String> = HashMap::new();
            raw.into_iter()
                .map(|(rel, (mut node, ino))| {
                    if let Node::File { first_name, .. } = &mut node {
                        first_name.clone_from(first.entry(ino).or_insert_with(|| rel.clone()));
                    }
                    (rel, node)
                })
                .collect()
        }

        // ---- Property 4: hostile archives -----------------------------------------------

        /// One raw member: type byte, header name and link name (truncated to 100 bytes),
        /// raw mode field, declared size (`None`: the data's length) and data.
        #[derive(Debug, Clone)]
        struct RawMember {
            kind: u8,
            name: Vec<u8>,
            link: Vec<u8>,
            mode: [u8; 8],
            declared: Option<u64>,
            data: Vec<u8>,
        }

        #[derive(Debug, Clone)]
        enum Input {
            Garbage(Vec<u8>),
            Members { members: Vec<RawMember>, end: bool, cut: Option<Index>, gzip: bool },
        }

        fn name_bytes() -> impl Strategy<Value = Vec<u8>> {
            vec(select(vec![b'a', b'b', b'/', b'.', b' ', 0u8, 0xff]), 0..24)
        }

        /// A pax extended-header record (`"<len> <key>=<value>\n"`, len counting itself).
        fn pax_record() -> impl Strategy<Value = Vec<u8>> {
            let value = prop_oneof![name_bytes(), "[0-9]{0,12}".prop_map(String::into_bytes)];
            (select(vec!["path", "linkpath", "size", "mtime", "uid", "GNU.sparse.size"]), value).prop_map(|(key, value)| {
                let body = key.len() + value.len() + 3;
                let mut total = body + 1;
                while body + total.to_string().len() != total {
                    total = body + total.to_string().len();
                }
                let mut record = format!("{total} {key}=").into_bytes();
                record.extend_from_slice(&value);
                record.push(b'\n');
                record
            })
        }

        fn raw_member() -> impl Strategy<Value = RawMember> {
            // Mostly plausible members, so that many archives get past the first one.
            let kind = prop_oneof![
                24 => select(b"0000055221".to_vec()),
                1 => select(b"673LKxgSDV".to_vec()),
                1 => any::<u8>(),
            ];
            let safe = (select(vec!["", "./"]), vec(select(vec!["a", "b", "c d", "."]), 1..=3))
                .prop_map(|(prefix, segments)| format!("{prefix}{}", segments.join("/")).into_bytes());
            let name = move || {
                prop_oneof![16 => safe.clone(), 1 => raw_name().prop_map(String::into_bytes), 1 => name_bytes()]
            };
            let mode = prop_oneof![
                4 => select(vec![*b"0000644\0", *b"0000755\0", *b"0007777\0", [0u8; 8], *b"zzzzzzz\0"]),
                1 => any::<[u8; 8]>(),
            ];
            let data = prop_oneof![vec(any::<u8>(), 0..600), name_bytes(), vec(pax_record(), 1..3).prop_map(|r| r.concat())];
            let declared = prop_oneof![8 => Just(None), 1 => (0u64..2000).prop_map(Some)];
            (kind, name(), name(), mode, declared, data)
                .prop_map(|(kind, name, link, mode, declared, data)| RawMember { kind, name, link, mode, declared, data })
        }

        fn input() -> impl Strategy<Value = Input> {
            prop_oneof![
                1 => vec(any::<u8>(), 0..2048).prop_map(Input::Garbage),
                1 => vec(any::<u8>(), 0..512).prop_map(|rest| Input::Garbage([&[0x1f, 0x8b][..], &rest].concat())),
                8 => (vec(raw_member(), 0..8), any::<bool>(), proptest::option::weighted(0.1, any::<Index>()), proptest::bool::weighted(0.2))
                    .prop_map(|(members, end, cut, gzip)| Input::Members { members, end, cut, gzip }),
            ]
        }

        fn input_bytes(input: &Input) -> Vec<u8> {
            let (members, end, cut, gzip) = match input {
                Input::Garbage(bytes) => return bytes.clone(),
                Input::Members { members, end, cut, gzip } => (members, *end, cut, *gzip),
            };
            let mut out = Vec::new();
            for m in members {
                let mut header = Header::new_gnu();
                {
                    let gnu = header.as_gnu_mut().unwrap();
                    let n = m.name.len().min(gnu.name.len());
                    gnu.name[..n].copy_from_slice(&m.name[..n]);
                    let n = m.link.len().min(gnu.linkname.len());
                    gnu.linkname[..n].copy_from_slice(&m.link[..n]);
                    gnu.mode = m.mode;
                }
                header.set_entry_type(EntryType::new(m.kind));
                header.set_size(m.declared.unwrap_or(m.data.len() as u64));
                header.set_cksum();
                out.extend_from_slice(header.as_bytes());
                out.extend_from_slice(&m.data);
                out.resize(out.len().next_multiple_of(512), 0);
            }
            if end {
                out.extend_from_slice(&[0; 1024]);
            }
            if let Some(cut) = cut {
                out.truncate(cut.index(out.len() + 1));
            }
            if gzip {
                let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                encoder.write_all(&out).unwrap();
                out = encoder.finish().unwrap();
            }
            out
        }

        proptest! {
            #![proptest_config(config(300))]

            /// Property 1: a regular member is accepted exactly when its name is relative and
            /// normalises (lexically) to a non-empty name that never climbs above the root;
            /// the rewritten archive holds the normalised name. A trailing `/` on an empty
            /// regular member marks a directory (pre-POSIX archives, see `MemberRules::check`):
            /// it is accepted when the name normalises inside the root, and dropped when it
            /// normalises to the root itself.
            #[test]
            fn regular_member_names_follow_lexical_normalisation(
                name in raw_name(),
                data in prop_oneof![Just(Vec::new()), vec(any::<u8>(), 1..16)],
            ) {
                let tmp = tempfile::tempdir().unwrap();
                let t = tmp.path().join("t.tar");
                raw_tar(&t, &[(name.as_str(), EntryType::Regular, None, data.as_slice())]);
                let is_dir = name.ends_with('/') && data.is_empty();
                let normalised = model_resolve(&[], &name).map(|c| join(&c));
                let result = prepare_source(Some(&t), tmp.path());
                match (result, normalised) {
                    (Ok(prepared), Some(norm)) if is_dir => {
                        let got = members(&prepared.archive);
                        if norm.is_empty() {
                            prop_assert!(got.is_empty(), "{:?}: {:?}", name, got);
                        } else {
                            prop_assert_eq!(got, vec![(format!("{norm}/"), b'5', None, 0o644, 0, 0)]);
                        }
                    }
                    (Ok(prepared), Some(norm)) if !norm.is_empty() => {
                        prop_assert!(norm.split('/').all(|s| !matches!(s, "" | "." | "..")), "{:?}", norm);
                        prop_assert_eq!(members(&prepared.archive), vec![(norm, b'0', None, 0o644, 0, data.len() as u64)]);
                        prop_assert_eq!(member_data(&prepared.archive), vec![data.clone()]);
                        prop_assert_eq!((prepared.entry_count, prepared.bytes), (1, data.len() as u64));
                    }
                    (Err(e), norm) if !is_dir || norm.is_none() => {
                        prop_assert!(norm.is_none_or(|n| n.is_empty()), "{:?} refused: {}", name, e);
                        prop_assert_eq!(e.to_string(), format!("unsafe archive member path: {name}"));
                    }
                    (got, norm) => prop_assert!(false, "{:?} (dir: {}): got {:?}, model {:?}", name, is_dir, got.map(|p| members(&p.archive)), norm),
                }
            }
        }

        proptest! {
            #![proptest_config(config(400))]

            /// Property 2: a symlink member is accepted for seeding exactly when its name is
            /// safe (property 1), its target is non-empty, relative, resolves lexically from
            /// the member's parent without ever climbing above the root, and uses `..` only
            /// as leading components (module docs, `SymlinkPolicy::Contained`). The rewritten
            /// target resolves to the same place (not necessarily byte for byte: the tar
            /// crate's writer drops empty and inner `.` components of short link names).
            /// Export (`SymlinkPolicy::Any`) takes any non-empty target and recreates it
            /// verbatim.
            #[test]
            fn symlink_targets_must_resolve_inside_the_root(parent in parent_dir(), target in raw_name()) {
                let tmp = tempfile::tempdir().unwrap();
                let t = tmp.path().join("t.tar");
                let name = format!("{parent}/l");
                raw_tar(&t, &[(name.as_str(), EntryType::Symlink, Some(target.as_str()), &b""[..])]);
                let components = model_resolve(&[], &name).filter(|c| !c.is_empty());
                let expected = match &components {
                    None => Err(format!("unsafe archive member path: {name}")),
                    Some(_) if target.is_empty() => Err(format!("symlink {name} has an empty target")),
                    Some(c) if model_resolve(&c[..c.len() - 1], &target).is_none() => {
                        Err(format!("symlink {name} escapes the workspace"))
                    }
                    Some(_) if !model_dotdot_only_leading(&target) => {
                        Err(format!("symlink {name} has a target with `..` after a directory name: {target}"))
                    }
                    Some(c) => Ok(c.clone()),
                };
                match (prepare_source(Some(&t), tmp.path()), expected) {
                    (Ok(prepared), Ok(c)) => {
                        let got = members(&prepared.archive);
                        prop_assert_eq!(got.len(), 1);
                        let (got_name, kind, link, ..) = got[0].clone();
                        prop_assert_eq!((got_name, kind), (join(&c), b'2'));
                        let link = link.unwrap();
                        let parent = &c[..c.len() - 1];
                        prop_assert_eq!(model_resolve(parent, &link), model_resolve(parent, &target), "rewritten {:?}", link);
                        prop_assert!(model_dotdot_only_leading(&link), "rewritten {:?}", link);
                    }
                    (Err(e), Err(message)) => prop_assert_eq!(e.to_string(), message),
                    (got, expected) => prop_assert!(false, "{:?} -> {:?}: got {:?}, model {:?}", name, target, got.map(|p| members(&p.archive)), expected),
                }

                let out = tmp.path().join("out");
                let exported = extract_export(File::open(&t).unwrap(), &out, EntryKind::Directory);
                match (exported, &components) {
                    (Ok(summary), Some(c)) if !target.is_empty() => {
                        prop_assert_eq!(summary.entry_count, 1);
                        prop_assert_eq!(fs::read_link(out.join(join(c))).unwrap().into_os_string(), OsString::from(&target));
                    }
                    (Err(_), c) if c.is_none() || target.is_empty() => prop_assert!(!out.exists()),
                    (got, c) => prop_assert!(false, "export {:?} -> {:?}: got {:?}, model {:?}", name, target, got, c),
                }
            }
        }

        proptest! {
            #![proptest_config(config(200))]

            /// Property 3: packing a directory and extracting the archive reproduces every
            /// file (bytes, mode, mtime), directory (mode, mtime), symlink (target, mtime)
            /// and hard link.
            #[test]
            fn directory_round_trip(tree in tree()) {
                let tmp = tempfile::tempdir().unwrap();
                let src = tmp.path().join("src");
                build(&tree, &src);
                let before = snapshot(&src);
                let prepared = prepare_source(Some(&src), tmp.path()).unwrap();
                let out = tmp.path().join("out");
                let summary = extract_export(File::open(&prepared.archive).unwrap(), &out, EntryKind::Directory).unwrap();
                prop_assert_eq!(summary, ExportSummary { entry_count: prepared.entry_count, bytes_written: prepared.bytes });
                prop_assert_eq!(prepared.entry_count, before.len() as u64);
                let distinct_bytes: u64 = before
                    .iter()
                    .filter_map(|(rel, node)| match node {
                        Node::File { data, first_name, .. } if first_name == rel => Some(data.len() as u64),
                        _ => None,
                    })
                    .sum();
                prop_assert_eq!(prepared.bytes, distinct_bytes);
                prop_assert_eq!(snapshot(&out), before);
            }
        }

        proptest! {
            #![proptest_config(config(500))]

            /// Property 4: arbitrary bytes, garbage after a gzip magic, and hand-made
            /// archives with odd names, types, modes, sizes, pax/GNU records and truncation
            /// never panic `prepare_source` or `extract_export`; what `prepare_source`
            /// accepts it accepts again unchanged, and a failed export leaves nothing behind.
            #[test]
            fn hostile_archives_never_panic(input in input()) {
                let tmp = tempfile::tempdir().unwrap();
                let t = tmp.path().join("t.tar");
                fs::write(&t, input_bytes(&input)).unwrap();
                if let Ok(prepared) = prepare_source(Some(&t), tmp.path()) {
                    let again = prepare_source(Some(&prepared.archive), tmp.path());
                    prop_assert!(again.is_ok(), "re-preparing failed: {:?}", again.map(|p| p.entry_count));
                    let again = again.unwrap();
                    prop_assert_eq!(members(&again.archive), members(&prepared.archive));
                    prop_assert_eq!((again.entry_count, again.bytes), (prepared.entry_count, prepared.bytes));
                    for (name, kind, link, ..) in members(&prepared.archive) {
                        let name = if kind == b'5' { name.strip_suffix('/').unwrap_or("").to_owned() } else { name };
                        prop_assert!(!name.is_empty() && name.split('/').all(|s| !matches!(s, "" | "." | "..")), "member {:?}", name);
                        if kind == b'1' {
                            let link = link.unwrap_or_default();
                            prop_assert!(link.split('/').all(|s| !matches!(s, "" | "." | "..")), "hard link {:?} -> {:?}", name, link);
                        }
                    }
                }
                let out = tmp.path().join("out");
                if extract_export(File::open(&t).unwrap(), &out, EntryKind::Directory).is_err() {
                    prop_assert!(!out.exists());
                }
                unlock_tree(tmp.path());
                prop_assert_eq!(extra_entries(tmp.path(), &["t.tar", "out"]), Vec::<OsString>::new());
            }
        }
    }
}
