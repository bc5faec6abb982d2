//! Putting: records are written past `tail` under the put lock and committed, one or a batch
//! at a time, with one store of `tail`.

use super::{Mark, Put, Record, Ring, SPILLED, TAIL, record_size};
use crate::sync::Held;
use crate::{Error, Result};

impl Ring {
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

    /// [`try_put_many`](Self::try_put_many) waiting for the lock on this thread (it is held
    /// only for copies, or recovered from a dead holder).
    pub(crate) fn try_put_many_blocking<B: AsRef<[u8]>>(&self, payloads: &[B]) -> Result<usize> {
        let guard = self.put_locked_blocking()?;
        let result = self.put_records(payloads.iter().map(AsRef::as_ref), 0);
        guard.release_fenced();
        if let Ok(1..) = result {
            self.seg.channel.notify_after_fence();
        }
        result
    }

    /// One locked attempt to queue a prepared record; wakes getters on success.
    pub(crate) async fn try_put_record(&self, record: &mut Record) -> Result<Put> {
        let flags = if record.spilled { SPILLED } else { 0 };
        let result = self.try_put_slice(&record.payload, flags).await;
        if let Ok(Put::Done) = result {
            record.mark_queued();
        }
        result
    }

    pub(crate) fn try_put_record_blocking(&self, record: &mut Record) -> Result<Put> {
        let flags = if record.spilled { SPILLED } else { 0 };
        let result = self.try_put_slice_blocking(&record.payload, flags);
        if let Ok(Put::Done) = result {
            record.mark_queued();
        }
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
}
