//! [`Queue`]: a bounded first-in-first-out queue between processes.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::PutError;
use super::ring::{self, Compare, Limits, Order, Put, Record, Ring, RingWire};
use crate::handle::{self, FdSink, FdSource, Handle};
use crate::{Error, Result};

/// Ring bytes a queue gets unless told otherwise.
pub const DEFAULT_CAPACITY: usize = 1 << 20;
/// Items that serialise to at most this many bytes are serialised on the stack.
const STACK_ITEM: usize = 256;

/// Largest message unless told otherwise (bounded by the ring's capacity).
pub const DEFAULT_MAX_MESSAGE: usize = 64 << 20;

/// Options for a [`Queue`].
#[derive(Debug, Clone, Copy)]
#[must_use = "a QueueBuilder does nothing until `build` is called"]
pub struct QueueBuilder<T> {
    maxsize: usize,
    capacity: usize,
    max_message: usize,
    _type: PhantomData<fn(T) -> T>,
}

impl<T> QueueBuilder<T> {
    /// At most this many items (Python's `maxsize`; 0: only the ring's bytes limit).
    pub fn maxsize(mut self, n: usize) -> Self {
        self.maxsize = n;
        self
    }

    /// Bytes of the shared ring (default 1 MiB), allocated up front.
    pub fn capacity(mut self, bytes: usize) -> Self {
        self.capacity = bytes;
        self
    }

    /// The largest serialised item (default 64 MiB, and never more than the ring holds).
    pub fn max_message(mut self, bytes: usize) -> Self {
        self.max_message = bytes;
        self
    }

    /// Makes the queue.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for a capacity under 64 bytes or over 1 GiB; [`Error::Io`] when the memory
    /// cannot be had.
    pub fn build(self) -> Result<Queue<T>> {
        self.build_with(Order::Fifo, false, None)
    }

    pub(crate) fn build_with(
        self,
        order: Order,
        joinable: bool,
        compare: Option<Compare>,
    ) -> Result<Queue<T>> {
        let ring = Ring::new(Limits {
            capacity: self.capacity,
            max_items: self.maxsize as u64,
            max_message: self.max_message.min(u32::MAX as usize),
            order,
            joinable,
        })?;
        Ok(Queue {
            ring: Arc::new(ring),
            compare,
            _type: PhantomData,
        })
    }
}

/// A bounded FIFO queue shared by tasks, threads and processes (Python's
/// `multiprocessing.Queue`).
///
/// Items are serde values, copied straight into a ring in shared memory: when `put` returns, the
/// item is in the queue, and the producer may exit at once — there is no feeder thread and no
/// per-process buffer (so Python's "joining processes that use queues" deadlock cannot happen).
/// `put` waits while the queue is full, `get` while it is empty; `len` is exact.
///
/// A process killed in the middle of a `put` or `get` leaves the queue consistent: the item is
/// either wholly in the queue or not at all, and nobody waits forever. (A getter killed before
/// its claim leaves the item queued; one killed after it took the item with it.)
///
/// Items up to the maximum message size (64 MiB by default) are accepted. One that does not fit
/// in the ring (1 MiB by default; see [`builder().capacity(..)`](Self::builder)) is written to a
/// named segment under `/dev/shm` that the getter reads and removes, so the ring only carries
/// its name; segments left by a producer killed half-way are swept by the next large put.
/// Items cannot contain handles (file descriptors cannot live in shared memory); send those
/// over a [`Pipe`](crate::Pipe).
///
/// # Speed
///
/// Putters take a put lock; getters take no lock at all (each copies the oldest item out and
/// claims it with one compare-and-swap, trying again if another getter was first), so putters
/// and getters never wait for each other. A waiter spins for about 2 µs, then yields its CPU
/// between checks for up to 20 µs, before it parks; nothing makes a system call while nobody
/// is parked. Between two processes on a
/// 2-core VM (`cargo bench`, W1, 64-byte items): [`put_bytes`](Self::put_bytes) /
/// [`get_bytes`](Self::get_bytes) (no serialisation) move about 9 million items a second,
/// [`put_many_bytes`](Self::put_many_bytes) / [`get_many_bytes`](Self::get_many_bytes) 20 to
/// 30 million (one lock and one commit per batch), and typed [`put`](Self::put) /
/// [`get`](Self::get) of a `Vec<u8>` about 3 million: serde handles a `Vec<u8>` byte by byte,
/// so carry byte payloads as [`bytes::Bytes`] (or `serde_bytes`) inside typed items. A
/// ping-pong round trip takes about 1 µs. (The VM is noisy: figures vary by ±30 % from run to
/// run.)
///
/// # Examples
///
/// ```
/// use tokio_multiprocessing::Queue;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> tokio_multiprocessing::Result<()> {
/// let q = Queue::<String>::new(2)?;
/// q.put("first".to_string()).await?;
/// q.try_put("second".to_string())?;
/// assert!(q.try_put("third".to_string()).unwrap_err().is_full());
/// assert_eq!(q.len(), 2);
/// assert_eq!(q.get().await?, "first");
/// # Ok(())
/// # }
/// ```
pub struct Queue<T> {
    pub(crate) ring: Arc<Ring>,
    compare: Option<Compare>,
    _type: PhantomData<fn(T) -> T>,
}

impl<T> Queue<T> {
    /// Rebuilds a received queue of the given kind.
    pub(crate) fn from_ring(
        ring: Ring,
        order: Order,
        joinable: bool,
        compare: Option<Compare>,
    ) -> Result<Self> {
        if ring.limits().order != order || ring.limits().joinable != joinable {
            return Err(Error::Corrupt(
                "received another kind of queue than expected".into(),
            ));
        }
        Ok(Queue {
            ring: Arc::new(ring),
            compare,
            _type: PhantomData,
        })
    }

    /// A queue of at most `maxsize` items (0: bounded only by the ring's bytes), with the
    /// default 1 MiB ring.
    ///
    /// # Errors
    ///
    /// As [`QueueBuilder::build`].
    pub fn new(maxsize: usize) -> Result<Self> {
        Self::builder().maxsize(maxsize).build()
    }

    /// Options for a queue.
    pub fn builder() -> QueueBuilder<T> {
        QueueBuilder {
            maxsize: 0,
            capacity: DEFAULT_CAPACITY,
            max_message: DEFAULT_MAX_MESSAGE,
            _type: PhantomData,
        }
    }

    /// The number of items queued now (exact).
    pub fn len(&self) -> usize {
        self.ring.len()
    }

    /// Whether no item is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether a put would have to wait now.
    pub fn is_full(&self) -> bool {
        self.ring.is_full()
    }

    /// Closes the queue: later puts fail with the item back, getters drain what is queued and
    /// then get [`Error::Closed`], and every waiter in every process wakes up.
    pub fn close(&self) {
        self.ring.close();
    }

    /// Whether the queue was closed.
    pub fn is_closed(&self) -> bool {
        self.ring.is_closed()
    }

    /// Python 3.13's `shutdown(immediate)`: `shutdown(false)` is [`close`](Self::close);
    /// `shutdown(true)` also throws away every queued item (in every process; spilled items'
    /// segments are removed), so every getter and putter, waiting or not, gets
    /// [`Error::Closed`] at once. A [`JoinableQueue`](crate::JoinableQueue) counts the
    /// discarded items done, so `join` returns.
    ///
    /// # Examples
    ///
    /// ```
    /// use tokio_multiprocessing::{Error, Queue};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> tokio_multiprocessing::Result<()> {
    /// let queue = Queue::<u32>::new(0)?;
    /// queue.put(1).await.unwrap();
    /// queue.shutdown(true);
    /// assert!(matches!(queue.get().await, Err(Error::Closed))); // the 1 is gone
    /// # Ok(())
    /// # }
    /// ```
    pub fn shutdown(&self, immediate: bool) {
        if immediate {
            self.ring.close_discarding();
        } else {
            self.ring.close();
        }
    }

    /// The `/dev/shm` name prefix of this queue's spilled items.
    #[cfg_attr(not(feature = "test-hooks"), allow(dead_code))]
    pub(crate) fn spill_prefix(&self) -> String {
        self.ring.spill_prefix()
    }

    /// The ring, for test hooks.
    #[cfg_attr(not(feature = "test-hooks"), allow(dead_code))]
    pub(crate) fn ring(&self) -> &Ring {
        &self.ring
    }

    /// Waiters counted in on (not empty, not full), each (blocking, async).
    #[cfg_attr(not(feature = "test-hooks"), allow(dead_code))]
    pub(crate) fn waiters(&self) -> ((u32, u32), (u32, u32)) {
        self.ring.waiters()
    }
}

impl<T: Serialize> Queue<T> {
    fn encode(&self, item: T) -> std::result::Result<(Vec<u8>, T), PutError<T>> {
        let (bytes, fds) = match handle::encode(&item) {
            Ok(encoded) => encoded,
            Err(e) => return Err(PutError::Other(item, e)),
        };
        if !fds.is_empty() {
            let e =
                Error::InvalidArgument("handles cannot travel through a queue; use a Pipe".into());
            return Err(PutError::Other(item, e));
        }
        if self.ring.check_size(bytes.len()).is_err() {
            return Err(PutError::TooLarge(item));
        }
        Ok((bytes, item))
    }

    /// Serialises `item` and makes the record the ring will store (spilling a large one);
    /// a refusal hands the item back.
    fn record(&self, item: T) -> std::result::Result<(Record, T), PutError<T>> {
        let (bytes, item) = self.encode(item)?;
        match self.ring.prepare(bytes) {
            Ok(record) => Ok((record, item)),
            Err(Error::TooLarge { .. }) => Err(PutError::TooLarge(item)),
            Err(e) => Err(PutError::Other(item, e)),
        }
    }

    async fn put_until(
        &self,
        item: T,
        deadline: Option<Instant>,
    ) -> std::result::Result<(), PutError<T>> {
        let mut stack = [0u8; STACK_ITEM];
        if let Some(len) = handle::encode_to_slice(&item, &mut stack)
            && self.ring.check_size(len).is_ok()
        {
            // The common case: a small item, serialised on the stack and copied into the ring,
            // first without building any future (the lock is almost always free).
            loop {
                let attempt = match self.ring.try_put_slice_now(&stack[..len], 0) {
                    Some(result) => result,
                    None => self.ring.try_put_slice(&stack[..len], 0).await,
                };
                let failed = match attempt {
                    Ok(Put::Done) => return Ok(()),
                    Ok(Put::Full) => {
                        if self.ring.wait_room(len, deadline).await {
                            continue;
                        }
                        PutError::Timeout(item)
                    }
                    Err(Error::Closed) => PutError::Closed(item),
                    Err(e) => PutError::Other(item, e),
                };
                return Err(failed);
            }
        }
        let (mut record, item) = self.record(item)?;
        loop {
            let failed = match self.ring.try_put_record(&mut record).await {
                Ok(Put::Done) => return Ok(()),
                Ok(Put::Full) => {
                    if self.ring.wait_room(record.payload.len(), deadline).await {
                        continue;
                    }
                    PutError::Timeout(item)
                }
                Err(Error::Closed) => PutError::Closed(item),
                Err(e) => PutError::Other(item, e),
            };
            return Err(failed);
        }
    }

    /// Puts `item`, waiting while the queue is full (backpressure).
    ///
    /// # Errors
    ///
    /// [`PutError::Closed`], [`PutError::TooLarge`], [`PutError::Other`] — all with the item.
    ///
    /// # Cancel safety
    ///
    /// The item is copied into the ring in one step between two awaits, so a cancelled `put`
    /// either queued it whole or not at all; in the second case the item is dropped with the
    /// future. Use [`put_timeout`](Self::put_timeout) to get it back instead.
    pub async fn put(&self, item: T) -> std::result::Result<(), PutError<T>> {
        self.put_until(item, None).await
    }

    /// [`put`](Self::put) with a deadline; on timeout the item comes back.
    ///
    /// # Errors
    ///
    /// [`PutError::Timeout`], or as [`put`](Self::put).
    ///
    /// # Cancel safety
    ///
    /// As [`put`](Self::put).
    pub async fn put_timeout(
        &self,
        item: T,
        timeout: Duration,
    ) -> std::result::Result<(), PutError<T>> {
        self.put_until(item, ring::deadline(timeout)).await
    }

    /// Puts every item, in order, waiting for room as needed; as many as fit go in under one
    /// lock acquisition, so a batch costs far less than one `put` each.
    ///
    /// # Errors
    ///
    /// On a failure the items not yet queued come back, in order, in the error
    /// ([`PutError::Closed`], [`PutError::TooLarge`] for the first too-large one and those after
    /// it, [`PutError::Other`]).
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe: a cancelled call may have queued a prefix of the items and drops the
    /// rest.
    pub async fn put_many(
        &self,
        items: impl IntoIterator<Item = T>,
    ) -> std::result::Result<(), PutError<Vec<T>>> {
        let mut items: Vec<T> = items.into_iter().collect();
        // Every item serialised back to back into one buffer.
        let mut buf = Vec::new();
        let mut ends = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let start = buf.len();
            match handle::encode_append(item, &mut buf) {
                Ok(true) => {}
                Ok(false) => {
                    let e = Error::InvalidArgument(
                        "handles cannot travel through a queue; use a Pipe".into(),
                    );
                    return Err(PutError::Other(items, e));
                }
                Err(e) => return Err(PutError::Other(items, e)),
            }
            let len = buf.len() - start;
            if self.ring.check_size(len).is_err() {
                // Queue the good prefix first, then hand back the rest.
                let rest = items.split_off(i);
                let prefix: Vec<T> = items;
                return match Box::pin(self.put_many(prefix)).await {
                    Ok(()) => Err(PutError::TooLarge(rest)),
                    Err(e) => Err(e),
                };
            }
            if !self.ring.fits_inline(len) {
                // Items too large for the ring are spilled, one by one.
                let mut items = items.into_iter();
                while let Some(item) = items.next() {
                    if let Err(e) = self.put(item).await {
                        let mut rest = vec![e.into_inner()];
                        rest.extend(items);
                        return Err(PutError::Closed(rest));
                    }
                }
                return Ok(());
            }
            ends.push(buf.len());
        }
        let starts = std::iter::once(0).chain(ends.iter().copied());
        let encoded: Vec<&[u8]> = starts.zip(ends.iter()).map(|(a, &b)| &buf[a..b]).collect();
        let mut done = 0;
        while done < encoded.len() {
            match self.ring.try_put_many(&encoded[done..]).await {
                Ok(0) => {
                    if !self.ring.wait_room(encoded[done].len(), None).await {
                        return Err(PutError::Timeout(items.split_off(done)));
                    }
                }
                Ok(n) => done += n,
                Err(Error::Closed) => return Err(PutError::Closed(items.split_off(done))),
                Err(e) => return Err(PutError::Other(items.split_off(done), e)),
            }
        }
        Ok(())
    }

    /// A [`Sink`](futures::Sink) that puts every item it is sent, for `SinkExt` pipelines.
    ///
    /// # Cancel safety
    ///
    /// As [`put`](Self::put): an item being sent when the sink's future is dropped is either
    /// queued whole or dropped.
    pub fn into_sink(self) -> impl futures::Sink<T, Error = Error>
    where
        T: 'static,
    {
        futures::sink::unfold(self, |q, item: T| async move {
            q.put(item).await.map_err(Error::from)?;
            Ok::<_, Error>(q)
        })
    }

    /// Puts `item` only if there is room now (Python's `put_nowait`).
    ///
    /// # Errors
    ///
    /// [`PutError::Full`], or as [`put`](Self::put).
    pub fn try_put(&self, item: T) -> std::result::Result<(), PutError<T>> {
        let (mut record, item) = self.record(item)?;
        let failed = match self.ring.try_put_record_blocking(&mut record) {
            Ok(Put::Done) => return Ok(()),
            Ok(Put::Full) => PutError::Full(item),
            Err(Error::Closed) => PutError::Closed(item),
            Err(e) => PutError::Other(item, e),
        };
        Err(failed)
    }

    /// [`put`](Self::put) for threads (not on a runtime worker).
    ///
    /// # Errors
    ///
    /// As [`put`](Self::put).
    pub fn put_blocking(&self, item: T) -> std::result::Result<(), PutError<T>> {
        let (mut record, item) = self.record(item)?;
        loop {
            let failed = match self.ring.try_put_record_blocking(&mut record) {
                Ok(Put::Done) => return Ok(()),
                Ok(Put::Full) => {
                    self.ring.wait_room_blocking(record.payload.len(), None);
                    continue;
                }
                Err(Error::Closed) => PutError::Closed(item),
                Err(e) => PutError::Other(item, e),
            };
            return Err(failed);
        }
    }
}

impl<T> Queue<T> {
    /// Puts raw bytes as one item, without serialisation (pair with
    /// [`get_bytes`](Self::get_bytes); a typed `get` would not decode them).
    ///
    /// # Errors
    ///
    /// [`Error::TooLarge`], [`Error::Closed`], or a ring validation error.
    ///
    /// # Cancel safety
    ///
    /// As [`put`](Self::put): copied whole or not at all.
    pub async fn put_bytes(&self, bytes: &[u8]) -> Result<()> {
        self.ring.check_size(bytes.len())?;
        if self.ring.fits_inline(bytes.len()) {
            // Straight from the caller's slice, and first without building any future.
            loop {
                let attempt = match self.ring.try_put_slice_now(bytes, 0) {
                    Some(result) => result,
                    None => self.ring.try_put_slice(bytes, 0).await,
                };
                if let Put::Done = attempt? {
                    return Ok(());
                }
                self.ring.wait_room(bytes.len(), None).await;
            }
        }
        let mut record = self.ring.prepare(bytes.to_vec())?;
        loop {
            match self.ring.try_put_record(&mut record).await {
                Ok(Put::Done) => return Ok(()),
                Ok(Put::Full) => {
                    self.ring.wait_room(record.payload.len(), None).await;
                }
                Err(e) => {
                    return Err(e);
                }
            }
        }
    }

    /// Takes one item's raw bytes (see [`put_bytes`](Self::put_bytes)).
    ///
    /// Small items are cut from a 64 KiB buffer the calling thread keeps for the purpose (as a
    /// tokio codec cuts frames from its read buffer), so a get allocates nothing while items
    /// are dropped about as fast as they come. An item you keep keeps its buffer alive: to
    /// hold many small items for long, copy them out (`Bytes::copy_from_slice`, `to_vec`).
    ///
    /// # Errors
    ///
    /// As [`get`](Self::get).
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe.
    pub async fn get_bytes(&self) -> Result<bytes::Bytes> {
        loop {
            // Without building any future first (the lock is almost always free or not
            // needed), also after a wait.
            let attempt = match self.ring.try_get_bytes_now(self.compare) {
                Some(result) => result,
                None => self.ring.try_get_bytes(self.compare).await,
            };
            if let Some(bytes) = attempt? {
                return Ok(bytes);
            }
            self.ring.wait_items(None).await;
        }
    }

    /// [`put_bytes`](Self::put_bytes) for threads.
    ///
    /// # Errors
    ///
    /// As [`put_bytes`](Self::put_bytes).
    pub fn put_bytes_blocking(&self, bytes: &[u8]) -> Result<()> {
        self.ring.check_size(bytes.len())?;
        if self.ring.fits_inline(bytes.len()) {
            while let Put::Full = self.ring.try_put_slice_blocking(bytes, 0)? {
                self.ring.wait_room_blocking(bytes.len(), None);
            }
            return Ok(());
        }
        let mut record = self.ring.prepare(bytes.to_vec())?;
        loop {
            match self.ring.try_put_record_blocking(&mut record) {
                Ok(Put::Done) => return Ok(()),
                Ok(Put::Full) => {
                    self.ring.wait_room_blocking(record.payload.len(), None);
                }
                Err(e) => {
                    return Err(e);
                }
            }
        }
    }

    /// [`get_bytes`](Self::get_bytes) for threads.
    ///
    /// # Errors
    ///
    /// As [`get`](Self::get).
    pub fn get_bytes_blocking(&self) -> Result<bytes::Bytes> {
        loop {
            if let Some(bytes) = self.ring.try_get_bytes_blocking(self.compare)? {
                return Ok(bytes);
            }
            self.ring.wait_items_blocking(None);
        }
    }
}

impl<T: DeserializeOwned> Queue<T> {
    fn decode(bytes: &[u8]) -> Result<T> {
        handle::decode(bytes, Vec::new())
    }

    async fn get_until(&self, deadline: Option<Instant>) -> Result<T> {
        // First without building any future (the lock is almost always free).
        loop {
            let attempt = match self.ring.try_get_with_now(self.compare, Self::decode) {
                Some(result) => result,
                None => self.ring.try_get_with(self.compare, Self::decode).await,
            };
            if let Some(item) = attempt? {
                return item;
            }
            if !self.ring.wait_items(deadline).await {
                return Err(Error::Timeout);
            }
        }
    }

    /// Takes the oldest item, waiting while the queue is empty.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] once the queue is closed and drained; [`Error::Corrupt`] when the item
    /// or the ring fails validation.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: an item is taken and returned in one step, so a dropped `get` took nothing.
    pub async fn get(&self) -> Result<T> {
        self.get_until(None).await
    }

    /// [`get`](Self::get) with a deadline.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`], or as [`get`](Self::get).
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe.
    pub async fn get_timeout(&self, timeout: Duration) -> Result<T> {
        self.get_until(ring::deadline(timeout)).await
    }

    /// Waits for at least one item, then takes up to `max` under one lock acquisition.
    ///
    /// # Errors
    ///
    /// As [`get`](Self::get).
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: items are taken and returned in one step.
    pub async fn get_many(&self, max: usize) -> Result<Vec<T>> {
        loop {
            let batch = self.ring.try_get_many(max.max(1), self.compare).await?;
            if !batch.is_empty() {
                return batch.iter().map(Self::decode).collect();
            }
            self.ring.wait_items(None).await;
        }
    }

    /// Puts raw byte items (as [`put_bytes`](Self::put_bytes) does) in order, waiting for room
    /// as needed; as many as fit go in under one lock acquisition and appear to getters at
    /// once, so a batch costs far less than one `put_bytes` each.
    ///
    /// # Errors
    ///
    /// [`Error::TooLarge`] (nothing queued) when an item is over the maximum message size;
    /// [`Error::Closed`] once the queue is closed, with the items before it queued.
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe: a cancelled call may have queued a prefix of the items.
    pub async fn put_many_bytes<B: AsRef<[u8]>>(&self, items: &[B]) -> Result<()> {
        for item in items {
            self.ring.check_size(item.as_ref().len())?;
        }
        let mut done = 0;
        while done < items.len() {
            let next = items[done].as_ref();
            if !self.ring.fits_inline(next.len()) {
                self.put_bytes(next).await?;
                done += 1;
                continue;
            }
            let end = items[done..]
                .iter()
                .position(|i| !self.ring.fits_inline(i.as_ref().len()))
                .map_or(items.len(), |p| done + p);
            match self.ring.try_put_many(&items[done..end]).await? {
                0 => {
                    self.ring.wait_room(next.len(), None).await;
                }
                n => done += n,
            }
        }
        Ok(())
    }

    /// Waits for at least one item, then takes the raw bytes of up to `max` under one lock
    /// acquisition; they share one allocation.
    ///
    /// # Errors
    ///
    /// As [`get`](Self::get).
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: items are taken and returned in one step.
    pub async fn get_many_bytes(&self, max: usize) -> Result<Vec<bytes::Bytes>> {
        loop {
            let batch = self.ring.try_get_many(max.max(1), self.compare).await?;
            if !batch.is_empty() {
                return Ok(batch.into_bytes());
            }
            self.ring.wait_items(None).await;
        }
    }

    /// A [`Stream`](futures::Stream) of the items, ending when the queue is closed and drained.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe, as [`get`](Self::get): a dropped `next()` took nothing.
    pub fn into_stream(self) -> impl futures::Stream<Item = Result<T>>
    where
        T: 'static,
    {
        futures::stream::unfold(self, |q| async move {
            match q.get().await {
                Ok(item) => Some((Ok(item), q)),
                Err(Error::Closed) => None,
                Err(e) => Some((Err(e), q)),
            }
        })
    }

    /// Takes the oldest item if there is one (Python's `get_nowait`).
    ///
    /// # Errors
    ///
    /// [`Error::Empty`], or as [`get`](Self::get).
    pub fn try_get(&self) -> Result<T> {
        match self.ring.try_get_blocking(self.compare)? {
            Some(bytes) => Self::decode(&bytes),
            None => Err(Error::Empty),
        }
    }

    /// Puts as many of `items` as fit now, in order, under one lock acquisition, without
    /// waiting for room; how many went in. Every item must fit inline (under a tenth of the
    /// ring, as a pool's calls do).
    pub(crate) fn try_put_many_bytes<B: AsRef<[u8]>>(&self, items: &[B]) -> Result<usize> {
        for item in items {
            let len = item.as_ref().len();
            self.ring.check_size(len)?;
            if !self.ring.fits_inline(len) {
                return Err(Error::InvalidArgument(format!(
                    "an item of {len} bytes does not fit in the ring"
                )));
            }
        }
        self.ring.try_put_many_blocking(items)
    }

    /// Takes the oldest item, if there is one, and hands its bytes to `f` (from a buffer the
    /// thread reuses: nothing allocated per item); waits only for the lock.
    pub(crate) fn try_take_with<R>(&self, f: impl FnOnce(&[u8]) -> R) -> Result<Option<R>> {
        let mut f = Some(f);
        let mut call = |bytes: &[u8]| f.take().map(|f| f(bytes));
        if let Some(taken) = self.ring.try_get_with_now(self.compare, &mut call) {
            return taken.map(Option::flatten);
        }
        Ok(self
            .ring
            .try_get_blocking(self.compare)?
            .and_then(|bytes| call(&bytes)))
    }

    /// Puts `bytes` as one item if that can be done now: `Ok(false)` when the ring is full, its
    /// lock busy, or the item too big to go inline (use [`put_bytes`](Self::put_bytes) then).
    pub(crate) fn try_put_bytes_now(&self, bytes: &[u8]) -> Result<bool> {
        self.ring.check_size(bytes.len())?;
        if !self.ring.fits_inline(bytes.len()) {
            return Ok(false);
        }
        match self.ring.try_put_slice_now(bytes, 0) {
            Some(Ok(Put::Done)) => Ok(true),
            Some(Ok(Put::Full)) | None => Ok(false),
            Some(Err(e)) => Err(e),
        }
    }

    /// Waits until the queue holds something or is closed, without spinning first (for a task
    /// that waits for other things at the same time); takes nothing.
    pub(crate) async fn readable(&self) {
        self.ring.wait_items_parked().await;
    }

    /// Spins (pausing, then yielding the CPU) for up to `limit` until the queue holds
    /// something or closes, without parking; `true` if it does. For a process that waits for
    /// nothing else: it holds its thread for that long.
    pub(crate) fn spin_until_readable(&self, limit: std::time::Duration) -> bool {
        self.ring.spin_for_items(limit)
    }

    /// Takes the oldest item's raw bytes without waiting (the raw twin of
    /// [`try_get`](Self::try_get), as [`get_bytes`](Self::get_bytes) is of `get`).
    ///
    /// # Errors
    ///
    /// As [`try_get`](Self::try_get).
    pub fn try_get_bytes(&self) -> Result<bytes::Bytes> {
        match self.ring.try_get_blocking(self.compare)? {
            Some(bytes) => Ok(bytes::Bytes::from(bytes)),
            None => Err(Error::Empty),
        }
    }

    /// [`get`](Self::get) for threads (not on a runtime worker).
    ///
    /// # Errors
    ///
    /// As [`get`](Self::get).
    pub fn get_blocking(&self) -> Result<T> {
        loop {
            if let Some(bytes) = self.ring.try_get_blocking(self.compare)? {
                return Self::decode(&bytes);
            }
            self.ring.wait_items_blocking(None);
        }
    }
}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        Queue {
            ring: self.ring.clone(),
            compare: self.compare,
            _type: PhantomData,
        }
    }
}

impl<T> fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("len", &self.len())
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

impl<T> Handle for Queue<T> {
    type Wire = RingWire;

    fn to_wire(&self, fds: &mut FdSink) -> Result<RingWire> {
        self.ring.to_wire(fds)
    }

    fn from_wire(wire: RingWire, fds: &mut FdSource) -> Result<Self> {
        Queue::from_ring(Ring::from_wire(wire, fds)?, Order::Fifo, false, None)
    }
}

impl<T> serde::Serialize for Queue<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        handle::serialize(self, s)
    }
}

impl<'de, T> serde::Deserialize<'de> for Queue<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        handle::deserialize(d)
    }
}
