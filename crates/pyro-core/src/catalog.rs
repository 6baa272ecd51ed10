//! The curated catalog of guest environments. Names are stable public identifiers.

use serde::Serialize;

use crate::error::Error;

/// Version of this catalog (the pyro release it ships with).
pub const CATALOG_VERSION: &str = env!("CARGO_PKG_VERSION");
/// The only platform images are built for.
pub const PLATFORM: &str = "linux-x86_64";

/// One catalog entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EnvironmentSpec {
    /// Stable name, e.g. `debian:12`.
    pub name: &'static str,
    /// Image version.
    pub version: &'static str,
    /// One-line description.
    pub description: &'static str,
    /// Debian packages the rootfs is built with (besides the minbase set).
    pub default_packages: &'static [&'static str],
    /// Always `debian`.
    pub distribution: &'static str,
    /// Always `12`.
    pub distribution_version: &'static str,
}

impl EnvironmentSpec {
    /// Directory name of an install: `debian_12-1.0.0`.
    pub fn install_dir_name(&self) -> String {
        format!("{}-{}", self.name.replace(':', "_"), self.version)
    }

    /// OCI repository name used when publishing/pulling: `pyro-environment-debian-12`.
    pub fn oci_repository(&self) -> String {
        format!("pyro-environment-{}", self.name.replace([':', '.'], "-"))
    }
}

/// The catalog, sorted by name.
pub const CATALOG: &[EnvironmentSpec] = &[
    EnvironmentSpec {
        name: "debian:12",
        version: "1.0.0",
        description: "Debian 12 environment with Git preinstalled for common agent workflows.",
        default_packages: &["bash", "coreutils", "git"],
        distribution: "debian",
        distribution_version: "12",
    },
    EnvironmentSpec {
        name: "debian:12-base",
        version: "1.0.0",
        description: "Minimal Debian 12 environment for shell and core Unix tooling.",
        default_packages: &["bash", "coreutils"],
        distribution: "debian",
        distribution_version: "12",
    },
    EnvironmentSpec {
        name: "debian:12-build",
        version: "1.0.0",
        description: "Debian 12 environment with Git and common build tools preinstalled.",
        default_packages: &["bash", "coreutils", "git", "gcc", "make", "cmake", "python3"],
        distribution: "debian",
        distribution_version: "12",
    },
];

/// Looks an environment up by its exact name.
pub fn lookup(name: &str) -> Result<&'static EnvironmentSpec, Error> {
    CATALOG
        .iter()
        .find(|spec| spec.name == name)
        .ok_or_else(|| Error::UnknownEnvironment { name: name.to_string(), expected: CATALOG.iter().map(|s| s.name).collect::<Vec<_>>().join(", ") })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_is_sorted_and_unique() {
        let names: Vec<_> = CATALOG.iter().map(|s| s.name).collect();
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(names, sorted);
    }

    #[test]
    fn unknown_names_list_the_valid_ones() {
        let err = lookup("ubuntu:24.04").unwrap_err().to_string();
        assert_eq!(err, "unknown environment 'ubuntu:24.04'; expected one of: debian:12, debian:12-base, debian:12-build");
        assert!(lookup("Debian:12").is_err(), "names match exactly");
    }

    #[test]
    fn derived_names() {
        let spec = lookup("debian:12-base").unwrap();
        assert_eq!(spec.install_dir_name(), "debian_12-base-1.0.0");
        assert_eq!(spec.oci_repository(), "pyro-environment-debian-12-base");
    }
}
