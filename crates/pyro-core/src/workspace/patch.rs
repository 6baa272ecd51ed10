//! Unified diff parsing and in-memory application for `workspace patch apply`.
//!
//! This module is pure: [`parse_patch`] turns patch text into one [`FilePatch`] per file
//! and [`apply_file`] computes a file's new content from its current content. Callers
//! achieve all-or-nothing semantics by parsing the whole patch and applying every file in
//! memory ([`apply_all`]) before writing anything.
//!
//! Accepted input is standard `git diff` output (including `new file mode`,
//! `deleted file mode` and `old mode`/`new mode` headers, C-quoted paths, and sections
//! without hunks for empty files and pure mode changes) and plain `diff -u` output.
//! Compared with the original implementation the parser is count driven (a removed line
//! that starts with `-- ` or an added line starting with `++ ` stays inside its hunk),
//! treats a completely empty line inside a hunk as an empty context line, honours
//! `\ No newline at end of file`, and the applier finds hunks whose context moved
//! (nearest unique match, no fuzz).

use std::collections::HashSet;

use super::paths::normalize_workspace_path;
use crate::error::Error;

/// Largest accepted patch text and largest patched file, in bytes.
pub const MAX_PATCH_BYTES: usize = 1024 * 1024;

/// What a [`FilePatch`] does to its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileChangeKind {
    /// The file must not exist and is created.
    Added,
    /// The file must exist and is changed (content and/or mode).
    Modified,
    /// The file must exist and is removed.
    Deleted,
}

impl FileChangeKind {
    /// The status word used in results: `added`, `modified` or `deleted`.
    pub fn as_str(self) -> &'static str {
        match self {
            FileChangeKind::Added => "added",
            FileChangeKind::Modified => "modified",
            FileChangeKind::Deleted => "deleted",
        }
    }
}

/// The changes a patch makes to one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilePatch {
    /// Normalised absolute path (`/workspace/...`).
    pub path: String,
    /// Whether the file is added, modified or deleted.
    pub kind: FileChangeKind,
    /// Permission bits before the change (`0o644`/`0o755`) when git headers state them
    /// (`old mode`, `deleted file mode`).
    pub old_mode: Option<u32>,
    /// Permission bits after the change (`0o644`/`0o755`) when git headers state them
    /// (`new file mode`, `new mode`); `None` means "keep / use the default".
    pub new_mode: Option<u32>,
    hunks: Vec<Hunk>,
}

impl FilePatch {
    /// Number of hunks (zero for pure mode changes and git's empty-file add/delete).
    pub fn hunk_count(&self) -> usize {
        self.hunks.len()
    }
}

/// One `@@` hunk.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Hunk {
    /// `A` of `-A,B`.
    old_start: usize,
    /// `B` of `-A,B`.
    old_count: usize,
    /// Body lines; texts keep their terminator unless marked `\ No newline at end of file`.
    lines: Vec<HunkLine>,
}

impl Hunk {
    /// Lines the hunk expects in the current file (context and removed).
    fn old_side(&self) -> Vec<&str> {
        self.lines.iter().filter(|l| l.op != Op::Add).map(|l| l.text.as_str()).collect()
    }

    /// Lines the hunk leaves in the new file (context and added).
    fn new_side(&self) -> Vec<&str> {
        self.lines.iter().filter(|l| l.op != Op::Remove).map(|l| l.text.as_str()).collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct HunkLine {
    op: Op,
    text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Context,
    Remove,
    Add,
}

fn invalid(message: impl Into<String>) -> Error {
    Error::InvalidArgument(message.into())
}

fn count_mismatch() -> Error {
    invalid("patch hunk line counts do not match the header")
}

/// A line without its terminator (`\n` and one preceding `\r`), for header matching.
fn header_text(raw: &str) -> &str {
    let line = raw.strip_suffix('\n').unwrap_or(raw);
    line.strip_suffix('\r').unwrap_or(line)
}

/// Line prefixes of git features this applier does not support.
const UNSUPPORTED_PREFIXES: &[&str] =
    &["rename from ", "rename to ", "copy from ", "copy to ", "similarity index ", "dissimilarity index ", "GIT binary patch", "Binary files "];

fn check_supported(line: &str) -> Result<(), Error> {
    if UNSUPPORTED_PREFIXES.iter().any(|p| line.starts_with(p)) {
        return Err(invalid(format!("unsupported patch feature: {line}")));
    }
    Ok(())
}

/// Parses a git mode (`100644`, `100755`) into permission bits; symlinks, submodules and
/// other non-regular modes are unsupported.
fn parse_mode(value: &str, line: &str) -> Result<u32, Error> {
    let mode = u32::from_str_radix(value.trim(), 8).map_err(|_| invalid(format!("invalid patch header: {line}")))?;
    if mode & 0o170000 != 0o100000 {
        return Err(invalid(format!("unsupported patch feature: {line}")));
    }
    Ok(mode & 0o7777)
}

/// Decodes a C-style quoted string as git writes unusual paths (`"a/caf\303\251"`).
/// Returns the decoded text and the rest of the input after the closing quote.
fn unquote_c(input: &str) -> Option<(String, &str)> {
    let bytes = input.as_bytes();
    if bytes.first() != Some(&b'"') {
        return None;
    }
    let mut out = Vec::new();
    let mut i = 1;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                let text = String::from_utf8(out).ok()?;
                return Some((text, &input[i + 1..]));
            }
            b'\\' => {
                let escape = *bytes.get(i + 1)?;
                i += 2;
                let decoded = match escape {
                    b'a' => 0x07,
                    b'b' => 0x08,
                    b't' => b'\t',
                    b'n' => b'\n',
                    b'v' => 0x0b,
                    b'f' => 0x0c,
                    b'r' => b'\r',
                    b'"' => b'"',
                    b'\\' => b'\\',
                    b'0'..=b'7' => {
                        let digits = bytes.get(i - 1..i + 2)?;
                        if !digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                            return None;
                        }
                        i += 2;
                        let value = digits.iter().fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                        u8::try_from(value).ok()?
                    }
                    _ => return None,
                };
                out.push(decoded);
            }
            other => {
                out.push(other);
                i += 1;
            }
        }
    }
    None
}

/// Strips one leading `a/` or `b/`.
fn strip_side_prefix(path: &str) -> &str {
    path.strip_prefix("a/").or_else(|| path.strip_prefix("b/")).unwrap_or(path)
}

/// Parses a `---`/`+++` label: `None` for `/dev/null`, else the normalised path.
fn parse_label(label: &str, line: &str) -> Result<Option<String>, Error> {
    let raw = if label.starts_with('"') {
        unquote_c(label).ok_or_else(|| invalid(format!("invalid patch header: {line}")))?.0
    } else {
        label.split('\t').next().unwrap_or_default().trim().to_owned()
    };
    if raw == "/dev/null" {
        return Ok(None);
    }
    normalize_workspace_path(strip_side_prefix(&raw)).map(Some)
}

/// Extracts the path from `diff --git a/P b/P` when both sides name the same path
/// (handles spaces and C-quoted names); `None` when it cannot tell.
fn git_line_path(rest: &str) -> Option<String> {
    if rest.starts_with('"') {
        let (left, tail) = unquote_c(rest)?;
        let tail = tail.strip_prefix(' ')?;
        let right = if tail.starts_with('"') {
            let (right, after) = unquote_c(tail)?;
            if !after.is_empty() {
                return None;
            }
            right
        } else {
            tail.to_owned()
        };
        let (l, r) = (strip_side_prefix(&left), strip_side_prefix(&right));
        return (l == r).then(|| l.to_owned());
    }
    for (i, _) in rest.match_indices(' ') {
        let (left, right) = (&rest[..i], &rest[i + 1..]);
        if right.starts_with('"') {
            let (right, after) = unquote_c(right)?;
            let l = strip_side_prefix(left);
            return (after.is_empty() && l == strip_side_prefix(&right)).then(|| l.to_owned());
        }
        let l = strip_side_prefix(left);
        if l == strip_side_prefix(right) {
            return Some(l.to_owned());
        }
    }
    None
}

/// Parses `@@ -A[,B] +C[,D] @@ ...` into `(A, B, C, D)`.
fn parse_hunk_header(line: &str) -> Option<(usize, usize, usize, usize)> {
    fn range(text: &str) -> Option<(usize, usize)> {
        let digits = |s: &str| -> Option<usize> {
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            s.parse().ok()
        };
        match text.split_once(',') {
            Some((start, count)) => Some((digits(start)?, digits(count)?)),
            None => Some((digits(text)?, 1)),
        }
    }
    let rest = line.strip_prefix("@@ -")?;
    let (old, rest) = rest.split_once(" +")?;
    let (new, _) = rest.split_once(" @@")?;
    let (a, b) = range(old)?;
    let (c, d) = range(new)?;
    Some((a, b, c, d))
}

/// Cursor over the patch's lines (each keeps its terminator).
struct Lines<'a> {
    lines: Vec<&'a str>,
    pos: usize,
}

impl<'a> Lines<'a> {
    fn peek(&self) -> Option<&'a str> {
        self.lines.get(self.pos).copied()
    }

    fn peek_header(&self) -> Option<&'a str> {
        self.peek().map(header_text)
    }
}

/// Applies a `\ No newline at end of file` marker to the line before it.
fn apply_marker(body: &mut [HunkLine], raw: &str) -> Result<(), Error> {
    match body.last_mut() {
        Some(last) if last.text.ends_with('\n') => {
            last.text.pop();
            Ok(())
        }
        _ => Err(invalid(format!("invalid patch hunk line: {}", header_text(raw)))),
    }
}

/// Parses one hunk starting at its `@@` line.
fn parse_hunk(lines: &mut Lines<'_>) -> Result<Hunk, Error> {
    let header = lines.peek_header().unwrap_or_default();
    let (old_start, old_count, _new_start, new_count) =
        parse_hunk_header(header).filter(|&(_, b, _, d)| b > 0 || d > 0).ok_or_else(|| invalid(format!("invalid patch hunk header: {header}")))?;
    lines.pos += 1;
    let (mut old_left, mut new_left) = (old_count, new_count);
    let mut body: Vec<HunkLine> = Vec::new();
    let mut marker: Option<&str> = None;
    while old_left > 0 || new_left > 0 {
        let raw = lines.peek().ok_or_else(count_mismatch)?;
        let (op, text) = match raw.as_bytes()[0] {
            b' ' => (Op::Context, &raw[1..]),
            b'-' => (Op::Remove, &raw[1..]),
            b'+' => (Op::Add, &raw[1..]),
            b'\\' => {
                apply_marker(&mut body, raw)?;
                marker = Some(raw);
                lines.pos += 1;
                continue;
            }
            // An empty line is an empty context line whose leading space was stripped.
            b'\n' => (Op::Context, raw),
            b'\r' if raw == "\r\n" => (Op::Context, raw),
            _ if raw.starts_with("@@") || raw.starts_with("diff ") => return Err(count_mismatch()),
            _ => return Err(invalid(format!("invalid patch hunk line: {}", header_text(raw)))),
        };
        match op {
            Op::Context if old_left > 0 && new_left > 0 => {
                old_left -= 1;
                new_left -= 1;
            }
            Op::Remove if old_left > 0 => old_left -= 1,
            Op::Add if new_left > 0 => new_left -= 1,
            _ => return Err(count_mismatch()),
        }
        let mut text = text.to_owned();
        if !text.ends_with('\n') {
            // Only the last line of the patch text can lack a terminator: the patch was
            // trimmed, which is not the same as a `\ No newline at end of file` marker.
            text.push('\n');
        }
        body.push(HunkLine { op, text });
        lines.pos += 1;
    }
    if let Some(raw) = lines.peek().filter(|l| l.starts_with('\\')) {
        apply_marker(&mut body, raw)?;
        marker = Some(raw);
        lines.pos += 1;
    }
    // A line without a newline must be the last line of its side.
    let hunk = Hunk { old_start, old_count, lines: body };
    for side in [hunk.old_side(), hunk.new_side()] {
        if side.iter().rev().skip(1).any(|l| !l.ends_with('\n')) {
            let line = header_text(marker.unwrap_or_default());
            return Err(invalid(format!("invalid patch hunk line: {line}")));
        }
    }
    Ok(hunk)
}

/// Parses the `---`/`+++` labels and the hunks that follow; a git section may still lack
/// hunks here.
fn parse_labels_and_hunks(lines: &mut Lines<'_>) -> Result<FilePatch, Error> {
    let minus = lines.peek_header().unwrap_or_default();
    lines.pos += 1;
    let plus = match lines.peek_header() {
        Some(line) if line.starts_with("+++ ") => line,
        _ => return Err(invalid("patch is missing '+++' header")),
    };
    lines.pos += 1;
    let old = parse_label(&minus[4..], minus)?;
    let new = parse_label(&plus[4..], plus)?;
    let mut hunks = Vec::new();
    while let Some(line) = lines.peek_header() {
        if line.starts_with("@@") {
            hunks.push(parse_hunk(lines)?);
        } else if line.trim().is_empty() {
            lines.pos += 1;
        } else if line.starts_with("--- ") || line.starts_with("diff ") {
            break;
        } else if !hunks.is_empty() && [' ', '+', '-', '\\'].iter().any(|c| line.starts_with(*c)) {
            // More body lines than the hunk header announced.
            return Err(count_mismatch());
        } else {
            break;
        }
    }
    file_from_labels(old, new, hunks)
}

/// What git's extended header lines said about a file.
#[derive(Default)]
struct GitHeader {
    new_file: Option<u32>,
    deleted_file: Option<u32>,
    old_mode: Option<u32>,
    new_mode: Option<u32>,
}

/// Parses git's extended header lines after `diff --git`.
fn parse_git_header(lines: &mut Lines<'_>) -> Result<GitHeader, Error> {
    let mut header = GitHeader::default();
    while let Some(line) = lines.peek_header() {
        if line.starts_with("--- ") || line.starts_with("diff ") || line.trim().is_empty() {
            break;
        }
        check_supported(line)?;
        if line.starts_with("index ") {
            // Blob ids are not checked: the context lines are.
        } else if let Some(mode) = line.strip_prefix("new file mode ") {
            header.new_file = Some(parse_mode(mode, line)?);
        } else if let Some(mode) = line.strip_prefix("deleted file mode ") {
            header.deleted_file = Some(parse_mode(mode, line)?);
        } else if let Some(mode) = line.strip_prefix("old mode ") {
            header.old_mode = Some(parse_mode(mode, line)?);
        } else if let Some(mode) = line.strip_prefix("new mode ") {
            header.new_mode = Some(parse_mode(mode, line)?);
        } else {
            return Err(invalid(format!("invalid patch header: {line}")));
        }
        lines.pos += 1;
    }
    Ok(header)
}

/// Parses unified diff text (git or plain `diff -u`) into per-file patches, in patch order.
///
/// # Errors
/// [`Error::InvalidArgument`] with a one-line message for oversized, empty or malformed
/// patches and for unsupported features (renames, copies, binary patches, symlinks).
pub fn parse_patch(text: &str) -> Result<Vec<FilePatch>, Error> {
    if text.len() > MAX_PATCH_BYTES {
        return Err(invalid(format!("patch must be at most {MAX_PATCH_BYTES} bytes when encoded as UTF-8")));
    }
    if text.trim().is_empty() {
        return Err(invalid("patch must not be empty"));
    }
    let mut lines = Lines { lines: text.split_inclusive('\n').collect(), pos: 0 };
    let mut files: Vec<FilePatch> = Vec::new();
    let mut seen = HashSet::new();
    while let Some(line) = lines.peek_header() {
        if line.trim().is_empty() {
            lines.pos += 1;
            continue;
        }
        check_supported(line)?;
        let file = if let Some(rest) = line.strip_prefix("diff --git ") {
            lines.pos += 1;
            let git_path = git_line_path(rest);
            let git = parse_git_header(&mut lines)?;
            if lines.peek_header().is_some_and(|l| l.starts_with("--- ")) {
                let mut file = parse_labels_and_hunks(&mut lines)?;
                let agrees = match file.kind {
                    FileChangeKind::Added => git.deleted_file.is_none(),
                    FileChangeKind::Deleted => git.new_file.is_none(),
                    FileChangeKind::Modified => git.new_file.is_none() && git.deleted_file.is_none(),
                };
                if !agrees {
                    return Err(invalid(format!("invalid patch header: {line}")));
                }
                apply_git_modes(&mut file, &git);
                let hunkless_ok = match file.kind {
                    FileChangeKind::Added => git.new_file.is_some(),
                    FileChangeKind::Deleted => git.deleted_file.is_some(),
                    FileChangeKind::Modified => git.new_mode.is_some(),
                };
                if file.hunks.is_empty() && !hunkless_ok {
                    return Err(invalid(format!("patch for {} has no hunks", file.path)));
                }
                file
            } else {
                if let Some(hunk) = lines.peek_header().filter(|l| l.starts_with("@@")) {
                    return Err(invalid(format!("invalid patch header: {hunk}")));
                }
                let path = git_path.ok_or_else(|| invalid(format!("invalid patch header: {line}")))?;
                let path = normalize_workspace_path(&path)?;
                let kind = match (git.new_file, git.deleted_file) {
                    (Some(_), None) => FileChangeKind::Added,
                    (None, Some(_)) => FileChangeKind::Deleted,
                    (None, None) if git.new_mode.is_some() => FileChangeKind::Modified,
                    (None, None) => return Err(invalid(format!("patch for {path} has no hunks"))),
                    (Some(_), Some(_)) => {
                        return Err(invalid(format!("invalid patch header: {line}")));
                    }
                };
                let mut file = FilePatch { path, kind, old_mode: None, new_mode: None, hunks: Vec::new() };
                apply_git_modes(&mut file, &git);
                file
            }
        } else if line.starts_with("--- ") {
            let file = parse_labels_and_hunks(&mut lines)?;
            if file.hunks.is_empty() {
                return Err(invalid(format!("patch for {} has no hunks", file.path)));
            }
            file
        } else if line.starts_with("diff ") {
            // The command line `diff -ruN` prints before each plain section.
            lines.pos += 1;
            continue;
        } else {
            return Err(invalid(format!("invalid patch header: {line}")));
        };
        if !seen.insert(file.path.clone()) {
            return Err(invalid(format!("patch contains duplicate file entries for {}", file.path)));
        }
        files.push(file);
    }
    if files.is_empty() {
        return Err(invalid("patch must contain at least one file change"));
    }
    Ok(files)
}

/// Builds a file patch from its labels.
fn file_from_labels(old: Option<String>, new: Option<String>, hunks: Vec<Hunk>) -> Result<FilePatch, Error> {
    let (path, kind) = match (old, new) {
        (None, None) => return Err(invalid("patch must target a workspace path")),
        (None, Some(new)) => (new, FileChangeKind::Added),
        (Some(old), None) => (old, FileChangeKind::Deleted),
        (Some(old), Some(new)) if old != new => {
            return Err(invalid("rename and copy patches are not supported"));
        }
        (Some(_), Some(new)) => (new, FileChangeKind::Modified),
    };
    Ok(FilePatch { path, kind, old_mode: None, new_mode: None, hunks })
}

/// Records the modes git's extended headers state.
fn apply_git_modes(file: &mut FilePatch, git: &GitHeader) {
    match file.kind {
        FileChangeKind::Added => file.new_mode = git.new_file,
        FileChangeKind::Deleted => file.old_mode = git.deleted_file.or(git.old_mode),
        FileChangeKind::Modified => {
            file.old_mode = git.old_mode;
            file.new_mode = git.new_mode;
        }
    }
}

/// Applies one file's patch to its current content (`None` = file absent).
///
/// Returns the new content, or `None` when the file is deleted. Hunks are applied in order
/// at their stated position (shifted by the offset of the previous hunk); when the
/// context does not match there, the nearest unique position with matching context is
/// used. Matching is byte exact, including `\r` and missing final newlines.
///
/// # Errors
/// [`Error::InvalidArgument`] when the file's existence contradicts the patch, the file is
/// not UTF-8, a hunk's context cannot be found, hunks overlap, a delete leaves content, or
/// the result exceeds [`MAX_PATCH_BYTES`].
pub fn apply_file(patch: &FilePatch, current: Option<&[u8]>) -> Result<Option<Vec<u8>>, Error> {
    let path = &patch.path;
    match (patch.kind, current) {
        (FileChangeKind::Added, Some(_)) => {
            return Err(invalid(format!("workspace patch cannot add an existing path: {path}")));
        }
        (FileChangeKind::Modified | FileChangeKind::Deleted, None) => {
            return Err(invalid(format!("workspace patch cannot modify a missing path: {path}")));
        }
        _ => {}
    }
    let text = std::str::from_utf8(current.unwrap_or_default()).map_err(|_| invalid(format!("workspace patch only supports UTF-8 text files: {path}")))?;
    let old: Vec<&str> = text.split_inclusive('\n').collect();
    let mut out = String::with_capacity(text.len());
    let mut cursor = 0usize;
    let mut offset = 0isize;
    for hunk in &patch.hunks {
        let old_side = hunk.old_side();
        let new_side = hunk.new_side();
        let must_end = new_side.last().is_some_and(|l| !l.ends_with('\n'));
        // `-A,0` names the line after which to insert; otherwise A is the first old line.
        let stated = if hunk.old_count == 0 { hunk.old_start } else { hunk.old_start.saturating_sub(1) };
        let expected = stated.saturating_add_signed(offset);
        let at = locate(&old, &old_side, expected, cursor, must_end, path)?;
        for line in &old[cursor..at] {
            out.push_str(line);
        }
        for line in &new_side {
            out.push_str(line);
        }
        cursor = at + old_side.len();
        offset = at as isize - stated as isize;
    }
    for line in &old[cursor..] {
        out.push_str(line);
    }
    if patch.kind == FileChangeKind::Deleted {
        if !out.is_empty() {
            return Err(invalid(format!("delete patch did not remove all content for {path}")));
        }
        return Ok(None);
    }
    if out.len() > MAX_PATCH_BYTES {
        return Err(invalid(format!("patched file {path} exceeds the maximum supported size of {MAX_PATCH_BYTES} bytes")));
    }
    Ok(Some(out.into_bytes()))
}

/// Finds where a hunk's old lines sit in `old`, at or after `cursor` (the end of the
/// previous hunk): `expected` if they match there, else the nearest unique match.
/// `must_end` requires the match to end at the end of the file.
fn locate(old: &[&str], needle: &[&str], expected: usize, cursor: usize, must_end: bool, path: &str) -> Result<usize, Error> {
    let out_of_range = || invalid(format!("patch hunk is out of range for {path}"));
    let total = old.len();
    if needle.is_empty() {
        // Pure insertion without context: only the stated position is meaningful.
        let at = if must_end { total } else { expected };
        if at < cursor || at > total || (must_end && expected != total) {
            return Err(out_of_range());
        }
        return Ok(at);
    }
    let n = needle.len();
    let matches_at = |c: usize| c + n <= total && old[c..c + n] == *needle && (!must_end || c + n == total);
    let fits = |c: usize| c >= cursor && matches_at(c);
    if fits(expected) {
        return Ok(expected);
    }
    if let Some(last_start) = total.checked_sub(n) {
        // Candidates lie in [cursor, last_start]; start where the lower one enters it.
        let mut distance = expected.saturating_sub(last_start).max(1);
        loop {
            let below = expected.checked_sub(distance).filter(|&c| c >= cursor);
            let above = expected.checked_add(distance).filter(|&c| c <= last_start);
            if below.is_none() && above.is_none() {
                break;
            }
            match (below.filter(|&c| fits(c)), above.filter(|&c| fits(c))) {
                (Some(_), Some(_)) => {
                    return Err(invalid(format!("patch context matches more than one location for {path}")));
                }
                (Some(c), None) | (None, Some(c)) => return Ok(c),
                (None, None) => distance += 1,
            }
        }
    }
    // No usable match: distinguish overlapping hunks and hunks past the end of the file
    // from wrong context.
    if expected > total || (0..cursor.min(total)).any(matches_at) {
        return Err(out_of_range());
    }
    Err(invalid(format!("patch context does not match for {path}")))
}

/// One file's computed result from [`apply_all`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedFile {
    /// Normalised absolute path.
    pub path: String,
    /// What happened to the file.
    pub kind: FileChangeKind,
    /// Permission bits to set afterwards, when the patch states them.
    pub new_mode: Option<u32>,
    /// New content; `None` when the file is deleted.
    pub content: Option<Vec<u8>>,
}

/// Computes every file's result in memory before anything is written.
///
/// `read` returns a path's current content (`None` when absent) or an error (for example
/// for a non-regular file). Either every file applies and all results are returned, or the
/// first error is returned and nothing should be written.
///
/// # Errors
/// The first error from `read` or [`apply_file`].
pub fn apply_all<F>(patches: &[FilePatch], mut read: F) -> Result<Vec<AppliedFile>, Error>
where
    F: FnMut(&str) -> Result<Option<Vec<u8>>, Error>,
{
    patches
        .iter()
        .map(|patch| {
            let current = read(&patch.path)?;
            let content = apply_file(patch, current.as_deref())?;
            Ok(AppliedFile { path: patch.path.clone(), kind: patch.kind, new_mode: patch.new_mode, content })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn parse(text: &str) -> Vec<FilePatch> {
        parse_patch(text).unwrap_or_else(|e| panic!("parse failed: {e}\n{text}"))
    }

    fn parse_err(text: &str) -> String {
        parse_patch(text).expect_err("parse should fail").to_string()
    }

    fn apply(patch: &FilePatch, current: Option<&str>) -> Result<Option<String>, String> {
        apply_file(patch, current.map(str::as_bytes)).map(|out| out.map(|bytes| String::from_utf8(bytes).unwrap())).map_err(|e| e.to_string())
    }

    /// Parses a single-file patch and applies it.
    fn patch_one(text: &str, current: Option<&str>) -> Result<Option<String>, String> {
        let files = parse(text);
        assert_eq!(files.len(), 1);
        apply(&files[0], current)
    }

    fn modify(body: &str) -> String {
        format!("--- a/f.txt\n+++ b/f.txt\n{body}")
    }

    #[test]
    fn size_and_emptiness_limits() {
        let big = "x".repeat(MAX_PATCH_BYTES + 1);
        assert_eq!(parse_err(&big), "patch must be at most 1048576 bytes when encoded as UTF-8");
        assert_eq!(parse_err(""), "patch must not be empty");
        assert_eq!(parse_err(" \n\t\n"), "patch must not be empty");
        assert_eq!(parse_err("diff -u a b\n"), "patch must contain at least one file change");
    }

    #[test]
    fn unsupported_features_are_named() {
        let rename = "diff --git a/x b/y\nsimilarity index 90%\nrename from x\nrename to y\n";
        assert_eq!(parse_err(rename), "unsupported patch feature: similarity index 90%");
        let rename = "diff --git a/x b/y\nrename from x\nrename to y\n";
        assert_eq!(parse_err(rename), "unsupported patch feature: rename from x");
        let copy = "diff --git a/x b/y\ncopy from x\ncopy to y\n";
        assert_eq!(parse_err(copy), "unsupported patch feature: copy from x");
        let binary = "diff --git a/x b/x\nindex 1..2 100644\nBinary files a/x and b/x differ\n";
        assert_eq!(parse_err(binary), "unsupported patch feature: Binary files a/x and b/x differ");
        let binary = "diff --git a/x b/x\nindex 1..2 100644\nGIT binary patch\nliteral 1\n";
        assert_eq!(parse_err(binary), "unsupported patch feature: GIT binary patch");
        let symlink = "diff --git a/l b/l\nnew file mode 120000\nindex 0..1\n--- /dev/null\n+++ b/l\n@@ -0,0 +1 @@\n+t\n";
        assert_eq!(parse_err(symlink), "unsupported patch feature: new file mode 120000");
        assert_eq!(parse_err("Binary files a/x and b/x differ\n"), "unsupported patch feature: Binary files a/x and b/x differ");
    }

    #[test]
    fn header_errors() {
        assert_eq!(parse_err("--- a/../etc/passwd\n+++ b/../etc/passwd\n@@ -1 +1 @@\n-a\n+b\n"), "workspace path must stay inside /workspace");
        assert_eq!(parse_err("--- a/\n+++ b/\n@@ -1 +1 @@\n-a\n+b\n"), "workspace path must not be empty");
        assert_eq!(parse_err("--- a/x\n+++ b/y\n@@ -1 +1 @@\n-a\n+b\n"), "rename and copy patches are not supported");
        assert_eq!(parse_err("--- /dev/null\n+++ /dev/null\n@@ -1 +1 @@\n-a\n+b\n"), "patch must target a workspace path");
        assert_eq!(parse_err("--- a/x\n@@ -1 +1 @@\n-a\n+b\n"), "patch is missing '+++' header");
        assert_eq!(parse_err("--- a/x\n"), "patch is missing '+++' header");
        assert_eq!(parse_err("hello\n--- a/x\n+++ b/x\n"), "invalid patch header: hello");
        assert_eq!(parse_err(&modify("@@ -1 +1 @@\n-a\n+b\ngarbage\n")), "invalid patch header: garbage");
        assert_eq!(parse_err("@@ -1 +1 @@\n-a\n+b\n"), "invalid patch header: @@ -1 +1 @@");
        assert_eq!(parse_err("diff --git a/x b/x\nfoo bar\n"), "invalid patch header: foo bar");
        assert_eq!(parse_err("diff --git a/x b/x\n@@ -1 +1 @@\n-a\n+b\n"), "invalid patch header: @@ -1 +1 @@");
        assert_eq!(parse_err("diff --git a/x b/x\nnew file mode 100644\n--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n"), "invalid patch header: diff --git a/x b/x");
        assert_eq!(parse_err("diff --git a/x b/y\nnew file mode 100644\n"), "invalid patch header: diff --git a/x b/y");
        assert_eq!(parse_err("--- \"a/x\n+++ b/x\n"), "invalid patch header: --- \"a/x");
    }

    #[test]
    fn hunk_header_and_count_errors() {
        for header in ["@@ -1 +1", "@@ -a,1 +1 @@", "@@ -1, +1 @@", "@@ -0,0 +0,0 @@", "@@@ -1 -1 +1 @@@", "@@ 1 +1 @@"] {
            assert_eq!(parse_err(&modify(&format!("{header}\n-a\n+b\n"))), format!("invalid patch hunk header: {header}"));
        }
        let mismatch = "patch hunk line counts do not match the header";
        assert_eq!(parse_err(&modify("@@ -1,2 +1,2 @@\n-a\n+b\n")), mismatch);
        assert_eq!(parse_err(&modify("@@ -1,2 +1,2 @@\n-a\n+b\n@@ -5 +5 @@\n-c\n+d\n")), mismatch);
        assert_eq!(parse_err(&modify("@@ -1 +1 @@\n-a\n+b\n+c\n")), mismatch);
        assert_eq!(parse_err(&modify("@@ -1 +1 @@\n-a\n-c\n+b\n")), mismatch);
        assert_eq!(parse_err(&modify("@@ -1 +1 @@\n-a\n+b\n c\n")), mismatch);
        assert_eq!(parse_err(&modify("@@ -1,2 +1,2 @@\n-a\nxyz\n")), "invalid patch hunk line: xyz");
        assert_eq!(parse_err(&modify("@@ -1,2 +1 @@\n-a\n\\ No newline at end of file\n-b\n+c\n")), "invalid patch hunk line: \\ No newline at end of file");
        assert_eq!(parse_err(&modify("@@ -1 +1 @@\n\\ No newline at end of file\n-a\n+b\n")), "invalid patch hunk line: \\ No newline at end of file");
    }

    #[test]
    fn section_errors() {
        assert_eq!(parse_err("--- a/x\n+++ b/x\n"), "patch for /workspace/x has no hunks");
        assert_eq!(parse_err("--- /dev/null\n+++ b/x\n"), "patch for /workspace/x has no hunks");
        assert_eq!(parse_err("diff --git a/x b/x\nindex 1..2 100644\n"), "patch for /workspace/x has no hunks");
        assert_eq!(parse_err("diff --git a/x b/x\nindex 1..2 100644\n--- a/x\n+++ b/x\n"), "patch for /workspace/x has no hunks");
        let twice = "--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n--- a/./x\n+++ b/x\n@@ -3 +3 @@\n-c\n+d\n";
        assert_eq!(parse_err(twice), "patch contains duplicate file entries for /workspace/x");
    }

    #[test]
    fn apply_errors() {
        let text = modify("@@ -1,2 +1,2 @@\n a\n-b\n+c\n");
        assert_eq!(patch_one(&text, Some("a\nB\n")).unwrap_err(), "patch context does not match for /workspace/f.txt");
        assert_eq!(patch_one(&text, None).unwrap_err(), "workspace patch cannot modify a missing path: /workspace/f.txt");
        assert_eq!(patch_one(&modify("@@ -5 +5 @@\n-z\n+y\n"), Some("a\n")).unwrap_err(), "patch hunk is out of range for /workspace/f.txt");
        // The second hunk's context only exists before the first hunk's end.
        let overlap = modify("@@ -2 +2 @@\n-b\n+B\n@@ -1 +1 @@\n-a\n+A\n");
        assert_eq!(patch_one(&overlap, Some("a\nb\nc\n")).unwrap_err(), "patch hunk is out of range for /workspace/f.txt");
        let add = "--- /dev/null\n+++ b/f.txt\n@@ -0,0 +1 @@\n+x\n";
        assert_eq!(patch_one(add, Some("")).unwrap_err(), "workspace patch cannot add an existing path: /workspace/f.txt");
        let delete = "--- a/f.txt\n+++ /dev/null\n@@ -1 +0,0 @@\n-a\n";
        assert_eq!(patch_one(delete, Some("a\nb\n")).unwrap_err(), "delete patch did not remove all content for /workspace/f.txt");
        assert_eq!(patch_one(delete, None).unwrap_err(), "workspace patch cannot modify a missing path: /workspace/f.txt");
        assert_eq!(patch_one(delete, Some("a\n")).unwrap(), None);
        let files = parse(&modify("@@ -1 +1 @@\n-a\n+b\n"));
        assert_eq!(apply_file(&files[0], Some(b"a\n\xff\n")).unwrap_err().to_string(), "workspace patch only supports UTF-8 text files: /workspace/f.txt");
        let big = "y".repeat(MAX_PATCH_BYTES);
        assert_eq!(
            patch_one(&modify("@@ -1 +1,2 @@\n a\n+b\n"), Some(&format!("a\n{big}"))).unwrap_err(),
            "patched file /workspace/f.txt exceeds the maximum supported size of 1048576 bytes"
        );
        let far = modify("@@ -18446744073709551615 +1 @@\n-x\n+y\n");
        assert_eq!(patch_one(&far, Some("x\n")).unwrap().unwrap(), "y\n");
        assert_eq!(patch_one(&far, Some("z\n")).unwrap_err(), "patch hunk is out of range for /workspace/f.txt");
        let long = modify("@@ -1,3 +1,3 @@\n a\n-b\n+B\n c\n");
        assert_eq!(patch_one(&long, Some("a\n")).unwrap_err(), "patch context does not match for /workspace/f.txt");
        let ambiguous = modify("@@ -3 +3 @@\n-x\n+y\n");
        assert_eq!(patch_one(&ambiguous, Some("x\na\nb\nc\nx\n")).unwrap_err(), "patch context matches more than one location for /workspace/f.txt");
    }

    #[test]
    fn empty_lines_in_hunks_are_context() {
        let text = modify("@@ -1,3 +1,3 @@\n a\n\n-b\n+B\n");
        assert_eq!(patch_one(&text, Some("a\n\nb\n")).unwrap().unwrap(), "a\n\nB\n");
        let crlf = modify("@@ -1,3 +1,3 @@\n a\r\n\r\n-b\r\n+B\r\n");
        assert_eq!(patch_one(&crlf, Some("a\r\n\r\nb\r\n")).unwrap().unwrap(), "a\r\n\r\nB\r\n");
        // Blank lines after a complete hunk separate sections instead.
        let two = "--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n\n\n--- a/y\n+++ b/y\n@@ -1 +1 @@\n-c\n+d\n";
        assert_eq!(parse(two).len(), 2);
    }

    #[test]
    fn missing_newlines_are_honoured() {
        let gain = modify("@@ -1,2 +1,2 @@\n a\n-b\n\\ No newline at end of file\n+b\n");
        assert_eq!(patch_one(&gain, Some("a\nb")).unwrap().unwrap(), "a\nb\n");
        assert_eq!(patch_one(&gain, Some("a\nb\n")).unwrap_err(), "patch context does not match for /workspace/f.txt");
        let lose = modify("@@ -1,2 +1,2 @@\n a\n-b\n+b\n\\ No newline at end of file\n");
        assert_eq!(patch_one(&lose, Some("a\nb\n")).unwrap().unwrap(), "a\nb");
        let both = modify("@@ -1 +1 @@\n-a\n\\ No newline at end of file\n+b\n\\ No newline at end of file\n");
        assert_eq!(patch_one(&both, Some("a")).unwrap().unwrap(), "b");
        let context = modify("@@ -1,2 +1,2 @@\n-a\n+A\n b\n\\ No newline at end of file\n");
        assert_eq!(patch_one(&context, Some("a\nb")).unwrap().unwrap(), "A\nb");
        // A hunk that drops the final newline must end at the end of the file.
        assert_eq!(patch_one(&lose, Some("a\nb\nc\n")).unwrap_err(), "patch context does not match for /workspace/f.txt");
        // A patch whose text lost its final newline still means full lines.
        assert_eq!(patch_one(&modify("@@ -1 +1 @@\n-a\n+b"), Some("a\n")).unwrap().unwrap(), "b\n");
    }

    #[test]
    fn hunks_are_count_driven() {
        // `--- x` is a removed `-- x`, `+++ y` an added `++ y`, ` --- z` context.
        let text = modify("@@ -1,2 +1,2 @@\n--- x\n+++ y\n --- z\n@@ -9 +9 @@\n-q\n+r\n");
        let files = parse(&text);
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].hunk_count(), 2);
        let old = "-- x\n--- z\n3\n4\n5\n6\n7\n8\nq\n";
        let new = "++ y\n--- z\n3\n4\n5\n6\n7\n8\nr\n";
        assert_eq!(apply(&files[0], Some(old)).unwrap().unwrap(), new);
        // A file section may follow a hunk that ends with such lines.
        let two = modify("@@ -1 +1 @@\n--- x\n+++ y\n--- a/g\n+++ b/g\n@@ -1 +1 @@\n-- x\n+++ y\n");
        let files = parse(&two);
        assert_eq!(files.len(), 2);
        assert_eq!(apply(&files[1], Some("- x\n")).unwrap().unwrap(), "++ y\n");
    }

    #[test]
    fn hunks_follow_moved_context() {
        let text = modify("@@ -2,3 +2,3 @@\n b\n-c\n+C\n d\n@@ -10,2 +10,2 @@\n j\n-k\n+K\n");
        let old = "a\nb\nc\nd\ne\nf\ng\nh\ni\nj\nk\n";
        assert_eq!(patch_one(&text, Some(old)).unwrap().unwrap(), "a\nb\nC\nd\ne\nf\ng\nh\ni\nj\nK\n");
        let shifted = format!("0\n0\n0\n{old}");
        assert_eq!(patch_one(&text, Some(&shifted)).unwrap().unwrap(), "0\n0\n0\na\nb\nC\nd\ne\nf\ng\nh\ni\nj\nK\n");
        let earlier = "b\nc\nd\ne\nf\ng\nh\ni\nj\nk\n";
        assert_eq!(patch_one(&text, Some(earlier)).unwrap().unwrap(), "b\nC\nd\ne\nf\ng\nh\ni\nj\nK\n");
        // The nearest match wins when the context repeats at different distances.
        let repeated = modify("@@ -4 +4 @@\n-x\n+y\n");
        assert_eq!(patch_one(&repeated, Some("x\na\nb\nc\nx\n")).unwrap().unwrap(), "x\na\nb\nc\ny\n");
    }

    #[test]
    fn pure_insertions_use_the_stated_position() {
        let text = modify("@@ -1,0 +2 @@\n+x\n");
        assert_eq!(patch_one(&text, Some("a\nb\n")).unwrap().unwrap(), "a\nx\nb\n");
        let top = modify("@@ -0,0 +1 @@\n+x\n");
        assert_eq!(patch_one(&top, Some("a\n")).unwrap().unwrap(), "x\na\n");
        let beyond = modify("@@ -5,0 +6 @@\n+x\n");
        assert_eq!(patch_one(&beyond, Some("a\n")).unwrap_err(), "patch hunk is out of range for /workspace/f.txt");
        let add = "--- /dev/null\n+++ b/new.txt\n@@ -0,0 +1,2 @@\n+x\n+y\n";
        assert_eq!(patch_one(add, None).unwrap().unwrap(), "x\ny\n");
    }

    #[test]
    fn line_endings_are_byte_exact() {
        let text = modify("@@ -1,2 +1,2 @@\n a\r\n-b\r\n+c\r\n");
        assert_eq!(patch_one(&text, Some("a\r\nb\r\n")).unwrap().unwrap(), "a\r\nc\r\n");
        let lf = modify("@@ -1,2 +1,2 @@\n a\n-b\n+c\n");
        assert_eq!(patch_one(&lf, Some("a\r\nb\r\n")).unwrap_err(), "patch context does not match for /workspace/f.txt");
    }

    #[test]
    fn git_headers_without_hunks() {
        let files = parse(
            "diff --git a/s.sh b/s.sh\nold mode 100644\nnew mode 100755\n\
             diff --git a/empty b/empty\nnew file mode 100644\nindex 0000000..e69de29\n\
             diff --git a/gone b/gone\ndeleted file mode 100755\nindex e69de29..0000000\n\
             diff --git \"a/caf\\303\\251 x\" \"b/caf\\303\\251 x\"\nnew file mode 100755\nindex 0000000..e69de29\n\
             diff --git a/sp ace b/sp ace\nnew file mode 100644\nindex 0000000..e69de29\n",
        );
        let summary: Vec<_> = files.iter().map(|f| (f.path.as_str(), f.kind, f.old_mode, f.new_mode, f.hunk_count())).collect();
        assert_eq!(
            summary,
            vec![
                ("/workspace/s.sh", FileChangeKind::Modified, Some(0o644), Some(0o755), 0),
                ("/workspace/empty", FileChangeKind::Added, None, Some(0o644), 0),
                ("/workspace/gone", FileChangeKind::Deleted, Some(0o755), None, 0),
                ("/workspace/café x", FileChangeKind::Added, None, Some(0o755), 0),
                ("/workspace/sp ace", FileChangeKind::Added, None, Some(0o644), 0),
            ]
        );
        assert_eq!(apply(&files[0], Some("#!/bin/sh\n")).unwrap().unwrap(), "#!/bin/sh\n");
        assert_eq!(apply(&files[1], None).unwrap().unwrap(), "");
        assert_eq!(apply(&files[2], Some("")).unwrap(), None);
        assert_eq!(apply(&files[2], Some("x\n")).unwrap_err(), "delete patch did not remove all content for /workspace/gone");
        assert_eq!(FileChangeKind::Added.as_str(), "added");
        assert_eq!(FileChangeKind::Modified.as_str(), "modified");
        assert_eq!(FileChangeKind::Deleted.as_str(), "deleted");
    }

    #[test]
    fn plain_diff_output_with_timestamps() {
        let text = "diff -ruN old/f.txt new/f.txt\n\
                    --- f.txt\t2024-01-01 00:00:00.000000000 +0000\n\
                    +++ f.txt\t2024-01-02 00:00:00.000000000 +0000\n\
                    @@ -1 +1 @@ section\n-a\n+b\n\
                    --- /dev/null\t1970-01-01 00:00:00 +0000\n\
                    +++ b/dir/n.txt\t2024-01-02 00:00:00 +0000\n\
                    @@ -0,0 +1 @@\n+n\n";
        let files = parse(text);
        assert_eq!(files[0].path, "/workspace/f.txt");
        assert_eq!(files[0].kind, FileChangeKind::Modified);
        assert_eq!(files[1].path, "/workspace/dir/n.txt");
        assert_eq!(files[1].kind, FileChangeKind::Added);
        assert_eq!(files[1].new_mode, None);
        assert_eq!(apply(&files[0], Some("a\n")).unwrap().unwrap(), "b\n");
        assert_eq!(apply(&files[1], None).unwrap().unwrap(), "n\n");
    }

    #[test]
    fn failing_multi_file_patches_leave_inputs_untouched() {
        let text = "--- a/one\n+++ b/one\n@@ -1 +1 @@\n-a\n+b\n--- a/two\n+++ b/two\n@@ -1 +1 @@\n-x\n+y\n";
        let files = parse(text);
        let tree: BTreeMap<String, Vec<u8>> = [("/workspace/one".to_owned(), b"a\n".to_vec()), ("/workspace/two".to_owned(), b"z\n".to_vec())].into();
        let before = tree.clone();
        let err = apply_all(&files, |path| Ok(tree.get(path).cloned())).unwrap_err();
        assert_eq!(err.to_string(), "patch context does not match for /workspace/two");
        assert_eq!(tree, before);
        // Applying the good file again gives the same answer: no hidden state.
        let first = apply_file(&files[0], Some(b"a\n")).unwrap();
        assert_eq!(first, apply_file(&files[0], Some(b"a\n")).unwrap());
        assert_eq!(first.as_deref(), Some(&b"b\n"[..]));
        let ok_tree: BTreeMap<String, Vec<u8>> = [("/workspace/one".to_owned(), b"a\n".to_vec()), ("/workspace/two".to_owned(), b"x\n".to_vec())].into();
        let applied = apply_all(&files, |path| Ok(ok_tree.get(path).cloned())).unwrap();
        let contents: Vec<_> = applied.iter().map(|a| (a.path.as_str(), a.content.as_deref())).collect();
        assert_eq!(contents, vec![("/workspace/one", Some(&b"b\n"[..])), ("/workspace/two", Some(&b"y\n"[..]))]);
        let read_error = apply_all(&files, |path| Err(invalid(format!("workspace patch only supports regular files: {path}"))));
        assert_eq!(read_error.unwrap_err().to_string(), "workspace patch only supports regular files: /workspace/one");
    }

    /// A file tree keyed by path relative to the repository: content and permission bits.
    type Tree = BTreeMap<String, (Vec<u8>, u32)>;

    fn read_tree(root: &std::path::Path) -> Tree {
        use std::os::unix::fs::PermissionsExt;
        fn walk(root: &std::path::Path, dir: &std::path::Path, tree: &mut Tree) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let entry = entry.unwrap();
                let path = entry.path();
                if entry.file_name() == ".git" {
                    continue;
                }
                let meta = std::fs::symlink_metadata(&path).unwrap();
                if meta.is_dir() {
                    walk(root, &path, tree);
                } else {
                    let rel = path.strip_prefix(root).unwrap().to_str().unwrap().to_owned();
                    tree.insert(rel, (std::fs::read(&path).unwrap(), meta.permissions().mode() & 0o777));
                }
            }
        }
        let mut tree = Tree::new();
        walk(root, root, &mut tree);
        tree
    }

    fn write_file(root: &std::path::Path, rel: &str, content: &[u8], mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, content).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn git(root: &std::path::Path, args: &[&str]) -> String {
        let out = std::process::Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.invalid", "-c", "core.autocrlf=false"])
            .args(args)
            .current_dir(root)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn real_git_diff_reproduces_the_new_tree() {
        if std::process::Command::new("git").arg("--version").output().is_err() {
            eprintln!("git is not installed; skipping");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        git(root, &["init", "-q"]);
        let numbered: String = (1..=12).map(|i| format!("line {i}\n")).collect();
        write_file(root, "keep.txt", b"same\n", 0o644);
        write_file(root, "modify.txt", numbered.as_bytes(), 0o644);
        write_file(root, "gone.txt", b"bye\n", 0o644);
        write_file(root, "empty-gone", b"", 0o644);
        write_file(root, "script.sh", b"#!/bin/sh\necho hi\n", 0o644);
        write_file(root, "tool.sh", b"#!/bin/sh\necho old\n", 0o644);
        write_file(root, "noeol.txt", b"a\nb", 0o644);
        write_file(root, "crlf.txt", b"a\r\nb\r\nc\r\n", 0o644);
        write_file(root, "dashes.txt", b"-- x\n++ y\nkeep\n", 0o644);
        git(root, &["add", "-A"]);
        git(root, &["commit", "-q", "-m", "old"]);
        let old_tree = read_tree(root);

        let mut modified = numbered.replace("line 2\n", "line two\n");
        modified = modified.replace("line 12\n", "line twelve");
        write_file(root, "modify.txt", modified.as_bytes(), 0o644);
        std::fs::remove_file(root.join("gone.txt")).unwrap();
        std::fs::remove_file(root.join("empty-gone")).unwrap();
        write_file(root, "script.sh", b"#!/bin/sh\necho hi\n", 0o755);
        write_file(root, "tool.sh", b"#!/bin/sh\necho new\n", 0o755);
        write_file(root, "noeol.txt", b"a\nb\nc\n", 0o644);
        write_file(root, "crlf.txt", b"a\r\nB\r\nc\r\n", 0o644);
        write_file(root, "dashes.txt", b"--- x\n+++ y\nkeep\n", 0o644);
        write_file(root, "added.txt", b"new\nfile\n", 0o644);
        write_file(root, "dir/sp ace.txt", b"spaced\n", 0o644);
        write_file(root, "caf\u{e9}.txt", b"accent\n", 0o644);
        write_file(root, "empty-new", b"", 0o644);
        write_file(root, "bin/run", b"#!/bin/sh\n", 0o755);
        git(root, &["add", "-A"]);
        let diff = git(root, &["diff", "--cached", "--no-renames", "--no-color", "--no-ext-diff"]);
        let new_tree = read_tree(root);
        assert!(diff.contains("\\ No newline at end of file"), "{diff}");
        assert!(diff.contains("new file mode 100755"), "{diff}");
        assert!(diff.contains("\"b/caf\\303\\251.txt\""), "{diff}");

        let files = parse(&diff);
        assert_eq!(files.len(), 13, "{diff}");
        let mut tree = old_tree.clone();
        for file in &files {
            let rel = super::super::paths::relative_to_workspace(&file.path).unwrap().to_owned();
            let current = tree.get(&rel).cloned();
            let result = apply_file(file, current.as_ref().map(|(c, _)| c.as_slice())).unwrap_or_else(|e| panic!("{rel}: {e}\n{diff}"));
            match result {
                None => {
                    tree.remove(&rel);
                }
                Some(content) => {
                    let mode = file.new_mode.or(current.map(|(_, m)| m)).unwrap_or(0o644);
                    tree.insert(rel, (content, mode));
                }
            }
        }
        assert_eq!(tree, new_tree, "{diff}");
        // The old tree is untouched by the in-memory application.
        assert_eq!(old_tree.len(), 9);
    }

    /// Lines that stress prefix-driven parsers.
    fn line_strategy() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("a".to_owned()),
            Just("b".to_owned()),
            Just("c".to_owned()),
            Just(String::new()),
            Just(" ".to_owned()),
            Just("-- x".to_owned()),
            Just("++ y".to_owned()),
            Just("--- z".to_owned()),
            Just("+++ w".to_owned()),
            Just("@@ -1 +1 @@".to_owned()),
            Just("\\ q".to_owned()),
            Just("diff --git a/f b/f".to_owned()),
            Just("crlf\r".to_owned()),
            "[a-c]{1,3}",
        ]
    }

    fn text_from(lines: &[String], trailing_newline: bool) -> String {
        let mut text = lines.join("\n");
        if trailing_newline && !lines.is_empty() {
            text.push('\n');
        }
        // similar treats a lone `\r` as a line terminator; keep `\r` before `\n` only.
        if text.ends_with('\r') {
            text.pop();
        }
        text
    }

    fn unified(old: &str, new: &str) -> String {
        similar::TextDiff::from_lines(old, new).unified_diff().context_radius(3).header("a/f", "b/f").to_string()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn similar_diffs_round_trip(
            old_lines in proptest::collection::vec(line_strategy(), 0..25),
            new_lines in proptest::collection::vec(line_strategy(), 0..25),
            old_nl in any::<bool>(),
            new_nl in any::<bool>(),
        ) {
            let old = text_from(&old_lines, old_nl);
            let new = text_from(&new_lines, new_nl);
            prop_assume!(old != new);
            let diff = unified(&old, &new);
            if old.ends_with(|c| c != '\n') || new.ends_with(|c| c != '\n') {
                prop_assert!(diff.contains("\\ No newline at end of file"), "{}", diff);
            }
            let files = parse_patch(&diff).map_err(|e| TestCaseError::fail(format!("{e}\n{diff}")))?;
            prop_assert_eq!(files.len(), 1);
            let out = apply_file(&files[0], Some(old.as_bytes()))
                .map_err(|e| TestCaseError::fail(format!("{e}\n{diff}")))?;
            prop_assert_eq!(String::from_utf8(out.unwrap()).unwrap(), new);
        }

        #[test]
        fn similar_diffs_apply_after_unrelated_lines_were_prepended(
            old_set in proptest::collection::btree_set(0usize..40, 1..25),
            edits in proptest::collection::vec((0usize..3, line_strategy()), 1..25),
            prefix in 1usize..6,
            new_nl in any::<bool>(),
        ) {
            // Distinct old lines make every hunk's context unique, so the nearest match is
            // the right one.
            let old_lines: Vec<String> = old_set.iter().map(|i| format!("-- line {i}")).collect();
            let mut new_lines = Vec::new();
            for (i, line) in old_lines.iter().enumerate() {
                match edits.get(i).map(|e| e.0) {
                    Some(0) => {}
                    Some(1) => {
                        new_lines.push(edits[i].1.clone());
                        new_lines.push(line.clone());
                    }
                    _ => new_lines.push(line.clone()),
                }
            }
            let old = text_from(&old_lines, true);
            let new = text_from(&new_lines, new_nl);
            prop_assume!(old != new);
            let diff = unified(&old, &new);
            let head: String = (0..prefix).map(|i| format!("prefix {i}\n")).collect();
            let files = parse_patch(&diff).map_err(|e| TestCaseError::fail(format!("{e}\n{diff}")))?;
            let out = apply_file(&files[0], Some(format!("{head}{old}").as_bytes()))
                .map_err(|e| TestCaseError::fail(format!("{e}\n{diff}")))?;
            prop_assert_eq!(String::from_utf8(out.unwrap()).unwrap(), format!("{head}{new}"));
        }

        #[test]
        fn patch_like_garbage_never_panics(
            lines in proptest::collection::vec(prop_oneof![
                Just("--- a/f"), Just("+++ b/f"), Just("--- /dev/null"), Just("+++ /dev/null"),
                Just("@@ -1,2 +1 @@"), Just("@@ -0,0 +1 @@"), Just("@@ -2 +2,0 @@"),
                Just(" a"), Just("-a"), Just("+b"), Just(""), Just("\\ No newline at end of file"),
                Just("diff --git a/f b/f"), Just("new file mode 100644"), Just("deleted file mode 100755"),
                Just("old mode 100644"), Just("new mode 100755"), Just("index 1..2"), Just("x"),
            ], 0..24),
            tail_newline in any::<bool>(),
            current in proptest::option::of("[ab\n]{0,8}"),
        ) {
            let mut text = lines.join("\n");
            if tail_newline {
                text.push('\n');
            }
            if let Ok(files) = parse_patch(&text) {
                for file in &files {
                    let _ = apply_file(file, current.as_deref().map(str::as_bytes));
                }
            }
        }

        #[test]
        fn arbitrary_text_never_panics(text in any::<String>()) {
            let _ = parse_patch(&text);
        }
    }
}
