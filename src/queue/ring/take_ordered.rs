//! LIFO and priority taking, under the single lock: choose a live record anywhere in the ring,
//! flag it taken, count it out, and give back the space of taken records at either end.

use std::sync::atomic::Ordering;

use super::{Batch, Compare, HEAD, Mark, Order, RECORD_HEADER, Ring, TAIL, TAKEN};
use crate::{Error, Result};

/// A live record found by a walk.
pub(super) struct Found {
    pub(super) pos: u32,
    pub(super) rec: usize,
    pub(super) payload: Vec<u8>,
}

impl Ring {
    /// With the lock held: every live record, oldest first.
    pub(super) fn live_records(&self, head: Mark, tail: Mark) -> Result<Vec<Found>> {
        let mut found = Vec::new();
        let mut pos = head.pos;
        while pos != tail.pos {
            let (len, rec, _) = self.record_at(pos, tail.pos)?;
            if self.flags(pos).load(Ordering::Acquire) & TAKEN == 0 {
                let payload = self.read_vec(self.advance(pos, RECORD_HEADER), len)?;
                found.push(Found { pos, rec, payload });
            }
            pos = self.advance(pos, rec);
        }
        Ok(found)
    }

    /// With the single lock of a LIFO or priority queue held: moves up to `max` records,
    /// chosen by the queue's order, into `batch`. `Closed` when there are none and the queue
    /// is closed.
    pub(super) fn take_chosen_records(
        &self,
        max: usize,
        compare: Option<Compare>,
        batch: &mut Batch,
    ) -> Result<usize> {
        let mut n = 0;
        while n < max {
            let (head, tail) = self.check_positions()?;
            // Under the lock, after any recovery, a ring holds no records exactly when it
            // counts no items (a taker trims the taken records it leaves at either end).
            if (head.items == tail.items) != (head.pos == tail.pos) {
                return Err(Error::Corrupt(format!(
                    "queue counts {} items between positions {} and {}",
                    tail.items.wrapping_sub(head.items),
                    head.pos,
                    tail.pos
                )));
            }
            if head.items == tail.items {
                break;
            }
            let payload = self.take_chosen(head, tail, self.limits.order, compare)?;
            batch.push(&payload);
            n += 1;
        }
        if n == 0 && self.is_closed() {
            return Err(Error::Closed);
        }
        Ok(n)
    }

    /// The LIFO and priority get, under the single lock: pick a live record, flag it `TAKEN`
    /// (one aligned store, so a process killed here leaves it either taken or not), count it
    /// out, and give back the space of flagged records at either end.
    fn take_chosen(
        &self,
        head: Mark,
        tail: Mark,
        order: Order,
        compare: Option<Compare>,
    ) -> Result<Vec<u8>> {
        let mut live = self.live_records(head, tail)?;
        let counted = tail.items.wrapping_sub(head.items) as usize;
        if live.len() != counted {
            return Err(Error::Corrupt(format!(
                "queue counts {counted} items but holds {} records",
                live.len()
            )));
        }
        let pick = match (order, compare) {
            (Order::Lifo, _) => live.len() - 1,
            (_, Some(compare)) => {
                let mut best = 0;
                for i in 1..live.len() {
                    if compare(&live[i].payload, &live[best].payload)? == std::cmp::Ordering::Less {
                        best = i;
                    }
                }
                best
            }
            _ => 0,
        };
        let chosen = live.remove(pick);
        self.flags(chosen.pos).fetch_or(TAKEN, Ordering::AcqRel);
        // Space before the first live record and after the last one is free again. `head`
        // is committed first, so the count never exceeds what the ring holds.
        let (start, end) = match (live.first(), live.last()) {
            (Some(first), Some(last)) => (first.pos, self.advance(last.pos, last.rec)),
            _ => (head.pos, head.pos),
        };
        self.commit(
            HEAD,
            Mark {
                items: head.items.wrapping_add(1),
                pos: start,
            },
        );
        if end != tail.pos {
            self.commit(TAIL, Mark { pos: end, ..tail });
        }
        Ok(chosen.payload)
    }
}
