//! W8: a manager. A proxy call round trip (`maths.add(4, 3)`) to a manager process over its
//! Unix socket and over TCP loopback, and `dict` inserts from one task and from eight tasks
//! sharing one proxy (calls/s).

use std::time::Instant;

use serde::{Deserialize, Serialize};
use tokio_multiprocessing as mp;

#[derive(Default, Serialize, Deserialize)]
pub(crate) struct Maths;

mp::managed! {
    pub(crate) proxy MathsProxy for Maths {
        pub(crate) fn add(&self, x: i64, y: i64) -> i64 {
            x + y
        }
    }
}

/// A manager process that knows `Maths`, on its default Unix socket or on TCP loopback.
pub(crate) async fn start(tcp: bool) -> mp::Result<mp::Manager> {
    let builder = mp::Manager::builder().register::<Maths>();
    if tcp {
        builder
            .bind("127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap())
            .authkey(b"bench")
            .start()
            .await
    } else {
        builder.start().await
    }
}

/// Round trips of `maths.add(4, 3)`, in µs.
pub(crate) async fn call_round_trips(manager: &mp::Manager, rounds: u64) -> mp::Result<Vec<f64>> {
    let maths = manager.create(Maths).await?;
    for _ in 0..200 {
        maths.add(4, 3).await?;
    }
    let mut samples = Vec::with_capacity(rounds as usize);
    for _ in 0..rounds {
        let start = Instant::now();
        let seven = maths.add(4, 3).await?;
        samples.push(start.elapsed().as_secs_f64() * 1e6);
        assert_eq!(seven, 7);
    }
    Ok(samples)
}

/// `dict` inserts per second, `count` in all, from `tasks` tasks sharing one proxy.
pub(crate) async fn dict_inserts(manager: &mp::Manager, count: u64, tasks: u64) -> mp::Result<f64> {
    let dict = manager.dict::<u64, u64>().await?;
    let start = Instant::now();
    let mut running: Vec<tokio::task::JoinHandle<mp::Result<()>>> = Vec::new();
    for t in 0..tasks {
        let dict = dict.clone();
        running.push(tokio::spawn(async move {
            for i in (t..count).step_by(tasks as usize) {
                dict.insert(i, i).await?;
            }
            mp::Result::Ok(())
        }));
    }
    for task in running {
        task.await.expect("no panic")?;
    }
    let elapsed = start.elapsed().as_secs_f64();
    assert_eq!(dict.len().await?, count as usize);
    Ok(count as f64 / elapsed)
}
