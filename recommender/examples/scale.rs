//! The model at shop scale: trains on a synthetic log of `--interactions`
//! over `--items` (default 1,000,000 over 100,000), then times `--requests`
//! recommendations of 20 items for random histories, and prints the
//! training time, p50 / p99 / max latency and the process's peak memory.
//!
//! The log: 50,000 users with Zipf-like item popularity; each user browses
//! runs of neighbouring items in "categories" of 100, so the sources have
//! structure to find. Run it in release:
//! `cargo run --release -p recommender --example scale -- 1000000 100000 10000`

use std::time::Instant;

use recommender::{
    Recommender,
    data::{Interaction, Kind},
    model::{Config, Hybrid},
};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("numbers: interactions items requests"))
        .collect();
    let n = args.first().copied().unwrap_or(1_000_000);
    let items = args.get(1).copied().unwrap_or(100_000) as u64;
    let requests = args.get(2).copied().unwrap_or(10_000);
    let users = 50_000u64;

    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let mut log = Vec::with_capacity(n);
    let mut t = 0i64;
    while log.len() < n {
        let user = rng.below(users) as u32;
        // Zipf-like start: a popular head and a long tail.
        let r = rng.below(1_000_000) as f64 / 1_000_000.0;
        let start = ((items as f64).powf(r) as u64).min(items - 1);
        let run = 1 + rng.below(8);
        for k in 0..run {
            let cat = start / 100 * 100;
            let item = cat + (start + k * (1 + rng.below(3))) % 100;
            log.push(Interaction {
                user,
                item: item.min(items - 1) as u32,
                ts: t,
                kind: Kind::View,
            });
            t += 1;
        }
    }
    log.truncate(n);
    let touched = {
        let mut seen = vec![false; items as usize];
        for i in &log {
            seen[i.item as usize] = true;
        }
        seen.iter().filter(|s| **s).count()
    };
    println!(
        "log: {} interactions, {} users, {} items ({} touched)",
        log.len(),
        users,
        items,
        touched
    );

    let started = Instant::now();
    let (model, report) = Hybrid::fit(&log, items as usize, Config::default(), &|phase| {
        eprintln!("  {:>6.1} s  {phase}", started.elapsed().as_secs_f64())
    })
    .expect("trains");
    let training = started.elapsed().as_secs_f64();
    println!(
        "training: {training:.1} s ({} ranker examples, candidate recall {}/{})",
        report.rows, report.targets_with_candidate, report.targets
    );

    let mut times = Vec::with_capacity(requests);
    let mut rng = Rng(7);
    let mut served = 0usize;
    for _ in 0..requests {
        // A history of 1–30 items from the log (a real user's recent views).
        let at = rng.below(log.len() as u64 - 30) as usize;
        let len = 1 + rng.below(30) as usize;
        let history: Vec<u32> = log[at..at + len].iter().map(|i| i.item).collect();
        let start = Instant::now();
        let r = model.recommend(&history, 20, &|i| history.contains(&i));
        times.push(start.elapsed().as_secs_f64() * 1000.0);
        served += r.len();
    }
    times.sort_by(f64::total_cmp);
    let q = |p: f64| times[((times.len() as f64 * p) as usize).min(times.len() - 1)];
    println!(
        "recommend (20 items): {requests} requests, p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms; {} items served",
        q(0.5),
        q(0.99),
        times[times.len() - 1],
        served
    );
    println!("peak memory (VmHWM): {:.0} MiB", peak_rss_mib());
}
