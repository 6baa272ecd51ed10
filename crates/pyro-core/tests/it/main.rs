//! pyro-core's integration tests as one binary: one link instead of one per file (it
//! counts on two cores). The helpers they share live in the dev-only `pyro-test` crate;
//! run one module with `cargo test -p pyro-core --test it -- MODULE::`.
//!
//! `hostile_tar` installs a counting global allocator; it counts per thread, so the other
//! modules' tests (each on its own thread) do not disturb its figures. The fuzz harnesses
//! with a hang watchdog that aborts the process, `fuzz_ext4` and `fuzz_patch`, stay
//! binaries of their own (`tests/fuzz_*.rs`, run by scripts/fuzz.sh).

mod agent_host_compat;
mod diff_patch_roundtrip;
mod firecracker_launch;
mod guest_hostile;
mod hostile_tar;
mod image_offline;
