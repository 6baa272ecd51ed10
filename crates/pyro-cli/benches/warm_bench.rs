//! Warm against cold starts, paired in one run (not a test: no assertions on time).
//!
//! `cargo bench -p pyro-cli --bench warm_bench` (needs `scripts/setup.sh` first). Reports
//! medians of: `pyro run debian:12-base -- true` restored from a warm template against
//! `PYRO_WARM_START=0`; `workspace create` plus its first exec, warm against cold; ten
//! warm runs at once; and the exec and file-write round trips of a warm workspace, all
//! through the CLI. Runs alternate warm and cold so both see the same machine load.

use std::path::Path;
use std::time::{Duration, Instant};

use pyro_test::bench::{median, timed_cli};

const ENV: &str = "debian:12-base";
const PYRO: &str = env!("CARGO_BIN_EXE_pyro");
const COLD: &[(&str, &str)] = &[("PYRO_WARM_START", "0")];

fn pyro(args: &[&str], state: &Path, env: &[(&str, &str)]) -> (std::process::Output, Duration) {
    timed_cli(Path::new(PYRO), args, state, env)
}

fn ratio(cold: Duration, warm: Duration) -> f64 {
    cold.as_secs_f64() / warm.as_secs_f64().max(1e-9)
}

/// `workspace create` and its first `exec -- true`, wall time together; the workspace
/// is deleted afterwards (not timed).
fn create_and_first_exec(state: &Path, env: &[(&str, &str)]) -> Duration {
    let start = Instant::now();
    let (out, _) = pyro(&["workspace", "create", ENV, "--json"], state, env);
    let created: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = created["workspace_id"].as_str().unwrap().to_string();
    pyro(&["workspace", "exec", &id, "--", "true"], state, env);
    let elapsed = start.elapsed();
    pyro(&["workspace", "delete", &id], state, &[]);
    elapsed
}

fn main() {
    let state = tempfile::tempdir().unwrap();
    let state = state.path();
    let runs: usize = std::env::var("PYRO_BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(7);
    // Build the templates first (once per machine; not timed).
    pyro(&["run", ENV, "--", "true"], state, &[]);
    create_and_first_exec(state, &[]);

    let (mut warm, mut cold) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        warm.push(pyro(&["run", ENV, "--", "true"], state, &[]).1);
        cold.push(pyro(&["run", ENV, "--", "true"], state, COLD).1);
    }
    let (w, c) = (median(warm), median(cold));
    println!("run {ENV} -- true       warm {w:>8.1?}  cold {c:>8.1?}  ({:.1}x, {runs} pairs)", ratio(c, w));

    let (mut warm, mut cold) = (Vec::new(), Vec::new());
    for _ in 0..runs.div_ceil(2) {
        warm.push(create_and_first_exec(state, &[]));
        cold.push(create_and_first_exec(state, COLD));
    }
    let (w, c) = (median(warm), median(cold));
    println!("workspace create + exec   warm {w:>8.1?}  cold {c:>8.1?}  ({:.1}x, {} pairs)", ratio(c, w), runs.div_ceil(2));

    let start = Instant::now();
    let each: Vec<Duration> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..10).map(|_| scope.spawn(|| pyro(&["run", ENV, "--", "true"], state, &[]).1)).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    println!("10 warm runs at once      all done {:>8.1?}  median each {:>8.1?}", start.elapsed(), median(each));

    let (out, _) = pyro(&["workspace", "create", ENV, "--json"], state, &[]);
    let created: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = created["workspace_id"].as_str().unwrap().to_string();
    let execs: Vec<Duration> = (0..runs * 3).map(|_| pyro(&["workspace", "exec", &id, "--", "true"], state, &[]).1).collect();
    let writes: Vec<Duration> =
        (0..runs * 3).map(|i| pyro(&["workspace", "file", "write", &id, "bench.txt", "--text", &format!("{i}")], state, &[]).1).collect();
    println!("workspace exec true       median {:>8.1?} ({} execs)", median(execs), runs * 3);
    println!("workspace file write      median {:>8.1?} ({} writes)", median(writes), runs * 3);
    pyro(&["workspace", "delete", &id], state, &[]);
}
