//! Speed figures for workspace services in a real guest (not a test).
//!
//! `cargo bench -p pyro-cli --bench service_bench` (needs `scripts/setup.sh` first).
//! Reports service start-to-ready with a file readiness probe, and logs (tail and all)
//! of a service that printed 10 MB.

use std::time::Instant;

use pyro_core::options::ReadinessProbe;
use pyro_core::vm::CreateVmOptions;
use pyro_core::workspace::services::StartServiceOptions;
use pyro_core::workspace::CreateWorkspaceOptions;
use pyro_core::Pyro;
use pyro_test::bench::median;

const ENV: &str = "debian:12";

fn main() {
    let state = tempfile::tempdir().unwrap();
    std::env::set_var("PYRO_STATE_DIR", state.path());
    let runs: usize = std::env::var("PYRO_BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let pyro = Pyro::from_env().unwrap();
        let options = CreateWorkspaceOptions {
            vm: CreateVmOptions::new(ENV),
            ttl_seconds: None,
            network_policy: pyro_core::options::NetworkPolicy::Off,
            allow_hosts: Vec::new(),
            seed_path: None,
            name: None,
            labels: Default::default(),
            secrets: Vec::new(),
        };
        let id = pyro.create_workspace(&options, &pyro_core::events::ignore).await.unwrap().workspace_id;
        let start = |name: String, command: String, probe: ReadinessProbe, interval_ms: u64| {
            let (pyro, id) = (&pyro, &id);
            async move {
                let begin = Instant::now();
                let options = StartServiceOptions {
                    readiness: Some(probe),
                    ready_timeout_seconds: 120,
                    ready_interval_ms: interval_ms,
                    ..StartServiceOptions::new(command)
                };
                let record = pyro.start_service(id, &name, &options).await.unwrap();
                assert_eq!(record.state, "running", "{record:?}");
                begin.elapsed()
            }
        };

        let mut ready = Vec::new();
        for i in 0..runs {
            let probe = ReadinessProbe::File { path: format!("ready-{i}") };
            ready.push(start(format!("file-{i}"), format!("touch ready-{i}; exec sleep 600"), probe, 50).await);
            pyro.stop_service(&id, &format!("file-{i}")).await.unwrap();
        }
        println!("service start → ready (file probe, 50 ms interval)   median {:>9.1?} ({runs} runs)", median(ready));

        let big = ReadinessProbe::File { path: "big-done".into() };
        let t = start("big".into(), "head -c 10485760 /dev/zero | tr '\\0' x | fold -w 99; touch big-done; exec sleep 600".into(), big, 100).await;
        println!("service printing 10 MB → ready                        {t:>16.1?}");
        let begin = Instant::now();
        let tail = pyro.logs_service(&id, "big", 200, false).await.unwrap();
        println!(
            "logs --tail-lines 200 of a 10 MB service              {:>16.1?} ({} bytes, truncated={})",
            begin.elapsed(),
            tail.stdout.len(),
            tail.truncated
        );
        let begin = Instant::now();
        let all = pyro.logs_service(&id, "big", 200, true).await.unwrap();
        println!(
            "logs --all of a 10 MB service                         {:>16.1?} ({} bytes kept, truncated={})",
            begin.elapsed(),
            all.stdout.len(),
            all.truncated
        );
        pyro.delete_workspace(&id).await.unwrap();
    });
}
