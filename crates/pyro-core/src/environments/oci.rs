//! Publishing environments to, and pulling them from, an OCI registry.

use std::path::Path;

use serde::Serialize;

use super::Progress;
use crate::catalog::EnvironmentSpec;
use crate::error::{Error, Result};

/// A registry location: `[http://|https://]host[:port][/namespace]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registry {
    location: String,
}

/// What a pull installed.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// `oci://<registry>/<repository>@<manifest digest>`.
    pub source: String,
    /// Manifest digest (`sha256:…`).
    pub digest: String,
}

/// What a publish pushed.
#[derive(Debug, Clone, Serialize)]
pub struct Published {
    /// Full reference pushed.
    pub reference: String,
    /// Manifest digest.
    pub digest: String,
}

impl Registry {
    /// Parses a registry location.
    pub fn parse(location: &str) -> Result<Self> {
        Ok(Self { location: location.to_string() })
    }

    /// Checks that the registry answers.
    pub async fn probe(&self) -> Result<()> {
        Err(Error::NotYetAvailable(format!("OCI registry support is not built yet ({})", self.location)))
    }

    /// Downloads and verifies the image of `spec` into `staging`.
    pub async fn pull_into(&self, _spec: &EnvironmentSpec, _staging: &Path, _progress: Progress<'_>) -> Result<Pulled> {
        Err(Error::NotYetAvailable("OCI pull is not built yet".into()))
    }

    /// Pushes the install in `install_dir`.
    pub async fn publish(&self, _spec: &EnvironmentSpec, _install_dir: &Path, _progress: Progress<'_>) -> Result<Published> {
        Err(Error::NotYetAvailable("OCI publish is not built yet".into()))
    }
}
