//! [`Pool`]: a pool of worker processes that runs `async fn` tasks (Python's
//! `multiprocessing.Pool`), and never hangs or breaks when a worker dies.
//!
//! Python's `Pool.map` hangs for good when a worker is killed (CPython #96062), and
//! `ProcessPoolExecutor` declares the whole pool broken. Here the parent knows at every instant
//! which tasks each worker holds (each worker has its own task queue, fed by its own driver
//! task): when a worker dies, exactly the task it was running fails with
//! [`Error::WorkerDied`] — or runs again, with [`PoolBuilder::retries`] — the tasks it had not
//! started run elsewhere, a replacement starts, and everything else goes on.
//!
//! | Python | here |
//! |---|---|
//! | `Pool(n)`, `Pool(initializer=f, initargs=a, maxtasksperchild=m)` | [`Pool::new(n)`](Pool::new), [`Pool::builder()`](Pool::builder) |
//! | `apply(f, (x,))` | [`apply(f, x).await`](Pool::apply) |
//! | `apply_async(f, (x,))` → `AsyncResult` | [`spawn(f, x).await`](Pool::spawn) → [`Task`] (a future; `is_finished`, `abort`) |
//! | `map(f, xs, chunksize)`, `imap`, `starmap` | [`map(f, xs)`](Pool::map): an ordered `Stream` (`chunksize` settable); `map` over tuples |
//! | `imap_unordered(f, xs)` | [`map_unordered(f, xs)`](Pool::map_unordered) |
//! | `close()`, `join()`, `terminate()` | [`close`](Pool::close), [`join().await`](Pool::join), [`terminate`](Pool::terminate) |
//!
//! Workers are ordinary [`Process`](crate::Process) children of this same program: call
//! [`init`](crate::init) first in `main` (or in the test). Tasks are `async fn(A) -> R`
//! function items, as for [`Process::spawn`](crate::Process::spawn): serde arguments and
//! results, which may hold handles.
//!
//! CPU use: a worker that has just finished its last task checks its queue for up to 100 µs
//! before it sleeps, and a driver task, an `apply` or a `map` stream awaiting an answer that
//! is due checks for up to 50 µs on its thread; all yield their CPU while they check. That
//! keeps back-to-back calls off the slower wake-up path; an idle pool uses no CPU.
//!
//! Speed: `apply` on an idle worker and `map` streams hand their tasks to the workers' queues
//! themselves and read the answers themselves (see [`Map`]); a tiny task costs about a µs, so
//! `map_unordered(f, xs).chunksize(1)` runs about a million tasks a second on two cores.
//!
//! ```no_run
//! use tokio_multiprocessing as mp;
//!
//! async fn square(x: u64) -> u64 {
//!     x * x
//! }
//!
//! #[tokio::main]
//! async fn main() -> mp::Result<()> {
//!     mp::init().await?;
//!     let pool = mp::Pool::new(2)?;
//!     assert_eq!(pool.apply(square, 7).await?, 49);
//!     let squares = pool.map(square, 0..2000u64).collect_vec().await?;
//!     assert_eq!(squares.iter().sum::<u64>(), (0..2000u64).map(|x| x * x).sum());
//!     pool.close();
//!     pool.join().await;
//!     Ok(())
//! }
//! ```

mod direct_map;
mod driver;
mod lane;
mod map;
mod task;
mod wire;
mod worker;

use std::future::Future;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{oneshot, watch};

pub use map::Map;
pub use task::Task;

use crate::process::entry;
use crate::{Error, Result};
use driver::Shared;
use task::{Control, Job};

/// Options for a [`Pool`].
#[derive(Debug, Default)]
#[must_use = "a PoolBuilder does nothing until `build` is called"]
pub struct PoolBuilder {
    processes: usize,
    concurrency: usize,
    max_tasks_per_child: Option<usize>,
    max_pending: Option<usize>,
    task_timeout: Option<Duration>,
    retries: u32,
    name: Option<String>,
    init: Option<Result<(i64, Vec<u8>)>>,
}

impl PoolBuilder {
    /// Worker processes (default, and `0`: [`cpu_count`](crate::cpu_count)).
    pub fn processes(mut self, n: usize) -> Self {
        self.processes = n;
        self
    }

    /// Runs `f(args)` once in every worker before its first task (Python's `initializer`), for
    /// example to load data into a static. An initializer that panics or returns `Err` is
    /// reported, not retried forever: the pool stops, and every task fails saying why.
    pub fn initializer<F, A, Fut, R>(mut self, f: F, args: A) -> Self
    where
        F: Fn(A) -> Fut + Copy + Send + 'static,
        A: Serialize + DeserializeOwned + 'static,
        Fut: Future<Output = R> + 'static,
        R: Serialize + 'static,
    {
        let _ = f;
        let encoded = crate::handle::encode(&args).and_then(|(bytes, fds)| {
            if fds.is_empty() {
                Ok((entry::offset_for::<F, A, Fut, R>(), bytes))
            } else {
                Err(Error::InvalidArgument(
                    "an initializer's arguments cannot hold handles".into(),
                ))
            }
        });
        self.init = Some(encoded);
        self
    }

    /// Replaces a worker after it ran this many tasks (Python's `maxtasksperchild`).
    pub fn max_tasks_per_child(mut self, n: usize) -> Self {
        self.max_tasks_per_child = Some(n.max(1));
        self
    }

    /// Submitting waits while this many tasks are queued (backpressure; default 1024 per
    /// worker).
    pub fn max_pending(mut self, n: usize) -> Self {
        self.max_pending = Some(n.max(1));
        self
    }

    /// A task that runs longer gets [`Error::Timeout`]; its worker is killed and replaced.
    pub fn task_timeout(mut self, timeout: Duration) -> Self {
        self.task_timeout = Some(timeout);
        self
    }

    /// Runs a task again, up to `n` times, when its worker dies under it (default 0).
    pub fn retries(mut self, n: u32) -> Self {
        self.retries = n;
        self
    }

    /// Tasks one worker runs at once, for I/O-bound async tasks (default 1).
    pub fn concurrency(mut self, k: usize) -> Self {
        self.concurrency = k.max(1);
        self
    }

    /// A name for the workers and the log (default `Pool`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Starts the workers.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] before [`init`](crate::init) or with an initializer whose
    /// arguments hold handles; [`Error::Io`] when the executable cannot be identified.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn build(self) -> Result<Pool> {
        if !crate::process::is_initialised() {
            return Err(Error::InvalidArgument(
                "call `tokio_multiprocessing::init()` first in `main` (or in the test) before \
                 starting a pool"
                    .into(),
            ));
        }
        let processes = if self.processes == 0 {
            crate::cpu_count()
        } else {
            self.processes
        };
        let shared = Arc::new(Shared {
            name: self.name.unwrap_or_else(|| "Pool".into()),
            concurrency: self.concurrency.max(1),
            max_tasks_per_child: self.max_tasks_per_child,
            task_timeout: self.task_timeout,
            retries: self.retries,
            init: self.init.transpose()?,
            parent_exe: crate::sys::code_address::executable_identity()?,
            rerun_test: crate::process::test_to_rerun()?,
            broken: Mutex::new(None),
            lanes: (0..processes).map(|_| Mutex::new(None)).collect(),
        });
        let (jobs_tx, jobs_rx) =
            async_channel::bounded(self.max_pending.unwrap_or(1024 * processes));
        let (terminate_tx, terminate_rx) = watch::channel(false);
        let running = Arc::new(watch::Sender::new(processes));
        for slot in 0..processes {
            let (shared, jobs, terminate, running) = (
                shared.clone(),
                jobs_rx.clone(),
                terminate_rx.clone(),
                running.clone(),
            );
            tokio::spawn(async move {
                // Counted out however the driver ends (a panic included).
                let _done = CountOut(running);
                driver::drive(slot, shared, jobs, terminate).await;
            });
        }
        Ok(Pool {
            inner: Arc::new(Inner {
                jobs: jobs_tx,
                pending: jobs_rx,
                running,
                terminate: terminate_tx,
                next_id: AtomicU64::new(1),
                processes,
                concurrency: shared.concurrency,
                shared: shared.clone(),
            }),
        })
    }
}

/// A pool of worker processes (Python's `multiprocessing.Pool`). Cheap to clone; every clone
/// submits to the same workers.
///
/// Dropping the last handle terminates the pool, as leaving Python's `with Pool() as pool:`
/// block does: workers are killed and unfinished tasks get [`Error::Closed`]. To let the work
/// finish, [`close`](Self::close) and [`join`](Self::join) first.
#[derive(Clone, Debug)]
pub struct Pool {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    jobs: async_channel::Sender<Job>,
    /// A receiver of our own, to fail what is queued when the pool is terminated.
    pending: async_channel::Receiver<Job>,
    /// Drivers still running.
    running: Arc<watch::Sender<usize>>,
    terminate: watch::Sender<bool>,
    next_id: AtomicU64,
    processes: usize,
    concurrency: usize,
    shared: Arc<driver::Shared>,
}

impl Inner {
    fn terminate(&self) {
        let _ = self.terminate.send(true);
        self.jobs.close();
        while let Ok(job) = self.pending.try_recv() {
            job.answer(Err(Error::Closed));
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.terminate();
    }
}

impl Pool {
    /// A pool of `processes` workers (`0`: one per CPU this process may use).
    ///
    /// # Errors
    ///
    /// As [`PoolBuilder::build`].
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn new(processes: usize) -> Result<Pool> {
        Pool::builder().processes(processes).build()
    }

    /// Options for a pool.
    pub fn builder() -> PoolBuilder {
        PoolBuilder::default()
    }

    /// The number of worker processes.
    pub fn processes(&self) -> usize {
        self.inner.processes
    }

    /// Submits `f(args)` and returns its [`Task`] once it is queued (waiting while
    /// [`max_pending`](PoolBuilder::max_pending) tasks are: backpressure). Python's
    /// `apply_async`.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: dropping the future before it returns submits nothing.
    pub async fn spawn<F, A, Fut, R>(&self, f: F, args: A) -> Task<R>
    where
        F: Fn(A) -> Fut + Copy + Send + 'static,
        A: Serialize + DeserializeOwned + 'static,
        Fut: Future<Output = R> + 'static,
        R: Serialize + DeserializeOwned + 'static,
    {
        let _ = f;
        self.submit(entry::offset_for::<F, A, Fut, R>(), &args)
            .await
    }

    /// Runs `f(args)` in a worker and returns its value (Python's `apply`).
    ///
    /// When a worker is idle, the call goes to it directly and this future reads the answer
    /// itself for a few µs before it parks (a round trip of a few µs, no hop through the
    /// pool's tasks); otherwise it queues like [`spawn`](Self::spawn). Either way a worker that
    /// dies under the call is handled as for any task (retried, or [`Error::WorkerDied`]).
    /// Pools with a task timeout, a per-worker task budget or an initializer always queue.
    ///
    /// # Errors
    ///
    /// As awaiting a [`Task`].
    ///
    /// # Cancel safety
    ///
    /// Dropping the future detaches the task (it still runs; its value is dropped).
    pub async fn apply<F, A, Fut, R>(&self, f: F, args: A) -> Result<R>
    where
        F: Fn(A) -> Fut + Copy + Send + 'static,
        A: Serialize + DeserializeOwned + 'static,
        Fut: Future<Output = R> + 'static,
        R: Serialize + DeserializeOwned + 'static,
    {
        let _ = f;
        let entry = entry::offset_for::<F, A, Fut, R>();
        let encoded = crate::handle::encode(&args);
        let task = match encoded {
            Ok((bytes, fds)) if fds.is_empty() => {
                match self.run_on_idle_worker::<R>(entry, bytes).await {
                    Ok(result) => return result,
                    Err(bytes) => self.submit_encoded(entry, Ok((bytes, fds))).await,
                }
            }
            other => self.submit_encoded(entry, other).await,
        };
        task.await
    }

    /// `f` over `items`, in order: an ordered `Stream` of each item's result (Python's `map` /
    /// `imap`; `starmap` is `map` over tuples). Items are taken lazily and travel in chunks
    /// (see [`Map::chunksize`]); a bounded number of chunks is in flight.
    pub fn map<F, A, Fut, R, I>(&self, f: F, items: I) -> Map<R>
    where
        F: Fn(A) -> Fut + Copy + Send + 'static,
        A: Serialize + DeserializeOwned + Send + 'static,
        Fut: Future<Output = R> + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
        I: IntoIterator<Item = A>,
        I::IntoIter: Send + 'static,
    {
        self.map_in_order(f, items, true)
    }

    /// [`map`](Self::map) in completion order (Python's `imap_unordered`).
    pub fn map_unordered<F, A, Fut, R, I>(&self, f: F, items: I) -> Map<R>
    where
        F: Fn(A) -> Fut + Copy + Send + 'static,
        A: Serialize + DeserializeOwned + Send + 'static,
        Fut: Future<Output = R> + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
        I: IntoIterator<Item = A>,
        I::IntoIter: Send + 'static,
    {
        self.map_in_order(f, items, false)
    }

    fn map_in_order<F, A, Fut, R, I>(&self, f: F, items: I, ordered: bool) -> Map<R>
    where
        F: Fn(A) -> Fut + Copy + Send + 'static,
        A: Serialize + DeserializeOwned + Send + 'static,
        Fut: Future<Output = R> + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
        I: IntoIterator<Item = A>,
        I::IntoIter: Send + 'static,
    {
        let _ = f;
        Map::new(
            self.clone(),
            entry::chunk_offset_for::<F, A, Fut, R>(),
            items.into_iter(),
            ordered,
        )
    }

    /// Queues a call of trampoline `entry` with `args`.
    async fn submit<A: Serialize + ?Sized, R>(&self, entry: i64, args: &A) -> Task<R> {
        self.submit_encoded(entry, crate::handle::encode(args))
            .await
    }

    /// `apply`'s fast path: when a worker holds nothing, run the call on it directly — record
    /// it in the worker's lane (so its driver settles it if the worker dies), put it in the
    /// worker's ring, and read the answer here while it is near (see `lane.rs`). Gives the
    /// arguments back when no worker is idle, or the pool's options need the driver for every
    /// task (a task timeout, a task budget per worker, an initializer).
    ///
    /// Cancel-safe as `apply` is: dropped, the task still runs (its driver reads its answer).
    async fn run_on_idle_worker<R: DeserializeOwned>(
        &self,
        entry: i64,
        args: Vec<u8>,
    ) -> std::result::Result<Result<R>, Vec<u8>> {
        let shared = &self.inner.shared;
        if shared.task_timeout.is_some()
            || shared.max_tasks_per_child.is_some()
            || shared.init.is_some()
            || self.inner.jobs.is_closed()
        {
            return Err(args);
        }
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (reply, mut answer) = oneshot::channel();
        let job = Job {
            id,
            entry,
            args,
            fds: Vec::new(),
            deaths: 0,
            reply: reply.into(),
            control: Arc::new(Control::default()),
        };
        let message = match driver::encode_call(&job) {
            Ok(message) => message,
            Err(_) => return Err(job.args),
        };
        let mut job = Some(job);
        let mut chosen = None;
        for place in &shared.lanes {
            let lane = place.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let Some(lane) = lane else { continue };
            let mut held = lane.held();
            if held.closed || !held.jobs.is_empty() {
                continue;
            }
            let job = job.take().expect("placed once");
            *job.control
                .running_on
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Some(lane.aborts.clone());
            held.hold(job, tokio::time::Instant::now());
            held.callers_reading += 1;
            drop(held);
            chosen = Some(lane);
            break;
        }
        let Some(lane) = chosen else {
            return Err(job.expect("not placed").args);
        };
        // However this future ends, the driver reads the answers from then on.
        struct Reading<'a>(&'a lane::Lane);
        impl Drop for Reading<'_> {
            fn drop(&mut self) {
                self.0.held().callers_reading -= 1;
                self.0.wake_driver.notify_one();
            }
        }
        let reading = Reading(&lane);
        lane.dispatched.fetch_add(1, Ordering::AcqRel);
        if let Err(e) = lane.tasks.put_bytes(&message).await {
            let unsent = lane.held().take(id);
            if let Some(lane::Sent { job, .. }) = unsent {
                job.answer(Err(e));
            }
        }
        let soon = crate::notify::spin_until(driver::ANSWER_SPIN, || {
            while let Ok(bytes) = lane.results.try_get_bytes() {
                let _ = driver::take_reply(shared, &lane, &bytes, Vec::new());
            }
            match answer.try_recv() {
                Ok(outcome) => Some(outcome),
                Err(oneshot::error::TryRecvError::Empty) => None,
                Err(oneshot::error::TryRecvError::Closed) => Some(Err(Error::Closed)),
            }
        });
        drop(reading);
        let outcome = match soon {
            Some(outcome) => outcome,
            None => answer.await.unwrap_or(Err(Error::Closed)),
        };
        Ok(outcome.and_then(|(bytes, fds)| crate::handle::decode(&bytes, fds)))
    }

    /// Queues a call of trampoline `entry` with arguments encoded already.
    async fn submit_encoded<R>(
        &self,
        entry: i64,
        encoded: Result<(Vec<u8>, Vec<std::os::fd::OwnedFd>)>,
    ) -> Task<R> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (reply, answer) = oneshot::channel();
        let control = Arc::new(Control::default());
        let task = Task {
            id,
            answer,
            control: control.clone(),
            _result: PhantomData,
        };
        let (bytes, fds) = match encoded {
            Ok(encoded) => encoded,
            Err(e) => {
                control.finished.store(true, Ordering::Release);
                let _ = reply.send(Err(e));
                return task;
            }
        };
        let job = Job {
            id,
            entry,
            args: bytes,
            fds,
            deaths: 0,
            reply: reply.into(),
            control,
        };
        self.queue_job(job).await;
        task
    }

    /// Queues a job for the drivers (answering it `Closed` when the pool takes no more).
    async fn queue_job(&self, job: Job) {
        if let Err(refused) = self.inner.jobs.send(job).await {
            refused.into_inner().answer(Err(Error::Closed));
        }
    }

    /// How many chunks a `map` keeps in flight: enough to keep every worker's queue full (so
    /// even one-item chunks stream), bounded so a long iterator never floods the pool.
    fn window(&self) -> usize {
        2 * self.inner.processes * (self.inner.concurrency + 32)
    }

    /// Takes no more tasks (Python's `close`); what is queued still runs.
    pub fn close(&self) {
        self.inner.jobs.close();
    }

    /// Waits until the pool is closed or terminated and every worker has exited (Python's
    /// `join`). Call [`close`](Self::close) (or [`terminate`](Self::terminate)) first, or it
    /// waits until another handle does.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: the pool goes on; a later `join` waits for what is left.
    pub async fn join(&self) {
        let mut running = self.inner.running.subscribe();
        let _ = running.wait_for(|n| *n == 0).await;
    }

    /// Kills every worker now (Python's `terminate`): unfinished tasks, queued or running, get
    /// [`Error::Closed`]. [`join`](Self::join) afterwards waits for the workers to be reaped.
    pub fn terminate(&self) {
        self.inner.terminate();
    }
}

/// Counts a driver out of [`Inner::running`] when it ends.
struct CountOut(Arc<watch::Sender<usize>>);

impl Drop for CountOut {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}
