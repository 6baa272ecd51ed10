//! Offline reads of guest ext4 images with a pure-Rust reader (no mount, no debugfs).
//!
//! A workspace disk is written by the guest, so everything in it is hostile input:
//! - the superblock is checked against the image size before `ext4-view` sizes anything
//!   from it ([`check_superblock`]);
//! - listings are capped in entries ([`MAX_WALK_ENTRIES`]), depth ([`MAX_WALK_DEPTH`])
//!   and time ([`WALK_DEADLINE`]), and a directory whose `.` or `..` does not match the
//!   way it was reached (a cycle or a hard-linked directory) stops the walk;
//! - walks use the entries' own byte paths, so names that are not UTF-8 are listed
//!   (escaped as `\xNN`) instead of failing the listing;
//! - whole-file reads and symlink targets are size-checked before anything is allocated;
//! - a panic inside `ext4-view` (1.0.0 has at least one: an htree node whose `count`
//!   exceeds its block, found by tests/fuzz_ext4.rs) is caught, reported as an error, and
//!   retires the image; the panic message is kept off stderr.
//!
//! Every violation is a one-line [`Error::Corrupt`] (or [`Error::LimitExceeded`] for an oversized listing), never a panic.

use std::cell::Cell;
use std::io::Read;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::Once;
use std::time::{Duration, Instant};

use ext4_view::{Ext4, Ext4Read, Metadata, PathBuf as Ext4PathBuf};
use serde::Serialize;

use crate::error::{Error, Result};

/// Most entries one listing returns.
pub const MAX_WALK_ENTRIES: usize = 100_000;
/// Deepest directory level a recursive listing descends to (the listed path is level 0).
pub const MAX_WALK_DEPTH: usize = 64;
/// Longest a listing may take.
pub const WALK_DEADLINE: Duration = Duration::from_secs(120);
/// Largest file [`DiskImage::read`] loads whole.
pub const MAX_WHOLE_READ: u64 = 256 << 20;
/// Longest symlink target read (Linux's `PATH_MAX`).
const MAX_LINK_TARGET: u64 = 4096;
/// Most block groups accepted (2^20 groups of 32768 4 KiB blocks is 128 TiB).
const MAX_BLOCK_GROUPS: u64 = 1 << 20;
const SUPERBLOCK_OFFSET: u64 = 1024;
const SUPERBLOCK_LEN: usize = 1024;

/// An ext4 image opened read-only.
pub struct DiskImage {
    fs: Ext4,
    /// Set once the reader panicked: its state is then not to be trusted.
    retired: Cell<bool>,
}

/// One entry of an offline listing.
#[derive(Debug, Clone, Serialize)]
pub struct DiskEntry {
    /// Absolute path inside the image (bytes that are not UTF-8 as `\xNN`).
    pub path: String,
    /// `file`, `directory`, `symlink` or `other`.
    pub artifact_type: &'static str,
    /// Size (0 for directories).
    pub size_bytes: u64,
    /// Permission bits, octal.
    pub mode: String,
    /// Symlink target (bytes that are not UTF-8 as `\xNN`).
    pub link_target: Option<String>,
}

/// Bounds of one walk.
#[derive(Debug, Clone, Copy)]
struct Limits {
    max_entries: usize,
    max_depth: usize,
    deadline: Duration,
}

const LIMITS: Limits = Limits { max_entries: MAX_WALK_ENTRIES, max_depth: MAX_WALK_DEPTH, deadline: WALK_DEADLINE };

thread_local! {
    /// Whether this thread is inside [`contained`] (its panics are reported as errors).
    static CONTAINING: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f`, turning a panic in the ext4 reader into an error. The process panic hook is
/// wrapped once so that panics on a thread inside `contained` print nothing; every other
/// panic still reaches the previous hook.
fn contained<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !CONTAINING.with(Cell::get) {
                previous(info);
            }
        }));
    });
    let outer = CONTAINING.with(|c| c.replace(true));
    let outcome = catch_unwind(AssertUnwindSafe(f));
    CONTAINING.with(|c| c.set(outer));
    outcome.unwrap_or_else(|payload| {
        let why = payload.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| payload.downcast_ref::<String>().cloned()).unwrap_or_default();
        Err(Error::Corrupt(format!("the ext4 reader failed on this corrupt disk image: {}", why.lines().next().unwrap_or("panic"))))
    })
}

fn failed(action: &str, path: &str, e: impl std::fmt::Display) -> Error {
    Error::Corrupt(format!("cannot {action} {path} in the disk image: {e}"))
}

/// Renders raw name bytes: valid UTF-8 as is, every other byte as `\xNN`.
pub fn escape_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        out.push_str(chunk.valid());
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

fn le32(sb: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([sb[at], sb[at + 1], sb[at + 2], sb[at + 3]])
}

fn le16(sb: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([sb[at], sb[at + 1]])
}

/// Checks a raw superblock (the 1024 bytes at offset 1024) against the size of the image
/// it came from, so that nothing sized from it can exceed the image: the blocks it claims
/// fit in the file, the block-group count and descriptor table are sane and fit too, and
/// the inode geometry is consistent. `ext4-view` allocates from these fields before it
/// reads anything else.
pub fn check_superblock(sb: &[u8], image_len: u64) -> std::result::Result<(), String> {
    if sb.len() < SUPERBLOCK_LEN || image_len < SUPERBLOCK_OFFSET + SUPERBLOCK_LEN as u64 {
        return Err(format!("image is too small for an ext4 superblock ({image_len} bytes)"));
    }
    if le16(sb, 0x38) != 0xef53 {
        return Err("not an ext4 image (bad superblock magic)".into());
    }
    let log_block_size = le32(sb, 0x18);
    if log_block_size > 6 {
        return Err(format!("superblock block size 2^{} is not supported", u64::from(log_block_size) + 10));
    }
    let block_size = 1024u64 << log_block_size;
    let is_64bit = le32(sb, 0x60) & 0x80 != 0;
    let blocks = u64::from(le32(sb, 0x4)) | if is_64bit { u64::from(le32(sb, 0x150)) << 32 } else { 0 };
    let fs_bytes = blocks.checked_mul(block_size).ok_or("superblock block count overflows")?;
    if blocks == 0 || fs_bytes > image_len {
        return Err(format!("superblock claims {blocks} blocks of {block_size} bytes ({fs_bytes} bytes) but the image has {image_len} bytes"));
    }
    let first_data_block = u64::from(le32(sb, 0x14));
    if first_data_block >= blocks {
        return Err(format!("superblock first data block {first_data_block} is outside the {blocks} blocks"));
    }
    let blocks_per_group = u64::from(le32(sb, 0x20));
    if blocks_per_group == 0 {
        return Err("superblock has zero blocks per group".into());
    }
    let groups = (blocks - first_data_block).div_ceil(blocks_per_group);
    if groups > MAX_BLOCK_GROUPS {
        return Err(format!("superblock claims {groups} block groups (at most {MAX_BLOCK_GROUPS})"));
    }
    let desc_size = if is_64bit { u64::from(le16(sb, 0xfe)) } else { 32 };
    if !(32..=1024).contains(&desc_size) || !desc_size.is_power_of_two() || (is_64bit && desc_size < 64) {
        return Err(format!("superblock group descriptor size {desc_size} is invalid"));
    }
    // The descriptor table starts in the block after the superblock's.
    let table_end = (first_data_block + 1) * block_size + groups * desc_size;
    if table_end > fs_bytes {
        return Err(format!("superblock's {groups} group descriptors do not fit in the filesystem"));
    }
    let inodes_per_group = u64::from(le32(sb, 0x28));
    if inodes_per_group == 0 || inodes_per_group > 8 * block_size {
        return Err(format!("superblock claims {inodes_per_group} inodes per group"));
    }
    let inodes = u64::from(le32(sb, 0x0));
    if groups * inodes_per_group != inodes {
        return Err(format!("superblock inode count {inodes} does not match {groups} groups of {inodes_per_group} inodes"));
    }
    let inode_size = u64::from(le16(sb, 0x58));
    if !(128..=block_size).contains(&inode_size) || !inode_size.is_power_of_two() {
        return Err(format!("superblock inode size {inode_size} is invalid"));
    }
    Ok(())
}

/// A directory being walked: its path and the metadata it was reached with.
struct Dir<'a> {
    path: &'a Ext4PathBuf,
    meta: &'a Metadata,
    depth: usize,
}

struct Walk {
    out: Vec<DiskEntry>,
    limits: Limits,
    started: Instant,
}

impl DiskImage {
    /// Opens `image` (a raw ext4 file).
    pub fn open(image: &Path) -> Result<Self> {
        let fail = |e: &dyn std::fmt::Display| Error::Corrupt(format!("cannot read ext4 image {}: {e}", image.display()));
        let file = std::fs::File::open(image).map_err(|e| fail(&e))?;
        let len = file.metadata().map_err(|e| fail(&e))?.len();
        Self::from_reader(Box::new(file), len).map_err(|e| match e {
            Error::Corrupt(message) => fail(&message),
            other => other,
        })
    }

    /// Opens an ext4 image of `len` bytes read through `reader` (tests and fuzzing use
    /// in-memory images). Errors name no path.
    pub fn from_reader(mut reader: Box<dyn Ext4Read>, len: u64) -> Result<Self> {
        let mut sb = [0u8; SUPERBLOCK_LEN];
        if len < SUPERBLOCK_OFFSET + SUPERBLOCK_LEN as u64 {
            return Err(Error::Corrupt(format!("image is too small for an ext4 superblock ({len} bytes)")));
        }
        reader.read(SUPERBLOCK_OFFSET, &mut sb).map_err(|e| Error::Corrupt(format!("cannot read the superblock: {e}")))?;
        check_superblock(&sb, len).map_err(Error::Corrupt)?;
        let fs = contained(|| Ext4::load(reader).map_err(|e| Error::Corrupt(e.to_string())))?;
        Ok(Self { fs, retired: Cell::new(false) })
    }

    /// Runs one read of the image under [`contained`]; after a panic the image is retired.
    fn guarded<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        if self.retired.get() {
            return Err(Error::Corrupt("the ext4 reader already failed on this corrupt disk image".into()));
        }
        let outcome = contained(f);
        if matches!(&outcome, Err(Error::Corrupt(m)) if m.starts_with("the ext4 reader failed")) {
            self.retired.set(true);
        }
        outcome
    }

    /// Reads a whole regular file (following symlinks), at most [`MAX_WHOLE_READ`] bytes.
    pub fn read(&self, path: &str) -> Result<Vec<u8>> {
        self.guarded(|| self.read_whole(path))
    }

    fn read_whole(&self, path: &str) -> Result<Vec<u8>> {
        let meta = self.fs.metadata(path).map_err(|e| failed("read", path, e))?;
        if meta.len() > MAX_WHOLE_READ {
            return Err(failed("read", path, format!("file is {} bytes, more than {MAX_WHOLE_READ}", meta.len())));
        }
        let (bytes, _) = self.read_file(path, MAX_WHOLE_READ, true)?;
        Ok(bytes)
    }

    /// Reads at most `max` bytes of a regular file (not following a final symlink);
    /// returns the bytes and the full size.
    pub fn read_prefix(&self, path: &str, max: u64) -> Result<(Vec<u8>, u64)> {
        self.guarded(|| self.read_file(path, max, false))
    }

    fn read_file(&self, path: &str, max: u64, follow: bool) -> Result<(Vec<u8>, u64)> {
        let meta = if follow { self.fs.metadata(path) } else { self.fs.symlink_metadata(path) }.map_err(|e| failed("read", path, e))?;
        if !meta.file_type().is_regular_file() {
            return Err(Error::InvalidArgument(format!("disk read only supports regular files: {path}")));
        }
        let file = self.fs.open(path).map_err(|e| failed("read", path, e))?;
        let mut bytes = Vec::new();
        // `take` bounds the allocation by what is read, not by the size the inode claims.
        file.take(max.min(meta.len())).read_to_end(&mut bytes).map_err(|e| failed("read", path, e))?;
        Ok((bytes, meta.len()))
    }

    /// Names of the entries of a directory (without `.` and `..`), sorted by their bytes;
    /// bytes that are not UTF-8 as `\xNN`.
    pub fn list_names(&self, path: &str) -> Result<Vec<String>> {
        self.guarded(|| self.names(path))
    }

    fn names(&self, path: &str) -> Result<Vec<String>> {
        let dir = Ext4PathBuf::try_from(path).map_err(|e| failed("list", path, e))?;
        let meta = self.fs.metadata(path).map_err(|e| failed("list", path, e))?;
        let mut walk = Walk { out: Vec::new(), limits: LIMITS, started: Instant::now() };
        let children = self.children(&Dir { path: &dir, meta: &meta, depth: 0 }, None, &mut walk)?;
        Ok(children.into_iter().map(|(name, _, _)| escape_bytes(&name)).collect())
    }

    /// Describes `path` (never following symlinks): a directory's children (depth-first
    /// when `recursive`), or the path itself otherwise.
    pub fn entries(&self, path: &str, recursive: bool) -> Result<Vec<DiskEntry>> {
        self.entries_within(path, recursive, LIMITS)
    }

    fn entries_within(&self, path: &str, recursive: bool, limits: Limits) -> Result<Vec<DiskEntry>> {
        self.guarded(|| self.list(path, recursive, limits))
    }

    fn list(&self, path: &str, recursive: bool, limits: Limits) -> Result<Vec<DiskEntry>> {
        let meta = self.fs.symlink_metadata(path).map_err(|_| Error::not_found_because("path", path, format!("disk path does not exist: {path}")))?;
        let start = Ext4PathBuf::try_from(path).map_err(|e| failed("list", path, e))?;
        if !meta.is_dir() {
            return Ok(vec![self.entry(&start, &meta)]);
        }
        let mut walk = Walk { out: Vec::new(), limits, started: Instant::now() };
        self.walk(&Dir { path: &start, meta: &meta, depth: 0 }, None, recursive, &mut walk)?;
        Ok(walk.out)
    }

    /// Lists `dir` (sorted by name bytes), checking that its `.` is the directory it was
    /// reached as and its `..` the parent it was reached from: a guest that links a
    /// directory into two places, or back into an ancestor, trips one of them.
    fn children(&self, dir: &Dir<'_>, parent: Option<&Metadata>, walk: &mut Walk) -> Result<Vec<(Vec<u8>, Ext4PathBuf, Metadata)>> {
        let shown = escape_bytes(dir.path.as_ref());
        let entries = self.fs.read_dir(dir.path).map_err(|e| failed("list", &shown, e))?;
        let mut children = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| failed("list", &shown, e))?;
            let name = entry.file_name().as_ref().to_vec();
            let meta = entry.metadata().map_err(|e| failed("list", &escape_bytes(entry.path().as_ref()), e))?;
            match name.as_slice() {
                b"." if meta != *dir.meta => return Err(not_a_tree(&shown, ".", "itself")),
                b".." if parent.is_some_and(|p| meta != *p) => return Err(not_a_tree(&shown, "..", "its parent")),
                b"." | b".." => continue,
                _ => {}
            }
            if walk.out.len() + children.len() >= walk.limits.max_entries {
                return Err(Error::LimitExceeded(format!("disk listing has more than {} entries; list a narrower path", walk.limits.max_entries)));
            }
            if children.len() % 1024 == 1023 {
                walk.check_deadline()?;
            }
            children.push((name, entry.path(), meta));
        }
        children.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(children)
    }

    fn walk(&self, dir: &Dir<'_>, parent: Option<&Metadata>, recursive: bool, walk: &mut Walk) -> Result<()> {
        walk.check_deadline()?;
        for (_, path, meta) in self.children(dir, parent, walk)? {
            walk.out.push(self.entry(&path, &meta));
            if recursive && meta.is_dir() {
                if dir.depth + 1 > walk.limits.max_depth {
                    return Err(Error::Corrupt(format!(
                        "disk tree is deeper than {} levels at {} (a directory cycle?)",
                        walk.limits.max_depth,
                        escape_bytes(path.as_ref())
                    )));
                }
                self.walk(&Dir { path: &path, meta: &meta, depth: dir.depth + 1 }, Some(dir.meta), true, walk)?;
            }
        }
        Ok(())
    }

    fn entry(&self, path: &Ext4PathBuf, meta: &Metadata) -> DiskEntry {
        let kind = meta.file_type();
        let artifact_type = if kind.is_regular_file() {
            "file"
        } else if kind.is_dir() {
            "directory"
        } else if kind.is_symlink() {
            "symlink"
        } else {
            "other"
        };
        // Targets longer than PATH_MAX are left unread: their size comes from the guest.
        let link_target = kind.is_symlink().then(|| {
            if meta.len() > MAX_LINK_TARGET {
                return String::new();
            }
            self.fs.read_link(path).map(|t| escape_bytes(t.as_ref())).unwrap_or_default()
        });
        DiskEntry {
            path: escape_bytes(path.as_ref()),
            artifact_type,
            size_bytes: if kind.is_dir() { 0 } else { meta.len() },
            mode: format!("{:04o}", meta.mode() & 0o7777),
            link_target,
        }
    }
}

impl Walk {
    fn check_deadline(&self) -> Result<()> {
        if self.started.elapsed() > self.limits.deadline {
            return Err(Error::LimitExceeded(format!("disk listing took longer than {} s; list a narrower path", self.limits.deadline.as_secs())));
        }
        Ok(())
    }
}

fn not_a_tree(dir: &str, entry: &str, what: &str) -> Error {
    Error::Corrupt(format!("disk directory {dir} is not a tree: its '{entry}' entry is not {what} (a directory cycle or a hard-linked directory)"))
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    use std::path::PathBuf;
    use std::process::Command;

    use super::*;

    /// Makes an ext4 image of `tree` with the options of images/rootfs/build-rootfs.sh.
    fn mkfs(tree: &Path, image: &Path, size: &str) {
        let status = Command::new("truncate").args(["-s", size]).arg(image).status().expect("truncate");
        assert!(status.success());
        let out = Command::new("mkfs.ext4")
            .args(["-F", "-q", "-d"])
            .arg(tree)
            .args([
                "-O",
                "^inline_data,^large_dir,^metadata_csum_seed",
                "-L",
                "pyro-rootfs",
                "-m",
                "0",
                "-E",
                "root_owner=0:0",
                "-b",
                "4096",
                "-I",
                "256",
                "-N",
                "256",
            ])
            .arg(image)
            .output()
            .expect("mkfs.ext4 (e2fsprogs) is installed by scripts/setup.sh");
        assert!(out.status.success(), "mkfs.ext4: {}", String::from_utf8_lossy(&out.stderr));
    }

    fn debugfs(image: &Path, request: &str) {
        let out = Command::new("debugfs").args(["-w", "-R", request]).arg(image).output().expect("debugfs (e2fsprogs)");
        assert!(out.status.success(), "debugfs {request}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Sets every timestamp of `path` in `image` to `when` (YYYYMMDDHHMMSS), nanoseconds zero.
    fn set_times(image: &Path, path: &str, when: &str) {
        for field in ["atime", "ctime", "mtime", "crtime"] {
            debugfs(image, &format!("sif {path} {field} {when}"));
            debugfs(image, &format!("sif {path} {field}_extra 0"));
        }
    }

    fn image_of(build: impl FnOnce(&Path)) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        std::fs::create_dir(&tree).unwrap();
        build(&tree);
        let image = dir.path().join("disk.ext4");
        mkfs(&tree, &image, "2M");
        (dir, image)
    }

    fn message(result: Result<impl std::fmt::Debug>) -> String {
        let message = result.unwrap_err().to_string();
        assert!(!message.contains('\n'), "one line: {message}");
        message
    }

    fn paths(entries: &[DiskEntry]) -> Vec<&str> {
        entries.iter().map(|e| e.path.as_str()).collect()
    }

    #[test]
    fn lists_with_the_entries_own_paths_and_escapes_non_utf8_names() {
        let (_dir, image) = image_of(|tree| {
            std::fs::create_dir_all(tree.join("d/sub")).unwrap();
            std::fs::write(tree.join("d/sub/f.txt"), "hello").unwrap();
            std::fs::write(tree.join(OsStr::from_bytes(b"bad\xffname")), "x").unwrap();
            std::fs::create_dir(tree.join(OsStr::from_bytes(b"dir\xfe"))).unwrap();
            std::fs::write(tree.join(OsStr::from_bytes(b"dir\xfe/inner")), "y").unwrap();
            std::os::unix::fs::symlink(OsStr::from_bytes(b"target\x80"), tree.join("link")).unwrap();
            std::os::unix::fs::symlink("x".repeat(200), tree.join("longlink")).unwrap();
        });
        let disk = DiskImage::open(&image).unwrap();
        let all = disk.entries("/", true).unwrap();
        let listed: Vec<&str> = paths(&all).into_iter().filter(|p| !p.starts_with("/lost+found")).collect();
        assert_eq!(listed, ["/bad\\xffname", "/d", "/d/sub", "/d/sub/f.txt", "/dir\\xfe", "/dir\\xfe/inner", "/link", "/longlink"]);
        let link = all.iter().find(|e| e.path == "/link").unwrap();
        assert_eq!((link.artifact_type, link.link_target.as_deref()), ("symlink", Some("target\\x80")));
        let long = all.iter().find(|e| e.path == "/longlink").unwrap();
        assert_eq!(long.link_target.as_deref(), Some("x".repeat(200).as_str()));
        let file = all.iter().find(|e| e.path == "/d/sub/f.txt").unwrap();
        assert_eq!((file.artifact_type, file.size_bytes, file.mode.as_str()), ("file", 5, "0644"));
        assert!(disk.list_names("/").unwrap().contains(&"dir\\xfe".to_string()));
        assert_eq!(disk.read("/d/sub/f.txt").unwrap(), b"hello");
        assert_eq!(disk.read_prefix("/d/sub/f.txt", 2).unwrap(), (b"he".to_vec(), 5));
        assert_eq!(paths(&disk.entries("/d", false).unwrap()), ["/d/sub"]);
        assert_eq!(paths(&disk.entries("/link", true).unwrap()), ["/link"]);
    }

    #[test]
    fn a_directory_linked_back_into_an_ancestor_is_a_cycle_error() {
        let (_dir, image) = image_of(|tree| {
            std::fs::create_dir_all(tree.join("a/b")).unwrap();
            std::fs::write(tree.join("a/b/f"), "x").unwrap();
        });
        debugfs(&image, "ln /a /a/b/loop");
        // With equal metadata `/` and `/a/b` look alike (ext4-view exposes no inode
        // numbers), so the `..` of /a/b/loop passes and this cycle is caught by the depth cap.
        for dir in ["/", "/a/b"] {
            set_times(&image, dir, "20200101000000");
        }
        let disk = DiskImage::open(&image).unwrap();
        let err = message(disk.entries("/", true));
        assert!(err.contains("deeper than 64 levels at /a/b/loop/b/loop/") && err.contains("cycle"), "{err}");
        // Without recursion the entry is just listed.
        assert_eq!(paths(&disk.entries("/a/b", false).unwrap()), ["/a/b/f", "/a/b/loop"]);
        // Once the two look different, the `..` check stops the walk at the first loop.
        debugfs(&image, "sif /a/b mtime 20210101000000");
        let err = message(DiskImage::open(&image).unwrap().entries("/", true));
        assert!(err.contains("/a/b/loop is not a tree: its '..' entry is not its parent"), "{err}");
    }

    #[test]
    fn a_directory_linked_into_two_places_is_refused() {
        let (_dir, image) = image_of(|tree| {
            std::fs::create_dir_all(tree.join("a/shared")).unwrap();
            std::fs::create_dir_all(tree.join("c")).unwrap();
        });
        debugfs(&image, "ln /a/shared /c/again");
        debugfs(&image, "sif /c mtime 20200101000000");
        let err = message(DiskImage::open(&image).unwrap().entries("/", true));
        assert!(err.contains("/c/again is not a tree"), "{err}");
    }

    #[test]
    fn depth_and_entry_count_are_capped() {
        let (_dir, image) = image_of(|tree| {
            let deep: PathBuf = std::iter::repeat_n("d", MAX_WALK_DEPTH + 2).collect();
            std::fs::create_dir_all(tree.join("deep").join(deep)).unwrap();
            std::fs::create_dir(tree.join("many")).unwrap();
            for i in 0..50 {
                std::fs::write(tree.join(format!("many/{i}")), "").unwrap();
            }
        });
        let disk = DiskImage::open(&image).unwrap();
        let err = message(disk.entries("/deep", true));
        assert!(err.contains("deeper than 64 levels"), "{err}");
        let shallow = disk.entries_within("/deep", true, Limits { max_depth: 80, ..LIMITS }).unwrap();
        assert_eq!(shallow.len(), MAX_WALK_DEPTH + 2);
        let few = Limits { max_entries: 10, ..LIMITS };
        assert!(message(disk.entries_within("/many", false, few)).contains("more than 10 entries"));
        assert_eq!(disk.entries_within("/many", false, Limits { max_entries: 50, ..LIMITS }).unwrap().len(), 50);
        let late = Limits { deadline: Duration::ZERO, ..LIMITS };
        assert!(message(disk.entries_within("/many", true, late)).contains("took longer than"));
    }

    #[test]
    fn sizes_from_the_guest_do_not_size_allocations() {
        let (_dir, image) = image_of(|tree| {
            std::fs::write(tree.join("big"), "small really").unwrap();
            std::os::unix::fs::symlink("x".repeat(100), tree.join("link")).unwrap();
        });
        debugfs(&image, "sif /big size 0x10000000000");
        debugfs(&image, "sif /link size 0x100000");
        let disk = DiskImage::open(&image).unwrap();
        let err = message(disk.read("/big"));
        assert!(err.contains("more than"), "{err}");
        let (bytes, size) = disk.read_prefix("/big", 64).unwrap();
        assert_eq!((bytes.len(), size), (64, 1 << 40));
        let entries = disk.entries("/", false).unwrap();
        let link = entries.iter().find(|e| e.path == "/link").unwrap();
        assert_eq!(link.link_target.as_deref(), Some(""));
    }

    fn superblock_error(image: &Path, edit: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut bytes = std::fs::read(image).unwrap();
        edit(&mut bytes);
        let len = bytes.len() as u64;
        let direct = check_superblock(&bytes[1024..2048.min(bytes.len())], len).unwrap_err();
        let through = message(DiskImage::from_reader(Box::new(bytes), len).map(|_| ()));
        assert!(through.contains(&direct), "{through} / {direct}");
        direct
    }

    fn put32(bytes: &mut [u8], at: usize, value: u32) {
        bytes[1024 + at..1024 + at + 4].copy_from_slice(&value.to_le_bytes());
    }

    #[test]
    fn a_superblock_that_does_not_fit_the_image_is_refused_before_loading() {
        let (_dir, image) = image_of(|_| {});
        assert!(check_superblock(&std::fs::read(&image).unwrap()[1024..2048], 2 << 20).is_ok());
        let huge_count = superblock_error(&image, |b| put32(b, 0x4, u32::MAX));
        assert!(huge_count.contains("but the image has 2097152 bytes"), "{huge_count}");
        let huge_hi = superblock_error(&image, |b| put32(b, 0x150, 0x10));
        assert!(huge_hi.contains("blocks of 4096 bytes"), "{huge_hi}");
        let truncated = superblock_error(&image, |b| b.truncate(1 << 20));
        assert!(truncated.contains("but the image has 1048576 bytes"), "{truncated}");
        let tiny_groups = superblock_error(&image, |b| put32(b, 0x20, 1));
        assert!(tiny_groups.contains("group descriptors do not fit") || tiny_groups.contains("inode count"), "{tiny_groups}");
        let inode_size = superblock_error(&image, |b| b[1024 + 0x58..1024 + 0x5a].copy_from_slice(&0u16.to_le_bytes()));
        assert!(inode_size.contains("inode size 0"), "{inode_size}");
        let inodes = superblock_error(&image, |b| put32(b, 0x28, 4096 * 8 + 1));
        assert!(inodes.contains("inodes per group"), "{inodes}");
        let block_size = superblock_error(&image, |b| put32(b, 0x18, 30));
        assert!(block_size.contains("2^40"), "{block_size}");
        let magic = superblock_error(&image, |b| b[1024 + 0x38] = 0);
        assert!(magic.contains("magic"), "{magic}");
        let short = superblock_error(&image, |b| b.truncate(1500));
        assert!(short.contains("too small"), "{short}");
        let opened = message(DiskImage::open(Path::new("/nonexistent/disk.ext4")).map(|_| ()));
        assert!(opened.starts_with("cannot read ext4 image /nonexistent/disk.ext4:"), "{opened}");
    }

    #[test]
    fn a_panic_in_the_reader_is_an_error_that_retires_the_image() {
        let (_dir, image) = image_of(|tree| std::fs::write(tree.join("f"), "x").unwrap());
        let disk = DiskImage::open(&image).unwrap();
        let err = message(disk.guarded(|| -> Result<()> { panic!("index 9 out of range\nsecond line") }));
        assert_eq!(err, "the ext4 reader failed on this corrupt disk image: index 9 out of range");
        assert!(message(disk.entries("/", false)).contains("already failed"));
        // Other panics are untouched.
        assert!(catch_unwind(|| panic!("outside")).is_err());
    }

    #[test]
    fn an_htree_node_count_past_its_block_is_an_error_not_a_panic() {
        // ext4-view 1.0.0 slices `block[..8 * count + 0x20]` when checksumming an htree
        // node (dir_block.rs:134): a guest can make that panic. Found by tests/fuzz_ext4.rs.
        let (_dir, image) = image_of(|tree| {
            std::fs::create_dir(tree.join("many")).unwrap();
            for i in 0..150 {
                std::fs::write(tree.join(format!("many/entry-with-a-name-long-enough-to-fill-blocks-{i:04}")), "").unwrap();
            }
        });
        let out = Command::new("e2fsck").arg("-fyD").arg(&image).output().unwrap();
        assert!(out.status.code().is_some_and(|c| c <= 1), "{}", String::from_utf8_lossy(&out.stdout));
        let blocks = Command::new("debugfs").args(["-R", "blocks /many"]).arg(&image).output().unwrap();
        let first: u64 = String::from_utf8_lossy(&blocks.stdout).split_whitespace().next().unwrap().parse().unwrap();
        assert_eq!(DiskImage::open(&image).unwrap().entries("/many", false).unwrap().len(), 150);
        let mut bytes = std::fs::read(&image).unwrap();
        // dx_root: `count` sits at 0x22, after the fake `.` and `..` entries and the limit.
        let at = first as usize * 4096 + 0x22;
        bytes[at..at + 2].copy_from_slice(&0xffffu16.to_le_bytes());
        std::fs::write(&image, &bytes).unwrap();
        let disk = DiskImage::open(&image).unwrap();
        let err = message(disk.entries("/many", false));
        assert!(err.starts_with("the ext4 reader failed on this corrupt disk image: range end index"), "{err}");
        assert!(message(disk.read("/many/x")).contains("already failed"));
    }

    #[test]
    fn escapes_only_invalid_bytes() {
        assert_eq!(escape_bytes(b"plain/\xc3\xa9"), "plain/é");
        assert_eq!(escape_bytes(b"a\xff\xc3(b"), "a\\xff\\xc3(b");
        assert_eq!(escape_bytes(b""), "");
    }
}
