//! A worker's lane: its task and result rings and the tasks it holds, shared by its driver and
//! by callers of [`Pool::apply`](super::Pool::apply).
//!
//! The driver owns a worker: it feeds it from the pool's queue and settles every task the
//! worker held when it dies. But a caller of `apply` that finds a worker idle does better
//! alone: it records its task in the lane's `held` (so the driver settles it if the worker
//! dies), puts it straight into the worker's ring, and reads its own answer from the result
//! ring — no hop through the driver task, no wake-up of another thread (the design the
//! manager's local clients use). Whoever reads an answer, caller or driver, settles it through
//! `held`, under its lock.

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::{Mutex, MutexGuard};

use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use super::task::Job;
use crate::Queue;

/// The tasks a worker holds: sent to it (or about to be) and not answered yet.
#[derive(Default)]
pub(super) struct Held {
    pub(super) jobs: HashMap<u64, (Job, Instant)>,
    /// The worker's run ended: nothing more may be added.
    pub(super) closed: bool,
    /// The last answer came quickly: tasks may queue behind the running ones.
    pub(super) quick: bool,
    /// Held tasks whose callers are reading the result ring themselves: the driver need not.
    pub(super) callers_reading: usize,
}

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

impl Lane {
    pub(super) fn held(&self) -> MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }
}
