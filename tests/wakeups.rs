//! Wake-all reaches every waiter at once, blocking and async, in several processes; and the
//! counts of waiters that were SIGKILLed stop costing notifiers anything.
//!
//! Every process here (the test binary and its children) stretches the safety re-check timer
//! to a minute, so a waiter that a notify failed to wake would sleep for a minute: the tests
//! wait far less than that, which makes "woken by the notify" a liveness check, not a speed
//! check. (In its own test binary, because the timer is process-wide.)

mod support;

use std::time::Duration;

use support::LIVENESS;
use tokio_multiprocessing::{self as mp, Barrier, Event, Queue, Semaphore};

/// Longer than every bound the tests below wait.
const STRETCHED_SAFETY_TIMER: Duration = Duration::from_secs(120);

fn stretch_safety_timer() {
    mp::test_hooks::set_safety_recheck(STRETCHED_SAFETY_TIMER);
}

/// What a child waits on, with `threads` blocking waiters and `tasks` async ones.
#[derive(serde::Serialize, serde::Deserialize)]
enum Waitable {
    Event(Event),
    Queue(Queue<u64>),
    Barrier(Barrier),
}

impl Waitable {
    fn wait_blocking(&self) -> String {
        match self {
            Waitable::Event(e) => {
                e.wait_blocking();
                "set".into()
            }
            Waitable::Queue(q) => format!("{:?}", q.get_blocking()),
            Waitable::Barrier(b) => format!("{:?}", b.wait_blocking().map(|_| ())),
        }
    }

    async fn wait(&self) -> String {
        match self {
            Waitable::Event(e) => {
                e.wait().await;
                "set".into()
            }
            Waitable::Queue(q) => format!("{:?}", q.get().await),
            Waitable::Barrier(b) => format!("{:?}", b.wait().await.map(|_| ())),
        }
    }
}

/// A child: `threads` blocking waiters and `tasks` async waiters on `what`; returns what each
/// saw once all of them are through.
async fn waiters_child((what, threads, tasks): (Waitable, usize, usize)) -> Vec<String> {
    stretch_safety_timer();
    let what = std::sync::Arc::new(what);
    let blocking: Vec<_> = (0..threads)
        .map(|_| {
            let what = what.clone();
            std::thread::spawn(move || what.wait_blocking())
        })
        .collect();
    let asynchronous: Vec<_> = (0..tasks)
        .map(|_| {
            let what = what.clone();
            tokio::spawn(async move { what.wait().await })
        })
        .collect();
    let mut seen = Vec::new();
    for task in asynchronous {
        seen.push(task.await.unwrap());
    }
    for thread in blocking {
        seen.push(thread.join().unwrap());
    }
    seen
}

/// Starts children with 4 blocking and 4 async waiters in all, waits until `counted` says all
/// eight are counted in, runs `wake`, and returns what every waiter saw (within the liveness
/// bound, far below the stretched safety timer).
async fn all_wake(
    what: impl Fn() -> Waitable,
    counted: impl Fn() -> (u32, u32),
    wake: impl FnOnce(),
) -> mp::Result<Vec<String>> {
    stretch_safety_timer();
    let mut children = Vec::new();
    for (threads, tasks) in [(2, 1), (1, 2), (1, 1)] {
        children.push(mp::Process::spawn(waiters_child, (what(), threads, tasks))?);
    }
    assert!(
        support::eventually(|| counted() == (4, 4)),
        "all eight waiters count themselves in: {:?}",
        counted()
    );
    // Let the blocking ones reach FUTEX_WAIT (a waiter not yet asleep sees the change anyway).
    tokio::time::sleep(Duration::from_millis(200)).await;
    wake();
    let mut seen = Vec::new();
    for mut child in children {
        seen.extend(
            child
                .join_timeout(LIVENESS)
                .await
                .expect("every waiter wakes on the notify, not on the safety timer"),
        );
    }
    Ok(seen)
}

#[tokio::test]
async fn event_set_wakes_every_waiter_in_every_process() -> mp::Result<()> {
    mp::init().await?;
    let event = Event::new()?;
    let seen = all_wake(
        || Waitable::Event(event.clone()),
        || mp::test_hooks::event_waiters(&event),
        || event.set(),
    )
    .await?;
    assert_eq!(seen, vec!["set"; 8]);
    Ok(())
}

#[tokio::test]
async fn queue_close_wakes_every_getter_in_every_process() -> mp::Result<()> {
    mp::init().await?;
    let queue = Queue::<u64>::new(4)?;
    let seen = all_wake(
        || Waitable::Queue(queue.clone()),
        || mp::test_hooks::queue_waiters(&queue).0,
        || queue.close(),
    )
    .await?;
    assert_eq!(seen, vec!["Err(Closed)"; 8]);
    Ok(())
}

#[tokio::test]
async fn barrier_releases_every_party_in_every_process() -> mp::Result<()> {
    mp::init().await?;
    let barrier = Barrier::new(9)?;
    let seen = all_wake(
        || Waitable::Barrier(barrier.clone()),
        || {
            let n = barrier.n_waiting() as u32;
            (n.min(4), n.saturating_sub(4))
        },
        || {
            barrier.wait_blocking().unwrap();
        },
    )
    .await?;
    assert_eq!(seen, vec!["Ok(())"; 8]);
    Ok(())
}

/// A child whose waiters count themselves in and are then SIGKILLed.
async fn doomed_waiters((event, ready): (Event, Semaphore)) {
    stretch_safety_timer();
    for _ in 0..2 {
        let sleeper = event.clone();
        std::thread::spawn(move || sleeper.wait_blocking());
        let sleeper = event.clone();
        tokio::spawn(async move { sleeper.wait().await });
    }
    ready.release().unwrap();
    std::future::pending::<()>().await;
}

#[tokio::test]
async fn counts_of_killed_waiters_are_forgotten_and_live_waiters_still_wake() -> mp::Result<()> {
    mp::init().await?;
    stretch_safety_timer();
    let event = Event::new()?;
    let ready = Semaphore::new(0)?;
    let mut doomed = Vec::new();
    for _ in 0..2 {
        doomed.push(mp::Process::spawn(
            doomed_waiters,
            (event.clone(), ready.clone()),
        )?);
    }
    for _ in 0..2 {
        ready.acquire_timeout(LIVENESS).await?.forget();
    }
    assert!(support::eventually(|| mp::test_hooks::event_waiters(
        &event
    ) == (4, 4)));
    for child in &doomed {
        child.kill()?;
    }
    for mut child in doomed {
        let _ = child.join_timeout(LIVENESS).await;
    }
    // The dead stay counted until notifiers find their counts stale.
    assert_eq!(mp::test_hooks::event_waiters(&event), (4, 4));
    assert!(
        support::eventually(|| {
            event.set();
            event.clear();
            mp::test_hooks::event_waiters(&event) == (0, 0)
        }),
        "the dead waiters' counts are never forgotten: {:?}",
        mp::test_hooks::event_waiters(&event)
    );

    // Live waiters counted in while counts are being forgotten still wake on the next set.
    let live = mp::Process::spawn(waiters_child, (Waitable::Event(event.clone()), 2, 2))?;
    assert!(support::eventually(|| mp::test_hooks::event_waiters(
        &event
    ) == (2, 2)));
    for _ in 0..5 {
        // Notifies that change nothing (spurious, as the protocol allows) forget the counts
        // whenever no blocking waiter happens to be asleep, and every 100 ms for async ones;
        // the live waiters must count themselves back in each time.
        mp::test_hooks::event_notify(&event);
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert!(support::eventually(|| mp::test_hooks::event_waiters(
        &event
    ) == (2, 2)));
    event.set();
    let mut live = live;
    assert_eq!(live.join_timeout(LIVENESS).await?, vec!["set"; 4]);
    Ok(())
}

/// What the idle child waits on: an event, a queue, two pipes, a semaphore, a barrier and a
/// condition.
#[derive(serde::Serialize, serde::Deserialize)]
struct Idle {
    event: Event,
    queue: Queue<u64>,
    conns: [mp::Connection<u64>; 2],
    semaphore: Semaphore,
    barrier: Barrier,
    lock: mp::Lock,
    cond: mp::Condition,
    ready: Semaphore,
}

/// A child whose waiters all find nothing: event waiters, queue getters, pipe receivers,
/// semaphore acquirers and barrier parties (a thread and a task each), and a condition waiter.
/// Returns what they got once woken.
async fn idle_waiters(idle: Idle) -> Vec<String> {
    let Idle {
        event,
        queue,
        conns: [mut conn, mut thread_conn],
        semaphore,
        barrier,
        lock,
        cond,
        ready,
    } = idle;
    let threads = [
        std::thread::spawn(move || format!("{:?}", thread_conn.recv_blocking())),
        std::thread::spawn({
            let event = event.clone();
            move || {
                event.wait_blocking();
                "set".to_string()
            }
        }),
        std::thread::spawn({
            let queue = queue.clone();
            move || format!("{:?}", queue.get_blocking())
        }),
        std::thread::spawn({
            let semaphore = semaphore.clone();
            move || {
                semaphore.acquire_blocking().forget();
                "acquired".to_string()
            }
        }),
        std::thread::spawn({
            let barrier = barrier.clone();
            move || format!("{:?}", barrier.wait_blocking().map(|_| ()))
        }),
    ];
    let guard = lock.lock().await.unwrap();
    let tasks = [
        tokio::spawn(async move {
            event.wait().await;
            "set".to_string()
        }),
        tokio::spawn(async move { format!("{:?}", queue.get().await) }),
        tokio::spawn(async move { format!("{:?}", conn.recv().await) }),
        tokio::spawn(async move {
            semaphore.acquire().await.forget();
            "acquired".to_string()
        }),
        tokio::spawn(async move { format!("{:?}", barrier.wait().await.map(|_| ())) }),
        tokio::spawn(async move {
            let (_guard, notified) = cond.wait_timeout(guard, LIVENESS).await.unwrap();
            format!("notified: {notified}")
        }),
    ];
    ready.release().unwrap();
    let mut seen = Vec::new();
    for task in tasks {
        seen.push(task.await.unwrap());
    }
    for thread in threads {
        seen.push(thread.join().unwrap());
    }
    seen.sort();
    seen
}

/// #17's rule for every waiter: check a bounded few µs, then park. A process whose waiters
/// all wait for something that does not come uses a small fraction of the time it waits (one
/// that kept checking would use all of it). Not a speed check: the bound is a tenth of the
/// wall time.
#[tokio::test]
async fn waiters_that_find_nothing_park_and_use_no_cpu() -> mp::Result<()> {
    mp::init().await?;
    let (ours, theirs) = mp::Pipe::<u64>::duplex()?;
    let (ours_too, theirs_too) = mp::Pipe::<u64>::duplex()?;
    let lock = mp::Lock::new()?;
    let idle = Idle {
        event: Event::new()?,
        queue: Queue::<u64>::new(4)?,
        conns: [theirs, theirs_too],
        semaphore: Semaphore::new(0)?,
        barrier: Barrier::new(3)?,
        cond: mp::Condition::new(&lock)?,
        lock,
        ready: Semaphore::new(0)?,
    };
    let (event, queue, semaphore, barrier, lock, cond, ready) = (
        idle.event.clone(),
        idle.queue.clone(),
        idle.semaphore.clone(),
        idle.barrier.clone(),
        idle.lock.clone(),
        idle.cond.clone(),
        idle.ready.clone(),
    );
    let mut child = mp::Process::spawn(idle_waiters, idle)?;
    ready.acquire_timeout(LIVENESS).await?.forget();
    assert!(support::eventually(
        || cond.n_waiting() == 1 && barrier.n_waiting() == 2
    ));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = support::cpu_of(child.pid());
    let idle = Duration::from_secs(1);
    tokio::time::sleep(idle).await;
    let used = support::cpu_of(child.pid()) - before;
    assert!(
        used < idle / 10,
        "a child with parked waiters used {used:?} of CPU in {idle:?}"
    );
    event.set();
    queue.put(1).await?;
    queue.put(2).await?;
    ours.send(&3).await?;
    ours_too.send(&4).await?;
    semaphore.release()?;
    semaphore.release()?;
    barrier.wait_timeout(LIVENESS).await?;
    {
        let _guard = lock.lock().await?;
        assert_eq!(cond.notify(1)?, 1);
    }
    let seen = child.join_timeout(LIVENESS).await?;
    assert_eq!(
        seen,
        [
            "Ok(())",
            "Ok(())",
            "Ok(1)",
            "Ok(2)",
            "Ok(3)",
            "Ok(4)",
            "acquired",
            "acquired",
            "notified: true",
            "set",
            "set"
        ]
    );
    Ok(())
}
