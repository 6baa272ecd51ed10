//! Property: what `workspace diff` emits, `workspace patch apply` re-applies exactly
//! (contents, executable bits, added and deleted files, missing final newlines).

use std::collections::BTreeMap;

use proptest::prelude::*;
use pyro_core::workspace::patch::{apply_all, parse_patch};
use pyro_core::workspace::tree::{diff, Node, Tree};

fn text() -> impl Strategy<Value = Vec<u8>> {
    let line = prop_oneof![Just("a"), Just("b"), Just("-- x"), Just("+++ y"), Just(""), Just("\\ q"), Just("ccc dd")];
    (proptest::collection::vec(line, 0..8), any::<bool>()).prop_map(|(lines, final_newline)| {
        let mut s = lines.join("\n");
        if final_newline && !lines.is_empty() {
            s.push('\n');
        }
        s.into_bytes()
    })
}

fn file() -> impl Strategy<Value = Node> {
    (text(), prop_oneof![Just(0o644u32), Just(0o755u32)]).prop_map(|(bytes, mode)| Node::File { bytes, mode })
}

fn tree() -> impl Strategy<Value = BTreeMap<String, Node>> {
    proptest::collection::btree_map(
        prop_oneof![Just("a.txt"), Just("b.sh"), Just("dir/c.txt"), Just("dir/sub/d"), Just("e f.txt")].prop_map(String::from),
        file(),
        0..5,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn diff_output_reapplies_exactly(baseline in tree(), current in tree()) {
        let result = diff(&Tree(baseline.clone()), &Tree(current.clone()));
        prop_assume!(result.changed);
        let patches = parse_patch(&result.patch).unwrap_or_else(|e| panic!("diff output must parse: {e}\n{}", result.patch));
        let applied = apply_all(&patches, |path| {
            let rel = path.trim_start_matches("/workspace/");
            Ok(match baseline.get(rel) { Some(Node::File { bytes, .. }) => Some(bytes.clone()), _ => None })
        }).unwrap_or_else(|e| panic!("diff output must apply: {e}\n{}", result.patch));
        let mut rebuilt: BTreeMap<String, (Vec<u8>, u32)> = baseline.iter().filter_map(|(k, n)| match n { Node::File { bytes, mode } => Some((k.clone(), (bytes.clone(), *mode))), _ => None }).collect();
        for file in applied {
            let rel = file.path.trim_start_matches("/workspace/").to_string();
            match file.content {
                Some(bytes) => {
                    let mode = file.new_mode.or(rebuilt.get(&rel).map(|(_, m)| *m)).unwrap_or(0o644);
                    rebuilt.insert(rel, (bytes, mode));
                }
                None => { rebuilt.remove(&rel); }
            }
        }
        let expected: BTreeMap<String, (Vec<u8>, u32)> = current.iter().filter_map(|(k, n)| match n { Node::File { bytes, mode } => Some((k.clone(), (bytes.clone(), *mode))), _ => None }).collect();
        prop_assert_eq!(rebuilt, expected, "patch:\n{}", result.patch);
    }
}
