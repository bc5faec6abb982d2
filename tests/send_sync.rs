//! Handles are `Send + Sync`, and the futures of their async methods are `Send`, so they work
//! with `tokio::spawn` on a multi-threaded runtime (as tokio's own `async_send_sync.rs` checks).

#![allow(dead_code, clippy::too_many_arguments)]

use std::time::Duration;

use tokio_multiprocessing::{self as mp};

fn send_sync<T: Send + Sync>() {}
fn send<T: Send>(_: &T) {}

#[test]
fn handles_are_send_and_sync() {
    send_sync::<mp::SharedMemory>();
    send_sync::<mp::ShareableList>();
    send_sync::<mp::Event>();
    send_sync::<mp::Lock>();
    send_sync::<mp::LockGuard>();
    send_sync::<mp::RLock>();
    send_sync::<mp::Semaphore>();
    send_sync::<mp::BoundedSemaphore>();
    send_sync::<mp::SemaphorePermit>();
    send_sync::<mp::Condition>();
    send_sync::<mp::Barrier>();
    send_sync::<mp::Value<u64>>();
    send_sync::<mp::Array<f64>>();
    send_sync::<mp::Queue<String>>();
    send_sync::<mp::LifoQueue<String>>();
    send_sync::<mp::PriorityQueue<u32>>();
    send_sync::<mp::JoinableQueue<String>>();
    send_sync::<mp::Connection<String>>();
    send_sync::<mp::connection::Sender<String>>();
    send_sync::<mp::connection::Receiver<String>>();
    send_sync::<mp::Process<String>>();
    send_sync::<mp::Pool>();
    fn send_only<T: Send>() {}
    send_only::<mp::pool::Map<u64>>();
    send_only::<mp::pool::Task<u64>>();
}

async fn add_one(x: u64) -> u64 {
    x + 1
}

/// A pool's futures and streams can move to spawned tasks.
async fn pool_futures_are_send(pool: mp::Pool) {
    send(&pool.apply(add_one, 1));
    send(&pool.spawn(add_one, 1));
    send(&pool.join());
    let mut map = pool.map_unordered(add_one, 0..10u64);
    send(&futures::StreamExt::next(&mut map));
    send(&pool.map(add_one, 0..10u64).collect_vec());
}

async fn futures_are_send(
    event: mp::Event,
    lock: mp::Lock,
    sem: mp::Semaphore,
    cond: mp::Condition,
    barrier: mp::Barrier,
    value: mp::Value<u64>,
    queue: mp::Queue<String>,
    mut conn: mp::Connection<String>,
    mut child: mp::Process<String>,
    listener: &mut mp::Listener<String>,
) {
    send(&event.wait());
    send(&event.wait_timeout(Duration::ZERO));
    send(&lock.lock());
    send(&lock.lock_timeout(Duration::ZERO));
    send(&sem.acquire());
    send(&barrier.wait());
    send(&value.lock());
    send(&queue.put(String::new()));
    send(&queue.get());
    send(&queue.get_many(4));
    send(&queue.put_many(vec![String::new()]));
    send(&conn.send(&String::new()));
    send(&conn.recv());
    send(&child.join());
    send(&listener.accept());
    send(&mp::Client::connect::<String>(
        "127.0.0.1:1".parse::<std::net::SocketAddr>().unwrap(),
        None,
    ));
    let guard = lock.lock().await.unwrap();
    send(&cond.wait(guard));
}
