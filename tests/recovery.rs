//! Every primitive recovers from peers that die, are cancelled or forge shared state: RLock
//! after repeated owner deaths, Condition slots of dead waiters, a Barrier wait that is
//! dropped, a LIFO ring whose words disagree; and the Python parity that came with them
//! (`Condition.wait_for(timeout)`, a Barrier action, `Queue.shutdown(immediate=True)`).

mod support;

use std::time::Duration;

use support::LIVENESS;
use tokio_multiprocessing::{
    self as mp, Barrier, Condition, Error, JoinableQueue, LifoQueue, Lock, Queue, RLock, Semaphore,
    sync::RLockError,
};

// ----- RLock -----

/// Takes the lock (twice, re-entering), says so, and waits to be killed.
async fn hold_rlock_forever((lock, held): (RLock, Semaphore)) {
    let outer = match lock.lock().await {
        Ok(guard) => guard,
        Err(RLockError::OwnerDied(mut guard)) => {
            guard.mark_consistent();
            guard
        }
        Err(e) => panic!("{e}"),
    };
    let _inner = lock.lock().await.unwrap();
    held.release().unwrap();
    std::future::pending::<()>().await;
    drop(outer);
}

/// Regression: `mark_consistent` on an `RLockGuard` did nothing (the guard's `Arc` was never
/// unique), so after an owner's death the lock became not recoverable for everyone.
#[tokio::test]
async fn rlock_recovers_after_repeated_owner_deaths() -> mp::Result<()> {
    mp::init().await?;
    let lock = RLock::new()?;
    let held = Semaphore::new(0)?;
    for round in 0..3 {
        let mut holder = mp::Process::spawn(hold_rlock_forever, (lock.clone(), held.clone()))?;
        held.acquire_timeout(LIVENESS).await?.forget();
        holder.kill()?;
        let _ = holder.join_timeout(LIVENESS).await;
        match lock.lock_timeout(LIVENESS).await {
            Err(RLockError::OwnerDied(mut guard)) => {
                // Re-entering works on a recovered hold too, and any guard may mark it.
                let mut inner = lock.try_lock().expect("re-entry after recovery");
                inner.mark_consistent();
                drop(inner);
                guard.mark_consistent();
            }
            other => panic!("round {round}: expected OwnerDied, got {other:?}"),
        }
        assert!(!lock.is_locked(), "round {round}: released");
        let guard = lock
            .lock_timeout(LIVENESS)
            .await
            .unwrap_or_else(|e| panic!("round {round}: the lock stays usable, got {e:?}"));
        drop(guard);
    }
    Ok(())
}

// ----- Condition -----

/// `tasks` waiters on `cond`; each reports when it is waiting, then waits (for good).
async fn condition_waiters((lock, cond, tasks, waiting): (Lock, Condition, usize, Semaphore)) {
    let mut all = Vec::new();
    for _ in 0..tasks {
        let (lock, cond, waiting) = (lock.clone(), cond.clone(), waiting.clone());
        all.push(tokio::spawn(async move {
            let guard = lock.lock().await.unwrap();
            waiting.release().unwrap();
            // Notified or not, re-taking the lock blocks while the parent holds it.
            let _ = cond.wait(guard).await;
            std::future::pending::<()>().await
        }));
    }
    for task in all {
        let _ = task.await;
    }
}

async fn start_condition_waiters(
    lock: &Lock,
    cond: &Condition,
    per_child: usize,
    children: usize,
) -> mp::Result<Vec<mp::Process<()>>> {
    let waiting = Semaphore::new(0)?;
    let mut spawned = Vec::new();
    for _ in 0..children {
        spawned.push(mp::Process::spawn(
            condition_waiters,
            (lock.clone(), cond.clone(), per_child, waiting.clone()),
        )?);
    }
    for _ in 0..per_child * children {
        waiting.acquire_timeout(LIVENESS).await?.forget();
    }
    assert!(support::eventually(
        || cond.n_waiting() == per_child * children
    ));
    Ok(spawned)
}

async fn kill_all(children: Vec<mp::Process<()>>) {
    for child in &children {
        child.kill().unwrap();
    }
    for mut child in children {
        let _ = child.join_timeout(LIVENESS).await;
    }
}

/// Regression: waiters killed after `notify_all` marked them, before they re-took the lock,
/// kept their slots for good; after 128 such deaths every `wait` failed with "more than 128
/// waiters" although `n_waiting()` said 0.
#[tokio::test]
async fn condition_reclaims_slots_of_waiters_killed_after_notify() -> mp::Result<()> {
    mp::init().await?;
    let lock = Lock::new()?;
    let cond = Condition::new(&lock)?;
    for _ in 0..2 {
        let children = start_condition_waiters(&lock, &cond, 64, 2).await?;
        let guard = lock.lock().await?;
        assert_eq!(cond.notify_all()?, 128);
        // They are notified and blocked on the lock we hold: kill them there.
        kill_all(children).await;
        drop(guard);
        assert_eq!(cond.n_waiting(), 0);
    }
    let guard = lock.lock().await?;
    let (guard, notified) = cond
        .wait_timeout(guard, Duration::from_millis(50))
        .await
        .expect("the dead waiters' slots are free again");
    assert!(!notified);
    drop(guard);
    Ok(())
}

/// Waiters killed while parked free their slots without anyone notifying.
#[tokio::test]
async fn condition_reclaims_slots_of_waiters_killed_while_parked() -> mp::Result<()> {
    mp::init().await?;
    let lock = Lock::new()?;
    let cond = Condition::new(&lock)?;
    let children = start_condition_waiters(&lock, &cond, 128, 1).await?;
    kill_all(children).await;
    assert_eq!(cond.n_waiting(), 0, "dead waiters do not count");
    let guard = lock.lock().await?;
    let (_guard, notified) = cond.wait_timeout(guard, Duration::from_millis(50)).await?;
    assert!(!notified);
    Ok(())
}

/// A notification that went to a waiter killed before it re-took the lock is passed on to a
/// live waiter rather than lost.
// Multi-threaded: the spawned waiter runs while this thread polls with a blocking sleep.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn condition_passes_on_a_notification_a_dead_waiter_took() -> mp::Result<()> {
    mp::init().await?;
    let lock = Lock::new()?;
    let cond = Condition::new(&lock)?;
    let doomed = start_condition_waiters(&lock, &cond, 1, 1).await?;
    let live = tokio::spawn({
        let (lock, cond) = (lock.clone(), cond.clone());
        async move {
            let guard = lock.lock().await?;
            let (_guard, notified) = cond.wait_timeout(guard, LIVENESS).await?;
            Ok::<bool, Error>(notified)
        }
    });
    assert!(support::eventually(|| cond.n_waiting() == 2));
    let guard = lock.lock().await?;
    assert_eq!(
        cond.notify(1)?,
        1,
        "the oldest waiter, the doomed one, is chosen"
    );
    kill_all(doomed).await;
    drop(guard);
    // Anyone looking at the slots frees the dead one and passes its notification on.
    let _ = cond.n_waiting();
    assert!(
        live.await.unwrap()?,
        "the live waiter gets the notification"
    );
    Ok(())
}

/// Python's `Condition.wait_for(predicate, timeout)`: the predicate's last value.
#[tokio::test]
async fn condition_wait_for_with_a_timeout() -> mp::Result<()> {
    mp::init().await?;
    let lock = Lock::new()?;
    let cond = Condition::new(&lock)?;
    let ready = mp::Event::new()?;
    let guard = lock.lock().await?;
    let (guard, held) = cond
        .wait_for_timeout(guard, Duration::from_millis(100), || ready.is_set())
        .await?;
    assert!(!held, "times out with the predicate false");
    drop(guard);
    let setter = tokio::spawn({
        let (lock, cond, ready) = (lock.clone(), cond.clone(), ready.clone());
        async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let _guard = lock.lock().await.unwrap();
            ready.set();
            cond.notify_all().unwrap();
        }
    });
    let guard = lock.lock().await?;
    let (_guard, held) = cond
        .wait_for_timeout(guard, LIVENESS, || ready.is_set())
        .await?;
    assert!(held);
    setter.await.unwrap();
    Ok(())
}

// ----- Barrier -----

async fn barrier_party(barrier: Barrier) -> String {
    format!("{:?}", barrier.wait_timeout(LIVENESS).await.map(|_| ()))
}

/// Regression: a `wait` dropped after its first poll still counted as arrived, so the round
/// completed with a party missing. Now a cancelled waiter breaks the barrier, as a timeout
/// does in Python.
#[tokio::test]
async fn a_cancelled_barrier_wait_breaks_the_barrier() -> mp::Result<()> {
    mp::init().await?;
    let barrier = Barrier::new(3)?;
    let mut other = mp::Process::spawn(barrier_party, barrier.clone())?;
    assert!(support::eventually(|| barrier.n_waiting() == 1));
    // Arrive, then give up before the round completes.
    let cancelled = tokio::time::timeout(Duration::from_millis(50), barrier.wait()).await;
    assert!(
        cancelled.is_err(),
        "the round cannot complete with two of three"
    );
    assert!(barrier.is_broken());
    assert_eq!(other.join_timeout(LIVENESS).await?, "Err(Broken)");
    // The third party does not pass alone.
    assert!(matches!(barrier.wait().await, Err(Error::Broken)));
    barrier.reset();
    assert!(!barrier.is_broken());
    Ok(())
}

fn count_round() {
    ROUNDS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
}

static ROUNDS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A party that arrives last in every round (the parent waits for the others first): it runs
/// the action, which counts in this process.
async fn last_party((barrier, rounds): (Barrier, usize)) -> usize {
    for _ in 0..rounds {
        while barrier.n_waiting() < barrier.parties() - 1 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        barrier.wait_timeout(LIVENESS).await.unwrap();
    }
    ROUNDS.load(std::sync::atomic::Ordering::SeqCst)
}

fn panicking_action() {
    panic!("the action failed");
}

/// Python's `Barrier(parties, action)`: the action runs once per round, in the last party to
/// arrive, before anyone is released, also in a child that got the barrier as an argument.
// Multi-threaded: the spawned waiter runs while this thread polls with a blocking sleep.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_barrier_action_runs_once_per_round_in_the_last_party() -> mp::Result<()> {
    mp::init().await?;
    let barrier = Barrier::with_action(2, count_round)?;
    let mut child = mp::Process::spawn(last_party, (barrier.clone(), 5))?;
    for _ in 0..5 {
        barrier.wait_timeout(LIVENESS).await?;
    }
    assert_eq!(
        child.join_timeout(LIVENESS).await?,
        5,
        "the child ran all 5"
    );
    assert_eq!(ROUNDS.load(std::sync::atomic::Ordering::SeqCst), 0);

    // A panicking action breaks the barrier; the panic goes on in its party.
    let failing = Barrier::with_action(2, panicking_action)?;
    let waiter = tokio::spawn({
        let failing = failing.clone();
        async move { failing.wait_timeout(LIVENESS).await }
    });
    assert!(support::eventually(|| failing.n_waiting() == 1));
    let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| failing.wait_blocking()));
    assert!(ran.is_err(), "the action's panic reaches the last party");
    assert!(matches!(waiter.await.unwrap(), Err(Error::Broken)));
    Ok(())
}

// ----- Queues -----

/// Regression: a LIFO ring whose item count says empty while its positions hold records
/// passed validation, and `get_timeout` then spun at 100 % CPU forever without yielding.
#[test]
fn a_lifo_ring_whose_count_and_positions_disagree_is_corrupt_not_a_spin() {
    let queue = LifoQueue::<u64>::new(0).unwrap();
    queue.try_put(1).unwrap();
    queue.try_put(2).unwrap();
    let ((_, head_pos), (tail_items, _)) = mp::test_hooks::queue_marks(&queue);
    mp::test_hooks::queue_forge_head(&queue, tail_items, head_pos);
    let (done, result) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let got = rt.block_on(queue.get_timeout(Duration::from_millis(10)));
        let _ = done.send(format!("{got:?}"));
    });
    let got = result
        .recv_timeout(LIVENESS)
        .expect("get_timeout returns instead of spinning");
    assert!(got.starts_with("Err(Corrupt("), "{got}");
}

async fn get_one(queue: Queue<u64>) -> String {
    format!("{:?}", queue.get_timeout(LIVENESS).await)
}

/// Python 3.13's `Queue.shutdown(immediate=True)`: queued items are discarded and every
/// getter, waiting or not, in every process, gets `Closed` at once.
#[tokio::test]
async fn shutdown_immediate_discards_items_and_wakes_every_getter() -> mp::Result<()> {
    mp::init().await?;
    let queue = Queue::<u64>::new(0)?;
    let mut waiting = Vec::new();
    for _ in 0..3 {
        waiting.push(mp::Process::spawn(get_one, queue.clone())?);
    }
    assert!(support::eventually(|| {
        let ((blocking, tasks), _) = mp::test_hooks::queue_waiters(&queue);
        blocking + tasks == 3
    }));
    let big = vec![7u8; 4 << 20]; // spilled: its segment must go too
    let bytes = Queue::<Vec<u8>>::builder().capacity(4096).build()?;
    bytes.put(big).await.unwrap();
    bytes.put(vec![1]).await.unwrap();
    let prefix = mp::test_hooks::queue_spill_prefix(&bytes);
    bytes.shutdown(true);
    assert!(bytes.is_empty());
    assert!(matches!(bytes.get().await, Err(Error::Closed)));
    assert!(
        !std::fs::read_dir("/dev/shm")?
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with(&prefix))
    );

    queue.shutdown(true);
    for mut child in waiting {
        assert_eq!(child.join_timeout(LIVENESS).await?, "Err(Closed)");
    }
    assert!(matches!(queue.put(1).await, Err(mp::PutError::Closed(1))));
    Ok(())
}

/// A JoinableQueue's `join` returns after an immediate shutdown: discarded items count done.
#[tokio::test]
async fn shutdown_immediate_releases_join() -> mp::Result<()> {
    let queue = JoinableQueue::<u64>::new(0)?;
    for i in 0..10 {
        queue.put(i).await.unwrap();
    }
    let _ = queue.get().await?;
    queue.task_done()?;
    queue.shutdown(true);
    tokio::time::timeout(LIVENESS, queue.join())
        .await
        .expect("join returns once the rest is discarded");
    Ok(())
}
