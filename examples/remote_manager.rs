//! A queue served over TCP, as in the "Using a remote manager" section of Python's docs: a
//! server publishes a queue, and clients that know only the address and the authkey put to it
//! and get from it.
//!
//! Python:
//!
//! ```python
//! from multiprocessing.managers import BaseManager
//! from queue import Queue
//!
//! queue = Queue()
//! class QueueManager(BaseManager): pass
//! QueueManager.register('get_queue', callable=lambda: queue)
//! m = QueueManager(address=('', 50000), authkey=b'abracadabra')
//! m.get_server().serve_forever()
//!
//! # on another machine:
//! m = QueueManager(address=('foo.bar.org', 50000), authkey=b'abracadabra')
//! m.connect()
//! m.get_queue().put('hello')
//! ```
//!
//! Here the server runs in this program (on its tokio runtime) and the client is a child
//! process that connects by address, as one on another machine would.
//!
//! Run with `cargo run --example remote_manager`.

use tokio_multiprocessing as mp;
use tokio_multiprocessing::manager::QueueProxy;

const AUTHKEY: &[u8] = b"abracadabra";

/// A client that knows only where the manager is and the key.
async fn client(address: String) -> mp::Result<()> {
    let address: mp::connection::Address = address.parse()?;
    let manager = mp::Manager::connect(address, AUTHKEY).await?;
    let queue: QueueProxy<String> = manager.lookup("get_queue").await?;
    queue
        .put("hello".to_string())
        .await
        .map_err(mp::Error::from)?;
    Ok(())
}

#[tokio::main]
async fn main() -> mp::Result<()> {
    mp::init().await?;
    let server = mp::Manager::builder()
        .bind(
            "127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .expect("an address"),
        )
        .authkey(AUTHKEY)
        .serve()
        .await?;
    let queue = server.queue::<String>(0).await?;
    server.publish("get_queue", &queue).await?;
    println!("serving on {}", server.address());

    let mut remote = mp::Process::spawn(client, server.address().to_string())?;
    remote.join().await??;
    println!("{}", queue.get().await?); // prints hello
    server.shutdown().await
}
