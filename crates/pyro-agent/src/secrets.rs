//! The workspace's secrets, held in the agent's memory only: never written to the guest
//! disk, never in `/run`, never on a command line. The host installs them after every
//! boot ([`install`]); a process gets a value in its environment only through an explicit
//! `secret_env` mapping ([`env_for`]); and every byte of output the agent captures passes
//! a [`Redactor`] first, so a value never leaves the guest in the clear, even when a
//! program prints it in two halves.
//!
//! Bottom floor: imports nothing from the agent.

use std::collections::BTreeMap;
use std::sync::RwLock;

/// What replaces a secret value in captured output.
pub const REDACTED: &[u8] = b"[REDACTED]";

/// Name → value of every installed secret.
static SECRETS: RwLock<BTreeMap<String, String>> = RwLock::new(BTreeMap::new());

/// Replaces the installed secrets with `secrets` (name, value).
pub fn install(secrets: impl IntoIterator<Item = (String, String)>) {
    let mut store = SECRETS.write().unwrap_or_else(|e| e.into_inner());
    *store = secrets.into_iter().filter(|(_, value)| !value.is_empty()).collect();
}

/// The environment variables a `secret_env` mapping (secret name → variable name) asks
/// for, or the first secret that is not installed.
pub fn env_for(mapping: &BTreeMap<String, String>) -> Result<Vec<(String, String)>, String> {
    let store = SECRETS.read().unwrap_or_else(|e| e.into_inner());
    mapping
        .iter()
        .map(|(secret, var)| match store.get(secret) {
            Some(value) => Ok((var.clone(), value.clone())),
            None => Err(format!("secret_env references unknown workspace secret '{secret}'")),
        })
        .collect()
}

/// A redactor over the secrets installed now.
pub fn redactor() -> Redactor {
    let store = SECRETS.read().unwrap_or_else(|e| e.into_inner());
    Redactor::new(store.values().map(|v| v.as_bytes().to_vec()).collect())
}

/// Streaming redaction of one output stream: [`Redactor::push`] returns what is safe to
/// emit now and holds back a tail that could be the start of a secret split across
/// chunks; [`Redactor::finish`] releases it at the end of the stream.
#[derive(Debug)]
pub struct Redactor {
    /// Longest first, so an overlapping shorter value never leaves part of a longer one.
    values: Vec<Vec<u8>>,
    pending: Vec<u8>,
}

impl Redactor {
    /// A redactor for `values` (empty ones are ignored).
    pub fn new(mut values: Vec<Vec<u8>>) -> Self {
        values.retain(|v| !v.is_empty());
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        values.dedup();
        Self { values, pending: Vec::new() }
    }

    /// Feeds the next chunk; returns the bytes that can be emitted now, redacted.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        if self.values.is_empty() {
            return chunk.to_vec();
        }
        let mut input = std::mem::take(&mut self.pending);
        input.extend_from_slice(chunk);
        let mut out = Vec::with_capacity(input.len());
        let mut i = 0;
        'scan: while i < input.len() {
            let rest = &input[i..];
            for value in &self.values {
                if rest.starts_with(value) {
                    out.extend_from_slice(REDACTED);
                    i += value.len();
                    continue 'scan;
                }
            }
            // A tail that may still grow into a secret waits for the next chunk.
            if self.values.iter().any(|v| v.len() > rest.len() && v.starts_with(rest)) {
                self.pending = rest.to_vec();
                return out;
            }
            out.push(input[i]);
            i += 1;
        }
        out
    }

    /// Ends the stream: the held-back tail was no secret after all.
    pub fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn streamed(values: &[&str], chunks: &[&str]) -> String {
        let mut r = Redactor::new(values.iter().map(|v| v.as_bytes().to_vec()).collect());
        let mut out = Vec::new();
        for chunk in chunks {
            out.extend(r.push(chunk.as_bytes()));
        }
        out.extend(r.finish());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn values_are_replaced_whole_or_split() {
        assert_eq!(streamed(&["hunter2"], &["pw=hunter2\n"]), "pw=[REDACTED]\n");
        assert_eq!(streamed(&["hunter2"], &["pw=hun", "ter2 ok"]), "pw=[REDACTED] ok");
        assert_eq!(streamed(&["hunter2"], &["h", "u", "n", "t", "e", "r", "2"]), "[REDACTED]");
        assert_eq!(streamed(&["hunter2"], &["hunt", "er"]), "hunter", "a prefix at the end is released");
        assert_eq!(streamed(&["abc", "abcdef"], &["xabcdefy abc"]), "x[REDACTED]y [REDACTED]");
        assert_eq!(streamed(&[], &["plain"]), "plain");
        assert_eq!(streamed(&["aa"], &["aaa"]), "[REDACTED]a");
    }

    #[test]
    fn every_split_of_a_value_is_redacted() {
        let secret = "s3cr3t-VALUE";
        let text = format!("before {secret} middle {secret}{secret} end");
        for cut in 0..text.len() {
            let (a, b) = text.split_at(cut);
            let out = streamed(&[secret], &[a, b]);
            assert!(!out.contains(secret) && !out.contains("s3cr3t"), "cut {cut}: {out}");
            assert_eq!(out, "before [REDACTED] middle [REDACTED][REDACTED] end");
        }
    }

    #[test]
    fn env_needs_installed_secrets() {
        install([("API_TOKEN".to_string(), "tok".to_string())]);
        let mapping: BTreeMap<_, _> = [("API_TOKEN".to_string(), "TOKEN".to_string())].into();
        assert_eq!(env_for(&mapping).unwrap(), vec![("TOKEN".to_string(), "tok".to_string())]);
        let missing: BTreeMap<_, _> = [("OTHER".to_string(), "X".to_string())].into();
        assert_eq!(env_for(&missing).unwrap_err(), "secret_env references unknown workspace secret 'OTHER'");
        assert_eq!(redactor().push(b"a tok b"), b"a [REDACTED] b");
    }
}
