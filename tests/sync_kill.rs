//! The synchronization primitives under fire: holders and waiters SIGKILLed at random, at least
//! 200 times per primitive, half of them async tasks and half blocking threads. Every survivor
//! must finish each wait within a liveness bound (a wait that times out counts as a failure),
//! and the primitive must be usable afterwards.
//!
//! Children count failures and progress in shared memory first (a child killed while
//! panicking could not report it otherwise); the parent asserts no failure and some progress.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use support::LIVENESS;
use tokio_multiprocessing::{
    self as mp, Barrier, Condition, Error, Event, Lock, LockError, RLock, Semaphore, SharedMemory,
    sync::RLockError,
};

const KILLS: usize = 200;
const WORKERS: usize = 4;

/// A wait that takes longer than this is a failure: survivors must never wait on the dead.
const BOUND: Duration = LIVENESS;

#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct Books<P> {
    primitive: P,
    /// Word 0: failures; word 1: operations completed.
    counters: SharedMemory,
}

impl<P> Books<P> {
    fn fail(&self, what: String) -> ! {
        self.counters
            .atomic_u32(0)
            .unwrap()
            .fetch_add(1, Ordering::SeqCst);
        panic!("{what}");
    }

    fn progress(&self) {
        self.counters
            .atomic_u32(4)
            .unwrap()
            .fetch_add(1, Ordering::Relaxed);
    }
}

/// Runs `WORKERS` children of `worker` (worker `i` is blocking when `i` is odd), SIGKILLs one at
/// random `KILLS` times (replacing it), then checks the books.
async fn harness<P, F>(primitive: P, worker: F) -> mp::Result<()>
where
    P: Clone + serde::Serialize + serde::de::DeserializeOwned + 'static,
    F: Fn((Books<P>, usize)) -> WorkerFuture + Copy + Send + 'static,
{
    mp::init().await?;
    let books = Books {
        primitive,
        counters: SharedMemory::create(64)?,
    };
    let spawn = |index: usize| mp::Process::spawn(worker, (books.clone(), index));
    let mut workers = (0..WORKERS).map(spawn).collect::<mp::Result<Vec<_>>>()?;
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut random = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for kill in 0..KILLS {
        tokio::time::sleep(Duration::from_micros(random() % 3000)).await;
        let index = (random() % WORKERS as u64) as usize;
        let victim = &mut workers[index];
        victim.kill()?;
        match victim.join_timeout(BOUND).await {
            Err(Error::Process(mp::ProcessFailure::Signaled(9))) => {}
            other => panic!("kill {kill}: worker {index} ended on its own: {other:?}"),
        }
        // The replacement takes the next index of the same parity (async or blocking).
        workers[index] = spawn(index + WORKERS * (kill + 1))?;
    }
    for worker in &workers {
        worker.kill()?;
    }
    for mut worker in workers {
        let _ = worker.join_timeout(BOUND).await;
    }
    let failures = books.counters.atomic_u32(0)?.load(Ordering::SeqCst);
    let progress = books.counters.atomic_u32(4)?.load(Ordering::SeqCst);
    eprintln!("{KILLS} kills, {progress} operations, {failures} failures");
    assert_eq!(failures, 0, "a survivor failed (see its message above)");
    assert!(progress > 0, "nobody made progress");
    Ok(())
}

type WorkerFuture = std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>;

/// Runs `op` forever, as an async task or (odd `index`) on a blocking thread.
fn run_forever<P: Clone + Send + 'static>(
    books: Books<P>,
    index: usize,
    op_async: fn(&Books<P>) -> WorkerFuture,
    op_blocking: fn(&Books<P>),
) -> WorkerFuture {
    Box::pin(async move {
        if index % 2 == 1 {
            tokio::task::spawn_blocking(move || {
                loop {
                    op_blocking(&books);
                    books.progress();
                }
            })
            .await
            .unwrap();
        } else {
            loop {
                op_async(&books).await;
                books.progress();
            }
        }
    })
}

// ----- Lock -----

fn lock_worker((books, index): (Books<Lock>, usize)) -> WorkerFuture {
    run_forever(
        books,
        index,
        |b| {
            let b = b.clone();
            Box::pin(async move {
                let guard = b.primitive.lock_timeout(BOUND).await;
                hold_lock(&b, guard);
                tokio::task::yield_now().await;
            })
        },
        |b| {
            let guard = b.primitive.lock_timeout_blocking(BOUND);
            hold_lock(b, guard);
        },
    )
}

fn hold_lock<P>(books: &Books<P>, guard: Result<mp::LockGuard, LockError>) {
    match guard {
        Ok(guard) => drop(guard),
        Err(LockError::OwnerDied(mut guard)) => guard.mark_consistent(),
        Err(e) => books.fail(format!("lock: {e}")),
    }
}

#[tokio::test]
async fn lock_survives_200_kills() -> mp::Result<()> {
    let lock = Lock::new()?;
    harness(lock.clone(), lock_worker).await?;
    let guard = match lock.lock_timeout(BOUND).await {
        Ok(guard) => guard,
        Err(LockError::OwnerDied(mut guard)) => {
            guard.mark_consistent();
            guard
        }
        Err(e) => panic!("unusable afterwards: {e}"),
    };
    drop(guard);
    assert!(lock.try_lock().is_ok());
    Ok(())
}

// ----- RLock -----

fn rlock_worker((books, index): (Books<RLock>, usize)) -> WorkerFuture {
    run_forever(
        books,
        index,
        |b| {
            let b = b.clone();
            Box::pin(async move {
                let outer = b.primitive.lock_timeout(BOUND).await;
                let outer = hold_rlock(&b, outer);
                let inner = b.primitive.lock_timeout(BOUND).await;
                drop(hold_rlock(&b, inner));
                drop(outer);
                tokio::task::yield_now().await;
            })
        },
        |b| {
            let outer = hold_rlock(b, b.primitive.lock_blocking());
            drop(hold_rlock(b, b.primitive.lock_blocking()));
            drop(outer);
        },
    )
}

fn hold_rlock<P>(
    books: &Books<P>,
    guard: Result<mp::sync::RLockGuard, RLockError>,
) -> mp::sync::RLockGuard {
    match guard {
        Ok(guard) => guard,
        Err(RLockError::OwnerDied(mut guard)) => {
            guard.mark_consistent();
            guard
        }
        Err(e) => books.fail(format!("rlock: {e}")),
    }
}

#[tokio::test]
async fn rlock_survives_200_kills() -> mp::Result<()> {
    let lock = RLock::new()?;
    harness(lock.clone(), rlock_worker).await?;
    let books = Books {
        primitive: (),
        counters: SharedMemory::create(64)?,
    };
    drop(hold_rlock(&books, lock.lock_timeout(BOUND).await));
    assert!(lock.try_lock().is_ok(), "usable afterwards");
    Ok(())
}

// ----- Condition -----

/// Even workers run four waiters each, waiting for the shared counter to move; odd ones move
/// it and notify everyone. Killed waiters hold slots (parked, or notified and blocked on the
/// lock); they must be reclaimed, or after 128 deaths every wait fails.
fn condition_worker(
    (books, index): (Books<(Lock, Condition, SharedMemory)>, usize),
) -> WorkerFuture {
    Box::pin(async move {
        let waiters = if index % 2 == 1 { 1 } else { 4 };
        let tasks: Vec<_> = (0..waiters)
            .map(|_| tokio::spawn(condition_loop(books.clone(), index % 2 == 1)))
            .collect();
        for task in tasks {
            let _ = task.await;
        }
    })
}

async fn condition_loop(books: Books<(Lock, Condition, SharedMemory)>, notifier: bool) {
    let (lock, cond, shared) = books.primitive.clone();
    let counter = shared.atomic_u32(0).unwrap();
    loop {
        let guard = match lock.lock_timeout(BOUND).await {
            Ok(guard) => guard,
            Err(LockError::OwnerDied(mut guard)) => {
                guard.mark_consistent();
                guard
            }
            Err(e) => books.fail(format!("lock: {e}")),
        };
        if notifier {
            counter.fetch_add(1, Ordering::SeqCst);
            cond.notify_all().unwrap();
            drop(guard);
            tokio::time::sleep(Duration::from_micros(200)).await;
        } else {
            let seen = counter.load(Ordering::SeqCst);
            match cond
                .wait_for_timeout(guard, BOUND, || counter.load(Ordering::SeqCst) != seen)
                .await
            {
                Ok((_guard, true)) => {}
                Ok((_, false)) => books.fail("a condition waiter was never notified".into()),
                // The lock's holder died while we waited: the lock was recovered for us.
                Err(Error::OwnerDied) => {}
                Err(e) => books.fail(format!("condition wait: {e}")),
            }
        }
        books.progress();
    }
}

#[tokio::test]
async fn condition_survives_200_kills() -> mp::Result<()> {
    let lock = Lock::new()?;
    let cond = Condition::new(&lock)?;
    harness(
        (lock.clone(), cond.clone(), SharedMemory::create(8)?),
        condition_worker,
    )
    .await?;
    assert_eq!(cond.n_waiting(), 0, "no dead waiter keeps a slot");
    let guard = match lock.lock_timeout(BOUND).await {
        Ok(guard) => guard,
        Err(LockError::OwnerDied(mut guard)) => {
            guard.mark_consistent();
            guard
        }
        Err(e) => panic!("{e}"),
    };
    let (_guard, notified) = cond.wait_timeout(guard, Duration::from_millis(20)).await?;
    assert!(!notified, "usable afterwards");
    Ok(())
}

// ----- Semaphore -----

fn semaphore_worker((books, index): (Books<Semaphore>, usize)) -> WorkerFuture {
    run_forever(
        books,
        index,
        |b| {
            let b = b.clone();
            Box::pin(async move {
                match b.primitive.acquire_timeout(BOUND).await {
                    Ok(permit) => {
                        tokio::task::yield_now().await;
                        drop(permit);
                    }
                    Err(e) => b.fail(format!("acquire: {e}")),
                }
            })
        },
        |b| match b.primitive.acquire_timeout_blocking(BOUND) {
            Ok(permit) => drop(permit),
            Err(e) => b.fail(format!("acquire: {e}")),
        },
    )
}

/// A semaphore has no owners (as in Python): a holder killed with a permit takes it along.
/// With more permits than kills, the survivors never starve.
#[tokio::test]
async fn semaphore_survives_200_kills() -> mp::Result<()> {
    let permits = (KILLS + 2 * WORKERS) as u32;
    let semaphore = Semaphore::new(permits)?;
    harness(semaphore.clone(), semaphore_worker).await?;
    let left = semaphore.available_permits();
    assert!(
        left >= permits - KILLS as u32 - WORKERS as u32,
        "only killed holders' permits are gone: {left} of {permits}"
    );
    semaphore.acquire_timeout(BOUND).await?.forget();
    semaphore.release()?;
    Ok(())
}

// ----- Barrier -----

/// Every worker is a party. A party killed while waiting breaks the barrier (the others notice
/// within the liveness check); whoever sees it broken resets it, and the replacement joins.
fn barrier_worker((books, index): (Books<Barrier>, usize)) -> WorkerFuture {
    run_forever(
        books,
        index,
        |b| {
            let b = b.clone();
            Box::pin(async move {
                match b.primitive.wait_timeout(BOUND).await {
                    Ok(_) => {}
                    Err(Error::Broken) => {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        if b.primitive.is_broken() {
                            b.primitive.reset();
                        }
                    }
                    Err(e) => b.fail(format!("barrier: {e}")),
                }
            })
        },
        |b| match b.primitive.wait_timeout_blocking(BOUND) {
            Ok(_) => {}
            Err(Error::Broken) => {
                std::thread::sleep(Duration::from_millis(1));
                if b.primitive.is_broken() {
                    b.primitive.reset();
                }
            }
            Err(e) => b.fail(format!("barrier: {e}")),
        },
    )
}

#[tokio::test]
async fn barrier_survives_200_kills() -> mp::Result<()> {
    let barrier = Barrier::new(WORKERS)?;
    harness(barrier.clone(), barrier_worker).await?;
    barrier.reset();
    let parties: Vec<_> = (0..WORKERS)
        .map(|_| {
            let barrier = barrier.clone();
            tokio::spawn(async move { barrier.wait_timeout(BOUND).await })
        })
        .collect();
    for party in parties {
        party.await.unwrap()?;
    }
    Ok(())
}

// ----- Event -----

/// Odd workers wait for the event (blocking), even ones set and clear it and wait (async).
fn event_worker((books, index): (Books<Event>, usize)) -> WorkerFuture {
    run_forever(
        books,
        index,
        |b| {
            let b = b.clone();
            Box::pin(async move {
                b.primitive.set();
                if !b.primitive.wait_timeout(BOUND).await {
                    b.fail("an event waiter was never woken".into());
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
                b.primitive.clear();
                tokio::time::sleep(Duration::from_millis(1)).await;
            })
        },
        |b| {
            if !b.primitive.wait_timeout_blocking(BOUND) {
                b.fail("an event waiter was never woken".into());
            }
            std::thread::sleep(Duration::from_micros(100));
        },
    )
}

#[tokio::test]
async fn event_survives_200_kills() -> mp::Result<()> {
    let event = Event::new()?;
    harness(event.clone(), event_worker).await?;
    event.clear();
    let waiter = tokio::spawn({
        let event = event.clone();
        async move { event.wait_timeout(BOUND).await }
    });
    tokio::task::yield_now().await;
    event.set();
    assert!(waiter.await.unwrap(), "usable afterwards");
    Ok(())
}
