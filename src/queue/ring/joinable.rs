//! JoinableQueue counts: puts are counted by the `tail` commit, `task_done` calls in a word of
//! their own, so the unfinished count is their difference and survives any death.

use std::sync::atomic::Ordering;
use std::time::Instant;

use super::{DONE, Ring, TAIL};
use crate::notify::SAFETY_RECHECK;
use crate::{Error, Result};

impl Ring {
    /// Marks one put item processed (JoinableQueue's `task_done`). Puts are counted by the
    /// `tail` commit itself and calls here in their own word, so the unfinished count is their
    /// difference: a process killed anywhere in a put or a `task_done` leaves it exact.
    pub(crate) fn task_done(&self) -> Result<()> {
        self.seg
            .u32(DONE)
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |done| {
                let put = self.mark(TAIL).items;
                (put.wrapping_sub(done) > 0).then(|| done.wrapping_add(1))
            })
            .map_err(|_| {
                Error::InvalidArgument("task_done() called more times than items were put".into())
            })?;
        self.seg.channel.notify();
        Ok(())
    }

    /// Counts `n` discarded items done, so `join` does not wait for them.
    pub(super) fn count_done(&self, n: u32) {
        self.seg.u32(DONE).fetch_add(n, Ordering::AcqRel);
        self.seg.channel.notify();
    }

    /// Items put but not yet marked done.
    pub(crate) fn unfinished(&self) -> u64 {
        let done = self.seg.u32(DONE).load(Ordering::Acquire);
        u64::from(self.mark(TAIL).items.wrapping_sub(done))
    }

    /// Waits until every put item was marked done. `false` on timeout.
    pub(crate) async fn wait_all_done(&self, deadline: Option<Instant>) -> bool {
        let ready = || (self.unfinished() == 0).then_some(());
        self.seg
            .channel
            .wait(ready, deadline, SAFETY_RECHECK)
            .await
            .is_some()
    }

    pub(crate) fn wait_all_done_blocking(&self, deadline: Option<Instant>) -> bool {
        let ready = || (self.unfinished() == 0).then_some(());
        self.seg
            .channel
            .wait_blocking(ready, deadline, SAFETY_RECHECK)
            .is_some()
    }
}
