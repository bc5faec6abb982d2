//! Items larger than the ring (FIFO only) travel in a named segment of their own, whose name
//! the record carries; it is removed exactly once, by the getter that takes it, or by a sweep
//! when its producer died before queueing it.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::sys::mapping::Appendable;
use crate::{Error, Result};

use super::take_fifo::Take;
use super::{Mark, Order, QUEUE_ID, RECORD_HEADER, Ring, SPILLED};

/// What a put stores: the item, or the name of the segment it was spilled to. A spilled record
/// that is dropped without being queued (a failed or cancelled put) removes its segment.
#[derive(Debug)]
pub(crate) struct Record {
    pub(crate) payload: Vec<u8>,
    pub(super) spilled: bool,
    pub(super) queued: bool,
}

impl Drop for Record {
    fn drop(&mut self) {
        if self.spilled
            && !self.queued
            && let Ok(name) = std::str::from_utf8(&self.payload)
        {
            let _ = crate::sys::shm_open::unlink(name);
            crate::shm::tracker::forget(name);
        }
    }
}

impl Record {
    /// After the record was queued: the spilled item belongs to the queue now, so it must
    /// outlive this process but not the whole process tree (see `shm/tracker.rs`).
    pub(super) fn mark_queued(&mut self) {
        self.queued = true;
        if self.spilled
            && let Ok(name) = std::str::from_utf8(&self.payload)
        {
            crate::shm::tracker::hand_to_tree(name);
        }
    }
}

impl Ring {
    /// With the get lock held: takes the oldest item of a FIFO queue when it is spilled. Its
    /// segment is read and removed before the commit: a getter killed in between leaves the
    /// record, and at worst a record whose segment is gone, which the next getter skips: the
    /// item went with the killed getter. No one else commits the record meanwhile (lock-free
    /// getters stop at it).
    pub(super) fn take_spilled(&self, out: &mut impl Appendable) -> Result<Take> {
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
                match item? {
                    Some(item) => {
                        out.append(&item);
                        return Ok(Take::Taken(1));
                    }
                    // A getter killed between removing the segment and committing took the
                    // item with it, as one killed while copying a small item does: nobody
                    // else is to blame, so go on to the next item.
                    None => continue,
                }
            }
        }
    }

    pub(super) fn id(&self) -> u64 {
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
        // Announced before the file exists: a producer killed between creating it and
        // registering it (a few µs) must not leave it behind.
        crate::shm::tracker::expect(&name);
        let spill = match crate::SharedMemory::create_named(&name, payload.len()) {
            Ok(spill) => spill,
            Err(e) => {
                crate::shm::tracker::unexpect(&name);
                return Err(e);
            }
        };
        spill.write_at(0, &payload)?;
        // The getter removes it; until it is queued the tracker removes it if we die.
        spill.release_name();
        Ok(Record {
            payload: name.into_bytes(),
            spilled: true,
            queued: false,
        })
    }

    /// Reads a spilled item and removes its segment; `None` when the segment is gone (a getter
    /// was killed after removing it, before committing). The name must be one of ours: a
    /// hostile record cannot make us read or unlink anything else.
    fn unspill(&self, name: &[u8]) -> Result<Option<Vec<u8>>> {
        let name = std::str::from_utf8(name)
            .map_err(|_| Error::Corrupt("spill name is not UTF-8".into()))?;
        name.strip_prefix(&self.spill_prefix())
            .filter(|r| r.len() < 64 && r.bytes().all(|b| b.is_ascii_digit() || b == b'-'))
            .ok_or_else(|| {
                Error::Corrupt(format!(
                    "record names a segment that is not this queue's: {name:?}"
                ))
            })?;
        let spill = match crate::SharedMemory::open(name) {
            Ok(spill) => spill,
            Err(Error::NotFound(_)) => return Ok(None),
            Err(e) => {
                // One of ours (the name was checked) that fails validation is of no use to
                // anyone: remove it rather than leave it in /dev/shm for good.
                let _ = crate::sys::shm_open::unlink(name);
                crate::shm::tracker::forget(name);
                return Err(Error::Corrupt(format!(
                    "spilled item {name:?} cannot be opened: {e}"
                )));
            }
        };
        if spill.size() > self.limits.max_message {
            let _ = spill.unlink();
            return Err(Error::Corrupt(format!(
                "spilled item of {} bytes",
                spill.size()
            )));
        }
        // Someone who can open the file may truncate it under us: then the copy fails (the
        // mapping is guarded) and the item is reported lost, not passed on as zeros.
        let data = spill.to_vec();
        let _ = spill.unlink();
        data.map(Some).map_err(|e| {
            Error::Corrupt(format!(
                "spilled item {name:?} was truncated while read: {e}"
            ))
        })
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
}
