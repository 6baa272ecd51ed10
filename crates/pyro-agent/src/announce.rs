//! What the agent announces in its Hello (protocol version, capabilities) and how it
//! answers a request outside them.
//!
//! The agent serves every [`Capability`] it knows. For tests only, a host-compat agent
//! (`--listen-unix`, never PID 1 or the guest server) can pretend to be an older agent:
//! `PYRO_AGENT_TEST_ANNOUNCE=<version>[:<cap>,<cap>…]` makes it announce `<version>`,
//! and either no `capabilities` field (no `:`, as protocol 1 agents did) or exactly the
//! listed ones; requests outside them are answered [`Response::Unsupported`].

use std::sync::OnceLock;

use pyro_protocol::{decode_request, Capability, DecodeError, Hello, Request, Response, PROTOCOL_VERSION};

/// Environment variable of the test-only announce override (see the module docs).
pub const TEST_ANNOUNCE_ENV: &str = "PYRO_AGENT_TEST_ANNOUNCE";

/// What this agent announces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announce {
    /// Protocol version in the Hello.
    pub protocol_version: u32,
    /// Capability names in the Hello; `None` omits the field (a protocol 1 Hello).
    pub capabilities: Option<Vec<String>>,
}

static OVERRIDE: OnceLock<Announce> = OnceLock::new();

impl Announce {
    /// The real announcement: this build's version and every capability.
    fn current() -> Self {
        Self { protocol_version: PROTOCOL_VERSION, capabilities: Some(Capability::ALL.iter().map(|c| c.name().to_string()).collect()) }
    }

    /// Parses `<version>[:<cap>,<cap>…]`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (version, caps) = match text.split_once(':') {
            Some((version, caps)) => (version, Some(caps)),
            None => (text, None),
        };
        let protocol_version = version.trim().parse().map_err(|_| format!("{TEST_ANNOUNCE_ENV}: bad protocol version {version:?}"))?;
        let capabilities = caps.map(|caps| caps.split(',').map(str::trim).filter(|c| !c.is_empty()).map(str::to_string).collect());
        Ok(Self { protocol_version, capabilities })
    }

    fn hello(&self) -> Hello {
        Hello {
            protocol_version: self.protocol_version,
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            kernel_release: String::new(),
            uptime_ms: None,
            capabilities: self.capabilities.clone(),
        }
    }
}

/// Honours [`TEST_ANNOUNCE_ENV`]; call only in host-compat mode. Returns the override
/// (for a log line), or an error for a malformed value.
pub fn init_test_override() -> Result<Option<Announce>, String> {
    let Ok(text) = std::env::var(TEST_ANNOUNCE_ENV) else { return Ok(None) };
    let announce = Announce::parse(&text)?;
    let _ = OVERRIDE.set(announce.clone());
    Ok(Some(announce))
}

fn active() -> &'static Announce {
    static CURRENT: OnceLock<Announce> = OnceLock::new();
    OVERRIDE.get().unwrap_or_else(|| CURRENT.get_or_init(Announce::current))
}

/// The Hello's version and capabilities filled into `hello` (built by the session).
pub fn apply(mut hello: Hello) -> Hello {
    let announced = active().hello();
    hello.protocol_version = announced.protocol_version;
    hello.capabilities = announced.capabilities;
    hello
}

/// Decodes a request payload. An unknown `op` (a newer host) or a request outside the
/// announced capabilities becomes a [`Response::Unsupported`]; anything else that does
/// not decode an [`Response::Error`].
pub fn decode(payload: &[u8]) -> Result<Request, Response> {
    match decode_request(payload) {
        Ok(request) => match request.capability() {
            Some(capability) if !active().hello().supports(capability) => Err(Response::Unsupported {
                op: request.op().to_string(),
                message: format!("this agent does not serve {} (capability `{capability}`)", request.op()),
            }),
            _ => Ok(request),
        },
        Err(DecodeError::UnknownTag { tag, .. }) => {
            let op: String = tag.chars().take(64).collect();
            Err(Response::Unsupported {
                message: format!("unknown request {op:?}: pyro-agent {} speaks protocol {PROTOCOL_VERSION}, the host is newer", env!("CARGO_PKG_VERSION")),
                op,
            })
        }
        Err(DecodeError::Malformed(e)) => Err(Response::Error { message: format!("malformed request: {e}") }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_override() {
        assert_eq!(Announce::parse("1").unwrap(), Announce { protocol_version: 1, capabilities: None });
        assert_eq!(Announce::parse("1:exec, fs_read").unwrap(), Announce { protocol_version: 1, capabilities: Some(vec!["exec".into(), "fs_read".into()]) });
        assert_eq!(Announce::parse("2:").unwrap().capabilities, Some(vec![]));
        assert!(Announce::parse("x:exec").is_err());
    }

    #[test]
    fn unknown_and_malformed_requests_are_answered() {
        let unknown = decode(br#"{"op":"format_disk"}"#).unwrap_err();
        assert!(matches!(unknown, Response::Unsupported { ref op, .. } if op == "format_disk"), "{unknown:?}");
        assert!(matches!(decode(b"not json"), Err(Response::Error { .. })));
        assert_eq!(decode(br#"{"op":"ping"}"#), Ok(Request::Ping));
        // Without an override every capability is served.
        assert!(decode(br#"{"op":"tar_export","path":"/"}"#).is_ok());
    }
}
