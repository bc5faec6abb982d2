//! `Pool` across real worker processes: maps in order and out of order, apply from many tasks,
//! initializers, recycling, timeouts, panics, aborts, terminate, and a kill harness where
//! workers are SIGKILLed hundreds of times during a map (behaviours ported from CPython's
//! `_TestPool`: test_apply, test_map, test_imap, test_imap_unordered, test_async_timeout,
//! test_terminate, test_maxtasksperchild, test_initializer).

mod support;

use std::collections::HashSet;
use std::sync::OnceLock;
use std::time::Duration;

use futures::StreamExt;
use support::LIVENESS;
use tokio_multiprocessing::{self as mp, Error, Event, Pool, ProcessFailure};

async fn add_one(x: u64) -> u64 {
    x + 1
}

async fn my_pid((): ()) -> u32 {
    std::process::id()
}

/// Python's `pool.close(); pool.join()`, which must not hang.
async fn close_and_join(pool: &Pool) {
    pool.close();
    tokio::time::timeout(LIVENESS, pool.join())
        .await
        .expect("join returns");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn map_keeps_order_and_map_unordered_gets_everything() -> mp::Result<()> {
    mp::init().await?;
    let pool = Pool::new(2)?;
    let ordered: Vec<u64> = pool.map(add_one, 0..10_000u64).collect_vec().await?;
    assert_eq!(ordered, (1..=10_000u64).collect::<Vec<_>>());
    // Every item its own task (Python's imap with chunksize=1), in completion order.
    let mut unordered: Vec<u64> = pool
        .map_unordered(add_one, 0..10_000u64)
        .chunksize(1)
        .map(|r| r.unwrap())
        .collect()
        .await;
    unordered.sort_unstable();
    assert_eq!(unordered, (1..=10_000u64).collect::<Vec<_>>());
    // An empty map, and a map over a stream-like iterator of unknown length.
    assert!(
        pool.map(add_one, Vec::<u64>::new())
            .collect_vec()
            .await?
            .is_empty()
    );
    let odd: Vec<u64> = pool
        .map(add_one, (0..1000u64).filter(|x| x % 2 == 1))
        .collect_vec()
        .await?;
    assert_eq!(odd.len(), 500);
    close_and_join(&pool).await;
    Ok(())
}

/// A map stream reads its workers' answers itself while the drivers send other callers' tasks
/// to the same workers: every answer must reach its caller. (A driver recorded a task only
/// after sending it, so an answer the stream read in between was dropped and its caller, or
/// the map itself, waited forever.) Fresh pools: a map's first chunks go through the drivers
/// while the workers start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_read_by_a_map_stream_reach_every_caller() -> mp::Result<()> {
    mp::init().await?;
    for _round in 0..4 {
        let pool = Pool::new(2)?;
        let spawner = {
            let pool = pool.clone();
            tokio::spawn(async move {
                for x in 0..300u64 {
                    let task = pool.spawn(add_one, x).await;
                    assert_eq!(task.await.unwrap(), x + 1);
                }
            })
        };
        let sum = tokio::time::timeout(
            LIVENESS,
            pool.map_unordered(add_one, 0..100_000u64)
                .chunksize(1)
                .fold(0u64, |sum, y| async move { sum + y.unwrap() }),
        )
        .await
        .expect("no answer of the map is lost");
        assert_eq!(sum, (1..=100_000u64).sum::<u64>());
        tokio::time::timeout(LIVENESS, spawner)
            .await
            .expect("no answer of a spawned task is lost")
            .unwrap();
        close_and_join(&pool).await;
    }
    Ok(())
}

/// A map stream dropped half-way: what it handed to the workers runs to the end (their
/// drivers read the answers once the stream no longer does), and the pool serves the next map.
/// A stream kept but no longer polled does not hold up other callers: the drivers read the
/// answers again once its claim lapses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_map_stream_dropped_or_left_unpolled_holds_nobody_up() -> mp::Result<()> {
    mp::init().await?;
    let pool = Pool::new(2)?;
    for _ in 0..3 {
        let mut stream = pool.map_unordered(add_one, 0..100_000u64).chunksize(1);
        for _ in 0..1000 {
            stream.next().await.unwrap()?;
        }
        drop(stream);
        let next = tokio::time::timeout(
            LIVENESS,
            pool.map(add_one, 0..1000u64).chunksize(1).collect_vec(),
        )
        .await
        .expect("the next map finishes")?;
        assert_eq!(next, (1..=1000u64).collect::<Vec<_>>());
    }
    let mut unpolled = pool.map_unordered(add_one, 0..100_000u64).chunksize(1);
    unpolled.next().await.unwrap()?;
    let task = pool.spawn(add_one, 41).await;
    assert_eq!(
        tokio::time::timeout(LIVENESS, task)
            .await
            .expect("a spawned task is answered")?,
        42
    );
    for x in 0..50u64 {
        let y = tokio::time::timeout(LIVENESS, pool.apply(add_one, x))
            .await
            .expect("an apply is answered")?;
        assert_eq!(y, x + 1);
    }
    drop(unpolled);
    close_and_join(&pool).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_from_eight_tasks_at_once() -> mp::Result<()> {
    mp::init().await?;
    let pool = Pool::new(2)?;
    let callers: Vec<_> = (0..8u64)
        .map(|i| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let mut sum = 0;
                for j in 0..50u64 {
                    sum += pool.apply(add_one, i * 1000 + j).await.unwrap();
                }
                sum
            })
        })
        .collect();
    for (i, caller) in callers.into_iter().enumerate() {
        let i = i as u64;
        assert_eq!(
            caller.await.unwrap(),
            (0..50u64).map(|j| i * 1000 + j + 1).sum::<u64>()
        );
    }
    Ok(())
}

static LOADED: OnceLock<String> = OnceLock::new();

async fn load(data: String) {
    LOADED.set(data).unwrap();
}

async fn read_loaded((): ()) -> Option<String> {
    LOADED.get().cloned()
}

async fn failing_init((): ()) -> Result<(), String> {
    Err("no database".into())
}

#[tokio::test]
async fn the_initializer_runs_in_every_worker_and_its_failure_is_reported() -> mp::Result<()> {
    mp::init().await?;
    let pool = Pool::builder()
        .processes(2)
        .initializer(load, "weights".to_string())
        .build()?;
    for _ in 0..10 {
        assert_eq!(
            pool.apply(read_loaded, ()).await?.as_deref(),
            Some("weights")
        );
    }
    let broken = Pool::builder()
        .processes(1)
        .initializer(failing_init, ())
        .build()?;
    let result = tokio::time::timeout(LIVENESS, broken.apply(add_one, 1))
        .await
        .expect("a failing initializer is reported, not retried forever");
    assert!(
        matches!(result, Err(Error::InvalidArgument(ref m)) if m.contains("initializer")),
        "{result:?}"
    );
    Ok(())
}

#[tokio::test]
async fn workers_are_replaced_after_max_tasks_per_child() -> mp::Result<()> {
    mp::init().await?;
    let pool = Pool::builder()
        .processes(1)
        .max_tasks_per_child(2)
        .build()?;
    let mut pids = HashSet::new();
    for _ in 0..6 {
        pids.insert(pool.apply(my_pid, ()).await?);
    }
    assert_eq!(pids.len(), 3, "a new worker every two tasks: {pids:?}");
    Ok(())
}

async fn wait_for((event, x): (Event, u64)) -> u64 {
    event.wait().await;
    x
}

async fn panic_on(x: u64) -> u64 {
    if x == 3 {
        panic!("three is not allowed");
    }
    x
}

#[tokio::test]
async fn a_task_over_its_timeout_fails_alone_and_the_pool_goes_on() -> mp::Result<()> {
    mp::init().await?;
    let never = Event::new()?;
    let pool = Pool::builder()
        .processes(1)
        .task_timeout(Duration::from_millis(300))
        .build()?;
    let stuck = pool.apply(wait_for, (never.clone(), 1)).await;
    assert!(matches!(stuck, Err(Error::Timeout)), "{stuck:?}");
    assert_eq!(
        pool.apply(add_one, 1).await?,
        2,
        "a replacement worker serves"
    );
    Ok(())
}

#[tokio::test]
async fn a_panicking_task_fails_alone_with_its_message() -> mp::Result<()> {
    mp::init().await?;
    let pool = Pool::new(2)?;
    let results: Vec<_> = pool.map(panic_on, 0..6u64).chunksize(1).collect().await;
    for (x, result) in results.into_iter().enumerate() {
        if x == 3 {
            assert!(
                matches!(result, Err(Error::Process(ProcessFailure::Panicked(ref m))) if m.contains("three")),
                "{result:?}"
            );
        } else {
            assert_eq!(result?, x as u64);
        }
    }
    Ok(())
}

#[tokio::test]
async fn abort_drops_a_queued_task_and_kills_a_running_one() -> mp::Result<()> {
    mp::init().await?;
    let (hold, never) = (Event::new()?, Event::new()?);
    let pool = Pool::builder().processes(1).build()?;
    let running = pool.spawn(wait_for, (never.clone(), 1)).await;
    let queued = pool.spawn(wait_for, (hold.clone(), 2)).await;
    queued.abort();
    running.abort();
    assert!(matches!(running.await, Err(Error::Closed)));
    assert!(matches!(queued.await, Err(Error::Closed)));
    hold.set();
    assert_eq!(
        pool.apply(add_one, 41).await?,
        42,
        "a replacement worker serves"
    );
    Ok(())
}

#[tokio::test]
async fn terminate_fails_what_is_unfinished_and_leaves_no_worker() -> mp::Result<()> {
    mp::init().await?;
    let never = Event::new()?;
    let pool = Pool::new(2)?;
    let mut tasks = Vec::new();
    for x in 0..6 {
        tasks.push(pool.spawn(wait_for, (never.clone(), x)).await);
    }
    pool.terminate();
    for task in tasks {
        assert!(matches!(task.await, Err(Error::Closed)));
    }
    tokio::time::timeout(LIVENESS, pool.join())
        .await
        .expect("join returns after terminate");
    assert!(matches!(pool.apply(add_one, 1).await, Err(Error::Closed)));
    assert!(support::eventually(|| !mp::active_children()
        .iter()
        .any(|c| c.name.starts_with("Pool-worker"))));
    Ok(())
}

/// Dropping the last handle terminates the pool, as leaving Python's `with Pool()` block
/// does: the workers are killed and reaped, and no segment is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_pool_leaves_no_worker_and_no_segment() -> mp::Result<()> {
    mp::init().await?;
    let never = Event::new()?;
    let shm_before = support::our_shm_entries().len();
    let pool = Pool::builder().name("Dropped").processes(2).build()?;
    let running = pool.spawn(wait_for, (never.clone(), 1)).await;
    assert_eq!(pool.apply(add_one, 1).await?, 2);
    drop(pool);
    assert!(matches!(running.await, Err(Error::Closed)));
    assert!(support::eventually(|| !mp::active_children()
        .iter()
        .any(|c| c.name.starts_with("Dropped-worker"))));
    assert_eq!(support::our_shm_entries().len(), shm_before);
    Ok(())
}

/// About 50 µs of work (a spin: tokio's timer would round a short sleep up to a millisecond).
async fn slow_add_one(x: u64) -> u64 {
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_micros(50) {
        std::hint::spin_loop();
    }
    x + 1
}

/// Kills a random worker of the pool named `pool` every 15 to 45 ms (a worker takes a few ms
/// to start, so most die busy) until `stop`; returns how many. (Only that pool's: the other
/// tests of this binary run their pools at the same time.)
async fn kill_workers(
    pool: &'static str,
    stop: tokio::sync::watch::Receiver<bool>,
    seed: u64,
) -> usize {
    let prefix = format!("{pool}-worker");
    let mut seed = seed | 1;
    let mut kills = 0;
    while !*stop.borrow() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        tokio::time::sleep(Duration::from_micros(15_000 + seed % 30_000)).await;
        let workers: Vec<_> = mp::active_children()
            .into_iter()
            .filter(|c| c.name.starts_with(&prefix))
            .collect();
        if let Some(victim) = workers.get((seed % workers.len().max(1) as u64) as usize) {
            let pid = rustix::process::Pid::from_raw(victim.pid as i32).unwrap();
            if rustix::process::kill_process(pid, rustix::process::Signal::KILL).is_ok() {
                kills += 1;
            }
        }
    }
    kills
}

/// Runs 20k-task maps while workers are SIGKILLed at random, until at least `min_kills`
/// happened; checks every item gave its right value or its worker's death, exactly once.
async fn map_under_fire(
    name: &'static str,
    retries: u32,
    min_kills: usize,
    chunksize: usize,
) -> mp::Result<(usize, usize)> {
    let pool = Pool::builder()
        .processes(2)
        .retries(retries)
        .name(name)
        .build()?;
    let (mut kills, mut died) = (0, 0);
    while kills < min_kills {
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        let killer = tokio::spawn(kill_workers(name, stop, kills as u64 + 0x9e37));
        let results: Vec<_> = tokio::time::timeout(
            LIVENESS * 4,
            pool.map(slow_add_one, 0..20_000u64)
                .chunksize(chunksize)
                .collect::<Vec<_>>(),
        )
        .await
        .expect("the map never hangs");
        stop_tx.send(true).unwrap();
        kills += killer.await.unwrap();
        assert_eq!(results.len(), 20_000, "one result per item");
        for (x, result) in results.into_iter().enumerate() {
            match result {
                Ok(y) => assert_eq!(y, x as u64 + 1),
                Err(Error::WorkerDied { .. }) => died += 1,
                Err(e) => panic!("item {x}: {e}"),
            }
        }
    }
    close_and_join(&pool).await;
    Ok((kills, died))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_worker_kills_lose_only_the_tasks_they_ran() -> mp::Result<()> {
    mp::init().await?;
    let (kills, died) = map_under_fire("MapUnderFire0", 0, 200, 20).await?;
    eprintln!("{kills} kills, {died} items reported their worker's death");
    assert!(kills >= 200);
    // A worker runs one chunk (20 items) at a time: at most that many die with it.
    assert!(died <= kills * 20, "{died} items died with {kills} workers");
    Ok(())
}

/// Every item its own task (the stream hands them to the workers' rings itself, a queue of
/// them per worker): a killed worker takes only the one item it was running with it — not
/// the ones queued behind it, nor answers it gave that nobody had read yet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_item_tasks_under_kills_lose_one_item_per_death() -> mp::Result<()> {
    mp::init().await?;
    let (kills, died) = map_under_fire("MapUnderFire2", 0, 60, 1).await?;
    eprintln!("{kills} kills, {died} items reported their worker's death");
    assert!(died <= kills, "{died} items died with {kills} workers");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_retries_every_task_completes_despite_the_kills() -> mp::Result<()> {
    mp::init().await?;
    let (kills, died) = map_under_fire("MapUnderFire3", 3, 200, 20).await?;
    eprintln!("{kills} kills with retries(3)");
    assert_eq!(died, 0, "every task completes with retries");
    Ok(())
}

/// `apply` from four tasks at once while workers are SIGKILLed at random, until at least
/// `min_kills`: each call gives its right value or its worker's death, and never hangs.
async fn apply_under_fire(
    name: &'static str,
    retries: u32,
    min_kills: usize,
) -> mp::Result<(usize, usize)> {
    let pool = Pool::builder()
        .processes(2)
        .retries(retries)
        .name(name)
        .build()?;
    let (mut kills, mut died) = (0, 0);
    while kills < min_kills {
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        let killer = tokio::spawn(kill_workers(name, stop, kills as u64 + 0x51ed));
        let mut callers = Vec::new();
        for t in 0..4u64 {
            let pool = pool.clone();
            callers.push(tokio::spawn(async move {
                let mut died = 0;
                for x in (t * 1_000)..(t * 1_000 + 1_000) {
                    match pool.apply(slow_add_one, x).await {
                        Ok(y) => assert_eq!(y, x + 1),
                        Err(Error::WorkerDied { .. }) => died += 1,
                        Err(e) => panic!("apply({x}): {e}"),
                    }
                }
                died
            }));
        }
        for caller in callers {
            died += tokio::time::timeout(LIVENESS * 4, caller)
                .await
                .expect("apply never hangs")
                .unwrap();
        }
        stop_tx.send(true).unwrap();
        kills += killer.await.unwrap();
    }
    close_and_join(&pool).await;
    Ok((kills, died))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_under_worker_kills_loses_only_what_the_dead_ran() -> mp::Result<()> {
    mp::init().await?;
    let (kills, died) = apply_under_fire("ApplyUnderFire0", 0, 60).await?;
    eprintln!("{kills} kills, {died} applies reported their worker's death");
    // Each worker runs one task at a time; a few more may wait in its ring.
    assert!(
        died <= kills * 40,
        "{died} applies died with {kills} workers"
    );
    let (kills, died) = apply_under_fire("ApplyUnderFire3", 3, 60).await?;
    eprintln!("{kills} kills with retries(3)");
    assert_eq!(died, 0, "every apply completes with retries");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_applies_leave_the_pool_working() -> mp::Result<()> {
    mp::init().await?;
    let pool = Pool::new(2)?;
    // Dropped before the answer (at every stage, as the timeouts vary): the tasks still run,
    // their answers are read by the drivers, and the workers take new calls.
    for round in 0..300u64 {
        let wait = Duration::from_micros(round % 20);
        let _ = tokio::time::timeout(wait, pool.apply(slow_add_one, round)).await;
    }
    for x in 0..200u64 {
        assert_eq!(pool.apply(add_one, x).await?, x + 1);
    }
    pool.close();
    tokio::time::timeout(LIVENESS, pool.join())
        .await
        .expect("join returns: every dropped task was answered");
    Ok(())
}
