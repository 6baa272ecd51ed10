//! x
pub mod dns;
pub mod error;
pub mod link;
pub mod policy;
