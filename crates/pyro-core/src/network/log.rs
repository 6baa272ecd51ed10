//! The per-VM network log: counts of allowed, denied and dropped flows, and the last
//! [`MAX_ENTRIES`] refusals (time, destination, the name it was looked up by, the rule),
//! so an agent can see why a connection failed. The supervisor is its only writer; it
//! is a small JSON file in the VM directory, rewritten atomically, bounded whatever the
//! guest does.

use std::collections::VecDeque;
use std::path::Path;
use std::time::Duration;

use pyro_net::NetEvent;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::fsutil::write_atomic;

/// File name in the VM directory.
pub const NETWORK_LOG_FILE: &str = "network-log.json";
/// Refusals kept (the oldest go first).
pub const MAX_ENTRIES: usize = 256;
/// The log is written at most this often while events keep coming.
const WRITE_EVERY: Duration = Duration::from_millis(200);

/// One refused or dropped flow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogEntry {
    /// Unix seconds.
    pub time: f64,
    /// `denied` (policy) or `dropped` (a limit was hit).
    pub kind: String,
    /// `tcp` or `udp`, for a denied flow.
    #[serde(default)]
    pub protocol: Option<String>,
    /// Destination address, for a denied flow.
    #[serde(default)]
    pub destination: Option<String>,
    /// Destination port, for a denied flow.
    #[serde(default)]
    pub port: Option<u16>,
    /// The DNS name the guest looked the destination up by, if any.
    #[serde(default)]
    pub name: Option<String>,
    /// The rule that refused it (`private`, `loopback`, `host_address`, `gateway`,
    /// `not_allowed`, ...), or the bound that made packets drop (`tcp_flows`, ...).
    pub rule: String,
    /// For `dropped`: how many since the previous such entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
}

/// The log's content.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NetworkLog {
    /// Flows the policy let through.
    pub allowed_flows: u64,
    /// Flows the policy refused.
    pub denied_flows: u64,
    /// Packets or queries dropped because a bound was reached.
    pub dropped_events: u64,
    /// The most recent refusals, oldest first.
    pub entries: VecDeque<LogEntry>,
}

impl NetworkLog {
    /// The log of the VM in `vm_dir` (empty when there is none or it does not parse).
    pub fn load(vm_dir: &Path) -> Self {
        std::fs::read(vm_dir.join(NETWORK_LOG_FILE)).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
    }

    fn store(&self, vm_dir: &Path) {
        let json = serde_json::to_vec_pretty(self).expect("the log serialises");
        if let Err(e) = write_atomic(&vm_dir.join(NETWORK_LOG_FILE), &json) {
            tracing::warn!("cannot write the network log: {e}");
        }
    }

    /// Counts `event` and keeps it if it is a refusal.
    pub fn record(&mut self, event: NetEvent) {
        let entry = match event {
            NetEvent::Allowed { .. } => {
                self.allowed_flows += 1;
                return;
            }
            NetEvent::Denied { unix_time, protocol, destination, port, name, rule } => {
                self.denied_flows += 1;
                LogEntry {
                    time: unix_time,
                    kind: "denied".into(),
                    protocol: Some(protocol.name().to_string()),
                    destination: Some(destination.to_string()),
                    port: Some(port),
                    name,
                    rule: rule.name().into(),
                    count: None,
                }
            }
            NetEvent::Dropped { unix_time, reason, count } => {
                self.dropped_events += count;
                LogEntry {
                    time: unix_time,
                    kind: "dropped".into(),
                    protocol: None,
                    destination: None,
                    port: None,
                    name: None,
                    rule: reason,
                    count: Some(count),
                }
            }
        };
        if self.entries.len() == MAX_ENTRIES {
            self.entries.pop_front();
        }
        self.entries.push_back(entry);
    }
}

/// Folds the gateway's events into the log of `vm_dir` (continuing what an earlier start
/// wrote) until the gateway is gone; writes are batched.
pub async fn record_events(vm_dir: std::path::PathBuf, mut events: mpsc::Receiver<NetEvent>) {
    let mut log = NetworkLog::load(&vm_dir);
    while let Some(event) = events.recv().await {
        log.record(event);
        while let Ok(event) = events.try_recv() {
            log.record(event);
        }
        log.store(&vm_dir);
        tokio::time::sleep(WRITE_EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_kept_bounded_and_counted() {
        let mut log = NetworkLog::default();
        for i in 0..(MAX_ENTRIES + 10) {
            log.record(NetEvent::Denied {
                unix_time: i as f64,
                protocol: pyro_net::Protocol::Tcp,
                destination: "10.1.2.3".parse().unwrap(),
                port: 80,
                name: Some("intranet.example".into()),
                rule: pyro_net::DenyRule::Private,
            });
        }
        log.record(NetEvent::Allowed { unix_time: 0.0, protocol: pyro_net::Protocol::Tcp, destination: "203.0.113.9".parse().unwrap(), port: 80, name: None });
        assert_eq!((log.allowed_flows, log.denied_flows, log.entries.len()), (1, (MAX_ENTRIES + 10) as u64, MAX_ENTRIES));
        assert_eq!(log.entries.front().unwrap().time, 10.0);
        assert_eq!(log.entries.back().unwrap().rule, "private");
        let dir = tempfile::tempdir().unwrap();
        log.store(dir.path());
        assert_eq!(NetworkLog::load(dir.path()), log);
    }
}
