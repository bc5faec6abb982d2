//! Managers, as in Python's documentation: a registered `Maths` class used through a proxy, a
//! dict that two worker processes fill, and a `SharedMemoryManager` whose `ShareableList` two
//! processes sum.
//!
//! Python:
//!
//! ```python
//! from multiprocessing import Process
//! from multiprocessing.managers import BaseManager, SharedMemoryManager, SyncManager
//!
//! class MathsClass:
//!     def add(self, x, y):
//!         return x + y
//!     def mul(self, x, y):
//!         return x * y
//!
//! class MyManager(BaseManager):
//!     pass
//!
//! MyManager.register('Maths', MathsClass)
//!
//! def fill(d, worker):
//!     for i in range(5):
//!         d[f"{worker}-{i}"] = i * i
//!
//! def do_work(sl, start, end):
//!     return sum(sl[start:end])
//!
//! if __name__ == '__main__':
//!     with MyManager() as manager:
//!         maths = manager.Maths()
//!         print(maths.add(4, 3))         # prints 7
//!         print(maths.mul(7, 8))         # prints 56
//!
//!     with SyncManager() as manager:
//!         d = manager.dict()
//!         workers = [Process(target=fill, args=(d, w)) for w in ("a", "b")]
//!         for p in workers: p.start()
//!         for p in workers: p.join()
//!         print(len(d))                  # prints 10
//!
//!     with SharedMemoryManager() as smm:
//!         sl = smm.ShareableList(range(2000))
//!         p1 = Process(target=do_work, args=(sl, 0, 1000))
//!         p2 = Process(target=do_work, args=(sl, 1000, 2000))
//!         ...                            # the segments go when the block ends
//! ```
//!
//! Run with `cargo run --example manager`.

use serde::{Deserialize, Serialize};
use tokio_multiprocessing as mp;

#[derive(Default, Serialize, Deserialize)]
struct Maths;

mp::managed! {
    proxy MathsProxy for Maths {
        fn add(&self, x: i64, y: i64) -> i64 {
            x + y
        }
        fn mul(&self, x: i64, y: i64) -> i64 {
            x * y
        }
    }
}

/// Fills the shared dict from a worker process.
async fn fill((dict, worker): (mp::manager::DictProxy<String, u64>, String)) -> mp::Result<()> {
    for i in 0..5 {
        dict.insert(format!("{worker}-{i}"), i * i).await?;
    }
    Ok(())
}

/// Sums part of a shared list in a worker process.
async fn do_work((list, start, end): (mp::ShareableList, usize, usize)) -> mp::Result<i64> {
    let mut sum = 0;
    for i in start..end {
        if let mp::Item::Int(v) = list.get(i)? {
            sum += v;
        }
    }
    Ok(sum)
}

#[tokio::main]
async fn main() -> mp::Result<()> {
    mp::init().await?; // in a child process: runs its entry and exits here

    // A user type in a manager process.
    let manager = mp::Manager::builder().register::<Maths>().start().await?;
    let maths = manager.create(Maths).await?;
    println!("{}", maths.add(4, 3).await?); // prints 7
    println!("{}", maths.mul(7, 8).await?); // prints 56
    manager.shutdown().await?;

    // A dict two worker processes fill.
    let manager = mp::Manager::start().await?;
    let dict = manager.dict::<String, u64>().await?;
    let mut workers = mp::ProcessSet::new();
    for worker in ["a", "b"] {
        workers.spawn(fill, (dict.clone(), worker.to_string()))?;
    }
    while let Some((_, result)) = workers.join_next().await {
        result??;
    }
    println!("{} entries: {:?}", dict.len().await?, dict.keys().await?);
    manager.shutdown().await?;

    // A shared list from a SharedMemoryManager, summed by two processes.
    let smm = mp::SharedMemoryManager::start().await?;
    let list = smm.shareable_list((0..2000).map(|i| i as i64)).await?;
    let name = list.name().unwrap_or_default().to_owned();
    let mut first = mp::Process::spawn(do_work, (list.clone(), 0, 1000))?;
    let mut second = mp::Process::spawn(do_work, (list.clone(), 1000, 2000))?;
    let total = first.join().await?? + second.join().await??;
    println!("total: {total}"); // prints 1999000
    drop(list);
    smm.shutdown().await?; // unlinks every segment it made
    let gone = !std::path::Path::new("/dev/shm").join(&name).exists();
    println!("segment {name} unlinked: {gone}");
    Ok(())
}
