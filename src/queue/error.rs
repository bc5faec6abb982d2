//! [`PutError`]: a refused put hands the item back.

use std::fmt;

use crate::Error;

/// Why a put did not queue the item; the item comes back in every case.
#[non_exhaustive]
pub enum PutError<T> {
    /// The queue is full (`try_put`).
    Full(T),
    /// The deadline passed while the queue stayed full (`put_timeout`).
    Timeout(T),
    /// The queue was closed.
    Closed(T),
    /// The serialised item is larger than the queue's maximum message.
    TooLarge(T),
    /// Anything else: the item cannot be serialised, holds handles (which cannot travel through a
    /// queue's shared memory yet), or the queue failed validation.
    Other(T, Error),
}

impl<T> PutError<T> {
    /// The item that was not queued.
    pub fn into_inner(self) -> T {
        match self {
            PutError::Full(t)
            | PutError::Timeout(t)
            | PutError::Closed(t)
            | PutError::TooLarge(t) => t,
            PutError::Other(t, _) => t,
        }
    }

    /// Whether the queue was full.
    pub fn is_full(&self) -> bool {
        matches!(self, PutError::Full(_))
    }

    /// Whether the queue was closed.
    pub fn is_closed(&self) -> bool {
        matches!(self, PutError::Closed(_))
    }

    fn describe(&self) -> String {
        match self {
            PutError::Full(_) => "queue is full".into(),
            PutError::Timeout(_) => "timed out waiting for room in the queue".into(),
            PutError::Closed(_) => "queue is closed".into(),
            PutError::TooLarge(_) => "item is larger than the queue's maximum message".into(),
            PutError::Other(_, e) => format!("cannot queue the item: {e}"),
        }
    }
}

impl<T> fmt::Debug for PutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            PutError::Full(_) => "Full",
            PutError::Timeout(_) => "Timeout",
            PutError::Closed(_) => "Closed",
            PutError::TooLarge(_) => "TooLarge",
            PutError::Other(_, e) => return write!(f, "Other(.., {e:?})"),
        };
        write!(f, "{name}(..)")
    }
}

impl<T> fmt::Display for PutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

impl<T> std::error::Error for PutError<T> {}

impl<T> From<PutError<T>> for Error {
    fn from(e: PutError<T>) -> Error {
        match e {
            PutError::Full(_) => Error::InvalidArgument("queue is full".into()),
            PutError::Timeout(_) => Error::Timeout,
            PutError::Closed(_) => Error::Closed,
            PutError::TooLarge(_) => Error::TooLarge { size: 0, max: 0 },
            PutError::Other(_, e) => e,
        }
    }
}
