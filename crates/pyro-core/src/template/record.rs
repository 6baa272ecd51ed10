//! A template's record, `template.json`: what it was built from and what its saved
//! state must be.

use serde::{Deserialize, Serialize};

use super::key::TemplateKey;

/// A template's record (`template.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemplateMeta {
    /// What the template was built from.
    pub key: TemplateKey,
    /// Digest of [`STATE_FILE`].
    pub state_sha256: String,
    /// Size of [`STATE_FILE`].
    pub state_bytes: u64,
    /// Unix seconds.
    pub created_at: f64,
    /// How long the build took.
    pub build_ms: u64,
}
