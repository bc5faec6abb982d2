//! The header at the start of every segment of ours.
//!
//! ```text
//! offset  size  field
//!      0     8  magic "TKMP-SHM"
//!      8     4  layout version
//!     12     4  kind (what lies behind the header: raw bytes, a ShareableList, ...)
//!     16     8  data size in bytes (the segment is at least HEADER_SIZE + this)
//!     24     4  state: READY once the creator finished initialising
//!     28    36  reserved (zero)
//! ```

use std::sync::atomic::Ordering;

use crate::sys::mapping::Mapping;
use crate::{Error, Result};

pub(crate) const HEADER_SIZE: usize = 64;
const MAGIC: u64 = u64::from_le_bytes(*b"TKMP-SHM");
// 2: wait channels count waiters in epochs (notify.rs) and keep a fourth word.
const VERSION: u32 = 2;
const READY: u32 = 0x5245_4459;

/// What a segment holds behind its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum Kind {
    Bytes = 1,
    ShareableList = 2,
    Event = 3,
    Lock = 4,
    Semaphore = 5,
    Barrier = 6,
    Condition = 7,
    Queue = 8,
}

impl Kind {
    fn name(raw: u32) -> &'static str {
        match raw {
            1 => "raw shared memory",
            2 => "a ShareableList",
            3 => "an Event",
            4 => "a Lock",
            5 => "a Semaphore",
            6 => "a Barrier",
            7 => "a Condition",
            8 => "a Queue",
            _ => "an unknown kind",
        }
    }
}

/// Writes a fresh header; `READY` is published last, with release ordering, so an opener that
/// sees it also sees every field and whatever the creator initialised before.
pub(crate) fn initialise(map: &Mapping, kind: Kind, data_size: usize) -> Result<()> {
    map.atomic_u64(0)?.store(MAGIC, Ordering::Relaxed);
    map.atomic_u32(8)?.store(VERSION, Ordering::Relaxed);
    map.atomic_u32(12)?.store(kind as u32, Ordering::Relaxed);
    map.atomic_u64(16)?
        .store(data_size as u64, Ordering::Relaxed);
    Ok(())
}

/// Marks the segment ready for openers.
pub(crate) fn publish(map: &Mapping) -> Result<()> {
    map.atomic_u32(24)?.store(READY, Ordering::Release);
    Ok(())
}

/// Reads and validates the header of a segment whose file is `file_size` bytes long; returns the
/// data size. `map` must cover at least `HEADER_SIZE` bytes.
pub(crate) fn validate(map: &Mapping, file_size: u64, want: Kind) -> Result<usize> {
    if map.atomic_u64(0)?.load(Ordering::Relaxed) != MAGIC {
        return Err(Error::Corrupt(
            "not a tokio-multiprocessing segment (bad magic)".into(),
        ));
    }
    if map.atomic_u32(24)?.load(Ordering::Acquire) != READY {
        return Err(Error::Corrupt(
            "segment is not initialised (its creator did not finish)".into(),
        ));
    }
    let version = map.atomic_u32(8)?.load(Ordering::Relaxed);
    if version != VERSION {
        return Err(Error::Corrupt(format!(
            "segment layout version {version}, this build understands {VERSION}"
        )));
    }
    let kind = map.atomic_u32(12)?.load(Ordering::Relaxed);
    if kind != want as u32 {
        return Err(Error::Corrupt(format!(
            "segment holds {}, not {}",
            Kind::name(kind),
            Kind::name(want as u32)
        )));
    }
    let size = map.atomic_u64(16)?.load(Ordering::Relaxed);
    let needed = size.checked_add(HEADER_SIZE as u64);
    match needed {
        Some(needed) if needed <= file_size && usize::try_from(size).is_ok() => Ok(size as usize),
        _ => Err(Error::Corrupt(format!(
            "segment header claims {size} bytes but the segment holds only {}",
            file_size.saturating_sub(HEADER_SIZE as u64)
        ))),
    }
}
