//! Capabilities: the operation families an agent announces in its [`crate::Hello`].
//!
//! The host checks the capability of every request before it sends it, so an agent
//! older than the host keeps working for the operations it has, and the others fail
//! with a typed "unavailable" error instead of an undecodable request. The names are
//! part of the frozen wire surface (see `VERSIONING.md`): a name is never renamed or
//! reused; an operation whose shape changes incompatibly gets a new name.

/// One operation family. [`Capability::name`] is the stable wire name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Capability {
    /// [`crate::Request::Exec`]: run a command, stream its output.
    Exec,
    /// [`crate::Request::ReadFile`]: read a regular file.
    FsRead,
    /// [`crate::Request::WriteFile`]: atomically replace a regular file.
    FsWrite,
    /// [`crate::Request::List`]: describe a path and its children.
    FsList,
    /// [`crate::Request::TarImport`]: extract an uploaded tar archive.
    TarImport,
    /// [`crate::Request::TarExport`]: stream a tar archive of a path.
    TarExport,
    /// [`crate::Request::Shutdown`]: flush filesystems and power off.
    Shutdown,
    /// [`crate::Request::InstallSecrets`], and `secret_env` on the requests that start
    /// processes: secrets held in agent memory and redacted from captured output.
    Secrets,
    /// The `shell_*` requests: persistent PTY shells held by the agent for the VM's life.
    Shell,
    /// [`crate::Request::ServiceStart`], [`crate::Request::ServiceList`],
    /// [`crate::Request::ServiceLogs`], [`crate::Request::ServiceStop`]: named
    /// long-running processes with readiness probes and bounded logs.
    Service,
    /// [`crate::Request::PortConnect`]: a TCP connection to guest loopback carried over
    /// the channel (published ports).
    PortForward,
}

impl Capability {
    /// Every capability this build of the protocol knows, in wire-name order of addition.
    pub const ALL: [Capability; 11] = [
        Capability::Exec,
        Capability::FsRead,
        Capability::FsWrite,
        Capability::FsList,
        Capability::TarImport,
        Capability::TarExport,
        Capability::Shutdown,
        Capability::Secrets,
        Capability::Shell,
        Capability::Service,
        Capability::PortForward,
    ];

    /// Capabilities of protocol version 1, which predates the `capabilities` field:
    /// a Hello without that field has exactly these.
    pub const PROTOCOL_1: [Capability; 7] =
        [Capability::Exec, Capability::FsRead, Capability::FsWrite, Capability::FsList, Capability::TarImport, Capability::TarExport, Capability::Shutdown];

    /// The stable wire name.
    pub fn name(self) -> &'static str {
        match self {
            Capability::Exec => "exec",
            Capability::FsRead => "fs_read",
            Capability::FsWrite => "fs_write",
            Capability::FsList => "fs_list",
            Capability::TarImport => "tar_import",
            Capability::TarExport => "tar_export",
            Capability::Shutdown => "shutdown",
            Capability::Secrets => "secrets",
            Capability::Shell => "shell",
            Capability::Service => "service",
            Capability::PortForward => "port_forward",
        }
    }

    /// The capability named `name`; `None` for a name this build does not know (e.g.
    /// one announced by a newer agent).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }
}

impl std::fmt::Display for Capability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_roundtrip_and_are_unique() {
        let mut names: Vec<&str> = Capability::ALL.iter().map(|c| c.name()).collect();
        for c in Capability::ALL {
            assert_eq!(Capability::from_name(c.name()), Some(c));
        }
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Capability::ALL.len());
        assert_eq!(Capability::from_name("teleport"), None);
    }
}
