//! Where things are in the ring: the commit words (`head`, `tail`) as [`Mark`]s, position
//! arithmetic modulo twice the capacity, room checks, and reading and writing record bytes
//! across the wrap.

use std::sync::atomic::Ordering;

use super::{HEAD, Order, RECORD_HEADER, RING, Ring, TAIL};
use crate::sys::mapping::Appendable;
use crate::{Error, Result};

/// One side's commit word: how many items that side has moved (wrapping) and where it is in the
/// ring (a byte position modulo twice the capacity, so a full ring and an empty one differ).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Mark {
    pub(super) items: u32,
    pub(super) pos: u32,
}

impl Mark {
    fn unpack(word: u64) -> Mark {
        Mark {
            items: (word >> 32) as u32,
            pos: word as u32,
        }
    }

    pub(super) fn pack(self) -> u64 {
        u64::from(self.items) << 32 | u64::from(self.pos)
    }
}

/// The bytes a record of `len` payload bytes takes.
pub(super) fn record_size(len: usize) -> Option<usize> {
    len.checked_next_multiple_of(8)?.checked_add(RECORD_HEADER)
}

/// `n` modulo `m`, cheaply for the common case `n < 2m`.
#[inline]
fn reduce(n: u64, m: u64) -> u64 {
    if n < m {
        n
    } else if n - m < m {
        n - m
    } else {
        n % m
    }
}

impl Ring {
    pub(super) fn mark(&self, o: usize) -> Mark {
        Mark::unpack(self.seg.u64(o).load(Ordering::Acquire))
    }

    pub(super) fn commit(&self, o: usize, mark: Mark) {
        self.seg.u64(o).store(mark.pack(), Ordering::Release);
    }

    /// `head` and `tail` as they both were at one instant (re-read until `head` holds still).
    pub(super) fn snapshot(&self) -> (Mark, Mark) {
        loop {
            let head = self.mark(HEAD);
            let tail = self.mark(TAIL);
            if self.mark(HEAD) == head {
                return (head, tail);
            }
        }
    }

    /// Positions run modulo twice the capacity.
    pub(super) fn wrap(&self) -> u32 {
        2 * self.limits.capacity as u32
    }

    /// `pos` moved on by `by` bytes. Positions and steps are below the wrap in every valid ring,
    /// so one subtraction replaces the division (a division on every put and get costs more
    /// than the rest of the arithmetic together); anything larger still wraps correctly.
    #[inline]
    pub(super) fn advance(&self, pos: u32, by: usize) -> u32 {
        reduce(u64::from(pos) + by as u64, u64::from(self.wrap())) as u32
    }

    /// Bytes from `from` to `to` going forward.
    #[inline]
    pub(super) fn distance(&self, from: u32, to: u32) -> u64 {
        let wrap = u64::from(self.wrap());
        reduce((u64::from(to) + wrap).wrapping_sub(u64::from(from)), wrap)
    }

    /// Where position `pos` is in the ring's bytes.
    #[inline]
    fn offset(&self, pos: u32) -> usize {
        reduce(u64::from(pos), self.limits.capacity as u64) as usize
    }

    /// Whether `rec` more bytes and one more item fit between `head` and `tail`.
    pub(super) fn room_for(&self, head: Mark, tail: Mark, rec: u64) -> bool {
        let items = tail.items.wrapping_sub(head.items);
        let items_ok = self.limits.max_items == 0 || u64::from(items) < self.limits.max_items;
        let used = self.distance(head.pos, tail.pos);
        items_ok && used.saturating_add(rec) <= self.limits.capacity as u64
    }

    /// Whether a record of `len` bytes would fit now (a hint read without the lock).
    pub(super) fn has_room(&self, len: usize) -> bool {
        let (head, tail) = self.snapshot();
        let rec = record_size(len).unwrap_or(usize::MAX) as u64;
        self.room_for(head, tail, rec)
    }

    pub(crate) fn is_full(&self) -> bool {
        !self.has_room(0)
    }

    /// Refuses a message that can never be queued: over the maximum message size, or (for
    /// LIFO and priority queues, which keep every item in the ring) larger than the ring.
    pub(crate) fn check_size(&self, len: usize) -> Result<()> {
        let max = if self.limits.order == Order::Fifo {
            self.limits.max_message
        } else {
            self.limits
                .max_message
                .min(self.limits.capacity - RECORD_HEADER)
        };
        if len > max {
            return Err(Error::TooLarge { size: len, max });
        }
        Ok(())
    }

    fn write_wrapped(&self, pos: u32, data: &[u8]) -> Result<()> {
        let cap = self.limits.capacity;
        let off = self.offset(pos);
        let first = data.len().min(cap - off);
        self.seg.write(RING + off, &data[..first])?;
        if first < data.len() {
            self.seg.write(RING, &data[first..])?;
        }
        Ok(())
    }

    /// A private copy of `len` bytes at ring position `pos`.
    pub(super) fn read_vec(&self, pos: u32, len: usize) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(len);
        self.read_append(pos, len, &mut out)?;
        Ok(out)
    }

    /// Appends `len` bytes at ring position `pos` to `out`.
    pub(super) fn read_append(
        &self,
        pos: u32,
        len: usize,
        out: &mut impl Appendable,
    ) -> Result<()> {
        let cap = self.limits.capacity;
        let off = self.offset(pos);
        let first = len.min(cap - off);
        self.seg.read_append(RING + off, first, out)?;
        if first < len {
            self.seg.read_append(RING, len - first, out)?;
        }
        Ok(())
    }

    /// The flags word of the record at `pos` (8-aligned, so never split by the wrap).
    pub(super) fn flags(&self, pos: u32) -> &std::sync::atomic::AtomicU32 {
        self.seg.u32(RING + self.offset(pos) + 4)
    }

    /// The header word of the record at `pos`, a position checked to be 8-aligned and inside
    /// the ring (so the header is never split by the wrap): `len | flags << 32`, the byte layout
    /// of `len u32 | flags u32` on this little-endian platform.
    pub(super) fn header(&self, pos: u32) -> &std::sync::atomic::AtomicU64 {
        self.seg.u64(RING + self.offset(pos))
    }

    /// Reads and validates the record header at `pos`, given the committed `tail`: the payload
    /// length, the record's size and its flags.
    pub(super) fn record_at(&self, pos: u32, tail: u32) -> Result<(usize, usize, u32)> {
        let header = self.header(pos).load(Ordering::Relaxed);
        let (len, flags) = (header as u32 as usize, (header >> 32) as u32);
        match record_size(len) {
            Some(rec)
                if len <= self.limits.max_message && rec as u64 <= self.distance(pos, tail) =>
            {
                Ok((len, rec, flags))
            }
            _ => Err(Error::Corrupt(format!(
                "queue record of {len} bytes at {pos} does not fit before {tail}"
            ))),
        }
    }

    /// Writes a record (header and payload) at `pos`, which must be a checked position.
    pub(super) fn write_record(&self, pos: u32, payload: &[u8], flags: u32) -> Result<()> {
        let header = u64::from(payload.len() as u32) | u64::from(flags) << 32;
        self.header(pos).store(header, Ordering::Relaxed);
        self.write_wrapped(self.advance(pos, RECORD_HEADER), payload)
    }
}
