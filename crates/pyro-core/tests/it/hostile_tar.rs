//! Hostile tar streams from the guest (review findings H1 and M2): sparse members, huge
//! extension headers, streams over budget, symlink-then-file tricks and world-writable
//! modes, checked through the paths the host uses (`spool_tar`, `extract_export_with`,
//! `Tree::from_tar_with`, `diff_archives`). A counting global allocator measures what
//! each call allocates on its own thread.
//!
//! `fuzz_archive_validation` is an `#[ignore]`d proptest harness: random and mutated
//! archives (seeded with the cases above) through the same paths, asserting no panic,
//! bounded allocations, agreement between the push and pull validators and that nothing
//! is written outside the output. `PYRO_FUZZ_CASES` sets its case count (default 2000):
//!
//! ```text
//! PYRO_FUZZ_CASES=1000000 cargo test --release -p pyro-core --test it -- --ignored --nocapture hostile_tar::fuzz
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Instant;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use pyro_core::guest::EntryKind;
use pyro_core::workspace::archive::{extract_export_with, spool_tar, TarLimits, TarScanner};
use pyro_core::workspace::tree::{diff_archives, Node, Tree, MAX_PATCH_FILE_BYTES};
use pyro_core::Error;
use tar::{EntryType, Header};
use tokio::io::AsyncWriteExt;

// ---- Allocation accounting (per thread) ------------------------------------------------

struct Counting;

thread_local! {
    static LIVE: Cell<i64> = const { Cell::new(0) };
    static PEAK: Cell<i64> = const { Cell::new(0) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(delta: i64, size: usize) {
    let _ = LIVE.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
    let _ = LARGEST.try_with(|largest| largest.set(largest.get().max(size)));
}

// SAFETY: forwards to the system allocator; the bookkeeping allocates nothing.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds GlobalAlloc's contract, which System requires too.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            note(layout.size() as i64, layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds GlobalAlloc's contract, which System requires too.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            note(layout.size() as i64, layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller upholds GlobalAlloc's contract, which System requires too.
        unsafe { System.dealloc(ptr, layout) };
        note(-(layout.size() as i64), 0);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller upholds GlobalAlloc's contract, which System requires too.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            note(new_size as i64 - layout.size() as i64, new_size);
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// What `f` allocated on this thread: (its result, peak live bytes above the start, the
/// largest single allocation).
fn measured<T>(f: impl FnOnce() -> T) -> (T, u64, usize) {
    let start = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(start));
    LARGEST.with(|l| l.set(0));
    let out = f();
    let peak = PEAK.with(Cell::get) - start;
    (out, peak.max(0) as u64, LARGEST.with(Cell::get))
}

const MIB: u64 = 1 << 20;

// ---- Archive builders -------------------------------------------------------------------

fn pad(out: &mut Vec<u8>) {
    out.resize(out.len().next_multiple_of(512), 0);
}

/// A ustar header as the agent writes them.
fn ustar(name: &str, kind: EntryType, size: u64, mode: u32, link: Option<&str>) -> Header {
    let mut h = Header::new_ustar();
    h.set_path(name).unwrap();
    if let Some(link) = link {
        h.set_link_name(link).unwrap();
    }
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_mtime(1_700_000_000);
    h.set_cksum();
    h
}

fn member(out: &mut Vec<u8>, name: &str, kind: EntryType, data: &[u8], mode: u32, link: Option<&str>) {
    out.extend_from_slice(ustar(name, kind, data.len() as u64, mode, link).as_bytes());
    out.extend_from_slice(data);
    pad(out);
}

fn end(out: &mut Vec<u8>) {
    out.extend_from_slice(&[0; 1024]);
}

/// A pax record `"<len> key=value\n"`.
fn pax_record(key: &str, value: &str) -> Vec<u8> {
    let body = key.len() + value.len() + 3;
    let mut len = body + 1;
    while body + len.to_string().len() != len {
        len = body + len.to_string().len();
    }
    format!("{len} {key}={value}\n").into_bytes()
}

/// A member whose long name travels in a pax `path` record, as the agent sends it.
fn pax_member(out: &mut Vec<u8>, name: &str, data: &[u8]) {
    let record = pax_record("path", name);
    member(out, "././@PaxHeader", EntryType::XHeader, &record, 0o644, None);
    let mut h = ustar("truncated-name", EntryType::Regular, data.len() as u64, 0o644, None);
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    pad(out);
}

/// A GNU sparse member declaring `real_size` bytes with one 512-byte data chunk at its
/// end.
fn sparse_member(out: &mut Vec<u8>, name: &str, real_size: u64) {
    let mut h = Header::new_gnu();
    h.set_path(name).unwrap();
    h.set_entry_type(EntryType::GNUSparse);
    h.set_mode(0o644);
    h.set_size(512);
    {
        let gnu = h.as_gnu_mut().unwrap();
        gnu.set_real_size(real_size);
        gnu.sparse[0].set_offset(real_size - 512);
        gnu.sparse[0].set_length(512);
    }
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(&[b'x'; 512]);
}

/// An extension header (`x`, `L` or `K`) that declares `declared` bytes but carries
/// only `carried`.
fn huge_extension(out: &mut Vec<u8>, kind: EntryType, declared: u64, carried: usize) {
    let mut h = Header::new_gnu();
    h.set_path("././@LongLink").unwrap();
    h.set_entry_type(kind);
    h.set_size(declared);
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    out.extend(std::iter::repeat_n(b'a', carried));
    pad(out);
}

fn export(bytes: &[u8], out: &Path, limits: TarLimits) -> pyro_core::Result<pyro_core::workspace::archive::ExportSummary> {
    extract_export_with(bytes, out, EntryKind::Directory, limits)
}

fn read_tree(bytes: &[u8]) -> pyro_core::Result<Tree> {
    Tree::from_tar_with(bytes, TarLimits::default(), true)
}

fn leftovers(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

// ---- H1 ---------------------------------------------------------------------------------

#[test]
fn sparse_members_are_refused() {
    let mut bytes = Vec::new();
    member(&mut bytes, "ok.txt", EntryType::Regular, b"fine\n", 0o644, None);
    sparse_member(&mut bytes, "disk.img", 4096);
    end(&mut bytes);
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let err = export(&bytes, &out, TarLimits::default()).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
    assert_eq!(err.to_string(), "archive refused: member \"disk.img\" is a sparse file (the agent never sends sparse files)");
    assert!(!out.exists());
    assert_eq!(leftovers(tmp.path()), Vec::<String>::new());
    assert_eq!(read_tree(&bytes).unwrap_err().to_string(), err.to_string());
    // pax-format sparse files (GNU.sparse.* records) too.
    let mut pax = Vec::new();
    member(&mut pax, "././@PaxHeader", EntryType::XHeader, &pax_record("GNU.sparse.realsize", "1099511627776"), 0o644, None);
    member(&mut pax, "f", EntryType::Regular, b"", 0o644, None);
    end(&mut pax);
    assert!(read_tree(&pax).unwrap_err().to_string().contains("sparse"));
}

#[test]
fn a_terabyte_sparse_header_is_refused_without_allocating() {
    let mut bytes = Vec::new();
    sparse_member(&mut bytes, "huge", 1 << 40);
    end(&mut bytes);
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let start = Instant::now();
    let (result, peak, largest) = measured(|| export(&bytes, &out, TarLimits::default()));
    assert!(result.unwrap_err().to_string().contains("is a sparse file"));
    let (tree, tree_peak, _) = measured(|| read_tree(&bytes));
    assert!(tree.unwrap_err().to_string().contains("is a sparse file"));
    assert!(peak < MIB && tree_peak < MIB && largest < MIB as usize, "peak {peak}, tree {tree_peak}, largest {largest}");
    assert!(start.elapsed().as_secs() < 5);
    assert!(!out.exists());
}

#[test]
fn huge_extension_headers_are_refused_before_their_body_is_read() {
    for kind in [EntryType::XHeader, EntryType::GNULongName, EntryType::GNULongLink] {
        // 4 GiB declared, 8 MiB actually sent: the tar crate alone would read all 8 MiB
        // into one Vec (and wait for the rest).
        let mut bytes = Vec::new();
        huge_extension(&mut bytes, kind, 4 << 30, 8 << 20);
        member(&mut bytes, "f", EntryType::Regular, b"x", 0o644, None);
        end(&mut bytes);
        let (result, peak, largest) = measured(|| read_tree(&bytes));
        let err = result.unwrap_err();
        assert!(matches!(err, Error::LimitExceeded(_)), "{err:?}");
        assert!(err.to_string().ends_with("header of 4294967296 bytes is larger than 64 KiB"), "{err}");
        assert!(peak < MIB && largest < MIB as usize, "{kind:?}: peak {peak}, largest {largest}");
        let tmp = tempfile::tempdir().unwrap();
        let (result, peak, _) = measured(|| export(&bytes, &tmp.path().join("out"), TarLimits::default()));
        assert!(matches!(result, Err(Error::LimitExceeded(_))));
        assert!(peak < MIB, "{kind:?}: export peak {peak}");
        assert_eq!(leftovers(tmp.path()), Vec::<String>::new());
    }
    // A long name within the cap, in the agent's pax format, is fine.
    let long = format!("{}/{}", "d".repeat(150), "f".repeat(200));
    let mut bytes = Vec::new();
    pax_member(&mut bytes, &long, b"deep\n");
    end(&mut bytes);
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    export(&bytes, &out, TarLimits::default()).unwrap();
    assert_eq!(fs::read(out.join(&long)).unwrap(), b"deep\n");
}

#[test]
fn member_count_and_file_bytes_are_capped() {
    let mut bytes = Vec::new();
    for i in 0..11 {
        member(&mut bytes, &format!("d{i}/"), EntryType::Directory, b"", 0o755, None);
    }
    end(&mut bytes);
    let limits = TarLimits { max_members: 10, ..TarLimits::default() };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let err = export(&bytes, &out, limits).unwrap_err();
    assert_eq!(err.to_string(), "archive refused: more than 10 members");
    assert!(!out.exists());
    export(&bytes, &out, TarLimits::default()).unwrap();

    // Extraction budget: the second file would pass 1 MiB of written data.
    let mut bytes = Vec::new();
    member(&mut bytes, "a", EntryType::Regular, &vec![1; 600 << 10], 0o644, None);
    member(&mut bytes, "b", EntryType::Regular, &vec![2; 600 << 10], 0o644, None);
    end(&mut bytes);
    let limits = TarLimits { max_file_bytes: MIB, ..TarLimits::default() };
    let out = tmp.path().join("out2");
    let err = export(&bytes, &out, limits).unwrap_err();
    assert!(matches!(err, Error::LimitExceeded(_)), "{err:?}");
    assert_eq!(err.to_string(), "archive refused: its files hold more than 1 MiB (at member \"b\")");
    assert!(!out.exists());
    assert_eq!(leftovers(tmp.path()), ["out"]);
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// Writes `chunks` into the spool sink like `GuestClient::tar_export` does.
async fn produce(mut sink: pyro_core::workspace::archive::SpoolWriter, chunks: Vec<Vec<u8>>) -> pyro_core::Result<u64> {
    let mut sent = 0;
    for chunk in chunks {
        sink.write_all(&chunk).await.map_err(|e| Error::io("write", "spool", e))?;
        sent += chunk.len() as u64;
    }
    sink.flush().await.map_err(|e| Error::io("flush", "spool", e))?;
    Ok(sent)
}

#[test]
fn a_stream_over_budget_is_cancelled_and_leaves_no_spool_file() {
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let limits = TarLimits { max_stream_bytes: MIB, ..TarLimits::default() };
    // A valid stream: one 4 MiB file, sent in 64 KiB frames.
    let mut chunks = vec![ustar("big.bin", EntryType::Regular, 4 * MIB, 0o644, None).as_bytes().to_vec()];
    chunks.extend((0..64).map(|_| vec![7u8; 64 << 10]));
    let err = rt.block_on(spool_tar(tmp.path(), limits, |sink| produce(sink, chunks.clone()))).unwrap_err();
    assert!(matches!(err, Error::LimitExceeded(_)), "{err:?}");
    assert_eq!(err.to_string(), "archive refused: the stream from the guest is larger than 1 MiB; the transfer was cancelled");
    assert_eq!(leftovers(tmp.path()), Vec::<String>::new(), "the partial spool file is removed");

    // Refusals of the scanner cancel the spool too (here a sparse member).
    let mut sparse = Vec::new();
    sparse_member(&mut sparse, "s", 1 << 40);
    let err = rt.block_on(spool_tar(tmp.path(), TarLimits::default(), |sink| produce(sink, vec![sparse]))).unwrap_err();
    assert!(err.to_string().contains("is a sparse file"), "{err}");
    assert_eq!(leftovers(tmp.path()), Vec::<String>::new());

    // Any other failure of the producer also removes the file.
    let err = rt.block_on(spool_tar(tmp.path(), limits, |_sink| async { Err::<(), _>(Error::Vmm("guest went away".into())) })).unwrap_err();
    assert_eq!(err.to_string(), "guest went away");
    assert_eq!(leftovers(tmp.path()), Vec::<String>::new());

    // Within budget the spool holds exactly the stream.
    let mut bytes = Vec::new();
    member(&mut bytes, "f", EntryType::Regular, b"hello", 0o644, None);
    end(&mut bytes);
    let (spooled, sent) = rt.block_on(spool_tar(tmp.path(), limits, |sink| produce(sink, vec![bytes.clone()]))).unwrap();
    assert_eq!(sent, bytes.len() as u64);
    assert_eq!(fs::read(spooled.path()).unwrap(), bytes);
    drop(spooled);
    assert_eq!(leftovers(tmp.path()), Vec::<String>::new());
}

/// A generated tar holding one regular file of `size` bytes of `byte`, never in memory.
fn generated(name: &str, size: u64, byte: u8) -> impl Read {
    let header = ustar(name, EntryType::Regular, size, 0o644, None).as_bytes().to_vec();
    let padding = ((512 - size % 512) % 512) as usize;
    io::Cursor::new(header).chain(io::repeat(byte).take(size)).chain(io::Cursor::new(vec![0u8; padding + 1024]))
}

#[test]
fn a_large_file_is_hashed_not_loaded() {
    let size = 200 * MIB;
    let (tree, peak, largest) = measured(|| Tree::from_tar_with(generated("big.txt", size, b'a'), TarLimits::default(), true));
    let tree = tree.unwrap();
    match &tree.nodes()["big.txt"] {
        Node::Hashed { size: s, text, mode, .. } => assert_eq!((*s, *text, *mode), (size, false, 0o644)),
        other => panic!("expected a hashed node, got a {}", if matches!(other, Node::File { .. }) { "file with bytes" } else { "non-file" }),
    }
    assert!(peak < 4 * MIB && largest <= 2 * MIB as usize, "peak {peak}, largest {largest}");
    // Text up to the patch limit is still held (and gets patches).
    let small = Tree::from_tar_with(generated("s.txt", MAX_PATCH_FILE_BYTES, b'b'), TarLimits::default(), true).unwrap();
    assert!(matches!(&small.nodes()["s.txt"], Node::File { bytes, .. } if bytes.len() as u64 == MAX_PATCH_FILE_BYTES));
}

#[test]
fn diff_of_a_workspace_with_a_large_file_stays_bounded() {
    let tmp = tempfile::tempdir().unwrap();
    let baseline = tmp.path().join("baseline.tar");
    let current = tmp.path().join("current.tar");
    let mut base = Vec::new();
    member(&mut base, "src/", EntryType::Directory, b"", 0o755, None);
    member(&mut base, "src/main.rs", EntryType::Regular, b"fn main() {}\n", 0o644, None);
    member(&mut base, "data.bin", EntryType::Regular, &[0, 1, 2], 0o644, None);
    end(&mut base);
    fs::write(&baseline, &base).unwrap();
    // The current tree: the text file changed, and a 200 MiB file of zeros appeared
    // (a hole in the spool file on disk).
    let size = 200 * MIB;
    {
        let mut f = File::create(&current).unwrap();
        let mut head = Vec::new();
        member(&mut head, "src/", EntryType::Directory, b"", 0o755, None);
        member(&mut head, "src/main.rs", EntryType::Regular, b"fn main() { println!(\"hi\"); }\n", 0o644, None);
        member(&mut head, "data.bin", EntryType::Regular, &[0, 1, 3], 0o644, None);
        head.extend_from_slice(ustar("zeros.img", EntryType::Regular, size, 0o644, None).as_bytes());
        f.write_all(&head).unwrap();
        let data_end = head.len() as u64 + size;
        f.set_len(data_end).unwrap();
        let mut f = fs::OpenOptions::new().append(true).open(&current).unwrap();
        f.write_all(&[0; 1024]).unwrap();
    }
    let (result, peak, largest) = measured(|| diff_archives(&baseline, &current, TarLimits::default()));
    let d = result.unwrap();
    let got: Vec<_> = d.entries.iter().map(|e| (e.path.as_str(), serde_json::to_value(e.status).unwrap(), e.text_patch.is_some())).collect();
    assert_eq!(
        got,
        [
            ("/workspace/data.bin", serde_json::json!("modified"), false),
            ("/workspace/src/main.rs", serde_json::json!("modified"), true),
            ("/workspace/zeros.img", serde_json::json!("added"), false),
        ]
    );
    assert_eq!(
        d.patch,
        "diff --git a/src/main.rs b/src/main.rs\n--- a/src/main.rs\n+++ b/src/main.rs\n@@ -1 +1 @@\n-fn main() {}\n+fn main() { println!(\"hi\"); }\n"
    );
    assert!(peak < 8 * MIB && largest <= 2 * MIB as usize, "peak {peak}, largest {largest}");
}

// ---- M2 ---------------------------------------------------------------------------------

#[test]
fn symlink_then_file_never_writes_outside_the_output() {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    fs::create_dir(&outside).unwrap();
    let target = outside.to_str().unwrap();
    // `A -> outside`, then `a/x` (the same directory as `A` on a case-insensitive
    // filesystem), then `A/x` (through the link by name).
    let mut bytes = Vec::new();
    member(&mut bytes, "A", EntryType::Symlink, b"", 0o777, Some(target));
    member(&mut bytes, "a/x", EntryType::Regular, b"first", 0o644, None);
    member(&mut bytes, "A/x", EntryType::Regular, b"second", 0o644, None);
    end(&mut bytes);
    let out = tmp.path().join("out");
    let err = export(&bytes, &out, TarLimits::default()).unwrap_err();
    assert_eq!(err.to_string(), "archive member would traverse through a symlink: A/x");
    assert!(!out.exists());
    assert_eq!(leftovers(&outside), Vec::<String>::new());

    // Without the last member the export succeeds; the symlink is created after `a/x`,
    // which is a real file in a real directory (here, case-sensitively, beside `A`).
    let mut bytes = Vec::new();
    member(&mut bytes, "A", EntryType::Symlink, b"", 0o777, Some(target));
    member(&mut bytes, "a/x", EntryType::Regular, b"first", 0o644, None);
    end(&mut bytes);
    export(&bytes, &out, TarLimits::default()).unwrap();
    assert_eq!(fs::read_link(out.join("A")).unwrap(), outside);
    assert!(fs::symlink_metadata(out.join("a")).unwrap().is_dir());
    assert_eq!(fs::read(out.join("a/x")).unwrap(), b"first");
    assert_eq!(leftovers(&outside), Vec::<String>::new());

    // A hard link to the symlink, then a file below the hard link's name: refused too.
    let mut bytes = Vec::new();
    member(&mut bytes, "l", EntryType::Symlink, b"", 0o777, Some(target));
    member(&mut bytes, "h", EntryType::Link, b"", 0o777, Some("l"));
    member(&mut bytes, "h/x", EntryType::Regular, b"x", 0o644, None);
    end(&mut bytes);
    let out = tmp.path().join("out2");
    assert!(export(&bytes, &out, TarLimits::default()).is_err());
    assert_eq!(leftovers(&outside), Vec::<String>::new());
}

#[test]
fn world_writable_and_set_id_modes_are_masked() {
    let mut bytes = Vec::new();
    member(&mut bytes, "open/", EntryType::Directory, b"", 0o777, None);
    member(&mut bytes, "open/tool", EntryType::Regular, b"#!/bin/sh\n", 0o6777, None);
    member(&mut bytes, "open/data", EntryType::Regular, b"d", 0o666, None);
    member(&mut bytes, "sticky/", EntryType::Directory, b"", 0o1777, None);
    member(&mut bytes, "private", EntryType::Regular, b"p", 0o600, None);
    end(&mut bytes);
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    export(&bytes, &out, TarLimits::default()).unwrap();
    let mode = |rel: &str| fs::symlink_metadata(out.join(rel)).unwrap().mode() & 0o7777;
    assert_eq!(mode("open"), 0o755);
    assert_eq!(mode("open/tool"), 0o755);
    assert_eq!(mode("open/data"), 0o644);
    assert_eq!(mode("sticky"), 0o1755);
    assert_eq!(mode("private"), 0o600);
    // Also for a single-file export.
    let mut bytes = Vec::new();
    member(&mut bytes, "f", EntryType::Regular, b"x", 0o4777, None);
    end(&mut bytes);
    let file = tmp.path().join("f");
    extract_export_with(bytes.as_slice(), &file, EntryKind::File, TarLimits::default()).unwrap();
    assert_eq!(fs::metadata(&file).unwrap().permissions().mode() & 0o7777, 0o755);
}

// ---- Fuzz harness -----------------------------------------------------------------------

/// The corpus: what the agent sends, plus every attack above.
fn seeds(outside: &str) -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    let mut agent = Vec::new();
    member(&mut agent, "src/", EntryType::Directory, b"", 0o755, None);
    member(&mut agent, "src/main.rs", EntryType::Regular, b"fn main() {}\n", 0o644, None);
    member(&mut agent, "src/run.sh", EntryType::Regular, b"#!/bin/sh\necho hi\n", 0o755, None);
    member(&mut agent, "bin/run", EntryType::Link, b"", 0o755, Some("src/run.sh"));
    member(&mut agent, "venv/python", EntryType::Symlink, b"", 0o777, Some("/usr/bin/python3"));
    member(&mut agent, "empty/", EntryType::Directory, b"", 0o700, None);
    pax_member(&mut agent, &format!("{}/long.txt", "n".repeat(120)), b"long\n");
    end(&mut agent);
    seeds.push(agent);
    let mut sparse = Vec::new();
    sparse_member(&mut sparse, "s", 4096);
    end(&mut sparse);
    seeds.push(sparse);
    let mut huge_sparse = Vec::new();
    sparse_member(&mut huge_sparse, "huge", 1 << 40);
    end(&mut huge_sparse);
    seeds.push(huge_sparse);
    for kind in [EntryType::XHeader, EntryType::GNULongName, EntryType::GNULongLink] {
        let mut huge = Vec::new();
        huge_extension(&mut huge, kind, 1 << 40, 2048);
        member(&mut huge, "f", EntryType::Regular, b"x", 0o644, None);
        end(&mut huge);
        seeds.push(huge);
    }
    let mut pax_size = Vec::new();
    member(&mut pax_size, "././@PaxHeader", EntryType::XHeader, &pax_record("size", "1024"), 0o644, None);
    member(&mut pax_size, "f", EntryType::Regular, b"", 0o644, None);
    pax_size.extend_from_slice(&[b'z'; 1024]);
    end(&mut pax_size);
    seeds.push(pax_size);
    let mut pax_sparse = Vec::new();
    member(&mut pax_sparse, "././@PaxHeader", EntryType::XHeader, &pax_record("GNU.sparse.size", "1099511627776"), 0o644, None);
    member(&mut pax_sparse, "f", EntryType::Regular, b"", 0o644, None);
    end(&mut pax_sparse);
    seeds.push(pax_sparse);
    let mut symlink_then_file = Vec::new();
    member(&mut symlink_then_file, "A", EntryType::Symlink, b"", 0o777, Some(outside));
    member(&mut symlink_then_file, "a/x", EntryType::Regular, b"first", 0o644, None);
    member(&mut symlink_then_file, "A/x", EntryType::Regular, b"second", 0o644, None);
    end(&mut symlink_then_file);
    seeds.push(symlink_then_file);
    let mut link_games = Vec::new();
    member(&mut link_games, "l", EntryType::Symlink, b"", 0o777, Some(outside));
    member(&mut link_games, "h", EntryType::Link, b"", 0o777, Some("l"));
    member(&mut link_games, "l", EntryType::Regular, b"now a file", 0o666, None);
    member(&mut link_games, "d/", EntryType::Directory, b"", 0o6777, None);
    member(&mut link_games, "d/f", EntryType::Regular, b"", 0o7777, None);
    end(&mut link_games);
    seeds.push(link_games);
    let mut many = Vec::new();
    for i in 0..40 {
        member(&mut many, &format!("m/{i}"), EntryType::Regular, &[i as u8; 3], 0o644, None);
    }
    end(&mut many);
    seeds.push(many);
    seeds
}

#[derive(Debug, Clone)]
enum Mutation {
    /// Overwrite one byte.
    Byte(prop::sample::Index, u8),
    /// Set the type byte of a header block (checksum fixed).
    Kind(prop::sample::Index, u8),
    /// Set the size field of a header block (octal or base-256; checksum fixed).
    Size(prop::sample::Index, u64, bool),
    /// Cut the archive.
    Truncate(prop::sample::Index),
    /// Insert bytes.
    Insert(prop::sample::Index, Vec<u8>),
    /// Repeat a block.
    Duplicate(prop::sample::Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let kinds = prop::sample::select(b"0125xLKSg7346DMV\0".to_vec());
    let sizes = prop_oneof![0u64..2048, Just(1 << 40), Just(u64::MAX / 2), any::<u64>()];
    prop_oneof![
        3 => (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Byte(i, b)),
        3 => (any::<prop::sample::Index>(), kinds).prop_map(|(i, k)| Mutation::Kind(i, k)),
        3 => (any::<prop::sample::Index>(), sizes, any::<bool>()).prop_map(|(i, s, b)| Mutation::Size(i, s, b)),
        1 => any::<prop::sample::Index>().prop_map(Mutation::Truncate),
        1 => (any::<prop::sample::Index>(), prop::collection::vec(any::<u8>(), 1..600)).prop_map(|(i, v)| Mutation::Insert(i, v)),
        1 => any::<prop::sample::Index>().prop_map(Mutation::Duplicate),
    ]
}

fn fix_checksum(block: &mut [u8]) {
    block[148..156].fill(b' ');
    let sum: u32 = block.iter().map(|&b| u32::from(b)).sum();
    block[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        if bytes.is_empty() {
            break;
        }
        let blocks = bytes.len() / 512;
        match m {
            Mutation::Byte(i, b) => {
                let i = i.index(bytes.len());
                bytes[i] = *b;
            }
            Mutation::Kind(i, k) if blocks > 0 => {
                let block = &mut bytes[i.index(blocks) * 512..][..512];
                block[156] = *k;
                fix_checksum(block);
            }
            Mutation::Size(i, size, binary) if blocks > 0 => {
                let block = &mut bytes[i.index(blocks) * 512..][..512];
                let field = &mut block[124..136];
                if *binary {
                    field[0] = 0x80;
                    field[1..4].fill(0);
                    field[4..].copy_from_slice(&size.to_be_bytes());
                } else {
                    let text = format!("{:011o}\0", size % (1 << 33));
                    field.copy_from_slice(text.as_bytes());
                }
                fix_checksum(block);
            }
            Mutation::Truncate(i) => bytes.truncate(i.index(bytes.len())),
            Mutation::Insert(i, v) => {
                let at = i.index(bytes.len() + 1);
                bytes.splice(at..at, v.iter().copied());
            }
            Mutation::Duplicate(i) if blocks > 0 => {
                let at = i.index(blocks) * 512;
                let block = bytes[at..at + 512].to_vec();
                bytes.splice(at..at, block);
            }
            _ => {}
        }
    }
    bytes
}

/// One fuzz input: a seed (by index) with mutations, or random bytes; and the chunk
/// size the push validator is fed with.
#[derive(Debug, Clone)]
struct FuzzInput {
    seed: Option<usize>,
    mutations: Vec<Mutation>,
    random: Vec<u8>,
    chunk: usize,
}

impl FuzzInput {
    fn bytes(&self, seeds: &[Vec<u8>]) -> Vec<u8> {
        match self.seed {
            Some(i) => mutate(seeds[i].clone(), &self.mutations),
            None => self.random.clone(),
        }
    }
}

fn fuzz_input(seed_count: usize) -> impl Strategy<Value = FuzzInput> {
    let mutated = (0..seed_count, prop::collection::vec(mutation(), 0..6)).prop_map(|(seed, mutations)| (Some(seed), mutations, Vec::new()));
    let random = prop::collection::vec(any::<u8>(), 0..2048).prop_map(|random| (None, Vec::new(), random));
    (prop_oneof![8 => mutated, 1 => random], 1usize..4096).prop_map(|((seed, mutations, random), chunk)| FuzzInput { seed, mutations, random, chunk })
}

/// How many fuzz cases got how far: (scanner accepted, tree read, export succeeded).
#[derive(Debug, Default)]
struct Reached {
    cases: u64,
    scanned: u64,
    tree: u64,
    exported: u64,
}

thread_local! {
    static REACHED: std::cell::RefCell<Reached> = std::cell::RefCell::new(Reached::default());
}

/// The checks of one fuzz case.
fn fuzz_case(bytes: &[u8], chunk: usize, work: &Path, outside: &Path) {
    let limits = TarLimits::default();
    // Push validation (the spool path) does not depend on how the stream is cut.
    let mut whole = TarScanner::new(limits);
    let verdict = whole.feed(bytes);
    let mut pieces = TarScanner::new(limits);
    let chunked = bytes.chunks(chunk).try_for_each(|piece| pieces.feed(piece));
    assert_eq!(verdict, chunked, "chunk size {chunk}");
    assert_eq!((whole.members(), whole.file_bytes()), (pieces.members(), pieces.file_bytes()));

    // Framing oracle: the tar crate on its own (the input is small, and sparse members,
    // whose holes it would expand, are refused) must see the members the scanner saw.
    if verdict.is_ok() {
        let (mut count, mut file_bytes, mut complete) = (0u64, 0u64, true);
        match tar::Archive::new(bytes).entries() {
            Ok(entries) => {
                for entry in entries {
                    match entry {
                        Ok(e) => {
                            count += 1;
                            if e.header().entry_type() == EntryType::Regular {
                                file_bytes += e.size();
                            }
                        }
                        Err(_) => {
                            complete = false;
                            break;
                        }
                    }
                }
            }
            Err(_) => complete = false,
        }
        if complete {
            assert_eq!((count, file_bytes), (whole.members(), whole.file_bytes()), "framing differs from the tar crate's");
        } else {
            assert!(count <= whole.members(), "the tar crate saw {count} members, the scanner {}", whole.members());
        }
    }

    let bound = 8 * MIB + 16 * bytes.len() as u64;
    let (tree, peak, largest) = measured(|| Tree::from_tar_with(bytes, limits, true));
    assert!(peak <= bound && largest as u64 <= 2 * MIB, "tree: peak {peak}, largest {largest}");
    // The pull path reads through the same scanner: what it accepts, the push scanner
    // accepts too (no desynchronised framing).
    if tree.is_ok() {
        assert!(verdict.is_ok(), "tree read accepted what the scanner refused: {verdict:?}");
    }

    let out = work.join("out");
    let (exported, peak, largest) = measured(|| export(bytes, &out, limits));
    REACHED.with(|r| {
        let mut r = r.borrow_mut();
        r.cases += 1;
        r.scanned += u64::from(verdict.is_ok());
        r.tree += u64::from(tree.is_ok());
        r.exported += u64::from(exported.is_ok());
    });
    assert!(peak <= bound && largest as u64 <= 2 * MIB, "export: peak {peak}, largest {largest}");
    match exported {
        Ok(_) => {
            assert!(verdict.is_ok(), "export accepted what the scanner refused: {verdict:?}");
            unlock(&out);
            fs::remove_dir_all(&out).unwrap();
        }
        Err(_) => assert!(fs::symlink_metadata(&out).is_err(), "a failed export left its output"),
    }
    assert_eq!(leftovers(work), ["outside"], "staging left behind");
    assert_eq!(leftovers(outside), Vec::<String>::new(), "something was written outside the output");
}

fn unlock(path: &Path) {
    if let Ok(meta) = fs::symlink_metadata(path) {
        if meta.is_dir() {
            let _ = fs::set_permissions(path, fs::Permissions::from_mode(0o755));
            for entry in fs::read_dir(path).unwrap().flatten() {
                unlock(&entry.path());
            }
        }
    }
}

#[test]
#[ignore = "fuzz harness; PYRO_FUZZ_CASES sets the case count"]
fn fuzz_archive_validation() {
    let cases: u32 = std::env::var("PYRO_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
    let work = tempfile::tempdir().unwrap();
    let outside = work.path().join("outside");
    fs::create_dir(&outside).unwrap();
    let seeds = seeds(outside.to_str().unwrap());
    let seed_count = seeds.len();
    // Every seed as it is, first.
    for seed in &seeds {
        fuzz_case(seed, 512, work.path(), &outside);
    }
    let config = Config { cases, failure_persistence: None, max_shrink_iters: 2000, ..Config::default() };
    let mut runner = TestRunner::new(config);
    let start = Instant::now();
    let result = runner.run(&fuzz_input(seed_count), |input| {
        fuzz_case(&input.bytes(&seeds), input.chunk, work.path(), &outside);
        Ok(())
    });
    let elapsed = start.elapsed();
    let reached = REACHED.with(|r| std::mem::take(&mut *r.borrow_mut()));
    eprintln!(
        "fuzz_archive_validation: {cases} cases (+{seed_count} seeds) in {:.1} s; scanner accepted {}, tree read {}, export succeeded {} of {} runs",
        elapsed.as_secs_f64(),
        reached.scanned,
        reached.tree,
        reached.exported,
        reached.cases
    );
    if let Err(e) = result {
        panic!("{e}");
    }
}
