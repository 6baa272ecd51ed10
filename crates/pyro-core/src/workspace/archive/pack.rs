//! Packing seed and sync sources into clean tars for the guest's `TarImport`.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tar::{EntryType, Header};

use pyro_protocol::archive_rules::{MemberRules, MemberType, RawMember, Rules};

use super::common::Exact;
use super::rules::{check_entry, Member, MemberKind};
use crate::error::{Error, IoContext, Result};

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
    let temp = tempfile::Builder::new().prefix(".pyro-seed-").suffix(".tar").tempfile_in(temp_dir).ctx("create temporary archive in", temp_dir)?;
    let (file, temp_path) = temp.into_parts();
    let archive_path = temp_path.to_path_buf();
    let own_id = file.metadata().map(|m| (m.dev(), m.ino())).ctx("inspect", &archive_path)?;
    let mut writer = ArchiveWriter::new(BufWriter::new(file));
    let mode = match &resolved {
        None => SeedMode::Empty,
        Some((path, SeedMode::Directory)) => {
            let mut packer = DirPacker {
                writer: &mut writer,
                rules: MemberRules::new(Rules::HOST_SOURCE),
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
    Ok(PreparedArchive { mode, source_path: resolved.map(|(p, _)| p), archive: archive_path, entry_count, bytes, _temp: temp_path })
}

/// Expands, canonicalises and classifies a source path.
fn resolve_source(raw: &Path) -> Result<(PathBuf, SeedMode)> {
    let expanded = expand_user(raw);
    let canonical = match fs::canonicalize(&expanded) {
        Ok(p) => p,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let shown = std::path::absolute(&expanded).unwrap_or(expanded);
            return Err(Error::not_found_because("path", shown.display().to_string(), format!("seed_path {} does not exist", shown.display())));
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

pub(super) fn has_archive_suffix(path: &Path) -> bool {
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
    let reader: Box<dyn Read> =
        if got == 2 && magic == [0x1f, 0x8b] { Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(file))) } else { Box::new(BufReader::new(file)) };
    let invalid = |e: io::Error| Error::InvalidArgument(format!("seed_path {} is not a valid tar archive: {e}", path.display()));
    let mut rules = MemberRules::new(Rules::HOST_SOURCE);
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries().map_err(invalid)? {
        let mut entry = entry.map_err(invalid)?;
        let Some(member) = check_entry(&mut rules, &entry)? else { continue };
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
    /// Checks one member of the tree against the rules.
    fn check(&mut self, name: &[u8], kind: MemberType, link: Option<&[u8]>, size: u64, mode: u32, mtime: u64) -> Result<Option<Member>> {
        Ok(self.rules.check(&RawMember { name, kind, link, size }, mode, mtime)?)
    }

    fn walk(&mut self, dir: &Path, prefix: &[u8]) -> Result<()> {
        let mut names: Vec<OsString> = fs::read_dir(dir).and_then(|it| it.map(|e| e.map(|e| e.file_name())).collect()).ctx("read directory", dir)?;
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
                let member = self.check(&rel, MemberType::Directory, None, 0, mode, mtime)?;
                if let Some(member) = member {
                    self.writer.append(&member, io::empty()).ctx("write", self.archive_path)?;
                }
                rel.push(b'/');
                self.walk(&path, &rel)?;
            } else if ft.is_symlink() {
                let target = fs::read_link(&path).ctx("read symlink", &path)?.into_os_string().into_vec();
                let member = self.check(&rel, MemberType::Symlink, Some(&target), 0, mode, mtime)?;
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
                        let member = self.check(&rel, MemberType::HardLink, Some(&first), 0, mode, mtime)?;
                        if let Some(member) = member {
                            self.writer.append(&member, io::empty()).ctx("write", self.archive_path)?;
                        }
                        continue;
                    }
                    self.links.insert(id, rel.clone());
                }
                let Some(member) = self.check(&rel, MemberType::Regular, None, meta.len(), mode, mtime)? else {
                    continue;
                };
                let file = OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(&path).ctx("open", &path)?;
                let mut data = Exact::new(file, meta.len());
                if let Err(e) = self.writer.append(&member, &mut data) {
                    return Err(if data.failed { Error::io("read", &path, e) } else { Error::io("write", self.archive_path, e) });
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
