//! Speed figures for real guests (not a test: no assertions on time).
//!
//! `cargo bench -p pyro-cli --bench vm_bench` (needs `scripts/setup.sh` first). Reports
//! medians of: `pyro --version`, `pyro run debian:12-base -- true` wall time, boot to the
//! agent's hello, and exec round trip in a running VM.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pyro_core::guest::ExecRequest;
use pyro_core::vm::CreateVmOptions;
use pyro_core::Pyro;
use pyro_test::bench::median;

const ENV: &str = "debian:12-base";

fn time_command(args: &[&str], runs: usize, state: &std::path::Path) -> Duration {
    median(
        (0..runs)
            .map(|_| {
                let start = Instant::now();
                let status = Command::new(env!("CARGO_BIN_EXE_pyro"))
                    .args(args)
                    .env("PYRO_STATE_DIR", state)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .unwrap();
                assert!(status.success(), "pyro {args:?} failed");
                start.elapsed()
            })
            .collect(),
    )
}

fn main() {
    let state = tempfile::tempdir().unwrap();
    std::env::set_var("PYRO_STATE_DIR", state.path());
    let runs: usize = std::env::var("PYRO_BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(7);

    println!("pyro --version            median {:>8.1?} ({runs} runs)", time_command(&["--version"], runs, state.path()));
    println!("pyro run {ENV} -- true median {:>8.1?} ({runs} runs)", time_command(&["run", ENV, "--", "true"], runs, state.path()));

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let pyro = Pyro::from_env().unwrap();
        let quiet = pyro_core::events::ignore;
        let mut boots = Vec::new();
        for _ in 0..runs {
            let vm = pyro.create_vm(&CreateVmOptions::new(ENV), &quiet).await.unwrap();
            let started = pyro.start_vm(&vm.vm_id).await.unwrap();
            boots.push(Duration::from_millis(started.boot_ms.expect("boot time recorded")));
            pyro.delete_vm(&vm.vm_id).await.unwrap();
        }
        println!("boot to agent hello       median {:>8.1?} ({runs} boots)", median(boots));

        let vm = pyro.create_vm(&CreateVmOptions::new(ENV), &quiet).await.unwrap();
        pyro.start_vm(&vm.vm_id).await.unwrap();
        let guest = pyro.guest(&vm.vm_id).await.unwrap();
        let request = ExecRequest {
            command: "true".into(),
            env: Default::default(),
            secret_env: Default::default(),
            cwd: None,
            timeout_ms: 30_000,
            max_output_bytes: 1 << 20,
        };
        let mut trips = Vec::new();
        for _ in 0..runs * 5 {
            let start = Instant::now();
            let out = guest.exec(request.clone()).await.unwrap();
            assert_eq!(out.result.exit_code, 0);
            trips.push(start.elapsed());
        }
        println!("exec round trip (true)    median {:>8.1?} ({} execs)", median(trips), runs * 5);
        drop(guest);
        pyro.delete_vm(&vm.vm_id).await.unwrap();
    });
}
