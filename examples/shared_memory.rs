//! The classic `multiprocessing.shared_memory` session, across two processes.
//!
//! Python:
//!
//! ```python
//! from multiprocessing import shared_memory
//! shm_a = shared_memory.SharedMemory(create=True, size=10)
//! buffer = shm_a.buf
//! buffer[:4] = bytearray([22, 33, 44, 55])
//! buffer[4] = 100
//! # in another process:
//! shm_b = shared_memory.SharedMemory(shm_a.name)
//! array.array('b', shm_b.buf[:5])     # array('b', [22, 33, 44, 55, 100])
//! shm_b.buf[:5] = b'howdy'
//! shm_b.close()
//! # back in the first:
//! bytes(shm_a.buf[:5])                # b'howdy'
//! shm_a.close()
//! shm_a.unlink()
//! ```
//!
//! Run with `cargo run --example shared_memory`.

use tokio_multiprocessing as mp;

/// The second process: attach by name, read, write `howdy`, close (drop).
async fn other_process(name: String) -> Vec<u8> {
    let shm_b = mp::SharedMemory::open(&name).expect("attach by name");
    let mut seen = [0u8; 5];
    shm_b.read_at(0, &mut seen).expect("read");
    println!("[{}] read {:?}", mp::current_process().name, seen);
    shm_b.write_at(0, b"howdy").expect("write");
    seen.to_vec()
}

#[tokio::main]
async fn main() -> mp::Result<()> {
    mp::init().await?;

    let name = format!("psm_example_{}", std::process::id());
    let shm_a = mp::SharedMemory::create_named(&name, 10)?;
    shm_a.write_at(0, &[22, 33, 44, 55])?;
    shm_a.write_at(4, &[100])?;
    println!("[MainProcess] created {name:?} ({} bytes)", shm_a.size());

    let seen = mp::Process::spawn(other_process, name.clone())?
        .join()
        .await?;
    assert_eq!(seen, [22, 33, 44, 55, 100]);

    let mut back = [0u8; 5];
    shm_a.read_at(0, &mut back)?;
    println!(
        "[MainProcess] read back {:?}",
        String::from_utf8_lossy(&back)
    );
    assert_eq!(&back, b"howdy");

    shm_a.unlink()?; // Python's explicit unlink; dropping the creator would do it too.
    Ok(())
}
