//! The crate's one error type.

use std::io;

/// Everything that can go wrong in the gateway, its link or its configuration.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// An `--allow-host` style entry that is neither a host name nor a CIDR.
    #[error("allow-host entry '{0}' is neither a host name nor a CIDR")]
    BadAllowRule(String),
    /// The peer of a frame link announced a frame larger than the link accepts.
    #[error("the link peer announced a {len}-byte frame, more than the {max}-byte limit")]
    FrameTooLarge {
        /// The announced length.
        len: usize,
        /// The largest length accepted.
        max: usize,
    },
    /// Reading from or writing to the frame link failed.
    #[error("network link I/O failed: {0}")]
    Link(#[source] io::Error),
}

impl NetError {
    /// A stable, machine-readable name for the kind of error.
    pub fn kind(&self) -> &'static str {
        match self {
            NetError::BadAllowRule(_) => "bad_allow_rule",
            NetError::FrameTooLarge { .. } => "frame_too_large",
            NetError::Link(_) => "link_io",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_stable() {
        assert_eq!(NetError::BadAllowRule("x".into()).kind(), "bad_allow_rule");
        assert_eq!(NetError::FrameTooLarge { len: 2, max: 1 }.kind(), "frame_too_large");
        assert_eq!(NetError::Link(io::Error::other("x")).kind(), "link_io");
    }
}
