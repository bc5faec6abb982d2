//! Trusting nothing read from the ring: `head` and `tail` are checked before use (read at one
//! instant, since FIFO getters move `head` without a lock), and after an owner died inside a
//! lock the ring is checked and, for LIFO and priority queues, recounted.

use std::sync::atomic::Ordering;

use super::{HEAD, HEAD_SEEN, Mark, RECORD_HEADER, Ring, TAIL, TAIL_SEEN, TAKEN};
use crate::{Error, Result};

impl Ring {
    /// `head` and `tail` as they were at one instant, checked. (In a FIFO queue getters move
    /// `head` without a lock: positions that disagree only count as corrupt if `head` held
    /// still while they were read.)
    pub(super) fn check_positions(&self) -> Result<(Mark, Mark)> {
        loop {
            let (head, tail) = (self.mark(HEAD), self.mark(TAIL));
            match self.validate(head, tail) {
                Ok(()) => return Ok((head, tail)),
                Err(e) if !self.head_moved(head) => return Err(e),
                Err(_) => {}
            }
        }
    }

    /// Checks two marks: both inside the position space, 8-aligned, no more than the capacity
    /// apart, and no more items between them than records fit.
    pub(super) fn validate(&self, head: Mark, tail: Mark) -> Result<()> {
        let ok = |m: Mark| m.pos < self.wrap() && m.pos.is_multiple_of(8);
        let used = self.distance(head.pos, tail.pos);
        let items = tail.items.wrapping_sub(head.items);
        if !ok(head)
            || !ok(tail)
            || used > self.limits.capacity as u64
            || u64::from(items) > used / RECORD_HEADER as u64
        {
            return Err(Error::Corrupt(format!(
                "queue positions head {head:?}, tail {tail:?} are impossible"
            )));
        }
        Ok(())
    }

    /// For a putter holding the put lock: `tail`, and a `head` no newer than the real one that
    /// leaves room for `rec` bytes if the real one does. A FIFO putter reads the getters' line
    /// only when the `head` it saw last says full, as single-producer rings do; an older `head`
    /// only ever makes the ring look fuller.
    pub(super) fn put_view(&self, rec: u64) -> Result<(Mark, Mark)> {
        if self.single_lock() {
            return self.check_positions();
        }
        let tail = self.mark(TAIL);
        let seen = self.mark(HEAD_SEEN);
        if self.validate(seen, tail).is_ok() && self.room_for(seen, tail, rec) {
            return Ok((seen, tail));
        }
        let head = self.mark(HEAD);
        self.validate(head, tail)?;
        self.seg
            .u64(HEAD_SEEN)
            .store(head.pack(), Ordering::Relaxed);
        Ok((head, tail))
    }

    /// For a getter: `head`, and a `tail` no newer than the real one that is past `head` if the
    /// real one is (an older `tail` only makes the ring look emptier), read at one instant.
    pub(super) fn take_view(&self) -> Result<(Mark, Mark)> {
        if self.single_lock() {
            return self.check_positions();
        }
        loop {
            let head = self.mark(HEAD);
            let seen = self.mark(TAIL_SEEN);
            if seen.pos != head.pos && self.validate(head, seen).is_ok() {
                return Ok((head, seen));
            }
            let tail = self.mark(TAIL);
            match self.validate(head, tail) {
                Ok(()) => {
                    self.seg
                        .u64(TAIL_SEEN)
                        .store(tail.pack(), Ordering::Relaxed);
                    return Ok((head, tail));
                }
                // Positions that disagree only count as corrupt if they were read at one
                // instant, i.e. `head` held still meanwhile (getters move it without a lock).
                Err(e) if !self.head_moved(head) => return Err(e),
                Err(_) => {}
            }
        }
    }

    /// After an owner died inside a lock. In a FIFO queue every change is one commit store, so
    /// the ring is whole either way and only needs checking. In a LIFO or priority queue a take
    /// flags its record before committing the count: walk every committed record, validate it
    /// and recount. The dead owner's uncommitted record is simply not there.
    pub(super) fn recover(&self) -> Result<()> {
        let (head, tail) = self.check_positions()?;
        if !self.single_lock() {
            return Ok(());
        }
        let mut pos = head.pos;
        let mut live = 0u32;
        while pos != tail.pos {
            let (_, rec, _) = self.record_at(pos, tail.pos)?;
            if self.flags(pos).load(Ordering::Acquire) & TAKEN == 0 {
                live += 1;
            }
            pos = self.advance(pos, rec);
        }
        self.commit(
            HEAD,
            Mark {
                items: tail.items.wrapping_sub(live),
                pos: head.pos,
            },
        );
        if live == 0 {
            // Only taken records are left (their taker died before trimming them): give their
            // space back, as the take would have.
            self.commit(
                TAIL,
                Mark {
                    pos: head.pos,
                    ..tail
                },
            );
        }
        Ok(())
    }

    /// Whether `head` moved since it read `seen` (another getter committed meanwhile).
    pub(super) fn head_moved(&self, seen: Mark) -> bool {
        self.mark(HEAD) != seen
    }
}
