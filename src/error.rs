//! The crate's error type.

use std::fmt;
use std::io;

/// What can go wrong in tokio-multiprocessing.
///
/// Operations that consume an item hand it back in their own error type instead (a queue's
/// `put`, for example); everything else returns this enum. Match on the variants you can act on
/// and treat the rest as failures: the enum is `#[non_exhaustive]`, so new variants may appear.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The other side is gone (Python: `EOFError`, `BrokenPipeError`).
    #[error("the other side is closed")]
    Closed,
    /// There was nothing to take.
    #[error("nothing to take")]
    Empty,
    /// The deadline passed first.
    #[error("the operation timed out")]
    Timeout,
    /// The process that owned a lock died while holding it.
    #[error("the previous owner died while holding the lock")]
    OwnerDied,
    /// A barrier was aborted, reset or lost a party.
    #[error("the barrier is broken")]
    Broken,
    /// A value, message or segment is larger than allowed.
    #[error("{size} bytes is larger than the maximum of {max}")]
    TooLarge {
        /// The size that was asked for.
        size: usize,
        /// The largest size allowed.
        max: usize,
    },
    /// Authentication with a peer failed.
    #[error("authentication failed")]
    Auth,
    /// Shared state, a segment or a message failed validation: a buggy or hostile peer, or
    /// something that is not ours.
    #[error("invalid shared state or message: {0}")]
    Corrupt(String),
    /// No named segment (or other named object) exists under this name.
    #[error("no shared memory segment named {0:?}")]
    NotFound(String),
    /// A named segment with this name exists already.
    #[error("a shared memory segment named {0:?} already exists")]
    AlreadyExists(String),
    /// An index past the end (Python: `IndexError`).
    #[error("index {index} is out of range for length {len}")]
    IndexOutOfRange {
        /// The index that was asked for.
        index: usize,
        /// The length of the sequence.
        len: usize,
    },
    /// An argument the call cannot work with (Python: `ValueError` / `TypeError`).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A child process failed before producing its result.
    #[error("child process {0}")]
    Process(ProcessFailure),
    /// An operating-system error.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// How a child process failed; see [`Process::join`](crate::Process::join).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProcessFailure {
    /// Its entry panicked, with this message.
    Panicked(String),
    /// It exited with this non-zero code (or with 0 but without a result).
    Exited(i32),
    /// It was killed by this signal (Python reports `exitcode == -signal`).
    Signaled(i32),
}

impl fmt::Display for ProcessFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProcessFailure::Panicked(msg) => write!(f, "panicked: {msg}"),
            ProcessFailure::Exited(0) => write!(
                f,
                "exited without running its entry (is `mp::init()` the first call in its `main` or test?)"
            ),
            ProcessFailure::Exited(code) => write!(f, "exited with code {code}"),
            ProcessFailure::Signaled(sig) => write!(f, "was killed by signal {sig}"),
        }
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        match e {
            Error::Io(e) => e,
            Error::Closed => io::Error::new(io::ErrorKind::BrokenPipe, e),
            Error::Timeout => io::Error::new(io::ErrorKind::TimedOut, e),
            Error::NotFound(_) => io::Error::new(io::ErrorKind::NotFound, e),
            Error::AlreadyExists(_) => io::Error::new(io::ErrorKind::AlreadyExists, e),
            Error::Corrupt(_) => io::Error::new(io::ErrorKind::InvalidData, e),
            Error::InvalidArgument(_) | Error::IndexOutOfRange { .. } => {
                io::Error::new(io::ErrorKind::InvalidInput, e)
            }
            e => io::Error::other(e),
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
