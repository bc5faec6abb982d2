//! [`Task`]: the future of one task submitted to a pool (Python's `AsyncResult`), and the job
//! the pool keeps for it until a worker has answered.

use std::future::Future;
use std::marker::PhantomData;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, oneshot};

use crate::{Error, Result};

/// What a worker answered: the encoded result and its fds.
pub(super) type Answer = Result<(Vec<u8>, Vec<OwnedFd>)>;

/// Shared between a [`Task`] and the pool: whether it was aborted, whether it is finished, and
/// which worker's driver holds it (to kill that worker on abort).
#[derive(Debug, Default)]
pub(super) struct Control {
    pub(super) aborted: AtomicBool,
    pub(super) finished: AtomicBool,
    pub(super) running_on: Mutex<Option<mpsc::UnboundedSender<u64>>>,
}

/// A task the pool holds until a worker answered it.
#[derive(Debug)]
pub(super) struct Job {
    pub(super) id: u64,
    pub(super) entry: i64,
    pub(super) args: Vec<u8>,
    /// The arguments' fds; duplicates travel, these stay for a retry.
    pub(super) fds: Vec<OwnedFd>,
    /// Times a worker died while running it.
    pub(super) deaths: u32,
    pub(super) reply: ReplyTo,
    pub(super) control: Arc<Control>,
}

/// Where a job's answer goes.
#[derive(Debug)]
pub(super) enum ReplyTo {
    /// The [`Task`] of `spawn` or `apply`.
    Task(oneshot::Sender<Answer>),
    /// Chunk number `chunk` of a map stream.
    Map { sink: Arc<MapSink>, chunk: u64 },
}

impl From<oneshot::Sender<Answer>> for ReplyTo {
    fn from(sender: oneshot::Sender<Answer>) -> Self {
        ReplyTo::Task(sender)
    }
}

/// Where the answers of one map stream's chunks gather, whoever reads them (the stream
/// itself, or a driver after a worker's death); the stream is woken when one arrives.
#[derive(Debug, Default)]
pub(super) struct MapSink {
    answers: Mutex<Vec<(u64, Answer)>>,
    waker: futures::task::AtomicWaker,
}

impl MapSink {
    fn push(&self, chunk: u64, answer: Answer) {
        self.answers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((chunk, answer));
        self.waker.wake();
    }

    pub(super) fn has_answers(&self) -> bool {
        !self
            .answers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }

    /// Every answer arrived so far, appended to `out`.
    pub(super) fn take_into(&self, out: &mut Vec<(u64, Answer)>) {
        out.append(&mut self.answers.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// Wakes this task when the next answer arrives.
    pub(super) fn register(&self, waker: &std::task::Waker) {
        self.waker.register(waker);
    }
}

impl Job {
    /// Delivers the answer (nobody may be waiting any more: a dropped [`Task`] or stream).
    pub(super) fn answer(self, answer: Answer) {
        self.control.finished.store(true, Ordering::Release);
        match self.reply {
            ReplyTo::Task(sender) => {
                let _ = sender.send(answer);
            }
            ReplyTo::Map { sink, chunk } => sink.push(chunk, answer),
        }
    }

    pub(super) fn is_aborted(&self) -> bool {
        self.control.aborted.load(Ordering::Acquire)
    }
}

/// A task running (or queued) in a [`Pool`](super::Pool): a future of its result (Python's
/// `AsyncResult`).
///
/// Awaiting it gives the task's value: `Ok(R)` — a task's own `Err` is just its value — or an
/// [`Error`] when the task never ran to the end: [`Error::WorkerDied`] (its worker was killed
/// or crashed, and no retry was left), [`Error::Process`] with
/// [`ProcessFailure::Panicked`](crate::ProcessFailure::Panicked) (it panicked; the worker goes
/// on), [`Error::Timeout`] (over the pool's task timeout), or [`Error::Closed`] (aborted, or the
/// pool was terminated first).
///
/// Dropping a `Task` detaches it, as dropping a tokio `JoinHandle` does: it still runs, and its
/// result is thrown away. Use [`abort`](Self::abort) to stop it.
#[must_use = "a task runs anyway; await it for its result, or abort it"]
pub struct Task<R> {
    pub(super) id: u64,
    pub(super) answer: oneshot::Receiver<Answer>,
    pub(super) control: Arc<Control>,
    pub(super) _result: PhantomData<fn() -> R>,
}

impl<R> Task<R> {
    /// Whether the task has finished (its result can be taken without waiting).
    pub fn is_finished(&self) -> bool {
        self.control.finished.load(Ordering::Acquire)
    }

    /// Stops the task: a queued task is dropped before it runs; a running one has its worker
    /// killed (and replaced; other tasks that worker held are run again elsewhere). Awaiting an
    /// aborted task gives [`Error::Closed`] unless it had finished already.
    pub fn abort(&self) {
        self.control.aborted.store(true, Ordering::Release);
        let running_on = self
            .control
            .running_on
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(driver) = running_on.as_ref() {
            let _ = driver.send(self.id);
        }
    }
}

impl<R: DeserializeOwned> Future for Task<R> {
    type Output = Result<R>;

    /// # Cancel safety
    ///
    /// Polling takes nothing until the answer is there; dropping the task detaches it.
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<R>> {
        let answer = match Pin::new(&mut self.answer).poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Ok(answer)) => answer,
            Poll::Ready(Err(_)) => Err(Error::Closed),
        };
        Poll::Ready(answer.and_then(|(bytes, fds)| crate::handle::decode(&bytes, fds)))
    }
}

impl<R> std::fmt::Debug for Task<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Task")
            .field("id", &self.id)
            .field("finished", &self.is_finished())
            .finish_non_exhaustive()
    }
}
