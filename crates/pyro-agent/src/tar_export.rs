//! `TarExport`: streams a ustar archive (pax records for long names) of a directory's
//! contents, or of a single file or symlink, as download data.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, Metadata, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use pyro_protocol::{EntryKind, TarExportResult};
use tar::{Builder, EntryType, Header, HeaderMode};

use crate::blocking::{self, DownloadWriter};
use crate::fsinfo::{describe, kind_of};
use crate::request::{CancelFlag, ReqCtx};

/// Streams the archive of `path` as download data; the result closes the stream.
pub async fn run(path: &str, req: &ReqCtx) -> Result<TarExportResult, String> {
    let full = req.ctx.resolve(path)?;
    let display = path.to_string();
    let cancel = CancelFlag::default();
    let _cancel_on_drop = cancel.guard();
    let sink = DownloadWriter::new(req, cancel);
    blocking::run(move || {
        let meta = fs::symlink_metadata(&full).map_err(|e| describe(&display, e))?;
        let kind = kind_of(&meta);
        let mut exporter = Exporter { builder: Builder::new(sink), links: HashMap::new(), entries: 0, bytes: 0 };
        let failed = |e: io::Error| format!("exporting {display} failed: {e}");
        match kind {
            EntryKind::Directory => exporter.walk(&full, b"").map_err(failed)?,
            EntryKind::File | EntryKind::Symlink => {
                let name = full.file_name().map(|n| n.as_bytes().to_vec()).unwrap_or_else(|| b"file".to_vec());
                exporter.append(&full, &name, &meta).map_err(failed)?;
            }
            EntryKind::Other => return Err(format!("unsupported path type: {display}")),
        }
        let Exporter { builder, entries, bytes, .. } = exporter;
        let mut sink = builder.into_inner().map_err(failed)?;
        sink.flush().map_err(failed)?;
        Ok(TarExportResult { kind, entry_count: entries, bytes_written: bytes })
    })
    .await
}

struct Exporter<W: Write> {
    builder: Builder<W>,
    /// (device, inode) of multiply-linked files already archived → their member name.
    links: HashMap<(u64, u64), Vec<u8>>,
    entries: u64,
    bytes: u64,
}

/// Reads exactly `remaining` bytes, failing if the file shrank meanwhile (the archive
/// header already announced the size).
struct Exact<R> {
    inner: R,
    remaining: u64,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let want = buf.len().min(self.remaining as usize);
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "file shrank while being exported"));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// One pax extended-header record: `"<len> <key>=<value>\n"`, where len counts itself.
fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let base = key.len() + value.len() + 3;
    let mut digits = base.to_string().len();
    let len = loop {
        let len = base + digits;
        if len.to_string().len() == digits {
            break len;
        }
        digits = len.to_string().len();
    };
    let mut record = format!("{len} {key}=").into_bytes();
    record.extend_from_slice(value);
    record.push(b'\n');
    record
}

/// Stores `value` raw (truncated) in a header name field; the pax record has the real one.
fn raw_truncated(field: &mut [u8], value: &[u8]) {
    field.fill(0);
    let n = value.len().min(field.len());
    field[..n].copy_from_slice(&value[..n]);
}

impl<W: Write> Exporter<W> {
    fn walk(&mut self, dir: &Path, prefix: &[u8]) -> io::Result<()> {
        let mut names: Vec<_> = fs::read_dir(dir)?.map(|e| e.map(|e| e.file_name())).collect::<io::Result<_>>()?;
        names.sort();
        for name in names {
            let path = dir.join(&name);
            let meta = match fs::symlink_metadata(&path) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let mut rel = prefix.to_vec();
            rel.extend_from_slice(name.as_bytes());
            match kind_of(&meta) {
                EntryKind::Directory => {
                    let mut dir_name = rel.clone();
                    dir_name.push(b'/');
                    self.append(&path, &dir_name, &meta)?;
                    rel.push(b'/');
                    self.walk(&path, &rel)?;
                }
                EntryKind::File | EntryKind::Symlink => self.append(&path, &rel, &meta)?,
                // Sockets, fifos and devices cannot be restored by an import; skip them
                // (like GNU tar does for sockets) rather than fail the whole export.
                EntryKind::Other => {}
            }
        }
        Ok(())
    }

    fn append(&mut self, path: &Path, name: &[u8], meta: &Metadata) -> io::Result<()> {
        let mut header = Header::new_ustar();
        header.set_metadata_in_mode(meta, HeaderMode::Complete);
        header.set_mode(meta.mode() & 0o7777);
        let mut pax = Vec::new();
        let mut link_name: Option<Vec<u8>> = None;
        let mut data: Option<fs::File> = None;
        let ft = meta.file_type();
        if ft.is_symlink() {
            header.set_entry_type(EntryType::Symlink);
            header.set_size(0);
            link_name = Some(fs::read_link(path)?.into_os_string().into_encoded_bytes());
        } else if ft.is_dir() {
            header.set_entry_type(EntryType::Directory);
            header.set_size(0);
        } else {
            let key = (meta.dev(), meta.ino());
            if meta.nlink() > 1 {
                if let Some(first) = self.links.get(&key) {
                    header.set_entry_type(EntryType::Link);
                    header.set_size(0);
                    link_name = Some(first.clone());
                } else {
                    self.links.insert(key, name.to_vec());
                }
            }
            if link_name.is_none() {
                header.set_entry_type(EntryType::Regular);
                header.set_size(meta.len());
                data = Some(OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(path)?);
            }
        }
        if header.set_path(Path::new(OsStr::from_bytes(name))).is_err() {
            pax.extend(pax_record("path", name));
            let ustar = header.as_ustar_mut().expect("ustar header");
            ustar.prefix.fill(0);
            raw_truncated(&mut ustar.name, name);
        }
        if let Some(target) = &link_name {
            if header.set_link_name(Path::new(OsStr::from_bytes(target))).is_err() {
                pax.extend(pax_record("linkpath", target));
                raw_truncated(&mut header.as_ustar_mut().expect("ustar header").linkname, target);
            }
        }
        if !pax.is_empty() {
            let mut pax_header = Header::new_ustar();
            pax_header.set_entry_type(EntryType::XHeader);
            pax_header.set_size(pax.len() as u64);
            pax_header.set_mode(0o644);
            pax_header.set_mtime(meta.mtime().max(0) as u64);
            raw_truncated(&mut pax_header.as_ustar_mut().expect("ustar header").name, b"././@PaxHeader");
            pax_header.set_cksum();
            self.builder.append(&pax_header, pax.as_slice())?;
        }
        header.set_cksum();
        match data {
            Some(file) => {
                let size = meta.len();
                self.builder.append(&header, Exact { inner: file, remaining: size })?;
                self.bytes += size;
            }
            None => self.builder.append(&header, io::empty())?,
        }
        self.entries += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::pax_record;

    #[test]
    fn pax_record_length_counts_itself() {
        for value_len in [0usize, 1, 5, 6, 7, 90, 94, 95, 96, 97, 995, 996, 997, 998] {
            let value = vec![b'x'; value_len];
            let record = pax_record("path", &value);
            let text = String::from_utf8(record.clone()).unwrap();
            let (len, _) = text.split_once(' ').unwrap();
            assert_eq!(len.parse::<usize>().unwrap(), record.len(), "value length {value_len}");
        }
    }
}
