//! The classic `multiprocessing.Pipe` program.
//!
//! Python:
//!
//! ```python
//! from multiprocessing import Process, Pipe
//!
//! def f(conn):
//!     conn.send([42, None, 'hello'])
//!     conn.close()
//!
//! if __name__ == '__main__':
//!     parent_conn, child_conn = Pipe()
//!     p = Process(target=f, args=(child_conn,))
//!     p.start()
//!     print(parent_conn.recv())   # prints "[42, None, 'hello']"
//!     p.join()
//! ```
//!
//! Here the child sends `["hi!! I am Python"]`, as in the familiar tutorial version.
//! Run with `cargo run --example pipe`.

use tokio_multiprocessing as mp;

async fn child(conn: mp::Connection<Vec<String>>) {
    conn.send(&vec!["hi!! I am Python".to_string()])
        .await
        .expect("send");
    drop(conn); // conn.close()
}

#[tokio::main]
async fn main() -> mp::Result<()> {
    mp::init().await?;

    let (mut parent_conn, child_conn) = mp::Pipe::<Vec<String>>::duplex()?;
    let mut p = mp::Process::spawn(child, child_conn)?;
    println!("{:?}", parent_conn.recv().await?);
    p.join().await?;
    // The child closed its end and exited: the pipe reports EOF, as Python's EOFError.
    assert!(matches!(parent_conn.recv().await, Err(mp::Error::Closed)));
    Ok(())
}
