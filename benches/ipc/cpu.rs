//! CPU time per round trip (W2) or wake-up (W5): what both processes spent, in µs of CPU per
//! round trip, next to the latency. A waiter that spins before it parks buys latency with CPU; this column shows
//! the price, the same way for every row (`peers.py` measures Python's rows alike).
//!
//! The timing side's CPU is its process clock (`CLOCK_PROCESS_CPUTIME_ID`: every thread, so a
//! tokio worker that runs the reactor counts); the echoing child's is the sum of its threads'
//! run time in `/proc/<pid>/task/*/schedstat` (nanoseconds; a thread running at the moment of
//! reading may lag by one scheduler tick, a few ms, which is < 0.1 µs per round trip over the
//! full run's 50,000). The meter starts after the first round trip, so neither side's start-up
//! is counted.

use rustix::time::{ClockId, clock_gettime};

/// CPU spent by this process and one child since [`CpuMeter::start`].
pub struct CpuMeter {
    child: u32,
    ours: u64,
    theirs: u64,
}

impl CpuMeter {
    pub fn start(child: u32) -> CpuMeter {
        CpuMeter {
            child,
            ours: own_ns(),
            theirs: process_ns(child),
        }
    }

    /// µs of CPU (both processes) per round, for `rounds` rounds since the start.
    pub fn per_round_us(&self, rounds: usize) -> f64 {
        let ours = own_ns().saturating_sub(self.ours);
        let theirs = process_ns(self.child).saturating_sub(self.theirs);
        (ours + theirs) as f64 / 1000.0 / rounds.max(1) as f64
    }
}

fn own_ns() -> u64 {
    let t = clock_gettime(ClockId::ProcessCPUTime);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// Run time of every thread of `pid` so far, in ns (0 if it cannot be read).
fn process_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(|task| {
            let stat = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
            stat.split_whitespace().next()?.parse::<u64>().ok()
        })
        .sum()
}
