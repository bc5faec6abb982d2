//! An idle `Pool` costs no CPU (#17's rule for every waiter: spin a bounded while, then park).
//! Alone in its own test binary so that the parent's CPU time is this test's only.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use support::cpu_of;
use tokio_multiprocessing::{self as mp, Pool};

async fn add_one(x: u64) -> u64 {
    x + 1
}

async fn my_pid((): ()) -> u32 {
    std::process::id()
}

/// Idle workers and an idle parent spin only a bounded while after the last task, then park:
/// over a second with nothing to do, each uses a small fraction of it (a worker or driver
/// that kept polling would use all of it). Not a speed check: the bound is a tenth of the
/// wall time, and spinning for ever would exceed it on any machine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_pool_uses_no_cpu() -> mp::Result<()> {
    mp::init().await?;
    let pool = Pool::new(2)?;
    let mut workers = HashSet::new();
    for _ in 0..200 {
        workers.insert(pool.apply(my_pid, ()).await?);
    }
    let _: Vec<u64> = pool.map(add_one, 0..1_000u64).collect_vec().await?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let me = std::process::id();
    let before: Vec<Duration> = workers.iter().chain([&me]).map(|&p| cpu_of(p)).collect();
    let idle = Duration::from_secs(1);
    tokio::time::sleep(idle).await;
    for (pid, before) in workers.iter().chain([&me]).zip(before) {
        let used = cpu_of(*pid) - before;
        assert!(
            used < idle / 10,
            "process {pid} used {used:?} of CPU while idle for {idle:?}"
        );
    }
    pool.close();
    pool.join().await;
    Ok(())
}
