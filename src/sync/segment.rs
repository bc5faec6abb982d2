//! The shared part of every synchronization primitive: a segment holding a wait channel and the
//! primitive's state words, plus the channel's doorbell.

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU32, AtomicU64};

use serde::{Deserialize, Serialize};

use crate::handle::{FdIndex, FdSink, FdSource};
use crate::notify::{CHANNEL_SIZE, WaitChannel};
use crate::shm::SharedMemory;
use crate::shm::SharedMemoryWire;
use crate::shm::header::HEADER_SIZE;
use crate::shm::header::Kind;
use crate::sys::eventfd;
use crate::sys::mapping::{Appendable, Mapping};
use crate::{Error, Result};

/// Where the state words start in the mapping.
const STATE_START: usize = HEADER_SIZE + CHANNEL_SIZE;

/// A primitive's segment: `[wait channel][state words]`.
#[derive(Debug)]
pub(crate) struct Segment {
    shm: SharedMemory,
    /// `shm`'s mapping, kept here so a state word is one bounds check away.
    map: Mapping,
    pub(crate) channel: WaitChannel,
}

impl Segment {
    /// Creates a segment for `kind` with `state` bytes of state, initialised by `init` before
    /// anyone else can see it.
    pub(crate) fn create(
        kind: Kind,
        state: usize,
        init: impl FnOnce(&SharedMemory) -> Result<()>,
    ) -> Result<Self> {
        let shm = SharedMemory::create_kind(kind, CHANNEL_SIZE + state, None, init)?;
        let channel = WaitChannel::new(&shm, 0, eventfd::create()?)?;
        Ok(Segment {
            map: shm.mapping().clone(),
            shm,
            channel,
        })
    }

    /// The `AtomicU32` at state offset `offset` (fixed by the primitive, in range by construction).
    #[inline]
    pub(crate) fn u32(&self, offset: usize) -> &AtomicU32 {
        self.map
            .try_atomic_u32(STATE_START + offset)
            .expect("state offsets are validated when the segment is made or received")
    }

    /// The `AtomicU64` at state offset `offset`.
    #[inline]
    pub(crate) fn u64(&self, offset: usize) -> &AtomicU64 {
        self.map
            .try_atomic_u64(STATE_START + offset)
            .expect("state offsets are validated when the segment is made or received")
    }

    pub(crate) fn to_wire(&self, fds: &mut FdSink) -> Result<SegmentWire> {
        Ok(SegmentWire {
            shm: self.shm.wire(fds)?,
            doorbell: fds.push(self.channel.doorbell())?,
        })
    }

    /// Rebuilds a received segment of `kind` whose state is `state` bytes, validating the
    /// segment (seals, header, kind, size) and the doorbell.
    pub(crate) fn from_wire(
        wire: SegmentWire,
        fds: &mut FdSource,
        kind: Kind,
        state: usize,
    ) -> Result<Self> {
        let shm = SharedMemory::from_wire_kind(wire.shm, fds, kind)?;
        if shm.size() < CHANNEL_SIZE + state {
            return Err(Error::Corrupt(format!(
                "{} bytes of synchronization state, {} expected",
                shm.size(),
                CHANNEL_SIZE + state
            )));
        }
        let doorbell = fds.take(wire.doorbell)?;
        if !eventfd::is_eventfd(doorbell.as_raw_fd()) {
            return Err(Error::Corrupt(
                "a primitive's doorbell must be an eventfd".into(),
            ));
        }
        let channel = WaitChannel::new(&shm, 0, doorbell)?;
        Ok(Segment {
            map: shm.mapping().clone(),
            shm,
            channel,
        })
    }

    /// The segment itself (for a second wait channel in it).
    #[inline]
    pub(crate) fn shm(&self) -> &SharedMemory {
        &self.shm
    }

    /// Appends `len` bytes of the state area at `offset` to `out`.
    #[inline]
    pub(crate) fn read_append(
        &self,
        offset: usize,
        len: usize,
        out: &mut impl Appendable,
    ) -> Result<()> {
        self.shm.read_append(CHANNEL_SIZE + offset, len, out)
    }

    /// Copies bytes into the state area at `offset`.
    #[inline]
    pub(crate) fn write(&self, offset: usize, data: &[u8]) -> Result<()> {
        self.shm.write_at(CHANNEL_SIZE + offset, data)
    }

    /// Whether `other` is the same segment (whichever process or handle made it).
    pub(crate) fn same_as(&self, other: &Segment) -> bool {
        self.shm.as_ptr() == other.shm.as_ptr() || self.shm.same_segment(&other.shm)
    }

    /// Whether `state` bytes of state fit in the segment.
    pub(crate) fn fits(&self, state: usize) -> bool {
        self.shm.size() >= CHANNEL_SIZE + state
    }
}

/// The plain-data part of a synchronization primitive in a message.
///
/// Opaque: it only travels inside the crate's own messages (see [`Handle`](crate::handle::Handle)).
#[derive(Debug, Serialize, Deserialize)]
pub struct SegmentWire {
    shm: SharedMemoryWire,
    doorbell: FdIndex,
}
