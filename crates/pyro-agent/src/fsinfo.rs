//! How handlers describe filesystem entries and failed accesses in their responses, kept
//! below the handlers so that `fsops` and `tar_export` share it without importing each
//! other.

use std::fs::Metadata;
use std::io;

use pyro_protocol::EntryKind;

/// The protocol's kind of a (not followed) entry.
pub fn kind_of(meta: &Metadata) -> EntryKind {
    let ft = meta.file_type();
    if ft.is_symlink() {
        EntryKind::Symlink
    } else if ft.is_dir() {
        EntryKind::Directory
    } else if ft.is_file() {
        EntryKind::File
    } else {
        EntryKind::Other
    }
}

/// One-line message for a failed access to a request path.
pub fn describe(display: &str, e: io::Error) -> String {
    if e.kind() == io::ErrorKind::NotFound {
        format!("path does not exist: {display}")
    } else {
        format!("cannot access {display}: {e}")
    }
}
