//! `Queue` across real processes.
//!
//! Several behaviours are ported from CPython's `Lib/test/_test_multiprocessing.py`
//! (`_TestQueue`: test_put, test_get, test_fork, test_qsize, test_timeout, test_closed_queue),
//! rewritten for this crate.

mod support;

use std::time::{Duration, Instant};

use support::LIVENESS;
use tokio_multiprocessing::{self as mp, Error, PutError, Queue, RawArray};

async fn produce((q, n): (Queue<u64>, u64)) {
    for i in 0..n {
        q.put(i).await.expect("put");
    }
}

#[tokio::test]
async fn items_arrive_in_order_and_a_producer_may_exit_right_after_put() -> mp::Result<()> {
    mp::init().await?;
    let q = Queue::<u64>::new(0)?;
    let mut child = mp::Process::spawn(produce, (q.clone(), 10_000))?;
    child.join().await?; // the producer is gone; everything it put is in shared memory
    assert_eq!(q.len(), 10_000);
    for i in 0..10_000 {
        assert_eq!(q.get().await?, i);
    }
    assert!(q.is_empty());
    Ok(())
}

#[tokio::test]
async fn a_putter_parks_while_the_queue_is_full() -> mp::Result<()> {
    mp::init().await?;
    let q = Queue::<u64>::new(2)?;
    let mut child = mp::Process::spawn(produce, (q.clone(), 5))?;
    let deadline = Instant::now() + LIVENESS;
    while q.len() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(q.len(), 2, "backpressure holds the producer at maxsize");
    assert!(q.is_full());
    assert!(child.is_alive());
    for i in 0..5 {
        assert_eq!(q.get_timeout(LIVENESS).await?, i);
    }
    child.join().await?;
    Ok(())
}

#[tokio::test]
async fn try_forms_and_timeouts_hand_the_item_back() -> mp::Result<()> {
    let q = Queue::<String>::new(1)?;
    assert!(matches!(q.try_get(), Err(Error::Empty)));
    let start = Instant::now();
    assert!(matches!(
        q.get_timeout(Duration::from_millis(100)).await,
        Err(Error::Timeout)
    ));
    assert!(start.elapsed() >= Duration::from_millis(100));
    q.try_put("a".into()).map_err(Error::from)?;
    match q.try_put("b".into()) {
        Err(PutError::Full(item)) => assert_eq!(item, "b"),
        other => panic!("expected Full, got {other:?}"),
    }
    let start = Instant::now();
    match q.put_timeout("c".into(), Duration::from_millis(100)).await {
        Err(PutError::Timeout(item)) => assert_eq!(item, "c"),
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert!(start.elapsed() >= Duration::from_millis(100));
    assert_eq!(q.try_get()?, "a");
    Ok(())
}

#[tokio::test]
async fn too_large_items_come_back_and_the_queue_is_untouched() -> mp::Result<()> {
    let q = Queue::<Vec<u8>>::builder()
        .capacity(4096)
        .max_message(1000)
        .build()?;
    match q.put(vec![0; 5000]).await {
        Err(PutError::TooLarge(item)) => assert_eq!(item.len(), 5000),
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert!(q.is_empty());
    q.put(vec![1; 900]).await.map_err(Error::from)?;
    assert_eq!(q.get().await?, vec![1; 900]);
    Ok(())
}

async fn get_one(q: Queue<u64>) -> String {
    match q.get_timeout(LIVENESS).await {
        Ok(v) => format!("got {v}"),
        Err(e) => format!("{e:?}"),
    }
}

async fn put_one((q, v): (Queue<u64>, u64)) -> String {
    match q.put_timeout(v, LIVENESS).await {
        Ok(()) => "put".into(),
        Err(e) => {
            let described = format!("{e:?}");
            format!("{described} with {}", e.into_inner())
        }
    }
}

#[tokio::test]
async fn close_wakes_parked_getters_and_putters_in_other_processes() -> mp::Result<()> {
    mp::init().await?;
    let empty = Queue::<u64>::new(1)?;
    let mut getter = mp::Process::spawn(get_one, empty.clone())?;
    let full = Queue::<u64>::new(1)?;
    full.put(1).await.map_err(Error::from)?;
    let mut putter = mp::Process::spawn(put_one, (full.clone(), 2))?;
    let deadline = Instant::now() + LIVENESS;
    while (mp::test_hooks::queue_waiters(&empty).0 == (0, 0)
        || mp::test_hooks::queue_waiters(&full).1 == (0, 0))
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    empty.close();
    full.close();
    assert_eq!(getter.join().await?, "Closed");
    assert_eq!(putter.join().await?, "Closed(..) with 2");
    // Getters drain what is queued first, then see Closed.
    assert_eq!(full.get().await?, 1);
    assert!(matches!(full.get().await, Err(Error::Closed)));
    assert!(matches!(full.try_put(3), Err(PutError::Closed(3))));
    Ok(())
}

/// An item that checks itself.
#[derive(serde::Serialize, serde::Deserialize)]
struct Job {
    producer: u32,
    seq: u32,
    body: Vec<u8>,
    sum: u32,
}

impl Job {
    fn new(producer: u32, seq: u32) -> Job {
        let body: Vec<u8> = (0..(seq % 50) as u8).map(|b| b ^ producer as u8).collect();
        let sum = body.iter().map(|&b| u32::from(b)).sum::<u32>() ^ seq;
        Job {
            producer,
            seq,
            body,
            sum,
        }
    }

    fn valid(&self) -> bool {
        self.body.iter().map(|&b| u32::from(b)).sum::<u32>() ^ self.seq == self.sum
    }
}

async fn producer((q, id, n): (Queue<Job>, u32, u32)) {
    for seq in 0..n {
        q.put(Job::new(id, seq))
            .await
            .map_err(|e| e.to_string())
            .expect("put");
    }
}

async fn consumer((q, done): (Queue<Job>, mp::Event)) -> Vec<(u32, u32)> {
    let mut seen = Vec::new();
    loop {
        match q.get_timeout(Duration::from_millis(50)).await {
            Ok(job) => {
                assert!(job.valid(), "torn item from producer {}", job.producer);
                seen.push((job.producer, job.seq));
            }
            Err(Error::Timeout) if done.is_set() && q.is_empty() => return seen,
            Err(Error::Timeout) => {}
            Err(e) => panic!("{e}"),
        }
    }
}

#[tokio::test]
async fn four_producers_and_four_consumers_lose_and_duplicate_nothing() -> mp::Result<()> {
    mp::init().await?;
    const PER_PRODUCER: u32 = 25_000;
    let q = Queue::<Job>::new(64)?;
    let done = mp::Event::new()?;
    let mut producers = Vec::new();
    for id in 0..4 {
        producers.push(mp::Process::spawn(producer, (q.clone(), id, PER_PRODUCER))?);
    }
    let mut consumers = Vec::new();
    for _ in 0..4 {
        consumers.push(mp::Process::spawn(consumer, (q.clone(), done.clone()))?);
    }
    for p in &mut producers {
        p.join().await?;
    }
    done.set();
    let mut seen_by_each = Vec::new();
    for c in &mut consumers {
        seen_by_each.push(c.join().await?);
    }
    check_every_item_once_in_order(seen_by_each, 4, PER_PRODUCER);
    Ok(())
}

/// What consumers saw, as (producer, number) pairs: every item of `producers` × `per_producer`
/// exactly once, and each consumer saw each producer's items in order (FIFO per producer).
fn check_every_item_once_in_order(
    seen_by_each: Vec<Vec<(u32, u32)>>,
    producers: u32,
    per_producer: u32,
) {
    let mut all = Vec::new();
    for seen in seen_by_each {
        for id in 0..producers {
            let mut seqs = seen.iter().filter(|(p, _)| *p == id).map(|(_, s)| *s);
            let mut last = None;
            assert!(
                seqs.all(|s| last.replace(s).is_none_or(|l| l < s)),
                "producer {id} out of order"
            );
        }
        all.extend(seen);
    }
    all.sort();
    let expected: Vec<(u32, u32)> = (0..producers)
        .flat_map(|p| (0..per_producer).map(move |s| (p, s)))
        .collect();
    assert_eq!(all, expected, "lost or duplicated items");
}

/// Puts and gets large checksummed items as fast as it can until killed.
async fn churn((q, id): (Queue<Job>, u32)) {
    let mut seq = 0;
    loop {
        let _ = q
            .put_timeout(Job::new(id, seq), Duration::from_millis(10))
            .await;
        if let Ok(job) = q.get_timeout(Duration::from_millis(10)).await {
            assert!(job.valid());
        }
        seq += 1;
    }
}

#[tokio::test]
async fn processes_killed_mid_operation_leave_the_queue_consistent() -> mp::Result<()> {
    mp::init().await?;
    let q = Queue::<Job>::builder()
        .maxsize(32)
        .capacity(16 * 1024)
        .build()?;
    let mut seed = 0x9e37_79b9u64;
    for round in 0..100u32 {
        let mut child = mp::Process::spawn(churn, (q.clone(), round))?;
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        tokio::time::sleep(Duration::from_micros(500 + seed % 5000)).await;
        child.kill()?;
        let _ = child.join().await;
        // The survivor can always use the queue, and never sees a torn item.
        q.put_timeout(Job::new(9999, round), LIVENESS)
            .await
            .map_err(Error::from)?;
        while let Ok(job) = q.try_get() {
            assert!(job.valid(), "torn item after a kill in round {round}");
        }
    }
    Ok(())
}

// ----- flavours -----

async fn put_all((q, items): (mp::LifoQueue<u32>, Vec<u32>)) {
    for i in items {
        q.put(i).await.map_err(|e| e.to_string()).expect("put");
    }
}

#[tokio::test]
async fn lifo_order_holds_across_processes() -> mp::Result<()> {
    mp::init().await?;
    let q = mp::LifoQueue::<u32>::new(0)?;
    mp::Process::spawn(put_all, (q.clone(), vec![1, 2, 3, 4]))?
        .join()
        .await?;
    let got: Vec<u32> = [q.get().await?, q.get().await?].into();
    assert_eq!(got, [4, 3]);
    q.put(9).await.map_err(Error::from)?;
    assert_eq!(q.get().await?, 9);
    assert_eq!(q.get().await?, 2);
    assert_eq!(q.get().await?, 1);
    assert!(q.is_empty());
    Ok(())
}

type Task = (u8, String);

async fn put_prioritised((q, items): (mp::PriorityQueue<Task>, Vec<Task>)) {
    for i in items {
        q.put(i).await.map_err(|e| e.to_string()).expect("put");
    }
}

#[tokio::test]
async fn priority_order_holds_across_processes_fifo_among_equals() -> mp::Result<()> {
    mp::init().await?;
    let q = mp::PriorityQueue::<(u8, String)>::new(0)?;
    let items = vec![
        (3, "c".into()),
        (1, "a".into()),
        (2, "b".into()),
        (1, "a".into()),
        (0, "z".into()),
    ];
    mp::Process::spawn(put_prioritised, (q.clone(), items))?
        .join()
        .await?;
    let mut got = Vec::new();
    while let Ok(item) = q.try_get() {
        got.push(item.0);
    }
    assert_eq!(got, [0, 1, 1, 2, 3]);
    Ok(())
}

async fn work_through(q: mp::JoinableQueue<u32>) -> u32 {
    let mut done = 0;
    while let Ok(job) = q.get_timeout(Duration::from_millis(200)).await {
        tokio::time::sleep(Duration::from_millis(1)).await;
        q.task_done().expect("task_done");
        done += job;
    }
    done
}

#[tokio::test]
async fn joinable_queue_join_waits_for_task_done_in_other_processes() -> mp::Result<()> {
    mp::init().await?;
    let q = mp::JoinableQueue::<u32>::new(0)?;
    for i in 1..=20 {
        q.put(i).await.map_err(Error::from)?;
    }
    assert_eq!(q.unfinished(), 20);
    let mut workers = Vec::new();
    for _ in 0..2 {
        workers.push(mp::Process::spawn(work_through, q.clone())?);
    }
    q.join_timeout(LIVENESS).await?;
    assert_eq!(q.unfinished(), 0);
    let mut total = 0;
    for w in &mut workers {
        total += w.join().await?;
    }
    assert_eq!(total, (1..=20).sum::<u32>());
    assert!(
        matches!(q.task_done(), Err(Error::InvalidArgument(_))),
        "one task_done too many"
    );
    let simple = mp::SimpleQueue::<u8>::new(0)?;
    simple.put(1).await.map_err(Error::from)?;
    assert_eq!(simple.get().await?, 1);
    Ok(())
}

/// Puts numbers into a joinable queue until it is killed.
async fn put_until_killed(q: mp::JoinableQueue<u32>) {
    for i in 0.. {
        q.put(i).await.expect("put");
    }
}

#[tokio::test]
async fn join_returns_after_producers_are_killed_mid_put() -> mp::Result<()> {
    mp::init().await?;
    let q = mp::JoinableQueue::<u32>::new(64)?;
    for _ in 0..20 {
        let mut producer = mp::Process::spawn(put_until_killed, q.clone())?;
        assert!(
            support::eventually(|| q.unfinished() > 0),
            "the producer puts"
        );
        // Take some while it runs, then kill it wherever it is.
        while q.try_get().is_ok() {
            q.task_done()?;
        }
        producer.kill()?;
        let _ = producer.join().await;
    }
    // Whatever the killed producers committed is queued, and counted exactly once.
    while q.try_get().is_ok() {
        q.task_done()?;
    }
    assert_eq!(q.unfinished(), 0);
    q.join_timeout(LIVENESS).await?;
    assert!(matches!(q.task_done(), Err(Error::InvalidArgument(_))));
    Ok(())
}

#[tokio::test]
async fn a_queue_of_another_kind_is_refused_on_receipt() -> mp::Result<()> {
    // Both ends of one socket, typed differently: a LIFO queue goes in, a FIFO one is expected.
    let (a, b) = std::os::unix::net::UnixStream::pair()?;
    let sender = mp::Connection::<mp::LifoQueue<u8>>::from_std(a)?;
    let mut receiver = mp::Connection::<Queue<u8>>::from_std(b)?;
    sender.send(&mp::LifoQueue::new(0)?).await?;
    assert!(matches!(receiver.recv().await, Err(Error::Corrupt(_))));
    Ok(())
}

// ----- batches, streams and sinks -----

async fn sink_numbers((q, n): (Queue<u32>, u32)) {
    use futures::SinkExt;
    let mut sink = Box::pin(q.clone().into_sink());
    sink.send_all(&mut futures::stream::iter((0..n).map(Ok)))
        .await
        .expect("sink");
    q.close();
}

#[tokio::test]
async fn queues_are_streams_and_sinks_across_processes() -> mp::Result<()> {
    use futures::StreamExt;
    mp::init().await?;
    let q = Queue::<u32>::new(16)?;
    let mut child = mp::Process::spawn(sink_numbers, (q.clone(), 5_000))?;
    let got: Vec<u32> = q.clone().into_stream().map(|r| r.unwrap()).collect().await;
    assert_eq!(got, (0..5_000).collect::<Vec<_>>());
    child.join().await?;
    Ok(())
}

#[tokio::test]
async fn put_many_and_get_many_move_batches() -> mp::Result<()> {
    let q = Queue::<u32>::new(8)?;
    let filler = tokio::spawn({
        let q = q.clone();
        async move { q.put_many(0..100).await.map_err(Error::from) }
    });
    let mut got = Vec::new();
    while got.len() < 100 {
        let batch = q.get_many(5).await?;
        assert!(!batch.is_empty() && batch.len() <= 5);
        got.extend(batch);
    }
    filler.await.unwrap()?;
    assert_eq!(got, (0..100).collect::<Vec<_>>());
    q.close();
    match q.put_many([1, 2, 3]).await {
        Err(PutError::Closed(rest)) => assert_eq!(rest, [1, 2, 3]),
        other => panic!("expected Closed, got {other:?}"),
    }
    Ok(())
}

/// Puts 2,000 numbered byte items in batches of 50 (one item of each tenth batch larger than
/// the ring, so it is spilled).
async fn put_byte_batches(q: Queue<Vec<u8>>) {
    for batch in 0..40u32 {
        let items: Vec<Vec<u8>> = (0..50u32)
            .map(|i| {
                let n = batch * 50 + i;
                let len = if batch % 10 == 3 && i == 7 {
                    100_000
                } else {
                    16
                };
                let mut item = vec![(n % 251) as u8; len];
                item[..4].copy_from_slice(&n.to_le_bytes());
                item
            })
            .collect();
        q.put_many_bytes(&items).await.expect("put_many_bytes");
    }
}

#[tokio::test]
async fn byte_batches_cross_processes_in_order_through_a_small_ring() -> mp::Result<()> {
    mp::init().await?;
    // 4 KiB of ring: batches wait for room, and the large items are spilled.
    let q = Queue::<Vec<u8>>::builder().capacity(4096).build()?;
    let mut child = mp::Process::spawn(put_byte_batches, q.clone())?;
    let mut next = 0u32;
    while next < 2000 {
        let batch = tokio::time::timeout(LIVENESS, q.get_many_bytes(64))
            .await
            .expect("items keep coming")?;
        assert!(!batch.is_empty() && batch.len() <= 64);
        for item in batch {
            assert_eq!(u32::from_le_bytes(item[..4].try_into().unwrap()), next);
            assert!(item[4..].iter().all(|&b| b == (next % 251) as u8));
            next += 1;
        }
    }
    child.join().await?;
    assert!(q.is_empty());
    assert!(spill_entries(&q).is_empty(), "spilled items are removed");

    let small = Queue::<Vec<u8>>::builder().max_message(100).build()?;
    let err = small
        .put_many_bytes(&[vec![1u8; 10], vec![2u8; 101]])
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        Error::TooLarge {
            size: 101,
            max: 100
        }
    ));
    assert!(small.is_empty(), "a refused batch queues nothing");
    Ok(())
}

// ----- items larger than the ring -----

fn spill_entries<T>(q: &Queue<T>) -> Vec<String> {
    let prefix = mp::test_hooks::queue_spill_prefix(q);
    std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default()
}

async fn put_big_and_small(q: Queue<Vec<u8>>) {
    for i in 0..6u8 {
        let len = if i % 2 == 0 { 1 << 20 } else { 10 };
        q.put(vec![i; len])
            .await
            .map_err(|e| e.to_string())
            .expect("put");
    }
}

#[tokio::test]
async fn items_larger_than_the_ring_cross_processes_in_order() -> mp::Result<()> {
    mp::init().await?;
    let q = Queue::<Vec<u8>>::builder()
        .capacity(4096)
        .maxsize(2)
        .build()?;
    let mut child = mp::Process::spawn(put_big_and_small, q.clone())?;
    for i in 0..6u8 {
        let item = q.get_timeout(LIVENESS).await?;
        let len = if i % 2 == 0 { 1 << 20 } else { 10 };
        assert_eq!(item.len(), len);
        assert!(item.iter().all(|&b| b == i));
    }
    child.join().await?;
    assert!(q.is_empty());
    // Raw bytes spill too.
    q.put_bytes(&vec![7u8; 100_000]).await?;
    assert_eq!(q.get_bytes().await?.len(), 100_000);
    assert!(
        spill_entries(&q).is_empty(),
        "spill segments left: {:?}",
        spill_entries(&q)
    );
    // LIFO and priority queues keep every item in the ring.
    let lifo = mp::LifoQueue::<Vec<u8>>::with(Queue::builder().capacity(4096))?;
    assert!(matches!(
        lifo.put(vec![0; 10_000]).await,
        Err(PutError::TooLarge(_))
    ));
    // The maximum message still holds.
    let small = Queue::<Vec<u8>>::builder()
        .capacity(4096)
        .max_message(50_000)
        .build()?;
    assert!(matches!(
        small.put(vec![0; 60_000]).await,
        Err(PutError::TooLarge(_))
    ));
    Ok(())
}

async fn spill_forever(q: Queue<Vec<u8>>) {
    let mut i = 0u8;
    loop {
        let _ = q
            .put_timeout(vec![i; 200_000], Duration::from_millis(50))
            .await;
        i = i.wrapping_add(1);
    }
}

#[tokio::test]
async fn producers_killed_while_spilling_leave_nothing_behind() -> mp::Result<()> {
    mp::init().await?;
    let q = Queue::<Vec<u8>>::builder()
        .capacity(4096)
        .maxsize(4)
        .build()?;
    for round in 0..15u64 {
        let mut child = mp::Process::spawn(spill_forever, q.clone())?;
        tokio::time::sleep(Duration::from_micros(2000 + round * 700)).await;
        child.kill()?;
        let _ = child.join().await;
        while let Ok(item) = q.try_get() {
            assert_eq!(item.len(), 200_000, "a spilled item came back torn");
            assert!(item.iter().all(|&b| b == item[0]));
        }
    }
    // Later spills sweep the dead producers' orphans (at most once a second each): on a
    // loaded machine the first one after the kills may come too soon, so spill until they are
    // gone, for as long as the liveness limit.
    let deadline = Instant::now() + LIVENESS;
    loop {
        tokio::time::sleep(Duration::from_millis(1100)).await;
        q.put(vec![1; 10_000]).await.map_err(Error::from)?;
        assert_eq!(q.get().await?.len(), 10_000);
        if spill_entries(&q).is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "orphans left: {:?}",
            spill_entries(&q)
        );
    }
    Ok(())
}

/// Truncates every spill segment of the queue whose prefix it is given, over and over.
async fn truncate_spills((prefix, stop): (String, mp::Event)) {
    while !stop.is_set() {
        for entry in std::fs::read_dir("/dev/shm").unwrap().flatten() {
            if entry.file_name().to_string_lossy().starts_with(&prefix)
                && let Ok(file) = std::fs::OpenOptions::new().write(true).open(entry.path())
            {
                let _ = file.set_len(0);
            }
        }
        std::thread::yield_now();
    }
}

/// Regression: a spilled item's file truncated by another process while a getter copied it
/// killed the getter with SIGBUS. Now the put or the get fails with an error, and every item
/// that does arrive is whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spill_files_truncated_under_us_give_errors_not_sigbus() -> mp::Result<()> {
    mp::init().await?;
    let q = Queue::<Vec<u8>>::builder().capacity(4096).build()?;
    let stop = mp::Event::new()?;
    let mut vandal = mp::Process::spawn(
        truncate_spills,
        (mp::test_hooks::queue_spill_prefix(&q), stop.clone()),
    )?;
    let (mut whole, mut failed) = (0, 0);
    for n in 0..200u8 {
        if q.put_bytes(&vec![n; 256 * 1024]).await.is_err() {
            failed += 1;
            continue;
        }
        match tokio::time::timeout(LIVENESS, q.get_bytes())
            .await
            .expect("no hang")
        {
            Ok(item) => {
                assert!(
                    item.len() == 256 * 1024 && item.iter().all(|&b| b == n),
                    "torn item"
                );
                whole += 1;
            }
            Err(Error::Corrupt(_)) => failed += 1,
            Err(e) => panic!("{e}"),
        }
    }
    stop.set();
    vandal.join_timeout(LIVENESS).await?;
    eprintln!("{whole} whole items, {failed} failed puts or gets");
    Ok(())
}

/// Takes items (numbered by their first four bytes) forever, in batches or one at a time;
/// counts each in `taken`, and any error in its last slot.
async fn take_spilled_forever((q, taken, batches): (Queue<Vec<u8>>, RawArray<u32>, bool)) {
    let errors = taken.len() - 1;
    loop {
        let items = if batches {
            q.get_many_bytes(4).await
        } else {
            q.get_bytes().await.map(|item| vec![item])
        };
        // A getter killed between removing a spilled item's segment and claiming its record
        // took the item with it; the next getter skips the record without an error.
        let items = match items {
            Ok(items) => items,
            Err(e) => {
                eprintln!("an innocent getter saw an error: {e}");
                taken.set(errors, taken.get(errors).unwrap() + 1).unwrap();
                continue;
            }
        };
        {
            for item in items {
                let n = u32::from_le_bytes(item[..4].try_into().unwrap());
                assert!(item[4..].iter().all(|&b| b == n as u8), "torn item {n}");
                taken
                    .set(n as usize, taken.get(n as usize).unwrap() + 1)
                    .unwrap();
            }
        }
    }
}

#[tokio::test]
async fn getters_killed_while_taking_spilled_items_hang_nobody_and_leak_nothing() -> mp::Result<()>
{
    mp::init().await?;
    const ITEMS: u32 = 1_500;
    // Every other item is larger than the 4 KiB ring, so it is spilled and taken under the get
    // lock; the small ones are taken without it.
    let q = Queue::<Vec<u8>>::builder().capacity(4096).build()?;
    // One slot per item, and one for errors the getters saw.
    let taken = RawArray::new(&vec![0u32; ITEMS as usize + 1])?;
    let done = std::sync::atomic::AtomicBool::new(false);
    let producer = async {
        for n in 0..ITEMS {
            let len = if n % 2 == 0 { 30_000 } else { 64 };
            let mut item = vec![n as u8; len];
            item[..4].copy_from_slice(&n.to_le_bytes());
            tokio::time::timeout(LIVENESS, q.put_bytes(&item))
                .await
                .expect("getters keep taking")?;
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        Ok::<_, Error>(())
    };
    let mut rest = Vec::new();
    let getters = async {
        let total = || taken.to_vec()[..ITEMS as usize].iter().sum::<u32>();
        for round in 0..40u64 {
            if done.load(std::sync::atomic::Ordering::Relaxed) {
                break;
            }
            let before = total();
            let mut getter = mp::Process::spawn(
                take_spilled_forever,
                (q.clone(), taken.clone(), round % 2 == 1),
            )?;
            // Kill it only once it is taking items (a child takes a while to start, longer on
            // a loaded machine), at a varying point after that.
            let started = Instant::now();
            while total() == before
                && !done.load(std::sync::atomic::Ordering::Relaxed)
                && started.elapsed() < LIVENESS
            {
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
            tokio::time::sleep(Duration::from_micros(100 + round * 97 % 900)).await;
            getter.kill()?;
            let _ = getter.join().await;
        }
        // The last getter is gone: take the rest here until the producer is done.
        loop {
            match tokio::time::timeout(Duration::from_millis(50), q.get_bytes()).await {
                Ok(Ok(item)) => rest.push(item),
                Ok(Err(e)) => panic!("another process's death is not our error: {e}"),
                Err(_) if done.load(std::sync::atomic::Ordering::Relaxed) && q.is_empty() => break,
                Err(_) => {}
            }
        }
        Ok::<_, Error>(())
    };
    let (produced, got) =
        tokio::time::timeout(LIVENESS * 2, async { tokio::join!(producer, getters) })
            .await
            .expect("nobody hangs");
    produced?;
    got?;
    let mut counts = taken.to_vec();
    assert_eq!(
        counts.pop(),
        Some(0),
        "a getter saw an error because another was killed"
    );
    for item in rest {
        let n = u32::from_le_bytes(item[..4].try_into().unwrap());
        counts[n as usize] += 1;
    }
    assert!(
        counts.iter().all(|&c| c <= 1),
        "an item arrived twice: {counts:?}"
    );
    let by_getters: u32 = taken.to_vec()[..ITEMS as usize].iter().sum();
    let missing = counts.iter().filter(|&&c| c == 0).count();
    eprintln!("{by_getters} items taken by the killed getters, {missing} went with them");
    assert!(
        by_getters > 0,
        "the getters took nothing: the test tested nothing"
    );
    // Each killed getter takes at most its batch (4) with it.
    assert!(missing <= 40 * 4);
    assert!(
        spill_entries(&q).is_empty(),
        "segments left: {:?}",
        spill_entries(&q)
    );
    Ok(())
}

/// The "any program" for a queue passed with `mp::pass`.
#[tokio::test]
async fn helper_fills_an_inherited_queue() {
    if std::env::var_os("TKMP_TEST_HELPER").is_none() {
        return;
    }
    let q: Queue<String> = mp::inherited("jobs").expect("inherited queue");
    for i in 0..3 {
        q.put(format!("from the command {i}"))
            .await
            .map_err(|e| e.to_string())
            .unwrap();
    }
}

#[tokio::test]
async fn a_queue_passes_to_a_command_child_and_inside_a_message() -> mp::Result<()> {
    let q = Queue::<String>::new(0)?;
    let mut cmd = support::helper_command("helper_fills_an_inherited_queue")?;
    mp::pass(&mut cmd, "jobs", &q)?;
    assert!(cmd.status().await?.success());
    for i in 0..3 {
        assert_eq!(q.get().await?, format!("from the command {i}"));
    }
    // Inside a message over a pipe.
    let (mut a, b) = mp::Pipe::<Queue<String>>::duplex()?;
    b.send(&q).await?;
    let received = a.recv().await?;
    received
        .put("through the pipe".into())
        .await
        .map_err(Error::from)?;
    assert_eq!(q.get().await?, "through the pipe");
    Ok(())
}

// ----- getters racing without a lock -----

/// An item that says who made it and checks its own bytes: producer, sequence number, then a
/// fill derived from both. Every 400th item is larger than the ring (spilled).
fn racing_item(producer: u32, seq: u32) -> Vec<u8> {
    let len = if seq % 400 == 399 {
        3000
    } else {
        8 + (seq as usize * 7 + producer as usize * 13) % 113
    };
    let mut item: Vec<u8> = (0..len)
        .map(|i| (i as u32 ^ seq ^ (producer << 4)) as u8)
        .collect();
    item[..4].copy_from_slice(&producer.to_le_bytes());
    item[4..8].copy_from_slice(&seq.to_le_bytes());
    item
}

fn check_racing_item(item: &[u8]) -> (u32, u32) {
    let producer = u32::from_le_bytes(item[..4].try_into().unwrap());
    let seq = u32::from_le_bytes(item[4..8].try_into().unwrap());
    assert_eq!(
        item,
        racing_item(producer, seq),
        "torn item {producer}/{seq}"
    );
    (producer, seq)
}

async fn put_racing_items((q, producer, n): (Queue<Vec<u8>>, u32, u32)) {
    for seq in 0..n {
        q.put_bytes(&racing_item(producer, seq))
            .await
            .expect("put_bytes");
    }
}

async fn get_racing_items(
    (q, batches, done): (Queue<Vec<u8>>, bool, mp::Event),
) -> Vec<(u32, u32)> {
    let mut seen = Vec::new();
    loop {
        let wait = Duration::from_millis(20);
        let items = if batches {
            match tokio::time::timeout(wait, q.get_many_bytes(8)).await {
                Ok(items) => items.expect("get_many_bytes"),
                Err(_) => Vec::new(),
            }
        } else {
            match tokio::time::timeout(wait, q.get_bytes()).await {
                Ok(item) => vec![item.expect("get_bytes")],
                Err(_) => Vec::new(),
            }
        };
        seen.extend(items.iter().map(|item| check_racing_item(item)));
        if items.is_empty() && done.is_set() && q.is_empty() {
            return seen;
        }
    }
}

#[tokio::test]
async fn getters_racing_through_a_tiny_ring_see_no_torn_or_repeated_item() -> mp::Result<()> {
    mp::init().await?;
    const PER_PRODUCER: u32 = 4_000;
    // 512 bytes hold a handful of items: getters keep copying records that putters overwrite as
    // soon as another getter commits, and the spilled items take the locked path among them.
    let q = Queue::<Vec<u8>>::builder().capacity(512).build()?;
    let done = mp::Event::new()?;
    let mut producers = Vec::new();
    for id in 0..2 {
        producers.push(mp::Process::spawn(
            put_racing_items,
            (q.clone(), id, PER_PRODUCER),
        )?);
    }
    let mut consumers = Vec::new();
    for batches in [false, true, false, true] {
        consumers.push(mp::Process::spawn(
            get_racing_items,
            (q.clone(), batches, done.clone()),
        )?);
    }
    for p in &mut producers {
        tokio::time::timeout(LIVENESS, p.join())
            .await
            .expect("producers finish")?;
    }
    done.set();
    let mut seen_by_each = Vec::new();
    for c in &mut consumers {
        let seen = tokio::time::timeout(LIVENESS, c.join())
            .await
            .expect("consumers finish")?;
        seen_by_each.push(seen);
    }
    check_every_item_once_in_order(seen_by_each, 2, PER_PRODUCER);
    assert!(spill_entries(&q).is_empty(), "spilled items are removed");
    Ok(())
}

#[tokio::test]
async fn a_producer_killed_right_after_creating_a_spill_leaves_nothing_even_without_more_spills()
-> mp::Result<()> {
    mp::init().await?;
    let q = Queue::<Vec<u8>>::builder()
        .capacity(4096)
        .maxsize(4)
        .build()?;
    // Many short lives, killed at varied moments: some die between creating a spill segment
    // and registering it with the tracker.
    for round in 0..60u64 {
        let mut child = mp::Process::spawn(spill_forever, q.clone())?;
        tokio::time::sleep(Duration::from_micros(1500 + (round % 13) * 350)).await;
        child.kill()?;
        let _ = child.join().await;
        while q.try_get().is_ok() {}
    }
    // No later spill sweeps here: the tracker alone must remove what the dead made.
    let deadline = Instant::now() + LIVENESS;
    while !spill_entries(&q).is_empty() {
        assert!(
            Instant::now() < deadline,
            "orphans left: {:?}",
            spill_entries(&q)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}
