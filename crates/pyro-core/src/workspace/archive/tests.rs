//! Tests of packing, the member rules and export (moved from the single-file module).

use super::common::lossy;
use super::extract::unlock_tree;
use super::pack::has_archive_suffix;
use super::*;
use crate::error::Result;
use crate::guest::EntryKind;
use pyro_protocol::testing::model_resolve;
use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use tar::{EntryType, Header};

/// (name, entry type byte, link name, mode, uid, size) of every member.
fn members(path: &Path) -> Vec<(String, u8, Option<String>, u32, u64, u64)> {
    let mut archive = tar::Archive::new(File::open(path).unwrap());
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let h = e.header();
            (lossy(&e.path_bytes()), h.entry_type().as_byte(), e.link_name_bytes().map(|l| lossy(&l)), h.mode().unwrap(), h.uid().unwrap(), e.size())
        })
        .collect()
}

fn names(path: &Path) -> Vec<String> {
    members(path).into_iter().map(|m| m.0).collect()
}

fn message(r: Result<PreparedArchive>) -> String {
    r.expect_err("should fail").to_string()
}

/// A tar whose members are written with raw header names (the tar crate refuses
/// unsafe ones through its safe API).
fn raw_tar(path: &Path, members: &[(&str, EntryType, Option<&str>, &[u8])]) {
    let mut builder = tar::Builder::new(File::create(path).unwrap());
    for (name, kind, link, data) in members {
        let mut header = Header::new_gnu();
        {
            let gnu = header.as_gnu_mut().unwrap();
            gnu.name[..name.len()].copy_from_slice(name.as_bytes());
            if let Some(link) = link {
                gnu.linkname[..link.len()].copy_from_slice(link.as_bytes());
            }
        }
        header.set_entry_type(*kind);
        header.set_mode(0o644);
        header.set_size(data.len() as u64);
        header.set_cksum();
        builder.append(&header, *data).unwrap();
    }
    builder.finish().unwrap();
}

#[test]
fn empty_source_gives_an_empty_archive() {
    let tmp = tempfile::tempdir().unwrap();
    let prepared = prepare_source(None, tmp.path()).unwrap();
    assert_eq!(prepared.mode, SeedMode::Empty);
    assert_eq!((prepared.entry_count, prepared.bytes), (0, 0));
    assert!(prepared.source_path.is_none());
    assert!(names(&prepared.archive).is_empty());
    assert_eq!(fs::metadata(&prepared.archive).unwrap().len() % 512, 0);
    let path = prepared.archive.clone();
    drop(prepared);
    assert!(!path.exists(), "the temporary archive is removed on drop");
    assert_eq!(serde_json::to_string(&SeedMode::TarArchive).unwrap(), "\"tar_archive\"");
}

#[test]
fn directory_seed_keeps_symlinks_hard_links_modes_and_mtimes() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir_all(src.join("node_modules/pkg")).unwrap();
    fs::create_dir_all(src.join("node_modules/.bin")).unwrap();
    fs::create_dir_all(src.join("empty")).unwrap();
    fs::write(src.join("node_modules/pkg/x"), "#!/bin/sh\necho x\n").unwrap();
    fs::set_permissions(src.join("node_modules/pkg/x"), fs::Permissions::from_mode(0o755)).unwrap();
    symlink("../pkg/x", src.join("node_modules/.bin/x")).unwrap();
    fs::write(src.join("a.txt"), "hello\n").unwrap();
    fs::hard_link(src.join("a.txt"), src.join("b.txt")).unwrap();
    set_mtime(&src.join("a.txt"), 1_000_000).unwrap();
    Command::new("mkfifo").arg(src.join("fifo")).status().unwrap();

    let prepared = prepare_source(Some(&src), tmp.path()).unwrap();
    assert_eq!(prepared.mode, SeedMode::Directory);
    assert_eq!(prepared.source_path.as_deref(), Some(fs::canonicalize(&src).unwrap().as_path()));
    let got = members(&prepared.archive);
    let expected_names = ["a.txt", "b.txt", "empty/", "node_modules/", "node_modules/.bin/", "node_modules/.bin/x", "node_modules/pkg/", "node_modules/pkg/x"];
    assert_eq!(got.iter().map(|m| m.0.as_str()).collect::<Vec<_>>(), expected_names);
    assert_eq!(got[0].1, b'0');
    assert_eq!((got[1].1, got[1].2.as_deref()), (b'1', Some("a.txt")));
    assert_eq!((got[5].1, got[5].2.as_deref()), (b'2', Some("../pkg/x")));
    assert_eq!(got[7].3, 0o755);
    assert!(got.iter().all(|m| m.4 == 0), "owner 0:0");
    assert_eq!(prepared.entry_count, 8);
    assert_eq!(prepared.bytes, 6 + 17);
    let mut archive = tar::Archive::new(File::open(&prepared.archive).unwrap());
    let first = archive.entries().unwrap().next().unwrap().unwrap();
    assert_eq!(first.header().mtime().unwrap(), 1_000_000);
}

#[test]
fn directory_seed_rejects_escaping_symlinks() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    symlink("../../outside", src.join("sub/evil")).unwrap();
    assert_eq!(message(prepare_source(Some(&src), tmp.path())), "symlink sub/evil escapes the workspace");
    fs::remove_file(src.join("sub/evil")).unwrap();
    symlink("/etc/passwd", src.join("abs")).unwrap();
    assert_eq!(message(prepare_source(Some(&src), tmp.path())), "symlink abs escapes the workspace");
    fs::remove_file(src.join("abs")).unwrap();
    symlink("sub/../sub", src.join("odd")).unwrap();
    assert!(message(prepare_source(Some(&src), tmp.path())).contains("has a target with `..` after a directory name"));
}

#[test]
fn tarball_with_leading_dot_slash_is_normalised() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir_all(src.join("dir")).unwrap();
    fs::write(src.join("dir/f.txt"), "content").unwrap();
    symlink("dir/f.txt", src.join("link")).unwrap();
    let tgz = tmp.path().join("Seed.TGZ");
    let status = Command::new("tar").arg("-C").arg(&src).arg("-czf").arg(&tgz).arg(".").status().unwrap();
    assert!(status.success());
    let prepared = prepare_source(Some(&tgz), tmp.path()).unwrap();
    assert_eq!(prepared.mode, SeedMode::TarArchive);
    let mut got = names(&prepared.archive);
    got.sort();
    assert_eq!(got, ["dir/", "dir/f.txt", "link"]);
    assert_eq!((prepared.entry_count, prepared.bytes), (3, 7));

    // Gzip is recognised by its magic bytes, not by the name.
    let misnamed = tmp.path().join("plain.tar");
    fs::copy(&tgz, &misnamed).unwrap();
    assert_eq!(prepare_source(Some(&misnamed), tmp.path()).unwrap().entry_count, 3);
    // An uncompressed tar.
    let tar_path = tmp.path().join("x.tar");
    assert!(Command::new("tar").arg("-C").arg(&src).arg("-cf").arg(&tar_path).arg("dir").status().unwrap().success());
    assert_eq!(names(&prepare_source(Some(&tar_path), tmp.path()).unwrap().archive), ["dir/", "dir/f.txt"]);
}

#[test]
fn unsafe_tar_members_are_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path().join("t.tar");
    let check = |members: &[(&str, EntryType, Option<&str>, &[u8])]| {
        raw_tar(&t, members);
        message(prepare_source(Some(&t), tmp.path()))
    };
    assert_eq!(check(&[("../evil", EntryType::Regular, None, b"x")]), "unsafe archive member path: ../evil");
    assert_eq!(check(&[("a/../../evil", EntryType::Regular, None, b"x")]), "unsafe archive member path: a/../../evil");
    assert_eq!(check(&[("/etc/passwd", EntryType::Regular, None, b"x")]), "unsafe archive member path: /etc/passwd");
    assert_eq!(check(&[(".", EntryType::Regular, None, b"x")]), "unsafe archive member path: .");
    assert_eq!(check(&[("a/..", EntryType::Symlink, Some("b"), b"")]), "unsafe archive member path: a/..");
    assert_eq!(check(&[("l", EntryType::Symlink, Some("../x"), b"")]), "symlink l escapes the workspace");
    assert_eq!(check(&[("l", EntryType::Symlink, Some("/x"), b"")]), "symlink l escapes the workspace");
    assert_eq!(check(&[("l", EntryType::Symlink, Some(""), b"")]), "symlink l has an empty target");
    assert_eq!(check(&[("p", EntryType::Fifo, None, b"")]), "unsupported archive member type: p");
    assert_eq!(check(&[("c", EntryType::Char, None, b"")]), "unsupported archive member type: c");
    assert_eq!(
        check(&[("h", EntryType::Link, Some("later"), b""), ("later", EntryType::Regular, None, b"x")]),
        "hard link h must point at an earlier file member: later"
    );
    assert_eq!(
        check(&[("d/", EntryType::Directory, None, b""), ("h", EntryType::Link, Some("d"), b"")]),
        "hard link h must point at an earlier file member: d"
    );
    assert_eq!(
        check(&[("l", EntryType::Symlink, Some("sub"), b""), ("l/x", EntryType::Regular, None, b"x")]),
        "archive member would traverse through a symlink: l/x"
    );
    assert_eq!(
        check(&[("f", EntryType::Regular, None, b"x"), ("f/x", EntryType::Regular, None, b"x")]),
        "archive member f/x conflicts with the earlier file f"
    );
    assert_eq!(
        check(&[("d/", EntryType::Directory, None, b""), ("d", EntryType::Regular, None, b"x")]),
        "archive member d conflicts with an earlier directory"
    );
    fs::write(&t, b"this is not a tar archive, not at all; it is long enough to fill a header block?".repeat(10)).unwrap();
    assert!(message(prepare_source(Some(&t), tmp.path())).starts_with("seed_path "));
}

#[test]
fn safe_tar_members_are_rewritten_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path().join("t.tar");
    raw_tar(
        &t,
        &[
            ("./", EntryType::Directory, None, b""),
            (".", EntryType::Directory, None, b""),
            ("./a//b/../c.txt", EntryType::Regular, None, b"abc"),
            ("./a/h", EntryType::Link, Some("./a/c.txt"), b""),
            ("a/up", EntryType::Symlink, Some("../a/c.txt"), b""),
            ("a/dot", EntryType::Symlink, Some("."), b""),
        ],
    );
    let prepared = prepare_source(Some(&t), tmp.path()).unwrap();
    let got: Vec<_> = members(&prepared.archive).into_iter().map(|m| (m.0, m.1, m.2)).collect();
    assert_eq!(
        got,
        [
            ("a/c.txt".to_string(), b'0', None),
            ("a/h".to_string(), b'1', Some("a/c.txt".to_string())),
            ("a/up".to_string(), b'2', Some("../a/c.txt".to_string())),
            ("a/dot".to_string(), b'2', Some(".".to_string())),
        ]
    );
    assert_eq!((prepared.entry_count, prepared.bytes), (4, 3));
}

#[test]
fn long_names_survive_normalisation() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let deep = format!("{}/{}", "d".repeat(120), "f".repeat(150));
    fs::create_dir_all(src.join("d".repeat(120))).unwrap();
    fs::write(src.join(&deep), "x").unwrap();
    let target = format!("{}/{}", "d".repeat(120), "f".repeat(150));
    symlink(&target, src.join("l")).unwrap();
    let prepared = prepare_source(Some(&src), tmp.path()).unwrap();
    let got = members(&prepared.archive);
    assert_eq!(got[1].0, deep);
    assert_eq!(got[2].2.as_deref(), Some(target.as_str()));
}

#[test]
fn bad_source_paths_have_clear_messages() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nope");
    assert_eq!(message(prepare_source(Some(&missing), tmp.path())), format!("seed_path {} does not exist", missing.display()));
    let zip = tmp.path().join("x.zip");
    fs::write(&zip, "PK").unwrap();
    assert_eq!(message(prepare_source(Some(&zip), tmp.path())), "seed_path must be a directory or a .tar/.tar.gz/.tgz archive");
    assert!(has_archive_suffix(Path::new("A.Tar.Gz")));
    assert!(!has_archive_suffix(Path::new(".tar")));
    if let Some(home) = dirs::home_dir() {
        assert_eq!(expand_user(Path::new("~/x/y")), home.join("x/y"));
        assert_eq!(expand_user(Path::new("~")), home);
    }
    assert_eq!(expand_user(Path::new("~other/x")), PathBuf::from("~other/x"));
}

fn seeded_archive(tmp: &Path) -> PreparedArchive {
    let src = tmp.join("src");
    fs::create_dir_all(src.join("sub/empty")).unwrap();
    fs::create_dir_all(src.join("ro")).unwrap();
    fs::write(src.join("sub/run.sh"), "#!/bin/sh\n").unwrap();
    fs::set_permissions(src.join("sub/run.sh"), fs::Permissions::from_mode(0o750)).unwrap();
    fs::hard_link(src.join("sub/run.sh"), src.join("run-link")).unwrap();
    symlink("sub/run.sh", src.join("ln")).unwrap();
    fs::write(src.join("ro/f"), "r").unwrap();
    set_mtime(&src.join("sub/run.sh"), 1_234_567).unwrap();
    set_mtime(&src.join("sub/empty"), 7_654_321).unwrap();
    fs::set_permissions(src.join("ro"), fs::Permissions::from_mode(0o555)).unwrap();
    let prepared = prepare_source(Some(&src), tmp).unwrap();
    fs::set_permissions(src.join("ro"), fs::Permissions::from_mode(0o755)).unwrap();
    prepared
}

#[test]
fn directory_export_recreates_the_tree() {
    let tmp = tempfile::tempdir().unwrap();
    let prepared = seeded_archive(tmp.path());
    let out = tmp.path().join("new/parent/out");
    let summary = extract_export(File::open(&prepared.archive).unwrap(), &out, EntryKind::Directory).unwrap();
    assert_eq!(summary, ExportSummary { entry_count: 7, bytes_written: 11 });
    let meta = fs::metadata(out.join("sub/run.sh")).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o750);
    assert_eq!(meta.mtime(), 1_234_567);
    assert_eq!(fs::metadata(out.join("run-link")).unwrap().ino(), meta.ino());
    assert_eq!(fs::read_link(out.join("ln")).unwrap(), Path::new("sub/run.sh"));
    assert_eq!(fs::metadata(out.join("sub/empty")).unwrap().mtime(), 7_654_321);
    assert_eq!(fs::metadata(out.join("ro")).unwrap().mode() & 0o777, 0o555);
    assert_eq!(fs::read_to_string(out.join("ro/f")).unwrap(), "r");
    let leftovers: Vec<_> = fs::read_dir(tmp.path().join("new/parent")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers, [OsString::from("out")]);
    fs::set_permissions(out.join("ro"), fs::Permissions::from_mode(0o755)).unwrap();

    // The output must not exist.
    let err = extract_export(File::open(&prepared.archive).unwrap(), &out, EntryKind::Directory).unwrap_err();
    assert_eq!(err.to_string(), format!("output_path already exists: {}", out.display()));
}

#[test]
fn export_keeps_any_symlink_target_but_never_writes_through_links() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path().join("t.tar");
    raw_tar(&t, &[("venv/python", EntryType::Symlink, Some("/usr/bin/python3"), b"")]);
    let out = tmp.path().join("out");
    extract_export(File::open(&t).unwrap(), &out, EntryKind::Directory).unwrap();
    assert_eq!(fs::read_link(out.join("venv/python")).unwrap(), Path::new("/usr/bin/python3"));

    raw_tar(&t, &[("l", EntryType::Symlink, Some("/tmp"), b""), ("l/x", EntryType::Regular, None, b"x")]);
    let out = tmp.path().join("out2");
    let err = extract_export(File::open(&t).unwrap(), &out, EntryKind::Directory).unwrap_err();
    assert_eq!(err.to_string(), "archive member would traverse through a symlink: l/x");
    assert!(!out.exists());
}

#[test]
fn failed_export_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path().join("t.tar");
    raw_tar(&t, &[("ro/", EntryType::Directory, None, b""), ("ro/f", EntryType::Regular, None, b"data"), ("../evil", EntryType::Regular, None, b"x")]);
    let parent = tmp.path().join("exports");
    let out = parent.join("out");
    let err = extract_export(File::open(&t).unwrap(), &out, EntryKind::Directory).unwrap_err();
    assert_eq!(err.to_string(), "unsafe archive member path: ../evil");
    assert!(!out.exists());
    assert_eq!(fs::read_dir(&parent).unwrap().count(), 0, "no staging directory left");
    assert!(!tmp.path().join("evil").exists());

    // A truncated archive fails too, leaving nothing.
    let bytes = fs::read(&t).unwrap();
    let cut = tmp.path().join("cut.tar");
    fs::write(&cut, &bytes[..512 + 512 + 100]).unwrap();
    assert!(extract_export(File::open(&cut).unwrap(), &out, EntryKind::Directory).is_err());
    assert_eq!(fs::read_dir(&parent).unwrap().count(), 0);
}

#[test]
fn file_and_symlink_exports() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path().join("t.tar");
    raw_tar(&t, &[("app.py", EntryType::Regular, None, b"print(1)\n")]);
    let out = tmp.path().join("o/app-copy.py");
    let summary = extract_export(File::open(&t).unwrap(), &out, EntryKind::File).unwrap();
    assert_eq!(summary, ExportSummary { entry_count: 1, bytes_written: 9 });
    assert_eq!(fs::read_to_string(&out).unwrap(), "print(1)\n");
    assert_eq!(fs::read_dir(tmp.path().join("o")).unwrap().count(), 1);

    let out = tmp.path().join("l");
    raw_tar(&t, &[("cur", EntryType::Symlink, Some("/abs/target"), b"")]);
    extract_export(File::open(&t).unwrap(), &out, EntryKind::Symlink).unwrap();
    assert_eq!(fs::read_link(&out).unwrap(), Path::new("/abs/target"));

    let out = tmp.path().join("f2");
    let err = extract_export(File::open(&t).unwrap(), &out, EntryKind::File).unwrap_err();
    assert_eq!(err.to_string(), "exported archive did not contain a regular file");
    raw_tar(&t, &[("a", EntryType::Regular, None, b"1"), ("b", EntryType::Regular, None, b"2")]);
    let err = extract_export(File::open(&t).unwrap(), &out, EntryKind::File).unwrap_err();
    assert_eq!(err.to_string(), "expected exactly one archive member for file export, got 2");
    raw_tar(&t, &[("a", EntryType::Regular, None, b"1")]);
    let err = extract_export(File::open(&t).unwrap(), &out, EntryKind::Symlink).unwrap_err();
    assert_eq!(err.to_string(), "exported archive did not contain a symlink");
    assert!(!out.exists());
    assert_eq!(fs::read_dir(tmp.path()).unwrap().filter(|e| e.as_ref().unwrap().file_name().as_bytes().starts_with(b".pyro-export-")).count(), 0);
}

/// Property tests for the member rules, each checked against an independent reference
/// model built on `std::path::Path::components` (not on the code under test).
mod props {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;
    use proptest::sample::{select, Index};
    use std::path::Component;

    fn config(cases: u32) -> ProptestConfig {
        // No regression files: a failing case is reported in the test output instead.
        ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
    }

    const SEGMENTS: &[&str] = &["a", "b", "..", ".", "", "c d"];

    /// Random segments joined with `/`, optionally prefixed with `/` or `./`.
    fn raw_name() -> impl Strategy<Value = String> {
        (select(vec!["", "/", "./"]), vec(select(SEGMENTS), 1..=6)).prop_map(|(prefix, segments)| format!("{prefix}{}", segments.join("/")))
    }

    /// A symlink's parent: mostly harmless segments, sometimes any raw name.
    fn parent_dir() -> impl Strategy<Value = String> {
        let plain = vec(select(vec!["a", "b", "c d", ".", ""]), 1..=3).prop_map(|segments| segments.join("/"));
        prop_oneof![3 => plain, 1 => raw_name()]
    }

    /// Reference for the documented symlink rule (`pyro_protocol::archive_rules`,
    /// `SymlinkPolicy::Contained`): "`..` only as leading components".
    fn model_dotdot_only_leading(target: &str) -> bool {
        let components: Vec<Component> = Path::new(target).components().collect();
        let leading = components.iter().take_while(|c| matches!(c, Component::CurDir | Component::ParentDir)).count();
        !components[leading..].contains(&Component::ParentDir)
    }

    /// The data of every member, in order.
    fn member_data(path: &Path) -> Vec<Vec<u8>> {
        let mut archive = tar::Archive::new(File::open(path).unwrap());
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let mut data = Vec::new();
                e.unwrap().read_to_end(&mut data).unwrap();
                data
            })
            .collect()
    }

    /// Names in `dir` other than `keep`.
    fn extra_entries(dir: &Path, keep: &[&str]) -> Vec<OsString> {
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name()).filter(|n| !keep.iter().any(|k| n == OsStr::new(k))).collect()
    }

    // ---- Property 3: directory round trip -------------------------------------------

    #[derive(Debug, Clone)]
    struct Tree {
        /// Directories (segments below the root) and their modes.
        dirs: Vec<(Vec<&'static str>, u32)>,
        /// Files: parent directory (root or one of `dirs`), name, bytes, mode.
        files: Vec<(Index, &'static str, Vec<u8>, u32)>,
        /// Symlinks: parent directory, name, what they point at (a directory, a file or
        /// a missing name), whether the target climbs only as far as needed.
        links: Vec<(Index, &'static str, Index, bool)>,
        /// A hard link `hl` in some directory to one of the files.
        hard_link: Option<(Index, Index)>,
    }

    fn tree() -> impl Strategy<Value = Tree> {
        let dir = (vec(select(vec!["a", "b", "c d"]), 1..=3), select(vec![0o755u32, 0o750, 0o700]));
        let file = (any::<Index>(), select(vec!["f", "g", "h.txt"]), vec(any::<u8>(), 0..64), select(vec![0o644u32, 0o755]));
        let link = (any::<Index>(), select(vec!["l1", "l2"]), any::<Index>(), any::<bool>());
        (vec(dir, 0..4), vec(file, 0..5), vec(link, 0..3), proptest::option::of((any::<Index>(), any::<Index>())))
            .prop_map(|(dirs, files, links, hard_link)| Tree { dirs, files, links, hard_link })
    }

    fn join(segments: &[String]) -> String {
        segments.join("/")
    }

    /// A relative symlink target from directory `from` to `to` (both below the root),
    /// `..` only leading.
    fn relative(from: &[String], to: &[String], minimal: bool) -> String {
        let common = if minimal { from.iter().zip(to).take_while(|(a, b)| a == b).count() } else { 0 };
        let mut parts = vec![".."; from.len() - common];
        parts.extend(to[common..].iter().map(String::as_str));
        if parts.is_empty() {
            ".".into()
        } else {
            parts.join("/")
        }
    }

    fn build(tree: &Tree, src: &Path) {
        fs::create_dir(src).unwrap();
        let strings = |segments: &[&str]| segments.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let mut dirs: Vec<Vec<String>> = vec![Vec::new()];
        for (segments, _) in &tree.dirs {
            fs::create_dir_all(src.join(segments.join("/"))).unwrap();
            dirs.push(strings(segments));
        }
        let mut files: Vec<Vec<String>> = Vec::new();
        for (at, name, data, mode) in &tree.files {
            let mut path = at.get::<Vec<String>>(&dirs).clone();
            path.push(name.to_string());
            let full = src.join(join(&path));
            fs::write(&full, data).unwrap();
            fs::set_permissions(&full, fs::Permissions::from_mode(*mode)).unwrap();
            if !files.contains(&path) {
                files.push(path);
            }
        }
        let mut targets: Vec<Vec<String>> = dirs.iter().chain(&files).cloned().collect();
        targets.push(vec!["missing".into()]);
        for (at, name, to, minimal) in &tree.links {
            let dir = at.get::<Vec<String>>(&dirs);
            let full = src.join(join(dir)).join(name);
            if fs::symlink_metadata(&full).is_ok() {
                continue;
            }
            symlink(relative(dir, to.get::<Vec<String>>(&targets), *minimal), &full).unwrap();
        }
        if let (Some((at, to)), false) = (&tree.hard_link, files.is_empty()) {
            let full = src.join(join(at.get::<Vec<String>>(&dirs))).join("hl");
            if fs::symlink_metadata(&full).is_err() {
                fs::hard_link(src.join(join(to.get::<Vec<String>>(&files))), &full).unwrap();
            }
        }
        for (segments, mode) in &tree.dirs {
            fs::set_permissions(src.join(segments.join("/")), fs::Permissions::from_mode(*mode)).unwrap();
        }
    }

    #[derive(Debug, PartialEq)]
    enum Node {
        Dir {
            mode: u32,
            mtime: i64,
        },
        /// `first_name`: the smallest name sharing this file's inode.
        File {
            data: Vec<u8>,
            mode: u32,
            mtime: i64,
            first_name: String,
        },
        Symlink {
            target: OsString,
            mtime: i64,
        },
    }

    /// Everything below `root` (not `root` itself), by relative name.
    fn snapshot(root: &Path) -> BTreeMap<String, Node> {
        fn walk(dir: &Path, prefix: &str, out: &mut BTreeMap<String, (Node, u64)>) {
            for entry in fs::read_dir(dir).unwrap() {
                let entry = entry.unwrap();
                let rel = format!("{prefix}{}", entry.file_name().to_str().unwrap());
                let meta = fs::symlink_metadata(entry.path()).unwrap();
                let node = if meta.is_dir() {
                    walk(&entry.path(), &format!("{rel}/"), out);
                    Node::Dir { mode: meta.mode() & 0o7777, mtime: meta.mtime() }
                } else if meta.file_type().is_symlink() {
                    Node::Symlink { target: fs::read_link(entry.path()).unwrap().into_os_string(), mtime: meta.mtime() }
                } else {
                    let data = fs::read(entry.path()).unwrap();
                    Node::File { data, mode: meta.mode() & 0o7777, mtime: meta.mtime(), first_name: String::new() }
                };
                out.insert(rel, (node, meta.ino()));
            }
        }
        let mut raw = BTreeMap::new();
        walk(root, "", &mut raw);
        let mut first: HashMap<u64, String> = HashMap::new();
        raw.into_iter()
            .map(|(rel, (mut node, ino))| {
                if let Node::File { first_name, .. } = &mut node {
                    first_name.clone_from(first.entry(ino).or_insert_with(|| rel.clone()));
                }
                (rel, node)
            })
            .collect()
    }

    // ---- Property 4: hostile archives -----------------------------------------------

    /// One raw member: type byte, header name and link name (truncated to 100 bytes),
    /// raw mode field, declared size (`None`: the data's length) and data.
    #[derive(Debug, Clone)]
    struct RawMember {
        kind: u8,
        name: Vec<u8>,
        link: Vec<u8>,
        mode: [u8; 8],
        declared: Option<u64>,
        data: Vec<u8>,
    }

    #[derive(Debug, Clone)]
    enum Input {
        Garbage(Vec<u8>),
        Members { members: Vec<RawMember>, end: bool, cut: Option<Index>, gzip: bool },
    }

    fn name_bytes() -> impl Strategy<Value = Vec<u8>> {
        vec(select(vec![b'a', b'b', b'/', b'.', b' ', 0u8, 0xff]), 0..24)
    }

    /// A pax extended-header record (`"<len> <key>=<value>\n"`, len counting itself).
    fn pax_record() -> impl Strategy<Value = Vec<u8>> {
        let value = prop_oneof![name_bytes(), "[0-9]{0,12}".prop_map(String::into_bytes)];
        (select(vec!["path", "linkpath", "size", "mtime", "uid", "GNU.sparse.size"]), value).prop_map(|(key, value)| {
            let body = key.len() + value.len() + 3;
            let mut total = body + 1;
            while body + total.to_string().len() != total {
                total = body + total.to_string().len();
            }
            let mut record = format!("{total} {key}=").into_bytes();
            record.extend_from_slice(&value);
            record.push(b'\n');
            record
        })
    }

    fn raw_member() -> impl Strategy<Value = RawMember> {
        // Mostly plausible members, so that many archives get past the first one.
        let kind = prop_oneof![
            24 => select(b"0000055221".to_vec()),
            1 => select(b"673LKxgSDV".to_vec()),
            1 => any::<u8>(),
        ];
        let safe = (select(vec!["", "./"]), vec(select(vec!["a", "b", "c d", "."]), 1..=3))
            .prop_map(|(prefix, segments)| format!("{prefix}{}", segments.join("/")).into_bytes());
        let name = move || prop_oneof![16 => safe.clone(), 1 => raw_name().prop_map(String::into_bytes), 1 => name_bytes()];
        let mode = prop_oneof![
            4 => select(vec![*b"0000644\0", *b"0000755\0", *b"0007777\0", [0u8; 8], *b"zzzzzzz\0"]),
            1 => any::<[u8; 8]>(),
        ];
        let data = prop_oneof![vec(any::<u8>(), 0..600), name_bytes(), vec(pax_record(), 1..3).prop_map(|r| r.concat())];
        let declared = prop_oneof![8 => Just(None), 1 => (0u64..2000).prop_map(Some)];
        (kind, name(), name(), mode, declared, data).prop_map(|(kind, name, link, mode, declared, data)| RawMember { kind, name, link, mode, declared, data })
    }

    fn input() -> impl Strategy<Value = Input> {
        prop_oneof![
            1 => vec(any::<u8>(), 0..2048).prop_map(Input::Garbage),
            1 => vec(any::<u8>(), 0..512).prop_map(|rest| Input::Garbage([&[0x1f, 0x8b][..], &rest].concat())),
            8 => (vec(raw_member(), 0..8), any::<bool>(), proptest::option::weighted(0.1, any::<Index>()), proptest::bool::weighted(0.2))
                .prop_map(|(members, end, cut, gzip)| Input::Members { members, end, cut, gzip }),
        ]
    }

    fn input_bytes(input: &Input) -> Vec<u8> {
        let (members, end, cut, gzip) = match input {
            Input::Garbage(bytes) => return bytes.clone(),
            Input::Members { members, end, cut, gzip } => (members, *end, cut, *gzip),
        };
        let mut out = Vec::new();
        for m in members {
            let mut header = Header::new_gnu();
            {
                let gnu = header.as_gnu_mut().unwrap();
                let n = m.name.len().min(gnu.name.len());
                gnu.name[..n].copy_from_slice(&m.name[..n]);
                let n = m.link.len().min(gnu.linkname.len());
                gnu.linkname[..n].copy_from_slice(&m.link[..n]);
                gnu.mode = m.mode;
            }
            header.set_entry_type(EntryType::new(m.kind));
            header.set_size(m.declared.unwrap_or(m.data.len() as u64));
            header.set_cksum();
            out.extend_from_slice(header.as_bytes());
            out.extend_from_slice(&m.data);
            out.resize(out.len().next_multiple_of(512), 0);
        }
        if end {
            out.extend_from_slice(&[0; 1024]);
        }
        if let Some(cut) = cut {
            out.truncate(cut.index(out.len() + 1));
        }
        if gzip {
            let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            encoder.write_all(&out).unwrap();
            out = encoder.finish().unwrap();
        }
        out
    }

    proptest! {
        #![proptest_config(config(300))]

        /// Property 1: a regular member is accepted exactly when its name is relative and
        /// normalises (lexically) to a non-empty name that never climbs above the root;
        /// the rewritten archive holds the normalised name. A trailing `/` on an empty
        /// regular member marks a directory (pre-POSIX archives, see `pyro_protocol::archive_rules`):
        /// it is accepted when the name normalises inside the root, and dropped when it
        /// normalises to the root itself.
        #[test]
        fn regular_member_names_follow_lexical_normalisation(
            name in raw_name(),
            data in prop_oneof![Just(Vec::new()), vec(any::<u8>(), 1..16)],
        ) {
            let tmp = tempfile::tempdir().unwrap();
            let t = tmp.path().join("t.tar");
            raw_tar(&t, &[(name.as_str(), EntryType::Regular, None, data.as_slice())]);
            let is_dir = name.ends_with('/') && data.is_empty();
            let normalised = model_resolve(&[], &name).map(|c| join(&c));
            let result = prepare_source(Some(&t), tmp.path());
            match (result, normalised) {
                (Ok(prepared), Some(norm)) if is_dir => {
                    let got = members(&prepared.archive);
                    if norm.is_empty() {
                        prop_assert!(got.is_empty(), "{:?}: {:?}", name, got);
                    } else {
                        prop_assert_eq!(got, vec![(format!("{norm}/"), b'5', None, 0o644, 0, 0)]);
                    }
                }
                (Ok(prepared), Some(norm)) if !norm.is_empty() => {
                    prop_assert!(norm.split('/').all(|s| !matches!(s, "" | "." | "..")), "{:?}", norm);
                    prop_assert_eq!(members(&prepared.archive), vec![(norm, b'0', None, 0o644, 0, data.len() as u64)]);
                    prop_assert_eq!(member_data(&prepared.archive), vec![data.clone()]);
                    prop_assert_eq!((prepared.entry_count, prepared.bytes), (1, data.len() as u64));
                }
                (Err(e), norm) if !is_dir || norm.is_none() => {
                    prop_assert!(norm.is_none_or(|n| n.is_empty()), "{:?} refused: {}", name, e);
                    prop_assert_eq!(e.to_string(), format!("unsafe archive member path: {name}"));
                }
                (got, norm) => prop_assert!(false, "{:?} (dir: {}): got {:?}, model {:?}", name, is_dir, got.map(|p| members(&p.archive)), norm),
            }
        }
    }

    proptest! {
        #![proptest_config(config(400))]

        /// Property 2: a symlink member is accepted for seeding exactly when its name is
        /// safe (property 1), its target is non-empty, relative, resolves lexically from
        /// the member's parent without ever climbing above the root, and uses `..` only
        /// as leading components (`pyro_protocol::archive_rules`). The rewritten
        /// target resolves to the same place (not necessarily byte for byte: the tar
        /// crate's writer drops empty and inner `.` components of short link names).
        /// Export (`SymlinkPolicy::Any`) takes any non-empty target and recreates it
        /// verbatim.
        #[test]
        fn symlink_targets_must_resolve_inside_the_root(parent in parent_dir(), target in raw_name()) {
            let tmp = tempfile::tempdir().unwrap();
            let t = tmp.path().join("t.tar");
            let name = format!("{parent}/l");
            raw_tar(&t, &[(name.as_str(), EntryType::Symlink, Some(target.as_str()), &b""[..])]);
            let components = model_resolve(&[], &name).filter(|c| !c.is_empty());
            let expected = match &components {
                None => Err(format!("unsafe archive member path: {name}")),
                Some(_) if target.is_empty() => Err(format!("symlink {name} has an empty target")),
                Some(c) if model_resolve(&c[..c.len() - 1], &target).is_none() => {
                    Err(format!("symlink {name} escapes the workspace"))
                }
                Some(_) if !model_dotdot_only_leading(&target) => {
                    Err(format!("symlink {name} has a target with `..` after a directory name: {target}"))
                }
                Some(c) => Ok(c.clone()),
            };
            match (prepare_source(Some(&t), tmp.path()), expected) {
                (Ok(prepared), Ok(c)) => {
                    let got = members(&prepared.archive);
                    prop_assert_eq!(got.len(), 1);
                    let (got_name, kind, link, ..) = got[0].clone();
                    prop_assert_eq!((got_name, kind), (join(&c), b'2'));
                    let link = link.unwrap();
                    let parent = &c[..c.len() - 1];
                    prop_assert_eq!(model_resolve(parent, &link), model_resolve(parent, &target), "rewritten {:?}", link);
                    prop_assert!(model_dotdot_only_leading(&link), "rewritten {:?}", link);
                }
                (Err(e), Err(message)) => prop_assert_eq!(e.to_string(), message),
                (got, expected) => prop_assert!(false, "{:?} -> {:?}: got {:?}, model {:?}", name, target, got.map(|p| members(&p.archive)), expected),
            }

            let out = tmp.path().join("out");
            let exported = extract_export(File::open(&t).unwrap(), &out, EntryKind::Directory);
            match (exported, &components) {
                (Ok(summary), Some(c)) if !target.is_empty() => {
                    prop_assert_eq!(summary.entry_count, 1);
                    prop_assert_eq!(fs::read_link(out.join(join(c))).unwrap().into_os_string(), OsString::from(&target));
                }
                (Err(_), c) if c.is_none() || target.is_empty() => prop_assert!(!out.exists()),
                (got, c) => prop_assert!(false, "export {:?} -> {:?}: got {:?}, model {:?}", name, target, got, c),
            }
        }
    }

    proptest! {
        #![proptest_config(config(200))]

        /// Property 3: packing a directory and extracting the archive reproduces every
        /// file (bytes, mode, mtime), directory (mode, mtime), symlink (target, mtime)
        /// and hard link.
        #[test]
        fn directory_round_trip(tree in tree()) {
            let tmp = tempfile::tempdir().unwrap();
            let src = tmp.path().join("src");
            build(&tree, &src);
            let before = snapshot(&src);
            let prepared = prepare_source(Some(&src), tmp.path()).unwrap();
            let out = tmp.path().join("out");
            let summary = extract_export(File::open(&prepared.archive).unwrap(), &out, EntryKind::Directory).unwrap();
            prop_assert_eq!(summary, ExportSummary { entry_count: prepared.entry_count, bytes_written: prepared.bytes });
            prop_assert_eq!(prepared.entry_count, before.len() as u64);
            let distinct_bytes: u64 = before
                .iter()
                .filter_map(|(rel, node)| match node {
                    Node::File { data, first_name, .. } if first_name == rel => Some(data.len() as u64),
                    _ => None,
                })
                .sum();
            prop_assert_eq!(prepared.bytes, distinct_bytes);
            prop_assert_eq!(snapshot(&out), before);
        }
    }

    proptest! {
        #![proptest_config(config(500))]

        /// Property 4: arbitrary bytes, garbage after a gzip magic, and hand-made
        /// archives with odd names, types, modes, sizes, pax/GNU records and truncation
        /// never panic `prepare_source` or `extract_export`; what `prepare_source`
        /// accepts it accepts again unchanged, and a failed export leaves nothing behind.
        #[test]
        fn hostile_archives_never_panic(input in input()) {
            let tmp = tempfile::tempdir().unwrap();
            let t = tmp.path().join("t.tar");
            fs::write(&t, input_bytes(&input)).unwrap();
            if let Ok(prepared) = prepare_source(Some(&t), tmp.path()) {
                let again = prepare_source(Some(&prepared.archive), tmp.path());
                prop_assert!(again.is_ok(), "re-preparing failed: {:?}", again.map(|p| p.entry_count));
                let again = again.unwrap();
                prop_assert_eq!(members(&again.archive), members(&prepared.archive));
                prop_assert_eq!((again.entry_count, again.bytes), (prepared.entry_count, prepared.bytes));
                for (name, kind, link, ..) in members(&prepared.archive) {
                    let name = if kind == b'5' { name.strip_suffix('/').unwrap_or("").to_owned() } else { name };
                    prop_assert!(!name.is_empty() && name.split('/').all(|s| !matches!(s, "" | "." | "..")), "member {:?}", name);
                    if kind == b'1' {
                        let link = link.unwrap_or_default();
                        prop_assert!(link.split('/').all(|s| !matches!(s, "" | "." | "..")), "hard link {:?} -> {:?}", name, link);
                    }
                }
            }
            let out = tmp.path().join("out");
            if extract_export(File::open(&t).unwrap(), &out, EntryKind::Directory).is_err() {
                prop_assert!(!out.exists());
            }
            unlock_tree(tmp.path());
            prop_assert_eq!(extra_entries(tmp.path(), &["t.tar", "out"]), Vec::<OsString>::new());
        }
    }
}
