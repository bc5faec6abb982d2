//! The first program of Python's `multiprocessing` docs: start a process, join it.
//!
//! Python:
//!
//! ```python
//! from multiprocessing import Process
//!
//! def f(name):
//!     print('hello', name)
//!
//! if __name__ == '__main__':
//!     p = Process(target=f, args=('bob',))
//!     p.start()
//!     p.join()
//! ```
//!
//! Run with `cargo run --example process`.

use tokio_multiprocessing as mp;

async fn f(name: String) -> u32 {
    let me = mp::current_process();
    let parent = mp::parent_process().expect("started by mp::Process");
    println!(
        "hello {name} from {} (pid {}), child of pid {}",
        me.name, me.pid, parent.pid
    );
    me.pid
}

#[tokio::main]
async fn main() -> mp::Result<()> {
    // In the child this runs `f` and exits; in the parent it returns at once.
    mp::init().await?;

    let mut p = mp::Process::spawn(f, "bob".to_string())?;
    let child_pid = p.join().await?;
    println!(
        "joined {} (pid {child_pid}), exit code {:?}",
        p.name(),
        p.exitcode()
    );
    Ok(())
}
