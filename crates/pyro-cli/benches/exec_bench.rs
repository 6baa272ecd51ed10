//! Exec and file-write round trips through the `pyro` CLI in a started workspace, as an
//! agent drives them: one `pyro` process per call (not a test).
//!
//! `cargo bench -p pyro-cli --bench exec_bench` (needs `scripts/setup.sh` first).
//! `PYRO_BENCH_RUNS` calls of each kind (default 30), interleaved, after one warm-up exec:
//! `exec -- true` (run without a shell), `exec -- 'true; true'` (under `sh -c`),
//! `exec -- 'sh -lc true'` (a login shell, what every exec used to start) and
//! `file write`.
//!
//! Before and after, paired: with `PYRO_BENCH_BEFORE_CACHE_DIR` naming a cache whose
//! `debian:12-base` embeds another agent (say, pulled with `PYRO_AGENT_BIN` pointing at
//! an older build), a second workspace is created from it and every call alternates
//! between the two, so both columns see the same machine load.

use pyro_test::bench::median;
use std::process::Command;
use std::time::{Duration, Instant};

const ENV: &str = "debian:12-base";

/// `pyro --json ARGS` (with `PYRO_CACHE_DIR=cache` when given), which must succeed; its
/// JSON output and how long it took.
fn pyro(args: &[&str], cache: Option<&str>) -> (serde_json::Value, Duration) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pyro"));
    command.arg("--json").args(args);
    if let Some(cache) = cache {
        command.env("PYRO_CACHE_DIR", cache);
    }
    let start = Instant::now();
    let out = command.output().unwrap();
    let took = start.elapsed();
    assert!(out.status.success(), "pyro {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    (serde_json::from_slice(&out.stdout).unwrap(), took)
}

/// A started workspace (from `cache` when given), warmed up by one exec; its id.
fn workspace(cache: Option<&str>) -> String {
    let (ws, _) = pyro(&["workspace", "create", ENV], cache);
    let id = ws["workspace_id"].as_str().unwrap().to_string();
    pyro(&["workspace", "exec", &id, "--", "true"], None);
    id
}

fn main() {
    let state = tempfile::tempdir().unwrap();
    std::env::set_var("PYRO_STATE_DIR", state.path());
    let runs: usize = std::env::var("PYRO_BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(30);
    let before_cache = std::env::var("PYRO_BENCH_BEFORE_CACHE_DIR").ok();
    let mut ids = vec![workspace(None)];
    ids.extend(before_cache.as_deref().map(|cache| workspace(Some(cache))));

    // (label, verbs before the id, arguments after it)
    let cases: [(&str, &[&str], &[&str]); 4] = [
        ("exec -- true (no shell)", &["exec"], &["--", "true"]),
        ("exec -- 'true; true' (sh -c)", &["exec"], &["--", "true; true"]),
        ("exec -- 'sh -lc true' (login shell)", &["exec"], &["--", "sh -lc true"]),
        ("file write (11 bytes)", &["file", "write"], &["rt.txt", "--text", "round trip\n"]),
    ];
    // samples[case][workspace]
    let mut samples = vec![vec![Vec::new(); ids.len()]; cases.len()];
    for _ in 0..runs {
        for ((_, verbs, rest), per_ws) in cases.iter().zip(&mut samples) {
            for (id, times) in ids.iter().zip(per_ws.iter_mut()) {
                let args: Vec<&str> = ["workspace"].iter().chain(verbs.iter()).chain([&id.as_str()]).chain(rest.iter()).copied().collect();
                let (out, took) = pyro(&args, None);
                if verbs[0] == "exec" {
                    assert_eq!(out["exit_code"], 0, "{out}");
                }
                times.push(took);
            }
        }
    }
    let header = if ids.len() > 1 { "this agent    before" } else { "this agent" };
    println!("{:<38} {header}   (medians of {runs} calls through the CLI)", "");
    for ((label, _, _), per_ws) in cases.iter().zip(samples) {
        let medians: Vec<String> = per_ws.into_iter().map(|times| format!("{:>9.1?}", median(times))).collect();
        println!("{label:<38} {}", medians.join(" "));
    }
    for id in &ids {
        pyro(&["workspace", "delete", id], None);
    }
}
