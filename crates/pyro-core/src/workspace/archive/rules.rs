//! The host's end of the archive member rules shared with the agent
//! (`pyro_protocol::archive_rules`): the rules and their messages live there; this only
//! reads `tar` crate entries into them and turns a refusal into the core error.

use std::io::Read;

use pyro_protocol::archive_rules::{MemberRules, MemberType, RawMember, Refusal};

use crate::error::{Error, Result};
pub(crate) use pyro_protocol::archive_rules::{Member, MemberKind};

impl From<Refusal> for Error {
    fn from(refusal: Refusal) -> Self {
        Error::InvalidArgument(refusal.to_string())
    }
}

/// The rules' view of a `tar` crate member type.
fn member_type(kind: tar::EntryType) -> MemberType {
    MemberType::from_typeflag(kind.as_byte())
}

/// Checks one entry of a `tar::Archive` against `rules`; `Ok(None)` means "skip it"
/// (`./`, global pax headers). An unparsable mode (some writers leave the field blank)
/// gets the usual default.
pub(crate) fn check_entry<R: Read>(rules: &mut MemberRules, entry: &tar::Entry<'_, R>) -> Result<Option<Member>> {
    let header = entry.header();
    let kind = header.entry_type();
    let name = entry.path_bytes();
    let link = entry.link_name_bytes();
    let mode = header.mode().unwrap_or(if kind.is_dir() { 0o755 } else { 0o644 });
    let mtime = header.mtime().unwrap_or(0);
    let raw = RawMember { name: &name, kind: member_type(kind), link: link.as_deref(), size: entry.size() };
    Ok(rules.check(&raw, mode & 0o7777, mtime)?)
}
