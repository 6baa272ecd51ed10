//! `workspace export`: recreating the guest's archive on the host.
//!
//! Nothing is ever written through a symlink, even where the host filesystem folds case
//! or normalises names (so that `A` and `a` are one entry although the member rules,
//! keyed by exact bytes, see two):
//!
//! * every parent directory is opened one component at a time with
//!   `openat(O_DIRECTORY | O_NOFOLLOW)` from the staging root, and every entry is created
//!   relative to that descriptor (`O_CREAT | O_EXCL | O_NOFOLLOW`, `mkdirat`, `linkat`,
//!   `symlinkat`), so a symlink met on the way is an error, never followed;
//! * symlinks, and hard links to them, are created last, after every file and directory
//!   (like GNU tar's delayed links), so no member is ever extracted below one.
//!
//! Modes lose the set-user-ID and set-group-ID bits and group/world write permission.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{CString, OsStr};
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use pyro_protocol::archive_rules::{MemberRules, Reason, Rules, Seen};

use super::common::{invalid, lossy, Exact};
use super::limits::{show_bytes, Refused, TarGuard, TarLimits};
use super::rules::{check_entry, Member, MemberKind};
use crate::error::{Error, IoContext, Result};
use crate::guest::EntryKind;

/// Permission bits kept when recreating exported files on the host: no set-user-ID or
/// set-group-ID bit and no group or world write permission (the sticky bit stays).
const HOST_MODE_MASK: u32 = 0o1755;

/// What [`extract_export`] recreated on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ExportSummary {
    /// Archive members recreated.
    pub entry_count: u64,
    /// Regular-file bytes written.
    pub bytes_written: u64,
}

/// Recreates what the guest's `TarExport` streamed for `workspace export` at `output`,
/// within the default [`TarLimits`] (see [`extract_export_with`]).
pub fn extract_export(archive: impl Read, output: &Path, kind: EntryKind) -> Result<ExportSummary> {
    extract_export_with(archive, output, kind, TarLimits::default())
}

/// Recreates what the guest's `TarExport` streamed for `workspace export` at `output`.
///
/// `output` must not exist; its parent directories are created. Everything is extracted
/// into a temporary sibling and renamed into place at the end (without replacing anything
/// that appeared meanwhile), so a failure leaves nothing behind. A directory export
/// recreates the tree (masked modes, mtimes, symlinks, hard links); a file export needs
/// exactly one regular-file member, a symlink export exactly one symlink. Member names
/// follow the archive rules; symlink targets are recreated verbatim (nothing is ever
/// written through a link, see the module docs). The stream passes a
/// [`super::TarScanner`] with `limits`, and the files written may not exceed
/// [`TarLimits::max_file_bytes`].
pub fn extract_export_with(archive: impl Read, output: &Path, kind: EntryKind, limits: TarLimits) -> Result<ExportSummary> {
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
    let result = extract_into(archive, &root, kind, limits).and_then(|(summary, source)| {
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

/// The error for a failed read of the archive: the scanner's refusal, or "not a tar".
fn archive_error(e: io::Error) -> Error {
    match Refused::from_io(&e) {
        Some(refused) => refused.into(),
        None => invalid(format!("exported archive is not a valid tar archive: {e}")),
    }
}

/// Extracts into the fresh directory `root`; returns the summary and what to rename.
fn extract_into(archive: impl Read, root: &Path, kind: EntryKind, limits: TarLimits) -> Result<(ExportSummary, PathBuf)> {
    let root_fd = open_path_dir(root).ctx("open", root)?;
    let mut extractor = Extractor::new(root_fd, root.to_path_buf(), limits);
    let mut tar = tar::Archive::new(TarGuard::new(archive, limits));
    for entry in tar.entries().map_err(archive_error)? {
        let mut entry = entry.map_err(archive_error)?;
        let Some(member) = check_entry(&mut extractor.rules, &entry)? else { continue };
        extractor.member(&member, &mut entry)?;
    }
    extractor.finish()?;
    let source = match kind {
        EntryKind::Directory => root.to_path_buf(),
        EntryKind::File | EntryKind::Symlink => {
            let what = if kind == EntryKind::File { "file" } else { "symlink" };
            let count = extractor.summary.entry_count;
            let first = extractor.first.as_ref().filter(|_| count == 1);
            let Some(name) = first else {
                return Err(invalid(format!("expected exactly one archive member for {what} export, got {count}")));
            };
            match (kind, extractor.kinds.get(name)) {
                (EntryKind::File, Some(Seen::File)) | (EntryKind::Symlink, Some(Seen::Symlink)) => {}
                (EntryKind::File, _) => return Err(invalid("exported archive did not contain a regular file".into())),
                _ => return Err(invalid("exported archive did not contain a symlink".into())),
            }
            root.join(OsStr::from_bytes(name))
        }
        EntryKind::Other => unreachable!("rejected above"),
    };
    Ok((extractor.summary, source))
}

/// A symlink member and the hard links to it, created at the end.
struct LinkGroup {
    target: Vec<u8>,
    mtime: u64,
    /// Names that are still this link (a later member may have replaced one).
    names: Vec<Vec<u8>>,
}

struct Extractor {
    root: OwnedFd,
    root_path: PathBuf,
    rules: MemberRules,
    limits: TarLimits,
    /// What every member name currently is (on disk, or a pending symlink).
    kinds: HashMap<Vec<u8>, Seen>,
    /// Directory modes and mtimes, applied deepest-first at the end.
    dir_meta: BTreeMap<Vec<u8>, (u32, u64)>,
    /// Delayed symlinks, in archive order.
    links: Vec<LinkGroup>,
    /// Name → its group in `links`.
    link_of: HashMap<Vec<u8>, usize>,
    /// The last parent directory opened (members come grouped by directory).
    parent: Option<(Vec<u8>, OwnedFd)>,
    /// The first member's name (single-member exports).
    first: Option<Vec<u8>>,
    summary: ExportSummary,
}

/// `a/b/c` → (`a/b`, `c`); `c` → (``, `c`).
fn split(rel: &[u8]) -> (&[u8], &[u8]) {
    match rel.iter().rposition(|&b| b == b'/') {
        Some(pos) => (&rel[..pos], &rel[pos + 1..]),
        None => (&[], rel),
    }
}

impl Extractor {
    fn new(root: OwnedFd, root_path: PathBuf, limits: TarLimits) -> Self {
        Self {
            root,
            root_path,
            rules: MemberRules::new(Rules::HOST_FROM_GUEST),
            limits,
            kinds: HashMap::new(),
            dir_meta: BTreeMap::new(),
            links: Vec::new(),
            link_of: HashMap::new(),
            parent: None,
            first: None,
            summary: ExportSummary { entry_count: 0, bytes_written: 0 },
        }
    }

    fn full(&self, rel: &[u8]) -> PathBuf {
        self.root_path.join(OsStr::from_bytes(rel))
    }

    /// Opens the directory `rel` below the root one component at a time, never following
    /// a symlink; missing components are created (mode 0755 less the umask) when `create`.
    fn walk(&self, rel: &[u8], create: bool) -> Result<OwnedFd> {
        let mut current = dup(self.root.as_raw_fd()).ctx("open", &self.root_path)?;
        if rel.is_empty() {
            return Ok(current);
        }
        let mut end = 0;
        for component in rel.split(|&b| b == b'/') {
            end += component.len();
            let so_far = &rel[..end];
            end += 1;
            let at = current.as_raw_fd();
            let opened = match open_dir_at(at, component) {
                Err(e) if create && e.raw_os_error() == Some(libc::ENOENT) => {
                    match mkdir_at(at, component, 0o755) {
                        Ok(()) => {}
                        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                        Err(e) => return Err(Error::io("create directory", self.full(so_far), e)),
                    }
                    open_dir_at(at, component)
                }
                other => other,
            };
            current = match opened {
                Ok(fd) => fd,
                Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP) | Some(libc::ENOTDIR)) => {
                    return Err(invalid(format!(
                        "exported archive member path {} is a symlink or a file on the host; refusing to write through it",
                        lossy(so_far)
                    )))
                }
                Err(e) => return Err(Error::io("open directory", self.full(so_far), e)),
            };
        }
        Ok(current)
    }

    /// The descriptor of the member's parent directory (created if missing); valid until
    /// the next call.
    fn parent_fd(&mut self, parent: &[u8]) -> Result<RawFd> {
        if parent.is_empty() {
            return Ok(self.root.as_raw_fd());
        }
        if let Some((name, fd)) = &self.parent {
            if name.as_slice() == parent {
                return Ok(fd.as_raw_fd());
            }
        }
        let fd = self.walk(parent, true)?;
        let raw = fd.as_raw_fd();
        self.parent = Some((parent.to_vec(), fd));
        Ok(raw)
    }

    /// Makes room for a new member `rel`: removes an earlier file of that name, or takes
    /// the name out of its pending symlink group.
    fn replace(&mut self, parent: RawFd, rel: &[u8], leaf: &[u8]) -> Result<()> {
        match self.kinds.get(rel) {
            Some(Seen::File) => match unlink_at(parent, leaf) {
                Ok(()) => Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
                Err(e) => Err(Error::io("replace", self.full(rel), e)),
            },
            Some(Seen::Symlink) => {
                if let Some(group) = self.link_of.remove(rel) {
                    self.links[group].names.retain(|n| n.as_slice() != rel);
                }
                Ok(())
            }
            // The rules refuse a non-directory over a directory.
            Some(Seen::Dir) => Err(self.rules.rules().refusal(rel, Reason::OverDirectory).into()),
            None => Ok(()),
        }
    }

    fn member(&mut self, member: &Member, data: &mut impl Read) -> Result<()> {
        let rel = member.name.as_slice();
        let (parent_rel, leaf) = split(rel);
        let parent = self.parent_fd(parent_rel)?;
        let path = self.full(rel);
        let seen = match &member.kind {
            MemberKind::Dir => {
                match mkdir_at(parent, leaf, 0o700) {
                    Ok(()) => {}
                    Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                        // Already there: it must be a real directory.
                        self.walk(rel, false)?;
                    }
                    Err(e) => return Err(Error::io("create directory", &path, e)),
                }
                self.dir_meta.insert(rel.to_vec(), (member.mode & HOST_MODE_MASK, member.mtime));
                Seen::Dir
            }
            MemberKind::File { size } => {
                if self.summary.bytes_written.saturating_add(*size) > self.limits.max_file_bytes {
                    return Err(Error::LimitExceeded(format!("archive refused: the exported files hold more than {}", show_bytes(self.limits.max_file_bytes))));
                }
                self.replace(parent, rel, leaf)?;
                let mut file = File::from(create_file_at(parent, leaf).ctx("create", &path)?);
                let mut exact = Exact::new(data, *size);
                if let Err(e) = io::copy(&mut exact, &mut file) {
                    return Err(if exact.failed { archive_error(e) } else { Error::io("write", &path, e) });
                }
                file.set_permissions(fs::Permissions::from_mode(member.mode & HOST_MODE_MASK)).ctx("set the mode of", &path)?;
                set_times_at(file.as_raw_fd(), None, member.mtime).ctx("set the mtime of", &path)?;
                self.summary.bytes_written += size;
                Seen::File
            }
            MemberKind::Symlink { target } => {
                self.replace(parent, rel, leaf)?;
                self.link_of.insert(rel.to_vec(), self.links.len());
                self.links.push(LinkGroup { target: target.clone(), mtime: member.mtime, names: vec![rel.to_vec()] });
                Seen::Symlink
            }
            MemberKind::HardLink { target } => match self.kinds.get(target.as_slice()).copied() {
                _ if target.as_slice() == rel => self.kinds.get(rel).copied().unwrap_or(Seen::File),
                Some(Seen::Symlink) => {
                    self.replace(parent, rel, leaf)?;
                    let group = self.link_of[target.as_slice()];
                    self.links[group].names.push(rel.to_vec());
                    self.link_of.insert(rel.to_vec(), group);
                    Seen::Symlink
                }
                Some(Seen::File) => {
                    self.replace(parent, rel, leaf)?;
                    let (target_parent, target_leaf) = split(target);
                    let from = self.walk(target_parent, false)?;
                    // `parent` may have been the cached descriptor `walk` leaves alone.
                    link_at(from.as_raw_fd(), target_leaf, parent, leaf).ctx("create hard link", &path)?;
                    Seen::File
                }
                _ => {
                    let reason = Reason::HardLinkNotEarlier { target: lossy(target) };
                    return Err(self.rules.rules().refusal(rel, reason).into());
                }
            },
        };
        self.kinds.insert(rel.to_vec(), seen);
        if self.first.is_none() {
            self.first = Some(rel.to_vec());
        }
        self.summary.entry_count += 1;
        Ok(())
    }

    /// Creates the delayed symlinks, then applies directory modes and mtimes, deepest
    /// first.
    fn finish(&mut self) -> Result<()> {
        self.parent = None;
        for group in std::mem::take(&mut self.links) {
            let mut primary: Option<(OwnedFd, &[u8])> = None;
            for name in &group.names {
                let (parent, leaf) = split(name);
                let dir = self.walk(parent, false)?;
                let path = self.full(name);
                match &primary {
                    None => {
                        symlink_at(&group.target, dir.as_raw_fd(), leaf).ctx("create symlink", &path)?;
                        set_times_at(dir.as_raw_fd(), Some(leaf), group.mtime).ctx("set the mtime of", &path)?;
                        primary = Some((dir, leaf));
                    }
                    Some((first_dir, first_leaf)) => {
                        link_at(first_dir.as_raw_fd(), first_leaf, dir.as_raw_fd(), leaf).ctx("create hard link", &path)?;
                    }
                }
            }
        }
        let mut dirs: Vec<_> = std::mem::take(&mut self.dir_meta).into_iter().collect();
        dirs.sort_by_key(|(rel, _)| std::cmp::Reverse(rel.split(|&b| b == b'/').count()));
        for (rel, (mode, mtime)) in dirs {
            let path = self.full(&rel);
            let dir = File::from(self.walk(&rel, false)?);
            dir.set_permissions(fs::Permissions::from_mode(mode)).ctx("set the mode of", &path)?;
            set_times_at(dir.as_raw_fd(), None, mtime).ctx("set the mtime of", &path)?;
        }
        Ok(())
    }
}

// ---- *at system calls ----------------------------------------------------------------

fn c_name(name: &[u8]) -> io::Result<CString> {
    CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn owned(fd: libc::c_int) -> OwnedFd {
    // SAFETY: `fd` was just returned by a successful open and is owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn dup(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: plain fcntl on a descriptor we hold.
    check(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) }).map(owned)
}

fn open_path_dir(path: &Path) -> io::Result<OwnedFd> {
    let c = c_name(path.as_os_str().as_bytes())?;
    // SAFETY: valid C string.
    check(unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC) }).map(owned)
}

/// Opens the directory `name` in `dir`; a symlink there fails (`ELOOP`).
fn open_dir_at(dir: RawFd, name: &[u8]) -> io::Result<OwnedFd> {
    let c = c_name(name)?;
    // SAFETY: valid descriptor and C string.
    check(unsafe { libc::openat(dir, c.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC) }).map(owned)
}

fn mkdir_at(dir: RawFd, name: &[u8], mode: libc::mode_t) -> io::Result<()> {
    let c = c_name(name)?;
    // SAFETY: valid descriptor and C string.
    check(unsafe { libc::mkdirat(dir, c.as_ptr(), mode) }).map(drop)
}

/// Creates a new file (never an existing one, never through a symlink), mode 0600.
fn create_file_at(dir: RawFd, name: &[u8]) -> io::Result<OwnedFd> {
    let c = c_name(name)?;
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: valid descriptor and C string.
    check(unsafe { libc::openat(dir, c.as_ptr(), flags, 0o600 as libc::c_uint) }).map(owned)
}

/// Removes a non-directory (a symlink itself, never what it points at).
fn unlink_at(dir: RawFd, name: &[u8]) -> io::Result<()> {
    let c = c_name(name)?;
    // SAFETY: valid descriptor and C string.
    check(unsafe { libc::unlinkat(dir, c.as_ptr(), 0) }).map(drop)
}

fn symlink_at(target: &[u8], dir: RawFd, name: &[u8]) -> io::Result<()> {
    let (t, c) = (c_name(target)?, c_name(name)?);
    // SAFETY: valid descriptor and C strings.
    check(unsafe { libc::symlinkat(t.as_ptr(), dir, c.as_ptr()) }).map(drop)
}

/// A hard link to `from` itself (a symlink is linked, not followed: no `AT_SYMLINK_FOLLOW`).
fn link_at(from_dir: RawFd, from: &[u8], dir: RawFd, name: &[u8]) -> io::Result<()> {
    let (f, c) = (c_name(from)?, c_name(name)?);
    // SAFETY: valid descriptors and C strings.
    check(unsafe { libc::linkat(from_dir, f.as_ptr(), dir, c.as_ptr(), 0) }).map(drop)
}

/// Sets the mtime (access time untouched) of `fd` itself, or of `name` in directory `fd`
/// without following a symlink.
fn set_times_at(fd: RawFd, name: Option<&[u8]>, mtime: u64) -> io::Result<()> {
    let times = [libc::timespec { tv_sec: 0, tv_nsec: libc::UTIME_OMIT }, libc::timespec { tv_sec: mtime.min(i64::MAX as u64) as _, tv_nsec: 0 }];
    let rc = match name {
        // SAFETY: valid descriptor and a two-element timespec array.
        None => unsafe { libc::futimens(fd, times.as_ptr()) },
        Some(name) => {
            let c = c_name(name)?;
            // SAFETY: valid descriptor, C string and timespec array.
            unsafe { libc::utimensat(fd, c.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) }
        }
    };
    check(rc).map(drop)
}

/// Renames `from` to `to` unless `to` exists (atomically where the filesystem supports
/// `RENAME_NOREPLACE`).
fn rename_noreplace(from: &Path, to: &Path) -> Result<()> {
    crate::fsutil::rename_noreplace(from, to).map_err(|e| match e.kind() {
        io::ErrorKind::AlreadyExists => invalid(format!("output_path already exists: {}", to.display())),
        _ => Error::io("rename to", to, e),
    })
}

/// Best effort: makes every directory below `path` writable again so a failed export's
/// staging directory can be removed.
pub(super) fn unlock_tree(path: &Path) {
    use std::os::unix::fs::MetadataExt;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;
    use tar::{EntryType, Header};

    /// (name, type, link target, data, mode).
    type Raw<'a> = (&'a str, EntryType, Option<&'a str>, &'a [u8], u32);

    fn archive(members: &[Raw<'_>]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, kind, link, data, mode) in members {
            let mut header = Header::new_ustar();
            header.set_entry_type(*kind);
            header.set_mode(*mode);
            header.set_size(data.len() as u64);
            match link {
                Some(l) => builder.append_link(&mut header, name, l).unwrap(),
                None => builder.append_data(&mut header, name, *data).unwrap(),
            }
        }
        builder.into_inner().unwrap()
    }

    fn extract_at(root: &Path, bytes: &[u8]) -> Result<ExportSummary> {
        extract_into(bytes, root, EntryKind::Directory, TarLimits::default()).map(|(s, _)| s)
    }

    /// A case-insensitive filesystem makes `a` name the symlink the archive created as
    /// `A`; planting `a` as a symlink simulates that: nothing may be written through it.
    #[test]
    fn parents_are_never_resolved_through_a_symlink() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        fs::create_dir(&outside).unwrap();
        let root = tmp.path().join("root");
        fs::create_dir(&root).unwrap();
        symlink(&outside, root.join("a")).unwrap();
        for bytes in [
            archive(&[("a/x", EntryType::Regular, None, b"pwned", 0o644)]),
            archive(&[("a/sub/", EntryType::Directory, None, b"", 0o755)]),
            archive(&[("a/l", EntryType::Symlink, Some("/etc"), b"", 0o777)]),
            archive(&[("a/", EntryType::Directory, None, b"", 0o777)]),
        ] {
            let err = extract_at(&root, &bytes).unwrap_err();
            assert!(err.to_string().contains("refusing to write through it"), "{err}");
        }
        // A file named like an existing symlink is never opened through it either.
        let err = extract_at(&root, &archive(&[("a", EntryType::Regular, None, b"x", 0o644)])).unwrap_err();
        assert!(err.to_string().starts_with("create "), "{err}");
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
        assert_eq!(fs::read_link(root.join("a")).unwrap(), outside);
    }

    #[test]
    fn symlinks_are_created_last_and_replacements_follow_archive_order() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        fs::create_dir(&root).unwrap();
        let bytes = archive(&[
            ("l", EntryType::Symlink, Some("/tmp/outside"), b"", 0o777),
            ("h", EntryType::Link, Some("l"), b"", 0o777),
            ("f", EntryType::Regular, None, b"1", 0o644),
            ("f", EntryType::Symlink, Some("target"), b"", 0o777),
            ("g", EntryType::Symlink, Some("x"), b"", 0o777),
            ("g", EntryType::Regular, None, b"2", 0o666),
            ("l", EntryType::Regular, None, b"3", 0o644),
        ]);
        let summary = extract_at(&root, &bytes).unwrap();
        assert_eq!(summary, ExportSummary { entry_count: 7, bytes_written: 3 });
        // `h` was a hard link to the symlink `l` before `l` became a file.
        assert_eq!(fs::read_link(root.join("h")).unwrap(), Path::new("/tmp/outside"));
        assert_eq!(fs::read_link(root.join("f")).unwrap(), Path::new("target"));
        assert_eq!(fs::read(root.join("g")).unwrap(), b"2");
        assert_eq!(fs::metadata(root.join("g")).unwrap().permissions().mode() & 0o7777, 0o644);
        assert_eq!(fs::read(root.join("l")).unwrap(), b"3");
    }

    #[test]
    fn hard_links_to_symlinks_share_the_link() {
        use std::os::unix::fs::MetadataExt;
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        fs::create_dir(&root).unwrap();
        let bytes = archive(&[
            ("d/", EntryType::Directory, None, b"", 0o755),
            ("d/l", EntryType::Symlink, Some("../f"), b"", 0o777),
            ("e/h", EntryType::Link, Some("d/l"), b"", 0o777),
            ("f", EntryType::Regular, None, b"x", 0o4777),
            ("e/g", EntryType::Link, Some("f"), b"", 0o777),
        ]);
        extract_at(&root, &bytes).unwrap();
        let (l, h) = (fs::symlink_metadata(root.join("d/l")).unwrap(), fs::symlink_metadata(root.join("e/h")).unwrap());
        assert!(l.file_type().is_symlink() && h.file_type().is_symlink());
        assert_eq!(l.ino(), h.ino());
        assert_eq!(fs::metadata(root.join("f")).unwrap().mode() & 0o7777, 0o755);
        assert_eq!(fs::metadata(root.join("e/g")).unwrap().ino(), fs::metadata(root.join("f")).unwrap().ino());
    }
}
