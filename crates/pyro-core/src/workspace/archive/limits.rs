//! Limits on tar streams from the guest, and the streaming validator that enforces them.
//!
//! The `tar` crate (0.4) trusts what headers declare: it reads GNU long-name/long-link and
//! pax extension bodies whole into a `Vec`, and it expands GNU sparse members to their
//! declared real size with zero-filled holes (a few KB of archive can declare a terabyte).
//! [`TarScanner`] sees every byte before the `tar` crate does, frames the stream the same
//! way (512-byte headers, the pax `size` override, padding), and refuses a header as soon
//! as its last byte arrives, so the `tar` crate never acts on it:
//!
//! * member types the agent never emits (it writes ustar regular files, directories,
//!   symlinks and hard links, plus pax `x` headers for long names; the host's own archives
//!   add GNU `L`/`K` long names) — GNU sparse (`S`), contiguous, global pax headers,
//!   devices, fifos, volume labels, and pax `GNU.sparse.*` records;
//! * headers that are neither ustar nor GNU, bad checksums, non-empty links/directories;
//! * extension headers larger than [`TarLimits::max_extension_bytes`] (before their body
//!   is read), or more than [`TarLimits::max_extension_total_bytes`] of them;
//! * more than [`TarLimits::max_members`] members, more than
//!   [`TarLimits::max_file_bytes`] of declared regular-file data, more than
//!   [`TarLimits::max_stream_bytes`] of stream.
//!
//! [`TarGuard`] applies it to a reader (export, diff), [`super::SpoolWriter`] to the bytes
//! spooled from the guest.

use std::fmt;
use std::io::{self, Read};

use tar::{Header, PaxExtensions};

use crate::error::Error;

const BLOCK: usize = 512;

/// Budgets for one tar stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TarLimits {
    /// Bytes of the whole stream: headers, data, padding, and anything after the end.
    pub max_stream_bytes: u64,
    /// Sum of the declared sizes of regular-file members (what an export writes).
    pub max_file_bytes: u64,
    /// Members (files, directories, symlinks, hard links; extension headers not counted).
    pub max_members: u64,
    /// Body of one GNU long-name/long-link or pax extended header.
    pub max_extension_bytes: u64,
    /// Bodies of all extension headers together (they end up as names held in memory).
    pub max_extension_total_bytes: u64,
}

impl TarLimits {
    /// Default member cap.
    pub const DEFAULT_MAX_MEMBERS: u64 = 1_000_000;
    /// Default cap on one extension header body: a path and a link target (Linux
    /// `PATH_MAX` is 4 KiB each) fit many times over.
    pub const DEFAULT_MAX_EXTENSION_BYTES: u64 = 64 << 10;
    /// Default cap on all extension header bodies together.
    pub const DEFAULT_MAX_EXTENSION_TOTAL_BYTES: u64 = 256 << 20;
    /// Stream bytes allowed on top of file bytes for headers and padding (a million
    /// members at up to 2 KiB of headers and padding each).
    pub const HEADER_ALLOWANCE: u64 = 2 << 30;

    /// Limits for a tree that lives on a disk of `disk_bytes`: its files cannot hold
    /// more (a guest's sparse files can, and are refused), and the stream carries at
    /// most [`Self::HEADER_ALLOWANCE`] of headers and padding on top.
    pub const fn for_disk(disk_bytes: u64) -> Self {
        Self {
            max_stream_bytes: disk_bytes.saturating_add(Self::HEADER_ALLOWANCE),
            max_file_bytes: disk_bytes,
            max_members: Self::DEFAULT_MAX_MEMBERS,
            max_extension_bytes: Self::DEFAULT_MAX_EXTENSION_BYTES,
            max_extension_total_bytes: Self::DEFAULT_MAX_EXTENSION_TOTAL_BYTES,
        }
    }
}

impl Default for TarLimits {
    /// [`TarLimits::for_disk`] of 8 GiB, the workspace disk size.
    fn default() -> Self {
        Self::for_disk(8 << 30)
    }
}

/// Why a tar stream was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// A budget of [`TarLimits`] was exceeded ([`Error::LimitExceeded`]).
    Limit(String),
    /// The stream holds something the agent never sends ([`Error::InvalidArgument`]).
    Invalid(String),
}

impl Refused {
    /// The message.
    pub fn message(&self) -> &str {
        match self {
            Refused::Limit(m) | Refused::Invalid(m) => m,
        }
    }

    /// The refusal carried by an I/O error (as [`TarGuard`] and [`super::SpoolWriter`]
    /// report it), if any.
    pub fn from_io(e: &io::Error) -> Option<Refused> {
        e.get_ref()?.downcast_ref::<Refused>().cloned()
    }
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for Refused {}

impl From<Refused> for Error {
    fn from(r: Refused) -> Self {
        match r {
            Refused::Limit(m) => Error::LimitExceeded(m),
            Refused::Invalid(m) => Error::InvalidArgument(m),
        }
    }
}

/// `1 GiB`, `64 KiB`, `1000 bytes`.
pub(crate) fn show_bytes(n: u64) -> String {
    for (unit, shift) in [("GiB", 30), ("MiB", 20), ("KiB", 10)] {
        if n >= 1 << shift && n & ((1 << shift) - 1) == 0 {
            return format!("{} {unit}", n >> shift);
        }
    }
    format!("{n} bytes")
}

fn limit(message: String) -> Refused {
    Refused::Limit(format!("archive refused: {message}"))
}

fn invalid(message: String) -> Refused {
    Refused::Invalid(format!("archive refused: {message}"))
}

/// A push validator for a tar stream: feed it the stream's bytes in order, in chunks of
/// any size; it fails (and keeps failing) as soon as the bytes seen break a rule of the
/// module docs. After the end-of-archive block it only counts bytes.
#[derive(Debug, Clone)]
pub struct TarScanner {
    limits: TarLimits,
    block: [u8; BLOCK],
    filled: usize,
    /// Data bytes of the current member or extension header still to come.
    data_left: u64,
    /// Padding bytes after them.
    pad_left: u64,
    /// The body of the pax header being read.
    capture: Option<Vec<u8>>,
    /// Extension headers describing the next member.
    pending_pax: Option<Vec<u8>>,
    pending_long_name: bool,
    pending_long_link: bool,
    ended: bool,
    failed: Option<Refused>,
    stream_bytes: u64,
    file_bytes: u64,
    members: u64,
    extension_bytes: u64,
}

impl TarScanner {
    /// A scanner at the start of a stream.
    pub fn new(limits: TarLimits) -> Self {
        Self {
            limits,
            block: [0; BLOCK],
            filled: 0,
            data_left: 0,
            pad_left: 0,
            capture: None,
            pending_pax: None,
            pending_long_name: false,
            pending_long_link: false,
            ended: false,
            failed: None,
            stream_bytes: 0,
            file_bytes: 0,
            members: 0,
            extension_bytes: 0,
        }
    }

    /// Checks the next bytes of the stream.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), Refused> {
        if let Some(refused) = &self.failed {
            return Err(refused.clone());
        }
        let result = self.feed_inner(bytes);
        if let Err(refused) = &result {
            self.failed = Some(refused.clone());
            self.capture = None;
            self.pending_pax = None;
        }
        result
    }

    /// The refusal, once there is one.
    pub fn failure(&self) -> Option<&Refused> {
        self.failed.as_ref()
    }

    /// Members seen so far.
    pub fn members(&self) -> u64 {
        self.members
    }

    /// Declared regular-file bytes seen so far.
    pub fn file_bytes(&self) -> u64 {
        self.file_bytes
    }

    /// Stream bytes seen so far.
    pub fn stream_bytes(&self) -> u64 {
        self.stream_bytes
    }

    /// Whether the end-of-archive block has been seen.
    pub fn ended(&self) -> bool {
        self.ended
    }

    fn feed_inner(&mut self, mut bytes: &[u8]) -> Result<(), Refused> {
        self.stream_bytes = self.stream_bytes.saturating_add(bytes.len() as u64);
        if self.stream_bytes > self.limits.max_stream_bytes {
            return Err(limit(format!("the stream is larger than {}", show_bytes(self.limits.max_stream_bytes))));
        }
        while !bytes.is_empty() && !self.ended {
            if self.data_left > 0 {
                let n = bytes.len().min(usize::try_from(self.data_left).unwrap_or(usize::MAX));
                if let Some(capture) = &mut self.capture {
                    capture.extend_from_slice(&bytes[..n]);
                }
                self.data_left -= n as u64;
                bytes = &bytes[n..];
                if self.data_left == 0 {
                    self.end_of_data()?;
                }
            } else if self.pad_left > 0 {
                let n = bytes.len().min(self.pad_left as usize);
                self.pad_left -= n as u64;
                bytes = &bytes[n..];
            } else {
                let n = bytes.len().min(BLOCK - self.filled);
                self.block[self.filled..self.filled + n].copy_from_slice(&bytes[..n]);
                self.filled += n;
                bytes = &bytes[n..];
                if self.filled == BLOCK {
                    self.filled = 0;
                    self.header()?;
                    if self.data_left == 0 {
                        self.end_of_data()?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The data of the current member or extension header is complete.
    fn end_of_data(&mut self) -> Result<(), Refused> {
        let Some(body) = self.capture.take() else { return Ok(()) };
        for record in PaxExtensions::new(&body).flatten() {
            if record.key().is_ok_and(|k| k.starts_with("GNU.sparse.")) {
                return Err(invalid("pax sparse-file records (the agent never sends sparse files)".into()));
            }
        }
        self.pending_pax = Some(body);
        Ok(())
    }

    /// A complete header block is in `self.block`.
    fn header(&mut self) -> Result<(), Refused> {
        if self.block.iter().all(|&b| b == 0) {
            if self.pending_pax.is_some() || self.pending_long_name || self.pending_long_link {
                return Err(invalid("extension headers describe a member that never comes".into()));
            }
            self.ended = true;
            return Ok(());
        }
        let header = Header::from_byte_slice(&self.block);
        // The same checksum as the `tar` crate: the field itself counts as spaces.
        let sum = self.block[..148].iter().chain(&self.block[156..]).map(|&b| u32::from(b)).sum::<u32>() + 8 * 32;
        if header.cksum().ok() != Some(sum) {
            return Err(invalid("header checksum mismatch".into()));
        }
        let name = shown_name(header);
        if header.as_ustar().is_none() && header.as_gnu().is_none() {
            return Err(invalid(format!("{name} has neither a ustar nor a GNU header")));
        }
        let header_size = header.entry_size().map_err(|e| invalid(format!("{name} has an invalid size: {e}")))?;
        let kind = self.block[156];
        let body_len = match kind {
            b'x' | b'L' | b'K' => {
                let (what, pending) = match kind {
                    b'x' => ("pax extended", self.pending_pax.is_some()),
                    b'L' => ("GNU long-name", self.pending_long_name),
                    _ => ("GNU long-link", self.pending_long_link),
                };
                if pending {
                    return Err(invalid(format!("two {what} headers describe the same member")));
                }
                if header_size > self.limits.max_extension_bytes {
                    return Err(limit(format!("{what} header of {header_size} bytes is larger than {}", show_bytes(self.limits.max_extension_bytes))));
                }
                self.extension_bytes += header_size;
                if self.extension_bytes > self.limits.max_extension_total_bytes {
                    return Err(limit(format!("extension headers hold more than {} in total", show_bytes(self.limits.max_extension_total_bytes))));
                }
                match kind {
                    b'x' => self.capture = Some(Vec::with_capacity(header_size as usize)),
                    b'L' => self.pending_long_name = true,
                    _ => self.pending_long_link = true,
                }
                header_size
            }
            b'0' | b'1' | b'2' | b'5' => {
                // What the `tar` crate does: a pax `size` record overrides the header.
                let size = self.pending_pax.as_deref().and_then(pax_size).unwrap_or(header_size);
                self.pending_pax = None;
                self.pending_long_name = false;
                self.pending_long_link = false;
                self.members += 1;
                if self.members > self.limits.max_members {
                    return Err(limit(format!("more than {} members", self.limits.max_members)));
                }
                if kind == b'0' {
                    self.file_bytes = self.file_bytes.saturating_add(size);
                    if self.file_bytes > self.limits.max_file_bytes {
                        return Err(limit(format!("its files hold more than {} (at {name})", show_bytes(self.limits.max_file_bytes))));
                    }
                } else if size != 0 {
                    return Err(invalid(format!("{name} is a link or directory with {size} bytes of data")));
                }
                size
            }
            b'S' => return Err(invalid(format!("{name} is a sparse file (the agent never sends sparse files)"))),
            other => return Err(invalid(format!("{name} has the unsupported member type {:?}", other as char))),
        };
        self.data_left = body_len;
        self.pad_left = (BLOCK as u64 - body_len % BLOCK as u64) % BLOCK as u64;
        Ok(())
    }
}

/// The `size` record of a pax body, parsed exactly as the `tar` crate does (the first
/// `size` record; nothing when a record before it is malformed or it does not parse).
fn pax_size(body: &[u8]) -> Option<u64> {
    for record in PaxExtensions::new(body) {
        let record = record.ok()?;
        if record.key() != Ok("size") {
            continue;
        }
        return record.value().ok()?.parse::<u64>().ok();
    }
    None
}

/// The header's name for messages (at most 200 bytes of it).
fn shown_name(header: &Header) -> String {
    let name = header.path_bytes();
    let cut = &name[..name.len().min(200)];
    format!("member {:?}", String::from_utf8_lossy(cut))
}

/// A reader that passes a tar stream through a [`TarScanner`]: a read that would hand
/// over a refused header fails instead (the error carries a [`Refused`]).
#[derive(Debug)]
pub struct TarGuard<R> {
    inner: R,
    scanner: TarScanner,
}

impl<R> TarGuard<R> {
    /// Guards `inner` with `limits`.
    pub fn new(inner: R, limits: TarLimits) -> Self {
        Self { inner, scanner: TarScanner::new(limits) }
    }

    /// The scanner's counters.
    pub fn scanner(&self) -> &TarScanner {
        &self.scanner
    }
}

impl<R: Read> Read for TarGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(refused) = self.scanner.failure() {
            return Err(io::Error::other(refused.clone()));
        }
        let n = self.inner.read(buf)?;
        self.scanner.feed(&buf[..n]).map_err(io::Error::other)?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tar::EntryType;

    fn header(name: &str, kind: EntryType, size: u64) -> Vec<u8> {
        let mut h = Header::new_ustar();
        h.set_path(name).unwrap();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(0o644);
        h.set_cksum();
        h.as_bytes().to_vec()
    }

    fn scan(bytes: &[u8], limits: TarLimits) -> Result<TarScanner, Refused> {
        let mut s = TarScanner::new(limits);
        s.feed(bytes)?;
        Ok(s)
    }

    #[test]
    fn frames_like_the_tar_crate_including_the_pax_size_override() {
        // A pax header says the next member has 1024 bytes although its header says 0:
        // the tar crate believes the pax record, so must the scanner.
        let record = b"13 size=1024\n";
        let mut bytes = header("././@PaxHeader", EntryType::XHeader, record.len() as u64);
        bytes.extend_from_slice(record);
        bytes.resize(1024, 0);
        bytes.extend(header("f", EntryType::Regular, 0));
        bytes.extend(vec![b'x'; 1024]);
        bytes.extend(header("g", EntryType::Regular, 3));
        bytes.extend(b"abc");
        bytes.resize(bytes.len().next_multiple_of(512), 0);
        bytes.extend([0; 1024]);
        for chunk in [1, 7, 512, 4096] {
            let mut s = TarScanner::new(TarLimits::default());
            for piece in bytes.chunks(chunk) {
                s.feed(piece).unwrap();
            }
            assert!(s.ended());
            assert_eq!((s.members(), s.file_bytes()), (2, 1027));
        }
        let names: Vec<_> = tar::Archive::new(bytes.as_slice()).entries().unwrap().map(|e| e.unwrap().path_bytes().into_owned()).collect();
        assert_eq!(names, [b"f".to_vec(), b"g".to_vec()]);
    }

    #[test]
    fn refuses_what_the_agent_never_sends() {
        let refused = |bytes: &[u8]| scan(bytes, TarLimits::default()).unwrap_err().to_string();
        assert!(refused(&header("s", EntryType::GNUSparse, 0)).contains("sparse"));
        assert!(refused(&header("c", EntryType::Continuous, 0)).contains("unsupported member type '7'"));
        assert!(refused(&header("g", EntryType::XGlobalHeader, 0)).contains("unsupported member type 'g'"));
        assert!(refused(&header("d", EntryType::Directory, 5)).contains("with 5 bytes of data"));
        let mut bad = header("f", EntryType::Regular, 0);
        bad[0] ^= 1;
        assert_eq!(refused(&bad), "archive refused: header checksum mismatch");
        let record = b"28 GNU.sparse.realsize=1000\n";
        let mut pax = header("p", EntryType::XHeader, record.len() as u64);
        pax.extend_from_slice(record);
        pax.resize(1024, 0);
        assert!(refused(&pax).contains("sparse"));
    }

    #[test]
    fn enforces_every_budget() {
        let limits = TarLimits { max_stream_bytes: 10 << 10, max_file_bytes: 4096, max_members: 2, max_extension_bytes: 1024, max_extension_total_bytes: 1536 };
        let e = scan(&header("f", EntryType::Regular, 4097), limits).unwrap_err();
        assert!(matches!(e, Refused::Limit(_)), "{e}");
        let many: Vec<u8> = (0..3).flat_map(|i| header(&format!("d{i}"), EntryType::Directory, 0)).collect();
        assert_eq!(scan(&many, limits).unwrap_err().to_string(), "archive refused: more than 2 members");
        let e = scan(&header("././@LongLink", EntryType::GNULongName, 1025), limits).unwrap_err();
        assert!(e.to_string().contains("GNU long-name header of 1025 bytes is larger than 1 KiB"), "{e}");
        assert_eq!(scan(&vec![0; 10 << 10 | 1], limits).unwrap_err(), Refused::Limit("archive refused: the stream is larger than 10 KiB".into()));
        assert_eq!(show_bytes(8 << 30), "8 GiB");
        assert_eq!(show_bytes(1000), "1000 bytes");
    }
}
