//! The engine under every queue flavour: a byte ring in a shared segment, guarded by robust
//! [`Lock`]s, with one wait channel for "not empty" and one for "not full".
//!
//! ```text
//! record = len u32 | flags u32 | payload, padded to 8 bytes
//! tail   = items put (u32, wrapping) | byte position (u32, modulo 2 × capacity)
//! head   = items taken               | byte position
//! ```
//!
//! A put writes the whole record first and then commits it with one store of `tail`; a get copies
//! the record out and then commits by moving `head`. Each commit word carries its side's item
//! count next to its position, so one atomic write moves both and the length (`tail.items -
//! head.items`) is exact at every instant. A process killed in the middle leaves either the whole
//! record or none of it.
//!
//! In a FIFO queue putters take a put lock and write only past `tail`. Getters take no lock at
//! all: a getter copies the oldest record(s) out and commits with a compare-and-swap of `head`;
//! if another getter moved `head` first, the bytes copied may have been overwritten since, so
//! it drops its copy and tries again (only a spilled item, whose segment must be removed exactly
//! once, is taken under a get lock). Putters and getters never wait for each other, and the
//! words each side writes sit on their own cache lines. LIFO and priority queues take items
//! from anywhere, so every operation there takes the one lock; a record taken from the middle
//! is flagged `TAKEN` (one aligned store), and the next locker after a death re-walks the ring
//! and recomputes the count.
//!
//! Everything read from the ring is validated against process-local limits; a ring that fails
//! validation yields [`Error::Corrupt`], never a panic or an out-of-bounds read.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::handle::{FdIndex, FdSink, FdSource};
use crate::notify::{CHANNEL_SIZE, SAFETY_RECHECK, WaitChannel};
use crate::shm::header::Kind;
use crate::sync::segment::{Segment, SegmentWire};
use crate::sync::{Held, HoldError, Lock, LockError, LockGuard};
use crate::sys::eventfd;
use crate::sys::mapping::Appendable;
use crate::{Error, Result};

// State layout (offsets after the "not empty" channel, which fills the first 16 bytes). Words
// written on every operation get a cache line each, so a putter and a getter in two processes
// do not pull one line back and forth.
const NOT_FULL: usize = 0; // a second wait channel
const CAPACITY: usize = 16; // u64 ring bytes (fixed)
const MAX_ITEMS: usize = 24; // u64, 0 = only the bytes limit (fixed)
const MAX_MESSAGE: usize = 32; // u64 (fixed)
const ORDER: usize = 40; // u32: which record a get takes (fixed)
const JOINABLE: usize = 44; // u32 (fixed)
const QUEUE_ID: usize = 48; // u64, random, names this queue's spill segments (fixed)
const CLOSED: usize = 112; // u32, its own line: read by every put
const TAIL: usize = 176; // u64 commit word of the putters, its own line
const HEAD_SEEN: usize = 184; // u64: `head` as the putters last read it (FIFO)
const HEAD: usize = 240; // u64 commit word of the getters, its own line
const TAIL_SEEN: usize = 248; // u64: `tail` as the getters last read it (FIFO)
const DONE: usize = 304; // u32: task_done calls (JoinableQueue), wrapping like the item counts
const RING: usize = 368; // 64-byte aligned in the mapping (the state starts 16 bytes in)

/// The buffer a thread cuts the items it gets as `Bytes` from.
const BYTES_CHUNK: usize = 64 << 10;

/// Most bytes a FIFO batch copies out of the ring at once.
const BULK: usize = 256 << 10;

/// The largest ring: positions run modulo twice the capacity in 32 bits.
const MAX_CAPACITY: usize = 1 << 30;

/// A record's flags word: set once a get took it out of the middle of the ring.
const TAKEN: u32 = 1;
/// A record's flags word: the payload is the name of a spill segment holding the item.
const SPILLED: u32 = 2;

const RECORD_HEADER: usize = 8;

/// Sizes and behaviour a ring is made with.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) capacity: usize,
    pub(crate) max_items: u64,
    pub(crate) max_message: usize,
    pub(crate) order: Order,
    pub(crate) joinable: bool,
}

/// Which item a get takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Order {
    /// The oldest.
    Fifo = 0,
    /// The newest.
    Lifo = 1,
    /// The smallest, by a comparison the typed layer supplies (oldest among equals).
    Priority = 2,
}

impl Order {
    fn from_raw(raw: u32) -> Option<Order> {
        match raw {
            0 => Some(Order::Fifo),
            1 => Some(Order::Lifo),
            2 => Some(Order::Priority),
            _ => None,
        }
    }
}

/// Orders two serialised items (for priority queues).
pub(crate) type Compare = fn(&[u8], &[u8]) -> Result<std::cmp::Ordering>;

/// What a put stores: the item, or the name of the segment it was spilled to. A spilled record
/// that is dropped without being queued (a failed or cancelled put) removes its segment.
#[derive(Debug)]
pub(crate) struct Record {
    pub(crate) payload: Vec<u8>,
    spilled: bool,
    queued: bool,
}

impl Drop for Record {
    fn drop(&mut self) {
        if self.spilled
            && !self.queued
            && let Ok(name) = std::str::from_utf8(&self.payload)
        {
            let _ = crate::sys::shm_open::unlink(name);
        }
    }
}

/// Items taken under one lock acquisition, copied out back to back into one buffer.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    bytes: Vec<u8>,
    /// How many items `bytes` holds.
    count: usize,
    /// Where the first item is (kept apart so a batch of one allocates nothing more).
    first: std::ops::Range<usize>,
    /// Where each later item is.
    later: Vec<std::ops::Range<usize>>,
}

impl Batch {
    fn push(&mut self, item: &[u8]) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(item);
        self.add(start..self.bytes.len());
    }

    /// Records `range` of `bytes` as the next item.
    fn add(&mut self, range: std::ops::Range<usize>) {
        if self.count == 0 {
            self.first = range;
        } else {
            self.later.push(range);
        }
        self.count += 1;
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Where the batch stands, to [`reset`](Self::reset) to.
    fn mark(&self) -> (usize, usize) {
        (self.bytes.len(), self.count)
    }

    /// Forgets what was added since `mark`.
    fn reset(&mut self, (len, count): (usize, usize)) {
        self.bytes.truncate(len);
        self.count = count;
        self.later.truncate(count.saturating_sub(1));
    }

    fn ranges(&self) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
        std::iter::once(self.first.clone())
            .chain(self.later.iter().cloned())
            .take(self.count)
    }

    /// The items, oldest first.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &[u8]> {
        self.ranges().map(|r| &self.bytes[r])
    }

    /// The items as `Bytes` sharing one allocation.
    pub(crate) fn into_bytes(self) -> Vec<bytes::Bytes> {
        let ranges: Vec<_> = self.ranges().collect();
        let all = bytes::Bytes::from(self.bytes);
        ranges.into_iter().map(|r| all.slice(r)).collect()
    }
}

/// What a get attempt found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Take {
    /// Took this many items.
    Taken(usize),
    /// Nothing is queued.
    Empty,
    /// The oldest item is spilled, and is taken under the get lock.
    Spilled,
}

impl Take {
    fn count(self) -> usize {
        match self {
            Take::Taken(n) => n,
            _ => 0,
        }
    }
}

/// The outcome of a get: whether it took anything.
trait Taken {
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

/// A live record found by a walk.
struct Found {
    pos: u32,
    rec: usize,
    payload: Vec<u8>,
}

/// One side's commit word: how many items that side has moved (wrapping) and where it is in the
/// ring (a byte position modulo twice the capacity, so a full ring and an empty one differ).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Mark {
    items: u32,
    pos: u32,
}

impl Mark {
    fn unpack(word: u64) -> Mark {
        Mark {
            items: (word >> 32) as u32,
            pos: word as u32,
        }
    }

    fn pack(self) -> u64 {
        u64::from(self.items) << 32 | u64::from(self.pos)
    }
}

/// The bytes a record of `len` payload bytes takes.
fn record_size(len: usize) -> Option<usize> {
    len.checked_next_multiple_of(8)?.checked_add(RECORD_HEADER)
}

/// What a locked attempt found.
pub(crate) enum Put {
    Done,
    Full,
}

pub(crate) struct Ring {
    seg: Arc<Segment>,
    not_full: WaitChannel,
    /// Serialises putters (and, for LIFO and priority queues, everyone).
    put_lock: Lock,
    /// Serialises getters of a FIFO queue.
    get_lock: Lock,
    limits: Limits,
}

impl Ring {
    pub(crate) fn new(limits: Limits) -> Result<Self> {
        if limits.capacity < 64 || limits.capacity > MAX_CAPACITY {
            return Err(Error::InvalidArgument(
                "queue capacity must be 64 bytes to 1 GiB".into(),
            ));
        }
        let capacity = limits.capacity.next_multiple_of(8);
        let limits = Limits { capacity, ..limits };
        let seg = Segment::create(Kind::Queue, RING + capacity, |shm| {
            let at = |o| shm.atomic_u64(CHANNEL_SIZE + o);
            at(CAPACITY)?.store(capacity as u64, Ordering::Relaxed);
            at(MAX_ITEMS)?.store(limits.max_items, Ordering::Relaxed);
            at(MAX_MESSAGE)?.store(limits.max_message as u64, Ordering::Relaxed);
            let mut id = [0u8; 8];
            crate::sys::random_bytes(&mut id)?;
            at(QUEUE_ID)?.store(u64::from_le_bytes(id) | 1, Ordering::Relaxed);
            shm.atomic_u32(CHANNEL_SIZE + ORDER)?
                .store(limits.order as u32, Ordering::Relaxed);
            shm.atomic_u32(CHANNEL_SIZE + JOINABLE)?
                .store(u32::from(limits.joinable), Ordering::Relaxed);
            Ok(())
        })?;
        let not_full = WaitChannel::new(seg.shm(), CHANNEL_SIZE + NOT_FULL, eventfd::create()?)?;
        Ok(Ring {
            seg: Arc::new(seg),
            not_full,
            put_lock: Lock::new()?,
            get_lock: Lock::new()?,
            limits,
        })
    }

    fn mark(&self, o: usize) -> Mark {
        Mark::unpack(self.seg.u64(o).load(Ordering::Acquire))
    }

    fn commit(&self, o: usize, mark: Mark) {
        self.seg.u64(o).store(mark.pack(), Ordering::Release);
    }

    /// `head` and `tail` as they both were at one instant (re-read until `head` holds still).
    fn snapshot(&self) -> (Mark, Mark) {
        loop {
            let head = self.mark(HEAD);
            let tail = self.mark(TAIL);
            if self.mark(HEAD) == head {
                return (head, tail);
            }
        }
    }

    /// Positions run modulo twice the capacity.
    fn wrap(&self) -> u32 {
        2 * self.limits.capacity as u32
    }

    /// `pos` moved on by `by` bytes. Positions and steps are below the wrap in every valid ring,
    /// so one subtraction replaces the division (a division on every put and get costs more
    /// than the rest of the arithmetic together); anything larger still wraps correctly.
    #[inline]
    fn advance(&self, pos: u32, by: usize) -> u32 {
        reduce(u64::from(pos) + by as u64, u64::from(self.wrap())) as u32
    }

    /// Bytes from `from` to `to` going forward.
    #[inline]
    fn distance(&self, from: u32, to: u32) -> u64 {
        let wrap = u64::from(self.wrap());
        reduce((u64::from(to) + wrap).wrapping_sub(u64::from(from)), wrap)
    }

    /// Where position `pos` is in the ring's bytes.
    #[inline]
    fn offset(&self, pos: u32) -> usize {
        reduce(u64::from(pos), self.limits.capacity as u64) as usize
    }

    /// Whether the single lock guards everything (LIFO and priority queues).
    fn single_lock(&self) -> bool {
        self.limits.order != Order::Fifo
    }

    pub(crate) fn limits(&self) -> Limits {
        self.limits
    }

    pub(crate) fn len(&self) -> usize {
        let (head, tail) = self.snapshot();
        tail.items.wrapping_sub(head.items) as usize
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.seg.u32(CLOSED).load(Ordering::Acquire) != 0
    }

    /// Whether `rec` more bytes and one more item fit between `head` and `tail`.
    fn room_for(&self, head: Mark, tail: Mark, rec: u64) -> bool {
        let items = tail.items.wrapping_sub(head.items);
        let items_ok = self.limits.max_items == 0 || u64::from(items) < self.limits.max_items;
        let used = self.distance(head.pos, tail.pos);
        items_ok && used.saturating_add(rec) <= self.limits.capacity as u64
    }

    /// Whether a record of `len` bytes would fit now (a hint read without the lock).
    fn has_room(&self, len: usize) -> bool {
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
    fn read_vec(&self, pos: u32, len: usize) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(len);
        self.read_append(pos, len, &mut out)?;
        Ok(out)
    }

    /// Appends `len` bytes at ring position `pos` to `out`.
    fn read_append(&self, pos: u32, len: usize, out: &mut impl Appendable) -> Result<()> {
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
    fn flags(&self, pos: u32) -> &std::sync::atomic::AtomicU32 {
        self.seg.u32(RING + self.offset(pos) + 4)
    }

    /// The header word of the record at `pos`, a position checked to be 8-aligned and inside
    /// the ring (so the header is never split by the wrap): `len | flags << 32`, the byte layout
    /// of `len u32 | flags u32` on this little-endian platform.
    fn header(&self, pos: u32) -> &std::sync::atomic::AtomicU64 {
        self.seg.u64(RING + self.offset(pos))
    }

    /// Reads and validates the record header at `pos`, given the committed `tail`: the payload
    /// length, the record's size and its flags.
    fn record_at(&self, pos: u32, tail: u32) -> Result<(usize, usize, u32)> {
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

    /// `head` and `tail` as they were at one instant, checked. (In a FIFO queue getters move
    /// `head` without a lock: positions that disagree only count as corrupt if `head` held
    /// still while they were read.)
    fn check_positions(&self) -> Result<(Mark, Mark)> {
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
    fn validate(&self, head: Mark, tail: Mark) -> Result<()> {
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
    fn put_view(&self, rec: u64) -> Result<(Mark, Mark)> {
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
    fn take_view(&self) -> Result<(Mark, Mark)> {
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
    fn recover(&self) -> Result<()> {
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

    fn take_lock(&self, result: std::result::Result<LockGuard, LockError>) -> Result<LockGuard> {
        match result {
            Ok(guard) => Ok(guard),
            Err(LockError::OwnerDied(mut guard)) => {
                self.recover()?;
                guard.mark_consistent();
                self.after_recovery();
                Ok(guard)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Waiters may have missed a dead owner's notification.
    fn after_recovery(&self) {
        self.seg.channel.notify();
        self.not_full.notify();
    }

    fn get_lock(&self) -> &Lock {
        if self.single_lock() {
            &self.put_lock
        } else {
            &self.get_lock
        }
    }

    /// `lock` if it is free right now: the common case, taken without building the waiting
    /// future or cloning the lock's handle.
    #[inline]
    fn lock_now<'a>(&self, lock: &'a Lock) -> Option<Result<Held<'a>>> {
        if let Some(held) = lock.try_hold_free() {
            return Some(Ok(held));
        }
        self.lock_now_contended(lock)
    }

    #[cold]
    fn lock_now_contended<'a>(&self, lock: &'a Lock) -> Option<Result<Held<'a>>> {
        Some(match lock.try_hold()? {
            Ok(held) => Ok(held),
            Err(HoldError::OwnerDied(mut held)) => self.recover().map(|()| {
                held.mark_consistent();
                self.after_recovery();
                held
            }),
            Err(HoldError::NotRecoverable) => Err(LockError::NotRecoverable.into()),
        })
    }

    async fn locked<'a>(&self, lock: &'a Lock) -> Result<Held<'a>> {
        if let Some(result) = self.lock_now(lock) {
            return result;
        }
        Ok(self.take_lock(lock.lock().await)?.into_held(lock))
    }

    fn locked_blocking<'a>(&self, lock: &'a Lock) -> Result<Held<'a>> {
        if let Some(result) = self.lock_now(lock) {
            return result;
        }
        Ok(self.take_lock(lock.lock_blocking())?.into_held(lock))
    }

    async fn put_locked(&self) -> Result<Held<'_>> {
        self.locked(&self.put_lock).await
    }

    fn put_locked_blocking(&self) -> Result<Held<'_>> {
        self.locked_blocking(&self.put_lock)
    }

    async fn get_locked(&self) -> Result<Held<'_>> {
        self.locked(self.get_lock()).await
    }

    fn get_locked_blocking(&self) -> Result<Held<'_>> {
        self.locked_blocking(self.get_lock())
    }

    /// Writes a record (header and payload) at `pos`, which must be a checked position.
    fn write_record(&self, pos: u32, payload: &[u8], flags: u32) -> Result<()> {
        let header = u64::from(payload.len() as u32) | u64::from(flags) << 32;
        self.header(pos).store(header, Ordering::Relaxed);
        self.write_wrapped(self.advance(pos, RECORD_HEADER), payload)
    }

    /// With the put lock held: appends a record if it fits (the one-item case of
    /// [`put_records`](Self::put_records), kept apart because it is most of the traffic).
    fn put_record(&self, payload: &[u8], flags: u32) -> Result<Put> {
        if self.is_closed() {
            return Err(Error::Closed);
        }
        let rec = record_size(payload.len()).expect("checked by check_size");
        let (head, tail) = self.put_view(rec as u64)?;
        if !self.room_for(head, tail, rec as u64) {
            return Ok(Put::Full);
        }
        self.write_record(tail.pos, payload, flags)?;
        self.commit(
            TAIL,
            Mark {
                items: tail.items.wrapping_add(1),
                pos: self.advance(tail.pos, rec),
            },
        );
        Ok(Put::Done)
    }

    /// With the put lock held: appends as many of `payloads` as fit, in order, and commits them
    /// all with one store of `tail` (so a batch appears whole or not at all). 0: full.
    fn put_records<'a>(
        &self,
        payloads: impl IntoIterator<Item = &'a [u8]>,
        flags: u32,
    ) -> Result<usize> {
        if self.is_closed() {
            return Err(Error::Closed);
        }
        let mut payloads = payloads.into_iter().peekable();
        let Some(first) = payloads.peek() else {
            return Ok(0);
        };
        let first = record_size(first.len()).expect("checked by check_size") as u64;
        let (mut head, tail) = self.put_view(first)?;
        let mut end = tail;
        let mut refreshed = false;
        for payload in payloads {
            let rec = record_size(payload.len()).expect("checked by check_size");
            if !self.room_for(head, end, rec as u64) {
                if refreshed || self.single_lock() {
                    break;
                }
                (head, _) = self.put_view(u64::MAX)?;
                refreshed = true;
                if !self.room_for(head, end, rec as u64) {
                    break;
                }
            }
            self.write_record(end.pos, payload, flags)?;
            end = Mark {
                items: end.items.wrapping_add(1),
                pos: self.advance(end.pos, rec),
            };
        }
        let n = end.items.wrapping_sub(tail.items);
        if n > 0 {
            // Commit: one store makes every record visible and counts them (as queued, and as
            // put for a JoinableQueue's `join`).
            self.commit(TAIL, end);
        }
        Ok(n as usize)
    }

    /// With the lock held: every live record, oldest first.
    fn live_records(&self, head: Mark, tail: Mark) -> Result<Vec<Found>> {
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
    fn take_chosen_records(
        &self,
        max: usize,
        compare: Option<Compare>,
        batch: &mut Batch,
    ) -> Result<usize> {
        let mut n = 0;
        while n < max {
            let (head, tail) = self.check_positions()?;
            // By count, not position: a taker killed between its two commits leaves taken
            // records between `head` and `tail` and nothing live.
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

    /// Whether `head` moved since it read `seen` (another getter committed meanwhile).
    fn head_moved(&self, seen: Mark) -> bool {
        self.mark(HEAD) != seen
    }

    /// A FIFO getter's commit: moves `head` from `from` to `to` unless another getter moved it
    /// first. Everything this getter copied before is then known to be what was committed there:
    /// nobody can overwrite bytes before the real `head`. (The one way to fool it: a getter
    /// paused between its copy and this exchange for exactly a multiple of 2^32 items, which
    /// brings the word back to the same count and position — minutes of traffic at full
    /// speed, within one pause.)
    fn commit_from(&self, from: Mark, to: Mark) -> bool {
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
    fn take_first(&self, out: &mut impl Appendable) -> Result<Take> {
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

    /// With the get lock held: takes the oldest item of a FIFO queue when it is spilled. Its
    /// segment is read and removed before the commit: a getter killed in between leaves the
    /// record, and at worst a record whose segment is gone, which the next getter reports and
    /// skips. No one else commits the record meanwhile (lock-free getters stop at it).
    fn take_spilled(&self, out: &mut impl Appendable) -> Result<Take> {
        loop {
            match self.take_first(out)? {
                Take::Spilled => {}
                other => return Ok(other),
            }
            let (head, tail) = self.take_view()?;
            if head.pos == tail.pos {
                continue;
            }
            let (len, rec, flags) = self.record_at(head.pos, tail.pos)?;
            if flags & SPILLED == 0 {
                continue;
            }
            let name = self.read_vec(self.advance(head.pos, RECORD_HEADER), len)?;
            let item = self.unspill(&name);
            let next = Mark {
                items: head.items.wrapping_add(1),
                pos: self.advance(head.pos, rec),
            };
            if self.commit_from(head, next) {
                out.append(&item?);
                return Ok(Take::Taken(1));
            }
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
        if live.is_empty() {
            return Err(Error::Corrupt("queue count and records disagree".into()));
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

    /// One locked attempt to put as many of `payloads` as fit (they must fit inline); returns
    /// how many went in.
    pub(crate) async fn try_put_many<B: AsRef<[u8]>>(&self, payloads: &[B]) -> Result<usize> {
        let guard = self.put_locked().await?;
        let result = self.put_records(payloads.iter().map(AsRef::as_ref), 0);
        drop(guard);
        if let Ok(1..) = result {
            self.seg.channel.notify();
        }
        result
    }

    /// One attempt to take up to `max` items (waiting only for the lock, when one is needed);
    /// an empty batch when there are none. Wakes putters if anything was taken.
    pub(crate) async fn try_get_many(&self, max: usize, compare: Option<Compare>) -> Result<Batch> {
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

    /// Up to `max` items without any lock (FIFO); `None` when the lock is needed.
    fn take_many_unlocked(&self, max: usize, batch: &mut Batch) -> Option<Result<usize>> {
        if self.single_lock() {
            return None;
        }
        match self.take_oldest(max, batch) {
            Ok(Take::Spilled) => None,
            other => Some(other.map(Take::count)),
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

    /// One item into `out` without any lock (FIFO); `None` when the lock is needed.
    fn take_one_unlocked(&self, out: &mut impl Appendable) -> Option<Result<bool>> {
        if self.single_lock() {
            return None;
        }
        match self.take_first(out) {
            Ok(Take::Spilled) => None,
            other => Some(other.map(|took| took.count() > 0)),
        }
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
        if let Some(taken) = self.take_one_unlocked(out) {
            return self.after_get(taken);
        }
        let held = self.get_locked_blocking()?;
        let taken = self.take_one_locked(compare, out);
        self.after_get_locked(held, taken)
    }

    fn id(&self) -> u64 {
        self.seg.u64(QUEUE_ID).load(Ordering::Relaxed)
    }

    /// The prefix of this queue's spill segment names.
    pub(crate) fn spill_prefix(&self) -> String {
        format!("tkmp-spill-{:016x}-", self.id())
    }

    /// Whether a payload of `len` bytes is stored in the ring itself.
    pub(crate) fn fits_inline(&self, len: usize) -> bool {
        len <= self.limits.capacity - RECORD_HEADER
    }

    /// Turns an item into what the ring stores: itself, or — for an item larger than the ring,
    /// in a FIFO queue — the name of a named segment holding it. Dropping the record
    /// without queueing it removes the spill segment again.
    pub(crate) fn prepare(&self, payload: Vec<u8>) -> Result<Record> {
        if self.fits_inline(payload.len()) {
            return Ok(Record {
                payload,
                spilled: false,
                queued: false,
            });
        }
        if self.limits.order != Order::Fifo {
            return Err(Error::TooLarge {
                size: payload.len(),
                max: self.limits.capacity - RECORD_HEADER,
            });
        }
        self.sweep_spills();
        static NONCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let name = format!(
            "{}{}-{}",
            self.spill_prefix(),
            crate::sys::getpid(),
            NONCE.fetch_add(1, Ordering::Relaxed)
        );
        let spill = crate::SharedMemory::create_named(&name, payload.len())?;
        spill.write_at(0, &payload)?;
        spill.persist();
        Ok(Record {
            payload: name.into_bytes(),
            spilled: true,
            queued: false,
        })
    }

    /// Reads a spilled item and removes its segment. The name must be one of ours: a hostile
    /// record cannot make us read or unlink anything else.
    fn unspill(&self, name: &[u8]) -> Result<Vec<u8>> {
        let name = std::str::from_utf8(name)
            .map_err(|_| Error::Corrupt("spill name is not UTF-8".into()))?;
        name.strip_prefix(&self.spill_prefix())
            .filter(|r| r.len() < 64 && r.bytes().all(|b| b.is_ascii_digit() || b == b'-'))
            .ok_or_else(|| {
                Error::Corrupt(format!(
                    "record names a segment that is not this queue's: {name:?}"
                ))
            })?;
        let spill = crate::SharedMemory::open(name)
            .map_err(|e| Error::Corrupt(format!("spilled item {name:?} is gone: {e}")))?;
        if spill.size() > self.limits.max_message {
            let _ = spill.unlink();
            return Err(Error::Corrupt(format!(
                "spilled item of {} bytes",
                spill.size()
            )));
        }
        let data = spill.to_vec();
        let _ = spill.unlink();
        Ok(data)
    }

    /// Removes spill segments of this queue left by producers that died between writing one and
    /// queueing its record. At most once a second per process; best effort.
    fn sweep_spills(&self) {
        static LAST: std::sync::Mutex<Option<Instant>> = std::sync::Mutex::new(None);
        {
            let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
                return;
            }
            *last = Some(Instant::now());
        }
        let prefix = self.spill_prefix();
        let Ok(dir) = std::fs::read_dir("/dev/shm") else {
            return;
        };
        let orphans: Vec<String> = dir
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| {
                n.strip_prefix(&prefix)
                    .and_then(|rest| rest.split('-').next())
                    .and_then(|pid| pid.parse::<u32>().ok())
                    .is_some_and(|pid| {
                        crate::sys::pidfd::start_time(pid).is_none_or(|(_, zombie)| zombie)
                    })
            })
            .collect();
        if orphans.is_empty() {
            return;
        }
        // Only names no queued record refers to: a dead producer may have queued its item. The
        // sweep is best effort and may run on a tokio worker, so it never waits for the get
        // lock (a getter may hold it while it reads a large item): busy means next time.
        let Some(Ok(guard)) = self.lock_now(self.get_lock()) else {
            return;
        };
        // FIFO getters take records without the lock, so records at the front may be taken
        // and overwritten while we walk: the walk only counts if `head` held still (nothing
        // before the real head can change); otherwise, or if it fails, nothing is removed.
        let Ok((head, tail)) = self.check_positions() else {
            return;
        };
        let referenced: Vec<Vec<u8>> = match self.live_records(head, tail) {
            Ok(records) if !self.head_moved(head) => {
                records.into_iter().map(|f| f.payload).collect()
            }
            _ => return,
        };
        drop(guard);
        for name in orphans {
            if !referenced.iter().any(|r| r == name.as_bytes()) {
                let _ = crate::sys::shm_open::unlink(&name);
            }
        }
    }

    /// One locked attempt to queue a prepared record; wakes getters on success.
    pub(crate) async fn try_put_record(&self, record: &mut Record) -> Result<Put> {
        let flags = if record.spilled { SPILLED } else { 0 };
        let result = self.try_put_slice(&record.payload, flags).await;
        record.queued = matches!(result, Ok(Put::Done));
        result
    }

    pub(crate) fn try_put_record_blocking(&self, record: &mut Record) -> Result<Put> {
        let flags = if record.spilled { SPILLED } else { 0 };
        let result = self.try_put_slice_blocking(&record.payload, flags);
        record.queued = matches!(result, Ok(Put::Done));
        result
    }

    /// One locked attempt to queue `payload` as it is (it must fit inline); wakes getters on
    /// success.
    pub(crate) async fn try_put_slice(&self, payload: &[u8], flags: u32) -> Result<Put> {
        let held = self.put_locked().await?;
        self.put_held(held, payload, flags)
    }

    pub(crate) fn try_put_slice_blocking(&self, payload: &[u8], flags: u32) -> Result<Put> {
        let held = self.put_locked_blocking()?;
        self.put_held(held, payload, flags)
    }

    /// [`try_put_slice`](Self::try_put_slice) if the put lock is free right now (no future, no
    /// wait): the path almost every put takes. `None` when the lock is busy.
    pub(crate) fn try_put_slice_now(&self, payload: &[u8], flags: u32) -> Option<Result<Put>> {
        Some(
            self.lock_now(&self.put_lock)?
                .and_then(|held| self.put_held(held, payload, flags)),
        )
    }

    fn put_held(&self, held: Held<'_>, payload: &[u8], flags: u32) -> Result<Put> {
        let result = self.put_record(payload, flags);
        held.release_fenced();
        if let Ok(Put::Done) = result {
            self.seg.channel.notify_after_fence();
        }
        result
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

    /// How much room a putter that found the ring full waits for while it spins: a few records'
    /// worth more than it needs, so it and the getters take turns in bursts instead of pulling
    /// the `head` line back and forth once per record. (Parking waits only for what it needs.)
    fn roomy(&self, len: usize) -> usize {
        len.max(self.limits.capacity / 64)
            .min(self.limits.capacity - RECORD_HEADER)
    }

    /// Waits (without the lock) until a record of `len` bytes may fit, the queue closes, or the
    /// deadline passes. `false` on timeout.
    pub(crate) async fn wait_room(&self, len: usize, deadline: Option<Instant>) -> bool {
        let ready = || (self.is_closed() || self.has_room(len)).then_some(());
        if spin(|| (self.is_closed() || self.has_room(self.roomy(len))).then_some(())) {
            return true;
        }
        self.not_full
            .wait(ready, deadline, SAFETY_RECHECK)
            .await
            .is_some()
    }

    pub(crate) fn wait_room_blocking(&self, len: usize, deadline: Option<Instant>) -> bool {
        let ready = || (self.is_closed() || self.has_room(len)).then_some(());
        if spin(|| (self.is_closed() || self.has_room(self.roomy(len))).then_some(())) {
            return true;
        }
        self.not_full
            .wait_blocking(ready, deadline, SAFETY_RECHECK)
            .is_some()
    }

    /// Waits until something may be queued or the queue closes. `false` on timeout.
    pub(crate) async fn wait_items(&self, deadline: Option<Instant>) -> bool {
        let ready =
            || (self.is_closed() || self.mark(TAIL).pos != self.mark(HEAD).pos).then_some(());
        if spin(ready) {
            return true;
        }
        self.seg
            .channel
            .wait(ready, deadline, SAFETY_RECHECK)
            .await
            .is_some()
    }

    pub(crate) fn wait_items_blocking(&self, deadline: Option<Instant>) -> bool {
        let ready =
            || (self.is_closed() || self.mark(TAIL).pos != self.mark(HEAD).pos).then_some(());
        if spin(ready) {
            return true;
        }
        self.seg
            .channel
            .wait_blocking(ready, deadline, SAFETY_RECHECK)
            .is_some()
    }

    /// Closes the queue and wakes every waiter in every process.
    pub(crate) fn close(&self) {
        self.seg.u32(CLOSED).store(1, Ordering::Release);
        self.seg.channel.notify();
        self.not_full.notify();
    }

    /// Waiters on (not empty, not full), for tests.
    pub(crate) fn waiters(&self) -> ((u32, u32), (u32, u32)) {
        (self.seg.channel.waiters(), self.not_full.waiters())
    }

    pub(crate) fn to_wire(&self, fds: &mut FdSink) -> Result<RingWire> {
        Ok(RingWire {
            seg: self.seg.to_wire(fds)?,
            not_full: fds.push(self.not_full.doorbell())?,
            put_lock: self.put_lock.clone(),
            get_lock: self.get_lock.clone(),
        })
    }

    pub(crate) fn from_wire(wire: RingWire, fds: &mut FdSource) -> Result<Self> {
        let seg = Segment::from_wire(wire.seg, fds, Kind::Queue, RING)?;
        let corrupt = |what: &str| Error::Corrupt(format!("queue header: {what}"));
        let capacity = usize::try_from(seg.u64(CAPACITY).load(Ordering::Relaxed))
            .map_err(|_| corrupt("capacity"))?;
        if !(64..=MAX_CAPACITY).contains(&capacity)
            || capacity % 8 != 0
            || !seg.fits(RING.saturating_add(capacity))
        {
            return Err(corrupt("capacity does not match the segment"));
        }
        let max_items = seg.u64(MAX_ITEMS).load(Ordering::Relaxed);
        let max_message = usize::try_from(seg.u64(MAX_MESSAGE).load(Ordering::Relaxed))
            .map_err(|_| corrupt("max message"))?;
        let order = Order::from_raw(seg.u32(ORDER).load(Ordering::Relaxed))
            .ok_or_else(|| corrupt("order"))?;
        let joinable = seg.u32(JOINABLE).load(Ordering::Relaxed) != 0;
        let doorbell = fds.take(wire.not_full)?;
        if !eventfd::is_eventfd(std::os::fd::AsRawFd::as_raw_fd(&doorbell)) {
            return Err(Error::Corrupt(
                "a queue's doorbell must be an eventfd".into(),
            ));
        }
        let not_full = WaitChannel::new(seg.shm(), CHANNEL_SIZE + NOT_FULL, doorbell)?;
        Ok(Ring {
            seg: Arc::new(seg),
            not_full,
            put_lock: wire.put_lock,
            get_lock: wire.get_lock,
            limits: Limits {
                capacity,
                max_items,
                max_message,
                order,
                joinable,
            },
        })
    }
}

impl fmt::Debug for Ring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring")
            .field("len", &self.len())
            .field("limits", &self.limits)
            .finish()
    }
}

/// The plain-data part of a queue in a message.
#[derive(Debug, Serialize, Deserialize)]
#[doc(hidden)]
pub struct RingWire {
    seg: SegmentWire,
    not_full: FdIndex,
    put_lock: Lock,
    get_lock: Lock,
}

/// Checks `ready` for a bounded while before a waiter parks: a getter that finds the queue
/// empty usually sees the next item within a microsecond or two, far sooner than a futex or
/// eventfd round trip (and a parked waiter costs whoever wakes it a system call). The checks
/// back off (1, 2, 4 … 32 pauses apart, about 2 µs in all) so a waiter does not keep pulling
/// the other side's commit line away from it; then, for up to [`SPIN_FOR`] in all, the waiter
/// yields its CPU between checks, so that on a machine with fewer free CPUs than busy
/// processes the other side gets to run instead of watching us spin. Never a busy loop.
fn spin(ready: impl Fn() -> Option<()>) -> bool {
    const PAUSES: u32 = 64;
    let (mut spent, mut gap) = (0, 1);
    while spent < PAUSES {
        if ready().is_some() {
            return true;
        }
        for _ in 0..gap {
            std::hint::spin_loop();
        }
        spent += gap;
        gap = (gap * 2).min(32);
    }
    let start = Instant::now();
    while start.elapsed() < SPIN_FOR {
        if ready().is_some() {
            return true;
        }
        std::thread::yield_now();
    }
    ready().is_some()
}

/// How long a queue waiter keeps checking (pausing, then yielding) before it parks.
const SPIN_FOR: Duration = Duration::from_micros(20);

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

/// A deadline `timeout` from now.
pub(crate) fn deadline(timeout: Duration) -> Option<Instant> {
    Some(Instant::now() + timeout)
}
