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
    /// A pool worker died (killed, crashed or exited) while it ran the task, and no retry was
    /// left: the task's fate is unknown. Only that task fails; the pool replaced the worker.
    #[error("pool worker {pid} {cause}")]
    WorkerDied {
        /// The worker's process id.
        pid: u32,
        /// How it ended.
        cause: ProcessFailure,
    },
    /// An operating-system error.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// A method of a managed object panicked in the manager, or the manager could not run it
    /// (no such object or method, arguments that do not decode); the message says which. The
    /// manager goes on serving.
    #[error("the manager could not complete the call: {0}")]
    Remote(String),
}

impl Error {
    /// An equal error (the same variant and message), for handing one failure to several
    /// waiters.
    pub(crate) fn duplicate(&self) -> Error {
        Error::from(ErrorWire::from(self))
    }
}

/// How a child process failed; see [`Process::join`](crate::Process::join).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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

/// An [`Error`] crossing to another process (a child entry's or a pool task's `Err`): the
/// variant travels, and so does the message; an I/O error keeps its kind.
#[derive(serde::Serialize, serde::Deserialize)]
enum ErrorWire {
    Closed,
    Empty,
    Timeout,
    OwnerDied,
    Broken,
    TooLarge { size: u64, max: u64 },
    Auth,
    Corrupt(String),
    NotFound(String),
    AlreadyExists(String),
    IndexOutOfRange { index: u64, len: u64 },
    InvalidArgument(String),
    Process(ProcessFailure),
    Io { kind: String, message: String },
    WorkerDied { pid: u32, cause: ProcessFailure },
    Remote(String),
}

/// The I/O error kinds that keep their identity across processes (the others arrive as
/// `Other`, with their message).
const IO_KINDS: &[io::ErrorKind] = &[
    io::ErrorKind::NotFound,
    io::ErrorKind::PermissionDenied,
    io::ErrorKind::ConnectionRefused,
    io::ErrorKind::ConnectionReset,
    io::ErrorKind::ConnectionAborted,
    io::ErrorKind::NotConnected,
    io::ErrorKind::AddrInUse,
    io::ErrorKind::AddrNotAvailable,
    io::ErrorKind::BrokenPipe,
    io::ErrorKind::AlreadyExists,
    io::ErrorKind::WouldBlock,
    io::ErrorKind::InvalidInput,
    io::ErrorKind::InvalidData,
    io::ErrorKind::TimedOut,
    io::ErrorKind::WriteZero,
    io::ErrorKind::Interrupted,
    io::ErrorKind::Unsupported,
    io::ErrorKind::UnexpectedEof,
    io::ErrorKind::OutOfMemory,
];

impl From<&Error> for ErrorWire {
    fn from(e: &Error) -> ErrorWire {
        match e {
            Error::Closed => ErrorWire::Closed,
            Error::Empty => ErrorWire::Empty,
            Error::Timeout => ErrorWire::Timeout,
            Error::OwnerDied => ErrorWire::OwnerDied,
            Error::Broken => ErrorWire::Broken,
            Error::TooLarge { size, max } => ErrorWire::TooLarge {
                size: *size as u64,
                max: *max as u64,
            },
            Error::Auth => ErrorWire::Auth,
            Error::Corrupt(m) => ErrorWire::Corrupt(m.clone()),
            Error::NotFound(m) => ErrorWire::NotFound(m.clone()),
            Error::AlreadyExists(m) => ErrorWire::AlreadyExists(m.clone()),
            Error::IndexOutOfRange { index, len } => ErrorWire::IndexOutOfRange {
                index: *index as u64,
                len: *len as u64,
            },
            Error::InvalidArgument(m) => ErrorWire::InvalidArgument(m.clone()),
            Error::Process(p) => ErrorWire::Process(p.clone()),
            Error::WorkerDied { pid, cause } => ErrorWire::WorkerDied {
                pid: *pid,
                cause: cause.clone(),
            },
            Error::Remote(m) => ErrorWire::Remote(m.clone()),
            Error::Io(e) => ErrorWire::Io {
                kind: format!("{:?}", e.kind()),
                message: e.to_string(),
            },
        }
    }
}

impl From<ErrorWire> for Error {
    fn from(e: ErrorWire) -> Error {
        let size = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        match e {
            ErrorWire::Closed => Error::Closed,
            ErrorWire::Empty => Error::Empty,
            ErrorWire::Timeout => Error::Timeout,
            ErrorWire::OwnerDied => Error::OwnerDied,
            ErrorWire::Broken => Error::Broken,
            ErrorWire::TooLarge { size: s, max } => Error::TooLarge {
                size: size(s),
                max: size(max),
            },
            ErrorWire::Auth => Error::Auth,
            ErrorWire::Corrupt(m) => Error::Corrupt(m),
            ErrorWire::NotFound(m) => Error::NotFound(m),
            ErrorWire::AlreadyExists(m) => Error::AlreadyExists(m),
            ErrorWire::IndexOutOfRange { index, len } => Error::IndexOutOfRange {
                index: size(index),
                len: size(len),
            },
            ErrorWire::InvalidArgument(m) => Error::InvalidArgument(m),
            ErrorWire::Process(p) => Error::Process(p),
            ErrorWire::WorkerDied { pid, cause } => Error::WorkerDied { pid, cause },
            ErrorWire::Remote(m) => Error::Remote(m),
            ErrorWire::Io { kind, message } => {
                let kind = IO_KINDS
                    .iter()
                    .copied()
                    .find(|k| format!("{k:?}") == kind)
                    .unwrap_or(io::ErrorKind::Other);
                Error::Io(io::Error::new(kind, message))
            }
        }
    }
}

/// Errors cross processes: a child entry may return `mp::Result<T>` and `join` hands back the
/// same variant, with its message.
impl serde::Serialize for Error {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        ErrorWire::from(self).serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for Error {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        ErrorWire::deserialize(d).map(Error::from)
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
