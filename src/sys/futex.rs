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

/// `FUTEX_WAKE` of every sleeper on `word`, in any process. Returns how many woke.
///
/// The kernel takes the count as a C `int` and stops after the first sleeper for any negative
/// count, so "all" is `i32::MAX`, never `u32::MAX` (which arrives as -1 and wakes one).
pub(crate) fn wake_all(word: &AtomicU32) -> usize {
    futex::wake(word, futex::Flags::empty(), i32::MAX as u32).unwrap_or(0)
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
        wake_all(word);
        let outcomes = sleeper.join().unwrap();
        assert!(!outcomes.contains(&Wake::TimedOut), "{outcomes:?}");
    }

    /// Regression: `u32::MAX` as the count reached the kernel as -1 and woke a single sleeper.
    #[test]
    fn wake_all_wakes_every_sleeper_at_once() {
        let word = Arc::new(AtomicU32::new(0));
        let sleepers: Vec<_> = (0..4)
            .map(|_| {
                let w = word.clone();
                std::thread::spawn(move || {
                    while w.load(Ordering::Acquire) == 0 {
                        wait(&w, 0, Some(Duration::from_secs(60)));
                    }
                })
            })
            .collect();
        // Once all four sleep, one call wakes all four (they go back to sleep while the word is
        // 0); a sleeper not yet asleep makes a call wake fewer, so try until one wakes four.
        let mut best = 0;
        for _ in 0..200 {
            std::thread::sleep(Duration::from_millis(20));
            best = best.max(wake_all(&word));
            if best == 4 {
                break;
            }
        }
        word.store(1, Ordering::Release);
        wake_all(&word);
        for s in sleepers {
            s.join().unwrap();
        }
        assert_eq!(best, 4, "one FUTEX_WAKE woke at most {best} of 4 sleepers");
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
        wake_all(&word);
        sleeper.join().unwrap();
    }
}
