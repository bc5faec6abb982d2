//! The engine of a `map` stream that feeds the workers itself.
//!
//! A map of tiny tasks with one item per message (Python's `imap(chunksize=1)`) is all
//! overhead: through the pool's queue, every item cost a job, a channel hop to a driver task,
//! a wake-up of the driver for its answer and another for the stream (tens of µs on a small
//! VM). Here the stream does what the drivers did, in batches: it takes chunks from the
//! iterator, records a batch in a worker's lane (`held`, so the worker's driver still settles
//! them if the worker dies: retried, or [`WorkerDied`](crate::Error::WorkerDied)), puts the
//! batch into the worker's ring under one lock, and reads the answers from the result rings
//! while it is polled. While it reads, the drivers need not (a lease on each lane, renewed on
//! every poll); when it has nothing to do it checks briefly, then hands the reading back to
//! the drivers and parks until an answer arrives.
//!
//! Chunks whose arguments hold handles (fds travel over sockets only), chunks too big for a
//! ring, and chunks no worker can take (every worker being replaced) go through the pool's
//! queue as tasks do; their answers come back the same way.

use std::collections::VecDeque;
use std::future::Future;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use super::Pool;
use super::driver::{self, HELD_BYTES};
use super::lane::Lane;
use super::task::{Answer, Control, Job, MapSink, ReplyTo};
use crate::{Error, Result};

/// Tasks a worker may hold from map streams once its answers prove quick: enough to cover a
/// few wake-ups of the stream (tens of µs each) with work queued.
const DIRECT_DEPTH: usize = 128;

/// Chunks a stream takes from its iterator per round of placing them.
const BATCH: usize = 64;

/// A chunk of items, encoded: the bytes, their fds, and how many items.
pub(super) struct Chunk {
    pub(super) encoded: Result<(Vec<u8>, Vec<OwnedFd>)>,
    pub(super) items: usize,
}

/// The next chunk of the iterator, given a chunk size.
pub(super) type NextChunk = Box<dyn FnMut(usize) -> Option<Chunk> + Send>;

type Detour = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A chunk taken from the iterator and not handed to a worker yet.
struct Waiting {
    job: Job,
    message: Vec<u8>,
}

pub(super) struct DirectMap {
    pool: Pool,
    entry: i64,
    next_chunk: NextChunk,
    chunksize: usize,
    exhausted: bool,
    /// Chunks taken from the iterator so far (the next chunk's number).
    taken: u64,
    /// Chunks answered so far.
    answered: u64,
    /// How many chunks may be taken and not answered.
    window: u64,
    waiting: VecDeque<Waiting>,
    /// Chunks travelling through the pool's queue.
    detour: Option<Detour>,
    sink: Arc<MapSink>,
    control: Arc<Control>,
    /// Lanes this stream has handed chunks to, whose answers it reads.
    reading: Vec<Arc<Lane>>,
    /// Answers of chunks that never reached a worker (an encoding error).
    failed: Vec<(u64, Answer)>,
    /// The one chunk with fewer items than `chunksize` (the last), if any.
    short: Option<(u64, usize)>,
}

impl std::fmt::Debug for DirectMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectMap")
            .field("taken", &self.taken)
            .field("answered", &self.answered)
            .field("waiting", &self.waiting.len())
            .field("exhausted", &self.exhausted)
            .finish_non_exhaustive()
    }
}

impl DirectMap {
    /// The direct engine, when the pool's options let a stream feed workers itself (no task
    /// timeout, task budget or initializer: those need the driver to see every task).
    pub(super) fn new(
        pool: &Pool,
        entry: i64,
        next_chunk: NextChunk,
        chunksize: usize,
    ) -> std::result::Result<DirectMap, NextChunk> {
        let shared = &pool.inner.shared;
        if shared.task_timeout.is_some()
            || shared.max_tasks_per_child.is_some()
            || shared.init.is_some()
        {
            return Err(next_chunk);
        }
        let depth = DIRECT_DEPTH.max(shared.depth());
        Ok(DirectMap {
            pool: pool.clone(),
            entry,
            next_chunk,
            chunksize,
            exhausted: false,
            taken: 0,
            answered: 0,
            window: (pool.processes() * depth) as u64,
            waiting: VecDeque::new(),
            detour: None,
            sink: Arc::new(MapSink::default()),
            control: Arc::new(Control::default()),
            reading: Vec::new(),
            failed: Vec::new(),
            short: None,
        })
    }

    /// Appends answers that arrived to `out`: `Ready(false)` with some, `Ready(true)` when
    /// every chunk is answered and the iterator is done, `Pending` until then.
    pub(super) fn poll_answers(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut Vec<(u64, Answer)>,
    ) -> Poll<bool> {
        for lane in &self.reading {
            lane.claim_reading();
        }
        loop {
            self.feed(cx);
            self.read(out);
            if !out.is_empty() {
                return Poll::Ready(false);
            }
            if self.exhausted && self.answered == self.taken {
                self.stop_reading();
                return Poll::Ready(true);
            }
            let in_workers = self.taken - self.answered - self.waiting.len() as u64;
            if in_workers == 0 && self.detour.is_none() && !self.waiting.is_empty() {
                // No room for us in any worker and nothing of ours out to wake us when there
                // is: what waits goes through the pool's queue.
                self.take_detour(self.waiting.len());
                continue;
            }
            // Answers due: check a few µs before parking, as `apply` does.
            let due = in_workers > 0
                && !self.reading.is_empty()
                && crate::notify::spin_until(driver::ANSWER_SPIN, || {
                    let ready = self.reading.iter().any(|lane| !lane.results.is_empty())
                        || self.sink.has_answers();
                    ready.then_some(())
                })
                .is_some();
            if due {
                continue;
            }
            // Park: the drivers read the answers from now on, and the sink wakes us.
            self.sink.register(cx.waker());
            self.stop_reading();
            self.sink.take_into(out);
            self.answered += out.len() as u64;
            if !out.is_empty() {
                return Poll::Ready(false);
            }
            return Poll::Pending;
        }
    }

    /// How many items chunk `chunk` holds.
    pub(super) fn items_in(&self, chunk: u64) -> usize {
        match self.short {
            Some((short, items)) if short == chunk => items,
            _ => self.chunksize,
        }
    }

    /// Takes chunks from the iterator and hands them to workers with room.
    fn feed(&mut self, cx: &mut Context<'_>) {
        if let Some(detour) = self.detour.as_mut() {
            if detour.as_mut().poll(cx).is_pending() {
                return;
            }
            self.detour = None;
        }
        if self.pool.inner.jobs.is_closed() {
            // The pool takes no more (closed or terminated): what is left fails.
            for waiting in self.waiting.drain(..) {
                waiting.job.answer(Err(Error::Closed));
            }
            if !self.exhausted {
                while let Some(Chunk { items, .. }) = (self.next_chunk)(self.chunksize) {
                    let chunk = self.taken;
                    self.taken += 1;
                    if items != self.chunksize {
                        self.short = Some((chunk, items));
                    }
                    self.failed.push((chunk, Err(Error::Closed)));
                }
                self.exhausted = true;
            }
            return;
        }
        loop {
            self.take_chunks();
            if self.waiting.is_empty() || !self.place() {
                break;
            }
        }
    }

    /// Refills `waiting` from the iterator, up to the window.
    fn take_chunks(&mut self) {
        while !self.exhausted
            && self.waiting.len() < BATCH
            && self.taken - self.answered < self.window
        {
            let Some(Chunk { encoded, items }) = (self.next_chunk)(self.chunksize) else {
                self.exhausted = true;
                break;
            };
            let chunk = self.taken;
            self.taken += 1;
            if items != self.chunksize {
                self.short = Some((chunk, items));
            }
            let (args, fds) = match encoded {
                Ok(encoded) => encoded,
                Err(e) => {
                    self.failed.push((chunk, Err(e)));
                    continue;
                }
            };
            let job = Job {
                id: self
                    .pool
                    .inner
                    .next_id
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                entry: self.entry,
                args,
                fds,
                deaths: 0,
                reply: ReplyTo::Map {
                    sink: self.sink.clone(),
                    chunk,
                },
                control: self.control.clone(),
            };
            let message = match driver::encode_call(&job) {
                Ok(message) => message,
                Err(e) => {
                    self.failed.push((chunk, Err(e)));
                    continue;
                }
            };
            self.waiting.push_back(Waiting { job, message });
        }
    }

    /// Hands waiting chunks to workers with room, a batch per worker; `true` if any went.
    /// A chunk that cannot travel through a ring (handles, size) goes through the queue.
    fn place(&mut self) -> bool {
        let front = self.waiting.front().expect("something waits");
        if !Self::fits(front) {
            let unfit = self.waiting.iter().take_while(|w| !Self::fits(w)).count();
            self.take_detour(unfit);
            return false;
        }
        let shared = self.pool.inner.shared.clone();
        // Level the load: each chunk to the worker holding the fewest, so a few slow tasks
        // spread over all workers rather than queue behind each other.
        let mut open: Vec<(Arc<Lane>, usize, bool)> = Vec::new();
        for place in &shared.lanes {
            let lane = place.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let Some(lane) = lane else { continue };
            let (len, quick) = {
                let held = lane.held();
                if held.closed {
                    continue;
                }
                (held.jobs.len(), held.quick)
            };
            open.push((lane, len, quick));
        }
        // Queues behind the running tasks only when every worker's answers are quick: one
        // worker proven quick (by an earlier map's tasks, say) must not take all of a batch
        // of slow tasks while the others run one each.
        let all_quick = open.iter().all(|(_, _, quick)| *quick);
        let depth = if all_quick {
            DIRECT_DEPTH.max(shared.depth())
        } else {
            shared.concurrency
        };
        let lanes: Vec<(Arc<Lane>, usize, usize)> = open
            .into_iter()
            .map(|(lane, len, _)| (lane, len, depth.saturating_sub(len)))
            .collect();
        let mut quotas = vec![0usize; lanes.len()];
        for _ in 0..self.waiting.len() {
            let least = (0..lanes.len())
                .filter(|&i| quotas[i] < lanes[i].2)
                .min_by_key(|&i| lanes[i].1 + quotas[i]);
            match least {
                Some(i) => quotas[i] += 1,
                None => break,
            }
        }
        let mut placed = false;
        for ((lane, _, _), quota) in lanes.into_iter().zip(quotas) {
            if quota == 0 || self.waiting.is_empty() {
                continue;
            }
            if self.hand_to(&lane, depth, quota) > 0 {
                placed = true;
                if !self.reading.iter().any(|l| Arc::ptr_eq(l, &lane)) {
                    lane.claim_reading();
                    self.reading.push(lane);
                }
            }
        }
        // Lanes whose worker's run ended are settled by their drivers: stop reading them.
        self.reading.retain(|lane| !lane.held().closed);
        placed
    }

    /// Whether a chunk may travel through a ring (a bigger one may need a segment of its own,
    /// which the drivers' path arranges).
    fn fits(waiting: &Waiting) -> bool {
        waiting.job.fds.is_empty() && waiting.message.len() <= HELD_BYTES
    }

    /// Hands up to `most` waiting chunks to `lane`, as many as it has room for under `depth`
    /// (it may have taken other callers' tasks since `place` looked); how many went.
    fn hand_to(&mut self, lane: &Lane, depth: usize, most: usize) -> usize {
        let mut held = lane.held();
        if held.closed {
            return 0;
        }
        let room = depth.saturating_sub(held.jobs.len()).min(most);
        let mut bytes = held.bytes();
        let mut batch = 0;
        for waiting in self.waiting.iter().take(room) {
            let alone = held.jobs.is_empty() && batch == 0;
            if !Self::fits(waiting) || (bytes + waiting.job.args.len() > HELD_BYTES && !alone) {
                break;
            }
            bytes += waiting.job.args.len();
            batch += 1;
        }
        if batch == 0 {
            return 0;
        }
        let messages: Vec<&[u8]> = self
            .waiting
            .iter()
            .take(batch)
            .map(|w| w.message.as_slice())
            .collect();
        // Under the lock, so the driver settling a dead worker sees each chunk either in
        // `held` and in the ring (run elsewhere, no harm) or in neither.
        // Not put (the ring closed as the worker retires): they stay waiting.
        let put = lane.tasks.try_put_many_bytes(&messages).unwrap_or_default();
        drop(messages);
        let now = tokio::time::Instant::now();
        for waiting in self.waiting.drain(..put) {
            held.hold(waiting.job, now);
        }
        drop(held);
        lane.dispatched
            .fetch_add(put, std::sync::atomic::Ordering::AcqRel);
        put
    }

    /// Sends the first `n` waiting chunks through the pool's queue.
    fn take_detour(&mut self, n: usize) {
        let jobs: Vec<Job> = self.waiting.drain(..n).map(|w| w.job).collect();
        let pool = self.pool.clone();
        self.detour = Some(Box::pin(async move {
            for job in jobs {
                pool.queue_job(job).await;
            }
        }));
    }

    /// Reads every answer in the result rings of the lanes this stream feeds (other callers'
    /// answers there are delivered too), then takes this stream's from the sink.
    fn read(&mut self, out: &mut Vec<(u64, Answer)>) {
        let shared = &self.pool.inner.shared;
        for lane in &self.reading {
            loop {
                let taken = lane
                    .results
                    .try_take_with(|bytes| driver::take_reply(shared, lane, bytes, Vec::new()));
                match taken {
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                }
            }
        }
        let before = out.len();
        out.append(&mut self.failed);
        self.sink.take_into(out);
        self.answered += (out.len() - before) as u64;
    }

    fn stop_reading(&mut self) {
        for lane in &self.reading {
            lane.release_reading();
        }
    }
}

impl Drop for DirectMap {
    /// Chunks handed to workers run to the end; their drivers read the answers.
    fn drop(&mut self) {
        self.stop_reading();
    }
}

/// A chunk's answer as its items' results.
pub(super) fn results_of<R: serde::de::DeserializeOwned>(
    answer: Answer,
    items: usize,
) -> Vec<Result<R>> {
    use crate::error::ProcessFailure;
    use crate::process::entry::ItemOutcome;
    let decoded = answer
        .and_then(|(bytes, fds)| crate::handle::decode::<Vec<ItemOutcome<R>>>(&bytes, fds))
        .and_then(|outcomes| {
            // One result per item, or an ordered map would pair results with the wrong items.
            if outcomes.len() == items {
                Ok(outcomes)
            } else {
                Err(Error::Corrupt(format!(
                    "a worker answered a chunk of {items} items with {} results",
                    outcomes.len()
                )))
            }
        });
    match decoded {
        Ok(outcomes) => outcomes
            .into_iter()
            .map(|outcome| outcome.map_err(|panic| Error::Process(ProcessFailure::Panicked(panic))))
            .collect(),
        Err(e) => (0..items).map(|_| Err(e.duplicate())).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::entry::ItemOutcome;

    /// A worker's answer (bytes from shared memory) with fewer or more results than the chunk
    /// had items fails every item of the chunk, rather than shifting an ordered map's results.
    #[test]
    fn an_answer_with_the_wrong_number_of_results_fails_its_chunk() {
        let outcomes: Vec<ItemOutcome<u64>> = vec![Ok(1), Ok(2)];
        let answer = crate::handle::encode(&outcomes).expect("encodes");
        let results = results_of::<u64>(Ok(answer), 3);
        assert_eq!(results.len(), 3);
        assert!(results.iter().all(|r| matches!(r, Err(Error::Corrupt(_)))));
        let answer = crate::handle::encode(&outcomes).expect("encodes");
        let results = results_of::<u64>(Ok(answer), 2);
        assert_eq!(
            results.into_iter().map(|r| r.unwrap()).collect::<Vec<_>>(),
            [1, 2]
        );
        // Garbage fails its items too.
        let results = results_of::<u64>(Ok((vec![0xff; 9], Vec::new())), 4);
        assert_eq!(results.len(), 4);
        assert!(results.iter().all(Result::is_err));
    }
}
