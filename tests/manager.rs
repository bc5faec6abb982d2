//! Managers across real processes: user types and every built-in proxy used from spawned
//! children, reference counts with children that are killed, a manager killed mid-call,
//! remote clients over TCP with right and wrong authkeys, hostile bytes, and
//! `SharedMemoryManager` cleanup (behaviours ported from CPython's `_TestContainers`,
//! `_TestManagerRestart`, `TestSyncManagerTypes`, `_TestRemoteManager` and
//! `_TestSharedMemory.test_shared_memory_SharedMemoryManager_basics`).

mod support;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use support::LIVENESS;
use tokio_multiprocessing::manager::{
    BarrierProxy, ConditionProxy, DictProxy, EventProxy, ListProxy, LockProxy, ManagedLockError,
    NamespaceProxy, QueueProxy, SemaphoreProxy, ValueProxy,
};
use tokio_multiprocessing::{self as mp, Error, Manager, Process};

#[derive(Default, Serialize, Deserialize)]
struct Maths {
    calls: u64,
}

mp::managed! {
    pub proxy MathsProxy for Maths {
        pub fn add(&mut self, x: i64, y: i64) -> i64 {
            self.calls += 1;
            x + y
        }
        pub fn mul(&mut self, x: i64, y: i64) -> i64 {
            self.calls += 1;
            x * y
        }
        pub fn calls(&self) -> u64 {
            self.calls
        }
        pub fn divide(&self, x: i64, y: i64) -> Result<i64, String> {
            if y == 0 {
                return Err(format!("{x} / 0"));
            }
            Ok(x / y)
        }
        pub fn explode(&self) {
            panic!("boom in the manager");
        }
    }
}

/// Waits (asynchronously) until the manager holds `n` objects.
async fn wait_for_count(manager: &Manager, n: usize) -> usize {
    let deadline = tokio::time::Instant::now() + LIVENESS;
    loop {
        let count = manager.object_count().await.unwrap();
        if count == n || tokio::time::Instant::now() > deadline {
            return count;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn maths_in_child(maths: MathsProxy) -> mp::Result<(i64, i64)> {
    Ok((maths.add(4, 3).await?, maths.mul(6, 7).await?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_type_is_shared_by_processes() -> mp::Result<()> {
    mp::init().await?;
    let manager = Manager::builder().register::<Maths>().start().await?;
    let maths = manager.create(Maths::default()).await?;
    assert_eq!(maths.add(4, 3).await?, 7);
    let mut children = Vec::new();
    for _ in 0..3 {
        children.push(Process::spawn(maths_in_child, maths.clone())?);
    }
    for mut child in children {
        assert_eq!(child.join().await??, (7, 42));
    }
    // Every copy reached the same object.
    assert_eq!(maths.calls().await?, 7);
    // A method's own error arrives typed; a panic arrives as `Remote` and the manager goes on.
    assert_eq!(maths.divide(8, 2).await?, Ok(4));
    assert_eq!(maths.divide(1, 0).await?, Err("1 / 0".to_string()));
    match maths.explode().await {
        Err(Error::Remote(message)) => {
            assert!(message.contains("boom in the manager"), "{message}")
        }
        other => panic!("expected Remote, got {other:?}"),
    }
    assert_eq!(maths.add(1, 1).await?, 2);
    // An unregistered type is refused.
    #[derive(Serialize, Deserialize)]
    struct Unregistered;
    mp::managed! {
        proxy UnregisteredProxy for Unregistered {
            fn nothing(&self) {}
        }
    }
    assert!(matches!(
        manager.create(Unregistered).await,
        Err(Error::Remote(_))
    ));
    manager.shutdown().await?;
    assert!(matches!(maths.add(1, 2).await, Err(Error::Closed)));
    Ok(())
}

async fn count_up(counts: DictProxy<String, u64>) -> mp::Result<()> {
    for _ in 0..100 {
        counts
            .update_with("hits", |n| Some(n.unwrap_or(0) + 1))
            .await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dict_read_modify_write_from_three_processes_loses_nothing() -> mp::Result<()> {
    mp::init().await?;
    let manager = Manager::start().await?;
    let counts = manager.dict::<String, u64>().await?;
    let mut children = Vec::new();
    for _ in 0..3 {
        children.push(Process::spawn(count_up, counts.clone())?);
    }
    count_up(counts.clone()).await?;
    for mut child in children {
        child.join().await??;
    }
    assert_eq!(counts.get("hits").await?, Some(400));
    // Python's dict behaviours: order of insertion, update, remove, clear.
    counts.insert("b".into(), 2).await?;
    counts
        .update([("a".to_string(), 1), ("hits".to_string(), 0)])
        .await?;
    assert_eq!(counts.keys().await?, ["hits", "b", "a"]);
    assert_eq!(counts.values().await?, [0, 2, 1]);
    assert_eq!(counts.remove("b").await?, Some(2));
    assert_eq!(counts.remove("b").await?, None);
    assert!(counts.contains_key("a").await?);
    assert_eq!(counts.len().await?, 2);
    counts.clear().await?;
    assert!(counts.is_empty().await?);
    manager.shutdown().await
}

/// A child that uses one of every other built-in proxy.
#[derive(Serialize, Deserialize)]
struct Kit {
    list: ListProxy<u32>,
    value: ValueProxy<f64>,
    namespace: NamespaceProxy,
    queue: QueueProxy<String>,
    event: EventProxy,
    semaphore: SemaphoreProxy,
    barrier: BarrierProxy,
}

async fn use_kit(kit: Kit) -> mp::Result<u64> {
    kit.list.extend([4, 5]).await?;
    kit.list.insert(0, 0).await?;
    kit.value.update_with(|v| v * 2.0).await?;
    kit.namespace.set("from_child", &"hello").await?;
    kit.queue
        .put("item from child".into())
        .await
        .map_err(Error::from)?;
    kit.semaphore.acquire().await?;
    kit.event.wait().await?;
    kit.barrier.wait().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_builtin_proxy_works_from_a_child() -> mp::Result<()> {
    mp::init().await?;
    let manager = Manager::start().await?;
    let kit = Kit {
        list: manager.list([1, 2, 3]).await?,
        value: manager.value(1.5).await?,
        namespace: manager.namespace().await?,
        queue: manager.queue(1).await?,
        event: manager.event().await?,
        semaphore: manager.bounded_semaphore(1).await?,
        barrier: manager.barrier(2).await?,
    };
    let list = kit.list.clone();
    let value = kit.value.clone();
    let namespace = kit.namespace.clone();
    let queue = kit.queue.clone();
    let event = kit.event.clone();
    let semaphore = kit.semaphore.clone();
    let barrier = kit.barrier.clone();
    let mut child = Process::spawn(use_kit, kit)?;

    assert_eq!(queue.get().await?, "item from child");
    // The child holds the only permit until the event is set.
    while semaphore.value().await? != 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(matches!(semaphore.try_acquire().await, Err(Error::Timeout)));
    event.set().await?;
    let mine = barrier.wait().await?;
    let theirs = child.join().await??;
    assert_eq!(mine + theirs, 1, "arrival indices 0 and 1");
    assert_eq!(list.to_vec().await?, [0, 1, 2, 3, 4, 5]);
    assert_eq!(value.get().await?, 3.0);
    assert_eq!(
        namespace.get::<String>("from_child").await?.as_deref(),
        Some("hello")
    );
    assert_eq!(namespace.names().await?, ["from_child"]);
    // Python's list errors and a bounded semaphore's over-release.
    assert!(matches!(
        list.get(6).await,
        Err(Error::IndexOutOfRange { index: 6, len: 6 })
    ));
    semaphore.release().await?;
    assert!(matches!(
        semaphore.release().await,
        Err(Error::InvalidArgument(_))
    ));
    manager.shutdown().await
}

async fn hold_lock_and_hang(lock: LockProxy) -> mp::Result<()> {
    let guard = lock.acquire().await?;
    std::mem::forget(guard);
    std::future::pending::<()>().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_held_by_a_killed_process_is_released_with_owner_died_each_time() -> mp::Result<()> {
    mp::init().await?;
    let manager = Manager::start().await?;
    let lock = manager.lock().await?;
    // The same role dies three times; every time the next locker learns of it.
    for _ in 0..3 {
        let child = Process::spawn(hold_lock_and_hang, lock.clone())?;
        let deadline = tokio::time::Instant::now() + LIVENESS;
        while !lock.is_locked().await? {
            assert!(tokio::time::Instant::now() < deadline, "child never locked");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(matches!(
            lock.try_acquire().await,
            Err(ManagedLockError::Timeout)
        ));
        child.kill()?;
        let guard = match tokio::time::timeout(LIVENESS, lock.acquire())
            .await
            .unwrap()
        {
            Err(ManagedLockError::OwnerDied(guard)) => guard,
            other => panic!("expected OwnerDied, got {other:?}"),
        };
        guard.release().await?;
        // Told once: the next acquire is ordinary.
        drop(lock.acquire().await.expect("free again"));
    }
    manager.shutdown().await
}

async fn hold_and_wait(args: (MathsProxy, EventProxy)) -> mp::Result<()> {
    let (_maths, event) = args;
    event.set().await?;
    std::future::pending::<()>().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_held_only_by_killed_children_are_dropped() -> mp::Result<()> {
    mp::init().await?;
    let manager = Manager::builder().register::<Maths>().start().await?;
    for round in 0..3 {
        let maths = manager.create(Maths::default()).await?;
        let started = manager.event().await?;
        let child = Process::spawn(hold_and_wait, (maths.clone(), started.clone()))?;
        started.wait().await?;
        drop(started);
        drop(maths);
        // The child's proxies keep both objects alive.
        assert_eq!(manager.object_count().await?, 2, "round {round}");
        child.kill()?;
        assert_eq!(wait_for_count(&manager, 0).await, 0, "round {round}");
    }
    // Proxies that travel and are dropped everywhere release the object too.
    let maths = manager.create(Maths::default()).await?;
    let mut child = Process::spawn(maths_in_child, maths.clone())?;
    child.join().await??;
    assert_eq!(manager.object_count().await?, 1);
    drop(maths);
    assert_eq!(wait_for_count(&manager, 0).await, 0);
    manager.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_manager_fails_pending_and_later_calls_with_closed() -> mp::Result<()> {
    mp::init().await?;
    let manager = Manager::start().await?;
    let queue = manager.queue::<u32>(0).await?;
    let waiting = tokio::spawn({
        let queue = queue.clone();
        async move { queue.get().await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let pid = manager.pid().expect("we started it");
    rustix_kill(pid);
    let outcome = tokio::time::timeout(LIVENESS, waiting)
        .await
        .expect("not hung");
    assert!(matches!(outcome.unwrap(), Err(Error::Closed)));
    assert!(matches!(queue.put(1).await, Err(mp::PutError::Closed(1))));
    assert!(matches!(manager.object_count().await, Err(Error::Closed)));
    Ok(())
}

fn rustix_kill(pid: u32) {
    std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("kill runs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_get_loses_and_duplicates_no_item() -> mp::Result<()> {
    mp::init().await?;
    let manager = Manager::builder().serve().await?;
    let queue = manager.queue::<u32>(0).await?;
    let mut received = Vec::new();
    for round in 0..1000u32 {
        // Race a get against the put that satisfies it, dropping the get at varied moments:
        // before it was sent, while the manager waits, and after the manager handed it the item.
        let get = queue.get();
        queue.put(round).await.map_err(Error::from)?;
        let wait = Duration::from_micros(u64::from(round % 10) * 5);
        if let Ok(item) = tokio::time::timeout(wait, get).await {
            received.push(item?);
        }
    }
    // Items handed to dropped gets come back to the queue.
    while received.len() < 1000 {
        match queue.get_timeout(LIVENESS).await {
            Ok(item) => received.push(item),
            Err(e) => panic!("{} items missing: {e}", 1000 - received.len()),
        }
    }
    received.sort_unstable();
    assert_eq!(received, (0..1000).collect::<Vec<_>>());
    assert!(matches!(queue.try_get().await, Err(Error::Empty)));
    manager.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_get_is_withdrawn_and_the_next_get_takes_the_item() -> mp::Result<()> {
    mp::init().await?;
    let manager = Manager::builder().serve().await?;
    let queue = manager.queue::<u32>(0).await?;
    for i in 0..50 {
        assert!(
            tokio::time::timeout(Duration::from_millis(1), queue.get())
                .await
                .is_err()
        );
        queue.put(i).await.map_err(Error::from)?;
        assert_eq!(queue.get_timeout(LIVENESS).await?, i);
    }
    // A full bounded queue hands the item back.
    let small = manager.queue::<String>(1).await?;
    small.put("a".into()).await.map_err(Error::from)?;
    match small
        .put_timeout("b".into(), Duration::from_millis(20))
        .await
    {
        Err(mp::PutError::Timeout(item)) => assert_eq!(item, "b"),
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert!(matches!(
        small.try_put("c".into()).await,
        Err(mp::PutError::Full(_))
    ));
    assert!(matches!(queue.try_get().await, Err(Error::Empty)));
    manager.shutdown().await
}

async fn remote_worker(args: (String, Vec<u8>)) -> mp::Result<u64> {
    let (address, authkey) = args;
    let manager = Manager::connect(address.parse::<mp::connection::Address>()?, &authkey).await?;
    let jobs: QueueProxy<u64> = manager.lookup("jobs").await?;
    let mut sum = 0;
    loop {
        match jobs.get().await? {
            0 => return Ok(sum),
            job => sum += job,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_workers_find_a_published_queue_over_tcp() -> mp::Result<()> {
    mp::init().await?;
    let manager = Manager::builder()
        .bind("127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap())
        .authkey(b"right key")
        .serve()
        .await?;
    let jobs = manager.queue::<u64>(0).await?;
    manager.publish("jobs", &jobs).await?;
    let address = manager.address().to_string();
    let mut workers = Vec::new();
    for _ in 0..2 {
        workers.push(Process::spawn(
            remote_worker,
            (address.clone(), b"right key".to_vec()),
        )?);
    }
    for job in 1..=100u64 {
        jobs.put(job).await.map_err(Error::from)?;
    }
    for _ in 0..2 {
        jobs.put(0).await.map_err(Error::from)?;
    }
    let mut total = 0;
    for mut worker in workers {
        total += worker.join().await??;
    }
    assert_eq!(total, 5050);
    // A wrong key is refused, and the manager goes on serving.
    let wrong = Process::spawn(remote_worker, (address.clone(), b"wrong key".to_vec()))?
        .join()
        .await?;
    assert!(wrong.is_err(), "{wrong:?}");
    // Garbage on a raw socket drops that connection only.
    {
        use tokio::io::AsyncWriteExt;
        let mut raw = tokio::net::TcpStream::connect(address.as_str()).await?;
        raw.write_all(&[0xff; 4096]).await?;
    }
    // A name that is not there, or of another type.
    assert!(matches!(
        manager.lookup::<QueueProxy<u64>>("nothing").await,
        Err(Error::Remote(_))
    ));
    assert!(matches!(
        manager.lookup::<EventProxy>("jobs").await,
        Err(Error::InvalidArgument(_))
    ));
    // No key on TCP is refused up front.
    assert!(matches!(
        Manager::builder()
            .bind("127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap())
            .serve()
            .await,
        Err(Error::InvalidArgument(_))
    ));
    assert_eq!(jobs.len().await?, 0);
    manager.shutdown().await
}

async fn sum_list(list: mp::ShareableList) -> mp::Result<i64> {
    let mut sum = 0;
    for i in 0..list.len() {
        if let mp::Item::Int(v) = list.get(i)? {
            sum += v;
        }
    }
    Ok(sum)
}

fn segment_exists(name: &str) -> bool {
    std::path::Path::new("/dev/shm").join(name).exists()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_memory_manager_unlinks_its_segments_at_shutdown() -> mp::Result<()> {
    mp::init().await?;
    let smm = mp::SharedMemoryManager::start().await?;
    let memory = smm.shared_memory(4096).await?;
    let list = smm.shareable_list((0..2000).map(|i| i as i64)).await?;
    let names = [
        memory.name().unwrap().to_owned(),
        list.name().unwrap().to_owned(),
    ];
    let a = Process::spawn(sum_list, list.clone())?;
    let b = Process::spawn(sum_list, list.clone())?;
    for mut child in [a, b] {
        assert_eq!(child.join().await??, 1999 * 2000 / 2);
    }
    // Our handles do not keep the segments: the manager does.
    drop((memory, list));
    assert!(names.iter().all(|n| segment_exists(n)));
    smm.shutdown().await?;
    assert!(names.iter().all(|n| !segment_exists(n)), "{names:?}");
    Ok(())
}

async fn start_smm_and_hang(report: mp::connection::Connection<Vec<String>>) -> mp::Result<()> {
    let smm = mp::SharedMemoryManager::start().await?;
    let memory = smm.shared_memory(1024).await?;
    let list = smm.shareable_list([1i64, 2, 3]).await?;
    let names = vec![
        memory.name().unwrap().to_owned(),
        list.name().unwrap().to_owned(),
    ];
    report.send(&names).await?;
    std::future::pending::<()>().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_memory_manager_cleans_up_when_its_owner_is_killed() -> mp::Result<()> {
    mp::init().await?;
    for _ in 0..2 {
        let (mut ours, theirs) = mp::Pipe::<Vec<String>>::duplex()?;
        let owner = Process::spawn(start_smm_and_hang, theirs)?;
        let names = tokio::time::timeout(LIVENESS, ours.recv())
            .await
            .expect("the owner reports")?;
        assert!(names.iter().all(|n| segment_exists(n)));
        owner.kill()?;
        let deadline = tokio::time::Instant::now() + LIVENESS;
        while names.iter().any(|n| segment_exists(n)) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "segments left behind: {names:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(())
}

async fn wait_on_condition(args: (ConditionProxy, ValueProxy<u32>)) -> mp::Result<u32> {
    let (condition, value) = args;
    let mut guard = condition.acquire().await?;
    // Python's `wait_for(predicate)`; a short timed wait first, which times out.
    let early = condition
        .wait_for_timeout(&mut guard, Duration::from_millis(10), || async {
            Ok(value.get().await? == 99)
        })
        .await?;
    assert!(!early);
    condition
        .wait_for(&mut guard, || async { Ok(value.get().await? != 0) })
        .await?;
    value.get().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn condition_notify_all_wakes_waiters_in_several_processes() -> mp::Result<()> {
    mp::init().await?;
    let manager = Manager::start().await?;
    let condition = manager.condition().await?;
    let value = manager.value(0u32).await?;
    let mut children = Vec::new();
    for _ in 0..3 {
        children.push(Process::spawn(
            wait_on_condition,
            (condition.clone(), value.clone()),
        )?);
    }
    // Let them reach their waits (a notify with nobody waiting is lost; the loop re-checks).
    tokio::time::sleep(Duration::from_millis(200)).await;
    {
        let _guard = condition.acquire().await?;
        value.set(7).await?;
        condition.notify_all().await?;
    }
    for mut child in children {
        assert_eq!(
            tokio::time::timeout(LIVENESS, child.join())
                .await
                .expect("woken")??,
            7
        );
    }
    // A re-entrant lock from the manager.
    let rlock = manager.rlock().await?;
    let outer = rlock.acquire().await?;
    let inner = rlock.try_acquire().await.expect("re-entrant");
    drop(inner);
    assert!(rlock.is_locked().await?);
    outer.release().await?;
    manager.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_tasks_share_one_proxy() -> mp::Result<()> {
    mp::init().await?;
    let manager = Manager::builder().register::<Maths>().start().await?;
    let maths = manager.create(Maths::default()).await?;
    let mut tasks: Vec<tokio::task::JoinHandle<mp::Result<()>>> = Vec::new();
    for t in 0..8i64 {
        let maths = maths.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..100 {
                assert_eq!(maths.add(t, i).await?, t + i);
            }
            mp::Result::Ok(())
        }));
    }
    for task in tasks {
        task.await.unwrap()?;
    }
    assert_eq!(maths.calls().await?, 800);
    let pid = manager.pid().expect("we started it");
    drop(maths);
    drop(manager);
    // Dropping the only `Manager` stops the manager process.
    assert!(support::eventually(|| !support::is_running(pid)));
    Ok(())
}

async fn worker_takes_jobs(jobs: QueueProxy<u32>) -> mp::Result<u32> {
    let mut done = 0;
    loop {
        let job = jobs.get().await?;
        jobs.task_done().await?;
        if job == 0 {
            return Ok(done);
        }
        done += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joinable_queue_join_waits_for_task_done_in_other_processes() -> mp::Result<()> {
    mp::init().await?;
    let manager = Manager::start().await?;
    // A bounded queue: the producer waits for room (backpressure) as the workers take.
    let jobs = manager.joinable_queue::<u32>(4).await?;
    let a = Process::spawn(worker_takes_jobs, jobs.clone())?;
    let b = Process::spawn(worker_takes_jobs, jobs.clone())?;
    for job in 1..=50 {
        jobs.put(job).await.map_err(Error::from)?;
    }
    tokio::time::timeout(LIVENESS, jobs.join())
        .await
        .expect("join returns once every item is done")?;
    jobs.put(0).await.map_err(Error::from)?;
    jobs.put(0).await.map_err(Error::from)?;
    let mut total = 0;
    for mut child in [a, b] {
        total += child.join().await??;
    }
    assert_eq!(total, 50);
    assert!(matches!(
        jobs.task_done().await,
        Err(Error::InvalidArgument(_))
    ));
    manager.shutdown().await
}

async fn add_with_pool_task(maths: MathsProxy) -> i64 {
    maths
        .add(20, 22)
        .await
        .expect("the manager answers a pool worker")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_travel_in_messages_and_to_pool_tasks() -> mp::Result<()> {
    mp::init().await?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("manager.sock");
    let manager = Manager::builder()
        .register::<Maths>()
        .bind(path.as_path())
        .start()
        .await?;
    // The socket file is for its owner only.
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path)?.permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }
    let maths = manager.create(Maths::default()).await?;
    // Inside a message on a pipe, within this process and back.
    let (ours, mut theirs) = mp::Pipe::<MathsProxy>::duplex()?;
    ours.send(&maths).await?;
    let received = theirs.recv().await?;
    assert_eq!(received.add(1, 2).await?, 3);
    // As a pool task's argument.
    let pool = mp::Pool::new(2)?;
    assert_eq!(pool.apply(add_with_pool_task, maths.clone()).await?, 42);
    pool.close();
    pool.join().await;
    // A client that only knows the path and the key.
    let client = Manager::connect(path.as_path(), manager.authkey()).await?;
    let named = client.dict::<String, String>().await?;
    client.publish("greetings", &named).await?;
    named.insert("hello".into(), "world".into()).await?;
    let found: DictProxy<String, String> = manager.lookup("greetings").await?;
    assert_eq!(found.get("hello").await?.as_deref(), Some("world"));
    assert_eq!(maths.calls().await?, 2);
    drop((received, found, named));
    manager.shutdown().await?;
    assert!(matches!(client.object_count().await, Err(Error::Closed)));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_clients_lose_only_their_own_connection() -> mp::Result<()> {
    mp::init().await?;
    let manager = Manager::builder()
        .bind("127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap())
        .authkey(b"key")
        .serve()
        .await?;
    let list = manager.list::<u32>([1, 2, 3]).await?;
    let address = manager.address().to_string();
    // Bytes an attacker chose: a huge announced frame, random bytes, a half frame left open,
    // and a client that authenticates and then sends messages that are not ours.
    let mut raw = Vec::new();
    for bytes in [
        vec![0xff, 0xff, 0xff, 0x7f, 1, 2, 3],
        (0..=255u8).cycle().take(10_000).collect::<Vec<_>>(),
        vec![0, 0, 0, 9, 1],
    ] {
        use tokio::io::AsyncWriteExt;
        let mut stream = tokio::net::TcpStream::connect(address.as_str()).await?;
        let _ = stream.write_all(&bytes).await;
        raw.push(stream);
    }
    let conn = mp::Client::builder(manager.address())
        .authkey(Some(b"key"))
        .connect::<Vec<u8>>()
        .await?;
    conn.send(&vec![200u8; 100]).await?;
    let mut conn = conn;
    let hung_up = tokio::time::timeout(LIVENESS, conn.recv()).await;
    assert!(matches!(hung_up, Ok(Err(_))), "the manager hung up");
    // Everyone else is served throughout.
    for _ in 0..10 {
        assert_eq!(list.len().await?, 3);
    }
    drop(raw);
    assert_eq!(list.to_vec().await?, [1, 2, 3]);
    manager.shutdown().await
}

/// The manager's message enum as a hostile local client would forge it: the same variant
/// positions, with `Attach` (index 4) handing over rings the client then fills with garbage.
#[derive(Serialize, Deserialize)]
enum Forged {
    Call,
    Create,
    Publish,
    Lookup,
    Attach {
        requests: mp::Queue<Vec<u8>>,
        replies: mp::Queue<Vec<u8>>,
    },
}

/// A forged client, authenticated, that has handed the manager its two rings.
async fn attached_forger(
    manager: &Manager,
) -> mp::Result<(
    mp::connection::Connection<Forged>,
    mp::Queue<Vec<u8>>,
    mp::Queue<Vec<u8>>,
)> {
    let conn = mp::Client::builder(manager.address())
        .authkey(Some(manager.authkey()))
        .connect::<Forged>()
        .await?;
    let requests = mp::Queue::<Vec<u8>>::new(0)?;
    let replies = mp::Queue::<Vec<u8>>::new(0)?;
    conn.send(&Forged::Attach {
        requests: requests.clone(),
        replies: replies.clone(),
    })
    .await?;
    Ok((conn, requests, replies))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_a_local_clients_ring_drops_only_that_client() -> mp::Result<()> {
    mp::init().await?;
    let manager = Manager::builder().serve().await?;
    let list = manager.list::<u32>([1, 2, 3]).await?;
    // Bytes that are no message: a variant index past the end, a varint that never ends, a
    // call cut short, an `Attach` inside the ring (out of place), nothing at all.
    for garbage in [
        vec![200; 16],
        vec![0xff; 64],
        vec![0u8, 1, 2, 9, b'a'],
        vec![4, 0, 0],
        Vec::new(),
    ] {
        let (conn, requests, replies) = attached_forger(&manager).await?;
        requests.put_bytes(&garbage).await?;
        // The manager hangs up on this client, and only on it.
        let mut conn = conn;
        let hung_up = tokio::time::timeout(LIVENESS, conn.recv()).await;
        assert!(matches!(hung_up, Ok(Err(_))), "the manager hung up");
        // No reply came; the manager closed the rings as it hung up.
        assert!(matches!(
            replies.try_get_bytes(),
            Err(Error::Empty | Error::Closed)
        ));
        assert_eq!(list.len().await?, 3);
    }
    manager.shutdown().await
}

/// Leaves a file behind when the manager's copy is dropped: proof that the manager dropped it.
/// (`create` encodes the value and drops the caller's copy, which is not armed.)
#[derive(Serialize, Deserialize)]
struct Marker {
    path: std::path::PathBuf,
    #[serde(skip, default = "armed")]
    armed: bool,
}

fn armed() -> bool {
    true
}

impl Drop for Marker {
    fn drop(&mut self) {
        if self.armed {
            let _ = std::fs::write(&self.path, b"dropped");
        }
    }
}

mp::managed! {
    proxy MarkerProxy for Marker {
        fn path(&self) -> std::path::PathBuf {
            self.path.clone()
        }
    }
}

async fn start_manager_with_marker_and_hang(
    (path, ready): (std::path::PathBuf, mp::connection::Connection<u32>),
) -> mp::Result<()> {
    let manager = Manager::builder().register::<Marker>().start().await?;
    let marker = manager.create(Marker { path, armed: false }).await?;
    marker.path().await?;
    ready.send(&manager.pid().unwrap()).await?;
    std::future::pending::<()>().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_are_dropped_at_shutdown_and_when_the_owner_is_killed() -> mp::Result<()> {
    mp::init().await?;
    let dir = tempfile::tempdir()?;
    // At shutdown.
    let manager = Manager::builder().register::<Marker>().start().await?;
    let path = dir.path().join("at-shutdown");
    let marker = manager
        .create(Marker {
            path: path.clone(),
            armed: false,
        })
        .await?;
    assert_eq!(marker.path().await?, path);
    assert!(!path.exists());
    manager.shutdown().await?;
    assert!(path.exists(), "dropped at shutdown");
    // When the process that started the manager is killed (twice, as the same role dies again).
    for round in 0..2 {
        let path = dir.path().join(format!("owner-killed-{round}"));
        let (mut ours, theirs) = mp::Pipe::<u32>::duplex()?;
        let owner = Process::spawn(start_manager_with_marker_and_hang, (path.clone(), theirs))?;
        let _manager_pid = tokio::time::timeout(LIVENESS, ours.recv())
            .await
            .expect("the owner starts its manager")?;
        assert!(!path.exists());
        owner.kill()?;
        let deadline = tokio::time::Instant::now() + LIVENESS;
        while !path.exists() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the orphaned manager dropped its objects"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manager_restarts_at_once_on_the_same_address() -> mp::Result<()> {
    mp::init().await?;
    // CPython's test_rapid_restart: start, shut down, start again on the same address.
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("restart.sock");
    for round in 0..3u32 {
        let manager = Manager::builder().bind(path.as_path()).start().await?;
        let value = manager.value(round).await?;
        assert_eq!(value.get().await?, round);
        manager.shutdown().await?;
    }
    // Two live managers cannot share one address.
    let first = Manager::builder().bind(path.as_path()).serve().await?;
    assert!(
        Manager::builder()
            .bind(path.as_path())
            .serve()
            .await
            .is_err()
    );
    first.shutdown().await
}

async fn hold_rlock_twice(
    args: (mp::manager::RLockProxy, EventProxy, EventProxy),
) -> mp::Result<()> {
    let (rlock, held, release) = args;
    let outer = rlock.acquire().await?;
    let inner = rlock.acquire().await?;
    held.set().await?;
    release.wait().await?;
    inner.release().await?;
    // Still held once: the parent keeps waiting until the outer level goes too.
    tokio::time::sleep(Duration::from_millis(50)).await;
    outer.release().await?;
    Ok(())
}

async fn take_permits(args: (SemaphoreProxy, ValueProxy<u32>, ValueProxy<u32>)) -> mp::Result<()> {
    let (semaphore, inside, most) = args;
    for _ in 0..20 {
        semaphore.acquire().await?;
        let now = inside.update_with(|n| n + 1).await?;
        most.update_with(|m| m.max(now)).await?;
        tokio::task::yield_now().await;
        inside.update_with(|n| n - 1).await?;
        semaphore.release().await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rlock_and_semaphore_across_processes() -> mp::Result<()> {
    mp::init().await?;
    let manager = Manager::start().await?;
    // A child holds the re-entrant lock twice; we get it only after both releases.
    let rlock = manager.rlock().await?;
    let (held, release) = (manager.event().await?, manager.event().await?);
    let mut child = Process::spawn(
        hold_rlock_twice,
        (rlock.clone(), held.clone(), release.clone()),
    )?;
    held.wait().await?;
    assert!(matches!(
        rlock.try_acquire().await,
        Err(ManagedLockError::Timeout)
    ));
    release.set().await?;
    let guard = tokio::time::timeout(LIVENESS, rlock.acquire())
        .await
        .expect("released twice")
        .expect("acquired");
    child.join().await??;
    drop(guard);
    // A semaphore of 2 shared by three processes never lets a third in.
    let semaphore = manager.semaphore(2).await?;
    let inside = manager.value(0u32).await?;
    let most = manager.value(0u32).await?;
    let mut children = Vec::new();
    for _ in 0..3 {
        children.push(Process::spawn(
            take_permits,
            (semaphore.clone(), inside.clone(), most.clone()),
        )?);
    }
    for mut child in children {
        child.join().await??;
    }
    assert!(most.get().await? <= 2);
    assert_eq!(inside.get().await?, 0);
    assert_eq!(semaphore.value().await?, 2);
    manager.shutdown().await
}

/// LEB128, postcard's integer encoding.
fn varint(mut n: u64, out: &mut Vec<u8>) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ring_client_that_never_reads_its_replies_is_still_released_when_it_hangs_up()
-> mp::Result<()> {
    mp::init().await?;
    let manager = Manager::builder().serve().await?;
    let (conn, requests, replies) = attached_forger(&manager).await?;
    // `Create { id: 1, type_name: "mp.dict", init: [] }`: a dict only this client holds.
    let mut create = vec![1, 1, 7];
    create.extend_from_slice(b"mp.dict");
    create.push(0);
    requests.put_bytes(&create).await?;
    assert_eq!(wait_for_count(&manager, 1).await, 1);
    // `ObjectCount { id }` until the manager stops taking requests: its replies have filled the
    // reply ring, which this client never reads.
    let mut id = 2;
    loop {
        let mut request = vec![10];
        varint(id, &mut request);
        id += 1;
        if tokio::time::timeout(Duration::from_millis(200), requests.put_bytes(&request))
            .await
            .is_err()
        {
            break;
        }
        assert!(id < 10_000_000, "the manager never stopped taking requests");
    }
    // The client goes away: the manager, blocked on the full ring, notices, and drops the dict.
    drop((conn, requests, replies));
    assert_eq!(wait_for_count(&manager, 0).await, 0);
    // And it serves others throughout.
    let list = manager.list([1u8]).await?;
    assert_eq!(list.len().await?, 1);
    manager.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_dict_and_namespace_behave_as_pythons() -> mp::Result<()> {
    mp::init().await?;
    let manager = Manager::builder().serve().await?;
    // CPython's test_list, in our names.
    let a = manager.list::<i64>(0..5).await?;
    a.extend([5, 6]).await?;
    assert_eq!(a.to_vec().await?, [0, 1, 2, 3, 4, 5, 6]);
    assert_eq!(a.set(2, 20).await?, 2);
    assert_eq!(a.remove(1).await?, 1);
    a.insert(a.len().await?, 7).await?; // at the end, as append
    a.insert(0, -1).await?;
    assert_eq!(a.to_vec().await?, [-1, 0, 20, 3, 4, 5, 6, 7]);
    assert_eq!(a.pop().await?, Some(7));
    assert!(matches!(
        a.insert(99, 0).await,
        Err(Error::IndexOutOfRange { index: 99, .. })
    ));
    a.clear().await?;
    assert_eq!(a.pop().await?, None);
    // CPython's test_dict: chr(i) for i in 65..70, items in insertion order.
    let d = manager.dict::<u32, String>().await?;
    for i in 65..70u32 {
        d.insert(i, char::from_u32(i).unwrap().to_string()).await?;
    }
    assert_eq!(d.keys().await?, [65, 66, 67, 68, 69]);
    assert_eq!(d.values().await?, ["A", "B", "C", "D", "E"]);
    assert_eq!(d.items().await?[0], (65, "A".to_string()));
    assert_eq!(d.insert(65, "a".into()).await?.as_deref(), Some("A"));
    // CPython's test_namespace.
    let n = manager.namespace().await?;
    n.set("name", "Bob").await?;
    n.set("job", "Builder").await?;
    assert_eq!(n.get::<String>("name").await?.as_deref(), Some("Bob"));
    assert!(n.remove("job").await?);
    assert!(!n.remove("job").await?);
    assert_eq!(n.names().await?, ["name"]);
    assert_eq!(n.get::<String>("missing").await?, None);
    manager.shutdown().await
}

async fn wait_for_event_then_barrier(args: (EventProxy, BarrierProxy)) -> mp::Result<u64> {
    let (event, barrier) = args;
    event.wait().await?;
    barrier.wait().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_set_wakes_every_waiting_process_and_a_barrier_releases_three() -> mp::Result<()> {
    mp::init().await?;
    let manager = Manager::start().await?;
    let event = manager.event().await?;
    let barrier = manager.barrier(4).await?;
    let mut children = Vec::new();
    for _ in 0..3 {
        children.push(Process::spawn(
            wait_for_event_then_barrier,
            (event.clone(), barrier.clone()),
        )?);
    }
    // Let them park on the event (a waiter that comes later finds it set anyway).
    tokio::time::sleep(Duration::from_millis(200)).await;
    event.set().await?;
    let mine = tokio::time::timeout(LIVENESS, barrier.wait())
        .await
        .expect("all three woke and arrived")?;
    let mut indices = vec![mine];
    for mut child in children {
        indices.push(child.join().await??);
    }
    indices.sort_unstable();
    assert_eq!(indices, [0, 1, 2, 3], "one arrival index each");
    manager.shutdown().await
}
