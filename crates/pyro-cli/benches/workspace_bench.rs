//! Speed figures for persistent workspaces in real guests (not a test).
//!
//! `cargo bench -p pyro-cli --bench workspace_bench` (needs `scripts/setup.sh` first).
//! Reports create-to-ready, exec round trip, file write/read round trip, seeding a 100 MB
//! tree, snapshot and reset of a 100 MB workspace, and diff of a 1,000-file workspace.

use std::time::{Duration, Instant};

use pyro_core::vm::CreateVmOptions;
use pyro_core::workspace::CreateWorkspaceOptions;
use pyro_core::Pyro;
use pyro_test::bench::median;

const ENV: &str = "debian:12-base";

fn options(seed: Option<&std::path::Path>) -> CreateWorkspaceOptions {
    CreateWorkspaceOptions {
        vm: CreateVmOptions::new(ENV),
        ttl_seconds: None,
        network_policy: pyro_core::options::NetworkPolicy::Off,
        allow_hosts: Vec::new(),
        seed_path: seed.map(|p| p.to_path_buf()),
        name: None,
        labels: Default::default(),
        secrets: Vec::new(),
    }
}

async fn timed<T>(f: impl std::future::Future<Output = T>) -> (T, Duration) {
    let start = Instant::now();
    let out = f.await;
    (out, start.elapsed())
}

fn main() {
    let state = tempfile::tempdir().unwrap();
    std::env::set_var("PYRO_STATE_DIR", state.path());
    let runs: usize = std::env::var("PYRO_BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let host = tempfile::tempdir().unwrap();

    // 100 MB tree: 100 files of 1 MiB of incompressible bytes.
    let big = host.path().join("big");
    std::fs::create_dir(&big).unwrap();
    let mut seed_bytes = 0x2545F4914F6CDD1Du64;
    for i in 0..100 {
        let data: Vec<u8> = (0..1 << 20)
            .map(|_| {
                seed_bytes ^= seed_bytes << 13;
                seed_bytes ^= seed_bytes >> 7;
                seed_bytes ^= seed_bytes << 17;
                seed_bytes as u8
            })
            .collect();
        std::fs::write(big.join(format!("blob-{i:03}.bin")), data).unwrap();
    }
    // 1,000 small text files.
    let many = host.path().join("many");
    std::fs::create_dir(&many).unwrap();
    for i in 0..1000 {
        std::fs::write(many.join(format!("f{i:04}.txt")), format!("line one {i}\nline two\n")).unwrap();
    }

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let pyro = Pyro::from_env().unwrap();
        let quiet = pyro_core::events::ignore;

        let mut creates = Vec::new();
        for _ in 0..runs {
            let (ws, t) = timed(pyro.create_workspace(&options(None), &quiet)).await;
            creates.push(t);
            pyro.delete_workspace(&ws.unwrap().workspace_id).await.unwrap();
        }
        println!("workspace create (empty) → ready      median {:>9.1?} ({runs} runs)", median(creates));

        let ws = pyro.create_workspace(&options(None), &quiet).await.unwrap();
        let id = ws.workspace_id.clone();
        let mut execs = Vec::new();
        let mut files = Vec::new();
        for i in 0..runs * 4 {
            execs.push(timed(pyro.exec_workspace(&id, "true", 30, &Default::default(), None)).await.1);
            let text = format!("round trip {i}\n");
            let start = Instant::now();
            pyro.write_workspace_file(&id, "rt.txt", &text).await.unwrap();
            let read = pyro.read_workspace_file(&id, "rt.txt", 65536).await.unwrap();
            files.push(start.elapsed());
            assert_eq!(read.content, text);
        }
        println!("workspace exec round trip (true)       median {:>9.1?} ({} execs)", median(execs), runs * 4);
        println!("file write + read round trip           median {:>9.1?} ({} pairs)", median(files), runs * 4);
        pyro.delete_workspace(&id).await.unwrap();

        let (big_ws, t) = timed(pyro.create_workspace(&options(Some(&big)), &quiet)).await;
        let big_ws = big_ws.unwrap();
        println!("create seeded with a 100 MB tree       {:>16.1?}", t);
        let (_, t) = timed(pyro.create_snapshot(&big_ws.workspace_id, "s1")).await;
        println!("snapshot of a 100 MB workspace         {:>16.1?}", t);
        let (reset, t) = timed(pyro.reset_workspace(&big_ws.workspace_id, "s1")).await;
        reset.unwrap();
        println!("reset of a 100 MB workspace            {:>16.1?}", t);
        pyro.delete_workspace(&big_ws.workspace_id).await.unwrap();

        let many_ws = pyro.create_workspace(&options(Some(&many)), &quiet).await.unwrap();
        pyro.exec_workspace(&many_ws.workspace_id, "for f in f0*.txt; do echo changed >> $f; done", 120, &Default::default(), None).await.unwrap();
        let (diff, t) = timed(pyro.diff_workspace(&many_ws.workspace_id)).await;
        println!("diff of a 1,000-file workspace         {:>16.1?} ({} changed)", t, diff.unwrap().diff.summary.total);
        pyro.delete_workspace(&many_ws.workspace_id).await.unwrap();
    });
}
