//! Speed figures for PTY shells in a real guest (not a test).
//!
//! `cargo bench -p pyro-cli --bench shell_bench` (needs `scripts/setup.sh` first). Reports
//! the shell write → idle read round trip (through the core and through two `pyro` CLI
//! processes, as an agent drives it), and exec latency while another shell floods output.

use std::process::Command;
use std::time::{Duration, Instant};

use pyro_core::vm::CreateVmOptions;
use pyro_core::workspace::shells::{OpenShellOptions, ReadShellOptions};
use pyro_core::workspace::CreateWorkspaceOptions;
use pyro_core::Pyro;
use pyro_test::bench::median;

const ENV: &str = "debian:12";
/// The idle window of every read: part of each round trip by design.
const IDLE_MS: i64 = 50;

fn options() -> CreateWorkspaceOptions {
    CreateWorkspaceOptions {
        vm: CreateVmOptions::new(ENV),
        ttl_seconds: None,
        network_policy: pyro_core::options::NetworkPolicy::Off,
        allow_hosts: Vec::new(),
        seed_path: None,
        name: None,
        labels: Default::default(),
        secrets: Vec::new(),
    }
}

/// Idle reads from `cursor` until the plain output contains `needle`; the next cursor.
async fn read_until(pyro: &Pyro, id: &str, sid: &str, mut cursor: u64, needle: &str) -> u64 {
    let mut seen = String::new();
    while !seen.contains(needle) {
        let options = ReadShellOptions { cursor: cursor as i64, plain: true, wait_for_idle_ms: Some(IDLE_MS), ..Default::default() };
        let r = pyro.read_shell(id, sid, &options).await.unwrap();
        seen.push_str(&r.output);
        cursor = r.next_cursor;
    }
    cursor
}

fn main() {
    let state = tempfile::tempdir().unwrap();
    std::env::set_var("PYRO_STATE_DIR", state.path());
    let runs: usize = std::env::var("PYRO_BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let pyro = Pyro::from_env().unwrap();
        let ws = pyro.create_workspace(&options(), &pyro_core::events::ignore).await.unwrap();
        let id = ws.workspace_id.clone();
        let sid = pyro.open_shell(&id, &OpenShellOptions::default()).await.unwrap().shell_id;
        let mut cursor = read_until(&pyro, &id, &sid, 0, "pyro$ ").await;

        let mut core = Vec::new();
        for i in 0..runs {
            let start = Instant::now();
            pyro.write_shell(&id, &sid, &format!("echo rt-$(({i}+1000))"), true).await.unwrap();
            cursor = read_until(&pyro, &id, &sid, cursor, &format!("rt-{}\n", i + 1000)).await;
            core.push(start.elapsed());
        }
        println!("shell write → idle read (core, idle {IDLE_MS} ms)   median {:>9.1?} ({runs} runs)", median(core));

        let pyro_bin = env!("CARGO_BIN_EXE_pyro");
        let run = |args: &[&str]| {
            let out = Command::new(pyro_bin).arg("workspace").arg("shell").args(args).arg("--json").output().unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
            serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
        };
        let mut cli = Vec::new();
        for i in 0..runs {
            let start = Instant::now();
            run(&["write", &id, &sid, "--input", &format!("echo cli-$(({i}+1000))")]);
            let needle = format!("cli-{}\n", i + 1000);
            let mut seen = String::new();
            while !seen.contains(&needle) {
                let r = run(&["read", &id, &sid, "--cursor", &cursor.to_string(), "--plain", "--wait-for-idle-ms", &IDLE_MS.to_string()]);
                seen.push_str(r["output"].as_str().unwrap());
                cursor = r["next_cursor"].as_u64().unwrap();
            }
            cli.push(start.elapsed());
        }
        println!("shell write → idle read (2+ CLI processes)    median {:>9.1?} ({runs} runs)", median(cli));

        let mut quiet = Vec::new();
        for _ in 0..runs {
            let start = Instant::now();
            pyro.exec_workspace(&id, "true", 30, &Default::default(), None).await.unwrap();
            quiet.push(start.elapsed());
        }
        println!("exec round trip, no shell busy                median {:>9.1?} ({runs} execs)", median(quiet));
        let nproc = pyro.exec_workspace(&id, "nproc", 30, &Default::default(), None).await.unwrap().output.stdout;
        println!("guest vCPUs                                   {}", String::from_utf8_lossy(&nproc).trim());

        let flood = pyro.open_shell(&id, &OpenShellOptions::default()).await.unwrap().shell_id;
        pyro.write_shell(&id, &flood, "yes", true).await.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut execs = Vec::new();
        for _ in 0..runs {
            let start = Instant::now();
            pyro.exec_workspace(&id, "true", 30, &Default::default(), None).await.unwrap();
            execs.push(start.elapsed());
        }
        println!("exec round trip while a shell floods (yes)    median {:>9.1?} ({runs} execs)", median(execs));
        pyro.close_shell(&id, &flood).await.unwrap();
        pyro.close_shell(&id, &sid).await.unwrap();
        pyro.delete_workspace(&id).await.unwrap();
    });
}
