//! The classic producer/consumer program with a bounded `multiprocessing.Queue`.
//!
//! Python:
//!
//! ```python
//! import random
//! from multiprocessing import Process, Queue
//!
//! def producer(q):
//!     for n in (random.randint(0, 100) for _ in range(10)):
//!         if n % 2 == 0:
//!             if q.full():
//!                 print("queue is full, waiting")
//!             q.put(n)
//!             print(f"produced {n}")
//!     q.put(None)
//!
//! def consumer(q):
//!     while (n := q.get()) is not None:
//!         print(f"consumed {n}")
//!
//! if __name__ == "__main__":
//!     q = Queue(maxsize=5)
//!     p, c = Process(target=producer, args=(q,)), Process(target=consumer, args=(q,))
//!     p.start(); c.start(); p.join(); c.join()
//!     print("final size", q.qsize())
//! ```
//!
//! Here `close()` plays the part of the `None` sentinel. Run with
//! `cargo run --example producer_consumer`.

use tokio_multiprocessing as mp;

/// A small xorshift generator: the example needs no `rand` crate.
fn random_numbers(count: usize) -> Vec<u64> {
    let mut x = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0x9e37_79b9, |d| d.as_nanos() as u64)
        | 1;
    (0..count)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % 101
        })
        .collect()
}

async fn producer(q: mp::Queue<u64>) {
    for n in random_numbers(10) {
        if n % 2 == 0 {
            if q.is_full() {
                println!("[producer] queue is full, waiting");
            }
            q.put(n).await.expect("put");
            println!("[producer] produced {n}");
        }
    }
    q.close();
}

async fn consumer(q: mp::Queue<u64>) -> usize {
    let mut taken = 0;
    // `get` drains what is queued, then reports `Closed` (the sentinel).
    while let Ok(n) = q.get().await {
        println!("[consumer] consumed {n}");
        taken += 1;
    }
    taken
}

#[tokio::main]
async fn main() -> mp::Result<()> {
    mp::init().await?;

    let q = mp::Queue::<u64>::new(5)?;
    let mut p = mp::Process::spawn(producer, q.clone())?;
    let mut c = mp::Process::spawn(consumer, q.clone())?;
    p.join().await?;
    let taken = c.join().await?;
    println!("consumed {taken} items; final size {}", q.len());
    Ok(())
}
