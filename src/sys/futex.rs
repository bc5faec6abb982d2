//! `futex(2)` wait and wake on a 32-bit word in a shared mapping.
//!
//! Always with *shared* keys: a `FUTEX_PRIVATE_FLAG` futex is keyed by the address space and never
//! wakes another process (reliability-design.md, experiment E2).
//!
//! # References
//! - [futex(2)](https://man7.org/linux/man-pages/man2/futex.2.html)

use std::sync::atomic::AtomicU32;
use std::time::Duration;

use rustix::thread::futex;

/// How a [`wait`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wake {
    /// Woken by a `wake` (or spuriously): re-check the state.
    Woken,
    /// The word did not hold the expected value when we went to sleep.
    Changed,
    /// The timeout passed.
    TimedOut,
}

/// `FUTEX_WAIT`: sleeps while `*word == expected`, at most `timeout` (relative).
pub(crate) fn wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) -> Wake {
    let ts = timeout.map(|d| rustix::fs::Timespec {
        tv_sec: d.as_secs().min(i64::MAX as u64) as i64,
        tv_nsec: d.subsec_nanos() as _,
    });
    match futex::wait(word, futex::Flags::empty(), expected, ts.as_ref()) {
        Ok(()) => Wake::Woken,
        Err(rustix::io::Errno::AGAIN) => Wake::Changed,
        Err(rustix::io::Errno::TIMEDOUT) => Wake::TimedOut,
        // EINTR (a signal) and anything unexpected: let the caller re-check its state.
        Err(_) => Wake::Woken,
    }
}

/// `FUTEX_WAKE`: wakes up to `count` sleepers on `word`, in any process. Returns how many woke.
pub(crate) fn wake(word: &AtomicU32, count: u32) -> usize {
    futex::wake(word, futex::Flags::empty(), count).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::Ordering;

    #[test]
    fn stale_value_returns_at_once() {
        let word = AtomicU32::new(1);
        assert_eq!(wait(&word, 0, Some(Duration::from_secs(5))), Wake::Changed);
    }

    #[test]
    fn timeout_expires() {
        let word = AtomicU32::new(0);
        assert_eq!(
            wait(&word, 0, Some(Duration::from_millis(10))),
            Wake::TimedOut
        );
    }

    /// Two mappings of one memfd sit at different addresses, as in two processes. Only a shared
    /// (inode-keyed) futex connects them; a private one would sleep until its timeout.
    #[test]
    fn wake_crosses_mappings_of_one_segment() {
        let fd = super::super::memfd::create_sealed("futex", 4096).unwrap();
        let a = Arc::new(super::super::mapping::Mapping::map(&fd, 4096).unwrap());
        let b = super::super::mapping::Mapping::map(&fd, 4096).unwrap();
        assert_ne!(a.as_ptr(), b.as_ptr());
        let sleeper = {
            let a = a.clone();
            std::thread::spawn(move || {
                let word = a.atomic_u32(0).unwrap();
                let mut outcomes = Vec::new();
                while word.load(Ordering::Acquire) == 0 {
                    outcomes.push(wait(word, 0, Some(Duration::from_secs(30))));
                }
                outcomes
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        let word = b.atomic_u32(0).unwrap();
        word.store(1, Ordering::Release);
        wake(word, u32::MAX);
        let outcomes = sleeper.join().unwrap();
        assert!(!outcomes.contains(&Wake::TimedOut), "{outcomes:?}");
    }

    #[test]
    fn wake_reaches_a_sleeper() {
        let word = Arc::new(AtomicU32::new(0));
        let w = word.clone();
        let sleeper = std::thread::spawn(move || {
            while w.load(Ordering::Acquire) == 0 {
                wait(&w, 0, Some(Duration::from_secs(30)));
            }
        });
        std::thread::sleep(Duration::from_millis(20));
        word.store(1, Ordering::Release);
        wake(&word, u32::MAX);
        sleeper.join().unwrap();
    }
}
