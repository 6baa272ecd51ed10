//! Test support: reads the README's machine-checked tables, so tests can pin that the
//! documentation lists exactly what the code defines (environment variables, error kinds).

/// The first-column keys (`| `key` | …`) of the README table between the markers
/// `<!-- NAME -->` and `<!-- /NAME -->`, in order.
pub(crate) fn table_keys(name: &str) -> Vec<&'static str> {
    let readme = include_str!("../../../README.md");
    let open = format!("<!-- {name} -->");
    let close = format!("<!-- /{name} -->");
    let start = readme.find(&open).unwrap_or_else(|| panic!("README has no {open} marker"));
    let end = readme.find(&close).unwrap_or_else(|| panic!("README has no {close} marker"));
    readme[start..end].lines().filter_map(|line| line.strip_prefix("| `")).filter_map(|rest| rest.split('`').next()).collect()
}
