//! [`Pyro`]: the one facade every face (CLI, MCP, SDK) calls.

use crate::environments::{EnvironmentInfo, EnvironmentStore, Progress, PruneReport, PullOptions, PullReport};
use crate::error::Result;
use crate::paths::Dirs;

/// The pyro core facade. Method names mirror the SDK's.
#[derive(Debug, Clone)]
pub struct Pyro {
    dirs: Dirs,
    environments: EnvironmentStore,
}

impl Pyro {
    /// A facade using the directories from the environment (see [`Dirs::from_env`]).
    pub fn from_env() -> Result<Self> {
        Ok(Self::with_dirs(Dirs::from_env()?))
    }

    /// A facade over explicit directories.
    pub fn with_dirs(dirs: Dirs) -> Self {
        Self { environments: EnvironmentStore::new(dirs.clone()), dirs }
    }

    /// The directories in use.
    pub fn dirs(&self) -> &Dirs {
        &self.dirs
    }

    /// All catalog environments with their install state.
    pub fn list_environments(&self) -> Vec<EnvironmentInfo> {
        self.environments.list()
    }

    /// Installs an environment unless a valid install exists.
    pub async fn pull_environment(&self, name: &str, options: &PullOptions, progress: Progress<'_>) -> Result<PullReport> {
        self.environments.pull(name, options, progress).await
    }

    /// Describes one environment, re-hashing its artifacts when `verify` is set.
    pub fn inspect_environment(&self, name: &str, verify: bool) -> Result<EnvironmentInfo> {
        self.environments.inspect(name, verify)
    }

    /// Removes interrupted, outdated and unusable installs.
    pub fn prune_environments(&self) -> Result<PruneReport> {
        self.environments.prune()
    }

    /// Publishes an installed environment to an OCI registry (maintainers).
    pub async fn publish_environment(&self, name: &str, location: &str, progress: Progress<'_>) -> Result<crate::environments::oci::Published> {
        self.environments.publish(name, location, progress).await
    }
}
