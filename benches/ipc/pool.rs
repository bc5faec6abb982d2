//! W6 and W7: a `Pool` of `processes` workers. W6 pushes tiny tasks (`x → x + 1`) through
//! `map` (automatic chunks) and `map_unordered` with chunksize 1 (each task its own message);
//! W7 times `apply` round trips and the speed-up of CPU-bound tasks over running them serially.

use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio_multiprocessing as mp;

pub(crate) async fn add_one(x: u64) -> u64 {
    x + 1
}

/// About `ms` milliseconds of pure computation (the same loop as Python's peer, in spirit).
pub(crate) fn burn(ms: u64) -> u64 {
    let start = Instant::now();
    let mut x = 0u64;
    while start.elapsed() < Duration::from_millis(ms) {
        for i in 0..1000u64 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(i);
        }
    }
    std::hint::black_box(x)
}

pub(crate) async fn burn_task(ms: u64) -> u64 {
    burn(ms)
}

/// Tasks per second through `map` (ordered, automatic chunks), all results checked.
pub(crate) async fn map_rate(pool: &mp::Pool, count: u64) -> mp::Result<f64> {
    let start = Instant::now();
    let results = pool.map(add_one, 0..count).collect_vec().await?;
    let elapsed = start.elapsed().as_secs_f64();
    assert!(results.iter().enumerate().all(|(i, &y)| y == i as u64 + 1));
    Ok(count as f64 / elapsed)
}

/// Tasks per second through `map_unordered` with one task per message.
pub(crate) async fn unordered_rate(pool: &mp::Pool, count: u64) -> mp::Result<f64> {
    let start = Instant::now();
    let mut stream = pool.map_unordered(add_one, 0..count).chunksize(1);
    let mut sum = 0u64;
    while let Some(result) = stream.next().await {
        sum += result?;
    }
    let elapsed = start.elapsed().as_secs_f64();
    assert_eq!(sum, (1..=count).sum::<u64>());
    Ok(count as f64 / elapsed)
}

/// `apply` round trips, in µs.
pub(crate) async fn apply_round_trips(pool: &mp::Pool, rounds: u64) -> mp::Result<Vec<f64>> {
    for x in 0..100 {
        pool.apply(add_one, x).await?;
    }
    let mut samples = Vec::with_capacity(rounds as usize);
    for x in 0..rounds {
        let start = Instant::now();
        let y = pool.apply(add_one, x).await?;
        samples.push(start.elapsed().as_secs_f64() * 1e6);
        assert_eq!(y, x + 1);
    }
    Ok(samples)
}

/// Serial time over pool time for `tasks` CPU-bound tasks of `ms` each.
pub(crate) async fn cpu_speedup(pool: &mp::Pool, tasks: u64, ms: u64) -> mp::Result<f64> {
    let start = Instant::now();
    for _ in 0..tasks {
        std::hint::black_box(burn(ms));
    }
    let serial = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let done = pool
        .map(burn_task, std::iter::repeat_n(ms, tasks as usize))
        .chunksize(1)
        .collect_vec()
        .await?;
    let parallel = start.elapsed().as_secs_f64();
    assert_eq!(done.len() as u64, tasks);
    Ok(serial / parallel)
}
