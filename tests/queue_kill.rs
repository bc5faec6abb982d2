//! The queue under fire: producers and consumers SIGKILLed at random points, 500+ times (and
//! 300 more on a LIFO queue, 200 on a priority queue), with exact accounting of every item
//! (reliability-design.md §7, scenario 18).
//!
//! Every producer incarnation numbers its items and records, after each confirmed `put`, how
//! many it confirmed. Every consumer checks each item's checksum and counts it in a shared
//! table. At the end nothing may be duplicated or torn, every confirmed item must have arrived
//! (or still be queued) except at most one per consumer killed between `get` and counting it,
//! and at most one unconfirmed item per killed producer may have arrived. Half the producers
//! use `put_many` and half the consumers `get_many` (batches of `BATCH`), which widens both
//! bounds to a batch. Every 64th item is 6 KiB: in a queue with a 4 KiB ring it is spilled to a
//! segment of its own, and a getter killed while taking one must not make any other getter see
//! an error (consumers fail on any error).

mod support;

use std::time::Duration;

use support::LIVENESS;
use tokio_multiprocessing::{
    self as mp, Error, LifoQueue, PriorityQueue, ProcessFailure, Queue, RawArray,
};

const INCARNATIONS: usize = 700;
const PER_INCARNATION: usize = 4_000;
const BATCH: usize = 8;

#[derive(serde::Serialize, serde::Deserialize)]
struct Item {
    incarnation: u32,
    seq: u32,
    body: Vec<u8>,
    sum: u64,
}

impl Item {
    fn new(incarnation: u32, seq: u32) -> Item {
        let len = if seq % 64 == 63 { 6 * 1024 } else { seq % 200 };
        let body: Vec<u8> = (0..len).map(|i| (i as u8) ^ (incarnation as u8)).collect();
        let sum = checksum(incarnation, seq, &body);
        Item {
            incarnation,
            seq,
            body,
            sum,
        }
    }

    fn valid(&self) -> bool {
        self.sum == checksum(self.incarnation, self.seq, &self.body)
    }
}

/// A priority queue's order: a few priority classes, then producer and number, so gets pick
/// from the middle of the ring.
impl Ord for Item {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        let key = |i: &Item| (i.seq % 5, i.incarnation, i.seq);
        key(self).cmp(&key(other))
    }
}

impl PartialOrd for Item {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Item {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}

impl Eq for Item {}

fn checksum(incarnation: u32, seq: u32, body: &[u8]) -> u64 {
    body.iter()
        .fold(u64::from(incarnation) << 32 | u64::from(seq), |h, &b| {
            h.rotate_left(5) ^ u64::from(b)
        })
}

/// The queue kinds under test: the FIFO engine (a put lock, lock-free getters) and the LIFO and
/// priority ones (one lock, records flagged as taken in the middle of the ring).
trait KillQueue: Clone + serde::Serialize + serde::de::DeserializeOwned + 'static {
    fn q(&self) -> &Queue<Item>;
}

impl KillQueue for Queue<Item> {
    fn q(&self) -> &Queue<Item> {
        self
    }
}

impl KillQueue for LifoQueue<Item> {
    fn q(&self) -> &Queue<Item> {
        self
    }
}

impl KillQueue for PriorityQueue<Item> {
    fn q(&self) -> &Queue<Item> {
        self
    }
}

#[derive(Clone, serde::Serialize, serde::Deserialize)]
#[serde(bound = "Q: KillQueue")]
struct Books<Q> {
    queue: Q,
    /// Confirmed puts per producer incarnation.
    acked: RawArray<u32>,
    /// Times each (incarnation, seq) was received.
    received: RawArray<u32>,
    /// Failures children saw (a child that panics may be killed before it can report it, so
    /// it counts here first).
    failures: RawArray<u32>,
}

/// Counts a failure where the parent will see it, then panics.
fn fail<Q>(books: &Books<Q>, what: String) -> ! {
    let n = books.failures.get(0).unwrap();
    books.failures.set(0, n + 1).unwrap();
    panic!("{what}");
}

async fn producer<Q: KillQueue>((books, incarnation): (Books<Q>, u32)) {
    let batched = incarnation % 2 == 1;
    let step = if batched { BATCH as u32 } else { 1 };
    for first in (0..PER_INCARNATION as u32).step_by(step as usize) {
        let items = (first..first + step).map(|seq| Item::new(incarnation, seq));
        let put = async {
            if batched {
                books.queue.q().put_many(items).await.map_err(Error::from)
            } else {
                let mut items = items;
                let item = items.next().expect("one item");
                books.queue.q().put(item).await.map_err(Error::from)
            }
        };
        match tokio::time::timeout(LIVENESS, put).await {
            Ok(Ok(())) => books.acked.set(incarnation as usize, first + step).unwrap(),
            Ok(Err(e)) => fail(&books, format!("put failed: {e}")),
            Err(_) => fail(&books, "put hung".into()),
        }
    }
    // Done: wait to be killed or stopped.
    tokio::time::sleep(Duration::from_secs(3600)).await;
}

fn count_received<Q>(books: &Books<Q>, item: &Item) {
    if !item.valid() {
        fail(
            books,
            format!("torn item {}:{}", item.incarnation, item.seq),
        );
    }
    let i = item.incarnation as usize * PER_INCARNATION + item.seq as usize;
    let n = books.received.get(i).unwrap();
    books.received.set(i, n + 1).unwrap();
}

async fn consumer<Q: KillQueue>((books, batched): (Books<Q>, bool)) {
    loop {
        let got = if batched {
            tokio::time::timeout(Duration::from_millis(100), books.queue.q().get_many(BATCH)).await
        } else {
            tokio::time::timeout(Duration::from_millis(100), async {
                books.queue.q().get().await.map(|item| vec![item])
            })
            .await
        };
        match got {
            Ok(Ok(items)) => items.iter().for_each(|item| count_received(&books, item)),
            Err(_) => {}
            Ok(Err(e)) => fail(&books, format!("get failed: {e}")),
        }
    }
}

fn check_killed<R>(result: mp::Result<R>) {
    match result {
        Err(Error::Process(ProcessFailure::Signaled(9))) | Ok(_) => {}
        Err(e) => panic!("a child failed on its own (torn or corrupt data?): {e}"),
    }
}

#[tokio::test]
async fn five_hundred_kills_lose_duplicate_and_tear_nothing() -> mp::Result<()> {
    mp::init().await?;
    let queue = Queue::builder().maxsize(64).capacity(64 * 1024).build()?;
    kill_harness(queue, 500).await
}

#[tokio::test]
async fn a_queue_with_spilled_items_survives_two_hundred_kills() -> mp::Result<()> {
    mp::init().await?;
    let queue = Queue::builder().maxsize(64).capacity(4096).build()?;
    kill_harness(queue.clone(), 200).await?;
    // Producers killed between writing a spill segment and queueing it leave orphans; the
    // next spilling put sweeps them (at most once a second).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    queue
        .put(Item::new(u32::MAX, 63))
        .await
        .map_err(Error::from)?;
    assert!(queue.get().await?.valid());
    let prefix = mp::test_hooks::queue_spill_prefix(&queue);
    let left: Vec<_> = std::fs::read_dir("/dev/shm")?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&prefix))
        .collect();
    assert!(left.is_empty(), "spill segments left: {left:?}");
    Ok(())
}

#[tokio::test]
async fn a_lifo_queue_survives_three_hundred_kills() -> mp::Result<()> {
    mp::init().await?;
    let queue = LifoQueue::with(Queue::builder().maxsize(64).capacity(64 * 1024))?;
    kill_harness(queue, 300).await
}

#[tokio::test]
async fn a_priority_queue_survives_two_hundred_kills() -> mp::Result<()> {
    mp::init().await?;
    let queue = PriorityQueue::with(Queue::builder().maxsize(64).capacity(64 * 1024))?;
    kill_harness(queue, 200).await
}

/// Runs producers and consumers of `queue`, SIGKILLs one of them at random `kills` times, then
/// checks the books.
async fn kill_harness<Q: KillQueue>(queue: Q, kills: usize) -> mp::Result<()> {
    let books = Books {
        queue,
        acked: RawArray::new(&vec![0u32; INCARNATIONS])?,
        received: RawArray::new(&vec![0u32; INCARNATIONS * PER_INCARNATION])?,
        failures: RawArray::new(&[0u32])?,
    };
    let mut next_incarnation = 0u32;
    let mut producers: Vec<(u32, mp::Process<()>)> = Vec::new();
    let mut consumers: Vec<mp::Process<()>> = Vec::new();
    for _ in 0..2 {
        producers.push((
            next_incarnation,
            mp::Process::spawn(producer::<Q>, (books.clone(), next_incarnation))?,
        ));
        next_incarnation += 1;
        consumers.push(mp::Process::spawn(
            consumer::<Q>,
            (books.clone(), next_incarnation.is_multiple_of(2)),
        )?);
    }

    let (mut producer_kills, mut consumer_kills) = (0usize, 0usize);
    let mut killed_producers = Vec::new();
    let mut seed = 0x853c_49e6_748f_ea9bu64;
    let mut random = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    while producer_kills + consumer_kills < kills {
        tokio::time::sleep(Duration::from_micros(random() % 4000)).await;
        if random() % 2 == 0 && (next_incarnation as usize) < INCARNATIONS {
            let slot = (random() % producers.len() as u64) as usize;
            let (incarnation, mut victim) = producers.swap_remove(slot);
            victim.kill()?;
            check_killed(victim.join().await);
            killed_producers.push(incarnation);
            producer_kills += 1;
            producers.push((
                next_incarnation,
                mp::Process::spawn(producer::<Q>, (books.clone(), next_incarnation))?,
            ));
            next_incarnation += 1;
        } else {
            let slot = (random() % consumers.len() as u64) as usize;
            let mut victim = consumers.swap_remove(slot);
            victim.kill()?;
            check_killed(victim.join().await);
            consumer_kills += 1;
            consumers.push(mp::Process::spawn(
                consumer::<Q>,
                (books.clone(), consumer_kills.is_multiple_of(2)),
            )?);
        }
    }
    // The survivors are killed too, and count as kills.
    for (_, mut p) in producers {
        p.kill()?;
        check_killed(p.join().await);
        producer_kills += 1;
    }
    for mut c in consumers {
        c.kill()?;
        check_killed(c.join().await);
        consumer_kills += 1;
    }
    // Whatever is still queued counts as delivered to us.
    while let Ok(item) = books.queue.q().try_get() {
        count_received(&books, &item);
    }

    assert_eq!(
        books.failures.get(0)?,
        0,
        "a child failed (see its message above)"
    );
    let received = books.received.to_vec();
    let acked = books.acked.to_vec();
    let mut lost = 0usize;
    let mut unconfirmed_arrived = 0usize;
    let mut confirmed = 0usize;
    for incarnation in 0..next_incarnation as usize {
        let row = &received[incarnation * PER_INCARNATION..(incarnation + 1) * PER_INCARNATION];
        assert!(
            row.iter().all(|&n| n <= 1),
            "incarnation {incarnation}: an item arrived twice"
        );
        let acked = acked[incarnation] as usize;
        confirmed += acked;
        lost += row[..acked].iter().filter(|&&n| n == 0).count();
        let extra = row[acked..].iter().filter(|&&n| n == 1).count();
        assert!(
            extra <= BATCH,
            "incarnation {incarnation}: {extra} unconfirmed items arrived"
        );
        unconfirmed_arrived += extra;
    }
    eprintln!(
        "{producer_kills} producer and {consumer_kills} consumer kills; {confirmed} confirmed items, \
         {lost} lost with killed consumers, {unconfirmed_arrived} committed but unconfirmed"
    );
    assert!(
        lost <= consumer_kills * BATCH,
        "{lost} confirmed items lost, only {consumer_kills} consumers killed"
    );
    assert!(unconfirmed_arrived <= producer_kills * BATCH);
    assert!(confirmed > 0);
    Ok(())
}
