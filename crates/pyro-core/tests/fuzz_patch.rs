//! Fuzz harness for the patch parser and applier (`pyro_core::workspace::patch`), which
//! read `git diff` text that agents (and so guests) write. Each case starts from random
//! bytes, or from a real unified diff (made with `similar`, with git headers such as
//! `new file mode`, `deleted file mode`, mode changes and C-quoted paths), and mutates it
//! at the line level (drop, duplicate, swap, splice in patch tokens, rewrite hunk numbers
//! with edge values) and the byte level; then parses it and applies every parsed file to
//! the old text, a mutated old text, or nothing. Any panic, or a case running past the
//! watchdog, fails; errors are expected and fine.
//!
//! `PYRO_FUZZ_CASES=1000000 cargo test --release -p pyro-core --test fuzz_patch -- --ignored --nocapture`

mod fuzz_support;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use fuzz_support::Rng;
use pyro_core::workspace::patch::{apply_file, parse_patch, MAX_PATCH_BYTES};

const WORDS: &[&str] = &["a", "b", "c", "", " ", "-- x", "++ y", "--- z", "+++ w", "\\ q", "crlf\r", "tab\there", "é✓", "\u{1b}[2J", "@@", "0", "aaaaaaaa"];

const TOKENS: &[&str] = &[
    "--- a/f",
    "+++ b/f",
    "--- /dev/null",
    "+++ /dev/null",
    "--- \"a/sp ace\\tq\\\"\\303\\251\"",
    "+++ \"b/\\377bad\"",
    "@@ -1,2 +1 @@",
    "@@ -0,0 +1 @@",
    "@@ -2 +2,0 @@",
    "@@ -18446744073709551615,1 +1 @@",
    "@@ -1,18446744073709551615 +1,18446744073709551615 @@",
    "@@ -4294967296 +0,4294967297 @@ ctx",
    "@@ -1,3 +1,3 @@@",
    "@@ - +@@",
    " a",
    "-a",
    "+b",
    "",
    "\\ No newline at end of file",
    "diff --git a/f b/f",
    "diff --git \"a/q\\\"x\" \"b/q\\\"x\"",
    "diff --git a/../../etc/passwd b/../../etc/passwd",
    "new file mode 100644",
    "new file mode 100755",
    "new file mode 120000",
    "deleted file mode 100644",
    "old mode 100644",
    "new mode 100755",
    "new mode 99999999999",
    "similarity index 90%",
    "rename from f",
    "rename to g",
    "Binary files a/f and b/f differ",
    "GIT binary patch",
    "index 1234567..89abcde 100644",
    "x",
];

fn random_text(rng: &mut Rng, lines: usize) -> String {
    let mut text: String = (0..lines)
        .map(|_| {
            let mut line = rng.pick(WORDS).to_string();
            if rng.chance(30) {
                line.push_str(&format!("{}", rng.below(100)));
            }
            line + "\n"
        })
        .collect();
    if rng.chance(20) {
        text.pop();
    }
    text
}

/// A real diff of two related texts, with git headers some of the time.
fn real_diff(rng: &mut Rng) -> (String, Option<String>) {
    let n = rng.below(30);
    let old = random_text(rng, n);
    let mut new_lines: Vec<String> = old.split_inclusive('\n').map(String::from).collect();
    for _ in 0..=rng.below(6) {
        let at = rng.below(new_lines.len() + 1);
        match rng.below(3) {
            0 if at < new_lines.len() => {
                new_lines.remove(at);
            }
            1 if at < new_lines.len() => new_lines[at] = random_text(rng, 1),
            _ => {
                let n = 1 + rng.below(3);
                new_lines.insert(at, random_text(rng, n))
            }
        }
    }
    let new: String = new_lines.concat();
    let (old_label, new_label, head, current) = match rng.below(5) {
        0 => ("/dev/null", "b/f", "diff --git a/f b/f\nnew file mode 100644\n", None),
        1 => ("a/f", "/dev/null", "diff --git a/f b/f\ndeleted file mode 100755\n", Some(old.clone())),
        2 => ("a/f", "b/f", "diff --git a/f b/f\nold mode 100644\nnew mode 100755\n", Some(old.clone())),
        3 => ("a/sub/\"q\"", "b/sub/\"q\"", "", Some(old.clone())),
        _ => ("a/f", "b/f", "", Some(old.clone())),
    };
    let (from, to) = match (old_label, new_label) {
        ("/dev/null", _) => ("", new.as_str()),
        (_, "/dev/null") => (old.as_str(), ""),
        _ => (old.as_str(), new.as_str()),
    };
    let body = similar::TextDiff::from_lines(from, to).unified_diff().context_radius(rng.below(4)).header(old_label, new_label).to_string();
    let mut text = format!("{head}{body}");
    if rng.chance(30) {
        // A second file in the same patch.
        text.push_str("diff --git a/g b/g\n--- a/g\n+++ b/g\n@@ -1 +1 @@\n-a\n+b\n");
    }
    (text, current)
}

fn mutate_lines(text: &str, rng: &mut Rng) -> String {
    let mut lines: Vec<String> = text.split('\n').map(String::from).collect();
    for _ in 0..=rng.below(4) {
        let at = rng.below(lines.len().max(1));
        match rng.below(6) {
            0 if !lines.is_empty() => {
                lines.remove(at);
            }
            1 if !lines.is_empty() => {
                let line = lines[at].clone();
                lines.insert(at, line);
            }
            2 if lines.len() > 1 => {
                let other = rng.below(lines.len());
                lines.swap(at, other);
            }
            3 => lines.insert(at.min(lines.len()), rng.pick(TOKENS).to_string()),
            4 if !lines.is_empty() => {
                // Rewrite the numbers of a line (hunk headers above all) with edge values.
                let edge = ["0", "1", "4294967295", "4294967296", "18446744073709551615", "18446744073709551616", "99999999999999999999999"];
                let mut out = String::new();
                let mut in_number = false;
                for c in lines[at].chars() {
                    if c.is_ascii_digit() {
                        if !in_number {
                            let number: &&str = rng.pick(&edge[..]);
                            out.push_str(number);
                        }
                        in_number = true;
                    } else {
                        in_number = false;
                        out.push(c);
                    }
                }
                lines[at] = out;
            }
            _ => {
                let token = rng.pick(TOKENS);
                if let Some(line) = lines.get_mut(at) {
                    line.insert_str(0, &token[..token.len().min(1 + rng.below(3))]);
                }
            }
        }
    }
    lines.join("\n")
}

fn mutate_bytes(text: &str, rng: &mut Rng) -> String {
    let mut bytes = text.as_bytes().to_vec();
    for _ in 0..=rng.below(4) {
        if bytes.is_empty() {
            break;
        }
        let at = rng.below(bytes.len());
        match rng.below(3) {
            0 => bytes[at] ^= 1 << rng.below(8),
            1 => bytes[at] = *rng.pick(b"\n\r\t \\\"-+@ 0123456789/\x00\xff"),
            _ => {
                let _ = bytes.remove(at);
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Cases whose text parsed, and files that applied: the harness reaches the applier.
static PARSED: AtomicU64 = AtomicU64::new(0);
static APPLIED: AtomicU64 = AtomicU64::new(0);

fn one_case(rng: &mut Rng) {
    let (text, current) = match rng.below(10) {
        0 => {
            let n = rng.below(256);
            (String::from_utf8_lossy(&rng.bytes(n)).into_owned(), None)
        }
        1 => {
            let n = rng.below(24);
            let tokens: Vec<&str> = (0..n).map(|_| *rng.pick(TOKENS)).collect();
            (tokens.join("\n"), Some(random_text(rng, 4)))
        }
        _ => {
            let (mut text, current) = real_diff(rng);
            if rng.chance(70) {
                text = mutate_lines(&text, rng);
            }
            if rng.chance(40) {
                text = mutate_bytes(&text, rng);
            }
            (text, current)
        }
    };
    let Ok(files) = parse_patch(&text) else { return };
    PARSED.fetch_add(1, Relaxed);
    for file in &files {
        assert!(file.path.starts_with('/'), "parsed paths are absolute: {:?}", file.path);
        let base = match rng.below(4) {
            0 => None,
            1 => current.as_deref().map(|c| mutate_lines(c, rng)),
            _ => current.clone(),
        };
        match apply_file(file, base.as_deref().map(str::as_bytes)) {
            Ok(Some(out)) => {
                assert!(out.len() <= MAX_PATCH_BYTES);
                APPLIED.fetch_add(1, Relaxed);
            }
            Ok(None) => {
                APPLIED.fetch_add(1, Relaxed);
            }
            Err(_) => {}
        }
    }
}

#[test]
#[ignore = "fuzz harness: scripts/fuzz.sh, or PYRO_FUZZ_CASES=N cargo test --release -p pyro-core --test fuzz_patch -- --ignored"]
fn fuzz_patch_parser() {
    fuzz_support::run("patch parser", 5_000, Duration::from_secs(5), one_case);
    eprintln!("[fuzz] patch parser: {} cases parsed, {} files applied", PARSED.load(Relaxed), APPLIED.load(Relaxed));
}
