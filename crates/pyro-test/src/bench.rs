//! Helpers of the speed benchmarks (`cargo bench`): medians and timed CLI calls. Kept
//! here so every bench binary shares one copy.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The median of `samples` (the upper one of an even count).
pub fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// Runs `bin ARGS` on the state dir `state` with `env` added, failing loudly unless it
/// succeeds; returns its output and wall time.
pub fn timed_cli(bin: &Path, args: &[&str], state: &Path, env: &[(&str, &str)]) -> (Output, Duration) {
    let mut cmd = Command::new(bin);
    cmd.args(args).env("PYRO_STATE_DIR", state).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let start = Instant::now();
    let out = cmd.output().expect("pyro runs");
    let elapsed = start.elapsed();
    assert!(out.status.success(), "pyro {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    (out, elapsed)
}
