//! A pool of two workers sums the squares of 0..2000, as Python's `Pool` does — and one task
//! whose worker is killed under it is reported, while the pool carries on.
//!
//! Python:
//!
//! ```python
//! from multiprocessing import Pool
//!
//! def square(x):
//!     return x * x
//!
//! if __name__ == '__main__':
//!     with Pool(2) as pool:
//!         print(sum(pool.map(square, range(2000))))
//! ```
//!
//! (In Python, killing a worker in the middle of `pool.map` makes it hang forever.)
//!
//! Run with `cargo run --example pool`.

use tokio_multiprocessing as mp;

async fn square(x: u64) -> u64 {
    x * x
}

/// Kills the worker it runs in, as the OOM killer might.
async fn doomed((): ()) -> u64 {
    let me = rustix::process::getpid();
    let _ = rustix::process::kill_process(me, rustix::process::Signal::KILL);
    unreachable!("killed");
}

#[tokio::main]
async fn main() -> mp::Result<()> {
    mp::init().await?;
    let pool = mp::Pool::new(2)?;

    let total: u64 = pool
        .map(square, 0..2000u64)
        .collect_vec()
        .await?
        .iter()
        .sum();
    println!("sum of squares of 0..2000: {total}");

    match pool.apply(doomed, ()).await {
        Err(e @ mp::Error::WorkerDied { .. }) => println!("reported: {e}"),
        other => println!("unexpected: {other:?}"),
    }
    // The pool replaced the worker and goes on.
    println!(
        "after the death: 12 squared is {}",
        pool.apply(square, 12).await?
    );

    pool.close();
    pool.join().await;
    Ok(())
}
