//! Workspace secrets on the host. Declared at create time, validated with the contract's
//! messages, kept in `secrets/<NAME>.secret` (0600, in a 0700 directory) beside the
//! record — never in `workspace.json`, whose record holds only names and source kinds.
//! After every boot the values are installed in the guest agent's memory
//! (`WorkspaceManager::install_secrets`); a command sees one only through an explicit
//! `secret_env` mapping ([`resolve_env`]), and the agent redacts every value from the
//! output it captures.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use super::record::SecretInfo;
use crate::error::{Error, Result};
use crate::fsutil::write_atomic;
use crate::guest::SecretValue;

/// The pattern secret names (and the variables they map to) must match.
pub const SECRET_NAME_PATTERN: &str = "^[A-Za-z_][A-Za-z0-9_]{0,63}$";
/// Largest secret value in bytes.
pub const MAX_SECRET_BYTES: usize = 64 * 1024;
const SECRETS_DIR: &str = "secrets";

/// A secret as the caller declares it: exactly one of `value` and `file_path`
/// (SDK `{"name", "value"}` or `{"name", "file_path"}`).
#[derive(Clone, Default, Deserialize)]
pub struct SecretInput {
    /// Name (`^[A-Za-z_][A-Za-z0-9_]{0,63}$`).
    pub name: String,
    /// The value itself.
    #[serde(default)]
    pub value: Option<String>,
    /// A host file holding the value, read once at create time.
    #[serde(default)]
    pub file_path: Option<PathBuf>,
}

impl std::fmt::Debug for SecretInput {
    /// Never prints the value.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretInput").field("name", &self.name).field("file_path", &self.file_path).finish_non_exhaustive()
    }
}

/// Whether `name` matches [`SECRET_NAME_PATTERN`].
pub fn is_valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_') && name.len() <= 64 && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Validates the declared secrets and reads their values (sorted by name).
pub(crate) fn resolve(inputs: &[SecretInput]) -> Result<Vec<(SecretInfo, String)>> {
    let invalid = |m: String| Err(Error::InvalidArgument(m));
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for input in inputs {
        let name = input.name.trim().to_string();
        if name.is_empty() {
            return invalid("secret name must not be empty".into());
        }
        if !is_valid_name(&name) {
            return invalid(format!("secret name must match {SECRET_NAME_PATTERN}"));
        }
        if !seen.insert(name.clone()) {
            return invalid(format!("duplicate secret name: {name}"));
        }
        let (value, source_kind) = match (&input.value, &input.file_path) {
            (Some(value), None) => (value.clone(), "literal"),
            (None, Some(path)) => (read_secret_file(&name, path)?, "file"),
            _ => return invalid(format!("secret '{name}' must provide exactly one of 'value' or 'file_path'")),
        };
        if value.is_empty() {
            return invalid(format!("secret '{name}' must not be empty"));
        }
        if value.len() > MAX_SECRET_BYTES {
            return invalid(format!("secret '{name}' must be at most {MAX_SECRET_BYTES} bytes"));
        }
        out.push((SecretInfo { name, source_kind: source_kind.into() }, value));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

fn read_secret_file(name: &str, path: &Path) -> Result<String> {
    if path.as_os_str().is_empty() {
        return Err(Error::InvalidArgument(format!("secret '{name}' file_path must not be empty")));
    }
    if !path.is_file() {
        return Err(Error::not_found_because("path", path.display().to_string(), format!("secret file for '{name}' does not exist: {}", path.display())));
    }
    let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    if len > MAX_SECRET_BYTES as u64 {
        return Err(Error::InvalidArgument(format!("secret '{name}' must be at most {MAX_SECRET_BYTES} bytes")));
    }
    let bytes = std::fs::read(path).map_err(|_| Error::InvalidArgument(format!("failed to read secret file for '{name}': {}", path.display())))?;
    String::from_utf8(bytes).map_err(|_| Error::InvalidArgument(format!("secret '{name}' must be valid UTF-8 text")))
}

/// Writes the values into `dir/secrets/` (0700 directory, 0600 files).
pub(crate) fn store(dir: &Path, secrets: &[(SecretInfo, String)]) -> Result<()> {
    if secrets.is_empty() {
        return Ok(());
    }
    let root = dir.join(SECRETS_DIR);
    std::fs::DirBuilder::new().mode(0o700).create(&root).map_err(|e| Error::io("create", &root, e))?;
    for (info, value) in secrets {
        write_atomic(&root.join(format!("{}.secret", info.name)), value.as_bytes())?;
    }
    Ok(())
}

/// Reads back the values of `infos` from `dir/secrets/`.
pub(crate) fn load(dir: &Path, infos: &[SecretInfo]) -> Result<Vec<SecretValue>> {
    infos
        .iter()
        .map(|info| {
            let path = dir.join(SECRETS_DIR).join(format!("{}.secret", info.name));
            let bytes = std::fs::read(&path).map_err(|e| Error::io("read", &path, e))?;
            let value = String::from_utf8(bytes).map_err(|_| Error::Corrupt(format!("secret file {} is not UTF-8", path.display())))?;
            Ok(SecretValue { name: info.name.clone(), value })
        })
        .collect()
}

/// `text` with every secret value of the workspace in `dir` replaced by `[REDACTED]`
/// (for what the host itself records, such as a command line typed with a value in it).
pub(crate) fn redact(dir: &Path, infos: &[SecretInfo], text: &str) -> String {
    let mut values: Vec<String> = load(dir, infos).map(|v| v.into_iter().map(|s| s.value).collect()).unwrap_or_default();
    values.sort_by_key(|v| std::cmp::Reverse(v.len()));
    values.iter().filter(|v| !v.is_empty()).fold(text.to_string(), |text, value| text.replace(value.as_str(), "[REDACTED]"))
}

/// Checks a `secret_env` mapping (secret name → environment variable) against the
/// workspace's secrets.
pub fn resolve_env(infos: &[SecretInfo], mapping: &BTreeMap<String, String>) -> Result<BTreeMap<String, String>> {
    for (secret, var) in mapping {
        if !is_valid_name(secret) || !is_valid_name(var) {
            return Err(Error::InvalidArgument(format!("secret_env names must match {SECRET_NAME_PATTERN}")));
        }
        if !infos.iter().any(|i| &i.name == secret) {
            return Err(Error::InvalidArgument(format!("secret_env references unknown workspace secret '{secret}'")));
        }
    }
    Ok(mapping.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn literal(name: &str, value: &str) -> SecretInput {
        SecretInput { name: name.into(), value: Some(value.into()), file_path: None }
    }

    fn message(inputs: &[SecretInput]) -> String {
        resolve(inputs).unwrap_err().to_string()
    }

    #[test]
    fn declared_secrets_are_validated_with_the_contract_messages() {
        assert_eq!(message(&[literal(" ", "v")]), "secret name must not be empty");
        assert_eq!(message(&[literal("1X", "v")]), "secret name must match ^[A-Za-z_][A-Za-z0-9_]{0,63}$");
        assert_eq!(message(&[literal("A", "v"), literal("A", "w")]), "duplicate secret name: A");
        assert_eq!(message(&[literal("A", "")]), "secret 'A' must not be empty");
        assert_eq!(message(&[literal("A", &"x".repeat(65537))]), "secret 'A' must be at most 65536 bytes");
        assert_eq!(message(&[SecretInput { name: "A".into(), ..Default::default() }]), "secret 'A' must provide exactly one of 'value' or 'file_path'");
        let missing = SecretInput { name: "A".into(), value: None, file_path: Some("/nonexistent/x".into()) };
        assert_eq!(message(&[missing]), "secret file for 'A' does not exist: /nonexistent/x");
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad");
        std::fs::write(&bad, b"\xff\xfe").unwrap();
        assert_eq!(message(&[SecretInput { name: "A".into(), value: None, file_path: Some(bad) }]), "secret 'A' must be valid UTF-8 text");
    }

    #[test]
    fn values_are_stored_privately_and_only_names_are_public() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "from-file").unwrap();
        let resolved = resolve(&[literal("B_TOKEN", "lit"), SecretInput { name: "A".into(), value: None, file_path: Some(file) }]).unwrap();
        let infos: Vec<_> = resolved.iter().map(|(i, _)| i.clone()).collect();
        assert_eq!(
            infos,
            vec![SecretInfo { name: "A".into(), source_kind: "file".into() }, SecretInfo { name: "B_TOKEN".into(), source_kind: "literal".into() }]
        );
        store(dir.path(), &resolved).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.path().join("secrets")), 0o700);
        assert_eq!(mode(&dir.path().join("secrets/A.secret")), 0o600);
        let values = load(dir.path(), &infos).unwrap();
        assert_eq!(values[0].value, "from-file");
        assert!(!format!("{:?}", literal("X", "hidden-value")).contains("hidden-value"));
    }

    #[test]
    fn secret_env_must_name_known_secrets() {
        let infos = vec![SecretInfo { name: "API".into(), source_kind: "literal".into() }];
        let ok: BTreeMap<_, _> = [("API".to_string(), "TOKEN".to_string())].into();
        assert_eq!(resolve_env(&infos, &ok).unwrap(), ok);
        let unknown: BTreeMap<_, _> = [("NOPE".to_string(), "NOPE".to_string())].into();
        assert_eq!(resolve_env(&infos, &unknown).unwrap_err().to_string(), "secret_env references unknown workspace secret 'NOPE'");
    }
}
