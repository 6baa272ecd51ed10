//! What the gateway reports to its owner: allowed, denied and dropped traffic.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::policy::DenyRule;

/// A transport protocol of a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    /// `tcp` or `udp`.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// One event of the gateway, serialized with an `event` tag in snake_case.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum NetEvent {
    /// A new flow passed the policy and is being opened from the host.
    Allowed {
        /// Seconds since the Unix epoch.
        unix_time: f64,
        /// The flow's protocol.
        protocol: Protocol,
        /// The destination address.
        destination: IpAddr,
        /// The destination port.
        port: u16,
        /// A DNS name known to resolve to the destination.
        name: Option<String>,
    },
    /// A new flow was refused by the policy.
    Denied {
        /// Seconds since the Unix epoch.
        unix_time: f64,
        /// The flow's protocol.
        protocol: Protocol,
        /// The destination address.
        destination: IpAddr,
        /// The destination port.
        port: u16,
        /// A DNS name known to resolve to the destination.
        name: Option<String>,
        /// The rule that refused it.
        rule: DenyRule,
    },
    /// Traffic was dropped because a limit was reached (at most one event per reason a second).
    Dropped {
        /// Seconds since the Unix epoch.
        unix_time: f64,
        /// Which limit, e.g. `tcp_flows`, `udp_flows`, `dns_in_flight`.
        reason: String,
        /// How many packets were dropped for this reason since the last such event.
        count: u64,
    },
}

/// Seconds since the Unix epoch, now.
pub fn unix_time() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// Counts drops per reason and lets through at most one event per reason each interval.
#[derive(Debug)]
pub(crate) struct DropLimiter {
    interval: Duration,
    reasons: HashMap<&'static str, (Option<Instant>, u64)>,
}

impl DropLimiter {
    pub(crate) fn new(interval: Duration) -> DropLimiter {
        DropLimiter { interval, reasons: HashMap::new() }
    }

    /// Counts one drop; returns the event to emit, if one is due.
    pub(crate) fn drop_one(&mut self, reason: &'static str, now: Instant) -> Option<NetEvent> {
        let (last, count) = self.reasons.entry(reason).or_insert((None, 0));
        *count += 1;
        if last.is_some_and(|at| now.duration_since(at) < self.interval) {
            return None;
        }
        *last = Some(now);
        let event = NetEvent::Dropped { unix_time: unix_time(), reason: reason.to_string(), count: *count };
        *count = 0;
        Some(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_are_rate_limited_per_reason() {
        let mut limiter = DropLimiter::new(Duration::from_secs(1));
        let t0 = Instant::now();
        assert!(matches!(limiter.drop_one("a", t0), Some(NetEvent::Dropped { count: 1, .. })));
        assert!(limiter.drop_one("a", t0).is_none());
        assert!(limiter.drop_one("a", t0 + Duration::from_millis(500)).is_none());
        assert!(limiter.drop_one("b", t0).is_some());
        match limiter.drop_one("a", t0 + Duration::from_secs(1)) {
            Some(NetEvent::Dropped { count, reason, .. }) => assert_eq!((count, reason.as_str()), (3, "a")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn events_serialize_in_snake_case() {
        let e = NetEvent::Denied {
            unix_time: 1.5,
            protocol: Protocol::Tcp,
            destination: "169.254.169.254".parse().unwrap(),
            port: 80,
            name: None,
            rule: DenyRule::LinkLocal,
        };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"event":"denied","unix_time":1.5,"protocol":"tcp","destination":"169.254.169.254","port":80,"name":null,"rule":"link_local"}"#
        );
    }
}
