//! A connection end crossing to another process: its wire form (the socket as an fd, its
//! limits, and whatever it had read ahead) and the [`Handle`] impls of [`Connection`],
//! [`Sender`] and [`Receiver`].

use std::os::fd::AsFd;
use std::sync::Arc;

use super::connection::{Connection, Receiver, Sender, engine};
use super::frame::Framing;
use super::read_side::ReadSide;
use super::write_side::WriteSide;
use crate::handle::{self, FdIndex, FdSink, FdSource, Handle};
use crate::{Error, Result};

/// The plain-data part of a connection end in a message.
///
/// Opaque: it only travels inside the crate's own messages (see [`Handle`](crate::handle::Handle)).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct ConnectionWire {
    fd: FdIndex,
    max_frame: u64,
    python: bool,
    /// What the sender had received but not returned yet, and its fds: it travels with the
    /// connection, so the receiver reads on where the sender stopped.
    unread: serde_bytes_vec::Bytes,
    unread_fds: Vec<FdIndex>,
}

/// `Vec<u8>` serialised as bytes (one length and a copy), not as a sequence of numbers.
pub(crate) mod serde_bytes_vec {
    #[derive(Debug, Default, PartialEq)]
    pub struct Bytes(pub Vec<u8>);

    impl serde::Serialize for Bytes {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(&self.0)
        }
    }

    impl<'de> serde::Deserialize<'de> for Bytes {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            Ok(Bytes(bytes::Bytes::deserialize(d)?.to_vec()))
        }
    }
}

fn wire(
    sock: &impl AsFd,
    max_frame: usize,
    framing: Framing,
    reader: Option<&ReadSide>,
    fds: &mut FdSink,
) -> Result<ConnectionWire> {
    let (unread, unread_fds) = match reader {
        Some(reader) => {
            let (bytes, borrowed) = reader.unread_input();
            let indices = borrowed
                .into_iter()
                .map(|fd| fds.push(fd))
                .collect::<Result<Vec<_>>>()?;
            (bytes, indices)
        }
        None => (Vec::new(), Vec::new()),
    };
    Ok(ConnectionWire {
        fd: fds.push(sock)?,
        max_frame: max_frame as u64,
        python: framing == Framing::Python,
        unread: serde_bytes_vec::Bytes(unread),
        unread_fds,
    })
}

fn unwire(
    wire: ConnectionWire,
    fds: &mut FdSource,
    read: bool,
    write: bool,
) -> Result<(Option<ReadSide>, Option<Arc<WriteSide>>)> {
    let fd = fds.take(wire.fd)?;
    // The sender's limit, but never past what our framing can announce: a hostile wire form
    // cannot lift it (and payloads are allocated as they arrive, never as announced).
    let max_frame = usize::try_from(wire.max_frame.min(u64::from(u32::MAX)))
        .map_err(|_| Error::Corrupt("bad max_frame".into()))?;
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(Error::InvalidArgument(
            "connections can only be received inside a tokio runtime".into(),
        ));
    }
    let framing = if wire.python {
        Framing::Python
    } else {
        Framing::Native
    };
    let unread_fds = wire
        .unread_fds
        .into_iter()
        .map(|index| fds.take(index))
        .collect::<Result<Vec<_>>>()?;
    let (mut reader, writer) = engine(fd, max_frame, read, write, framing)?;
    match &mut reader {
        Some(reader) => reader.prefill(&wire.unread.0, unread_fds)?,
        None if !wire.unread.0.is_empty() || !unread_fds.is_empty() => {
            return Err(Error::Corrupt(
                "a sending half arrived with unread input".into(),
            ));
        }
        None => {}
    }
    Ok((reader, writer))
}

impl<T> Handle for Connection<T> {
    type Wire = ConnectionWire;

    fn to_wire(&self, fds: &mut FdSink) -> Result<Self::Wire> {
        wire(
            self.tx.side.socket().get_ref(),
            self.tx.max_frame(),
            self.tx.side.framing(),
            Some(&self.rx.side),
            fds,
        )
    }

    fn from_wire(wire: Self::Wire, fds: &mut FdSource) -> Result<Self> {
        let (read, write) = unwire(wire, fds, true, true)?;
        Ok(Connection {
            rx: Receiver::from_side(read.expect("asked for")),
            tx: Sender::from_side(write.expect("asked for")),
            closed: false,
        })
    }
}

impl<T> Handle for Sender<T> {
    type Wire = ConnectionWire;

    fn to_wire(&self, fds: &mut FdSink) -> Result<Self::Wire> {
        wire(
            self.side.socket().get_ref(),
            self.max_frame(),
            self.side.framing(),
            None,
            fds,
        )
    }

    fn from_wire(wire: Self::Wire, fds: &mut FdSource) -> Result<Self> {
        let (_, write) = unwire(wire, fds, false, true)?;
        Ok(Sender::from_side(write.expect("asked for")))
    }
}

impl<T> Handle for Receiver<T> {
    type Wire = ConnectionWire;

    fn to_wire(&self, fds: &mut FdSink) -> Result<Self::Wire> {
        wire(
            self.side.socket().get_ref(),
            self.side.max_frame(),
            self.side.framing(),
            Some(&self.side),
            fds,
        )
    }

    fn from_wire(wire: Self::Wire, fds: &mut FdSource) -> Result<Self> {
        let (read, _) = unwire(wire, fds, true, false)?;
        Ok(Receiver::from_side(read.expect("asked for")))
    }
}

macro_rules! serde_via_handle_generic {
    ($($ty:ident),*) => {$(
        impl<T> serde::Serialize for $ty<T> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                handle::serialize(self, s)
            }
        }
        impl<'de, T> serde::Deserialize<'de> for $ty<T> {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                handle::deserialize(d)
            }
        }
    )*};
}
serde_via_handle_generic!(Connection, Sender, Receiver);
