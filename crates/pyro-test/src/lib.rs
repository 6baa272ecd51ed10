//! Test helpers shared by the integration tests of the pyro crates, in one dev-only crate
//! instead of a copy per test binary (the uv-test pattern).
//!
//! - [`Sandbox`]: a private state dir (images from the user's cache) for tests that boot
//!   real guests through the `pyro` binary, with the guests' log tails in every failure
//!   and every workspace deleted on drop.
//! - [`Home`]: a private cache *and* state dir, for CLI tests that need no images.
//! - Host probes: [`vmm_pid`], [`processes_with`], [`process_gone`], [`wait_for`].
//! - Prerequisites: [`Required`] (skip, or fail where a setting insists), [`mkfs_ext4`]
//!   and [`make_ext4`].
//! - [`bench`]: medians and timed CLI calls for the benchmarks.
//! - [`netns::TestNet`]: two network namespaces joined by a veth pair, for guest
//!   networking tests and benches.
//!
//! This crate does not depend on pyro-core, so pyro-core's own tests can use it. It does
//! not know where the `pyro` binary is (`CARGO_BIN_EXE_pyro` exists only while compiling
//! pyro-cli's tests): [`Sandbox::new`] and [`Home::new`] take its path.

pub mod bench;
mod home;
mod host;
pub mod netns;
mod sandbox;

pub use home::{describe, Home};
pub use host::{make_ext4, mkfs_ext4, process_gone, processes_with, tail, vmm_pid, wait_for, Required};
pub use sandbox::{with_json, Sandbox};
