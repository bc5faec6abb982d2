//! The other queue flavours, each a [`Queue`] with another order or extra bookkeeping, as
//! crossbeam-channel puts several flavours behind one engine: [`SimpleQueue`], [`LifoQueue`],
//! [`PriorityQueue`], [`JoinableQueue`]. They deref to [`Queue`] for `put`, `get`, `len`,
//! `close` and the rest.

use std::cmp::Ordering;
use std::fmt;
use std::ops::Deref;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::fifo::Queue;
use super::ring::{self, Order, Ring, RingWire};
use crate::handle::{self, FdSink, FdSource, Handle};
use crate::{Error, Result};

fn compare_items<T: Ord + DeserializeOwned>(a: &[u8], b: &[u8]) -> Result<Ordering> {
    let a: T = handle::decode(a, Vec::new())?;
    let b: T = handle::decode(b, Vec::new())?;
    Ok(a.cmp(&b))
}

/// A handle to a received ring, for the flavours' serde impls.
struct Received(Ring);

impl Handle for Received {
    type Wire = RingWire;
    fn to_wire(&self, fds: &mut FdSink) -> Result<RingWire> {
        self.0.to_wire(fds)
    }
    fn from_wire(wire: RingWire, fds: &mut FdSource) -> Result<Self> {
        Ok(Received(Ring::from_wire(wire, fds)?))
    }
}

impl<'de> Deserialize<'de> for Received {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        handle::deserialize(d)
    }
}

macro_rules! flavour {
    ($name:ident, $doc:literal, $order:expr, $joinable:expr, [$($bound:tt)*], $compare:expr) => {
        #[doc = $doc]
        pub struct $name<T>(Queue<T>);

        impl<T $($bound)*> $name<T> {
            /// A queue of at most `maxsize` items (0: bounded only by its 1 MiB ring).
            ///
            /// # Errors
            ///
            /// As [`QueueBuilder::build`](super::QueueBuilder::build).
            pub fn new(maxsize: usize) -> Result<Self> {
                Self::with(Queue::<T>::builder().maxsize(maxsize))
            }

            /// A queue with the options of `builder` (capacity, maximum message, maxsize).
            ///
            /// # Errors
            ///
            /// As [`QueueBuilder::build`](super::QueueBuilder::build).
            pub fn with(builder: super::QueueBuilder<T>) -> Result<Self> {
                Ok($name(builder.build_with($order, $joinable, $compare)?))
            }
        }

        impl<T> Deref for $name<T> {
            type Target = Queue<T>;
            fn deref(&self) -> &Queue<T> {
                &self.0
            }
        }

        impl<T> Clone for $name<T> {
            fn clone(&self) -> Self {
                $name(self.0.clone())
            }
        }

        impl<T> fmt::Debug for $name<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_tuple(stringify!($name)).field(&self.0).finish()
            }
        }

        impl<T> Serialize for $name<T> {
            fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                self.0.serialize(s)
            }
        }

        impl<'de, T $($bound)*> Deserialize<'de> for $name<T> {
            fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                let Received(ring) = Received::deserialize(d)?;
                Queue::from_ring(ring, $order, $joinable, $compare)
                    .map($name)
                    .map_err(serde::de::Error::custom)
            }
        }
    };
}

flavour!(
    SimpleQueue,
    "A queue without a size limit beyond its ring's bytes (Python's `multiprocessing.SimpleQueue`).",
    Order::Fifo,
    false,
    [],
    None
);

flavour!(
    LifoQueue,
    "A last-in-first-out queue across processes (Python's `queue.LifoQueue`, which Python offers \
     across processes only through a Manager). `get` takes the newest item.",
    Order::Lifo,
    false,
    [],
    None
);

flavour!(
    PriorityQueue,
    "A priority queue across processes (Python's `queue.PriorityQueue`): `get` takes the smallest \
     item (`T: Ord`), the oldest among equals. Each `get` compares every queued item, so keep \
     `maxsize` moderate.",
    Order::Priority,
    false,
    [: Ord + DeserializeOwned],
    Some(compare_items::<T>)
);

flavour!(
    JoinableQueue,
    "A queue whose consumers mark items done, so producers can wait for all work to finish \
     (Python's `multiprocessing.JoinableQueue`): every `put` adds one unfinished item, \
     [`task_done`](Self::task_done) removes one, [`join`](Self::join) waits for none.",
    Order::Fifo,
    true,
    [],
    None
);

impl<T> JoinableQueue<T> {
    /// Marks one item taken with `get` as processed.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] when called more times than items were put (Python's
    /// `ValueError`).
    pub fn task_done(&self) -> Result<()> {
        self.0.ring.task_done()
    }

    /// Items put but not yet marked done.
    pub fn unfinished(&self) -> u64 {
        self.0.ring.unfinished()
    }

    /// Waits until every item put so far was marked done.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it only waits.
    pub async fn join(&self) {
        self.0.ring.wait_all_done(None).await;
    }

    /// [`join`](Self::join) with a deadline.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`].
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe.
    pub async fn join_timeout(&self, timeout: Duration) -> Result<()> {
        if self.0.ring.wait_all_done(ring::deadline(timeout)).await {
            Ok(())
        } else {
            Err(Error::Timeout)
        }
    }

    /// [`join`](Self::join) for threads.
    pub fn join_blocking(&self) {
        self.0.ring.wait_all_done_blocking(None);
    }
}
