//! profiling helper (not committed)
use std::time::Instant;
use tokio_multiprocessing as mp;
#[tokio::main]
async fn main() -> mp::Result<()> {
    mp::init().await?;
    let m = mp::Manager::start().await?;
    let d = m.dict::<u64, u64>().await?;
    let n = 300_000u64;
    let d2 = d.clone();
    tokio::spawn(async move {
        let t = Instant::now();
        for i in 0..n {
            d2.insert(i, i).await.unwrap();
        }
        eprintln!(
            "spawned insert {:.2} us",
            t.elapsed().as_secs_f64() * 1e6 / n as f64
        );
        let t = Instant::now();
        for _ in 0..n {
            d2.len().await.unwrap();
        }
        eprintln!(
            "spawned len {:.2} us",
            t.elapsed().as_secs_f64() * 1e6 / n as f64
        );
    })
    .await
    .unwrap();
    let t = Instant::now();
    for i in 0..n {
        d.insert(i, i).await?;
    }
    eprintln!(
        "main insert {:.2} us",
        t.elapsed().as_secs_f64() * 1e6 / n as f64
    );
    m.shutdown().await
}
