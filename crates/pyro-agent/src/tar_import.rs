//! `TarImport`: stream-extracts an uploaded tar archive under a destination directory.
//!
//! Which members are accepted (names, types, link targets) is decided by the rules the
//! host packs with, `pyro_protocol::archive_rules` ([`Rules::AGENT_IMPORT`]); this module
//! adds what only the disk can tell: nothing is ever written through an existing
//! symlink or below an existing file, and hard links must point at an existing
//! non-directory inside the destination. Modes and mtimes come from the archive;
//! directories merge, files and links replace what is there.

use std::collections::{BTreeMap, HashSet};
use std::ffi::{CString, OsStr};
use std::fs::{self, OpenOptions};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use pyro_protocol::archive_rules::{Checked, MemberType, RawMember, Reason, Rules, Shape, Verdict};
use pyro_protocol::TarImportResult;

use crate::blocking::{self, UploadReader};
use crate::paths::{join_components, normalize_absolute};
use crate::request::{CancelFlag, ReqCtx};

/// The member rules of an import.
const RULES: Rules = Rules::AGENT_IMPORT;

/// The message of a refused member.
fn refused(name: &str, reason: Reason) -> String {
    RULES.refusal(name.as_bytes(), reason).to_string()
}

/// Extracts the uploaded archive under `destination` (created if missing).
pub async fn run(destination: &str, req: &mut ReqCtx) -> Result<TarImportResult, String> {
    let dest = normalize_absolute(&req.ctx.resolve(destination)?);
    let display = destination.to_string();
    let cancel = CancelFlag::default();
    let _cancel_on_drop = cancel.guard();
    let source = UploadReader::take(req, cancel);
    blocking::run(move || {
        fs::create_dir_all(&dest).map_err(|e| format!("cannot create destination {display}: {e}"))?;
        match fs::metadata(&dest) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(format!("destination is not a directory: {display}")),
            Err(e) => return Err(format!("cannot access destination {display}: {e}")),
        }
        let mut source = source;
        let result = Extractor::new(dest).extract(&mut source);
        if result.is_ok() {
            // Consume the archive's trailing padding up to the end of the upload.
            let _ = io::copy(&mut source, &mut io::sink());
        }
        result
    })
    .await
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

struct Extractor {
    dest: PathBuf,
    /// Relative directories known to be real directories (created or checked).
    known_dirs: HashSet<Vec<u8>>,
    /// Directory metadata applied at the end, so extracting children does not disturb
    /// mtimes and read-only directories can still be filled.
    dir_meta: BTreeMap<Vec<u8>, (u32, u64)>,
    entries: u64,
    bytes: u64,
}

impl Extractor {
    fn new(dest: PathBuf) -> Self {
        Self { dest, known_dirs: HashSet::new(), dir_meta: BTreeMap::new(), entries: 0, bytes: 0 }
    }

    fn extract<R: Read>(mut self, source: R) -> Result<TarImportResult, String> {
        let mut archive = tar::Archive::new(source);
        let entries = archive.entries().map_err(|e| format!("cannot read archive: {e}"))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| format!("cannot read archive: {e}"))?;
            self.member(&mut entry)?;
        }
        // Deepest directories first, so a parent's mtime is set after its children's.
        let mut dirs: Vec<_> = std::mem::take(&mut self.dir_meta).into_iter().collect();
        dirs.sort_by_key(|(rel, _)| std::cmp::Reverse(rel.split(|&b| b == b'/').count()));
        for (rel, (mode, mtime)) in dirs {
            let path = self.full(&rel);
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).map_err(|e| format!("cannot set the mode of {}: {e}", lossy(&rel)))?;
            set_mtime(&path, mtime).map_err(|e| format!("cannot set the mtime of {}: {e}", lossy(&rel)))?;
        }
        Ok(TarImportResult { entry_count: self.entries, bytes_written: self.bytes })
    }

    fn full(&self, rel: &[u8]) -> PathBuf {
        if rel.is_empty() {
            self.dest.clone()
        } else {
            self.dest.join(OsStr::from_bytes(rel))
        }
    }

    /// Makes sure every ancestor of `components` is a real directory, creating missing
    /// ones; refuses to pass through symlinks or non-directories.
    fn ensure_parents(&mut self, name: &str, components: &[&[u8]], create: bool) -> Result<(), String> {
        let mut rel: Vec<u8> = Vec::new();
        for component in &components[..components.len().saturating_sub(1)] {
            if !rel.is_empty() {
                rel.push(b'/');
            }
            rel.extend_from_slice(component);
            if self.known_dirs.contains(&rel) {
                continue;
            }
            let path = self.full(&rel);
            match fs::symlink_metadata(&path) {
                Ok(m) if m.file_type().is_symlink() => return Err(refused(name, Reason::TraversesSymlink)),
                Ok(m) if !m.is_dir() => return Err(refused(name, Reason::BelowFile { file: lossy(&rel) })),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                    fs::create_dir(&path).map_err(|e| format!("cannot create {}: {e}", lossy(&rel)))?;
                }
                Err(e) => return Err(format!("cannot access {} for {name}: {e}", lossy(&rel))),
            }
            self.known_dirs.insert(rel.clone());
        }
        Ok(())
    }

    /// Removes whatever non-directory is at `path` so a new member can take its place.
    fn clear_for(&self, name: &str, path: &Path) -> Result<(), String> {
        match fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() => Err(refused(name, Reason::OverDirectory)),
            Ok(_) => fs::remove_file(path).map_err(|e| format!("cannot replace {name}: {e}")),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!("cannot access {name}: {e}")),
        }
    }

    fn member<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), String> {
        let raw_name = entry.path_bytes().into_owned();
        let link = entry.link_name_bytes().map(|l| l.into_owned());
        let raw =
            RawMember { name: &raw_name, kind: MemberType::from_typeflag(entry.header().entry_type().as_byte()), link: link.as_deref(), size: entry.size() };
        let verdict = RULES.check(&raw).map_err(|r| r.to_string())?;
        if verdict == Verdict::Skip {
            return Ok(()); // archive-wide metadata, not a member
        }
        let name = lossy(&raw_name);
        let mode = entry.header().mode().map_err(|e| format!("bad mode for {name}: {e}"))? & 0o7777;
        let mtime = entry.header().mtime().unwrap_or(0);
        let Verdict::Member(Checked { components, shape }) = verdict else {
            // `./` (or `a/..`): the destination itself, which already exists.
            self.entries += 1;
            return Ok(());
        };
        let rel = components.join(&b'/');
        let path = self.full(&rel);
        match shape {
            Shape::Dir => {
                self.ensure_parents(&name, &components, true)?;
                match fs::symlink_metadata(&path) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => return Err(refused(&name, Reason::DirectoryOverFile)),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        fs::create_dir(&path).map_err(|e| format!("cannot create {name}: {e}"))?;
                    }
                    Err(e) => return Err(format!("cannot access {name}: {e}")),
                }
                self.known_dirs.insert(rel.clone());
                self.dir_meta.insert(rel, (mode, mtime));
            }
            Shape::File { .. } => {
                self.ensure_parents(&name, &components, true)?;
                self.clear_for(&name, &path)?;
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
                    .open(&path)
                    .map_err(|e| format!("cannot create {name}: {e}"))?;
                let n = io::copy(entry, &mut file).map_err(|e| format!("cannot extract {name}: {e}"))?;
                file.set_permissions(fs::Permissions::from_mode(mode)).map_err(|e| format!("cannot set the mode of {name}: {e}"))?;
                drop(file);
                set_mtime(&path, mtime).map_err(|e| format!("cannot set the mtime of {name}: {e}"))?;
                self.bytes += n;
            }
            Shape::Symlink { target } => {
                self.ensure_parents(&name, &components, true)?;
                self.clear_for(&name, &path)?;
                std::os::unix::fs::symlink(OsStr::from_bytes(target), &path).map_err(|e| format!("cannot create symlink {name}: {e}"))?;
                set_mtime(&path, mtime).map_err(|e| format!("cannot set the mtime of {name}: {e}"))?;
            }
            Shape::HardLink { target: target_components } => {
                let target_name = lossy(raw.link.unwrap_or_default());
                self.ensure_parents(&target_name, &target_components, false)?;
                let target_path = join_components(&self.dest, &target_components);
                match fs::symlink_metadata(&target_path) {
                    Ok(m) if m.is_dir() => return Err(format!("hard link {name} points at a directory: {target_name}")),
                    Ok(_) => {}
                    Err(e) => return Err(format!("hard link {name} points at {target_name}: {e}")),
                }
                self.ensure_parents(&name, &components, true)?;
                if target_path != path {
                    self.clear_for(&name, &path)?;
                    fs::hard_link(&target_path, &path).map_err(|e| format!("cannot create hard link {name}: {e}"))?;
                }
            }
        }
        self.entries += 1;
        Ok(())
    }
}

/// Sets the modification time without following symlinks (access time untouched).
fn set_mtime(path: &Path, mtime: u64) -> io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let times = [libc::timespec { tv_sec: 0, tv_nsec: libc::UTIME_OMIT }, libc::timespec { tv_sec: mtime as _, tv_nsec: 0 }];
    // SAFETY: valid C string and a two-element timespec array.
    let rc = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
