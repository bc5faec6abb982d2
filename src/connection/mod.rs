//! Byte frames with file descriptors over Unix sockets.
//!
//! [`FdChannel`] is the transport under spawn arguments, child results and (later) the public
//! `Pipe` / `Connection`: length-delimited frames, each carrying the fds of the handles inside it
//! in `SCM_RIGHTS`.

mod fd_channel;
mod frame;

pub(crate) use fd_channel::FdChannel;
pub(crate) use frame::Frame;
