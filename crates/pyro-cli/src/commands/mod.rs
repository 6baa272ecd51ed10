//! One module per command group; each handler returns the process exit code.

pub mod demo;
pub mod doctor;
pub mod env;
pub mod run;
pub mod service;
pub mod shell;
pub mod workspace;
