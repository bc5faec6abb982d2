//! Side-by-side IPC benchmarks: `cargo bench` (full), `cargo bench -- --quick` (scaled down
//! about 20x, for CI), `cargo bench -- --only W1,W3` (some workloads).
//!
//! Workloads of DESIGN.md §6 between two real processes; process start-up is outside every timed
//! region (the sender waits for a "go" from the timer's side). Each row is the median of 3 runs
//! with min–max; latency rows give p50 and p99. Ratios compare this crate with every other row
//! of the workload.
//!
//! - W1: 64-byte messages one-way (msgs/s)
//! - W2: 8-byte ping-pong (µs per round trip)
//! - W3: 1 MiB messages one-way (GB/s)
//! - W4: two processes each doing lock / increment a shared counter / unlock (ops/s, counter
//!   checked exact)
//! - W5: one process sets an Event, another waiting for it notices (µs, timestamps through
//!   shared memory): set again as soon as the waiter answered, and set 100 µs after the
//!   waiter began waiting (so it has parked)
//! - W5s, W5b, W5c: hand-offs between two processes through a semaphore (ping-pong), a
//!   barrier of two (rounds) and a condition (turns), µs per round trip
//! - W6: 100k tiny pool tasks (`x → x + 1`) through `map` and through `map_unordered` with
//!   chunksize 1 (tasks/s)
//! - W7: pool `apply` round trip (µs), and the speed-up of CPU-bound tasks on all workers over
//!   running them serially
//! - W8: a manager: proxy call round trip (µs) over a Unix socket and over TCP loopback, and
//!   `dict` inserts from one task and from eight tasks sharing a proxy (calls/s)
//!
//! Systems: this crate's Pipe and Queue (W1–W3), Lock + Value (W4) and Event (W5), async and
//! blocking; a hand-rolled tokio `UnixStream` + `LengthDelimitedCodec` (one message per `send`,
//! and `feed` + `flush`); Python's `multiprocessing` via `benches/peers.py` (skipped with a note
//! when `python3` is missing; its queues run a quarter of the messages, being slow); and the
//! limits of the machine in `limits.rs`.

use std::os::fd::OwnedFd;
use std::time::Instant;

use futures::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio_multiprocessing::handle::{self, FdIndex, FdSink, FdSource, Handle};
use tokio_multiprocessing::{self as mp, Connection, Pipe};
use tokio_util::codec::{Framed, LengthDelimitedCodec};

mod cpu;
mod hand_off;
mod limits;
mod manager;
mod pool;

use cpu::CpuMeter;

/// A ping-pong's round-trip times in µs, and µs of CPU (both processes) per round trip.
type RoundTrips = (Vec<f64>, f64);

// ----- a raw socket handle, so the tokio-codec peer runs across processes too -----

struct RawSocket(OwnedFd);

impl Handle for RawSocket {
    type Wire = FdIndex;
    fn to_wire(&self, fds: &mut FdSink) -> mp::Result<FdIndex> {
        fds.push(&self.0)
    }
    fn from_wire(wire: FdIndex, fds: &mut FdSource) -> mp::Result<Self> {
        Ok(RawSocket(fds.take(wire)?))
    }
}

impl Serialize for RawSocket {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        handle::serialize(self, s)
    }
}

impl<'de> Deserialize<'de> for RawSocket {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        handle::deserialize(d)
    }
}

fn framed(sock: RawSocket) -> Framed<tokio::net::UnixStream, LengthDelimitedCodec> {
    let std = std::os::unix::net::UnixStream::from(sock.0);
    std.set_nonblocking(true).unwrap();
    let codec = LengthDelimitedCodec::builder()
        .max_frame_length(64 << 20)
        .new_codec();
    Framed::new(tokio::net::UnixStream::from_std(std).unwrap(), codec)
}

fn raw_pair() -> (RawSocket, RawSocket) {
    let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    (RawSocket(a.into()), RawSocket(b.into()))
}

// ----- child entries -----

#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// One message per call, raw bytes.
    Send,
    /// Batches: `feed` + `flush` for pipes; typed `put_many` / `get_many` for queues.
    Batched,
    /// Queues only: `put_many_bytes` / `get_many_bytes`.
    BatchedBytes,
    /// Queues only: typed `put` / `get` of `Vec<u8>` (serialised with postcard).
    Typed,
    /// The blocking twins on a thread.
    Blocking,
}

async fn pipe_sender((mut conn, count, size, mode): (Connection<Vec<u8>>, usize, usize, Mode)) {
    conn.recv_bytes().await.unwrap();
    let payload = vec![7u8; size];
    // Pipes carry bytes only here; the queue-only modes fall back to their pipe equivalents.
    match mode {
        Mode::Send | Mode::Typed => {
            for _ in 0..count {
                conn.send_bytes(&payload).await.unwrap();
            }
        }
        Mode::Batched | Mode::BatchedBytes => {
            for _ in 0..count {
                conn.feed_bytes(&payload).await.unwrap();
            }
            conn.flush().await.unwrap();
        }
        Mode::Blocking => tokio::task::spawn_blocking(move || {
            for _ in 0..count {
                conn.send_bytes_blocking(&payload).unwrap();
            }
        })
        .await
        .unwrap(),
    }
}

async fn pipe_echo((conn, count, blocking): (Connection<Vec<u8>>, usize, bool)) {
    let mut conn = conn;
    if blocking {
        tokio::task::spawn_blocking(move || {
            for _ in 0..count {
                let m = conn.recv_bytes_blocking().unwrap();
                conn.send_bytes_blocking(&m).unwrap();
            }
        })
        .await
        .unwrap();
    } else {
        for _ in 0..count {
            let m = conn.recv_bytes().await.unwrap();
            conn.send_bytes(&m).await.unwrap();
        }
    }
}

async fn codec_sender((sock, count, size, batched): (RawSocket, usize, usize, bool)) {
    let mut f = framed(sock);
    f.next().await.unwrap().unwrap();
    let payload = bytes::Bytes::from(vec![7u8; size]);
    for _ in 0..count {
        if batched {
            f.feed(payload.clone()).await.unwrap();
        } else {
            f.send(payload.clone()).await.unwrap();
        }
    }
    SinkExt::<bytes::Bytes>::flush(&mut f).await.unwrap();
}

async fn codec_echo((sock, count): (RawSocket, usize)) {
    let mut f = framed(sock);
    for _ in 0..count {
        let m = f.next().await.unwrap().unwrap();
        f.send(m.freeze()).await.unwrap();
    }
}

async fn locker((value, go, count, blocking): (mp::Value<u64>, mp::Event, usize, bool)) {
    go.wait().await;
    if blocking {
        tokio::task::spawn_blocking(move || {
            for _ in 0..count {
                *value.lock_blocking().unwrap() += 1;
            }
        })
        .await
        .unwrap();
    } else {
        for _ in 0..count {
            *value.lock().await.unwrap() += 1;
        }
    }
}

/// Nanoseconds on the wall clock, which both processes share.
fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Waits for `ping`, records how long after the stamped `set` it woke, answers with `pong`.
async fn event_waiter(
    (ping, pong, stamp, rounds, blocking): (mp::Event, mp::Event, mp::RawValue<u64>, usize, bool),
) -> Vec<f64> {
    let sample =
        |woke: u64, stamp: &mp::RawValue<u64>| woke.saturating_sub(stamp.get()) as f64 / 1000.0;
    if blocking {
        tokio::task::spawn_blocking(move || {
            let mut samples = Vec::with_capacity(rounds);
            for _ in 0..rounds {
                ping.wait_blocking();
                samples.push(sample(now_ns(), &stamp));
                ping.clear();
                pong.set();
            }
            samples
        })
        .await
        .unwrap()
    } else {
        // On a worker thread, the one that runs the reactor: a task awaited by `block_on` on
        // the main thread would need a second thread hand-off per wake-up.
        tokio::spawn(async move {
            let mut samples = Vec::with_capacity(rounds);
            for _ in 0..rounds {
                ping.wait().await;
                samples.push(sample(now_ns(), &stamp));
                ping.clear();
                pong.set();
            }
            samples
        })
        .await
        .unwrap()
    }
}

/// W4: two processes each lock, increment, unlock `count` times; ops/s (checked exact).
async fn contended_lock(count: usize, blocking: bool) -> mp::Result<f64> {
    let value = mp::Value::new(0u64)?;
    let go = mp::Event::new()?;
    let mut a = mp::Process::spawn(locker, (value.clone(), go.clone(), count, blocking))?;
    let mut b = mp::Process::spawn(locker, (value.clone(), go.clone(), count, blocking))?;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let start = Instant::now();
    go.set();
    a.join().await?;
    b.join().await?;
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(value.get(), 2 * count as u64, "lost increments");
    Ok(2.0 * count as f64 / secs)
}

/// W5: `set` in one process to wake-up in another, µs per sample, and µs of CPU (both
/// processes) per sample. The setter sets again as soon as the waiter answered, so the waiter
/// has been waiting only a few µs; with `parked`, the setter first sleeps 100 µs, so the waiter
/// has given up checking and parked (what a wait for something rare costs).
async fn event_wake(rounds: usize, blocking: bool, parked: bool) -> mp::Result<RoundTrips> {
    let (ping, pong) = (mp::Event::new()?, mp::Event::new()?);
    let stamp = mp::RawValue::new(0u64)?;
    let mut child = mp::Process::spawn(
        event_waiter,
        (ping.clone(), pong.clone(), stamp.clone(), rounds, blocking),
    )?;
    let pid = child.pid();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let cpu = if blocking || parked {
        // The setting side on a thread too, as in the raw futex row (and so it can sleep
        // 100 µs, which a tokio timer cannot).
        tokio::task::spawn_blocking(move || {
            let mut meter = None;
            for _ in 0..rounds {
                if parked {
                    std::thread::sleep(std::time::Duration::from_micros(100));
                }
                stamp.set(now_ns());
                ping.set();
                pong.wait_blocking();
                pong.clear();
                meter.get_or_insert_with(|| CpuMeter::start(pid));
            }
            meter.map_or(0.0, |m| m.per_round_us(rounds - 1))
        })
        .await
        .expect("timing thread")
    } else {
        let mut meter = None;
        for _ in 0..rounds {
            stamp.set(now_ns());
            ping.set();
            pong.wait().await;
            pong.clear();
            meter.get_or_insert_with(|| CpuMeter::start(pid));
        }
        meter.map_or(0.0, |m| m.per_round_us(rounds - 1))
    };
    Ok((child.join().await?, cpu))
}

// ----- queues -----

async fn queue_sender(
    (q, go, count, size, mode): (mp::Queue<Vec<u8>>, mp::Event, usize, usize, Mode),
) {
    go.wait().await;
    let payload = vec![7u8; size];
    match mode {
        Mode::Send => {
            for _ in 0..count {
                q.put_bytes(&payload).await.unwrap();
            }
        }
        Mode::Batched => {
            let mut left = count;
            while left > 0 {
                let n = left.min(256);
                q.put_many(std::iter::repeat_n(payload.clone(), n))
                    .await
                    .map_err(mp::Error::from)
                    .unwrap();
                left -= n;
            }
        }
        Mode::BatchedBytes => {
            let batch = vec![payload.as_slice(); 256];
            let mut left = count;
            while left > 0 {
                let n = left.min(256);
                q.put_many_bytes(&batch[..n]).await.unwrap();
                left -= n;
            }
        }
        Mode::Typed => {
            for _ in 0..count {
                q.put(payload.clone())
                    .await
                    .map_err(mp::Error::from)
                    .unwrap();
            }
        }
        Mode::Blocking => tokio::task::spawn_blocking(move || {
            for _ in 0..count {
                q.put_bytes_blocking(&payload).unwrap();
            }
        })
        .await
        .unwrap(),
    }
}

type EchoQueues = (mp::Queue<Vec<u8>>, mp::Queue<Vec<u8>>, usize, bool);

async fn queue_echo((requests, replies, count, blocking): EchoQueues) {
    if blocking {
        tokio::task::spawn_blocking(move || {
            for _ in 0..count {
                let m = requests.get_bytes_blocking().unwrap();
                replies.put_bytes_blocking(&m).unwrap();
            }
        })
        .await
        .unwrap();
    } else {
        for _ in 0..count {
            let m = requests.get_bytes().await.unwrap();
            replies.put_bytes(&m).await.unwrap();
        }
    }
}

/// Seconds for `count` queue items to arrive, timed from the "go".
async fn one_way_queue(count: usize, size: usize, mode: Mode) -> mp::Result<f64> {
    let capacity = (size * 8).max(1 << 20);
    let q = mp::Queue::<Vec<u8>>::builder().capacity(capacity).build()?;
    let go = mp::Event::new()?;
    let mut child = mp::Process::spawn(queue_sender, (q.clone(), go.clone(), count, size, mode))?;
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let start = Instant::now();
    go.set();
    if mode == Mode::Blocking {
        // Both sides on threads with the blocking twins.
        let q = q.clone();
        tokio::task::spawn_blocking(move || {
            for _ in 0..count {
                q.get_bytes_blocking()?;
            }
            Ok::<_, mp::Error>(())
        })
        .await
        .expect("receiving thread")?;
    }
    let mut got = if mode == Mode::Blocking { count } else { 0 };
    while got < count {
        if mode == Mode::Batched {
            got += q.get_many(1024).await?.len();
        } else if mode == Mode::BatchedBytes {
            got += q.get_many_bytes(1024).await?.len();
        } else if mode == Mode::Typed {
            q.get().await?;
            got += 1;
        } else {
            q.get_bytes().await?;
            got += 1;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    child.join().await?;
    Ok(secs)
}

async fn ping_pong_queue(count: usize, blocking: bool) -> mp::Result<RoundTrips> {
    let (requests, replies) = (mp::Queue::<Vec<u8>>::new(0)?, mp::Queue::<Vec<u8>>::new(0)?);
    let mut child = mp::Process::spawn(
        queue_echo,
        (requests.clone(), replies.clone(), count, blocking),
    )?;
    let pid = child.pid();
    let trips = if blocking {
        tokio::task::spawn_blocking(move || {
            let mut samples = Vec::with_capacity(count);
            let mut meter = None;
            for _ in 0..count {
                let t = Instant::now();
                requests.put_bytes_blocking(b"12345678")?;
                replies.get_bytes_blocking()?;
                samples.push(t.elapsed().as_secs_f64() * 1e6);
                meter.get_or_insert_with(|| CpuMeter::start(pid));
            }
            let cpu = meter.map_or(0.0, |m| m.per_round_us(count - 1));
            Ok::<_, mp::Error>((samples, cpu))
        })
        .await
        .expect("timing thread")?
    } else {
        let mut samples = Vec::with_capacity(count);
        let mut meter = None;
        for _ in 0..count {
            let t = Instant::now();
            requests.put_bytes(b"12345678").await?;
            replies.get_bytes().await?;
            samples.push(t.elapsed().as_secs_f64() * 1e6);
            meter.get_or_insert_with(|| CpuMeter::start(pid));
        }
        let cpu = meter.map_or(0.0, |m| m.per_round_us(count - 1));
        (samples, cpu)
    };
    child.join().await?;
    Ok(trips)
}

// ----- one-way (W1, W3) and ping-pong (W2) drivers -----

/// Seconds for `count` messages to arrive, timed from the "go".
async fn one_way_pipe(count: usize, size: usize, mode: Mode) -> mp::Result<f64> {
    let (mut ours, theirs) = Pipe::<Vec<u8>>::duplex()?;
    let mut child = mp::Process::spawn(pipe_sender, (theirs, count, size, mode))?;
    let start = Instant::now();
    ours.send_bytes(b"go").await?;
    if mode == Mode::Blocking {
        // Both sides on threads with the blocking twins.
        tokio::task::spawn_blocking(move || {
            for _ in 0..count {
                ours.recv_bytes_blocking()?;
            }
            Ok::<_, mp::Error>(())
        })
        .await
        .expect("receiving thread")?;
    } else {
        for _ in 0..count {
            ours.recv_bytes().await?;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    child.join().await?;
    Ok(secs)
}

async fn one_way_codec(count: usize, size: usize, batched: bool) -> mp::Result<f64> {
    let (ours, theirs) = raw_pair();
    let mut child = mp::Process::spawn(codec_sender, (theirs, count, size, batched))?;
    let mut f = framed(ours);
    let start = Instant::now();
    f.send(bytes::Bytes::from_static(b"go")).await?;
    for _ in 0..count {
        f.next().await.unwrap()?;
    }
    let secs = start.elapsed().as_secs_f64();
    child.join().await?;
    Ok(secs)
}

async fn ping_pong_pipe(count: usize, blocking: bool) -> mp::Result<RoundTrips> {
    let (mut ours, theirs) = Pipe::<Vec<u8>>::duplex()?;
    let mut child = mp::Process::spawn(pipe_echo, (theirs, count, blocking))?;
    let pid = child.pid();
    let trips = if blocking {
        tokio::task::spawn_blocking(move || {
            let mut samples = Vec::with_capacity(count);
            let mut meter = None;
            for _ in 0..count {
                let t = Instant::now();
                ours.send_bytes_blocking(b"12345678").unwrap();
                ours.recv_bytes_blocking().unwrap();
                samples.push(t.elapsed().as_secs_f64() * 1e6);
                meter.get_or_insert_with(|| CpuMeter::start(pid));
            }
            let cpu = meter.map_or(0.0, |m| m.per_round_us(count - 1));
            (samples, cpu)
        })
        .await
        .unwrap()
    } else {
        // On a worker thread, as a tokio service's tasks run (see `on_a_worker`).
        on_a_worker(async move {
            let mut samples = Vec::with_capacity(count);
            let mut meter = None;
            for _ in 0..count {
                let t = Instant::now();
                ours.send_bytes(b"12345678").await?;
                ours.recv_bytes().await?;
                samples.push(t.elapsed().as_secs_f64() * 1e6);
                meter.get_or_insert_with(|| CpuMeter::start(pid));
            }
            let cpu = meter.map_or(0.0, |m| m.per_round_us(count - 1));
            Ok((samples, cpu))
        })
        .await?
    };
    child.join().await?;
    Ok(trips)
}

async fn ping_pong_codec(count: usize) -> mp::Result<RoundTrips> {
    let (ours, theirs) = raw_pair();
    let mut child = mp::Process::spawn(codec_echo, (theirs, count))?;
    let pid = child.pid();
    let mut f = framed(ours);
    let trips = on_a_worker(async move {
        let mut samples = Vec::with_capacity(count);
        let mut meter = None;
        for _ in 0..count {
            let t = Instant::now();
            f.send(bytes::Bytes::from_static(b"12345678")).await?;
            f.next().await.unwrap()?;
            samples.push(t.elapsed().as_secs_f64() * 1e6);
            meter.get_or_insert_with(|| CpuMeter::start(pid));
        }
        let cpu = meter.map_or(0.0, |m| m.per_round_us(count - 1));
        Ok((samples, cpu))
    })
    .await?;
    child.join().await?;
    Ok(trips)
}

/// Runs a timing loop in a spawned task, on a runtime worker, as a tokio service's request
/// handlers run. `main`'s own future runs on the main thread in `block_on`, which never polls
/// the reactor itself: every wake-up there is the reactor's worker thread waking the main
/// thread, a second hop (measured: W2 `Pipe` async p50 17 µs in `main`, 8.3 µs on a worker,
/// blocking twins 6.7–9.3 µs). The async Event waiter of W5 runs on a worker for the same
/// reason.
async fn on_a_worker(
    timing: impl std::future::Future<Output = mp::Result<RoundTrips>> + Send + 'static,
) -> mp::Result<RoundTrips> {
    tokio::spawn(timing).await.expect("timing task")
}

fn python(workload: &str, count: usize, size: usize) -> Option<Vec<f64>> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/peers.py");
    let out = std::process::Command::new("python3")
        .args([script, workload, &count.to_string(), &size.to_string()])
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "python peer failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    String::from_utf8(out.stdout)
        .ok()?
        .split_whitespace()
        .map(|v| v.parse().ok())
        .collect()
}

// ----- reporting -----

struct Row {
    workload: &'static str,
    system: &'static str,
    ours: bool,
    unit: &'static str,
    higher_is_better: bool,
    /// One value per run (for latencies: the run's p50), plus the p99s.
    runs: Vec<f64>,
    p99s: Vec<f64>,
    /// µs of CPU per round trip or sample, both processes (W2, W5), one per run.
    cpus: Vec<f64>,
    note: Option<String>,
}

impl Row {
    fn new(
        workload: &'static str,
        system: &'static str,
        ours: bool,
        unit: &'static str,
        higher: bool,
    ) -> Row {
        Row {
            workload,
            system,
            ours,
            unit,
            higher_is_better: higher,
            runs: vec![],
            p99s: vec![],
            cpus: vec![],
            note: None,
        }
    }

    fn median(&self) -> Option<f64> {
        let mut s = self.runs.clone();
        s.sort_by(f64::total_cmp);
        s.get(s.len() / 2).copied()
    }
}

fn percentile(samples: &mut [f64], p: f64) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)]
}

fn print(rows: &[Row]) {
    println!(
        "\n{:<4} {:<48} {:>12} {:<7} {:>21} {:>10} {:>9}",
        "", "system", "median", "unit", "min – max", "p99", "CPU µs/rt"
    );
    let mut last = "";
    for row in rows {
        if row.workload != last {
            println!("{}", "-".repeat(118));
            last = row.workload;
        }
        match (&row.note, row.median()) {
            (Some(note), _) => println!("{:<4} {:<48} {note}", row.workload, row.system),
            (None, None) => println!("{:<4} {:<48} no result", row.workload, row.system),
            (None, Some(median)) => {
                let min = row.runs.iter().copied().fold(f64::INFINITY, f64::min);
                let max = row.runs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let median_of = |values: &[f64], digits: usize| {
                    if values.is_empty() {
                        String::new()
                    } else {
                        let mut v = values.to_vec();
                        format!("{:.digits$}", percentile(&mut v, 0.5))
                    }
                };
                let (p99, cpu) = (median_of(&row.p99s, 1), median_of(&row.cpus, 2));
                println!(
                    "{:<4} {:<48} {:>12.2} {:<7} {:>10.2} – {:<8.2} {:>10} {:>9}",
                    row.workload, row.system, median, row.unit, min, max, p99, cpu
                );
            }
        }
    }
    println!("\nratios (this crate ÷ peer; > 1 means this crate is better):");
    for ours in rows.iter().filter(|r| r.ours) {
        let Some(o) = ours.median() else { continue };
        let ratios: Vec<String> = rows
            .iter()
            .filter(|p| !p.ours && p.workload == ours.workload)
            .filter_map(|p| {
                let v = p.median()?;
                let r = if ours.higher_is_better { o / v } else { v / o };
                Some(format!("{r:.2}x vs {}", p.system))
            })
            .collect();
        if !ratios.is_empty() {
            println!("  {} {}: {}", ours.workload, ours.system, ratios.join("; "));
        }
    }
}

#[tokio::main]
async fn main() -> mp::Result<()> {
    mp::init().await?;
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    // `--only W1,W3` runs just those workloads (for profiling one at a time).
    let only: Option<String> = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1).cloned());
    let wanted = |w: &str| only.as_ref().is_none_or(|o| o.split(',').any(|x| x == w));
    let scale = if quick { 20 } else { 1 };
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let python_version = std::process::Command::new("python3")
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    println!(
        "machine: {} cpus, Linux {}; {}; mode: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        kernel.trim(),
        python_version
            .clone()
            .unwrap_or_else(|| "no python3".into()),
        if quick {
            "quick (scaled down 20x)"
        } else {
            "full"
        }
    );
    println!(
        "waits: this crate's pipes, queues, events, semaphores, barriers and conditions (async \
         and blocking) check for up to 20 µs before parking, a lock a few µs; the codec parks \
         in epoll at once; the busy-polling limit only spins; the futex limits always park"
    );

    let w1 = 1_000_000 / scale;
    let w2 = 50_000 / scale;
    let w3_size = 1 << 20;
    let w3 = (2usize << 30) / w3_size / scale;
    let mut rows = Vec::new();

    // W1
    if wanted("W1") {
        for (system, mode) in [
            ("Pipe send_bytes (async, awaits each write)", Mode::Send),
            ("Pipe feed_bytes + flush (async, batched)", Mode::Batched),
            ("Pipe send_bytes_blocking (threads)", Mode::Blocking),
        ] {
            let mut row = Row::new("W1", system, true, "msg/s", true);
            for _ in 0..3 {
                row.runs.push(w1 as f64 / one_way_pipe(w1, 64, mode).await?);
            }
            rows.push(row);
        }
        for (system, batched) in [
            ("tokio UnixStream + LengthDelimitedCodec, send", false),
            ("tokio UnixStream + LengthDelimitedCodec, feed+flush", true),
        ] {
            let mut row = Row::new("W1", system, false, "msg/s", true);
            for _ in 0..3 {
                row.runs
                    .push(w1 as f64 / one_way_codec(w1, 64, batched).await?);
            }
            rows.push(row);
        }
        for (system, mode) in [
            ("Queue put_bytes / get_bytes (async)", Mode::Send),
            ("Queue put / get (async, typed Vec<u8>)", Mode::Typed),
            (
                "Queue put_many_bytes / get_many_bytes (async, batches)",
                Mode::BatchedBytes,
            ),
            (
                "Queue put_many / get_many (async, typed, batches)",
                Mode::Batched,
            ),
            ("Queue blocking twins (threads)", Mode::Blocking),
        ] {
            let mut row = Row::new("W1", system, true, "msg/s", true);
            for _ in 0..3 {
                row.runs
                    .push(w1 as f64 / one_way_queue(w1, 64, mode).await?);
            }
            rows.push(row);
        }
        rows.push(python_row(
            "W1",
            "Python multiprocessing.Queue",
            "w1q",
            w1 / 4,
            64,
            "msg/s",
            true,
            python_version.is_some(),
        ));
        rows.push(python_row(
            "W1",
            "Python multiprocessing.SimpleQueue",
            "w1s",
            w1 / 4,
            64,
            "msg/s",
            true,
            python_version.is_some(),
        ));
        rows.push(python_row(
            "W1",
            "Python multiprocessing.Pipe send_bytes",
            "w1",
            w1,
            64,
            "msg/s",
            true,
            python_version.is_some(),
        ));
        let mut row = Row::new(
            "W1",
            "busy-polling shm ring, no lock, spinning (limit)",
            false,
            "msg/s",
            true,
        );
        for _ in 0..3 {
            row.runs.push(w1 as f64 / limits::busy_ring(w1, 64).await?);
        }
        rows.push(row);
    }
    // W2
    if wanted("W2") {
        for (system, blocking) in [("Pipe async", false), ("Pipe blocking (threads)", true)] {
            let mut row = Row::new("W2", system, true, "µs p50", false);
            for _ in 0..3 {
                let (mut s, cpu) = ping_pong_pipe(w2, blocking).await?;
                row.runs.push(percentile(&mut s, 0.5));
                row.p99s.push(percentile(&mut s, 0.99));
                row.cpus.push(cpu);
            }
            rows.push(row);
        }
        let mut row = Row::new(
            "W2",
            "tokio UnixStream + LengthDelimitedCodec",
            false,
            "µs p50",
            false,
        );
        for _ in 0..3 {
            let (mut s, cpu) = ping_pong_codec(w2).await?;
            row.runs.push(percentile(&mut s, 0.5));
            row.p99s.push(percentile(&mut s, 0.99));
            row.cpus.push(cpu);
        }
        rows.push(row);
        for (system, blocking) in [("Queue (async)", false), ("Queue blocking (threads)", true)] {
            let mut row = Row::new("W2", system, true, "µs p50", false);
            for _ in 0..3 {
                let (mut s, cpu) = ping_pong_queue(w2, blocking).await?;
                row.runs.push(percentile(&mut s, 0.5));
                row.p99s.push(percentile(&mut s, 0.99));
                row.cpus.push(cpu);
            }
            rows.push(row);
        }
        let mut row = Row::new(
            "W2",
            "raw futex ping-pong, both sides park (limit)",
            false,
            "µs p50",
            false,
        );
        for _ in 0..3 {
            let (mut s, cpu) = limits::futex_ping_pong(w2).await?;
            row.runs.push(percentile(&mut s, 0.5));
            row.p99s.push(percentile(&mut s, 0.99));
            row.cpus.push(cpu);
        }
        rows.push(row);
        rows.push(python_row(
            "W2",
            "Python multiprocessing.SimpleQueue",
            "w2s",
            w2 / 4,
            8,
            "µs p50",
            false,
            python_version.is_some(),
        ));
        rows.push(python_row(
            "W2",
            "Python multiprocessing.Queue",
            "w2q",
            w2 / 4,
            8,
            "µs p50",
            false,
            python_version.is_some(),
        ));
        rows.push(python_row(
            "W2",
            "Python multiprocessing.Pipe send_bytes",
            "w2",
            w2,
            8,
            "µs p50",
            false,
            python_version.is_some(),
        ));
    }
    // W3
    if wanted("W3") {
        let gb = |secs: f64| (w3 * w3_size) as f64 / secs / 1e9;
        for (system, mode) in [
            ("Pipe send_bytes 1 MiB (async)", Mode::Send),
            ("Pipe blocking twins 1 MiB (threads)", Mode::Blocking),
        ] {
            let mut row = Row::new("W3", system, true, "GB/s", true);
            for _ in 0..3 {
                row.runs.push(gb(one_way_pipe(w3, w3_size, mode).await?));
            }
            rows.push(row);
        }
        let mut row = Row::new(
            "W3",
            "tokio UnixStream + LengthDelimitedCodec",
            false,
            "GB/s",
            true,
        );
        for _ in 0..3 {
            row.runs.push(gb(one_way_codec(w3, w3_size, false).await?));
        }
        rows.push(row);
        for (system, mode) in [
            ("Queue put_bytes 1 MiB (async)", Mode::Send),
            ("Queue blocking twins 1 MiB (threads)", Mode::Blocking),
        ] {
            let mut row = Row::new("W3", system, true, "GB/s", true);
            for _ in 0..3 {
                row.runs.push(gb(one_way_queue(w3, w3_size, mode).await?));
            }
            rows.push(row);
        }
        rows.push(python_row(
            "W3",
            "Python multiprocessing.Queue",
            "w3q",
            w3 / 4,
            w3_size,
            "GB/s",
            true,
            python_version.is_some(),
        ));
        rows.push(python_row(
            "W3",
            "Python multiprocessing.SimpleQueue",
            "w3s",
            w3 / 4,
            w3_size,
            "GB/s",
            true,
            python_version.is_some(),
        ));
        rows.push(python_row(
            "W3",
            "Python multiprocessing.Pipe send_bytes",
            "w3",
            w3,
            w3_size,
            "GB/s",
            true,
            python_version.is_some(),
        ));
        let mut row = Row::new(
            "W3",
            "busy-polling shm ring, no lock, spinning (limit)",
            false,
            "GB/s",
            true,
        );
        for _ in 0..3 {
            row.runs.push(gb(limits::busy_ring(w3, w3_size).await?));
        }
        rows.push(row);
    }
    // W4
    if wanted("W4") {
        let w4 = 1_000_000 / scale;
        for (system, blocking) in [
            ("Lock + Value (async)", false),
            ("Lock + Value (blocking threads)", true),
        ] {
            let mut row = Row::new("W4", system, true, "ops/s", true);
            for _ in 0..3 {
                row.runs.push(contended_lock(w4, blocking).await?);
            }
            rows.push(row);
        }
        rows.push(python_row(
            "W4",
            "Python multiprocessing.Lock + RawValue",
            "w4",
            w4,
            0,
            "ops/s",
            true,
            python_version.is_some(),
        ));
        let mut row = Row::new(
            "W4",
            "bare CAS spinlock + shared counter (limit)",
            false,
            "ops/s",
            true,
        );
        for _ in 0..3 {
            row.runs.push(limits::spinlock(w4).await?);
        }
        rows.push(row);
    }
    // W5
    if wanted("W5") {
        let w5 = 10_000 / scale.min(4);
        for (system, blocking, parked) in [
            ("Event async (checks ≤ 20 µs, then eventfd)", false, false),
            ("Event blocking (checks ≤ 20 µs, then futex)", true, false),
            ("Event async, set 100 µs after the wait began", false, true),
            (
                "Event blocking, set 100 µs after the wait began",
                true,
                true,
            ),
        ] {
            let mut row = Row::new("W5", system, true, "µs p50", false);
            // The parked rows sleep 100 µs per sample: a quarter of the samples.
            let rounds = if parked { w5 / 4 } else { w5 };
            for _ in 0..3 {
                let (mut s, cpu) = event_wake(rounds, blocking, parked).await?;
                row.runs.push(percentile(&mut s, 0.5));
                row.p99s.push(percentile(&mut s, 0.99));
                row.cpus.push(cpu);
            }
            rows.push(row);
        }
        rows.push(python_row(
            "W5",
            "Python multiprocessing.Event",
            "w5",
            w5,
            0,
            "µs p50",
            false,
            python_version.is_some(),
        ));
        for (system, parked) in [
            ("raw futex wake (limit)", false),
            ("raw futex wake, 100 µs after the wait began (limit)", true),
        ] {
            let mut row = Row::new("W5", system, false, "µs p50", false);
            let rounds = if parked { w5 / 4 } else { w5 };
            for _ in 0..3 {
                let (mut s, cpu) = limits::futex_wake(rounds, parked).await?;
                row.runs.push(percentile(&mut s, 0.5));
                row.p99s.push(percentile(&mut s, 0.99));
                row.cpus.push(cpu);
            }
            rows.push(row);
        }
        for (system, through_tokio) in [
            (
                "raw eventfd wake, waiter parked in epoll_wait (limit of a reactor wait)",
                false,
            ),
            (
                "eventfd wake, a task awaiting tokio AsyncFd readiness (limit of a tokio wait)",
                true,
            ),
        ] {
            let mut row = Row::new("W5", system, false, "µs p50", false);
            for _ in 0..3 {
                match limits::eventfd_wake(w5, through_tokio).await? {
                    Some((mut s, cpu)) => {
                        row.runs.push(percentile(&mut s, 0.5));
                        row.p99s.push(percentile(&mut s, 0.99));
                        row.cpus.push(cpu);
                    }
                    None => row.note = Some("skipped: pidfd_getfd not permitted here".into()),
                }
            }
            rows.push(row);
        }
    }
    // W5s, W5b, W5c: hand-offs through the other synchronization primitives.
    if wanted("W5") || wanted("W5h") {
        use hand_off::Through;
        let w5h = 10_000 / scale.min(4);
        for (workload, through, systems, python) in [
            (
                "W5s",
                Through::Semaphore,
                &[
                    ("Semaphore ping-pong (async)", false),
                    ("Semaphore ping-pong, answered on a thread", true),
                ][..],
                ("Python multiprocessing.Semaphore ping-pong", "w5sem"),
            ),
            (
                "W5b",
                Through::Barrier,
                &[
                    ("Barrier(2) round (async)", false),
                    ("Barrier(2) round, the other party on a thread", true),
                ][..],
                ("Python multiprocessing.Barrier(2) round", "w5barrier"),
            ),
            (
                "W5c",
                Through::Condition,
                &[("Condition turn: notify, wait for the answer (async)", false)][..],
                ("Python multiprocessing.Condition turn", "w5cond"),
            ),
        ] {
            for &(system, blocking) in systems {
                let mut row = Row::new(workload, system, true, "µs p50", false);
                for _ in 0..3 {
                    let (mut s, cpu) = hand_off::round_trips(through, w5h, blocking).await?;
                    row.runs.push(percentile(&mut s, 0.5));
                    row.p99s.push(percentile(&mut s, 0.99));
                    row.cpus.push(cpu);
                }
                rows.push(row);
            }
            rows.push(python_row(
                workload,
                python.0,
                python.1,
                w5h / 4,
                0,
                "µs p50",
                false,
                python_version.is_some(),
            ));
        }
    }
    // W6 and W7: a pool with one worker per CPU.
    if wanted("W6") || wanted("W7") {
        let processes = mp::cpu_count();
        let pool = mp::Pool::new(processes)?;
        if wanted("W6") {
            let w6 = 100_000 / scale as u64;
            let mut row = Row::new("W6", "Pool map (auto chunks)", true, "tasks/s", true);
            for _ in 0..3 {
                row.runs.push(pool::map_rate(&pool, w6).await?);
            }
            rows.push(row);
            let mut row = Row::new(
                "W6",
                "Pool map_unordered, chunksize 1",
                true,
                "tasks/s",
                true,
            );
            for _ in 0..3 {
                row.runs.push(pool::unordered_rate(&pool, w6).await?);
            }
            rows.push(row);
            let have = python_version.is_some();
            let w6 = w6 as usize;
            rows.push(python_row(
                "W6",
                "Python Pool.map (default chunksize)",
                "w6map",
                w6,
                processes,
                "tasks/s",
                true,
                have,
            ));
            rows.push(python_row(
                "W6",
                "Python Pool.imap(chunksize=1)",
                "w6imap1",
                w6 / 4,
                processes,
                "tasks/s",
                true,
                have,
            ));
            rows.push(python_row(
                "W6",
                "Python ProcessPoolExecutor.map",
                "w6ppe",
                w6 / 20,
                processes,
                "tasks/s",
                true,
                have,
            ));
        }
        if wanted("W7") {
            let w7 = 5_000 / scale as u64;
            let mut row = Row::new("W7", "Pool apply round trip", true, "µs p50", false);
            for _ in 0..3 {
                let mut s = pool::apply_round_trips(&pool, w7).await?;
                row.runs.push(percentile(&mut s, 0.5));
                row.p99s.push(percentile(&mut s, 0.99));
            }
            rows.push(row);
            let have = python_version.is_some();
            rows.push(python_row(
                "W7",
                "Python Pool.apply round trip",
                "w7apply",
                w7 as usize / 4,
                processes,
                "µs p50",
                false,
                have,
            ));
            let (tasks, ms) = (4 * processes as u64, 100 / scale as u64);
            // The ideal is `processes` (printed in the machine line: one worker per CPU).
            let mut row = Row::new(
                "W7c",
                "Pool CPU-bound speed-up over serial",
                true,
                "x",
                true,
            );
            for _ in 0..3 {
                row.runs.push(pool::cpu_speedup(&pool, tasks, ms).await?);
            }
            rows.push(row);
            rows.push(python_row(
                "W7c",
                "Python Pool CPU-bound speed-up",
                "w7cpu",
                tasks as usize,
                ms as usize * 1000 + processes,
                "x",
                true,
                have,
            ));
        }
        pool.close();
        pool.join().await;
    }
    if wanted("W8") {
        let w8 = 5_000 / scale as u64;
        let have = python_version.is_some();
        for (tcp, system, python_system, python_name) in [
            (
                false,
                "Manager proxy call (Unix socket)",
                "Python BaseManager proxy call",
                "w8call",
            ),
            (
                true,
                "Manager proxy call (TCP loopback)",
                "Python BaseManager call over TCP",
                "w8tcp",
            ),
        ] {
            let manager = manager::start(tcp).await?;
            let mut row = Row::new("W8", system, true, "µs p50", false);
            for _ in 0..3 {
                let mut s = manager::call_round_trips(&manager, w8).await?;
                row.runs.push(percentile(&mut s, 0.5));
                row.p99s.push(percentile(&mut s, 0.99));
            }
            rows.push(row);
            rows.push(python_row(
                "W8",
                python_system,
                python_name,
                w8 as usize / 2,
                0,
                "µs p50",
                false,
                have,
            ));
            manager.shutdown().await?;
        }
        let manager = manager::start(false).await?;
        for (tasks, system) in [
            (1, "Manager dict insert, 1 task"),
            (8, "Manager dict insert, 8 tasks"),
        ] {
            let mut row = Row::new("W8d", system, true, "calls/s", true);
            for _ in 0..3 {
                row.runs
                    .push(manager::dict_inserts(&manager, 4 * w8, tasks).await?);
            }
            rows.push(row);
        }
        manager.shutdown().await?;
        rows.push(python_row(
            "W8d",
            "Python SyncManager dict set",
            "w8dict",
            w8 as usize,
            0,
            "calls/s",
            true,
            have,
        ));
    }
    print(&rows);
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn python_row(
    workload: &'static str,
    system: &'static str,
    name: &str,
    count: usize,
    size: usize,
    unit: &'static str,
    higher: bool,
    have_python: bool,
) -> Row {
    let mut row = Row::new(workload, system, false, unit, higher);
    if !have_python {
        row.note = Some("skipped: python3 not found".into());
        return row;
    }
    for _ in 0..3 {
        match python(name, count, size) {
            Some(v) if !v.is_empty() => {
                row.runs.push(v[0]);
                if let Some(p99) = v.get(1) {
                    row.p99s.push(*p99);
                }
                if let Some(cpu) = v.get(2) {
                    row.cpus.push(*cpu);
                }
            }
            _ => {
                row.note = Some("python peer failed (see stderr)".into());
                break;
            }
        }
    }
    row
}
