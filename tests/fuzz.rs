//! Fuzz-style tests of what a hostile process can write into shared memory: segment headers
//! and ShareableList tables of named segments, and the state and ring of a queue. Every open
//! and every operation afterwards must give a value or an `Err` — never a panic, an abort or a
//! hang. Seeded and bounded, so they run in seconds. (Frames, pickles and handle wire forms are
//! fuzzed inside the crate, in `src/fuzz_tests.rs`.)

mod support;

use std::time::Duration;

use support::{plant_segment, unique_name};
use tokio_multiprocessing::{
    self as mp, Item, LifoQueue, PriorityQueue, Queue, ShareableList, SharedMemory,
};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// A word worth writing: small, huge, negative, a boundary, or random.
    fn word(&mut self) -> u64 {
        match self.below(8) {
            0 => 0,
            1 => u64::MAX,
            2 => 1 << self.below(64),
            3 => (1 << self.below(64)) - 1,
            4 => self.next() & 0xffff,
            5 => u64::from(u32::MAX),
            _ => self.next(),
        }
    }
}

#[test]
fn mutated_segment_headers_and_list_tables_are_values_or_errors() {
    let list = ShareableList::create_named(
        &unique_name("fuzz-list"),
        [
            Item::Int(1),
            Item::from("text"),
            Item::Float(2.5),
            Item::None,
        ],
    )
    .unwrap();
    let original = std::fs::read(format!("/dev/shm/{}", list.name().unwrap())).unwrap();
    let mut rng = Rng(0x6a09_e667_f3bc_c908);
    for _ in 0..1500 {
        let mut bytes = original.clone();
        for _ in 0..1 + rng.below(3) {
            // Mostly the header (64 bytes) and the list's table right after it.
            let at = rng.below(64 + 16 + 16 * 4 + 8) & !7;
            let word = rng.word().to_le_bytes();
            let end = (at + 8).min(bytes.len());
            bytes[at..end].copy_from_slice(&word[..end - at]);
        }
        if rng.below(10) == 0 {
            bytes.truncate(rng.below(bytes.len()));
        }
        let name = unique_name("fuzz-seg");
        plant_segment(&name, &bytes);
        if let Ok(shm) = SharedMemory::open(&name) {
            let _ = shm.to_vec();
        }
        if let Ok(opened) = ShareableList::open(&name) {
            let _ = opened.to_vec();
            for i in 0..opened.len().min(8) {
                let _ = opened.slot(i);
                let _ = opened.set(i, 7i64);
            }
        }
        std::fs::remove_file(format!("/dev/shm/{name}")).unwrap();
    }
}

/// Writes random words over a queue's state and ring, then uses it every way that does not
/// wait for long.
async fn scribble_and_use<T>(queue: &Queue<u32>, rng: &mut Rng, _flavour: &T) {
    let segment = mp::test_hooks::queue_segment(queue);
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(segment.size() / 8) * 8;
        let _ = segment.write_at(at, &rng.word().to_le_bytes());
    }
    let short = Duration::from_millis(1);
    for _ in 0..4 {
        let _ = queue.try_get();
        let _ = queue.try_put(5);
    }
    let _ = (queue.len(), queue.is_empty(), queue.is_full());
    let _ = tokio::time::timeout(Duration::from_secs(5), queue.get_timeout(short))
        .await
        .expect("get_timeout returns");
    let _ = tokio::time::timeout(Duration::from_secs(5), queue.put_timeout(6, short))
        .await
        .expect("put_timeout returns");
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        tokio::time::timeout(short, queue.get_many(8)).await
    })
    .await
    .expect("get_many returns");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scribbled_queue_states_are_values_or_errors() {
    let mut rng = Rng(0xbb67_ae85_84ca_a73b);
    for round in 0..1500 {
        let builder = Queue::<u32>::builder().capacity(1024).maxsize(16);
        match round % 3 {
            0 => {
                let queue = builder.build().unwrap();
                for i in 0..rng.below(20) {
                    let _ = queue.try_put(i as u32);
                }
                scribble_and_use(&queue, &mut rng, &()).await;
            }
            1 => {
                let queue = LifoQueue::with(builder).unwrap();
                for i in 0..rng.below(20) {
                    let _ = queue.try_put(i as u32);
                }
                scribble_and_use(&queue, &mut rng, &()).await;
            }
            _ => {
                let queue = PriorityQueue::with(builder).unwrap();
                for i in 0..rng.below(20) {
                    let _ = queue.try_put(i as u32);
                }
                scribble_and_use(&queue, &mut rng, &()).await;
            }
        }
    }
}
