//! Fake installs of `debian:12-base` in a private cache, for the tests that need an
//! installed environment without building one.

use std::path::{Path, PathBuf};

use pyro_core::environments::{InstallManifest, MANIFEST_FILE};

/// Where `debian:12-base` 1.0.0 is installed under the cache's `environments` dir.
pub fn install_dir(environments: &Path) -> PathBuf {
    environments.join("debian_12-base-1.0.0")
}

/// Records the artifacts now in `dir` as an install of `debian:12-base` 1.0.0 from
/// `source` and stores its manifest there.
pub fn store_manifest(dir: &Path, source: &str, installed_at: f64, agent_sha256: String) -> InstallManifest {
    let manifest = InstallManifest {
        catalog_version: pyro_core::catalog::CATALOG_VERSION.into(),
        name: "debian:12-base".into(),
        version: "1.0.0".into(),
        source: source.into(),
        source_digest: None,
        installed_at,
        agent_sha256,
        artifacts: InstallManifest::record_artifacts(dir).unwrap(),
    };
    manifest.store(&dir.join(MANIFEST_FILE)).unwrap();
    manifest
}
