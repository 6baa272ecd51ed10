//! A small fuzz driver on stable Rust for the `#[ignore]`d `fuzz_*` harnesses (run them
//! all with scripts/fuzz.sh).
//!
//! - `PYRO_FUZZ_CASES`: number of cases (default: the harness's own, a few thousand).
//! - `PYRO_FUZZ_SEED`: base seed (default: from the clock; always printed).
//! - `PYRO_FUZZ_CASE`: run only this case of that seed (replaying a failure).
//!
//! Each case runs under `catch_unwind`; the first panic fails the test with the seed and
//! case that replay it. A watchdog thread aborts the process, naming the case, if one case
//! runs longer than the harness's limit, so a hang is reported instead of waited on.
#![allow(dead_code)] // each test binary uses its own subset

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// SplitMix64: tiny, fast, and plenty for choosing mutations.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        let mut rng = Self(seed);
        rng.next();
        rng
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// True `percent` % of the time.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }

    /// A value that tends to break parsers: edges of integer widths, small numbers, or
    /// random bits.
    pub fn interesting_u32(&mut self) -> u32 {
        const EDGES: &[u32] =
            &[0, 1, 2, 7, 8, 11, 12, 0x7f, 0x80, 0xff, 0x100, 0xfff, 0x1000, 0xffff, 0x10000, 0x7fff_ffff, 0x8000_0000, 0xffff_fffe, 0xffff_ffff];
        match self.below(3) {
            0 => *self.pick(EDGES),
            1 => self.next() as u32 & 0xffff,
            _ => self.next() as u32,
        }
    }
}

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(value.trim().parse().unwrap_or_else(|_| panic!("{name} must be a number, not {value:?}")))
}

/// Runs `body` once per case with that case's RNG; see the module docs.
pub fn run(name: &str, default_cases: u64, case_limit: Duration, mut body: impl FnMut(&mut Rng)) {
    let cases = env_u64("PYRO_FUZZ_CASES").unwrap_or(default_cases);
    let seed = env_u64("PYRO_FUZZ_SEED").unwrap_or_else(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64);
    let only = env_u64("PYRO_FUZZ_CASE");
    eprintln!("[fuzz] {name}: {cases} cases, seed {seed}");
    let started = Instant::now();
    // The case in progress (+1; 0 = none) and when it began (ns after `started`).
    let current = Arc::new(AtomicU64::new(0));
    let began = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let watchdog = {
        let (current, began, done, name) = (current.clone(), began.clone(), done.clone(), name.to_string());
        std::thread::spawn(move || {
            while done.load(Ordering::Relaxed) == 0 {
                std::thread::sleep(Duration::from_millis(50));
                let case = current.load(Ordering::Acquire);
                let since = Duration::from_nanos(began.load(Ordering::Acquire));
                if case != 0 && current.load(Ordering::Acquire) == case && started.elapsed().saturating_sub(since) > case_limit {
                    eprintln!(
                        "[fuzz] {name}: case {} ran longer than {case_limit:?}: a hang (replay: PYRO_FUZZ_SEED={seed} PYRO_FUZZ_CASE={})",
                        case - 1,
                        case - 1
                    );
                    std::process::abort();
                }
            }
        })
    };
    let mut slowest = (Duration::ZERO, 0);
    let mut ran = 0u64;
    for case in 0..cases {
        if only.is_some_and(|o| o != case) {
            continue;
        }
        let mut rng = Rng::new(seed ^ case.wrapping_mul(0xd134_2543_de82_ef95));
        let t0 = started.elapsed();
        began.store(t0.as_nanos() as u64, Ordering::Release);
        current.store(case + 1, Ordering::Release);
        let outcome = catch_unwind(AssertUnwindSafe(|| body(&mut rng)));
        current.store(0, Ordering::Release);
        let took = started.elapsed() - t0;
        if took > slowest.0 {
            slowest = (took, case);
        }
        ran += 1;
        if outcome.is_err() {
            done.store(1, Ordering::Relaxed);
            panic!("[fuzz] {name}: case {case} panicked (replay: PYRO_FUZZ_SEED={seed} PYRO_FUZZ_CASE={case})");
        }
    }
    done.store(1, Ordering::Relaxed);
    let _ = watchdog.join();
    let total = started.elapsed();
    eprintln!(
        "[fuzz] {name}: {ran} cases in {:.1} s ({:.1} µs/case), 0 panics, 0 hangs; slowest case {} took {:.1} ms; seed {seed}",
        total.as_secs_f64(),
        total.as_secs_f64() * 1e6 / ran.max(1) as f64,
        slowest.1,
        slowest.0.as_secs_f64() * 1e3
    );
}
