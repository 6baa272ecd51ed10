//! Test oracles shared by the property tests of this crate and of the host's archive
//! code (enable the `testing` feature from a dev-dependency). Built on `std::path`, not
//! on the code under test.

use std::path::{Component, Path};

/// Lexical resolution of the archive member name `name` from the directory `base` (a list
/// of components): `None` when `name` is absolute or when one of its `..` would climb
/// above the root, even if later components come back down.
pub fn model_resolve(base: &[String], name: &str) -> Option<Vec<String>> {
    let mut stack = base.to_vec();
    for component in Path::new(name).components() {
        match component {
            Component::Prefix(_) | Component::RootDir => return None,
            Component::CurDir => {}
            Component::ParentDir => {
                stack.pop()?;
            }
            Component::Normal(s) => stack.push(s.to_str()?.to_owned()),
        }
    }
    Some(stack)
}
