//! pyro-cli's integration tests as one binary: one link instead of one per file (it
//! counts on two cores). The helpers they share live in the dev-only `pyro-test` crate;
//! run one module with `cargo test -p pyro-cli --test it -- MODULE::`.
//!
//! The modules that boot real guests are `#[ignore]`d in a plain `cargo test` and run by
//! `scripts/test.sh` (`--include-ignored`).

mod closed_stdout;
mod demo_ollama;
mod doctor_issues;
mod env_store;
mod error_kinds;
mod fast_exec;
mod fixtures;
mod guest_run;
mod host_hardening;
mod mcp;
mod network;
mod oci_roundtrip;
mod sdk;
mod secrets;
mod services;
mod shells;
mod warm_start;
mod workspace_stories;

/// The `pyro` binary under test, for [`pyro_test::Sandbox::new`] and [`pyro_test::Home::new`].
const PYRO: &str = env!("CARGO_BIN_EXE_pyro");
