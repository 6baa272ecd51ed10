//! Option values every face passes to the core, as types that own their syntax and
//! their validation messages: the CLI parses flags into them, the MCP server and the SDK
//! deserialise arguments into them, and none of the three repeats a rule.
//!
//! This module sits on the bottom floor: it depends only on the error type.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// A workspace's guest networking, fixed at create time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum NetworkPolicy {
    /// No NIC at all.
    #[default]
    #[serde(rename = "off")]
    Off,
    /// Outbound connections to public destinations.
    #[serde(rename = "egress")]
    Egress,
    /// Egress, plus services may publish guest ports on the host's loopback.
    #[serde(rename = "egress+published-ports")]
    EgressPublishedPorts,
}

impl NetworkPolicy {
    /// The spelling users type and JSON carries.
    pub fn name(self) -> &'static str {
        match self {
            NetworkPolicy::Off => "off",
            NetworkPolicy::Egress => "egress",
            NetworkPolicy::EgressPublishedPorts => "egress+published-ports",
        }
    }
}

impl fmt::Display for NetworkPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for NetworkPolicy {
    type Err = Error;

    /// Case-insensitive, surrounding whitespace ignored.
    fn from_str(text: &str) -> Result<Self, Error> {
        match text.trim().to_ascii_lowercase().as_str() {
            "off" => Ok(NetworkPolicy::Off),
            "egress" => Ok(NetworkPolicy::Egress),
            "egress+published-ports" => Ok(NetworkPolicy::EgressPublishedPorts),
            _ => Err(Error::InvalidArgument("network_policy must be one of: off, egress, egress+published-ports".into())),
        }
    }
}

/// One published port: `GUEST` or `HOST:GUEST` on the command line, `{"guest_port",
/// "host_port"?}` in JSON. Without a host port an ephemeral one is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PortMapping {
    /// Port on the host's 127.0.0.1 (1025–65535), or `None` for an ephemeral one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port: Option<u16>,
    /// Port inside the guest (1–65535).
    pub guest_port: u16,
}

impl PortMapping {
    /// Checks both ports' ranges.
    pub fn validate(self) -> Result<Self, Error> {
        let invalid = |m: &str| Err(Error::InvalidArgument(m.into()));
        if self.guest_port == 0 {
            return invalid("published guest_port must be between 1 and 65535");
        }
        if self.host_port.is_some_and(|port| port < 1025) {
            return invalid("published host_port must be between 1025 and 65535");
        }
        Ok(self)
    }

    /// Validates every mapping and refuses repeated ones.
    pub fn validate_all(mappings: &[PortMapping]) -> Result<(), Error> {
        let mut seen = std::collections::HashSet::new();
        for mapping in mappings {
            mapping.validate()?;
            if !seen.insert(mapping) {
                return Err(Error::InvalidArgument("published ports must not repeat the same host/guest port mapping".into()));
            }
        }
        Ok(())
    }
}

impl FromStr for PortMapping {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Error> {
        let text = text.trim();
        if text.is_empty() {
            return Err(Error::InvalidArgument("published ports must not be empty".into()));
        }
        let syntax = || Error::InvalidArgument("published ports must use GUEST_PORT or HOST_PORT:GUEST_PORT".into());
        let port = |p: &str| p.trim().parse::<u32>().map_err(|_| syntax());
        let (host, guest) = match text.split_once(':') {
            Some((host, guest)) => (Some(port(host)?), port(guest)?),
            None => (None, port(text)?),
        };
        let guest_port = u16::try_from(guest).map_err(|_| Error::InvalidArgument("published guest_port must be between 1 and 65535".into()))?;
        let host_port =
            host.map(|h| u16::try_from(h).map_err(|_| Error::InvalidArgument("published host_port must be between 1025 and 65535".into()))).transpose()?;
        PortMapping { host_port, guest_port }.validate()
    }
}

impl fmt::Display for PortMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.host_port {
            Some(host) => write!(f, "{host}:{}", self.guest_port),
            None => write!(f, "{}", self.guest_port),
        }
    }
}

/// When a service counts as ready. Probes run in the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ReadinessProbe {
    /// Ready when this path exists (relative paths are under `/workspace`).
    File {
        /// The path.
        path: String,
    },
    /// Ready when `HOST:PORT` accepts a TCP connection.
    Tcp {
        /// `host:port`.
        address: String,
    },
    /// Ready when a GET of this URL ends in status 200–399.
    Http {
        /// The URL.
        url: String,
    },
    /// Ready when this shell command exits 0.
    Command {
        /// The command line.
        command: String,
    },
}

impl ReadinessProbe {
    /// The probe chosen by the CLI's `--ready-*` flags (at most one may be given).
    pub fn from_flags(file: Option<String>, tcp: Option<String>, http: Option<String>, command: Option<String>) -> Result<Option<Self>, Error> {
        let given = [file.is_some(), tcp.is_some(), http.is_some(), command.is_some()].iter().filter(|g| **g).count();
        if given > 1 {
            return Err(Error::InvalidArgument("choose at most one of --ready-file, --ready-tcp, --ready-http, or --ready-command".into()));
        }
        let probe = match (file, tcp, http, command) {
            (Some(path), ..) => ReadinessProbe::File { path },
            (_, Some(address), ..) => ReadinessProbe::Tcp { address },
            (_, _, Some(url), _) => ReadinessProbe::Http { url },
            (.., Some(command)) => ReadinessProbe::Command { command },
            _ => return Ok(None),
        };
        probe.validate().map(Some)
    }

    /// Checks the probe's argument and normalises a TCP address to `host:port`.
    pub fn validate(self) -> Result<Self, Error> {
        let invalid = |m: &str| Err(Error::InvalidArgument(m.into()));
        match self {
            ReadinessProbe::File { path } if path.trim().is_empty() => invalid("readiness.path is required for file readiness"),
            ReadinessProbe::Http { url } if url.trim().is_empty() => invalid("readiness.url is required for http readiness"),
            ReadinessProbe::Command { command } if command.trim().is_empty() => invalid("readiness.command is required for command readiness"),
            ReadinessProbe::Tcp { address } => {
                let Some((host, port)) = address.trim().rsplit_once(':') else {
                    return invalid("readiness.address must be in HOST:PORT format");
                };
                if host.trim().is_empty() {
                    return invalid("readiness.address host must not be empty");
                }
                let port: u32 = port.trim().parse().map_err(|_| Error::InvalidArgument("readiness.address port must be an integer".into()))?;
                if !(1..=65535).contains(&port) {
                    return invalid("readiness.address port must be between 1 and 65535");
                }
                Ok(ReadinessProbe::Tcp { address: format!("{}:{port}", host.trim()) })
            }
            probe => Ok(probe),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(e: Error) -> String {
        e.to_string()
    }

    #[test]
    fn network_policy_round_trips_and_refuses_others() {
        for policy in [NetworkPolicy::Off, NetworkPolicy::Egress, NetworkPolicy::EgressPublishedPorts] {
            assert_eq!(policy.name().parse::<NetworkPolicy>().unwrap(), policy);
            assert_eq!(serde_json::to_value(policy).unwrap(), policy.name());
        }
        assert_eq!(" EGRESS ".parse::<NetworkPolicy>().unwrap(), NetworkPolicy::Egress);
        assert_eq!(message("on".parse::<NetworkPolicy>().unwrap_err()), "network_policy must be one of: off, egress, egress+published-ports");
    }

    #[test]
    fn port_mappings_parse_with_the_contract_messages() {
        assert_eq!("8080".parse::<PortMapping>().unwrap(), PortMapping { host_port: None, guest_port: 8080 });
        assert_eq!("18080:8080".parse::<PortMapping>().unwrap(), PortMapping { host_port: Some(18080), guest_port: 8080 });
        assert_eq!("18080:8080".parse::<PortMapping>().unwrap().to_string(), "18080:8080");
        let cases = [
            ("", "published ports must not be empty"),
            ("a:b", "published ports must use GUEST_PORT or HOST_PORT:GUEST_PORT"),
            ("1:2:3", "published ports must use GUEST_PORT or HOST_PORT:GUEST_PORT"),
            ("0", "published guest_port must be between 1 and 65535"),
            ("70000", "published guest_port must be between 1 and 65535"),
            ("80:8080", "published host_port must be between 1025 and 65535"),
            ("99999:8080", "published host_port must be between 1025 and 65535"),
        ];
        for (text, expected) in cases {
            assert_eq!(message(text.parse::<PortMapping>().unwrap_err()), expected, "{text:?}");
        }
        let twice = ["18080:8080".parse().unwrap(), "18080:8080".parse().unwrap()];
        assert_eq!(message(PortMapping::validate_all(&twice).unwrap_err()), "published ports must not repeat the same host/guest port mapping");
    }

    #[test]
    fn readiness_flags_resolve_to_one_probe() {
        let s = |v: &str| Some(v.to_string());
        assert_eq!(ReadinessProbe::from_flags(None, None, None, None).unwrap(), None);
        assert_eq!(
            ReadinessProbe::from_flags(None, s(" localhost : 8080 "), None, None).unwrap(),
            Some(ReadinessProbe::Tcp { address: "localhost:8080".into() })
        );
        assert_eq!(
            message(ReadinessProbe::from_flags(s("/x"), s("h:1"), None, None).unwrap_err()),
            "choose at most one of --ready-file, --ready-tcp, --ready-http, or --ready-command"
        );
        let bad = [
            (ReadinessProbe::Tcp { address: "nohost".into() }, "readiness.address must be in HOST:PORT format"),
            (ReadinessProbe::Tcp { address: ":80".into() }, "readiness.address host must not be empty"),
            (ReadinessProbe::Tcp { address: "h:x".into() }, "readiness.address port must be an integer"),
            (ReadinessProbe::Tcp { address: "h:0".into() }, "readiness.address port must be between 1 and 65535"),
            (ReadinessProbe::File { path: " ".into() }, "readiness.path is required for file readiness"),
            (ReadinessProbe::Http { url: "".into() }, "readiness.url is required for http readiness"),
            (ReadinessProbe::Command { command: "".into() }, "readiness.command is required for command readiness"),
        ];
        for (probe, expected) in bad {
            assert_eq!(message(probe.validate().unwrap_err()), expected);
        }
        let json = serde_json::to_value(ReadinessProbe::Http { url: "http://x".into() }).unwrap();
        assert_eq!(json, serde_json::json!({"type": "http", "url": "http://x"}));
    }
}
