//! x
pub mod error;
pub mod policy;
