//! W5s/W5b/W5c: hand-offs between two processes through the other synchronization primitives —
//! a semaphore ping-pong, barrier rounds, condition turns — µs per round trip (p50/p99) and CPU
//! per round trip, for this crate (async; the answering side async or blocking as the row says)
//! and for Python's `multiprocessing` (`peers.py`).

use std::time::Instant;

use tokio_multiprocessing as mp;

use crate::RoundTrips;
use crate::cpu::CpuMeter;

/// Which primitive a round trip goes through.
#[derive(Clone, Copy, serde::Serialize, serde::Deserialize)]
pub enum Through {
    Semaphore,
    Barrier,
    Condition,
}

/// The shared things of one measurement.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct Kit {
    ping: mp::Semaphore,
    pong: mp::Semaphore,
    barrier: mp::Barrier,
    lock: mp::Lock,
    cond: mp::Condition,
    turn: mp::RawValue<u64>,
}

impl Kit {
    fn new() -> mp::Result<Kit> {
        let lock = mp::Lock::new()?;
        Ok(Kit {
            ping: mp::Semaphore::new(0)?,
            pong: mp::Semaphore::new(0)?,
            barrier: mp::Barrier::new(2)?,
            cond: mp::Condition::new(&lock)?,
            lock,
            turn: mp::RawValue::new(0)?,
        })
    }

    /// One round trip from the timing side.
    async fn round_trip(&self, through: Through, round: u64) {
        match through {
            Through::Semaphore => {
                self.ping.release().unwrap();
                self.pong.acquire().await.forget();
            }
            Through::Barrier => {
                self.barrier.wait().await.unwrap();
            }
            Through::Condition => {
                let mut guard = self.lock.lock().await.unwrap();
                self.turn.set(2 * round + 1);
                self.cond.notify_all().unwrap();
                while self.turn.get() != 2 * round + 2 {
                    guard = self.cond.wait(guard).await.unwrap();
                }
            }
        }
    }

    /// The answering side's half of one round trip.
    async fn answer(&self, through: Through, round: u64) {
        match through {
            Through::Semaphore => {
                self.ping.acquire().await.forget();
                self.pong.release().unwrap();
            }
            Through::Barrier => {
                self.barrier.wait().await.unwrap();
            }
            Through::Condition => {
                let mut guard = self.lock.lock().await.unwrap();
                while self.turn.get() != 2 * round + 1 {
                    guard = self.cond.wait(guard).await.unwrap();
                }
                self.turn.set(2 * round + 2);
                self.cond.notify_all().unwrap();
            }
        }
    }

    fn answer_blocking(&self, through: Through) {
        match through {
            Through::Semaphore => {
                self.ping.acquire_blocking().forget();
                self.pong.release().unwrap();
            }
            Through::Barrier => {
                self.barrier.wait_blocking().unwrap();
            }
            Through::Condition => unreachable!("Condition has no blocking wait"),
        }
    }
}

async fn answerer((kit, through, rounds, blocking): (Kit, Through, usize, bool)) {
    if blocking {
        tokio::task::spawn_blocking(move || {
            for _ in 0..rounds {
                kit.answer_blocking(through);
            }
        })
        .await
        .unwrap();
    } else {
        // On a runtime worker, as the timing side (see `on_a_worker` in main.rs).
        tokio::spawn(async move {
            for round in 0..rounds as u64 {
                kit.answer(through, round).await;
            }
        })
        .await
        .unwrap();
    }
}

/// `rounds` round trips through `through`; the answering child waits async, or on a thread
/// with `blocking` (not for `Condition`, which has no blocking wait).
pub async fn round_trips(
    through: Through,
    rounds: usize,
    blocking: bool,
) -> mp::Result<RoundTrips> {
    let kit = Kit::new()?;
    let mut child = mp::Process::spawn(answerer, (kit.clone(), through, rounds, blocking))?;
    let pid = child.pid();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let trips = tokio::spawn(async move {
        let (mut samples, mut meter) = (Vec::with_capacity(rounds), None);
        for round in 0..rounds as u64 {
            let t = Instant::now();
            kit.round_trip(through, round).await;
            samples.push(t.elapsed().as_secs_f64() * 1e6);
            meter.get_or_insert_with(|| CpuMeter::start(pid));
        }
        let cpu = meter.map_or(0.0, |m| m.per_round_us(rounds - 1));
        (samples, cpu)
    })
    .await
    .expect("timing task");
    child.join().await?;
    Ok(trips)
}
