//! An idle manager, and clients waiting on it, cost no CPU: callers spin a bounded while for a
//! reply, then park on the ring; the manager parks on each client's ring. Alone in its own test
//! binary so that this process's CPU time is this test's only.

mod support;

use std::time::Duration;

use support::cpu_of;
use tokio_multiprocessing::{self as mp, Manager};

/// After a burst of calls, with one caller waiting on an empty queue for a second, the manager
/// and this process each use a small fraction of that second (a reader that kept polling would
/// use all of it). Not a speed check: the bound is a tenth of the wall time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_manager_and_a_waiting_client_use_no_cpu() -> mp::Result<()> {
    mp::init().await?;
    let manager = Manager::start().await?;
    let queue = manager.queue::<u32>(0).await?;
    let dict = manager.dict::<u32, u32>().await?;
    for i in 0..2_000 {
        dict.insert(i, i).await?;
    }
    let waiting = tokio::spawn({
        let queue = queue.clone();
        async move { queue.get().await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let pids = [std::process::id(), manager.pid().expect("we started it")];
    let before: Vec<Duration> = pids.iter().map(|&p| cpu_of(p)).collect();
    let idle = Duration::from_secs(1);
    tokio::time::sleep(idle).await;
    for (pid, before) in pids.iter().zip(before) {
        let used = cpu_of(*pid) - before;
        assert!(
            used < idle / 10,
            "process {pid} used {used:?} of CPU while idle for {idle:?}"
        );
    }
    queue.put(7).await.map_err(mp::Error::from)?;
    assert_eq!(waiting.await.unwrap()?, 7);
    manager.shutdown().await
}
