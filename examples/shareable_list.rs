//! A 2000-slot `ShareableList` filled in two halves by two child processes; the parent sums it.
//!
//! Python:
//!
//! ```python
//! from multiprocessing import Process, shared_memory
//!
//! def fill(name, half):
//!     sl = shared_memory.ShareableList(name=name)
//!     for i in range(half * 1000, (half + 1) * 1000):
//!         sl[i] = i
//!     sl.shm.close()
//!
//! if __name__ == "__main__":
//!     sl = shared_memory.ShareableList([0] * 2000)
//!     ps = [Process(target=fill, args=(sl.shm.name, h)) for h in (0, 1)]
//!     for p in ps: p.start()
//!     for p in ps: p.join()
//!     print(sum(sl))
//!     sl.shm.close(); sl.shm.unlink()
//! ```
//!
//! Run with `cargo run --example shareable_list`.

use tokio_multiprocessing::{self as mp, Item, ShareableList};

async fn fill((name, half): (String, usize)) {
    let list = ShareableList::open(&name).expect("attach by name");
    for i in half * 1000..(half + 1) * 1000 {
        list.set(i, i as i64).expect("set");
    }
    println!(
        "[{}] filled slots {}..{}",
        mp::current_process().name,
        half * 1000,
        (half + 1) * 1000
    );
}

#[tokio::main]
async fn main() -> mp::Result<()> {
    mp::init().await?;

    let name = format!("psm_list_example_{}", std::process::id());
    let list = ShareableList::create_named(&name, vec![0i64; 2000])?;
    let mut children = Vec::new();
    for half in 0..2 {
        children.push(mp::Process::spawn(fill, (name.clone(), half))?);
    }
    for child in &mut children {
        child.join().await?;
    }
    let mut sum = 0;
    for item in list.to_vec()? {
        if let Item::Int(v) = item {
            sum += v;
        }
    }
    println!("sum = {sum}");
    assert_eq!(sum, (0..2000).sum::<i64>());
    Ok(()) // dropping the creator unlinks the name
}
