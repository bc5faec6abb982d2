//! The limits: what two processes on this machine do with no library in the way, so every row
//! of this crate can be read against the floor (or ceiling) it could at best reach.
//!
//! - a busy-polling ring in shared memory: one producer, one consumer, fixed-size records, no
//!   lock, no notification, both sides spinning (W1, W3);
//! - a raw futex ping-pong where both sides park in `FUTEX_WAIT` on every round (W2);
//! - a bare compare-and-swap spinlock around a shared counter (W4);
//! - a raw futex wake: stamp, store, `FUTEX_WAKE`, the parked waiter notes the time (W5);
//! - a raw eventfd wake: stamp, write an eventfd that a thread parked in `epoll_wait` watches
//!   (what any reactor-driven async wait rests on: tokio parks its idle worker there), the
//!   waiter notes the time (W5).
//!
//! Built on the crate's `SharedMemory` atomics and rustix's `futex` (a reference peer, written
//! the way anyone would by hand).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use rustix::thread::futex;
use tokio_multiprocessing::{self as mp, SharedMemory};

use super::now_ns;
use crate::cpu::CpuMeter;

// Words of the ring and of the futex pairs, each on its own cache line.
const HEAD: usize = 0;
const TAIL: usize = 64;
const DATA: usize = 128;
const PING: usize = 0;
const PONG: usize = 64;
const STAMP: usize = 128;
const LOCK: usize = 0;
const COUNTER: usize = 64;

/// Bytes per ring record: a length word, then the payload, 8-aligned.
fn record(size: usize) -> u64 {
    (8 + size).next_multiple_of(8) as u64
}

/// A ring of whole records (never split by the wrap), about 1 MiB or 8 records.
fn capacity(size: usize) -> u64 {
    let rec = record(size);
    rec * ((1 << 20) / rec).max(8)
}

async fn ring_producer((shm, go, count, size): (SharedMemory, mp::Event, usize, usize)) {
    go.wait().await;
    let (rec, cap) = (record(size), capacity(size));
    let (head, tail) = (shm.atomic_u64(HEAD).unwrap(), shm.atomic_u64(TAIL).unwrap());
    let payload = vec![7u8; size];
    let (mut t, mut seen_head) = (0u64, 0u64);
    for _ in 0..count {
        while t + rec - seen_head > cap {
            std::hint::spin_loop();
            seen_head = head.load(Ordering::Acquire);
        }
        let at = DATA + (t % cap) as usize;
        shm.write_at(at, &(size as u32).to_le_bytes()).unwrap();
        shm.write_at(at + 8, &payload).unwrap();
        t += rec;
        tail.store(t, Ordering::Release);
    }
}

/// W1/W3 limit: seconds for `count` records of `size` bytes through a busy-polling ring.
pub async fn busy_ring(count: usize, size: usize) -> mp::Result<f64> {
    let (rec, cap) = (record(size), capacity(size));
    let shm = SharedMemory::create(DATA + cap as usize)?;
    let go = mp::Event::new()?;
    let mut child = mp::Process::spawn(ring_producer, (shm.clone(), go.clone(), count, size))?;
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let (head, tail) = (shm.atomic_u64(HEAD)?, shm.atomic_u64(TAIL)?);
    let mut buf = vec![0u8; size];
    let (mut h, mut seen_tail) = (0u64, 0u64);
    let start = Instant::now();
    go.set();
    for _ in 0..count {
        while seen_tail == h {
            std::hint::spin_loop();
            seen_tail = tail.load(Ordering::Acquire);
        }
        let at = DATA + (h % cap) as usize;
        let mut len = [0u8; 4];
        shm.read_at(at, &mut len)?;
        assert_eq!(u32::from_le_bytes(len) as usize, size, "torn ring record");
        shm.read_at(at + 8, &mut buf)?;
        h += rec;
        head.store(h, Ordering::Release);
    }
    let secs = start.elapsed().as_secs_f64();
    child.join().await?;
    Ok(secs)
}

/// Parks until `word` is no longer `seen`; returns the new value.
fn park_while(word: &AtomicU32, seen: u32) -> u32 {
    loop {
        let now = word.load(Ordering::Acquire);
        if now != seen {
            return now;
        }
        let _ = futex::wait(word, futex::Flags::empty(), seen, None);
    }
}

fn bump_and_wake(word: &AtomicU32) {
    word.fetch_add(1, Ordering::Release);
    let _ = futex::wake(word, futex::Flags::empty(), 1);
}

async fn futex_echo((shm, rounds): (SharedMemory, usize)) {
    tokio::task::spawn_blocking(move || {
        let (ping, pong) = (shm.atomic_u32(PING).unwrap(), shm.atomic_u32(PONG).unwrap());
        let mut seen = 0;
        for _ in 0..rounds {
            seen = park_while(ping, seen);
            bump_and_wake(pong);
        }
    })
    .await
    .unwrap();
}

/// W2 limit: µs per round trip of a futex ping-pong where both sides park.
/// Also µs of CPU per round trip (both processes), as for the other W2 rows.
pub async fn futex_ping_pong(rounds: usize) -> mp::Result<(Vec<f64>, f64)> {
    let shm = SharedMemory::create(128)?;
    let mut child = mp::Process::spawn(futex_echo, (shm.clone(), rounds))?;
    let pid = child.pid();
    let trips = tokio::task::spawn_blocking(move || {
        let (ping, pong) = (shm.atomic_u32(PING)?, shm.atomic_u32(PONG)?);
        let mut samples = Vec::with_capacity(rounds);
        let mut seen = 0;
        let mut meter = None;
        for _ in 0..rounds {
            let t = Instant::now();
            bump_and_wake(ping);
            seen = park_while(pong, seen);
            samples.push(t.elapsed().as_secs_f64() * 1e6);
            meter.get_or_insert_with(|| CpuMeter::start(pid));
        }
        let cpu = meter.map_or(0.0, |m| m.per_round_us(rounds - 1));
        Ok::<_, mp::Error>((samples, cpu))
    })
    .await
    .expect("timing thread")?;
    child.join().await?;
    Ok(trips)
}

async fn futex_waiter((shm, rounds): (SharedMemory, usize)) -> Vec<f64> {
    tokio::task::spawn_blocking(move || {
        let (ping, pong) = (shm.atomic_u32(PING).unwrap(), shm.atomic_u32(PONG).unwrap());
        let stamp = shm.atomic_u64(STAMP).unwrap();
        let mut samples = Vec::with_capacity(rounds);
        let mut seen = 0;
        for _ in 0..rounds {
            seen = park_while(ping, seen);
            let woke = now_ns();
            samples.push(micros_since(stamp, woke));
            bump_and_wake(pong);
        }
        samples
    })
    .await
    .unwrap()
}

/// µs from the time stamped in `stamp` (by the waking side) to `woke`.
fn micros_since(stamp: &AtomicU64, woke: u64) -> f64 {
    woke.saturating_sub(stamp.load(Ordering::Acquire)) as f64 / 1000.0
}

/// Where the eventfd waiter publishes its eventfd's number (for `pidfd_getfd`).
const EVENTFD_NUMBER: usize = 128 + 64;

/// The waiter of the eventfd rows: a thread parked in `epoll_wait`, or (`through_tokio`) a
/// task on a runtime worker awaiting the eventfd's readiness through tokio's reactor.
async fn epoll_waiter((shm, rounds, through_tokio): (SharedMemory, usize, bool)) -> Vec<f64> {
    use rustix::event::{EventfdFlags, epoll, eventfd};
    use std::os::fd::AsRawFd;
    if through_tokio {
        return tokio::spawn(async move {
            let pong = shm.atomic_u32(PONG).unwrap();
            let stamp = shm.atomic_u64(STAMP).unwrap();
            let doorbell = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK).unwrap();
            let number = doorbell.as_raw_fd() as u32 + 1;
            // The crate registers through `sys::reactor` (tokio deprecated `with_interest` as
            // unsound for borrowed fds); this fd is owned and moved in, which is the sound case.
            #[allow(deprecated)]
            let doorbell =
                tokio::io::unix::AsyncFd::with_interest(doorbell, tokio::io::Interest::READABLE)
                    .unwrap();
            shm.atomic_u32(EVENTFD_NUMBER)
                .unwrap()
                .store(number, Ordering::Release);
            let mut samples = Vec::with_capacity(rounds);
            while samples.len() < rounds {
                let mut ready = doorbell.readable().await.unwrap();
                let woke = now_ns();
                ready.clear_ready();
                samples.push(micros_since(stamp, woke));
                bump_and_wake(pong);
            }
            samples
        })
        .await
        .unwrap();
    }
    tokio::task::spawn_blocking(move || {
        let pong = shm.atomic_u32(PONG).unwrap();
        let stamp = shm.atomic_u64(STAMP).unwrap();
        let doorbell = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK).unwrap();
        let poller = epoll::create(epoll::CreateFlags::CLOEXEC).unwrap();
        epoll::add(
            &poller,
            &doorbell,
            epoll::EventData::new_u64(1),
            epoll::EventFlags::IN | epoll::EventFlags::ET,
        )
        .unwrap();
        shm.atomic_u32(EVENTFD_NUMBER)
            .unwrap()
            .store(doorbell.as_raw_fd() as u32 + 1, Ordering::Release);
        let mut samples = Vec::with_capacity(rounds);
        let mut events = Vec::with_capacity(4);
        while samples.len() < rounds {
            events.clear();
            // Edge-triggered: every write is a new edge, so the counter is never read.
            if epoll::wait(&poller, rustix::buffer::spare_capacity(&mut events), None).is_err()
                || events.is_empty()
            {
                continue;
            }
            let woke = now_ns();
            samples.push(micros_since(stamp, woke));
            bump_and_wake(pong);
        }
        samples
    })
    .await
    .unwrap()
}

/// W5 limit of a reactor wait: µs from a stamped eventfd write to a thread parked in
/// `epoll_wait` on it running (or, `through_tokio`, to a task awaiting its readiness through
/// tokio running). `None` when this machine does not let us take the waiter's
/// eventfd (`pidfd_getfd` needs ptrace rights over the child).
pub async fn eventfd_wake(
    rounds: usize,
    through_tokio: bool,
) -> mp::Result<Option<(Vec<f64>, f64)>> {
    let shm = SharedMemory::create(256)?;
    let mut child = mp::Process::spawn(epoll_waiter, (shm.clone(), rounds, through_tokio))?;
    let number = shm.atomic_u32(EVENTFD_NUMBER)?;
    let deadline = Instant::now() + std::time::Duration::from_secs(30);
    while number.load(Ordering::Acquire) == 0 && Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let pid = rustix::process::Pid::from_raw(child.pid() as i32).expect("a child's pid");
    let doorbell =
        rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).and_then(|pidfd| {
            rustix::process::pidfd_getfd(
                &pidfd,
                number.load(Ordering::Acquire) as i32 - 1,
                rustix::process::PidfdGetfdFlags::empty(),
            )
        });
    let Ok(doorbell) = doorbell else {
        let _ = child.kill();
        let _ = child.join().await;
        return Ok(None);
    };
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let pid = child.pid();
    let cpu = tokio::task::spawn_blocking(move || {
        let pong = shm.atomic_u32(PONG)?;
        let stamp = shm.atomic_u64(STAMP)?;
        let (mut seen, mut meter) = (0, None);
        for _ in 0..rounds {
            stamp.store(now_ns(), Ordering::Release);
            let _ = rustix::io::write(&doorbell, &1u64.to_ne_bytes());
            seen = park_while(pong, seen);
            meter.get_or_insert_with(|| CpuMeter::start(pid));
        }
        Ok::<_, mp::Error>(meter.map_or(0.0, |m| m.per_round_us(rounds - 1)))
    })
    .await
    .expect("timing thread")?;
    Ok(Some((child.join().await?, cpu)))
}

/// W5 limit: µs from a stamped `FUTEX_WAKE` to the parked waiter running, and µs of CPU (both
/// processes) per wake-up. With `parked`, the waker sleeps 100 µs before each wake, as in the
/// Event rows of that name (both CPUs may have gone idle meanwhile).
pub async fn futex_wake(rounds: usize, parked: bool) -> mp::Result<(Vec<f64>, f64)> {
    let shm = SharedMemory::create(192)?;
    let mut child = mp::Process::spawn(futex_waiter, (shm.clone(), rounds))?;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let pid = child.pid();
    let cpu = tokio::task::spawn_blocking(move || {
        let (ping, pong) = (shm.atomic_u32(PING)?, shm.atomic_u32(PONG)?);
        let stamp = shm.atomic_u64(STAMP)?;
        let (mut seen, mut meter) = (0, None);
        for _ in 0..rounds {
            if parked {
                std::thread::sleep(std::time::Duration::from_micros(100));
            }
            stamp.store(now_ns(), Ordering::Release);
            bump_and_wake(ping);
            seen = park_while(pong, seen);
            meter.get_or_insert_with(|| CpuMeter::start(pid));
        }
        Ok::<_, mp::Error>(meter.map_or(0.0, |m| m.per_round_us(rounds - 1)))
    })
    .await
    .expect("timing thread")?;
    Ok((child.join().await?, cpu))
}

async fn spin_locker((shm, go, count): (SharedMemory, mp::Event, usize)) {
    go.wait().await;
    let (lock, counter) = (
        shm.atomic_u32(LOCK).unwrap(),
        shm.atomic_u64(COUNTER).unwrap(),
    );
    for _ in 0..count {
        while lock
            .compare_exchange_weak(0, 1, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            std::hint::spin_loop();
        }
        counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        lock.store(0, Ordering::Release);
    }
}

/// W4 limit: ops/s of two processes taking a bare spinlock around a shared counter.
pub async fn spinlock(count: usize) -> mp::Result<f64> {
    let shm = SharedMemory::create(128)?;
    let go = mp::Event::new()?;
    let mut a = mp::Process::spawn(spin_locker, (shm.clone(), go.clone(), count))?;
    let mut b = mp::Process::spawn(spin_locker, (shm.clone(), go.clone(), count))?;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let start = Instant::now();
    go.set();
    a.join().await?;
    b.join().await?;
    let secs = start.elapsed().as_secs_f64();
    let total = shm.atomic_u64(COUNTER)?.load(Ordering::Acquire);
    assert_eq!(total, 2 * count as u64, "lost increments");
    Ok(2.0 * count as f64 / secs)
}
