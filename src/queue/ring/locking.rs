//! The put and get locks: taken without building a future when free, and recovering the ring
//! when a previous owner died holding one.

use super::Ring;
use crate::Result;
use crate::sync::{Held, HoldError, Lock, LockError, LockGuard};

impl Ring {
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

    pub(super) fn get_lock(&self) -> &Lock {
        if self.single_lock() {
            &self.put_lock
        } else {
            &self.get_lock
        }
    }

    /// `lock` if it is free right now: the common case, taken without building the waiting
    /// future or cloning the lock's handle.
    #[inline]
    pub(super) fn lock_now<'a>(&self, lock: &'a Lock) -> Option<Result<Held<'a>>> {
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

    pub(super) async fn locked<'a>(&self, lock: &'a Lock) -> Result<Held<'a>> {
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

    pub(super) async fn put_locked(&self) -> Result<Held<'_>> {
        self.locked(&self.put_lock).await
    }

    pub(super) fn put_locked_blocking(&self) -> Result<Held<'_>> {
        self.locked_blocking(&self.put_lock)
    }

    pub(super) async fn get_locked(&self) -> Result<Held<'_>> {
        self.locked(self.get_lock()).await
    }

    pub(super) fn get_locked_blocking(&self) -> Result<Held<'_>> {
        self.locked_blocking(self.get_lock())
    }
}
