//! One module per command group; each handler returns the process exit code.

pub mod env;
pub mod pending;
