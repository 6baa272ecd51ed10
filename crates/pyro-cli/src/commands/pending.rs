//! Commands whose capability arrives in a later release: they say so and fail.

use pyro_core::Error;

/// The error for a command that is parsed but not available in this build.
pub fn not_yet(command: &str, capability: &str) -> Error {
    Error::Unavailable(format!("`pyro {command}` is not available in this build yet: it arrives with {capability}"))
}
