//! The get paths every flavour calls: one item or a batch, into a buffer, as `Bytes` or handed
//! to a decoder, without a lock when the oldest FIFO item allows it and under the get lock
//! otherwise; putters are woken after anything was taken.

use crate::sync::Held;
use crate::sys::mapping::Appendable;
use crate::{Error, Result};

use super::take_fifo::Take;
use super::{Batch, Compare, HEAD, Ring};

/// The buffer a thread cuts the items it gets as `Bytes` from.
const BYTES_CHUNK: usize = 64 << 10;

/// The outcome of a get: whether it took anything.
pub(super) trait Taken {
    fn any(&self) -> bool;
}

impl Taken for bool {
    fn any(&self) -> bool {
        *self
    }
}

impl Taken for usize {
    fn any(&self) -> bool {
        *self > 0
    }
}

/// Runs `f` on the buffer this thread cuts the items it gets as `Bytes` from (see
/// [`Ring::try_get_bytes_now`]), with room in it.
fn with_chunk<R>(f: impl FnOnce(&mut bytes::BytesMut) -> R) -> R {
    thread_local! {
        static CHUNK: std::cell::RefCell<bytes::BytesMut> =
            std::cell::RefCell::new(bytes::BytesMut::new());
    }
    CHUNK.with(|chunk| {
        // Nothing re-enters here while the buffer is borrowed (no user code runs inside).
        let mut chunk = chunk.borrow_mut();
        if chunk.capacity() == chunk.len() {
            chunk.reserve(BYTES_CHUNK);
        }
        f(&mut chunk)
    })
}

impl Ring {
    /// Throws away everything queued (after [`close_discarding`](Self::close_discarding)),
    /// removing spilled items' segments and counting the items done for a JoinableQueue's
    /// `join`. Best effort and never waiting: whatever a busy lock keeps it from reaching, the
    /// next get finishes (every get on a discarding queue calls this first).
    pub(crate) fn discard_all(&self) {
        let discarded = if self.single_lock() {
            self.discard_ordered()
        } else {
            self.discard_fifo()
        };
        if discarded > 0 {
            if self.limits.joinable {
                self.count_done(discarded);
            }
            self.not_full.notify();
        }
    }

    fn discard_fifo(&self) -> u32 {
        let mut discarded = 0u32;
        loop {
            let mut batch = Batch::default();
            match self.take_many_unlocked(1024, &mut batch) {
                Some(Ok(0)) | Some(Err(_)) => return discarded,
                Some(Ok(n)) => discarded = discarded.wrapping_add(n as u32),
                // A spilled item: under the get lock, if it is free.
                None => {
                    let Some(Ok(held)) = self.lock_now(self.get_lock()) else {
                        return discarded;
                    };
                    let mut item = Vec::new();
                    let took = self.take_spilled(&mut item);
                    held.release_fenced();
                    match took {
                        Ok(Take::Taken(n)) => discarded = discarded.wrapping_add(n as u32),
                        _ => return discarded,
                    }
                }
            }
        }
    }

    fn discard_ordered(&self) -> u32 {
        let Some(Ok(held)) = self.lock_now(self.get_lock()) else {
            return 0;
        };
        let discarded = match self.check_positions() {
            Ok((head, tail)) => {
                // One commit drops every record; LIFO and priority rings hold no spills.
                self.commit(HEAD, tail);
                tail.items.wrapping_sub(head.items)
            }
            Err(_) => 0,
        };
        held.release_fenced();
        discarded
    }

    /// One attempt to take up to `max` items (waiting only for the lock, when one is needed);
    /// an empty batch when there are none. Wakes putters if anything was taken.
    pub(crate) async fn try_get_many(&self, max: usize, compare: Option<Compare>) -> Result<Batch> {
        if self.is_discarding() {
            self.discard_all();
            return Err(Error::Closed);
        }
        let mut batch = Batch::default();
        let taken = match self.take_many_unlocked(max, &mut batch) {
            Some(taken) => self.after_get(taken),
            None => {
                let held = self.get_locked().await?;
                let taken = self.take_many_locked(max, compare, &mut batch);
                self.after_get_locked(held, taken)
            }
        };
        // Items taken before an error are still returned; the error comes back next time.
        match taken {
            Err(e) if batch.is_empty() => Err(e),
            _ => Ok(batch),
        }
    }

    /// Up to `max` items with the get lock held.
    fn take_many_locked(
        &self,
        max: usize,
        compare: Option<Compare>,
        batch: &mut Batch,
    ) -> Result<usize> {
        if self.single_lock() {
            return self.take_chosen_records(max, compare, batch);
        }
        let mut item = Vec::new();
        let took = self.take_spilled(&mut item)?;
        if let Take::Taken(_) = took {
            batch.push(&item);
        }
        Ok(took.count())
    }

    /// One item into `out` with the get lock held.
    fn take_one_locked(&self, compare: Option<Compare>, out: &mut impl Appendable) -> Result<bool> {
        if !self.single_lock() {
            return self.take_spilled(out).map(|took| took.count() > 0);
        }
        let mut batch = Batch::default();
        self.take_chosen_records(1, compare, &mut batch)?;
        match batch.iter().next() {
            Some(item) => {
                out.append(item);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Wakes putters after a get without the lock took something.
    fn after_get<T: Taken>(&self, taken: Result<T>) -> Result<T> {
        if taken.as_ref().is_ok_and(Taken::any) {
            self.not_full.notify();
        }
        taken
    }

    /// Releases the get lock and wakes putters if something was taken.
    fn after_get_locked<T: Taken>(&self, held: Held<'_>, taken: Result<T>) -> Result<T> {
        held.release_fenced();
        if taken.as_ref().is_ok_and(Taken::any) {
            self.not_full.notify_after_fence();
        }
        taken
    }

    /// One get attempt into `out` that never waits: `None` when the lock is needed and busy.
    fn get_one_now(
        &self,
        compare: Option<Compare>,
        out: &mut impl Appendable,
    ) -> Option<Result<bool>> {
        if self.is_discarding() {
            self.discard_all();
            return Some(Err(Error::Closed));
        }
        if let Some(taken) = self.take_one_unlocked(out) {
            return Some(self.after_get(taken));
        }
        Some(self.lock_now(self.get_lock())?.and_then(|held| {
            let taken = self.take_one_locked(compare, out);
            self.after_get_locked(held, taken)
        }))
    }

    /// One get attempt into `out` that waits for the lock if one is needed.
    async fn get_one(&self, compare: Option<Compare>, out: &mut impl Appendable) -> Result<bool> {
        if self.is_discarding() {
            self.discard_all();
            return Err(Error::Closed);
        }
        if let Some(taken) = self.take_one_unlocked(out) {
            return self.after_get(taken);
        }
        let held = self.get_locked().await?;
        let taken = self.take_one_locked(compare, out);
        self.after_get_locked(held, taken)
    }

    /// [`get_one`](Self::get_one) for threads.
    fn get_one_blocking(
        &self,
        compare: Option<Compare>,
        out: &mut impl Appendable,
    ) -> Result<bool> {
        if self.is_discarding() {
            self.discard_all();
            return Err(Error::Closed);
        }
        if let Some(taken) = self.take_one_unlocked(out) {
            return self.after_get(taken);
        }
        let held = self.get_locked_blocking()?;
        let taken = self.take_one_locked(compare, out);
        self.after_get_locked(held, taken)
    }

    /// One get attempt, the item in a buffer of its own; wakes putters on success.
    pub(crate) fn try_get_blocking(&self, compare: Option<Compare>) -> Result<Option<Vec<u8>>> {
        let mut item = Vec::new();
        Ok(self.get_one_blocking(compare, &mut item)?.then_some(item))
    }

    /// One get attempt, the item as [`Bytes`](bytes::Bytes); wakes putters on success. (The
    /// path taken when [`try_get_bytes_now`](Self::try_get_bytes_now) found the lock busy.)
    pub(crate) async fn try_get_bytes(
        &self,
        compare: Option<Compare>,
    ) -> Result<Option<bytes::Bytes>> {
        let mut item = Vec::new();
        Ok(self
            .get_one(compare, &mut item)
            .await?
            .then(|| bytes::Bytes::from(item)))
    }

    /// One get attempt that never waits, the item as `Bytes` cut from a buffer this thread
    /// keeps for the purpose, the way a tokio codec cuts frames from its read buffer: while
    /// items are dropped about as fast as they come, the buffer is reused and a get allocates
    /// nothing. A kept item keeps its buffer ([`BYTES_CHUNK`]) alive. `None` when the lock is
    /// needed and busy.
    pub(crate) fn try_get_bytes_now(
        &self,
        compare: Option<Compare>,
    ) -> Option<Result<Option<bytes::Bytes>>> {
        with_chunk(|chunk| {
            let taken = self.get_one_now(compare, chunk)?;
            let item = chunk.split().freeze();
            Some(taken.map(|taken| taken.then_some(item)))
        })
    }

    pub(crate) fn try_get_bytes_blocking(
        &self,
        compare: Option<Compare>,
    ) -> Result<Option<bytes::Bytes>> {
        with_chunk(|chunk| {
            let taken = self.get_one_blocking(compare, chunk);
            let item = chunk.split().freeze();
            taken.map(|taken| taken.then_some(item))
        })
    }

    /// One get attempt that hands the item's bytes to `f` (after any lock is released); waits
    /// for the lock if one is needed. (The path taken when
    /// [`try_get_with_now`](Self::try_get_with_now) found the lock busy.)
    pub(crate) async fn try_get_with<R>(
        &self,
        compare: Option<Compare>,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<Option<R>> {
        let mut item = Vec::new();
        Ok(self.get_one(compare, &mut item).await?.then(|| f(&item)))
    }

    /// One get attempt that never waits and hands the item's bytes to `f` from a buffer this
    /// thread reuses, so a typed get allocates only what `f` builds. `None` when the lock is
    /// needed and busy.
    pub(crate) fn try_get_with_now<R>(
        &self,
        compare: Option<Compare>,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Option<Result<Option<R>>> {
        thread_local! {
            static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        SCRATCH.with(|scratch| {
            // A decoder that gets from a queue itself finds the buffer taken: use a fresh one.
            let mut fresh = Vec::new();
            let mut borrowed = scratch.try_borrow_mut();
            let buf = borrowed.as_deref_mut().unwrap_or(&mut fresh);
            buf.clear();
            let taken = self.get_one_now(compare, buf)?;
            let result = taken.map(|taken| taken.then(|| f(buf)));
            // Do not keep one huge item's memory for the rest of the thread's life.
            if buf.capacity() > 64 << 10 {
                *buf = Vec::new();
            }
            Some(result)
        })
    }
}
