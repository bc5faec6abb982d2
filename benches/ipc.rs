//! Side-by-side IPC benchmarks (`cargo bench`, or `cargo bench -- --quick` for a smoke run).
//!
//! This is the start of the harness of DESIGN.md §6: it measures what exists so far (process
//! start-up and shared-memory copies) and prints one table, median of 3 runs with min–max. Rows
//! for Pipe, Queue, Lock and Event (W1–W5) and for the peers join as those primitives land.

use std::time::{Duration, Instant};

use tokio_multiprocessing as mp;

async fn echo(x: u64) -> u64 {
    x
}

/// Copies `total` bytes into and back out of a segment in 1 MiB pieces, inside a child.
async fn copy_through(args: (mp::SharedMemory, usize)) -> f64 {
    let (shm, total) = args;
    let chunk = vec![7u8; shm.size()];
    let mut back = vec![0u8; shm.size()];
    let start = Instant::now();
    let mut done = 0;
    while done < total {
        shm.write_at(0, &chunk).unwrap();
        shm.read_at(0, &mut back).unwrap();
        done += chunk.len();
    }
    start.elapsed().as_secs_f64()
}

struct Row {
    name: &'static str,
    unit: &'static str,
    samples: Vec<f64>,
}

impl Row {
    fn print(&self) {
        let mut s = self.samples.clone();
        s.sort_by(f64::total_cmp);
        let median = s[s.len() / 2];
        println!(
            "{:<44} {:>12.2} {:<8} (min {:.2}, max {:.2})",
            self.name,
            median,
            self.unit,
            s[0],
            s[s.len() - 1]
        );
    }
}

#[tokio::main]
async fn main() -> mp::Result<()> {
    mp::init().await?;
    let quick = std::env::args().any(|a| a == "--quick");
    let scale = if quick { 20 } else { 1 };
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!(
        "machine: {} cpus, Linux {}; mode: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        kernel.trim(),
        if quick {
            "quick (scaled down 20x)"
        } else {
            "full"
        }
    );

    let spawns = 30 / scale.min(10);
    let mut spawn_row = Row {
        name: "Process::spawn + join (re-exec round trip)",
        unit: "ms",
        samples: vec![],
    };
    for _ in 0..3 {
        let start = Instant::now();
        for i in 0..spawns {
            let got = mp::Process::spawn(echo, i as u64)?.join().await?;
            assert_eq!(got, i as u64);
        }
        spawn_row
            .samples
            .push(start.elapsed().as_secs_f64() * 1000.0 / spawns as f64);
    }

    let total = (2usize << 30) / scale;
    let mut copy_row = Row {
        name: "SharedMemory 1 MiB write_at + read_at",
        unit: "GB/s",
        samples: vec![],
    };
    for _ in 0..3 {
        let shm = mp::SharedMemory::create(1 << 20)?;
        let secs = mp::Process::spawn(copy_through, (shm, total))?
            .join_timeout(Duration::from_secs(600))
            .await?;
        copy_row.samples.push(2.0 * total as f64 / secs / 1e9);
    }

    println!("{:<44} {:>12} {:<8}", "workload", "median", "unit");
    spawn_row.print();
    copy_row.print();
    Ok(())
}
