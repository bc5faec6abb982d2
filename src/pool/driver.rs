//! The parent's side of one worker: a task per worker slot that starts the worker, feeds it
//! tasks from the pool's queue, and knows at every instant which tasks that worker holds.
//!
//! When the worker dies, the tasks still in its task queue (never taken) go back to be run
//! elsewhere without penalty; the ones it had taken — the ones it was running — fail with
//! [`Error::WorkerDied`] or, while retries remain, run again. Then a replacement starts. An
//! aborted or timed-out task has its worker killed the same way; only that task fails.

use std::collections::{HashMap, VecDeque};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::lane::{Lane, Sent};
use super::task::{Answer, Job};
use super::wire::{CallRef, Calls, Done, Outcome, Reply};
use super::worker::{WorkerArgs, worker_main};
use crate::connection::{Connection, Frame, Pipe};
use crate::error::ProcessFailure;
use crate::{Error, Process, Queue, Result};

/// What every driver of a pool shares.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) name: String,
    pub(super) concurrency: usize,
    pub(super) max_tasks_per_child: Option<usize>,
    pub(super) task_timeout: Option<Duration>,
    pub(super) retries: u32,
    pub(super) init: Option<(i64, Vec<u8>)>,
    pub(super) parent_exe: (u64, u64),
    /// Under the test harness: the test each worker re-runs (see `init`).
    pub(super) rerun_test: Option<String>,
    /// Set when the initializer failed: the pool runs nothing more.
    pub(super) broken: std::sync::Mutex<Option<String>>,
    /// Each slot's lane while its worker runs (see `lane.rs`).
    pub(super) lanes: Vec<std::sync::Mutex<Option<Arc<Lane>>>>,
}

impl Shared {
    fn broken(&self) -> Option<String> {
        self.broken
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Tasks a worker may hold at once: what it runs, plus a few queued behind so it never
    /// waits for the next one (none with a task timeout, which must count from the start).
    /// Held arguments are also kept under [`HELD_BYTES`], so the worker's task queue never
    /// fills: a driver waiting to put while its worker waits to answer would wait forever.
    pub(super) fn depth(&self) -> usize {
        let running = self.concurrency.max(1);
        if self.task_timeout.is_some() {
            running
        } else {
            running + 32
        }
    }
}

/// Bytes of arguments a worker may hold at once (its task queue's ring is 1 MiB). One task
/// larger than that is still sent alone (it spills to a segment of its own).
pub(super) const HELD_BYTES: usize = 256 << 10;

struct Worker {
    process: Process<()>,
    lane: Arc<Lane>,
    socket: Connection<()>,
    pid: u32,
}

impl Shared {
    /// Publishes (or withdraws) slot `slot`'s lane for callers of `apply`.
    fn set_lane(&self, slot: usize, lane: Option<Arc<Lane>>) {
        if let Some(place) = self.lanes.get(slot) {
            *place.lock().unwrap_or_else(|e| e.into_inner()) = lane;
        }
    }
}

fn start(
    shared: &Shared,
    slot: usize,
    generation: u64,
    aborts: &mpsc::UnboundedSender<u64>,
) -> Result<Worker> {
    let tasks = Queue::new(0)?;
    let results = Queue::new(0)?;
    let (ours, theirs) = Pipe::<()>::duplex()?;
    let args = WorkerArgs {
        tasks: tasks.clone(),
        results: results.clone(),
        socket: theirs,
        parent_exe: shared.parent_exe,
        concurrency: shared.concurrency,
        init: shared.init.clone(),
    };
    let process = Process::builder()
        .name(format!("{}-worker-{slot}.{generation}", shared.name))
        .kill_on_drop(true)
        .daemon(true)
        .rerun_test(shared.rerun_test.clone())
        .spawn(worker_main, args)?;
    let pid = process.pid();
    tracing::info!(target: "tokio_multiprocessing::pool", pool = %shared.name, slot, pid, "worker started");
    Ok(Worker {
        process,
        lane: Arc::new(Lane::new(tasks, results, aborts.clone())),
        socket: ours,
        pid,
    })
}

/// How a worker's run ended.
pub(super) enum End {
    /// It exited or was killed by someone else.
    Died(ProcessFailure),
    /// We kill it because of one task (aborted, or over its timeout).
    Kill { culprit: u64, error: Error },
    /// Its initializer failed.
    InitFailed(String),
    /// It finished its share (`max_tasks_per_child`) or the pool closed: let it exit.
    Retire,
    /// The pool was terminated.
    Terminate,
}

/// Runs worker slot `slot` until the pool closes (and everything is done) or is terminated.
pub(super) async fn drive(
    slot: usize,
    shared: Arc<Shared>,
    jobs: async_channel::Receiver<Job>,
    mut terminate: watch::Receiver<bool>,
) {
    let (aborts_tx, mut aborts) = mpsc::unbounded_channel::<u64>();
    let mut retry: VecDeque<Job> = VecDeque::new();
    let mut generation = 0u64;
    loop {
        if *terminate.borrow() {
            fail_all(retry.drain(..), || Error::Closed);
            return;
        }
        if let Some(why) = shared.broken() {
            fail_all(retry.drain(..), || broken_error(&why));
            while let Ok(job) = jobs.recv().await {
                job.answer(Err(broken_error(&why)));
            }
            return;
        }
        if jobs.is_closed() && jobs.is_empty() && retry.is_empty() {
            return;
        }
        generation += 1;
        let mut worker = match start(&shared, slot, generation, &aborts_tx) {
            Ok(worker) => worker,
            Err(e) => {
                tracing::error!(target: "tokio_multiprocessing::pool", pool = %shared.name, slot, error = %e, "cannot start a worker");
                // Fail one task rather than spin; try again shortly.
                let job = match retry.pop_front() {
                    Some(job) => Some(job),
                    None => jobs.try_recv().ok(),
                };
                if let Some(job) = job {
                    job.answer(Err(e));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        shared.set_lane(slot, Some(worker.lane.clone()));
        let end = serve(
            &shared,
            &mut worker,
            &jobs,
            &mut retry,
            &mut aborts,
            &aborts_tx,
            &mut terminate,
        )
        .await;
        // No caller may add to this worker any more; what it holds is settled below. Answers
        // it gave before its end are answers, though nobody had read them yet.
        shared.set_lane(slot, None);
        let lane = &worker.lane;
        while let Ok(Some(_)) = lane
            .results
            .try_take_with(|reply| take_reply(&shared, lane, reply, Vec::new()))
        {}
        let held = {
            let mut held = worker.lane.held();
            held.closed = true;
            held.take_all()
        };
        finish(&shared, slot, worker, held, &mut retry, end).await;
    }
}

/// Feeds one worker until its run ends.
#[allow(clippy::too_many_arguments)]
async fn serve(
    shared: &Shared,
    worker: &mut Worker,
    jobs: &async_channel::Receiver<Job>,
    retry: &mut VecDeque<Job>,
    aborts: &mut mpsc::UnboundedReceiver<u64>,
    aborts_tx: &mpsc::UnboundedSender<u64>,
    terminate: &mut watch::Receiver<bool>,
) -> End {
    let mut no_more_jobs = false;
    let lane = worker.lane.clone();
    loop {
        let dispatched = lane.dispatched.load(Ordering::Acquire);
        let retiring = shared
            .max_tasks_per_child
            .is_some_and(|max| dispatched >= max);
        // What the worker holds now (callers of `apply` add to it too, under the lock).
        let (room, deadline, read_answers, lease) = {
            let mut held = lane.held();
            if (retiring || (no_more_jobs && retry.is_empty())) && held.jobs.is_empty() {
                // Under the lock: no caller adds a task to a worker that is leaving.
                held.closed = true;
                return End::Retire;
            }
            // Tasks are queued behind the running ones only once they prove quick: queued
            // behind a slow task, a task would wait while another worker idles.
            let depth = if held.quick {
                shared.depth()
            } else {
                shared.concurrency
            };
            let held_bytes = held.bytes();
            let room = held.jobs.is_empty()
                || (held.jobs.len() < depth && held_bytes < HELD_BYTES && !retiring);
            let room = room && !retiring;
            let deadline = shared
                .task_timeout
                .and_then(|timeout| held.jobs.values().map(|sent| sent.at + timeout).min());
            // Answers for callers that read them themselves need no driver; nor do answers
            // while a map stream reads them (until its claim lapses).
            let lease = lane.reader_lease();
            let read_answers = held.jobs.len() > held.callers_reading && lease.is_none();
            // While the worker holds only what it runs and nothing waits to be sent (calls one
            // after another, as `apply` makes them) an answer is due soon: spin a few µs first.
            // With a backlog (a map streaming) answers keep coming anyway, and this thread is
            // better left to the tasks that submit.
            let soon = held.jobs.len() <= shared.concurrency && jobs.is_empty();
            (room, deadline, read_answers.then_some(soon), lease)
        };
        tokio::select! {
            biased;
            _ = terminate.changed() => return End::Terminate,
            Some(id) = aborts.recv() => {
                if lane.held().jobs.contains_key(&id) {
                    return End::Kill { culprit: id, error: Error::Closed };
                }
            }
            // A caller stopped reading its answer itself: look again at who reads.
            () = lane.wake_driver.notified() => {}
            // A stream's claim to read answers lapses: look again.
            _ = sleep_until(lease), if lease.is_some() => {}
            // Wait for replies, then take every reply that is there.
            () = replies_ready(&lane.results, read_answers.unwrap_or(false)), if read_answers.is_some() => {
                while let Ok(bytes) = lane.results.try_get_bytes() {
                    if let Some(end) = take_reply(shared, &lane, &bytes, Vec::new()) {
                        return end;
                    }
                }
            }
            frame = worker.socket.recv_frame() => match frame {
                Ok(Frame { payload, fds }) => {
                    if let Some(end) = take_reply(shared, &lane, &payload, fds) {
                        return end;
                    }
                }
                // The worker is gone: its exit tells why.
                Err(_) => return End::Died(cause(worker.process.join().await)),
            },
            exit = worker.process.join() => return End::Died(cause(exit)),
            _ = sleep_until(deadline), if deadline.is_some() => {
                let culprit = lane
                    .held()
                    .jobs
                    .iter()
                    .min_by_key(|(_, sent)| sent.at)
                    .map(|(id, _)| *id)
                    .unwrap_or_default();
                return End::Kill { culprit, error: Error::Timeout };
            }
            job = next_job(jobs, retry), if room && !(no_more_jobs && retry.is_empty()) => match job {
                Some(job) => dispatch(worker, job, aborts_tx).await,
                None => no_more_jobs = true,
            },
        }
    }
}

/// How long a driver checks for an answer that is due before it parks: an `apply` of a tiny
/// task answers within 10–40 µs on a busy 2-CPU VM, and a parked driver pays a reactor wake-up
/// (tens of µs there) on top. 50 µs is within tokio's guidance for the time between awaits
/// (10–100 µs), and the spin yields its CPU after its first ~2 µs.
pub(super) const ANSWER_SPIN: std::time::Duration = std::time::Duration::from_micros(50);

/// Until the worker's results queue has something. When an answer is due `soon`, first checks
/// for up to [`ANSWER_SPIN`]: an answer that comes that quickly costs no reactor wake-up.
async fn replies_ready(results: &Queue<Vec<u8>>, soon: bool) {
    if soon {
        if !results.spin_until_readable(ANSWER_SPIN) {
            results.readable().await;
        }
    } else {
        results.readable().await;
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

async fn next_job(jobs: &async_channel::Receiver<Job>, retry: &mut VecDeque<Job>) -> Option<Job> {
    if let Some(job) = retry.pop_front() {
        return Some(job);
    }
    jobs.recv().await.ok()
}

/// Sends a job to the worker: over its task queue, or over the socket when its arguments hold
/// fds (duplicates travel; the job keeps the originals for a retry).
async fn dispatch(worker: &mut Worker, job: Job, aborts_tx: &mpsc::UnboundedSender<u64>) {
    if job.is_aborted() {
        job.answer(Err(Error::Closed));
        return;
    }
    *job.control
        .running_on
        .lock()
        .unwrap_or_else(|e| e.into_inner()) = Some(aborts_tx.clone());
    let message = match encode_call(&job) {
        Ok(message) => message,
        Err(e) => {
            job.answer(Err(e));
            return;
        }
    };
    let fds: Option<std::io::Result<Vec<OwnedFd>>> =
        (!job.fds.is_empty()).then(|| job.fds.iter().map(crate::sys::dup).collect());
    let id = job.id;
    // Held before it is sent: a stream or a caller reading this worker's answers may read
    // this one as soon as it is sent, and settles it through `held`.
    worker.lane.held().hold(job, Instant::now());
    let sent = match fds {
        None => worker.lane.tasks.put_bytes(&message).await,
        Some(Ok(fds)) => worker.socket.send_frame(&message, fds).await,
        Some(Err(e)) => Err(e.into()),
    };
    match sent {
        Ok(()) => {
            worker.lane.dispatched.fetch_add(1, Ordering::AcqRel);
        }
        Err(e) => {
            let unsent = worker.lane.held().take(id);
            if let Some(Sent { job, .. }) = unsent {
                job.answer(Err(e));
            }
        }
    }
}

/// The message that runs `job` in a worker.
pub(super) fn encode_call(job: &Job) -> Result<Vec<u8>> {
    let call = CallRef {
        id: job.id,
        entry: job.entry,
        args: &job.args,
        nfds: job.fds.len() as u32,
    };
    // The wire form of `Calls(vec![call])`: a one-element sequence.
    let calls: &[CallRef] = &[call];
    postcard::to_extend(calls, Vec::with_capacity(job.args.len() + 24))
        .map_err(|e| Error::InvalidArgument(e.to_string()))
}

/// Answers the jobs a reply finishes; `Some` when the reply ends the worker's run. Called by
/// the driver and by callers of `apply` reading their own answers alike.
pub(super) fn take_reply(
    shared: &Shared,
    lane: &Lane,
    message: &[u8],
    fds: Vec<OwnedFd>,
) -> Option<End> {
    let reply = match postcard::from_bytes::<Reply>(message) {
        Ok(reply) => reply,
        Err(e) => {
            tracing::error!(target: "tokio_multiprocessing::pool", pool = %shared.name, error = %e, "a worker sent a bad reply");
            return None;
        }
    };
    match reply {
        Reply::InitFailed(why) => Some(End::InitFailed(why)),
        Reply::Done(done) => {
            let mut fds = fds.into_iter();
            for Done { id, outcome } in done {
                let answer: Answer = match outcome {
                    Outcome::Returned { bytes, nfds } => {
                        Ok((bytes, fds.by_ref().take(nfds as usize).collect()))
                    }
                    Outcome::Panicked(message) => {
                        Err(Error::Process(ProcessFailure::Panicked(message)))
                    }
                    Outcome::Failed(message) => Err(Error::Corrupt(format!(
                        "the worker could not run the task: {message}"
                    ))),
                };
                let job = lane.held().settle(id, shared.concurrency);
                if let Some(job) = job {
                    job.answer(answer);
                }
            }
            None
        }
    }
}

fn cause(exit: Result<()>) -> ProcessFailure {
    match exit {
        Ok(()) => ProcessFailure::Exited(0),
        Err(Error::Process(failure)) => failure,
        Err(e) => ProcessFailure::Panicked(e.to_string()),
    }
}

fn broken_error(why: &str) -> Error {
    Error::InvalidArgument(format!("the pool's initializer failed: {why}"))
}

fn fail_all(jobs: impl Iterator<Item = Job>, error: impl Fn() -> Error) {
    for job in jobs {
        job.answer(Err(error()));
    }
}

/// After a worker's run: settle every task it held, and let it go.
async fn finish(
    shared: &Shared,
    slot: usize,
    mut worker: Worker,
    mut held: HashMap<u64, Sent>,
    retry: &mut VecDeque<Job>,
    end: End,
) {
    let pid = worker.pid;
    match &end {
        End::Retire => {
            // Everything it held is answered: close its queue and let it exit.
            worker.lane.tasks.close();
            let _ = tokio::time::timeout(Duration::from_secs(10), worker.process.join()).await;
            tracing::info!(target: "tokio_multiprocessing::pool", pool = %shared.name, slot, pid, "worker retired");
            return;
        }
        End::Terminate => {
            let _ = worker.process.kill();
            fail_all(held.drain().map(|(_, sent)| sent.job), || Error::Closed);
            fail_all(retry.drain(..), || Error::Closed);
            let _ = worker.process.join().await;
            return;
        }
        End::Kill { .. } => {
            let _ = worker.process.kill();
            let _ = worker.process.join().await;
        }
        End::Died(_) | End::InitFailed(_) => {}
    }
    // Tasks still in its queue were never taken: they run elsewhere, no harm done.
    while let Ok(bytes) = worker.lane.tasks.try_get_bytes() {
        if let Ok(Calls(calls)) = postcard::from_bytes::<Calls>(&bytes) {
            for call in calls {
                if let Some(sent) = held.remove(&call.id) {
                    retry.push_back(sent.job);
                }
            }
        }
    }
    match end {
        End::Kill { culprit, error } => {
            tracing::warn!(target: "tokio_multiprocessing::pool", pool = %shared.name, slot, pid, %error, "worker killed for one of its tasks; replacing it");
            let mut error = Some(error);
            for (id, Sent { job, .. }) in held.drain() {
                if id == culprit {
                    job.answer(Err(error.take().unwrap_or(Error::Closed)));
                } else {
                    // Innocent: run again.
                    retry.push_back(job);
                }
            }
        }
        End::Died(failure) => {
            tracing::warn!(target: "tokio_multiprocessing::pool", pool = %shared.name, slot, pid, cause = %failure, "worker died; replacing it");
            for (_, Sent { mut job, .. }) in held.drain() {
                if job.is_aborted() {
                    job.answer(Err(Error::Closed));
                } else if job.deaths < shared.retries {
                    job.deaths += 1;
                    retry.push_back(job);
                } else {
                    job.answer(Err(Error::WorkerDied {
                        pid,
                        cause: failure.clone(),
                    }));
                }
            }
        }
        End::InitFailed(why) => {
            tracing::error!(target: "tokio_multiprocessing::pool", pool = %shared.name, slot, pid, reason = %why, "the pool's initializer failed");
            *shared.broken.lock().unwrap_or_else(|e| e.into_inner()) = Some(why.clone());
            fail_all(held.drain().map(|(_, sent)| sent.job), || {
                broken_error(&why)
            });
            let _ = worker.process.join().await;
        }
        End::Retire | End::Terminate => {}
    }
}
