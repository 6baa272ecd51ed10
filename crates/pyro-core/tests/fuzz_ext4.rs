//! Fuzz harness for the offline ext4 reader (`pyro_core::disk_image`), which reads disks
//! the guest wrote. Base images are real: `mkfs.ext4 -d` of a small tree with the options
//! of images/rootfs/build-rootfs.sh (with and without metadata checksums, one with a
//! journal, htree directories from `e2fsck -D`), plus crafted ones (a directory linked
//! back into its ancestor, inodes claiming huge sizes). Each case flips bytes, writes
//! edge values into superblock fields and metadata words, or copies metadata blocks over
//! each other, then opens, lists (recursively) and reads the result. Any panic or a case
//! running past the watchdog fails; errors are expected and fine.
//!
//! `PYRO_FUZZ_CASES=1000000 cargo test --release -p pyro-core --test fuzz_ext4 -- --ignored --nocapture`

mod fuzz_support;

use std::path::Path;
use std::process::Command;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use ext4_view::Ext4Read;
use fuzz_support::Rng;
use pyro_core::disk_image::DiskImage;

const OPTIONS: &str = "^inline_data,^large_dir,^metadata_csum_seed";

struct Base {
    name: &'static str,
    bytes: Rc<Vec<u8>>,
    /// Offsets of the 4 KiB blocks that are not all zero (the metadata and data worth
    /// mutating).
    hot: Vec<usize>,
}

/// Reads an image shared with the harness, which restores it between cases.
struct Shared(Rc<Vec<u8>>);

impl Ext4Read for Shared {
    fn read(&mut self, start: u64, dst: &mut [u8]) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let start = usize::try_from(start).map_err(|_| "offset overflows")?;
        let end = start.checked_add(dst.len()).filter(|&e| e <= self.0.len()).ok_or("read past the end of the image")?;
        dst.copy_from_slice(&self.0[start..end]);
        Ok(())
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e} (e2fsprogs is installed by scripts/setup.sh)"));
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn make_tree(tree: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let p = |rel: &str| tree.join(rel);
    std::fs::create_dir_all(p("a/b/c/d/e/f")).unwrap();
    std::fs::create_dir_all(p("many")).unwrap();
    std::fs::write(p("file.txt"), "hello offline reader\n").unwrap();
    std::fs::write(p("a/b/multi.bin"), (0..20_000u32).map(|i| (i % 251) as u8).collect::<Vec<u8>>()).unwrap();
    std::fs::write(p("a/b/c/d/e/f/deep.txt"), "deep\n").unwrap();
    let sparse = std::fs::File::create(p("sparse")).unwrap();
    sparse.set_len(1 << 20).unwrap();
    std::os::unix::fs::FileExt::write_at(&sparse, b"tail", (1 << 20) - 4).unwrap();
    std::os::unix::fs::symlink("file.txt", p("short-link")).unwrap();
    std::os::unix::fs::symlink(format!("a/{}", "long/".repeat(30)), p("long-link")).unwrap();
    std::fs::write(tree.join(std::ffi::OsStr::from_bytes(b"name\xff\x1b[31m")), "odd name\n").unwrap();
    // Enough entries for a directory of several blocks, which `e2fsck -D` indexes.
    for i in 0..150 {
        std::fs::write(p(&format!("many/entry-with-a-name-long-enough-to-fill-blocks-{i:04}")), format!("{i}\n")).unwrap();
    }
    run(Command::new("mkfifo").arg(p("fifo")));
}

fn mkfs(tree: &Path, image: &Path, size: &str, features: &str, extra: &[&str]) {
    let _ = std::fs::remove_file(image);
    run(Command::new("truncate").args(["-s", size]).arg(image));
    run(Command::new("mkfs.ext4")
        .args(["-F", "-q", "-d"])
        .arg(tree)
        .args(["-O", features, "-L", "pyro-rootfs", "-m", "0", "-E", "root_owner=0:0", "-b", "4096", "-I", "256", "-N", "512"])
        .args(extra)
        .arg(image));
    // Rebuild directories as htrees where they span blocks (as the kernel would).
    let out = Command::new("e2fsck").args(["-fyD"]).arg(image).output().unwrap();
    assert!(out.status.code().is_some_and(|c| c <= 1), "e2fsck -D: {}", String::from_utf8_lossy(&out.stdout));
}

fn debugfs(image: &Path, request: &str) {
    run(Command::new("debugfs").args(["-w", "-R", request]).arg(image));
}

fn bases() -> Vec<Base> {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    make_tree(&tree);
    let img = |name: &str| dir.path().join(name);
    let nocsum = format!("{OPTIONS},^metadata_csum");
    mkfs(&tree, &img("csum"), "4M", OPTIONS, &[]);
    mkfs(&tree, &img("nocsum"), "4M", &nocsum, &[]);
    mkfs(&tree, &img("journal"), "16M", &nocsum, &["-J", "size=4"]);
    mkfs(&tree, &img("cycle"), "4M", &nocsum, &[]);
    debugfs(&img("cycle"), "ln /a /a/b/c/loop");
    debugfs(&img("cycle"), "ln /a/b /many/again");
    mkfs(&tree, &img("huge"), "4M", &nocsum, &[]);
    debugfs(&img("huge"), "sif /file.txt size 0x10000000000");
    debugfs(&img("huge"), "sif /long-link size 0x100000");
    debugfs(&img("huge"), "sif /a/b size 0x40000000");
    debugfs(&img("huge"), "sif /sparse size 0xffffffffffff");
    ["csum", "nocsum", "journal", "cycle", "huge"]
        .into_iter()
        .map(|name| {
            let bytes = std::fs::read(img(name)).unwrap();
            let hot = (0..bytes.len()).step_by(4096).filter(|&o| bytes[o..o + 4096].iter().any(|&b| b != 0)).collect();
            Base { name, bytes: Rc::new(bytes), hot }
        })
        .collect()
}

/// Superblock fields (offset, width) that size or locate things.
const SUPERBLOCK_FIELDS: &[(usize, usize)] = &[
    (0x0, 4),   // inodes count
    (0x4, 4),   // blocks count lo
    (0x14, 4),  // first data block
    (0x18, 4),  // log block size
    (0x20, 4),  // blocks per group
    (0x28, 4),  // inodes per group
    (0x4c, 4),  // revision
    (0x58, 2),  // inode size
    (0x5c, 4),  // compat features
    (0x60, 4),  // incompat features
    (0x64, 4),  // ro-compat features
    (0xe0, 4),  // journal inode
    (0xfe, 2),  // group descriptor size
    (0x150, 4), // blocks count hi
];

/// Applies one random mutation, recording each original byte in `undo`.
fn mutate(hot: &[usize], image: &mut [u8], rng: &mut Rng, undo: &mut Vec<(usize, u8)>) {
    let mut set = |image: &mut [u8], at: usize, value: u8| {
        if at < image.len() {
            undo.push((at, image[at]));
            image[at] = value;
        }
    };
    let hot_offset = |rng: &mut Rng| rng.pick(hot) + rng.below(4096);
    match rng.below(7) {
        0 => {
            for _ in 0..=rng.below(8) {
                let at = hot_offset(rng);
                let value = if rng.chance(50) { image[at] ^ (1 << rng.below(8)) } else { rng.next() as u8 };
                set(image, at, value);
            }
        }
        1 => {
            let (field, width) = *rng.pick(SUPERBLOCK_FIELDS);
            let value = rng.interesting_u32().to_le_bytes();
            for (i, b) in value.iter().take(width).enumerate() {
                set(image, 1024 + field + i, *b);
            }
        }
        2 => {
            // A metadata word: inode sizes and block pointers, extent lengths, directory
            // entry inode numbers and record lengths, descriptor table locations.
            let at = hot_offset(rng) & !3;
            let value = rng.interesting_u32().to_le_bytes();
            let width = if rng.chance(30) { 2 } else { 4 };
            for (i, b) in value.iter().take(width).enumerate() {
                set(image, at + i, *b);
            }
        }
        3 => {
            let (from, to) = (*rng.pick(hot), *rng.pick(hot));
            for i in 0..4096 {
                let b = image[from + i];
                set(image, to + i, b);
            }
        }
        4 => {
            let at = hot_offset(rng);
            let n = 1 + rng.below(64);
            for (i, b) in rng.bytes(n).into_iter().enumerate() {
                set(image, at + i, b);
            }
        }
        5 => {
            // Claim the journal needs recovery, so it is parsed and replayed.
            let at = 1024 + 0x60;
            let b = image[at] | 0x4;
            set(image, at, b);
            if rng.chance(50) {
                let at = hot_offset(rng) & !3;
                for (i, b) in rng.interesting_u32().to_be_bytes().into_iter().enumerate() {
                    set(image, at + i, b);
                }
            }
        }
        _ => {
            // Truncating the reads: zero a whole block.
            let to = *rng.pick(hot);
            for i in 0..4096 {
                set(image, to + i, 0);
            }
        }
    }
}

/// Cases whose image opened, and whose recursive listing succeeded.
static OPENED: AtomicU64 = AtomicU64::new(0);
static LISTED: AtomicU64 = AtomicU64::new(0);
/// Cases where `ext4-view` itself panicked and `DiskImage` turned that into an error.
static CONTAINED: AtomicU64 = AtomicU64::new(0);

/// The distinct panic messages behind [`CONTAINED`] (worth reporting upstream).
static PANICS: std::sync::Mutex<std::collections::BTreeSet<String>> = std::sync::Mutex::new(std::collections::BTreeSet::new());

fn contained<T>(result: &pyro_core::Result<T>) -> bool {
    let Err(e) = result else { return false };
    let message = e.to_string();
    let Some(why) = message.strip_prefix("the ext4 reader failed on this corrupt disk image: ") else { return false };
    PANICS.lock().unwrap().insert(why.to_string());
    true
}

/// Everything `pyro workspace disk …` does with an image.
fn exercise(image: &Rc<Vec<u8>>, rng: &mut Rng) {
    let opened = DiskImage::from_reader(Box::new(Shared(image.clone())), image.len() as u64);
    if contained(&opened) {
        CONTAINED.fetch_add(1, Relaxed);
    }
    let Ok(disk) = opened else {
        return;
    };
    OPENED.fetch_add(1, Relaxed);
    let listed = disk.entries("/", true);
    if listed.is_ok() {
        LISTED.fetch_add(1, Relaxed);
    }
    let mut retired = contained(&listed);
    let _ = disk.entries("/", false);
    let _ = disk.list_names("/");
    let mut paths: Vec<String> =
        ["/file.txt", "/a/b", "/a/b/multi.bin", "/many", "/sparse", "/short-link", "/long-link", "/a/b/c/loop", "/fifo"].map(String::from).to_vec();
    if let Ok(entries) = &listed {
        for _ in 0..8.min(entries.len()) {
            paths.push(rng.pick(entries).path.clone());
        }
    }
    for path in &paths {
        retired |= contained(&disk.entries(path, rng.chance(20)));
        let prefix = disk.read_prefix(path, 1 << 16);
        retired |= contained(&prefix);
        if let Ok((bytes, size)) = prefix {
            assert!(bytes.len() as u64 <= size.min(1 << 16));
            if size <= 1 << 16 {
                retired |= contained(&disk.read(path));
            }
        }
    }
    if retired {
        CONTAINED.fetch_add(1, Relaxed);
    }
}

#[test]
#[ignore = "fuzz harness: scripts/fuzz.sh, or PYRO_FUZZ_CASES=N cargo test --release -p pyro-core --test fuzz_ext4 -- --ignored"]
fn fuzz_ext4_reader() {
    let mut bases = bases();
    // Every unmutated base opens and lists (the crafted ones may fail, but cleanly).
    for base in &bases {
        let disk = DiskImage::from_reader(Box::new(Shared(base.bytes.clone())), base.bytes.len() as u64).unwrap_or_else(|e| panic!("{}: {e}", base.name));
        let listed = disk.entries("/", true);
        match base.name {
            "cycle" => assert!(listed.is_err()),
            "huge" => {}
            _ => assert!(listed.unwrap().len() > 150, "{}", base.name),
        }
    }
    let mut undo: Vec<(usize, u8)> = Vec::new();
    let mut last = 0usize;
    fuzz_support::run("ext4 reader", 3_000, Duration::from_secs(10), |rng| {
        // Restore the image the previous case mutated (its reader is gone by now).
        let previous = Rc::get_mut(&mut bases[last].bytes).expect("no reader outlives its case");
        for (at, b) in undo.drain(..).rev() {
            previous[at] = b;
        }
        last = rng.below(bases.len());
        let Base { bytes, hot, .. } = &mut bases[last];
        let image = Rc::get_mut(bytes).expect("no reader outlives its case");
        if !rng.chance(5) {
            for _ in 0..=rng.below(3) {
                mutate(hot, image, rng, &mut undo);
            }
        }
        exercise(bytes, rng);
    });
    eprintln!(
        "[fuzz] ext4 reader: {} images opened, {} listed recursively, {} cases where ext4-view panicked and DiskImage reported an error",
        OPENED.load(Relaxed),
        LISTED.load(Relaxed),
        CONTAINED.load(Relaxed)
    );
    for why in PANICS.lock().unwrap().iter() {
        eprintln!("[fuzz] ext4 reader: contained ext4-view panic: {why}");
    }
}
