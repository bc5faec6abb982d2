//! A worker's lane: its task and result rings and the tasks it holds, shared by its driver,
//! by callers of [`Pool::apply`](super::Pool::apply) and by the streams of `map`.
//!
//! The driver owns a worker: it feeds it from the pool's queue and settles every task the
//! worker held when it dies. But a caller that can reach a worker directly does better alone:
//! it records its task in the lane's `held` (so the driver settles it if the worker dies),
//! puts it straight into the worker's ring, and reads answers from the result ring itself —
//! no hop through the driver task, no wake-up of another thread (the design the manager's
//! local clients use). Whoever reads an answer, caller, stream or driver, settles it through
//! `held`, under its lock, so every answer is delivered once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use super::task::Job;
use crate::Queue;

/// A task a worker holds, when it was handed over, and how many were held before it.
#[derive(Debug)]
pub(super) struct Sent {
    pub(super) job: Job,
    pub(super) at: Instant,
    pub(super) ahead: u32,
}

/// The tasks a worker holds: sent to it (or about to be) and not answered yet.
#[derive(Default)]
pub(super) struct Held {
    pub(super) jobs: HashMap<u64, Sent>,
    /// The worker's run ended: nothing more may be added.
    pub(super) closed: bool,
    /// Answers come quickly: tasks may queue behind the running ones.
    pub(super) quick: bool,
    /// Held tasks whose callers are reading the result ring themselves: the driver need not.
    pub(super) callers_reading: usize,
    /// Bytes of arguments held.
    args_bytes: usize,
}

impl Held {
    /// Records `job` as handed to the worker now.
    pub(super) fn hold(&mut self, job: Job, at: Instant) {
        let ahead = u32::try_from(self.jobs.len()).unwrap_or(u32::MAX);
        self.args_bytes += job.args.len();
        if let Some(replaced) = self.jobs.insert(job.id, Sent { job, at, ahead }) {
            self.args_bytes -= replaced.job.args.len();
        }
    }

    /// Takes `id` out (unanswered).
    pub(super) fn take(&mut self, id: u64) -> Option<Sent> {
        let sent = self.jobs.remove(&id)?;
        self.args_bytes -= sent.job.args.len();
        Some(sent)
    }

    /// Takes every task out (the worker's run ended).
    pub(super) fn take_all(&mut self) -> HashMap<u64, Sent> {
        self.args_bytes = 0;
        std::mem::take(&mut self.jobs)
    }

    /// Takes `id` out once answered, learning from its answer's delay whether tasks are quick:
    /// the delay divided by the tasks it waited behind estimates one task's run time.
    /// While tasks are quick, one answer in eight is timed (a clock read per answer is a few
    /// per cent of a tiny task's cost), and only of a task that was queued behind another: a
    /// task sent to an idle worker also waited for the worker to wake up, which says nothing
    /// of the tasks (and took over 200 µs at times on a busy VM). A slow task among quick
    /// ones is noticed within eight answers of the tasks queued behind it.
    pub(super) fn settle(&mut self, id: u64, concurrency: usize) -> Option<Job> {
        let sent = self.take(id)?;
        if !self.quick || (sent.ahead > 0 && id.is_multiple_of(8)) {
            let rounds = 1 + sent.ahead as usize / concurrency.max(1);
            self.quick = sent.at.elapsed() < QUICK * u32::try_from(rounds).unwrap_or(u32::MAX);
        }
        Some(sent.job)
    }

    /// Bytes of arguments held.
    pub(super) fn bytes(&self) -> usize {
        self.args_bytes
    }
}

/// A task whose run (estimated from its answer's delay) is under this is quick.
const QUICK: Duration = Duration::from_micros(200);

/// How long a stream's claim to read a lane's answers lasts without being renewed: a map
/// stream renews it whenever it is polled; once its consumer stops polling, the driver reads
/// the answers again (other callers' answers wait at most this plus a timer tick).
pub(super) const READER_LEASE: Duration = Duration::from_millis(1);

pub(super) struct Lane {
    pub(super) tasks: Queue<Vec<u8>>,
    pub(super) results: Queue<Vec<u8>>,
    pub(super) held: Mutex<Held>,
    /// The driver's abort channel, for tasks' `abort`.
    pub(super) aborts: mpsc::UnboundedSender<u64>,
    /// Tasks sent to this worker so far.
    pub(super) dispatched: AtomicUsize,
    /// Rung when a caller stops reading answers itself: the driver reads them from then on.
    pub(super) wake_driver: Notify,
    /// Until when (ns after [`epoch`]) a map stream reads this lane's answers itself, so the
    /// driver need not wait on them (and the worker need not wake it for each one).
    reader_until: AtomicU64,
}

impl std::fmt::Debug for Lane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let held = self.held();
        f.debug_struct("Lane")
            .field("held", &held.jobs.len())
            .field("closed", &held.closed)
            .finish_non_exhaustive()
    }
}

/// The clock of reader leases.
fn epoch() -> std::time::Instant {
    static EPOCH: OnceLock<std::time::Instant> = OnceLock::new();
    *EPOCH.get_or_init(std::time::Instant::now)
}

fn now_ns() -> u64 {
    u64::try_from(epoch().elapsed().as_nanos()).unwrap_or(u64::MAX)
}

impl Lane {
    pub(super) fn new(
        tasks: Queue<Vec<u8>>,
        results: Queue<Vec<u8>>,
        aborts: mpsc::UnboundedSender<u64>,
    ) -> Lane {
        Lane {
            tasks,
            results,
            held: Mutex::new(Held::default()),
            aborts,
            dispatched: AtomicUsize::new(0),
            wake_driver: Notify::new(),
            reader_until: AtomicU64::new(0),
        }
    }

    pub(super) fn held(&self) -> MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A stream claims (or renews its claim) to read answers for [`READER_LEASE`].
    pub(super) fn claim_reading(&self) {
        let until = now_ns().saturating_add(READER_LEASE.as_nanos() as u64);
        self.reader_until.fetch_max(until, Ordering::AcqRel);
    }

    /// The stream stops reading (it parks, or is dropped): the driver reads from now on.
    pub(super) fn release_reading(&self) {
        self.reader_until.store(0, Ordering::Release);
        self.wake_driver.notify_one();
    }

    /// While a stream reads this lane's answers: until when.
    pub(super) fn reader_lease(&self) -> Option<Instant> {
        let until = self.reader_until.load(Ordering::Acquire);
        let now = now_ns();
        (until > now).then(|| Instant::now() + Duration::from_nanos(until - now))
    }
}
