//! [`Pipe`]: a connected pair of connections (Python's `multiprocessing.Pipe`).

use std::fmt;
use std::marker::PhantomData;

use super::connection::{self, Connection, Receiver, Sender};
use super::frame::DEFAULT_MAX_FRAME;
use crate::sys::scm_rights;
use crate::{Error, Result};

/// Makes connected pairs over a Unix socketpair (Python's `multiprocessing.Pipe`).
///
/// Messages are serde values of type `T` (or raw bytes with `send_bytes` / `recv_bytes`), one
/// length-delimited frame each, at most 64 MiB unless [`max_frame`](Self::max_frame) says
/// otherwise. Handles inside a message (shared memory, connections, ...) travel with their file
/// descriptors. Either end can go to another process as a spawn argument, inside a message, or
/// with [`pass`](crate::pass).
///
/// # Examples
///
/// ```
/// use tokio_multiprocessing::Pipe;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> tokio_multiprocessing::Result<()> {
/// let (mut a, mut b) = Pipe::<String>::duplex()?;
/// a.send(&"ping".to_string()).await?;
/// assert_eq!(b.recv().await?, "ping");
/// b.send(&"pong".to_string()).await?;
/// assert_eq!(a.recv().await?, "pong");
/// # Ok(())
/// # }
/// ```
pub struct Pipe<T> {
    max_frame: usize,
    _type: PhantomData<fn(T) -> T>,
}

impl<T> Pipe<T> {
    /// Options for a pipe; [`duplex`](Self::duplex) and [`simplex`](Self::simplex) use the
    /// defaults.
    pub fn builder() -> Self {
        Pipe {
            max_frame: DEFAULT_MAX_FRAME,
            _type: PhantomData,
        }
    }

    /// The largest message payload in bytes, both to send and to accept (default 64 MiB, at most
    /// 4 GiB − 1: opening the pipe refuses more with [`Error::InvalidArgument`]).
    #[must_use]
    pub fn max_frame(mut self, max: usize) -> Self {
        self.max_frame = max;
        self
    }

    /// Two connected ends that both send and receive (Python's `Pipe()` / `Pipe(duplex=True)`).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when no socket can be made (out of file descriptors).
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn duplex() -> Result<(Connection<T>, Connection<T>)> {
        Self::builder().open_duplex()
    }

    /// A receive-only end and a send-only end (Python's `Pipe(duplex=False)`, same order).
    ///
    /// # Errors
    ///
    /// As [`duplex`](Self::duplex).
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn simplex() -> Result<(Receiver<T>, Sender<T>)> {
        Self::builder().open_simplex()
    }

    /// [`duplex`](Self::duplex) with these options.
    ///
    /// # Errors
    ///
    /// As [`duplex`](Self::duplex).
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn open_duplex(self) -> Result<(Connection<T>, Connection<T>)> {
        super::frame::check_max_frame(self.max_frame)?;
        let (a, b) = scm_rights::socketpair().map_err(Error::Io)?;
        Ok((
            connection::open(a, self.max_frame)?,
            connection::open(b, self.max_frame)?,
        ))
    }

    /// [`simplex`](Self::simplex) with these options.
    ///
    /// # Errors
    ///
    /// As [`duplex`](Self::duplex).
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn open_simplex(self) -> Result<(Receiver<T>, Sender<T>)> {
        let (a, b) = self.open_duplex()?;
        let (rx, _) = a.into_split();
        let (_, tx) = b.into_split();
        Ok((rx, tx))
    }
}

impl<T> fmt::Debug for Pipe<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pipe")
            .field("max_frame", &self.max_frame)
            .finish()
    }
}
