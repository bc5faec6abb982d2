//! FIFO taking without a lock: copy the oldest record(s) out, then claim them with one
//! compare-and-swap of `head`; a getter that lost the race drops its copy and tries again.

use std::sync::atomic::Ordering;

use super::{Batch, HEAD, Mark, RECORD_HEADER, Ring, SPILLED, record_size};
use crate::sys::mapping::Appendable;
use crate::{Error, Result};

/// Most bytes a FIFO batch copies out of the ring at once.
const BULK: usize = 256 << 10;

/// What a get attempt found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Take {
    /// Took this many items.
    Taken(usize),
    /// Nothing is queued.
    Empty,
    /// The oldest item is spilled, and is taken under the get lock.
    Spilled,
}

impl Take {
    pub(super) fn count(self) -> usize {
        match self {
            Take::Taken(n) => n,
            _ => 0,
        }
    }
}

impl Ring {
    /// A FIFO getter's commit: moves `head` from `from` to `to` unless another getter moved it
    /// first. Everything this getter copied before is then known to be what was committed there:
    /// nobody can overwrite bytes before the real `head`. (The one way to fool it: a getter
    /// paused between its copy and this exchange for exactly a multiple of 2^32 items, which
    /// brings the word back to the same count and position — minutes of traffic at full
    /// speed, within one pause.)
    pub(super) fn commit_from(&self, from: Mark, to: Mark) -> bool {
        self.seg
            .u64(HEAD)
            .compare_exchange(from.pack(), to.pack(), Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }

    /// What nothing is queued means for a get: `Closed` once the queue is closed.
    fn nothing_queued<T>(&self, nothing: T) -> Result<T> {
        if self.is_closed() {
            Err(Error::Closed)
        } else {
            Ok(nothing)
        }
    }

    /// The FIFO get of one item, without any lock: copy the oldest record out, then commit with
    /// a compare-and-swap of `head`. A getter that loses the race drops its copy (the bytes may
    /// have been overwritten since) and tries again; a getter killed anywhere has changed
    /// nothing, or has taken its item whole. Something that looks corrupt only counts as such
    /// if `head` held still while it was read.
    ///
    /// `Spilled` when the oldest item is spilled: those are taken under the get lock (see
    /// [`take_spilled`](Self::take_spilled)), so the lock-free getters never take one.
    pub(super) fn take_first(&self, out: &mut impl Appendable) -> Result<Take> {
        let base = out.filled();
        loop {
            let (head, tail) = self.take_view()?;
            if head.pos == tail.pos {
                return self.nothing_queued(Take::Empty);
            }
            let copied = self
                .record_at(head.pos, tail.pos)
                .and_then(|(len, rec, flags)| {
                    if flags & SPILLED != 0 {
                        return Ok(None);
                    }
                    self.read_append(self.advance(head.pos, RECORD_HEADER), len, out)?;
                    Ok(Some(rec))
                });
            match copied {
                Ok(None) => return Ok(Take::Spilled),
                Ok(Some(rec)) => {
                    let next = Mark {
                        items: head.items.wrapping_add(1),
                        pos: self.advance(head.pos, rec),
                    };
                    if self.commit_from(head, next) {
                        return Ok(Take::Taken(1));
                    }
                }
                Err(e) if !self.head_moved(head) => {
                    out.truncate_to(base);
                    return Err(e);
                }
                Err(_) => {}
            }
            out.truncate_to(base);
        }
    }

    /// The FIFO get of up to `max` items, without any lock, as [`take_first`](Self::take_first):
    /// copy the committed bytes (up to [`BULK`], and about 256 per wanted item) out with one or
    /// two copies, find and check the records in the private copy, and commit them all with
    /// one compare-and-swap. A batch stops before a spilled record or one that was not copied
    /// whole; when the oldest record is such a one, it is taken on its own.
    fn take_oldest(&self, max: usize, batch: &mut Batch) -> Result<Take> {
        let mark = batch.mark();
        loop {
            let (head, tail) = self.take_view()?;
            if head.pos == tail.pos {
                return self.nothing_queued(Take::Empty);
            }
            match self.copy_records(max, head, tail, batch) {
                Ok(end) if end == head => {
                    batch.reset(mark);
                    let mut item = Vec::new();
                    let took = self.take_first(&mut item)?;
                    if let Take::Taken(_) = took {
                        batch.push(&item);
                    }
                    return Ok(took);
                }
                Ok(end) => {
                    if self.commit_from(head, end) {
                        return Ok(Take::Taken(end.items.wrapping_sub(head.items) as usize));
                    }
                }
                Err(e) if !self.head_moved(head) => {
                    batch.reset(mark);
                    return Err(e);
                }
                Err(_) => {}
            }
            batch.reset(mark);
        }
    }

    /// Copies the records from `head` on (at most `max`) into `batch` and returns where they
    /// end; `head` itself when the first one is spilled or larger than the copy window.
    fn copy_records(&self, max: usize, head: Mark, tail: Mark, batch: &mut Batch) -> Result<Mark> {
        // About 256 bytes per wanted item: a small batch does not copy the whole ring.
        let window = (self.distance(head.pos, tail.pos) as usize)
            .min(BULK)
            .min(max.saturating_mul(256));
        let base = batch.bytes.len();
        self.read_append(head.pos, window, &mut batch.bytes)?;
        let (mut end, mut off) = (head, 0);
        while end.items.wrapping_sub(head.items) < max as u32 && end.pos != tail.pos {
            let Some(header) = batch.bytes.get(base + off..base + off + RECORD_HEADER) else {
                break;
            };
            let word = |at: usize| u32::from_le_bytes(header[at..at + 4].try_into().expect("4"));
            let (len, flags) = (word(0) as usize, word(4));
            let rec = record_size(len)
                .filter(|&rec| {
                    len <= self.limits.max_message && rec as u64 <= self.distance(end.pos, tail.pos)
                })
                .ok_or_else(|| {
                    Error::Corrupt(format!(
                        "queue record of {len} bytes at {} does not fit before {}",
                        end.pos, tail.pos
                    ))
                })?;
            if flags & SPILLED != 0 || off + rec > window {
                break;
            }
            let payload = base + off + RECORD_HEADER;
            batch.add(payload..payload + len);
            off += rec;
            end = Mark {
                items: end.items.wrapping_add(1),
                pos: self.advance(end.pos, rec),
            };
        }
        // Keep the copy only up to the last item taken.
        batch.bytes.truncate(base + off);
        Ok(end)
    }

    /// Up to `max` items without any lock (FIFO); `None` when the lock is needed.
    pub(super) fn take_many_unlocked(
        &self,
        max: usize,
        batch: &mut Batch,
    ) -> Option<Result<usize>> {
        if self.single_lock() {
            return None;
        }
        match self.take_oldest(max, batch) {
            Ok(Take::Spilled) => None,
            other => Some(other.map(Take::count)),
        }
    }

    /// One item into `out` without any lock (FIFO); `None` when the lock is needed.
    pub(super) fn take_one_unlocked(&self, out: &mut impl Appendable) -> Option<Result<bool>> {
        if self.single_lock() {
            return None;
        }
        match self.take_first(out) {
            Ok(Take::Spilled) => None,
            other => Some(other.map(|took| took.count() > 0)),
        }
    }
}
