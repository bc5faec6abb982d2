//! A tokio service handing jobs to a Python worker over `multiprocessing.connection`.
//!
//! The Python side (`examples/python_worker.py`) is ordinary CPython code:
//!
//! ```python
//! from multiprocessing.connection import Client
//! conn = Client(("127.0.0.1", port), authkey=b"secret")
//! ```
//!
//! after which `conn.recv()` / `conn.send(obj)` exchange pickled dicts, lists, numbers and
//! strings with this program's `recv().await` / `send(&x).await`. Run with
//! `cargo run --example python_peer` (it says so and stops if there is no `python3`).

use serde::{Deserialize, Serialize};
use tokio_multiprocessing::{self as mp, connection::Listener};

#[derive(Debug, Serialize)]
struct Job {
    id: u32,
    numbers: Vec<i64>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Done {
    id: u32,
    result: i64,
}

/// Both directions on one connection: jobs out, results in.
#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
enum Message {
    #[serde(skip_deserializing)]
    Job(Option<Job>),
    Done(Done),
}

#[tokio::main]
async fn main() -> mp::Result<()> {
    let key = b"secret";
    let mut listener = Listener::<Message>::builder("127.0.0.1:0".parse()?)
        .authkey(Some(key))
        .python_compatible(true)
        // CPython <= 3.11 can only do the HMAC-MD5 handshake; 3.12+ uses SHA-256.
        .allow_md5(true)
        .bind()
        .await?;
    let mp::connection::Address::Tcp(address) = listener.local_addr().clone() else {
        unreachable!("bound to TCP")
    };

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/python_worker.py");
    let worker = tokio::process::Command::new("python3")
        .args([script, &address.port().to_string(), "secret"])
        .kill_on_drop(true)
        .spawn();
    let mut worker = match worker {
        Ok(worker) => worker,
        Err(e) => {
            println!("no python3 here ({e}); nothing to talk to");
            return Ok(());
        }
    };

    let mut conn = listener.accept().await?;
    println!("a Python worker connected and proved the key");
    for id in 0..5 {
        let numbers: Vec<i64> = (1..=id as i64 + 2).collect();
        conn.send(&Message::Job(Some(Job { id, numbers }))).await?;
        match conn.recv().await? {
            Message::Done(done) => println!("job {} -> {}", done.id, done.result),
            other => println!("unexpected {other:?}"),
        }
    }
    conn.send(&Message::Job(None)).await?; // Python's `None`: stop
    worker.wait().await?;
    Ok(())
}
