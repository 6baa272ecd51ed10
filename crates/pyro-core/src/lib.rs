//! The pyro core: everything the CLI, the MCP server and the Python SDK share.
//!
//! The faces are thin layers over [`Pyro`], whose methods mirror the SDK method names of
//! the public contract.

#![warn(missing_docs)]

pub mod catalog;
pub mod console_log;
pub mod disk_image;
pub mod doctor;
pub mod elf;
pub mod env_vars;
pub mod environments;
pub mod error;
pub mod events;
pub mod facade;
pub mod fsutil;
pub mod guest;
pub mod guest_disk;
pub mod host_process;
pub mod network;
pub mod options;
pub mod paths;
#[cfg(test)]
mod readme;
pub mod template;
pub mod vm;
pub mod vmm;
pub mod workspace;

pub use error::{Error, Result};
pub use facade::Pyro;
