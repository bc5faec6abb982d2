//! A ring in a message: its segment, its "not full" doorbell and its two locks; everything
//! read from a received segment is checked before the ring is built.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};

use super::{
    CAPACITY, JOINABLE, Limits, MAX_CAPACITY, MAX_ITEMS, MAX_MESSAGE, NOT_FULL, ORDER, Order, RING,
    Ring,
};
use crate::handle::{FdIndex, FdSink, FdSource};
use crate::notify::{CHANNEL_SIZE, WaitChannel};
use crate::shm::header::Kind;
use crate::sync::Lock;
use crate::sync::segment::{Segment, SegmentWire};
use crate::sys::eventfd;
use crate::{Error, Result};

/// The plain-data part of a queue in a message.
///
/// Opaque: it only travels inside the crate's own messages (see [`Handle`](crate::handle::Handle)).
#[derive(Debug, Serialize, Deserialize)]
pub struct RingWire {
    seg: SegmentWire,
    not_full: FdIndex,
    put_lock: Lock,
    get_lock: Lock,
}

impl Ring {
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
