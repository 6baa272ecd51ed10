//! `environment.json`: the record an install writes last, so its presence means the
//! install completed.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::digest::ArtifactRecord;
use crate::error::{Error, IoContext, Result};

/// File name of the install record inside an install directory.
pub const MANIFEST_FILE: &str = "environment.json";
/// Kernel artifact file name.
pub const KERNEL_FILE: &str = "vmlinux";
/// Root filesystem artifact file name.
pub const ROOTFS_FILE: &str = "rootfs.ext4";
/// The artifacts every install holds.
pub const ARTIFACT_FILES: [&str; 2] = [KERNEL_FILE, ROOTFS_FILE];

/// The install record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstallManifest {
    /// Catalog version that installed it.
    pub catalog_version: String,
    /// Environment name.
    pub name: String,
    /// Environment version.
    pub version: String,
    /// `local-build` or `oci://<registry>/<repository>@<digest>`.
    pub source: String,
    /// Digest of the OCI manifest pulled, when pulled from a registry.
    pub source_digest: Option<String>,
    /// Unix time of the install, seconds.
    pub installed_at: f64,
    /// sha256 of the pyro-agent baked into the rootfs.
    pub agent_sha256: String,
    /// Per-artifact digests, keyed by file name.
    pub artifacts: BTreeMap<String, ArtifactRecord>,
}

impl InstallManifest {
    /// Reads and parses a manifest.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).ctx("read", path)?;
        serde_json::from_str(&text).map_err(|e| Error::Corrupt(format!("{} is not a valid install record: {e}", path.display())))
    }

    /// Writes the manifest atomically (temp file + rename).
    pub fn store(&self, path: &Path) -> Result<()> {
        let json = serde_json::to_vec_pretty(self).expect("manifest serialises");
        crate::fsutil::write_atomic(path, &json)
    }

    /// Records digests of every artifact present in `dir`.
    pub fn record_artifacts(dir: &Path) -> Result<BTreeMap<String, ArtifactRecord>> {
        ARTIFACT_FILES.iter().map(|name| Ok((name.to_string(), ArtifactRecord::of(&dir.join(name))?))).collect()
    }
}
