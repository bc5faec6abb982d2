//! Event, Lock and Semaphore across real processes.
//!
//! Several behaviours are ported from CPython's `Lib/test/_test_multiprocessing.py`
//! (`_TestEvent.test_event`, `_TestLock.test_lock`, `_TestSemaphore.test_semaphore`,
//! `test_bounded_semaphore`, `test_timeout`), rewritten for this crate.

mod support;

use std::time::{Duration, Instant};

use futures::FutureExt;
use support::LIVENESS;
use tokio_multiprocessing::{
    self as mp, BoundedSemaphore, Error, Event, Lock, LockError, ProcessFailure, Semaphore,
    SharedMemory,
};

fn read_u64(shm: &SharedMemory, at: usize) -> u64 {
    let mut b = [0u8; 8];
    shm.read_at(at, &mut b).unwrap();
    u64::from_le_bytes(b)
}

fn write_u64(shm: &SharedMemory, at: usize, v: u64) {
    shm.write_at(at, &v.to_le_bytes()).unwrap();
}

// ----- Event -----

#[tokio::test]
async fn event_basics_as_in_cpython() -> mp::Result<()> {
    let event = Event::new()?;
    assert!(!event.is_set());
    assert!(!event.wait_timeout(Duration::ZERO).await);
    let start = Instant::now();
    assert!(!event.wait_timeout(Duration::from_millis(150)).await);
    assert!(start.elapsed() >= Duration::from_millis(150));
    event.set();
    assert!(event.is_set());
    assert!(event.wait_timeout(Duration::ZERO).await);
    event.wait().await;
    event.clear();
    assert!(!event.is_set());
    assert!(!event.wait_timeout_blocking(Duration::from_millis(10)));
    Ok(())
}

async fn wait_for_event((event, arrived, blocking): (Event, Semaphore, bool)) -> u32 {
    arrived.release().unwrap();
    if blocking {
        tokio::task::spawn_blocking(move || event.wait_blocking())
            .await
            .unwrap();
    } else {
        event.wait().await;
    }
    std::process::id()
}

#[tokio::test]
async fn event_wakes_waiters_in_three_processes() -> mp::Result<()> {
    mp::init().await?;
    let event = Event::new()?;
    let arrived = Semaphore::new(0)?;
    let mut children = Vec::new();
    for blocking in [false, true, false] {
        children.push(mp::Process::spawn(
            wait_for_event,
            (event.clone(), arrived.clone(), blocking),
        )?);
    }
    for _ in 0..3 {
        arrived.acquire_timeout(LIVENESS).await?.forget();
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        children.iter().all(|c| c.is_alive()),
        "nobody passes an unset event"
    );
    event.set();
    for child in &mut children {
        let pid = child.join_timeout(LIVENESS).await?;
        assert_eq!(pid, child.pid());
    }
    Ok(())
}

/// Answers each `ping` with a `pong`, `rounds` times (Python's ping-pong through two events).
async fn answer_pings((ping, pong, rounds, blocking): (Event, Event, u32, bool)) -> u32 {
    if blocking {
        tokio::task::spawn_blocking(move || {
            for _ in 0..rounds {
                ping.wait_blocking();
                ping.clear();
                pong.set();
            }
        })
        .await
        .unwrap();
    } else {
        for _ in 0..rounds {
            ping.wait().await;
            ping.clear();
            pong.set();
        }
    }
    rounds
}

/// Two processes setting events back and forth, each waiting for the other: a waiter catches
/// most sets while it checks before parking and parks for the rest (the answering side is
/// slow now and then on a busy machine), and no set is missed either way.
#[tokio::test]
async fn events_set_back_and_forth_between_processes_miss_no_set() -> mp::Result<()> {
    mp::init().await?;
    for blocking in [false, true] {
        let (ping, pong) = (Event::new()?, Event::new()?);
        let rounds = 2_000;
        let mut child =
            mp::Process::spawn(answer_pings, (ping.clone(), pong.clone(), rounds, blocking))?;
        for round in 0..rounds {
            if round.is_multiple_of(100) {
                // Now and then long enough for the answering side to park.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            ping.set();
            assert!(
                pong.wait_timeout(LIVENESS).await,
                "round {round}: the answer never came"
            );
            pong.clear();
        }
        assert_eq!(child.join_timeout(LIVENESS).await?, rounds);
    }
    Ok(())
}

/// The answering side of [`hand_offs_through_every_primitive_miss_nothing`]: `rounds` semaphore
/// ping-pongs, barrier rounds and condition turns, async or on a thread.
async fn answer_hand_offs(
    (ping, pong, barrier, lock, cond, turn, rounds, blocking): (
        Semaphore,
        Semaphore,
        mp::Barrier,
        Lock,
        mp::Condition,
        mp::RawValue<u64>,
        u64,
        bool,
    ),
) -> u64 {
    if blocking {
        let (ping, pong, barrier) = (ping.clone(), pong.clone(), barrier.clone());
        tokio::task::spawn_blocking(move || {
            for _ in 0..rounds {
                ping.acquire_blocking().forget();
                pong.release().unwrap();
            }
            for _ in 0..rounds {
                barrier.wait_blocking().unwrap();
            }
        })
        .await
        .unwrap();
    } else {
        for _ in 0..rounds {
            ping.acquire().await.forget();
            pong.release().unwrap();
        }
        for _ in 0..rounds {
            barrier.wait().await.unwrap();
        }
    }
    // Condition waits are async only: take turns, odd ones ours.
    for i in 0..rounds {
        let mut guard = lock.lock().await.unwrap();
        while turn.get() != 2 * i + 1 {
            guard = cond.wait(guard).await.unwrap();
        }
        turn.set(2 * i + 2);
        cond.notify_all().unwrap();
    }
    rounds
}

/// Semaphore ping-pongs, barrier rounds and condition turns between two processes, each side
/// waiting for the other: a waiter catches most hand-offs while it checks before parking and
/// parks for the rest (the other side pauses now and then), and none is missed.
#[tokio::test]
async fn hand_offs_through_every_primitive_miss_nothing() -> mp::Result<()> {
    mp::init().await?;
    let rounds = 1_000u64;
    for blocking in [false, true] {
        let (ping, pong) = (Semaphore::new(0)?, Semaphore::new(0)?);
        let barrier = mp::Barrier::new(2)?;
        let lock = Lock::new()?;
        let cond = mp::Condition::new(&lock)?;
        let turn = mp::RawValue::new(0u64)?;
        let mut child = mp::Process::spawn(
            answer_hand_offs,
            (
                ping.clone(),
                pong.clone(),
                barrier.clone(),
                lock.clone(),
                cond.clone(),
                turn.clone(),
                rounds,
                blocking,
            ),
        )?;
        let pause = |round: u64| async move {
            if round.is_multiple_of(100) {
                // Long enough for the other side to park.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        };
        for round in 0..rounds {
            pause(round).await;
            ping.release()?;
            pong.acquire_timeout(LIVENESS).await?.forget();
        }
        for round in 0..rounds {
            pause(round).await;
            barrier.wait_timeout(LIVENESS).await?;
        }
        for i in 0..rounds {
            pause(i).await;
            let mut guard = lock.lock().await?;
            turn.set(2 * i + 1);
            cond.notify_all()?;
            while turn.get() != 2 * i + 2 {
                let (again, notified) = cond.wait_timeout(guard, LIVENESS).await?;
                assert!(notified, "turn {i}: the answer never came");
                guard = again;
            }
        }
        assert_eq!(child.join_timeout(LIVENESS).await?, rounds);
    }
    Ok(())
}

// ----- Lock -----

#[tokio::test]
async fn lock_basics_as_in_cpython() -> mp::Result<()> {
    let lock = Lock::new()?;
    let guard = lock.try_lock().map_err(Error::from)?;
    assert!(lock.is_locked());
    assert!(matches!(lock.try_lock(), Err(LockError::WouldBlock)));
    let start = Instant::now();
    assert!(matches!(
        lock.lock_timeout(Duration::from_millis(150)).await,
        Err(LockError::Timeout)
    ));
    assert!(start.elapsed() >= Duration::from_millis(150));
    drop(guard);
    assert!(!lock.is_locked());
    let _again = lock.lock().await.map_err(Error::from)?;
    Ok(())
}

/// Adds 1 to the counter `n` times under the lock, with a read-modify-write that would lose
/// updates without mutual exclusion.
async fn increment((lock, counter, n, blocking): (Lock, SharedMemory, u64, bool)) {
    if blocking {
        tokio::task::spawn_blocking(move || {
            for _ in 0..n {
                let _g = lock.lock_blocking().expect("lock");
                write_u64(&counter, 0, read_u64(&counter, 0) + 1);
            }
        })
        .await
        .unwrap();
    } else {
        for _ in 0..n {
            let _g = lock.lock().await.expect("lock");
            write_u64(&counter, 0, read_u64(&counter, 0) + 1);
        }
    }
}

#[tokio::test]
async fn three_processes_increment_under_a_lock_exactly() -> mp::Result<()> {
    mp::init().await?;
    const N: u64 = 100_000;
    let lock = Lock::new()?;
    let counter = SharedMemory::create(8)?;
    let mut children = Vec::new();
    for blocking in [false, true, false] {
        children.push(mp::Process::spawn(
            increment,
            (lock.clone(), counter.clone(), N, blocking),
        )?);
    }
    for child in &mut children {
        child.join().await?;
    }
    assert_eq!(read_u64(&counter, 0), 3 * N);
    Ok(())
}

/// Takes the lock, says so, and holds it until killed.
async fn hold_forever((lock, holding): (Lock, Event)) {
    let _guard = lock.lock().await.expect("lock");
    holding.set();
    loop {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
}

#[tokio::test]
async fn a_parked_async_waiter_gets_owner_died_when_the_owner_is_killed() -> mp::Result<()> {
    mp::init().await?;
    let (lock, holding) = (Lock::new()?, Event::new()?);
    let mut owner = mp::Process::spawn(hold_forever, (lock.clone(), holding.clone()))?;
    assert!(holding.wait_timeout(LIVENESS).await);
    let waiter = tokio::spawn({
        let lock = lock.clone();
        async move { lock.lock_timeout(LIVENESS).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiter.is_finished(), "a live owner keeps the lock");
    let killed = Instant::now();
    owner.kill()?;
    let mut guard = match waiter.await.unwrap() {
        Err(LockError::OwnerDied(guard)) => guard,
        other => panic!("expected OwnerDied, got {other:?}"),
    };
    eprintln!("OwnerDied {:?} after the kill", killed.elapsed());
    guard.mark_consistent();
    drop(guard);
    assert!(lock.try_lock().is_ok(), "a repaired lock works again");
    let _ = owner.join().await;
    Ok(())
}

#[tokio::test]
async fn a_parked_blocking_waiter_gets_owner_died_too() -> mp::Result<()> {
    mp::init().await?;
    let (lock, holding) = (Lock::new()?, Event::new()?);
    let owner = mp::Process::spawn(hold_forever, (lock.clone(), holding.clone()))?;
    assert!(holding.wait_timeout(LIVENESS).await);
    let waiter = std::thread::spawn({
        let lock = lock.clone();
        move || lock.lock_timeout_blocking(LIVENESS).map(drop)
    });
    std::thread::sleep(Duration::from_millis(100));
    owner.kill()?;
    match waiter.join().unwrap() {
        Err(LockError::OwnerDied(mut guard)) => guard.mark_consistent(),
        other => panic!("expected OwnerDied, got {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn an_unrepaired_lock_is_not_recoverable_for_anyone() -> mp::Result<()> {
    mp::init().await?;
    let (lock, holding) = (Lock::new()?, Event::new()?);
    let mut owner = mp::Process::spawn(hold_forever, (lock.clone(), holding.clone()))?;
    assert!(holding.wait_timeout(LIVENESS).await);
    owner.kill()?;
    let _ = owner.join().await;
    let guard = lock
        .lock_timeout(LIVENESS)
        .await
        .unwrap_err()
        .into_guard()
        .expect("OwnerDied");
    drop(guard); // not marked consistent
    assert!(matches!(lock.try_lock(), Err(LockError::NotRecoverable)));
    assert!(matches!(lock.lock().await, Err(LockError::NotRecoverable)));
    Ok(())
}

#[tokio::test]
async fn a_stopped_owner_is_not_treated_as_dead() -> mp::Result<()> {
    mp::init().await?;
    let (lock, holding) = (Lock::new()?, Event::new()?);
    let mut owner = mp::Process::spawn(hold_forever, (lock.clone(), holding.clone()))?;
    assert!(holding.wait_timeout(LIVENESS).await);
    let pid = owner.pid().to_string();
    std::process::Command::new("kill")
        .args(["-STOP", &pid])
        .status()?;
    assert!(matches!(
        lock.lock_timeout(Duration::from_millis(500)).await,
        Err(LockError::Timeout)
    ));
    std::process::Command::new("kill")
        .args(["-CONT", &pid])
        .status()?;
    assert!(matches!(lock.try_lock(), Err(LockError::WouldBlock)));
    owner.kill()?;
    let _ = owner.join().await;
    let mut guard = lock
        .lock_timeout(LIVENESS)
        .await
        .unwrap_err()
        .into_guard()
        .expect("OwnerDied");
    guard.mark_consistent();
    Ok(())
}

/// Locks and unlocks as fast as it can until killed.
async fn hammer((lock, counter): (Lock, SharedMemory)) {
    loop {
        match lock.lock().await {
            Ok(_g) => write_u64(&counter, 0, read_u64(&counter, 0) + 1),
            Err(LockError::OwnerDied(mut g)) => g.mark_consistent(),
            Err(e) => panic!("{e}"),
        }
    }
}

#[tokio::test]
async fn survivors_always_proceed_after_200_random_kills() -> mp::Result<()> {
    mp::init().await?;
    let lock = Lock::new()?;
    let counter = SharedMemory::create(8)?;
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let (mut recovered, mut clean) = (0, 0);
    for _ in 0..200 {
        let mut child = mp::Process::spawn(hammer, (lock.clone(), counter.clone()))?;
        // Let it get going, then kill it at a random point.
        let before = read_u64(&counter, 0);
        let deadline = Instant::now() + LIVENESS;
        while read_u64(&counter, 0) == before && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        tokio::time::sleep(Duration::from_micros(seed % 3000)).await;
        child.kill()?;
        assert!(matches!(
            child.join().await,
            Err(Error::Process(ProcessFailure::Signaled(9)))
        ));
        match lock.lock_timeout(LIVENESS).await {
            Ok(_) => clean += 1,
            Err(LockError::OwnerDied(mut g)) => {
                g.mark_consistent();
                recovered += 1;
            }
            Err(e) => panic!("the survivor could not proceed: {e}"),
        }
    }
    eprintln!("200 kills: {recovered} while holding the lock, {clean} while not");
    assert!(read_u64(&counter, 0) > 0);
    Ok(())
}

// ----- Semaphore -----

#[tokio::test]
async fn semaphore_basics_as_in_cpython() -> mp::Result<()> {
    let sem = Semaphore::new(2)?;
    let a = sem.try_acquire()?;
    let b = sem.acquire().await;
    assert_eq!(sem.available_permits(), 0);
    assert!(matches!(sem.try_acquire(), Err(Error::Empty)));
    let start = Instant::now();
    assert!(matches!(
        sem.acquire_timeout(Duration::from_millis(150)).await,
        Err(Error::Timeout)
    ));
    assert!(start.elapsed() >= Duration::from_millis(150));
    drop(a);
    assert_eq!(sem.available_permits(), 1);
    b.forget();
    assert_eq!(sem.available_permits(), 1);
    sem.release()?;
    sem.release()?; // a plain Semaphore may go above its start, as in Python
    assert_eq!(sem.available_permits(), 3);

    let bounded = BoundedSemaphore::new(1)?;
    assert!(matches!(bounded.release(), Err(Error::InvalidArgument(_))));
    let p = bounded.acquire().await;
    drop(p);
    assert_eq!(bounded.available_permits(), 1);
    Ok(())
}

/// Enters the section guarded by the semaphore, recording how many are inside at once.
async fn enter_section((sem, lock, stats): (BoundedSemaphore, Lock, SharedMemory)) {
    for _ in 0..20 {
        let _permit = sem.acquire().await;
        {
            let _g = lock.lock().await.unwrap();
            let inside = read_u64(&stats, 0) + 1;
            write_u64(&stats, 0, inside);
            write_u64(&stats, 8, read_u64(&stats, 8).max(inside));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
        let _g = lock.lock().await.unwrap();
        write_u64(&stats, 0, read_u64(&stats, 0) - 1);
    }
}

#[tokio::test]
async fn a_semaphore_limits_concurrency_across_four_processes() -> mp::Result<()> {
    mp::init().await?;
    let (sem, lock, stats) = (
        BoundedSemaphore::new(2)?,
        Lock::new()?,
        SharedMemory::create(16)?,
    );
    let mut children = Vec::new();
    for _ in 0..4 {
        children.push(mp::Process::spawn(
            enter_section,
            (sem.clone(), lock.clone(), stats.clone()),
        )?);
    }
    for child in &mut children {
        child.join().await?;
    }
    assert_eq!(read_u64(&stats, 0), 0);
    let max = read_u64(&stats, 8);
    assert!((1..=2).contains(&max), "{max} inside at once");
    assert_eq!(sem.available_permits(), 2);
    Ok(())
}

// ----- cancellation -----

#[tokio::test]
async fn cancelled_waits_leave_no_trace() -> mp::Result<()> {
    let lock = Lock::new()?;
    let guard = lock.lock().await.map_err(Error::from)?;
    // Poll once (pending: the lock is held), then drop the future.
    assert!(lock.lock().now_or_never().is_none());
    assert_eq!(mp::test_hooks::lock_waiters(&lock), (0, 0));
    drop(guard);
    assert!(lock.try_lock().is_ok(), "the dropped waiter took nothing");

    let event = Event::new()?;
    {
        let wait = event.wait();
        tokio::pin!(wait);
        assert!((&mut wait).now_or_never().is_none());
        assert_eq!(
            mp::test_hooks::event_waiters(&event),
            (0, 1),
            "a parked waiter is counted"
        );
    }
    assert_eq!(
        mp::test_hooks::event_waiters(&event),
        (0, 0),
        "and uncounted when dropped"
    );

    let sem = Semaphore::new(0)?;
    for _ in 0..100 {
        let _ = tokio::time::timeout(Duration::from_micros(50), sem.acquire()).await;
    }
    sem.release()?;
    assert_eq!(
        sem.available_permits(),
        1,
        "no cancelled acquire kept a permit"
    );
    Ok(())
}

// ----- handles -----

async fn set_through_pipe(mut conn: mp::Connection<Event>) {
    let event = conn.recv().await.unwrap();
    event.set();
}

#[tokio::test]
async fn primitives_travel_inside_messages() -> mp::Result<()> {
    mp::init().await?;
    let (ours, theirs) = mp::Pipe::<Event>::duplex()?;
    let mut child = mp::Process::spawn(set_through_pipe, theirs)?;
    let event = Event::new()?;
    ours.send(&event).await?;
    assert!(event.wait_timeout(LIVENESS).await);
    child.join().await?;
    Ok(())
}

// ----- Value and Array -----

async fn add_to_value((value, n): (mp::Value<u64>, u64)) {
    for _ in 0..n {
        *value.lock().await.expect("lock") += 1;
    }
}

#[tokio::test]
async fn value_counts_exactly_across_three_processes() -> mp::Result<()> {
    mp::init().await?;
    let value = mp::Value::new(0u64)?;
    let mut children = Vec::new();
    for _ in 0..3 {
        children.push(mp::Process::spawn(add_to_value, (value.clone(), 5_000))?);
    }
    for child in &mut children {
        child.join().await?;
    }
    assert_eq!(value.get(), 15_000);
    Ok(())
}

async fn negate(array: mp::Array<f64>) -> usize {
    let mut items = array.lock().await.expect("lock");
    for x in items.iter_mut() {
        *x = -*x;
    }
    items.len()
}

#[tokio::test]
async fn array_is_shared_with_a_child() -> mp::Result<()> {
    mp::init().await?;
    let array = mp::Array::new(&[1.0, 2.5, -3.0])?;
    assert_eq!(mp::Process::spawn(negate, array.clone())?.join().await?, 3);
    assert_eq!(array.to_vec(), [-1.0, -2.5, 3.0]);
    let raw = mp::RawValue::new(7i32)?;
    raw.set(8);
    assert_eq!(raw.get(), 8);
    Ok(())
}

// ----- Barrier -----

async fn barrier_rounds((barrier, rounds): (mp::Barrier, usize)) -> Vec<usize> {
    let mut indices = Vec::new();
    for _ in 0..rounds {
        indices.push(barrier.wait_timeout(LIVENESS).await.expect("round"));
    }
    indices
}

#[tokio::test]
async fn a_barrier_holds_four_processes_for_ten_rounds() -> mp::Result<()> {
    mp::init().await?;
    let barrier = mp::Barrier::new(4)?;
    let mut children = Vec::new();
    for _ in 0..4 {
        children.push(mp::Process::spawn(barrier_rounds, (barrier.clone(), 10))?);
    }
    let mut per_child = Vec::new();
    for child in &mut children {
        per_child.push(child.join().await?);
    }
    for round in 0..10 {
        let mut seen: Vec<usize> = per_child.iter().map(|v| v[round]).collect();
        seen.sort();
        assert_eq!(
            seen,
            [0, 1, 2, 3],
            "round {round}: one index each, exactly one leader (3)"
        );
    }
    assert!(!barrier.is_broken());
    // Then abort and reset, and the same barrier serves another round of four.
    barrier.abort();
    assert!(barrier.is_broken());
    assert!(matches!(barrier.wait().await, Err(Error::Broken)));
    barrier.reset();
    assert!(!barrier.is_broken());
    let mut again = Vec::new();
    for _ in 0..3 {
        again.push(mp::Process::spawn(barrier_rounds, (barrier.clone(), 1))?);
    }
    let mine = barrier.wait_timeout(LIVENESS).await?;
    let mut seen = vec![mine];
    for child in &mut again {
        seen.extend(child.join().await?);
    }
    seen.sort();
    assert_eq!(seen, [0, 1, 2, 3]);
    Ok(())
}

/// Two parties of a barrier in one process, a task and a thread: `rounds` rounds each; returns
/// per round a bitmask of the indices they got. With `late`, the task comes 2 ms late every
/// 50th round, so the other parties park.
async fn two_parties((barrier, rounds, late): (mp::Barrier, usize, bool)) -> Vec<u64> {
    let thread = std::thread::spawn({
        let barrier = barrier.clone();
        move || {
            (0..rounds)
                .map(|_| 1u64 << barrier.wait_timeout_blocking(LIVENESS).unwrap())
                .collect::<Vec<u64>>()
        }
    });
    let mut masks = Vec::with_capacity(rounds);
    for round in 0..rounds {
        if late && round % 50 == 25 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        masks.push(1u64 << barrier.wait_timeout(LIVENESS).await.unwrap());
    }
    let theirs = tokio::task::spawn_blocking(move || thread.join().unwrap())
        .await
        .unwrap();
    masks.iter().zip(theirs).map(|(a, b)| a | b).collect()
}

/// CPython's barrier tests in spirit: six parties in three processes (a task and a thread
/// each), 200 rounds, some parties late now and then: every round completes, and in every
/// round the six got the indices 0–5, each once (Python's `wait` returns a distinct index).
#[tokio::test]
async fn a_barrier_of_six_in_three_processes_hands_out_every_index_each_round() -> mp::Result<()> {
    mp::init().await?;
    let rounds = 200;
    let barrier = mp::Barrier::new(6)?;
    let children: Vec<_> = (0..2)
        .map(|_| mp::Process::spawn(two_parties, (barrier.clone(), rounds, false)))
        .collect::<mp::Result<_>>()?;
    let mut all = two_parties((barrier.clone(), rounds, true)).await;
    for mut child in children {
        let theirs = child.join_timeout(LIVENESS).await?;
        for (mask, other) in all.iter_mut().zip(theirs) {
            assert_eq!(*mask & other, 0, "an index handed out twice in one round");
            *mask |= other;
        }
    }
    assert!(all.iter().all(|&mask| mask == 0b11_1111), "{all:?}");
    Ok(())
}

async fn wait_at_barrier(barrier: mp::Barrier) -> String {
    match barrier.wait_timeout(LIVENESS).await {
        Ok(i) => format!("ok {i}"),
        Err(e) => format!("{e:?}"),
    }
}

#[tokio::test]
async fn abort_breaks_waiters_and_reset_makes_the_barrier_usable_again() -> mp::Result<()> {
    mp::init().await?;
    let barrier = mp::Barrier::new(3)?;
    let mut early = mp::Process::spawn(wait_at_barrier, barrier.clone())?;
    while barrier.n_waiting() < 1 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    barrier.abort();
    assert_eq!(early.join().await?, "Broken");
    assert!(
        matches!(barrier.wait().await, Err(Error::Broken)),
        "stays broken"
    );
    barrier.reset();
    assert!(!barrier.is_broken());
    let mut a = mp::Process::spawn(wait_at_barrier, barrier.clone())?;
    let mut b = mp::Process::spawn(wait_at_barrier, barrier.clone())?;
    let mine = barrier.wait_timeout(LIVENESS).await?;
    let (ra, rb) = (a.join().await?, b.join().await?);
    assert!(ra.starts_with("ok") && rb.starts_with("ok"), "{ra} {rb}");
    assert!(mine < 3);
    Ok(())
}

#[tokio::test]
async fn a_party_dying_at_the_barrier_breaks_it_for_the_others() -> mp::Result<()> {
    mp::init().await?;
    let barrier = mp::Barrier::new(3)?;
    let mut doomed = mp::Process::spawn(wait_at_barrier, barrier.clone())?;
    while barrier.n_waiting() < 1 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    doomed.kill()?;
    let _ = doomed.join().await;
    assert!(matches!(
        barrier.wait_timeout(LIVENESS).await,
        Err(Error::Broken)
    ));
    Ok(())
}

#[tokio::test]
async fn a_barrier_timeout_breaks_it() -> mp::Result<()> {
    let barrier = mp::Barrier::new(2)?;
    let start = Instant::now();
    assert!(matches!(
        barrier.wait_timeout(Duration::from_millis(100)).await,
        Err(Error::Timeout)
    ));
    assert!(start.elapsed() >= Duration::from_millis(100));
    assert!(barrier.is_broken());
    assert!(matches!(
        mp::Barrier::new(0),
        Err(Error::InvalidArgument(_))
    ));
    Ok(())
}

// ----- RLock -----

async fn rlock_increment((lock, counter, n): (mp::RLock, SharedMemory, u64)) {
    for _ in 0..n {
        let _outer = lock.lock().await.expect("lock");
        let _inner = lock.lock().await.expect("re-entry");
        write_u64(&counter, 0, read_u64(&counter, 0) + 1);
    }
}

#[tokio::test]
async fn rlock_is_reentrant_for_its_task_and_exclusive_for_others() -> mp::Result<()> {
    mp::init().await?;
    let lock = mp::RLock::new()?;
    let outer = lock.lock().await?;
    let inner = lock.try_lock()?;
    let other = tokio::spawn({
        let lock = lock.clone();
        async move {
            lock.lock_timeout(Duration::from_millis(100))
                .await
                .map(drop)
        }
    });
    assert!(other.await.unwrap().is_err(), "another task waits");
    drop(outer);
    assert!(lock.is_locked(), "still held by the inner guard");
    drop(inner);
    assert!(!lock.is_locked());

    let counter = SharedMemory::create(8)?;
    let mut children = Vec::new();
    for _ in 0..2 {
        children.push(mp::Process::spawn(
            rlock_increment,
            (lock.clone(), counter.clone(), 5_000),
        )?);
    }
    for child in &mut children {
        child.join().await?;
    }
    assert_eq!(read_u64(&counter, 0), 10_000);
    Ok(())
}

// ----- Condition -----

async fn wait_on_condition((lock, cond, woken): (Lock, mp::Condition, Semaphore)) -> bool {
    let guard = lock.lock().await.expect("lock");
    let (_guard, notified) = cond.wait_timeout(guard, LIVENESS).await.expect("wait");
    woken.release().unwrap();
    notified
}

#[tokio::test]
async fn notify_n_wakes_exactly_n_waiters_across_processes() -> mp::Result<()> {
    mp::init().await?;
    let lock = Lock::new()?;
    let cond = mp::Condition::new(&lock)?;
    let woken = Semaphore::new(0)?;
    let mut children = Vec::new();
    for _ in 0..4 {
        children.push(mp::Process::spawn(
            wait_on_condition,
            (lock.clone(), cond.clone(), woken.clone()),
        )?);
    }
    let deadline = Instant::now() + LIVENESS;
    while cond.n_waiting() < 4 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(cond.n_waiting(), 4);
    assert!(cond.notify(1).is_err(), "notify needs the lock");
    {
        let _g = lock.lock().await.map_err(Error::from)?;
        assert_eq!(cond.notify(2)?, 2);
    }
    for _ in 0..2 {
        woken.acquire_timeout(LIVENESS).await?.forget();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(woken.available_permits(), 0, "exactly two woke");
    assert_eq!(cond.n_waiting(), 2);
    {
        let _g = lock.lock().await.map_err(Error::from)?;
        assert_eq!(cond.notify_all()?, 2);
    }
    for child in &mut children {
        assert!(
            child.join().await?,
            "every waiter was notified, none timed out"
        );
    }
    Ok(())
}

#[tokio::test]
async fn timed_out_waiters_and_past_notifies_are_not_counted() -> mp::Result<()> {
    let lock = Lock::new()?;
    let cond = mp::Condition::new(&lock)?;
    // Nobody waits: the notify is not stored.
    {
        let _g = lock.lock().await.map_err(Error::from)?;
        assert_eq!(cond.notify(1)?, 0);
    }
    let guard = lock.lock().await.map_err(Error::from)?;
    let (guard, notified) = cond.wait_timeout(guard, Duration::from_millis(100)).await?;
    assert!(!notified);
    drop(guard);
    // The timed-out waiter does not absorb the next notify.
    let waiter = tokio::spawn({
        let (lock, cond) = (lock.clone(), cond.clone());
        async move {
            let guard = lock.lock().await.map_err(Error::from)?;
            cond.wait_timeout(guard, LIVENESS).await.map(|(_, n)| n)
        }
    });
    while cond.n_waiting() == 0 {
        tokio::task::yield_now().await;
    }
    {
        let _g = lock.lock().await.map_err(Error::from)?;
        assert_eq!(cond.notify(1)?, 1);
    }
    assert!(waiter.await.unwrap()?);
    Ok(())
}

#[tokio::test]
async fn a_cancelled_waiter_passes_its_notification_on() -> mp::Result<()> {
    let lock = Lock::new()?;
    let cond = mp::Condition::new(&lock)?;
    let first = {
        let (lock, cond) = (lock.clone(), cond.clone());
        tokio::spawn(async move {
            let guard = lock.lock().await.map_err(Error::from)?;
            cond.wait(guard).await.map(drop)
        })
    };
    while cond.n_waiting() < 1 {
        tokio::task::yield_now().await;
    }
    let second = {
        let (lock, cond) = (lock.clone(), cond.clone());
        tokio::spawn(async move {
            let guard = lock.lock().await.map_err(Error::from)?;
            cond.wait_timeout(guard, LIVENESS).await.map(|(_, n)| n)
        })
    };
    while cond.n_waiting() < 2 {
        tokio::task::yield_now().await;
    }
    {
        let _g = lock.lock().await.map_err(Error::from)?;
        assert_eq!(cond.notify(1)?, 1); // the oldest: `first`
    }
    first.abort(); // cancelled before it could use the notification
    let _ = first.await;
    assert!(
        second.await.unwrap()?,
        "the notification moved on to the next waiter"
    );
    Ok(())
}

/// The "any program" for primitives passed with `mp::pass`.
#[tokio::test]
async fn helper_uses_inherited_primitives() {
    if std::env::var_os("TKMP_TEST_HELPER").is_none() {
        return;
    }
    let (event, array): (Event, mp::RawArray<u32>) = mp::inherited("sync").expect("inherited");
    array.set(1, 42).unwrap();
    event.set();
}

#[tokio::test]
async fn primitives_pass_to_a_command_child() -> mp::Result<()> {
    let event = Event::new()?;
    let array = mp::RawArray::new(&[0u32; 3])?;
    let mut cmd = support::helper_command("helper_uses_inherited_primitives")?;
    mp::pass(&mut cmd, "sync", &(event.clone(), array.clone()))?;
    let mut child = cmd.spawn()?;
    assert!(event.wait_timeout(LIVENESS).await);
    assert_eq!(array.to_vec(), [0, 42, 0]);
    assert!(matches!(
        array.get(3),
        Err(Error::IndexOutOfRange { index: 3, len: 3 })
    ));
    assert!(child.wait().await?.success());
    Ok(())
}

async fn hold_value((value, holding): (mp::Value<u64>, Event)) {
    let mut guard = value.lock().await.expect("lock");
    *guard = 41;
    holding.set();
    loop {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
}

#[tokio::test]
async fn a_value_whose_holder_died_comes_back_flagged_and_usable() -> mp::Result<()> {
    mp::init().await?;
    let value = mp::Value::new(0u64)?;
    let holding = Event::new()?;
    let mut owner = mp::Process::spawn(hold_value, (value.clone(), holding.clone()))?;
    assert!(holding.wait_timeout(LIVENESS).await);
    owner.kill()?;
    let _ = owner.join().await;
    {
        let mut guard = value.lock_timeout(LIVENESS).await.map_err(Error::from)?;
        assert!(guard.owner_died());
        assert_eq!(
            *guard, 0,
            "the dead holder's private copy was never written back"
        );
        *guard = 7;
    }
    let guard = value.lock().await.map_err(Error::from)?;
    assert!(!guard.owner_died());
    assert_eq!(*guard, 7);
    Ok(())
}
